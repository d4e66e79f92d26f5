"""Peak extra memory of one call on the CPU, from the PyTorch profiler's record of its allocations.

CUDA has torch.cuda.max_memory_allocated; the CPU allocator keeps no such counter, and the process's resident
size mixes in whatever the C allocator caches. The profiler (profile_memory=True) attributes to each operator
the bytes it allocated and freed itself (`self_cpu_memory_usage`, children excluded). Replaying those in time
order, allocations at the operator's start and frees at its end, gives the running total of the call's tensor
memory; its maximum is the peak. Buffers an operator both allocates and frees inside itself are not seen, so
this is a lower bound on the true peak, exact for the tensors that outlive an operator (those that make the
(B, L, L) peaks of pairwise losses). The returned gradient counts, as on CUDA.
"""

from __future__ import annotations

import warnings
from typing import Callable


def peak_extra_bytes_cpu(step: Callable[[], object]) -> int:
    """The most bytes of tensor memory held at once during one call of `step`, beyond what was held before it."""
    from torch.profiler import ProfilerActivity, profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            result = step()
    changes = []
    for event in prof.events():
        change = event.self_cpu_memory_usage
        if change > 0:
            changes.append((event.time_range.start, change))
        elif change < 0:
            changes.append((event.time_range.end, change))
    held = peak = 0
    # Allocations before frees at the same instant: the peak is not understated by the order of ties.
    for _, change in sorted(changes, key=lambda item: (item[0], -item[1])):
        held += change
        peak = max(peak, held)
    del result
    return int(peak)


def quadratic_estimate(probe_bytes: int, probe_length: int, length: int) -> int:
    """Bytes at `length` of an implementation whose peak at `probe_length` (same batch) was `probe_bytes` and
    grows as the square of the list length, as (B, L, L) pair tensors do."""
    return int(probe_bytes * (length / probe_length) ** 2)


def size_text(nbytes: float) -> str:
    """'9.2 GiB', or '12.5 MiB' below a tenth of a GiB."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 / 10 else f"{nbytes / 2**20:.1f} MiB"

