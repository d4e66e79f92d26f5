"""python -m tools.sass_count: count the kernel's sm_90 machine instructions, on any machine.

On the H100 the kernel at 16384 x 4096 was bound by issuing instructions, not by memory (Nsight
Compute, docs/performance-record.md). How many instructions a thread runs can be read without a
GPU: Triton's bundled ptxas compiles for sm_90 and cuobjdump disassembles the result. For the
launcher's configuration at each shape (float32, ragged lengths, input order) this prints registers,
the whole kernel's SASS count, and the count of the linear-sums path alone: the kernel compiled with
its log-space branch cut out. That path is straight-line code for one-chunk rows, so its count is
what every thread of a program on that path issues, for BLOCK * ROWS / (32 * warps) slots each.
It also lists the global loads and stores by width (LDG.E.128 moves 16 bytes a thread).

`--package-dir DIR` counts another copy of the package too (as in tools.compare_commits), e.g. the
commit before a change: `git archive REV listmle_kernels | tar -x -C DIR`.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import triton

from bench import cases as cases_mod
from tools.compare_commits import import_package_at

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from compile_for_gpu import compile_for_h100, ptxas_resources  # noqa: E402

H100_SMS = 132
LOG_SPACE_BRANCH = "        if linear:\n"  # the kernel's choice between its two ways to take the sums
SASS_OP = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")
MEMORY_OP = re.compile(r"^(LDG|STG)")


def linear_path_only(package_dir: Path, into: Path):
    """A copy of the package in `package_dir` whose kernel always takes the linear sums, imported."""
    copy = into / "linear_only_src"
    shutil.copytree(package_dir, copy)
    source = copy / "triton_listmle.py"
    text = source.read_text()
    if text.count(LOG_SPACE_BRANCH) != 1:
        raise ValueError(f"{package_dir}/triton_listmle.py: expected one {LOG_SPACE_BRANCH.strip()!r} line to cut")
    source.write_text(text.replace(LOG_SPACE_BRANCH, "        if True:\n"))
    return import_package_at("linear-only", into, copy)


def sass_ops(compiled) -> list[str]:
    """The opcodes (with modifiers) of a compiled kernel's SASS, in order."""
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        listing = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True).stdout
    return SASS_OP.findall(listing)


def launcher_config(package, batch: int, length: int):
    """(constexprs, warps) the launcher of `package` picks for (batch, length), float32, lengths, input order."""
    kernels = importlib.import_module(package.__name__ + ".triton_listmle")
    _, block, chunks = kernels.row_geometry(length, False)
    rows, warps = kernels.launch_config(block, chunks, batch, False, H100_SMS)
    return dict(REAL=2, ORDER=0, WEIGHTS=0, RANDOM_TIES=False, STORE_GRAD=True, ROWS=rows, BLOCK=block,
                CHUNKS=chunks), warps


def count(package, shapes, label: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        linear_only = linear_path_only(Path(package.__file__).parent, Path(tmp))
        for batch, length in shapes:
            constants, warps = launcher_config(package, batch, length)
            aligned = length % 16 == 0 and batch % 16 == 0
            row = dict(shape=f"{batch}x{length}", package=label, warps=warps, **constants)
            for path, copy in (("whole", package), ("linear", linear_only)):
                kernel = importlib.import_module(copy.__name__ + ".triton_listmle")._listmle_kernel
                compiled = compile_for_h100("fp32", constants, warps, aligned, kernel)
                ops = sass_ops(compiled)
                row[path] = dict(resources=ptxas_resources(compiled), sass=len(ops),
                                 memory=dict(collections.Counter(op for op in ops if MEMORY_OP.match(op))))
            slots = constants["ROWS"] * constants["BLOCK"] / (32 * warps)
            row["linear_sass_per_slot"] = row["linear"]["sass"] / slots if constants["CHUNKS"] == 1 else None
            rows.append(row)
            per_slot = row["linear_sass_per_slot"]
            print(f"{label:>10s} {row['shape']:>12s}: {constants['ROWS']:3d} x {constants['BLOCK']:4d} x "
                  f"{constants['CHUNKS']} chunks, {warps:2d} warps | whole kernel {row['whole']['resources']}, "
                  f"{row['whole']['sass']} SASS | linear path {row['linear']['resources']}, {row['linear']['sass']} SASS"
                  + (f" = {per_slot:.1f} a slot" if per_slot else "") + f", {row['linear']['memory']}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.sass_count", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=cases_mod.parse_shapes, default=((16384, 4096), (65536, 1024), (65536, 128)),
                   help="B x L cases, e.g. 16384x4096,64x100")
    p.add_argument("--package-dir", type=Path, help="also count the listmle_kernels copy in this directory")
    args = p.parse_args(argv)
    import listmle_kernels

    with tempfile.TemporaryDirectory() as tmp:
        if args.package_dir is not None:
            count(import_package_at("other", Path(tmp), args.package_dir), args.shape, str(args.package_dir))
        return count(listmle_kernels, args.shape, "this tree")


if __name__ == "__main__":
    main()
