"""The package's module layout: imports inside listmle_kernels form no cycle (lazy imports in functions included)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "listmle_kernels"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str = "") -> list[tuple[str, list[str]]]:
    """(module, names) of every import statement in the file, anywhere in it, relative imports resolved
    (the file being the module `name`, by default its place under the repository root)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.append((base, [alias.name for alias in node.names]))
    return found


def package_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (`from . import x` counts as importing the submodule x)."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in paths.items():
        edges = set()
        for module, names in imported_modules(path):
            edges |= {f"{module}.{n}" for n in names if f"{module}.{n}" in paths}
            if module in paths and not all(f"{module}.{n}" in paths for n in names or ["-"]):
                edges.add(module)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]):
    """One cycle of the graph as a list of nodes (first == last), or None when it is a DAG."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"b2"}, "b2": {"b"}}) == ["b", "b2", "b"]


def test_the_graph_sees_relative_and_lazy_imports():
    graph = package_graph()
    assert "listmle_kernels.numerics" in graph["listmle_kernels.torch_listmle"]  # from .numerics import ...
    assert "listmle_kernels.sentence_transformers" not in graph  # only real modules are nodes
    assert "listmle_kernels.functional" in graph["listmle_kernels.integrations.sentence_transformers"]  # from ..


def test_the_package_imports_form_no_cycle():
    assert find_cycle(package_graph()) is None


LEAVES = ["numerics", "inputs", "backends", "_launch", "target_order"]


@pytest.mark.parametrize("leaf", LEAVES)
def test_shared_modules_are_leaves(leaf):
    """What several layers share (numerics, the inputs record, the backend probe, launch helpers, the
    target order) imports nothing of the package back."""
    assert package_graph()[f"listmle_kernels.{leaf}"] == set()


TRAIN = ROOT / "train"
OFF_LIMITS_FOR_TRAIN = ("bench", "tools")


def private_imports(path: Path, public_names, name: str = "") -> list[str]:
    """The imports of a train/ file that reach past listmle_kernels' public API, or into bench/ or tools/."""
    bad = []
    for module, names in imported_modules(path, name):
        top = module.split(".")[0]
        if top in OFF_LIMITS_FOR_TRAIN:
            bad.append(module)
        elif module == "listmle_kernels":
            bad += [f"listmle_kernels.{name}" for name in names if name not in public_names and name != "integrations"]
        elif top == "listmle_kernels" and not module.startswith("listmle_kernels.integrations"):
            bad.append(module)
    return bad


def test_the_train_import_check_flags_private_names(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import bench.report\nfrom tools import tune\nfrom listmle_kernels import listmle_loss, backends\n"
                      "from listmle_kernels.validation import parse_inputs\n"
                      "def f():\n    from listmle_kernels.integrations.sentence_transformers import ListMLELoss\n"
                      "from .losses import ranking_loss\n")
    assert private_imports(source, {"listmle_loss"}, "train.example") == [
        "bench.report", "tools", "listmle_kernels.backends", "listmle_kernels.validation"]


def test_train_uses_only_the_public_api():
    """train/ is the example users copy: it imports listmle_kernels' public names only, and nothing of bench/ or tools/."""
    import listmle_kernels
    files = sorted(TRAIN.glob("*.py"))
    assert files
    assert {str(path.relative_to(ROOT)): private_imports(path, set(listmle_kernels.__all__)) for path in files} == {
        str(path.relative_to(ROOT)): [] for path in files}
