"""Compile the Triton kernel to an sm_90 (H100) binary without a GPU: `python tests/compile_for_gpu.py`.

The interpreter runs the kernel's Python; only a real compile catches what the GPU backend rejects
(types, layouts, unsupported ops). Triton ships its own ptxas, so this runs on CPU-only machines.
Run it without TRITON_INTERPRET (the interpreter replaces the kernels with Python functions).
"""

import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from listmle_kernels.triton_listmle import _listmle_kernel  # noqa: E402
from listmle_kernels.triton_scale import BLOCK as SCALE_BLOCK, _scale_rows_kernel  # noqa: E402

CONFIGS = [  # (score type, constexprs): the heaviest sort, the chunked scan, packed short rows, float64
    ("bf16", dict(REAL=1, ORDER=1, WEIGHTS=1, RANDOM_TIES=True, STORE_GRAD=True, ROWS=1, BLOCK=4096, CHUNKS=1)),
    ("fp32", dict(REAL=2, ORDER=2, WEIGHTS=2, RANDOM_TIES=False, STORE_GRAD=True, ROWS=1, BLOCK=4096, CHUNKS=16)),
    ("fp16", dict(REAL=1, ORDER=0, WEIGHTS=0, RANDOM_TIES=False, STORE_GRAD=True, ROWS=16, BLOCK=128, CHUNKS=1)),
    ("fp64", dict(REAL=0, ORDER=1, WEIGHTS=2, RANDOM_TIES=False, STORE_GRAD=False, ROWS=64, BLOCK=32, CHUNKS=1)),
]


def signature(score_type):
    acc = "fp64" if score_type == "fp64" else "fp32"
    pointers = dict(scores_ptr=score_type, labels_ptr="i64", mask_ptr="u8", lengths_ptr="i64", order_ptr="i64",
                    weights_ptr="fp64", loss_ptr=acc, grad_ptr=score_type)
    sig = {}
    for param in _listmle_kernel.params:
        if param.is_constexpr:
            sig[param.name] = "constexpr"
        elif param.name in pointers:
            sig[param.name] = "*" + pointers[param.name]
        else:
            sig[param.name] = "fp32" if param.name == "row_scale" else "i32"
    return sig


def compile_for_h100(score_type, constants):
    constants = dict(constants, INDEX_BITS=constants["BLOCK"].bit_length() - 1)
    source = ASTSource(fn=_listmle_kernel, signature=signature(score_type), constexprs=constants)
    num_warps = max(1, min(16, constants["ROWS"] * constants["BLOCK"] // 256))
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


def compile_scale_for_h100(grad_type, per_row):
    scale_type = "fp64" if grad_type == "fp64" else "fp32"
    sig = dict(grad_ptr="*" + grad_type, scale_ptr="*" + scale_type, stride_scale="i32", L="i32", numel="i64",
               PER_ROW="constexpr", BLOCK="constexpr")
    source = ASTSource(fn=_scale_rows_kernel, signature=sig, constexprs=dict(PER_ROW=per_row, BLOCK=SCALE_BLOCK))
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})


if __name__ == "__main__":
    for score_type, constants in CONFIGS:
        compiled = compile_for_h100(score_type, constants)
        assert len(compiled.asm["cubin"]) > 0
        print(f"compiled {score_type} {constants}: {len(compiled.asm['cubin'])} bytes of sm_90 cubin")
    for grad_type, per_row in [("bf16", True), ("fp32", False), ("fp64", True)]:
        compiled = compile_scale_for_h100(grad_type, per_row)
        assert len(compiled.asm["cubin"]) > 0
        print(f"compiled scale {grad_type} per_row={per_row}: {len(compiled.asm['cubin'])} bytes of sm_90 cubin")
    print(f"OK triton {triton.__version__}")
