"""Which backend computes the loss: the Triton kernels where they can run, the PyTorch path elsewhere.

A leaf: it probes for Triton (imported here only to see whether it is installed) and reads the device.
"""

import os
from typing import Optional

import torch

BACKENDS = ("auto", "triton", "torch")


def triton_unavailable_reason(device: torch.device) -> Optional[str]:
    """Why the Triton backend cannot run on `device`, or None when it can."""
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return f"triton is not installed ({err}); pip install triton, or use backend='torch'"
    if device.type == "cuda":
        return None
    if os.environ.get("TRITON_INTERPRET") == "1" and device.type == "cpu":
        return None
    return (f"the Triton kernels need CUDA tensors (scores are on {device}); set TRITON_INTERPRET=1 "
            "to run them on CPU tensors through the Triton interpreter, or use backend='torch'")


def auto_backend(device) -> str:
    """The backend `listmle_loss(..., backend="auto")` runs for scores on `device`: "triton" or "torch".

    "triton" for CUDA tensors when Triton is installed, "torch" otherwise (CPU tensors take the PyTorch
    path even where the Triton interpreter could run them: it is a test tool, not a fast path).

        >>> auto_backend("cpu")
        'torch'
    """
    device = device if isinstance(device, torch.device) else torch.device(device)
    return "triton" if device.type == "cuda" and triton_unavailable_reason(device) is None else "torch"


def resolve_backend(backend: str, scores: torch.Tensor) -> str:
    """`backend` ("auto", "triton" or "torch", already checked) as the one that runs for `scores`: ValueError when
    "triton" is asked for where it cannot run."""
    if backend == "auto":
        # CPU scores read a flag, not their device: on each call's path, where a device object and its type
        # string cost more than the rest of the choice
        return "torch" if scores.is_cpu else auto_backend(scores.device)
    if backend == "triton":
        reason = triton_unavailable_reason(scores.device)
        if reason is not None:
            raise ValueError(f"backend='triton' cannot run: {reason}")
    return backend
