"""The PyTorch backend: vectorised over rows, loss and analytic gradient in one pass.

Works in "slot" space: slot r of a row holds the r-th document of the target order (sorting gathers
scores into slots; input order keeps positions, with padding holes in between). With
lse_r = log sum_{t >= r} exp s_t over real slots:

    loss      = -sum_r w_r (s_r - lse_r)
    dloss/ds_j = -w_j + exp(s_j + P_j),   P_j = log sum_{r <= j} w_r exp(-lse_r)

Both sums are log-cumsum-exps, so nothing overflows (s_j - lse_r <= 0 for r <= j).
"""

import torch

from ._inputs import WEIGHTS_NONE, WEIGHTS_PLISTMLE, ListMLEInputs, real_mask
from .ops import accumulator_dtype
from .target_order import target_order


def _rank_weights(inputs: ListMLEInputs, real, rank, acc):
    """(B, L) normalised lambda weight of each slot's rank (0 at padding)."""
    if inputs.weight_kind == WEIGHTS_NONE:
        return real.to(acc)
    if inputs.weight_kind == WEIGHTS_PLISTMLE:
        # (2^(n-1-r) - 1) / sum, scaled by 2^-n so it never overflows: (2^-(r+1) - 2^-n) / (1 - (n+1) 2^-n)
        n = real.sum(1, keepdim=True).to(acc)
        tail = torch.exp2(-n)
        total = 1 - (n + 1) * tail
        w = (torch.exp2(-(rank + 1).to(acc)) - tail) / torch.where(total > 0, total, 1)
        return torch.where(real & (total > 0), w, 0)
    w = inputs.weights.to(acc).gather(1, rank.clamp(min=0)) * real
    return w / (w.sum(1, keepdim=True) + 1e-10)


def torch_listmle(inputs: ListMLEInputs, seed: int, row_scale: float, need_grad: bool):
    """Per-row losses (B,) in float32/float64 and the gradient of sum(row_scale * loss), or None."""
    scores = inputs.scores.detach()
    acc = accumulator_dtype(scores.dtype)
    s = scores.to(acc)
    real = real_mask(scores, inputs.mask, inputs.lengths)
    order = None
    if inputs.sort_by_labels:
        order = target_order(inputs.labels, real, inputs.random_ties, seed)
        s, real = s.gather(1, order), real.gather(1, order)
    rank = real.cumsum(1) - 1
    w = _rank_weights(inputs, real, rank, acc)

    neg_inf = torch.tensor(float("-inf"), dtype=acc, device=s.device)
    suffix_lse = torch.logcumsumexp(torch.where(real, s, neg_inf).flip(1), 1).flip(1)
    row_loss = -torch.where(real, w * (s - suffix_lse), 0).sum(1)
    if not need_grad:
        return row_loss, None

    log_terms = torch.where(real & (w > 0), torch.log(w) - suffix_lse, neg_inf)
    grad = torch.where(real, torch.exp(s + torch.logcumsumexp(log_terms, 1)) - w, 0)
    grad = (grad * row_scale).to(scores.dtype)
    if order is not None:
        grad = torch.empty_like(grad).scatter_(1, order, grad)
    return row_loss, grad
