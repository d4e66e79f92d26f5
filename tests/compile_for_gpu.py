"""Compile the Triton kernels to an sm_90 (H100) binary without a GPU: `python tests/compile_for_gpu.py`.

`python tests/compile_for_gpu.py --resources` also prints ptxas' registers and spills for the launch
configurations the launcher picks and their alternatives (about 10 minutes on 2 cores).

The interpreter runs the kernel's Python; only a real compile catches what the GPU backend rejects
(types, layouts, unsupported ops). Triton ships its own ptxas, so this runs on CPU-only machines.
Run it without TRITON_INTERPRET (the interpreter replaces the kernels with Python functions).
"""

import os
import re
import subprocess
import sys
import tempfile

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from listmle_kernels.triton_listmle import (  # noqa: E402
    FAST_MATH_FLOAT32, KERNEL_LINEAR_SPAN, _listmle_kernel, key_group_bits, label_groups, launch_config)
from listmle_kernels.triton_listnet import _listnet_kernel, num_warps_for as listnet_num_warps  # noqa: E402
from listmle_kernels.triton_scale import _scale_rows_kernel, tile_shape as scale_tile_shape  # noqa: E402
from listmle_kernels import triton_lambdaloss  # noqa: E402
from listmle_kernels.triton_common import COMPILE_OPTIONS  # noqa: E402

CONFIGS = [  # (score type, constexprs): the heaviest sort, the chunked scan, packed short rows, float64
    ("bf16", dict(REAL=1, ORDER=1, WEIGHTS=1, RANDOM_TIES=True, STORE_GRAD=True, ROWS=1, BLOCK=4096, CHUNKS=1)),
    ("fp32", dict(REAL=2, ORDER=2, WEIGHTS=2, RANDOM_TIES=False, STORE_GRAD=True, ROWS=1, BLOCK=4096, CHUNKS=16)),
    ("fp16", dict(REAL=1, ORDER=0, WEIGHTS=0, RANDOM_TIES=False, STORE_GRAD=True, ROWS=16, BLOCK=128, CHUNKS=1)),
    ("fp64", dict(REAL=0, ORDER=1, WEIGHTS=2, RANDOM_TIES=False, STORE_GRAD=False, ROWS=64, BLOCK=32, CHUNKS=1)),
]

# ListNet (CHUNKS only decides whether num_chunks is the constant 1, as a launch on one-block rows makes it):
# chunked long rows, one block with holes in a mask, short half rows with lengths, float64 without the gradient.
LISTNET_CONFIGS = [
    ("fp32", dict(REAL=2, STORE_GRAD=True, BLOCK=4096, ONE_CHUNK=False, CHUNKS=4)),
    ("bf16", dict(REAL=1, STORE_GRAD=True, BLOCK=1024, ONE_CHUNK=True, CHUNKS=1)),
    ("fp16", dict(REAL=2, STORE_GRAD=True, BLOCK=16, ONE_CHUNK=True, CHUNKS=1)),
    ("fp64", dict(REAL=0, STORE_GRAD=False, BLOCK=256, ONE_CHUNK=True, CHUNKS=1)),
]


def launch_specialisation(score_type, constants, aligned=True, kernel=_listmle_kernel, pointers=None):
    """(signature, constexprs, attrs) as a launch on contiguous (B, L) tensors specialises the kernel.

    Triton turns integer arguments equal to 1 into constants (here: every column stride, and
    num_chunks for one-chunk rows) and marks pointers and integers divisible by 16 as such, which
    decides vector widths and registers. `aligned`: L (so every row stride) and B are multiples of 16,
    as in 64 x 128; otherwise (64 x 100) only the pointers are. row_divisor and seed are never
    specialised (see the kernel).
    """
    acc = "fp64" if score_type == "fp64" else "fp32"
    pointers = dict(dict(scores_ptr=score_type, labels_ptr="i64", mask_ptr="u8", lengths_ptr="i64", order_ptr="i64",
                         weights_ptr="fp64", loss_ptr=acc, grad_ptr=score_type), **(pointers or {}))
    units = {"stride_sl", "stride_yl", "stride_ml", "stride_ol", "stride_wl", "stride_gl"}
    if constants["CHUNKS"] == 1:
        units.add("num_chunks")
    accumulator = torch.float64 if acc == "fp64" else torch.float32
    by_labels = constants.get("ORDER") == 1  # ListMLE sorting in the kernel (ListNet has no ORDER)
    groups = label_groups(constants["BLOCK"], constants["RANDOM_TIES"]) if by_labels else 0
    # as triton_listmle() passes them
    launcher_picks = dict(INDEX_BITS=constants["BLOCK"].bit_length() - 1, LINEAR_SPAN=KERNEL_LINEAR_SPAN[accumulator],
                          FAST_MATH=FAST_MATH_FLOAT32 and accumulator == torch.float32, LABEL_GROUPS=groups,
                          KEY_GROUP_BITS=key_group_bits(constants["BLOCK"], constants.get("RANDOM_TIES", False)))
    launcher_picks["FAST_LOG"] = launcher_picks["FAST_MATH"]  # its name in copies of the kernel before fast division
    names = {param.name for param in kernel.params}  # an older copy of the kernel may lack some
    if groups and not constants["STORE_GRAD"] and "LABEL_GROUPS" in names:
        pointers["grad_ptr"] = "i16"  # without a gradient, the counted order's positions pass through 16-bit rows
    sig, constexprs, attrs = {}, {k: v for k, v in dict(launcher_picks, **constants).items() if k in names}, {}
    for index, param in enumerate(kernel.params):
        name = param.name
        if param.is_constexpr or name in units:
            sig[name] = "constexpr"
            constexprs.setdefault(name, 1)
            continue
        sig[name] = "*" + pointers[name] if name in pointers else "i32"
        if name in pointers or (aligned and (name.startswith("stride_") or name in ("B", "L"))):
            attrs[(index,)] = [["tt.divisibility", 16]]
    return sig, constexprs, attrs


def compile_sm90(source, num_warps):
    """`source` compiled for an H100 (sm_90) with `num_warps` and the options every launch passes."""
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, **COMPILE_OPTIONS})


def compile_for_h100(score_type, constants, num_warps=None, aligned=True, kernel=_listmle_kernel, pointers=None):
    """`kernel`: _listmle_kernel, or a copy of it with the same parameters (tools/sass_count.py)."""
    sig, constexprs, attrs = launch_specialisation(score_type, constants, aligned, kernel, pointers)
    source = ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs)
    if num_warps is None:  # what the launcher picks
        num_warps = launch_config(constants["BLOCK"], constants["CHUNKS"], constants["ROWS"],
                                  constants["ORDER"] == 1)[1]
    return compile_sm90(source, num_warps)


def compile_listnet_for_h100(score_type, constants):
    """The ListNet kernel as triton_listnet() launches it (float32 labels, int64 lengths, its warps)."""
    return compile_for_h100(score_type, constants, num_warps=listnet_num_warps(constants["BLOCK"]),
                            kernel=_listnet_kernel, pointers=dict(labels_ptr="fp32"))


LAMBDALOSS_CONFIGS = [  # (kernel, score type, constexprs, warps): the launcher's paths
    ("_sort_rows_kernel", "fp32", dict(REAL=2, SCHEME=4, TOP_K=True, FUSED=True, STORE_GRAD=True, BLOCK=16), 1),
    ("_sort_rows_kernel", "bf16", dict(REAL=1, SCHEME=1, TOP_K=False, FUSED=True, STORE_GRAD=False, BLOCK=32), 4),
    ("_sort_rows_kernel", "fp16", dict(REAL=0, SCHEME=0, TOP_K=False, FUSED=False, STORE_GRAD=True, BLOCK=256), 1),
    ("_sort_rows_kernel", "fp32", dict(REAL=1, SCHEME=2, TOP_K=True, FUSED=False, STORE_GRAD=True, BLOCK=2048), 8),
    ("_pair_tiles_kernel", "fp32", dict(SCHEME=4, TOP_K=False, STORE_GRAD=True, TILE=32), 4),
    ("_pair_tiles_kernel", "fp32", dict(SCHEME=1, TOP_K=True, STORE_GRAD=False, TILE=32), 4),
    ("_pair_tiles_kernel", "fp64", dict(SCHEME=3, TOP_K=True, STORE_GRAD=True, TILE=32), 8),
]


def compile_lambdaloss_for_h100(kernel_name, score_type, constants, num_warps, kernel=None):
    """A LambdaLoss kernel (triton_lambdaloss.py, or `kernel`, a copy of it) as the launcher specialises it on
    contiguous rows: unit column strides, float32 halves of the float arguments, FAST_MATH as it passes it."""
    kernel = kernel or getattr(triton_lambdaloss, kernel_name)
    acc = "fp64" if score_type == "fp64" else "fp32"
    pointers = dict(scores_ptr=score_type, labels_ptr="fp32", mask_ptr="u8", lengths_ptr="i64", sorted_s_ptr=acc,
                    sorted_y_ptr="fp32", sorted_g_ptr=acc, sorted_i_ptr="i32", count_ptr="i32", loss_ptr=acc,
                    pairs_ptr="i64", grad_ptr=acc, tables_ptr=acc)
    constexprs = dict(FAST_MATH=triton_lambdaloss.FAST_MATH_FLOAT32 and acc == "fp32", **constants)
    sig, attrs = {}, {}
    for index, param in enumerate(kernel.params):
        name = param.name
        if param.is_constexpr or name in ("stride_sl", "stride_yl", "stride_ml"):
            sig[name] = "constexpr"
            constexprs.setdefault(name, 1)
        elif name in pointers:
            sig[name] = "*" + pointers[name]
            attrs[(index,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = "fp32" if name.endswith(("_hi", "_lo")) else "i32"
    source = ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs)
    return compile_sm90(source, num_warps)


def compile_scale_for_h100(grad_type, per_row):
    scale_type = "fp64" if grad_type == "fp64" else "fp32"
    sig = dict(grad_ptr="*" + grad_type, scale_ptr="*" + scale_type, stride_scale="i32", B="i32", L="i32",
               PER_ROW="constexpr", ROWS="constexpr", COLS="constexpr")
    rows, cols = scale_tile_shape(64, 100)  # short rows, several to a program
    source = ASTSource(fn=_scale_rows_kernel, signature=sig, constexprs=dict(PER_ROW=per_row, ROWS=rows, COLS=cols))
    return compile_sm90(source, 8)


def ptxas_resources(compiled) -> str:
    """ptxas -v's registers / spill stores / spill loads of a compiled kernel's PTX."""
    ptx = compiled.asm["ptx"]
    version = float(re.search(r"\.version (\S+)", ptx).group(1))
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    ptxas = os.path.join(bindir, "ptxas-blackwell" if version > 8.8 else "ptxas")  # newer PTX, newer ptxas
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, "-v", "--gpu-name=" + re.search(r"\.target (\S+)", ptx).group(1), path,
                              "-o", os.path.join(tmp, "kernel.cubin")], capture_output=True, text=True)
    registers = re.search(r"Used (\d+) registers", run.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", run.stderr)
    if registers is None or spills is None:
        return "ptxas: " + run.stderr.strip()[-200:]
    return f"{registers.group(1)} registers, spills {spills.group(1)} B stored / {spills.group(2)} B loaded"


def resource_table():
    """Registers and spills per (order, rows x block, warps), aligned rows; then the launcher's pick
    with unaligned rows (L not a multiple of 16)."""
    base = dict(REAL=2, WEIGHTS=0, RANDOM_TIES=False, STORE_GRAD=True, CHUNKS=1)
    tiles = [(64, 32), (16, 128), (4, 512), (2, 1024), (1, 2048), (1, 4096)]
    for order in (0, 1):
        for rows, block in tiles:
            for warps in (4, 8, 16, 32):
                compiled = compile_for_h100("fp32", dict(base, ORDER=order, ROWS=rows, BLOCK=block), num_warps=warps)
                print(f"{'sort' if order else 'input'} {rows:3d} x {block:4d}, {warps:2d} warps: "
                      f"{ptxas_resources(compiled)}", flush=True)
    for order in (0, 1):
        for rows, block in tiles:
            compiled = compile_for_h100("fp32", dict(base, ORDER=order, ROWS=rows, BLOCK=block), aligned=False)
            print(f"{'sort' if order else 'input'} {rows:3d} x {block:4d}, launcher's warps, unaligned rows: "
                  f"{ptxas_resources(compiled)}", flush=True)
    for name, change in [("without the gradient", dict(STORE_GRAD=False)), ("p-ListMLE", dict(WEIGHTS=1))]:
        compiled = compile_for_h100("fp32", dict(base, ORDER=0, ROWS=16, BLOCK=128, **change), num_warps=8)
        print(f"input  16 x  128,  8 warps, {name}: {ptxas_resources(compiled)}", flush=True)


if __name__ == "__main__":
    for score_type, constants in CONFIGS:
        compiled = compile_for_h100(score_type, constants)
        assert len(compiled.asm["cubin"]) > 0
        print(f"compiled {score_type} {constants}: {len(compiled.asm['cubin'])} bytes of sm_90 cubin")
    for score_type, constants in LISTNET_CONFIGS:
        compiled = compile_listnet_for_h100(score_type, constants)
        assert len(compiled.asm["cubin"]) > 0
        print(f"compiled listnet {score_type} {constants}: {len(compiled.asm['cubin'])} bytes of sm_90 cubin")
    for grad_type, per_row in [("bf16", True), ("fp32", False), ("fp64", True)]:
        compiled = compile_scale_for_h100(grad_type, per_row)
        assert len(compiled.asm["cubin"]) > 0
        print(f"compiled scale {grad_type} per_row={per_row}: {len(compiled.asm['cubin'])} bytes of sm_90 cubin")
    for kernel_name, score_type, constants, warps in LAMBDALOSS_CONFIGS:
        compiled = compile_lambdaloss_for_h100(kernel_name, score_type, constants, warps)
        assert len(compiled.asm["cubin"]) > 0
        print(f"compiled lambdaloss {kernel_name} {score_type} {constants}: {len(compiled.asm['cubin'])} bytes "
              f"of sm_90 cubin, {ptxas_resources(compiled)}")
    print(f"OK triton {triton.__version__}")
    if "--resources" in sys.argv:
        resource_table()
