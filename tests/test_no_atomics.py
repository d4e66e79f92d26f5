"""Deterministic kernels: no Triton kernel adds into memory with atomics (README, "Guarantees and limits").

Run by the interpreter, atomics would still give the same bits every time, so `test_deterministic` alone could not
see one: the kernels' source is read instead. Each program writes what it computes once, and the per-row losses are
reduced afterwards by one torch op.
"""

import ast
import pathlib

import listmle_kernels

KERNEL_MODULES = sorted(pathlib.Path(listmle_kernels.__file__).parent.glob("triton_*.py"))


def atomic_calls(source):
    """Names of the `atomic_*` functions (tl.atomic_add, tl.atomic_cas, ...) a module calls."""
    return sorted({node.func.attr for node in ast.walk(ast.parse(source))
                   if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                   and node.func.attr.startswith("atomic_")})


def test_the_reader_finds_an_atomic_add():
    assert atomic_calls("def f(p, x):\n    tl.atomic_add(p, x)\n") == ["atomic_add"]


def test_no_kernel_uses_atomics():
    assert {path.name for path in KERNEL_MODULES} >= {"triton_listmle.py", "triton_lambdaloss.py",
                                                      "triton_listnet.py", "triton_scale.py"}
    for path in KERNEL_MODULES:
        assert atomic_calls(path.read_text()) == [], path.name
