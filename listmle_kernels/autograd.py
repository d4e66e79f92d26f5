"""`ListMLEFunction`, `LambdaLossFunction`, `ListNetFunction`: the losses as `torch.autograd.Function`s, for use
inside other trainers.

Forward computes the per-row losses and the gradient in one pass, with the reduction's scale folded
in, and saves the gradient; backward only multiplies it by grad_output. When the backward frees the
graph (no retain_graph / create_graph) the saved gradient is used once, so it is scaled in place and
returned: forward+backward then allocates the gradient once, not twice. Where grad_output is 1
(`loss.backward()`) the multiply is skipped: on the device by the Triton backend for half-precision
gradients and for others of 2^20 elements or more, on the host for CPU tensors.
"""

import torch

from .dispatch import compute_lambdaloss_rows, compute_listnet_rows, compute_rows
from .numerics import scaled_gradient
from .validation import parse_lambdaloss_inputs, parse_listnet_inputs, prepare

SECOND_DERIVATIVE_ERROR = (
    "the fused losses have first derivatives only: their gradient is computed in the forward pass, so it has "
    "no graph to differentiate again (Hessians, higher-order gradients, MAML-style meta-learning). "
    "For second derivatives use the plain-autograd definitions in reference (listmle_reference, "
    "lambdaloss_reference, ranknet_reference, listnet_reference).")


def graph_freed_after_backward() -> bool:
    """Whether the running backward frees the graph, so saved tensors are read this once.

    PyTorch's own AOTAutograd asks the engine the same question before donating saved buffers; where
    the query is missing, the answer is the safe one (kept).
    """
    return _KEEP_GRAPH is not None and not _KEEP_GRAPH()


# Looked up once: at small shapes each attribute lookup on a backward's path is a measurable part of it
_KEEP_GRAPH = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)


# Smallest saved gradient (elements) that the backward scales with the Triton kernel of triton_scale.py, which
# skips the pass where grad_output is 1. Below it, a torch multiply: Triton's launcher binds and specialises
# every argument in Python, and at 16 x 10 it took 55 of the backward function's 63 ms over 300 calls under
# cProfile on an H100 (bench/results/gpu-20261123/kernel-profile-sort-host.log), where one torch op costs
# 7 us. The pass it would save moves at most 8 MB of float32: under 3 us at that H100's 2.97 TB/s copy bandwidth
# (bench/results/cuda-20261123T053504.json). Half-precision gradients always take the kernel: multiplied in
# grad_output's float32 by torch, they would need a float32 temporary, which the kernel keeps in registers.
TRITON_SCALE_MIN_ELEMENTS = 1 << 20


def scale_saved_gradient(grad, grad_output, backend, in_place):
    """grad_output ((B,) for reduction "none", else a scalar) * the saved gradient: in place (the saved
    buffer is read this once), else a new tensor; in grad_output's precision, rounded once (`scaled_gradient`).
    """
    if in_place and backend == "triton" and (grad.numel() >= TRITON_SCALE_MIN_ELEMENTS
                                             or grad.dtype != grad_output.dtype):
        from .triton_scale import scale_rows_
        return scale_rows_(grad, grad_output)  # skips the multiply on the device where grad_output is 1
    if in_place and grad_output.is_cpu and grad_output.numel() == 1 and grad_output.item() == 1:
        return grad  # loss.backward(): the saved gradient is the answer (a host read, so no sync)
    scale = grad_output[:, None] if grad_output.dim() == 1 else grad_output
    if not in_place:
        return scaled_gradient(grad, scale)
    # (CPU) half precision: multiplied in grad_output's precision and rounded once, as `scaled_gradient` does
    return grad.mul_(scale) if grad.dtype == scale.dtype else grad.copy_(grad.to(scale.dtype).mul_(scale))


def reduce_rows(row_loss, reduction):
    """The per-row losses reduced: one op (one kernel launch on CUDA)."""
    if reduction == "none":
        return row_loss
    return row_loss.mean() if reduction == "mean" else row_loss.sum()


class FirstDerivativeOnly(torch.autograd.Function):
    """The saved gradient, tied to the scores it depends on, for a backward with create_graph=True.

    Left as a plain tensor, autograd would take the gradient for a constant and every second
    derivative for zero; tied to the scores, differentiating it again raises instead. The
    derivative with respect to grad_output (the multiply after this) stays exact.
    """

    @staticmethod
    def forward(ctx, grad, scores):
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx, _grad_of_grad):
        raise NotImplementedError(SECOND_DERIVATIVE_ERROR)


class ListMLEFunction(torch.autograd.Function):
    """ListMLE / p-ListMLE with a fused forward+backward.

    ListMLEFunction.apply(scores, labels, mask, lengths, lambda_weight, respect_input_order,
                          ties, generator, reduction, validate, backend)

    All eleven arguments are positional and mean what they mean in `listmle_loss` (pass None for
    labels/mask/lengths/lambda_weight/generator when unused). Only `scores` gets a gradient; a
    lambda-weight tensor is treated as a constant.
    """

    @staticmethod
    def forward(ctx, scores, labels, mask, lengths, lambda_weight, respect_input_order, ties,
                generator, reduction, validate, backend):
        inputs, seed = prepare(scores, labels, mask, lengths, lambda_weight, respect_input_order, ties,
                               generator, reduction, validate, backend)
        row_divisor = scores.shape[0] if reduction == "mean" and scores.shape[0] else 1
        row_loss, grad = compute_rows(inputs, seed, row_divisor, ctx.needs_input_grad[0])
        save_gradient(ctx, scores, grad, inputs.backend)
        return reduce_rows(row_loss, reduction)

    @staticmethod
    def backward(ctx, grad_output):
        return (backward_from_saved_gradient(ctx, grad_output),) + (None,) * 10


def save_gradient(ctx, scores, grad, backend):
    """Keep the forward's gradient for `backward_from_saved_gradient`."""
    ctx.backend = backend
    ctx.save_for_backward(grad)
    # Only a graph anchor for create_graph=True (never read, so not saved: no version check).
    ctx.scores = scores


def backward_from_saved_gradient(ctx, grad_output, divisor=None, dtype=None):
    """The saved gradient times grad_output (divided by `divisor`, a 0-d tensor, when given), as `dtype` (default:
    the saved gradient's); None when no gradient was computed. One multiply over the gradient, in place when the
    backward frees the graph."""
    (grad,) = ctx.saved_tensors
    scores, graph_freed, building_graph = ctx.scores, graph_freed_after_backward(), torch.is_grad_enabled()
    if graph_freed:
        ctx.scores = None  # released with the saved gradient, not when the loss tensor dies
    if grad is None:  # only a constant (a lambda-weight tensor) asked for a gradient
        return None
    if building_graph:  # backward(create_graph=True)
        grad = FirstDerivativeOnly.apply(grad, scores)
    in_place = graph_freed and not building_graph  # the saved gradient is read this once
    if divisor is not None:
        grad_output = grad_output / divisor  # a scalar op: the gradient itself is multiplied once
    grad = scale_saved_gradient(grad, grad_output, ctx.backend, in_place)
    return grad if dtype is None else grad.to(dtype)


class LambdaLossFunction(torch.autograd.Function):
    """LambdaLoss (RankNet: weighting_scheme="none") with a fused forward+backward.

    LambdaLossFunction.apply(scores, labels, mask, lengths, weighting_scheme, k, sigma, mu, eps, reduction_log,
                             reduction, validate, backend)

    All thirteen arguments are positional and mean what they mean in `lambda_loss` (None for mask/lengths/k
    when unused). Only `scores` gets a gradient.

    The backend's gradient is unscaled and in the accumulator dtype (float32 for half-precision scores: a long
    row's may pass float16's range before "mean" divides it by the batch's pair count); backward folds 1 / N
    and grad_output into one multiply and returns the scores' dtype.
    """

    @staticmethod
    def forward(ctx, scores, labels, mask, lengths, weighting_scheme, k, sigma, mu, eps, reduction_log,
                reduction, validate, backend):
        inputs = parse_lambdaloss_inputs(scores, labels, mask, lengths, weighting_scheme, k, sigma, mu, eps,
                                         reduction_log, reduction, validate, backend)
        row_loss, row_pairs, grad = compute_lambdaloss_rows(inputs, ctx.needs_input_grad[0])
        save_gradient(ctx, scores, grad, inputs.backend)
        ctx.scores_dtype = scores.dtype
        ctx.divisor = None
        if reduction == "mean":
            ctx.divisor = pair_divisor(row_pairs, row_loss.dtype)
            return row_loss.sum() / ctx.divisor
        return reduce_rows(row_loss, reduction)

    @staticmethod
    def backward(ctx, grad_output):
        grad = backward_from_saved_gradient(ctx, grad_output, ctx.divisor, ctx.scores_dtype)
        return (grad,) + (None,) * 12


def pair_divisor(row_pairs, dtype):
    """The divisor of LambdaLoss's "mean": the batch's counted pairs, at least 1 (as sentence-transformers), as a
    0-d tensor of `dtype` (no host sync)."""
    return row_pairs.sum().clamp_min(1).to(dtype)


class ListNetFunction(torch.autograd.Function):
    """ListNet with a fused forward+backward.

    ListNetFunction.apply(scores, labels, mask, lengths, reduction, validate, backend)

    All seven arguments are positional and mean what they mean in `listnet_loss`. Only `scores` gets a gradient.
    """

    @staticmethod
    def forward(ctx, scores, labels, mask, lengths, reduction, validate, backend):
        inputs = parse_listnet_inputs(scores, labels, mask, lengths, reduction, validate, backend)
        row_divisor = scores.shape[0] if reduction == "mean" and scores.shape[0] else 1
        row_loss, grad = compute_listnet_rows(inputs, row_divisor, ctx.needs_input_grad[0])
        save_gradient(ctx, scores, grad, inputs.backend)
        return reduce_rows(row_loss, reduction)

    @staticmethod
    def backward(ctx, grad_output):
        return (backward_from_saved_gradient(ctx, grad_output),) + (None,) * 6
