"""`torch.ops.listmle_kernels.listmle_rows`: the loss as a registered PyTorch operator.

Registering it (fake implementation for tracing, autograd formula) lets `torch.compile(...,
fullgraph=True)` treat the fused kernel as one opaque node, on CPU and CUDA. `listmle_loss` uses it
while torch.compile traces; eagerly it goes through `ListMLEFunction`, because the operator's
dispatch costs about 0.2 ms a call on a CPU. Both call `compute_rows`.
"""

from typing import Optional

import torch
from torch import Tensor

from .inputs import ListMLEInputs
from .numerics import accumulator_dtype, scaled_gradient


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


@torch.library.custom_op("listmle_kernels::listmle_rows", mutates_args=())
def listmle_rows(scores: Tensor, labels: Optional[Tensor], mask: Optional[Tensor], lengths: Optional[Tensor],
                 weights: Optional[Tensor], weight_kind: int, random_ties: bool,
                 seed: int, row_divisor: int, need_grad: bool, backend: str) -> tuple[Tensor, Tensor]:
    """Per-row losses (B,) and d(sum_b loss_b / row_divisor)/d(scores) ((0,)-shaped when not need_grad).

    Arguments are already checked (see `validation.parse_inputs`); labels are given only when sorting
    by them; `backend` is "triton" or "torch".
    """
    inputs = ListMLEInputs(scores=scores, mask=mask, lengths=lengths, labels=labels, weight_kind=weight_kind,
                           weights=weights, random_ties=random_ties, backend=backend)
    row_loss, grad = compute_rows(inputs, seed, row_divisor, need_grad)
    return row_loss, grad if grad is not None else scores.new_empty(0)


@listmle_rows.register_fake
def _(scores, labels, mask, lengths, weights, weight_kind, random_ties, seed, row_divisor,
      need_grad, backend):
    row_loss = scores.new_empty(scores.shape[0], dtype=accumulator_dtype(scores.dtype))
    return row_loss, (torch.empty_like(scores, memory_format=torch.contiguous_format) if need_grad
                      else scores.new_empty(0))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1])
    ctx.mark_non_differentiable(output[1])  # the gradient output has no derivative of its own
    ctx.set_materialize_grads(False)


def _backward(ctx, grad_row_loss, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    if grad_row_loss is None:
        return (None,) * 11
    # Out of place: the saved gradient stays valid for a second backward (retain_graph, gradcheck).
    return (scaled_gradient(grad, grad_row_loss[:, None]),) + (None,) * 10


listmle_rows.register_autograd(_backward, setup_context=_setup_context)
