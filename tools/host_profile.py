"""python -m tools.host_profile: where the host time of a training-sized call goes.

At the recipe's shapes every implementation is host-bound on an H100: the kernel replays from a CUDA
graph in 6-15 us, but forward+backward back to back took 0.45 ms (docs/performance-record.md).
This splits a call into its parts, each timed back to back between two synchronisations (host time
included, what a training loop pays), and profiles the whole call:

  * floors: one torch op; `scores.sum()` and its gradient (the cheapest autograd loss); an
    autograd.Function with ListMLEFunction's eleven arguments and a one-op forward and backward;
  * our parts: argument checks, the forward launch, the backward's two ways of scaling the saved
    gradient (the Triton kernel, a torch multiply), the whole loss forward and forward+backward (input
    order, and sorted by graded labels);
  * the same forward+backward with autograd's device threads off
    (`torch.autograd.set_multithreading_enabled(False)`): the engine's hand-off to its CUDA thread;
  * the eager reference, for scale;
  * torch.profiler (CPU and CUDA activities) and cProfile of forward+backward at the first shape
    (cProfile with the device threads off, so that the backward surely runs on the profiled thread).

  python -m tools.host_profile [--shapes 16x10,64x100] [--out DIR]

Without CUDA it runs the PyTorch path on CPU tensors (the Triton parts are left out: interpreted
Triton is never timed). Writes DIR/host-profile-<device>-<time>.json and .txt.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import pstats
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench import cases as cases_mod
from bench import report, timing
from bench.__main__ import DEFAULT_OUT
from bench.impls import reference_eager_loss
from listmle_kernels import ListMLEFunction, listmle_loss
from listmle_kernels.dispatch import compute_rows
from listmle_kernels.validation import parse_inputs


class OneOpFunction(torch.autograd.Function):
    """ListMLEFunction's signature (eleven arguments, one saved tensor) around one op each way."""

    @staticmethod
    def forward(ctx, scores, labels, mask, lengths, lambda_weight, respect_input_order, ties, generator,
                reduction, validate, backend):
        ctx.save_for_backward(scores)
        return scores.sum()

    @staticmethod
    def backward(ctx, grad_output):
        (scores,) = ctx.saved_tensors
        return (grad_output.expand_as(scores),) + (None,) * 10


@contextlib.contextmanager
def device_threads(enabled: bool):
    previous = torch.autograd.is_multithreading_enabled()
    torch.autograd.set_multithreading_enabled(enabled)
    try:
        yield
    finally:
        torch.autograd.set_multithreading_enabled(previous)


def gradient_of(loss_fn, leaf):
    return lambda: torch.autograd.grad(loss_fn(), leaf)


def parts(B: int, L: int, device: torch.device, backend: str) -> dict:
    """name -> the step to time, at one ragged (B, L) problem like the bench's."""
    inputs = cases_mod.make_inputs(cases_mod.Case(B, L), device, seed=0)
    scores, lengths = inputs.scores, inputs.lengths
    leaf = scores.detach().requires_grad_(True)
    plain = scores.detach()
    grades = torch.randint(0, 5, (B, L), generator=torch.Generator().manual_seed(1)).to(device)
    ones = torch.ones((), device=device)
    args = (None, None, lengths, None, True, "stable", None, "mean")

    def loss(validate, on=leaf, labels=None):
        return lambda: listmle_loss(on, labels, lengths=lengths, respect_input_order=labels is None,
                                    validate=validate, backend=backend)

    def checked(validate):
        return parse_inputs(leaf, None, None, lengths, None, True, "stable", "mean", validate, backend)

    scratch = torch.zeros(B, L, device=device)
    steps = {
        "one torch op (x.add_(1))": lambda: scratch.add_(1),
        "autograd floor fwd (scores.sum())": timing.autograd_floor_step(scores, "fwd"),
        "autograd floor fwd+bwd": timing.autograd_floor_step(scores, "fwd+bwd"),
        "one-op Function, 11 args, fwd+bwd": gradient_of(lambda: OneOpFunction.apply(leaf, *args, False, backend),
                                                         leaf),
        "parse_inputs validate=False": lambda: checked(False),
        "parse_inputs validate=True": lambda: checked(True),
    }
    parsed = checked(False)
    steps["compute_rows (forward launch, gradient)"] = lambda: compute_rows(parsed, 0, B, True)
    saved = torch.zeros(B, L, device=device)
    if backend == "triton":
        from listmle_kernels.triton_scale import scale_rows_
        steps["backward scaling: Triton kernel (grad_output 1)"] = lambda: scale_rows_(saved, ones)
    steps["backward scaling: torch mul_ (grad_output 1)"] = lambda: saved.mul_(ones)
    steps.update({
        "listmle_loss fwd, no grad, validate=False": loss(False, on=plain),
        "listmle_loss fwd+bwd validate=False": gradient_of(loss(False), leaf),
        "listmle_loss fwd+bwd validate=True": gradient_of(loss(True), leaf),
        "listmle_loss fwd+bwd by labels, validate=False": gradient_of(loss(False, labels=grades), leaf),
        "ListMLEFunction.apply fwd+bwd validate=False": gradient_of(
            lambda: ListMLEFunction.apply(leaf, *args, False, backend), leaf),
        "reference eager fwd+bwd": gradient_of(lambda: reference_eager_loss(leaf, None, lengths), leaf),
    })
    return steps


def profile_tables(B: int, L: int, device: torch.device, backend: str, calls: int = 100) -> str:
    """torch.profiler's table and cProfile's top functions for `calls` forward+backward calls."""
    step = parts(B, L, device, backend)["listmle_loss fwd+bwd validate=False"]
    for _ in range(10):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    text = [f"== torch.profiler, {calls} x listmle_loss fwd+bwd at {B} x {L} (validate=False), by self CPU time",
            prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)]
    profiler = cProfile.Profile()
    with device_threads(False):  # the backward then surely runs on this thread, the one cProfile watches
        profiler.enable()
        for _ in range(calls):
            step()
        profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(30)
    text += [f"== cProfile, {calls} x the same with autograd's device threads off, by own time", stream.getvalue()]
    return "\n".join(text)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.host_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=cases_mod.parse_shapes, default=list(cases_mod.RECIPE_SHAPES))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--min-seconds", type=float, default=0.1, help="per part and setting, back to back")
    p.add_argument("--profile-calls", type=int, default=100)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = "triton" if device.type == "cuda" else "torch"
    meta = report.run_metadata(device, {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    lines = [f"{meta['device']} | torch {meta['torch']} | triton {meta['triton']} | commit {meta['git_commit']} | "
             f"backend {backend}", "per call, back to back, median ms (q20-q80)"]
    rows = []
    for B, L in args.shapes:
        lines.append(f"== {B} x {L}")
        print(lines[-1], flush=True)
        for name, step in parts(B, L, device, backend).items():
            for threads in (True, False) if "fwd+bwd" in name else (True,):
                with device_threads(threads):
                    median, q20, q80 = timing.time_back_to_back(step, device, min_seconds=args.min_seconds)
                label = name + ("" if threads else ", device threads off")
                rows.append(dict(B=B, L=L, part=label, ms=median, ms_q20=q20, ms_q80=q80))
                lines.append(f"  {label:<66} {median:8.4f} ({q20:.4f}-{q80:.4f})")
                print(lines[-1], flush=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"host-profile-{device.type}-{stamp}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str) + "\n")
    stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")  # the timings are kept if the profilers fail
    B, L = args.shapes[0]
    try:
        lines.append(profile_tables(B, L, device, backend, args.profile_calls))
    except Exception as exc:  # e.g. no CUPTI for the CUDA activity
        lines.append(f"== profilers failed: {type(exc).__name__}: {exc}")
    stem.with_suffix(".txt").write_text("\n".join(lines) + "\n")
    print(lines[-1])
    print(f"wrote {stem}.json, {stem}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
