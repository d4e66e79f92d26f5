"""Runs the cases: for each case and implementation, check equality first, then time and measure.

Every (case, implementation) pair yields one result row, also when it is skipped, excluded for a
wrong answer, or fails, so that nothing missing is hidden from the table.
"""

from __future__ import annotations

import contextlib
import gc
import time
import traceback
from typing import Callable

import torch

from bench import check, timing
from bench.cases import MAX_ELEMENTS_SMALL, Case, make_inputs, minimal_bytes
from bench.impls import Impl

# Implementations whose loss syncs with the host (Python lists, .tolist(), host-side randperm; the
# PyTorch path checks its rows' score span on the host; the oracle loops over rows on the host) and
# so cannot be captured in a CUDA graph.
NOT_GRAPH_CAPTURABLE = {"sentence_transformers", "allrank", "listmle_kernels_torch", "reference_oracle"}


def free_device_bytes(device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info()
    return free


def base_row(case: Case, impl: Impl, min_bytes: int) -> dict:
    return {**case.as_dict(), "case": case.name(), "impl": impl.name, "label": impl.label, "min_bytes": min_bytes}


def run_case(case: Case, impls: list[Impl], availability: dict, device: torch.device, seed: int,
             quick: bool, copy_bandwidth_for: Callable[[int], float], log=print) -> list[dict]:
    """Check every implementation on the case, then time those that agree with the reference."""
    rows, steps = [], {}
    inputs0 = make_inputs(case, device, seed)
    valid0 = inputs0.valid_mask()
    want = check.reference_result(case, inputs0)
    min_bytes = minimal_bytes(case, inputs0.lengths)
    for impl in impls:
        row = base_row(case, impl, min_bytes)
        rows.append(row)
        available, reason = availability[impl.name]
        supported, why_not = impl.accepts(case)
        if not available or not supported:
            row.update(status="skipped", note=reason if not available else why_not)
            continue
        with recorded_failure(row, case, device, log):
            step = check_and_prepare(case, impl, inputs0, valid0, want, device, seed, row)
            if step is not None:
                steps[impl.name] = step
    if not steps:
        return rows
    by_name = {row["impl"]: row for row in rows}
    if device.type == "cuda":
        impl_by_name = {impl.name: impl for impl in impls}
        for name, step in steps.items():
            with recorded_failure(by_name[name], case, device, log):
                record_time(by_name[name], timing.time_step(step, device, quick), copy_bandwidth_for)
                measure_cuda_extras(by_name[name], case, impl_by_name[name], step, quick)
        if case.elements <= MAX_ELEMENTS_SMALL:
            try:  # a reference point, not an implementation: its failure is logged, not recorded on a row
                floor = measure_autograd_floor(case, inputs0.scores, device, quick)
            except Exception as exc:
                log(f"  ! autograd floor on {case.name()}: {type(exc).__name__}: {exc}")
            else:
                for row in rows:
                    row["floor_wall_ms"] = floor
    else:
        with recorded_failure(None, case, device, log, rows=[by_name[n] for n in steps]):
            times = timing.time_cpu_interleaved(steps, min_seconds=0.25 if quick else 0.5)
            for name, result in times.items():
                record_time(by_name[name], result, copy_bandwidth_for)
    return rows


@contextlib.contextmanager
def recorded_failure(row, case, device, log, rows=None):
    """Record an exception on the row(s) and keep going: one broken baseline must not stop the run."""
    try:
        yield
    except Exception as exc:
        note = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        for target in rows or [row]:
            target.update(status="error", note=note)
        log(f"  ! {(rows or [row])[0]['label']} on {case.name()}: {note}")
        if device.type == "cuda":
            torch.cuda.synchronize()
        if not isinstance(exc, torch.cuda.OutOfMemoryError):
            traceback.print_exc(limit=3)
        # A failed step can leave tensors in reference cycles (traceback frames); free them. Not done
        # after every step: with transformers and dynamo loaded, one collection takes about a second.
        gc.collect()
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def check_and_prepare(case, impl, inputs0, valid0, want, device, seed, row):
    """Equality first (also the warm-up, and for torch.compile the compilation); then the timed step
    over rotating input copies, or None when the implementation disagrees with the reference."""
    started = time.perf_counter()
    got = check.loss_and_grad(impl.prepare(case, inputs0), case)
    row["first_call_s"] = time.perf_counter() - started
    verdict = check.compare(case, got, want, valid0)
    row.update(loss_rel_err=verdict.loss_rel_err, grad_rel_err=verdict.grad_rel_err)
    if not verdict.ok:
        row.update(status="mismatch", note=verdict.message)
        return None
    copies = timing.rotation_count(case, device, free_device_bytes(device))
    prepared = [impl.prepare(case, inputs0)] + [
        impl.prepare(case, make_inputs(case, device, seed + k)) for k in range(1, copies)
    ]
    row["rotations"] = copies
    return timing.rotating([timing.make_step(p, case) for p in prepared])


def record_time(row, result, copy_bandwidth_for) -> None:
    median, q20, q80 = result
    bytes_per_s = row["min_bytes"] / (median * 1e-3)
    copy_bytes_per_s = copy_bandwidth_for(row["min_bytes"])
    row.update(status="ok", ms=median, ms_q20=q20, ms_q80=q80, bytes_per_s=bytes_per_s,
               copy_bytes_per_s=copy_bytes_per_s, pct_copy_bw=100.0 * bytes_per_s / copy_bytes_per_s)


def measure_autograd_floor(case, scores, device, quick) -> float:
    """Back-to-back milliseconds a call of the cheapest autograd loss of the case's scores (`scores.sum()`,
    its gradient for fwd+bwd): timed like the implementations' `wall_ms`, it is the least any of them pays."""
    step = timing.autograd_floor_step(scores, case.direction)
    return timing.time_back_to_back(step, device, min_seconds=0.02 if quick else 0.05)[0]


def measure_cuda_extras(row, case, impl, step, quick) -> None:
    # Peak extra memory of one step (the gradient it returns included).
    row["peak_extra_bytes"] = timing.peak_extra_bytes_cuda(step)
    if case.elements > MAX_ELEMENTS_SMALL:
        return
    # Back to back with the host included: at small shapes `ms` (do_bench) is device time only.
    w_median, w_q20, w_q80 = timing.time_back_to_back(step, torch.device("cuda"), min_seconds=0.02 if quick else 0.05)
    row.update(wall_ms=w_median, wall_ms_q20=w_q20, wall_ms_q80=w_q80)
    # CUDA-graph replay: what launch overhead a graph removes (not with --validate: its checks sync).
    if impl.name not in NOT_GRAPH_CAPTURABLE and not getattr(impl, "validate", False):
        try:
            g_median, g_q20, g_q80 = timing.time_cuda_graph(step, rep_ms=50 if quick else 100)
            row.update(graph_ms=g_median, graph_ms_q20=g_q20, graph_ms_q80=g_q80)
        except Exception as exc:
            torch.cuda.synchronize()
            row["graph_note"] = f"not capturable: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
