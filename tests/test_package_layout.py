"""The package's module layout: imports inside listmle_kernels form no cycle (lazy imports in functions included)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "listmle_kernels"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import statement in the file, anywhere in it, relative imports resolved."""
    name = module_name(path)
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
