"""Peak extra memory of one step on the CPU, where torch keeps no allocator statistics; the (B, L, L) estimate.

Two counts, added: torch's tensors, followed op by op (a dispatch mode sees every op's outputs and keeps
each storage's bytes until the storage is freed), and numpy's arrays (tracemalloc, which numpy reports its
data buffers to). Their sum bounds the true peak from above (the two peaks need not coincide), counts the
step's outputs (the returned gradient included) and nothing allocated before it. It is deterministic: no
allocator caching, page faults or other threads enter. Not seen: memory an op allocates and frees inside
itself (no op of the loss's CPU path allocates more than its outputs, sorting aside, which runs in numpy).
"""

from __future__ import annotations

import tracemalloc
import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class _LiveStorages(TorchDispatchMode):
    """Bytes of the storages the ops under it created that are still alive, and their peak."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.seen: set[int] = set()

    def _freed(self, key: int, nbytes: int):
        self.seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # a view's, a detach's or an in-place op's output shares an input's storage: counted, or made before
        inputs = {arg.untyped_storage().data_ptr() for arg in tree_flatten((args, kwargs))[0]
                  if isinstance(arg, torch.Tensor) and arg.device.type == "cpu"}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self.seen or key in inputs or storage.nbytes() == 0:
                continue
            self.seen.add(key)
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._freed, key, storage.nbytes())
        return out


def _traced_call(step: Callable[[], object]) -> int:
    tracemalloc.reset_peak()
    numpy_before = tracemalloc.get_traced_memory()[0]
    with _LiveStorages() as torch_counts:
        result = step()
    numpy_peak = tracemalloc.get_traced_memory()[1] - numpy_before
    del result
    return torch_counts.peak + numpy_peak


def peak_extra_bytes_cpu(step: Callable[[], object]) -> int:
    """Peak bytes one call of `step` holds beyond what existed before it (torch and numpy, outputs included).

    The step runs twice, the first call unmeasured and untraced: a first call would also count the Python
    objects of the imports and caches it fills once (tens of MB of them), and tracemalloc slows imports a lot.
    """
    with _LiveStorages():
        step()
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        return _traced_call(step)
    finally:
        if not tracing:
            tracemalloc.stop()


def quadratic_estimate(probe_bytes: int, probe_length: int, length: int) -> int:
    """Bytes at `length` of an implementation whose peak at `probe_length` (same batch) was `probe_bytes` and
    grows as the square of the list length, as (B, L, L) pair tensors do."""
    return int(probe_bytes * (length / probe_length) ** 2)


def size_text(nbytes: float) -> str:
    """'9.2 GiB', or '12.5 MiB' below a tenth of a GiB."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 / 10 else f"{nbytes / 2**20:.1f} MiB"

