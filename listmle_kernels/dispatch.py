"""`compute_rows`: the per-row losses and their gradient, from the backend the inputs name.

The autograd Function (eager calls) and the registered operator (torch.compile) both call it.
"""

import torch

from .inputs import ListMLEInputs
from .numerics import accumulator_dtype


def compute_rows(inputs: ListMLEInputs, seed: int, row_divisor: int, need_grad: bool):
    """Per-row losses (B,) and the gradient of sum_b loss_b / row_divisor (or None), by `inputs.backend`.

    An integer divisor (B for reduction="mean", else 1), not a float scale: a kernel's float scalar
    argument is float32, which would round 1/B for float64 scores.
    """
    scores = inputs.scores
    if scores.numel() == 0:  # no rows, or rows without documents: nothing to launch
        row_loss = scores.new_zeros(scores.shape[0], dtype=accumulator_dtype(scores.dtype))
        return row_loss, (torch.zeros_like(scores.detach()) if need_grad else None)
    if inputs.backend == "triton":
        from .triton_listmle import triton_listmle  # imports triton only when used
        return triton_listmle(inputs, seed, row_divisor, need_grad)
    from .torch_listmle import torch_listmle
    return torch_listmle(inputs, seed, row_divisor, need_grad)
