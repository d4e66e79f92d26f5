"""`torch.ops.listmle_kernels.listmle_rows`, `lambdaloss_rows`, `listnet_rows`: the losses as registered PyTorch
operators.

Why it exists: torch.compile traces Python, and the loss's host code reads data to pick its path (the
PyTorch path's choice between linear and log-space sums is a data-dependent branch, which
`fullgraph=True` rejects when it traces `ListMLEFunction` itself). Registered as an operator, with a
fake (the outputs' shapes and dtypes, for tracing without data) and its autograd formula, the loss is
one opaque graph node that `torch.compile(..., fullgraph=True)` keeps whole, on CPU and CUDA.
`listmle_loss` calls it only while torch.compile traces; eagerly it goes through `ListMLEFunction`
(autograd.py), because the operator's dispatch costs about 0.2 ms a call on a CPU. Both compute with
`compute_rows`. LambdaLoss and ListNet follow the same pattern (their CPU paths read data too: the longest
row, whether any pair needs the clamp).

Each operator, its fake and its autograd registration live together here: the three must agree on the
schema, and importing this module registers all three.
"""

from typing import Optional

import torch
from torch import Tensor

from .dispatch import compute_lambdaloss_rows, compute_listnet_rows, compute_rows
from .inputs import LambdaLossInputs, ListMLEInputs, ListNetInputs
from .numerics import accumulator_dtype, scaled_gradient


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


# What tracing sees instead of a kernel launch: the per-row losses in the accumulator dtype and a contiguous
# gradient (both backends return one), or an empty placeholder when no gradient is asked for.
@listmle_rows.register_fake
def _(scores, labels, mask, lengths, weights, weight_kind, random_ties, seed, row_divisor,
      need_grad, backend):
    row_loss = scores.new_empty(scores.shape[0], dtype=accumulator_dtype(scores.dtype))
    return row_loss, (torch.empty_like(scores, memory_format=torch.contiguous_format) if need_grad
                      else scores.new_empty(0))


# Autograd through the operator: forward already computed the gradient, so backward scales it by grad_output.
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


@torch.library.custom_op("listmle_kernels::lambdaloss_rows", mutates_args=())
def lambdaloss_rows(scores: Tensor, labels: Tensor, mask: Optional[Tensor], lengths: Optional[Tensor], scheme: int,
                    k: int, sigma: float, mu: float, eps: float, log_scale: float, need_grad: bool,
                    backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row losses (B,), counted pairs per row (B,) int64, and d(sum_b loss_b)/d(scores) in the accumulator
    dtype ((0,)-shaped when not need_grad). Arguments are already checked (`validation.parse_lambdaloss_inputs`)."""
    inputs = LambdaLossInputs(scores=scores, labels=labels, mask=mask, lengths=lengths, scheme=scheme, k=k,
                              sigma=sigma, mu=mu, eps=eps, log_scale=log_scale, backend=backend)
    row_loss, row_pairs, grad = compute_lambdaloss_rows(inputs, need_grad)
    return row_loss, row_pairs, grad if grad is not None else scores.new_empty(0)


@lambdaloss_rows.register_fake
def _(scores, labels, mask, lengths, scheme, k, sigma, mu, eps, log_scale, need_grad, backend):
    acc = accumulator_dtype(scores.dtype)
    row_loss = scores.new_empty(scores.shape[0], dtype=acc)
    row_pairs = scores.new_empty(scores.shape[0], dtype=torch.int64)
    return row_loss, row_pairs, (torch.empty_like(scores, dtype=acc, memory_format=torch.contiguous_format)
                                 if need_grad else scores.new_empty(0))


def _lambdaloss_setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[2])
    ctx.scores_dtype = inputs[0].dtype
    ctx.mark_non_differentiable(output[1], output[2])
    ctx.set_materialize_grads(False)


def _lambdaloss_backward(ctx, grad_row_loss, _grad_of_pairs, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    if grad_row_loss is None:
        return (None,) * 12
    # Out of place (the saved gradient stays valid for a second backward), then in the scores' dtype
    return (scaled_gradient(grad, grad_row_loss[:, None]).to(ctx.scores_dtype),) + (None,) * 11


lambdaloss_rows.register_autograd(_lambdaloss_backward, setup_context=_lambdaloss_setup_context)


@torch.library.custom_op("listmle_kernels::listnet_rows", mutates_args=())
def listnet_rows(scores: Tensor, labels: Tensor, mask: Optional[Tensor], lengths: Optional[Tensor], row_divisor: int,
                 need_grad: bool, backend: str) -> tuple[Tensor, Tensor]:
    """Per-row losses (B,) and d(sum_b loss_b / row_divisor)/d(scores) ((0,)-shaped when not need_grad).
    Arguments are already checked (`validation.parse_listnet_inputs`)."""
    inputs = ListNetInputs(scores=scores, labels=labels, mask=mask, lengths=lengths, backend=backend)
    row_loss, grad = compute_listnet_rows(inputs, row_divisor, need_grad)
    return row_loss, grad if grad is not None else scores.new_empty(0)


@listnet_rows.register_fake
def _(scores, labels, mask, lengths, row_divisor, need_grad, backend):
    row_loss = scores.new_empty(scores.shape[0], dtype=accumulator_dtype(scores.dtype))
    return row_loss, (torch.empty_like(scores, memory_format=torch.contiguous_format) if need_grad
                      else scores.new_empty(0))


def _listnet_backward(ctx, grad_row_loss, _grad_of_grad):
    (grad,) = ctx.saved_tensors
    if grad_row_loss is None:
        return (None,) * 7
    return (scaled_gradient(grad, grad_row_loss[:, None]),) + (None,) * 6


listnet_rows.register_autograd(_listnet_backward, setup_context=_setup_context)
