"""`time_back_to_back`: milliseconds a call of a step, run back to back with the host's time included."""

import math
import statistics
import time

import torch


def time_back_to_back(step, device, min_seconds: float = 0.05, sample_ms: float = 2.0,
                      min_samples: int = 5) -> tuple[float, float, float]:
    """(median, q20, q80) milliseconds per call of `step` run back to back, host time included: what a training
    loop pays for a launch-bound loss. Nothing runs between calls and no cache is flushed (the inputs are warm,
    as in training). Each sample times enough calls to last >= sample_ms between two synchronisations; sampling
    goes on for min_seconds, and for at least min_samples samples."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    step()  # warm-up, and a first estimate of the cost of one call
    sync()
    calls = max(1, math.ceil(sample_ms / max((time.perf_counter() - t0) * 1e3, 1e-3)))
    samples = []
    started = time.perf_counter()
    while len(samples) < min_samples or time.perf_counter() - started < min_seconds:
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            step()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3 / calls)
    cuts = statistics.quantiles(samples, n=10, method="inclusive")  # deciles 2 and 8: the 20% / 80% quantiles
    return statistics.median(samples), cuts[1], cuts[7]
