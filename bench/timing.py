"""Timers, peak memory and copy bandwidth.

CUDA: triton.testing.do_bench (CUDA events, warm-up, L2 flushed before every call) reporting the
median and the 20%/80% quantiles, plus, for small shapes, do_bench_cudagraph (what a CUDA graph
removes of launch overhead) and back-to-back calls with the host's time included (what it costs).
CPU: time.perf_counter with warm-up, median of repeats. Nothing here ever times the Triton
interpreter: callers decide what is timed, and bench.impls refuses interpreted Triton.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable

import torch

from bench.cases import Case
from bench.impls import Prepared
# What a training loop pays for a launch-bound loss: calls back to back, host time included. do_bench flushes
# the L2 before every call and the device is still busy with that flush while the call is launched, so its
# figure is device time with the host's launch overhead hidden. One timer for the benchmark and train/.
from train.timing import time_back_to_back  # noqa: F401  (re-exported)

QUANTILES = (0.5, 0.2, 0.8)
# CPU: inputs are rotated through enough copies to exceed this many bytes, so a small case does not
# run from a cache its predecessor warmed. CUDA needs no copies: do_bench flushes the L2 before every
# call, and where warm caches are timed (back to back, graph replay) they are what training has,
# the scores having just been written by the model.
ROTATE_BYTES_CPU = 32 << 20
MAX_ROTATIONS = 16


def median_q20_q80(samples: list[float]) -> tuple[float, float, float]:
    """The median and the 20%/80% quantiles (deciles 2 and 8) of timing samples."""
    cuts = statistics.quantiles(samples, n=10, method="inclusive")
    return statistics.median(samples), cuts[1], cuts[7]


def rotation_count(case: Case, device: torch.device, free_bytes: int | None = None) -> int:
    if device.type == "cuda":
        return 1
    per_set = case.elements * (case.torch_dtype.itemsize + (4 if case.order == "labels" else 0)) + case.B * 8
    count = max(1, min(MAX_ROTATIONS, math.ceil(ROTATE_BYTES_CPU / per_set)))
    if free_bytes is not None:  # never let the copies themselves crowd out the run
        count = max(1, min(count, free_bytes // (8 * per_set)))
    return count


def make_step(prepared: Prepared, case: Case) -> Callable[[], object]:
    """The timed unit: the loss, or the loss and its gradient (autograd.grad: no .grad accumulation)."""
    if case.direction == "fwd":
        return prepared.loss_fn

    def forward_backward():
        loss = prepared.loss_fn()
        return torch.autograd.grad(loss, prepared.leaf)

    return forward_backward


def rotating(steps: list[Callable[[], object]]) -> Callable[[], object]:
    position = [0]

    def step():
        fn = steps[position[0]]
        position[0] = (position[0] + 1) % len(steps)
        return fn()

    return step


def time_cuda(step: Callable[[], object], warmup_ms: int = 25, rep_ms: int = 100) -> tuple[float, float, float]:
    """(median, q20, q80) milliseconds."""
    import triton.testing

    median, q20, q80 = triton.testing.do_bench(step, warmup=warmup_ms, rep=rep_ms, quantiles=list(QUANTILES))
    return median, q20, q80


def time_cuda_graph(step: Callable[[], object], rep_ms: int = 100) -> tuple[float, float, float]:
    """(median, q20, q80) milliseconds per step replayed from a captured CUDA graph."""
    import triton.testing

    median, q20, q80 = triton.testing.do_bench_cudagraph(step, rep=rep_ms, quantiles=list(QUANTILES))
    return median, q20, q80


def autograd_floor_step(scores: torch.Tensor, direction: str) -> Callable[[], object]:
    """The cheapest loss of these scores that autograd differentiates: `scores.sum()`, and for "fwd+bwd" its
    gradient through autograd.grad, as `make_step` takes every loss's.

    Timed back to back, it is what any autograd-based loss pays a call at least: for fwd+bwd two
    launches, the graph's bookkeeping and, on CUDA, the engine's hand-off to its device thread. At shapes where every
    implementation is host-bound, a baseline's back-to-back time over this one bounds the speedup any of
    them could show.
    """
    leaf = scores.detach().requires_grad_(direction == "fwd+bwd")
    if direction == "fwd":
        return leaf.sum
    return lambda: torch.autograd.grad(leaf.sum(), leaf)


def time_cpu(
    step: Callable[[], object], warmup: int = 3, min_repeats: int = 7, min_seconds: float = 0.25,
    max_repeats: int = 200,
) -> tuple[float, float, float]:
    """(median, q20, q80) milliseconds from perf_counter around each call."""
    for _ in range(warmup):
        step()
    samples = []
    started = time.perf_counter()
    while len(samples) < min_repeats or (time.perf_counter() - started < min_seconds and len(samples) < max_repeats):
        t0 = time.perf_counter()
        step()
        samples.append((time.perf_counter() - t0) * 1e3)
    return median_q20_q80(samples)


def balanced_orders(n: int) -> list[list[int]]:
    """Orders of range(n) in which every step comes first, and directly follows every other step,
    equally often (a Williams design: n orders for even n, 2n for odd n)."""
    first, low, high = [0], 1, n - 1
    while len(first) < n:  # 0, 1, n-1, 2, n-2, ...
        if len(first) % 2:
            first.append(low)
            low += 1
        else:
            first.append(high)
            high -= 1
    orders = [[(step + shift) % n for step in first] for shift in range(n)]
    return orders + [order[::-1] for order in orders] if n % 2 else orders


def time_cpu_interleaved(
    steps: dict[str, Callable[[], object]], warmup: int = 3, min_rounds: int = 7, min_seconds: float = 0.25,
    max_rounds: int = 200, min_sample_ms: float = 1.0,
) -> dict[str, tuple[float, float, float]]:
    """Per name, (median, q20, q80) milliseconds per call, sampling the steps round-robin.

    Round-robin because a CPU shared with other jobs changes speed over seconds: timing A fully, then
    B, lets a load spike land on one of them; interleaving spreads it over both, so their ratio (the
    speedup) stays meaningful. Rounds cycle through the orders of `balanced_orders`, so each step
    follows each other one equally often: a step that leaves the caches cold (the eager reference)
    would otherwise slow whichever step always comes after it (a plain rotation of three gave one of
    two identical copies a 2-10% head start, docs/performance-record.md), and at
    least one full cycle runs. Each sample runs a step enough times to last >= min_sample_ms, so
    perf_counter's resolution and call overhead do not dominate tiny cases.
    """
    repeats = {}
    for name, step in steps.items():
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        per_call_ms = (time.perf_counter() - t0) * 1e3 / warmup
        repeats[name] = max(1, math.ceil(min_sample_ms / max(per_call_ms, 1e-6)))
    samples = {name: [] for name in steps}
    names = list(steps)
    orders = [[names[i] for i in order] for order in balanced_orders(len(names))]
    started = time.perf_counter()
    rounds = 0
    while rounds < max(min_rounds, len(orders)) or (
            time.perf_counter() - started < min_seconds * len(steps) and rounds < max_rounds):
        for name in orders[rounds % len(orders)]:
            step, n = steps[name], repeats[name]
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            samples[name].append((time.perf_counter() - t0) * 1e3 / n)
        rounds += 1
    return {name: median_q20_q80(values) for name, values in samples.items()}


def time_step(step: Callable[[], object], device: torch.device, quick: bool) -> tuple[float, float, float]:
    if device.type == "cuda":
        return time_cuda(step, rep_ms=50 if quick else 100)
    return time_cpu(step, min_seconds=0.15 if quick else 0.5)


def peak_extra_bytes_cuda(step: Callable[[], object]) -> int:
    """Peak bytes allocated by one step beyond what was allocated before it (outputs included)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del result
    return int(peak)


def copy_bandwidth(device: torch.device, nbytes: int | None = None) -> dict:
    """Device-to-device copy bandwidth (bytes read + bytes written per second) of an `nbytes` buffer,
    measured now.

    It is the bandwidth plot's denominator: a loss kernel that reads its inputs and writes its gradient once
    cannot move bytes faster than a plain copy.
    """
    nbytes = nbytes or ((512 << 20) if device.type == "cuda" else (64 << 20))
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    step = lambda: dst.copy_(src)  # noqa: E731
    median_ms, _, _ = time_cuda(step) if device.type == "cuda" else time_cpu(step, min_seconds=0.3)
    bandwidth = 2 * nbytes / (median_ms * 1e-3)
    del src, dst
    return {"bytes_per_s": bandwidth, "buffer_bytes": nbytes, "median_ms": median_ms}


COPY_SIZE_CLASSES = (1 << 20, 512 << 20)  # buffer bytes of the size-matched copies on CUDA


def copy_bandwidth_by_size(device: torch.device, measured: dict) -> Callable[[int], float]:
    """traffic bytes -> the copy bandwidth to judge a case moving that many bytes against.

    On CUDA: a copy moving about as many bytes (buffer = traffic / 2 rounded up to a power of two,
    1 MiB to 512 MiB), measured once per size. do_bench zeroes a 256 MB buffer before every call and
    leaves dirty L2 lines whose write-back lands in the timed call: a fixed cost that weighs as much on
    a copy as on a kernel of the same size, and 4x more on 128 MB than on a 512 MB copy. On the CPU,
    the run's one measurement (`measured`).
    """
    if device.type != "cuda":
        return lambda traffic_bytes: measured["bytes_per_s"]
    by_buffer = {measured["buffer_bytes"]: measured["bytes_per_s"]}
    smallest, largest = COPY_SIZE_CLASSES

    def bandwidth(traffic_bytes: int) -> float:
        buffer = min(max(1 << max(0, (traffic_bytes // 2 - 1).bit_length()), smallest), largest)
        if buffer not in by_buffer:
            by_buffer[buffer] = copy_bandwidth(device, buffer)["bytes_per_s"]
        return by_buffer[buffer]

    return bandwidth
