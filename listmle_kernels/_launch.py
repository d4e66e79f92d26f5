"""What every Triton launch here needs on the host: the device context, and grid arithmetic.

`cdiv` and `next_power_of_2` are plain integer functions rather than `triton.cdiv` /
`triton.next_power_of_2`. Those are constexpr functions now (Triton 3.9 here; on the H100's 3.6 the
cProfile in bench/results/gpu-20261123/kernel-profile-sort-host.log counts their `__call__` ten times
a training step), and a host-side call unwraps its arguments through Triton's language layer: ~6 us
each on this project's 2-core CPU. With these, the launcher's own Python (the kernel launch stubbed
out, 16 x 10) went from 69 to 23 us there (ad hoc timings, docs/performance-record.md).
"""

import contextlib

import torch


def on_device_of(tensor: torch.Tensor):
    """Make the tensor's CUDA device current for a launch (a no-op for CPU tensors, interpreted).

    Triton launches on the current device and its stream, not on the device of the pointers it is
    given: scores on cuda:1 while cuda:0 is current (a second model on a second GPU, without
    torch.cuda.set_device) would otherwise fail to launch or run against the wrong device.
    """
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def cdiv(numerator: int, denominator: int) -> int:
    """ceil(numerator / denominator) for positive integers."""
    return -(-numerator // denominator)


def next_power_of_2(n: int) -> int:
    """The least power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()
