"""The PyTorch backend: vectorised over rows, loss and analytic gradient in one pass.

Works in "slot" space: slot r of a row holds the r-th document of the target order (sorting gathers
scores into slots; input order keeps positions, with padding holes in between). With
lse_r = log sum_{t >= r} exp s_t over real slots:

    loss       = -sum_r w_r (s_r - lse_r)
    dloss/ds_j = -w_j + exp(s_j) * sum_{r <= j} w_r exp(-lse_r)

Two exact ways to evaluate the sums, chosen per row:

* linear (fast): shift each row by its max m, e = exp(s - m), suffix sums S_r = sum_{t >= r} e_t by
  cumsum, s_r - lse_r = (s_r - m) - log S_r, and grad_j = e_j * sum_{r <= j} w_r / S_r - w_j, in
  float32 (float64 for float64 scores). Exact while no real score lies more than LINEAR_SPAN below its
  row's max: then e >= exp(-LINEAR_SPAN) and 1 / S <= exp(LINEAR_SPAN) stay normal numbers.
* log space (any span, any scale): the rows that span more. Each suffix sum is kept as a pair (m_r, S_r),
  m_r = max_{t >= r} s_t and S_r = sum_{t >= r} exp(s_t - m_r) in [1, n], so s_r - lse_r = (s_r - m_r) -
  log S_r, and grad_j = exp(s_j - m_j) * sum_{r <= j} (w_r / S_r) exp(m_j - m_r) - w_j. Every exponent
  is the difference of two scores, rounded once, so nothing is lost to the scores' distance from 0 nor
  to a far outlier (a shift by the row's max would round the other scores to the spacing of the span).
"""

import torch

from .inputs import WEIGHTS_NONE, WEIGHTS_PLISTMLE, ListMLEInputs, real_mask
from .numerics import LINEAR_SPAN, accumulator_dtype, normalised_rank_weights
from .target_order import target_order


def _rank_weights(inputs: ListMLEInputs, real, realf, acc):
    """(B, L) normalised lambda weight of each slot's rank (0 at padding)."""
    if inputs.weight_kind == WEIGHTS_NONE:
        return realf
    if inputs.mask is not None and not inputs.sort_by_labels:
        rank = real.cumsum(1) - 1  # holes: a slot's rank counts the real slots before it
    else:
        rank = torch.arange(real.shape[1], device=real.device)[None, :]  # real slots come first
    if inputs.weight_kind == WEIGHTS_PLISTMLE:
        # (2^(n-1-r) - 1) / sum, scaled by 2^-n so it never overflows: (2^-(r+1) - 2^-n) / (1 - (n+1) 2^-n)
        n = realf.sum(1, keepdim=True)
        tail = torch.exp2(-n)
        # n <= 1: the total and every numerator are 0; over `tiny` the weights stay 0
        total = (1 - (n + 1) * tail).clamp_min_(torch.finfo(acc).tiny)
        return (torch.exp2(-(rank + 1).to(acc)) - tail).mul_(realf).div_(total)
    w = normalised_rank_weights(inputs.weights, real.sum(1), acc)  # finite, 0 at padded ranks
    return w.gather(1, rank.expand_as(real).clamp(min=0)).mul_(realf)


def _linear_sums(s, real, realf, w, need_grad):
    """(s - lse at real slots, gradient or None, rows too wide for them: (B,) bool, or None if there are none).

    Few full-size ops and few fresh buffers, on purpose (this is the CPU hot path, and at 256 x 100
    the sort-by-labels path's working set already spills the L2 cache): one `where` removes padding
    (which may hold NaN); z is clamped so exp never takes its slow underflow path, and padding is
    zeroed by a multiply, so it drops out of every sum. Later steps reuse earlier buffers in place.
    The rows too wide get finite values here, which the caller replaces.
    """
    span, finfo = LINEAR_SPAN[s.dtype], torch.finfo(s.dtype)
    z = torch.where(real, s, float("-inf"))
    z.sub_(z.amax(1, keepdim=True).clamp_min_(finfo.min))  # empty rows: no -inf - -inf
    z.clamp_min_(-(span + 4))  # exp stays normal: no slow underflow path
    real_z = torch.mul(z, realf)
    wide = (real_z.amin(1) < -span) if float(real_z.amin()) < -span else None  # per row only when needed
    e = torch.exp(z).mul_(realf)
    suffix = e.flip(1).cumsum_(1).flip(1).clamp_min_(finfo.tiny)  # >= e at real slots; 0 at trailing padding
    log_prob = z.sub_(torch.log(suffix))  # finite everywhere; padding is weighted by w = 0
    if not need_grad:
        return log_prob, None, wide
    return log_prob, torch.div(w, suffix).cumsum_(1).mul_(e).sub_(w), wide


def _log_space_sums(s, real, w, need_grad):
    """(s - lse, gradient or None) relative to each slot's suffix max (module docstring); any span, any scale.

    m_r is known up front (a cumulative max), so both sums are Hillis-Steele scans with a fixed reference a
    slot: log2(L) steps, each adding a partial sum 2^k slots away times exp(m_near - m_far) <= 1, a
    difference of two scores. Past the last real slot m is the least finite float, so those differences
    stay finite (no -inf - -inf) where the partial sums they scale are 0.
    """
    length = s.shape[1]
    z = torch.where(real, s, float("-inf"))
    top = z.flip(1).cummax(1).values.flip(1).clamp_min_(torch.finfo(s.dtype).min)
    below_top = z.sub_(top)  # s_r - m_r <= 0 at real slots, -inf at padding
    suffix = torch.exp(below_top)  # becomes S_r = sum_{t >= r} exp(s_t - m_r), >= 1 at real slots
    step = 1
    while step < length:
        suffix[:, :-step] += torch.exp(top[:, step:] - top[:, :-step]).mul_(suffix[:, step:])
        step *= 2
    log_prob = torch.where(real, below_top - torch.log(suffix), 0)
    if not need_grad:
        return log_prob, None
    # sum_{r <= j} w_r exp(-lse_r) = exp(-m_j) * sum_{r <= j} (w_r / S_r) exp(m_j - m_r), the last sum by scan
    prefix = torch.where(real, w / suffix, 0)
    step = 1
    while step < length:
        prefix[:, step:] += torch.exp(top[:, step:] - top[:, :-step]).mul_(prefix[:, :-step])
        step *= 2
    return log_prob, torch.where(real, torch.exp(below_top) * prefix - w, 0)


def torch_listmle(inputs: ListMLEInputs, seed: int, row_divisor: int, need_grad: bool):
    """Per-row losses (B,) in float32/float64 and the gradient of sum(loss) / row_divisor, or None."""
    scores = inputs.scores.detach()
    real = real_mask(scores, inputs.mask, inputs.lengths)
    order = None
    s = scores
    if inputs.sort_by_labels:
        order = target_order(inputs.labels, real, inputs.random_ties, seed)
        s = s.gather(1, order)
        if inputs.mask is not None:
            # In target order the real documents come first (from lengths, `real` already is that prefix).
            real = real_mask(scores, None, inputs.mask.sum(1))
    acc = accumulator_dtype(scores.dtype)
    s = s.to(acc)
    realf = real.view(torch.uint8).to(acc)  # bool -> float casts are not vectorised on CPU: 3x slower
    w = _rank_weights(inputs, real, realf, acc)

    log_prob, grad, wide = _linear_sums(s, real, realf, w, need_grad)
    if wide is not None:  # rows beyond the linear sums' reach: each takes the log-space sums on its own
        rows = wide.nonzero().squeeze(1)
        wide_log_prob, wide_grad = _log_space_sums(s[rows], real[rows], w[rows], need_grad)
        log_prob[rows] = wide_log_prob
        if grad is not None:
            grad[rows] = wide_grad
    row_loss = -(w * log_prob).sum(1)
    if grad is None:
        return row_loss, None
    grad = (grad.div_(row_divisor) if row_divisor != 1 else grad).to(scores.dtype)
    if order is not None:
        grad = torch.empty_like(grad).scatter_(1, order, grad)
    # Contiguous like the Triton backend's (and as the operator's fake promises torch.compile): with a
    # transposed mask and scores, `where` above returns their layout.
    return row_loss, grad.contiguous()
