"""The per-row losses and their gradient, from the backend the inputs name: `compute_rows` (ListMLE),
`compute_lambdaloss_rows` (LambdaLoss / RankNet) and `compute_listnet_rows` (ListNet).

The autograd Functions (eager calls) and the registered operators (torch.compile) both call them. The Triton
modules are imported only when used, so the package imports without Triton.
"""

import torch

from .inputs import LambdaLossInputs, ListMLEInputs, ListNetInputs
from .numerics import accumulator_dtype


def _no_documents(scores, need_grad, grad_dtype):
    """Zero losses (B,) and a zero gradient (or None): for batches with no rows or rows with no documents."""
    row_loss = scores.new_zeros(scores.shape[0], dtype=accumulator_dtype(scores.dtype))
    return row_loss, (torch.zeros_like(scores.detach(), dtype=grad_dtype) if need_grad else None)


def compute_rows(inputs: ListMLEInputs, seed: int, row_divisor: int, need_grad: bool):
    """Per-row losses (B,) and the gradient of sum_b loss_b / row_divisor (or None), by `inputs.backend`.

    An integer divisor (B for reduction="mean", else 1), not a float scale: a kernel's float scalar
    argument is float32, which would round 1/B for float64 scores.
    """
    scores = inputs.scores
    if scores.numel() == 0:  # nothing to launch
        return _no_documents(scores, need_grad, scores.dtype)
    if inputs.backend == "triton":
        from .triton_listmle import triton_listmle  # imports triton only when used
        return triton_listmle(inputs, seed, row_divisor, need_grad)
    from .torch_listmle import torch_listmle
    return torch_listmle(inputs, seed, row_divisor, need_grad)


def compute_lambdaloss_rows(inputs: LambdaLossInputs, need_grad: bool):
    """(row_loss (B,), row_pairs (B,) int64, grad or None): the per-row losses, each row's number of counted
    pairs, and d(sum_b row_loss_b)/d(scores) in the accumulator dtype, by `inputs.backend`."""
    scores = inputs.scores
    if scores.numel() == 0:
        row_loss, grad = _no_documents(scores, need_grad, accumulator_dtype(scores.dtype))
        return row_loss, torch.zeros(scores.shape[0], dtype=torch.int64, device=scores.device), grad
    if inputs.backend == "triton":
        from .triton_lambdaloss import triton_lambdaloss
        return triton_lambdaloss(inputs, need_grad)
    from .torch_lambdaloss import torch_lambdaloss
    return torch_lambdaloss(inputs, need_grad)


def compute_listnet_rows(inputs: ListNetInputs, row_divisor: int, need_grad: bool):
    """Per-row losses (B,) and the gradient of sum_b loss_b / row_divisor in the scores' dtype (or None)."""
    scores = inputs.scores
    if scores.numel() == 0:
        return _no_documents(scores, need_grad, scores.dtype)
    if inputs.backend == "triton":
        from .triton_listnet import triton_listnet
        return triton_listnet(inputs, row_divisor, need_grad)
    from .torch_listnet import torch_listnet
    return torch_listnet(inputs, row_divisor, need_grad)
