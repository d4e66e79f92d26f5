"""The PyTorch backend of ListNet: one pass over each row, exact (max-shifted), O(B*L).

Per row, over its real documents, with target p = softmax(labels) (a label of -inf has probability 0):

    loss   = -sum_j p_j log softmax(s)_j = -sum_j p_j ((s_j - m) - log sum_t exp(s_t - m)),   m = max_t s_t
    dloss/ds_j = softmax(s)_j - p_j

Both softmaxes are shifted by their row's max, so neither overflows; terms with p_j = 0 are left out, so a
real score of -inf costs nothing where its label is -inf too. A row with no real document: loss 0, gradient 0.
"""

import torch

from .inputs import ListNetInputs, real_mask
from .numerics import accumulator_dtype


def _log_softmax(values, real):
    """Row-wise log-softmax over the real entries (-inf at the others), max-shifted; rows without a real
    entry give -inf everywhere (no NaN)."""
    z = torch.where(real, values, float("-inf"))
    z = z - z.amax(1, keepdim=True).clamp_min(torch.finfo(z.dtype).min)
    return z - torch.exp(z).sum(1, keepdim=True).clamp_min_(torch.finfo(z.dtype).tiny).log_()


def torch_listnet(inputs: ListNetInputs, row_divisor: int, need_grad: bool):
    """(row_loss (B,) in the accumulator dtype, grad of sum(row_loss) / row_divisor in the scores' dtype, or None)."""
    scores = inputs.scores.detach()
    acc = accumulator_dtype(scores.dtype)
    real = real_mask(scores, inputs.mask, inputs.lengths)
    log_prob = _log_softmax(scores.to(acc), real)
    target = _log_softmax(inputs.labels.to(acc), real).exp_()  # 0 at padding and at -inf labels
    has_target = target > 0
    row_loss = torch.where(has_target, target * log_prob.neg(), 0).sum(1)
    if not need_grad:
        return row_loss, None
    grad = torch.where(real, log_prob.exp_() - target, 0)
    if row_divisor != 1:
        grad.div_(row_divisor)
    return row_loss, grad.to(scores.dtype).contiguous()
