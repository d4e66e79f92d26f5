"""python -m tools.tune: sweep the Triton kernel's launch configuration on a GPU.

For every list length of the grid and both target orders, at a bandwidth-sized batch (B·L ≈ 2^24),
time forward+backward of `listmle_loss` (what a training step runs) under each candidate
(rows packed per program, num_warps), and print the best beside what `launch_config` picks now.

  python -m tools.tune --out DIR [--L 100,4096] [--orders input] [--time-budget-s 480]

Writes DIR/tune-<device>-<time>.json (device, commit, versions, every timing) as it goes, so a run
cut short by the budget keeps what it measured. Needs CUDA: interpreted Triton is never timed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench import cases as cases_mod
from bench import report, timing
from bench.__main__ import DEFAULT_OUT, int_list, str_list
from bench.impls import ListmleKernels

WARPS = (2, 4, 8, 16, 32)
SLOTS_PER_PROGRAM = (512, 1024, 2048, 4096, 8192)  # rows x block, for rows that fit one block
TARGET_ELEMENTS = 1 << 24


def candidates(block: int, chunks: int) -> list[tuple[int, int]]:
    """(rows, num_warps) pairs worth timing: 1 to 64 slots per thread."""
    rows_options = sorted({max(1, slots // block) for slots in SLOTS_PER_PROGRAM}) if chunks == 1 else [1]
    return [(rows, warps) for rows in rows_options for warps in WARPS
            if 1 <= rows * block // (warps * 32) <= 64]


@contextlib.contextmanager
def forced_launch_config(rows: int, num_warps: int):
    """Make the launcher use (rows, num_warps) for every launch inside the block."""
    from listmle_kernels import triton_listmle as tk
    original = tk.launch_config
    tk.launch_config = lambda *args: (rows, num_warps)
    try:
        yield
    finally:
        tk.launch_config = original


def tuning_cases(lengths, orders, dtypes) -> list[cases_mod.Case]:
    return [cases_mod.Case(B=min(max(16, TARGET_ELEMENTS // length), 65536), L=length, order=order, dtype=dtype)
            for order in orders for dtype in dtypes for length in lengths]


def fwd_bwd_step(case: cases_mod.Case, inputs: cases_mod.Inputs):
    """The timed unit: loss and gradient, as the benchmark times the kernel (one input copy: do_bench
    flushes the L2 before every call)."""
    kernel = ListmleKernels("triton", validate=False)
    return timing.make_step(kernel.prepare(case, inputs), case)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--L", type=int_list, default=cases_mod.FULL_L)
    p.add_argument("--orders", type=str_list, default=("input", "labels"))
    p.add_argument("--dtypes", type=str_list, default=("float32",))
    p.add_argument("--time-budget-s", type=float, default=480.0, help="stop starting new timings after this")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("python -m tools.tune needs CUDA: it times the compiled Triton kernel.", file=sys.stderr)
        return 2
    from listmle_kernels import triton_listmle as tk
    device = torch.device("cuda")
    started = time.monotonic()
    copy = timing.copy_bandwidth(device)
    copy_for = timing.copy_bandwidth_by_size(device, copy)
    meta = report.run_metadata(device, {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"tune-{device.type}-{stamp}.json"
    rows, summary = [], []
    for case in tuning_cases(args.L, args.orders, args.dtypes):
        sort_in_kernel, block, chunks = tk.row_geometry(case.L, case.order == "labels")
        current = tk.launch_config(block, chunks, case.B, sort_in_kernel, tk.sm_count(device))
        inputs = cases_mod.make_inputs(case, device, seed=0)
        step = fwd_bwd_step(case, inputs)
        min_bytes = cases_mod.minimal_bytes(case, inputs.lengths)
        timed = []
        for rows_per_program, warps in candidates(block, chunks):
            if time.monotonic() - started > args.time_budget_s:
                break
            row = dict(B=case.B, L=case.L, order=case.order, dtype=case.dtype, block=block, chunks=chunks,
                       rows=rows_per_program, num_warps=warps, heuristic=(rows_per_program, warps) == tuple(current))
            try:  # one configuration the compiler or the device refuses must not end the sweep
                with forced_launch_config(rows_per_program, warps):
                    ms = timing.time_cuda(step)[0]
            except Exception as exc:  # OutOfResources, a compile error, OOM
                rows.append(dict(row, error=f"{type(exc).__name__}: {str(exc)[:200]}"))
                print(f"  {case.B} x {case.L} {case.order}: rows {rows_per_program}, {warps} warps failed: "
                      f"{type(exc).__name__}", flush=True)
                continue
            pct = 100.0 * min_bytes / (ms * 1e-3) / copy_for(min_bytes)
            timed.append((ms, rows_per_program, warps))
            rows.append(dict(row, ms=ms, pct_copy_bw=pct))
            path.write_text(json.dumps({"meta": meta, "copy_bandwidth": copy, "rows": rows}, indent=1))
        if timed:
            best = min(timed)
            now = next((ms for ms, r, w in timed if (r, w) == tuple(current)), float("nan"))
            summary.append(f"{case.order:6} {case.dtype:8} {case.B:6d} x {case.L:5d}  now {current} {now:8.4f} ms"
                           f"  best {(best[1], best[2])} {best[0]:8.4f} ms ({now / best[0]:.2f}x)")
        del step
        torch.cuda.empty_cache()
    print(f"{meta.get('device')}: forward+backward, median ms; (rows, num_warps)")
    print("\n".join(summary))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
