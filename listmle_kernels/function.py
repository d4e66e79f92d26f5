"""`ListMLEFunction`: the autograd Function both APIs go through.

Forward computes the per-row losses and the gradient in one pass (the reduction's scale folded in)
and saves the gradient; backward only multiplies it by grad_output.
"""

import torch

from ._inputs import parse_inputs
from .torch_listmle import torch_listmle


def draw_seed(generator, device) -> int:
    """One 31-bit seed for the random tie order, from `generator` (or torch's default generator)."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return int(torch.randint(0, 2 ** 31 - 1, (), generator=generator, device=gen_device))


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
        inputs = parse_inputs(scores, labels, mask, lengths, lambda_weight, respect_input_order,
                              ties, reduction, validate, backend)
        seed = draw_seed(generator, scores.device) if inputs.random_ties else 0
        need_grad = ctx.needs_input_grad[0]
        if inputs.backend == "triton":
            from .triton_listmle import triton_listmle  # imports triton only when used
            row_loss, grad = triton_listmle(inputs, seed, need_grad)
        else:
            row_loss, grad = torch_listmle(inputs, seed, need_grad)
        ctx.reduction = reduction
        if need_grad:
            ctx.save_for_backward(grad)
        if reduction == "none":
            return row_loss
        total = row_loss.sum()
        return total / scores.shape[0] if reduction == "mean" else total

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        scale = grad_output.to(grad.dtype)
        if ctx.reduction == "none":
            scale = scale[:, None]
        # Out of place: the saved gradient stays valid for a second backward (retain_graph, gradcheck).
        return (grad * scale,) + (None,) * 10
