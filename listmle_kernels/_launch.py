"""The device context every Triton launch here runs in."""

import contextlib

import torch


def on_device_of(tensor: torch.Tensor):
    """Make the tensor's CUDA device current for a launch (a no-op for CPU tensors, interpreted).

    Triton launches on the current device and its stream, not on the device of the pointers it is
    given: scores on cuda:1 while cuda:0 is current (a second model on a second GPU, without
    torch.cuda.set_device) would otherwise fail to launch or run against the wrong device.
    """
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()
