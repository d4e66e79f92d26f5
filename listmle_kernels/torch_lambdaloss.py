"""The PyTorch backend of LambdaLoss (and RankNet, its unweighted case): pairs visited in tiles, analytic gradient.

Per row, the real documents are put in score order (descending; equal scores keep input order, NaN first as
torch.sort puts it) and numbered p = 0..n-1. With gains G_p = (2^max(y_p, 0) - 1) / max(eps, maxDCG@k) and
discounts D_p = log2(2 + p), the pair (i, j) counts when both labels are finite, y_i > y_j (any two finite
labels, the diagonal included, for NDCGLoss1) and, with k, when i < k or j < k. Its term is

    w_ij * logsigmoid(sigma * d_ij),    d_ij = clamp(s_i - s_j, -1e8, 1e8)   (a NaN difference taken as 0)

and the row's loss is -log_scale * sum of its counted terms. The gradient, by hand:

    d/ds_i [w logsigmoid(sigma d)] = w * sigma * sigmoid(-sigma d)     (and minus that for s_j)

inside the clamp's range, 0 outside it (clamp's own gradient) and at NaN differences.

Every weight but NDCGLoss1's is symmetric in (i, j) and at most one of (i, j), (j, i) counts, so each unordered
pair i < j is visited once, with the sign a_ij = sign(y_i - y_j) (0 when the pair does not count) choosing its
direction: term w_ij * logsigmoid(sigma * a_ij * d_ij). NDCGLoss1 counts both directions of every pair of finite
labels, each with its own weight gain_i / D_i, plus the diagonal, whose term is a constant (logsigmoid(0)).
The k condition i < k or j < k is i < k once i < j: with k, only the first k rows of pairs are visited.

Memory: pairs are visited in tiles of columns, (B, rows, tile) at a time, the tile chosen so that one pair
buffer holds about PAIR_TILE_ELEMENTS elements; never (B, L, L) at long rows.
"""

import math

import torch

from .inputs import SCHEME_NDCGLOSS1, SCHEME_NDCGLOSS2, SCHEME_NDCGLOSS2PP, SCHEME_NONE, LambdaLossInputs, real_mask
from .numerics import accumulator_dtype, gain_shift, shifted_gains

DIFFERENCE_LIMIT = 1e8  # sentence-transformers clamps score differences to +-1e8
# Elements of one (B, rows, tile) pair buffer: a tile's dozen float32 buffers stay within about 12 MiB, near the
# caches, for elementwise work that is memory-bound on a CPU, and memory stays O(B * L * tile) at any length.
PAIR_TILE_ELEMENTS = 1 << 18


def score_order(scores, real):
    """(B, L) indices putting each row's real documents first, in score order: descending, equal scores in
    input order, NaN first (as torch.sort(descending=True) puts it), then the padding."""
    key = torch.where(real, scores, float("-inf"))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    if not bool(real.all()) and bool((key == float("-inf")).logical_and_(real).any()):
        # a real score of -inf ties with the padding: a second stable sort moves the padding after it
        slots = torch.sort(real.gather(1, order).logical_not().view(torch.uint8), dim=1, stable=True).indices
        order = order.gather(1, slots)
    return order


def _gains(y, valid, n_real, k, eps, acc):
    """(B, L) gains (2^max(y, 0) - 1) / max(eps, maxDCG@k) of the score-ordered labels (0 where not valid),
    numerators and maxDCG scaled by the row's power of two of `gain_shift` (finite for any finite label)."""
    clamped = torch.where(valid, y.clamp_min(0), 0)
    ideal = clamped.sort(dim=1, descending=True).values
    shift = gain_shift(ideal[:, :1])  # from the row's largest label; (B, 0) for rows without documents
    positions = torch.arange(y.shape[1], device=y.device, dtype=acc)
    top = n_real if not k else n_real.clamp_max(k)
    max_dcg = torch.where(positions[None, :] < top[:, None], shifted_gains(ideal, shift) / torch.log2(positions + 2),
                          0).sum(1, keepdim=True)
    max_dcg = torch.maximum(max_dcg, torch.exp2(-shift) * eps) if shift.numel() else max_dcg.clamp_min(eps)
    # 0 only where eps rounds to 0 in acc and no label is above 0: every gain is then 0 (0 / inf), not 0 / 0
    max_dcg = torch.where(max_dcg > 0, max_dcg, float("inf"))
    return torch.where(valid, shifted_gains(clamped, shift), 0) / max_dcg


def _position_weights(scheme, mu, rows, cols, acc, device):
    """(rows, cols) factor of the pair weights that depends on positions only (None where there is none):
    |1/D_i - 1/D_j| (LambdaRank), |1/log2(1 + |i-j|) - 1/log2(2 + |i-j|)| (NDCGLoss2), or mu times the
    second plus the first (NDCGLoss2++). NDCGLoss2's factor is 0 on the diagonal."""
    if scheme in (SCHEME_NONE, SCHEME_NDCGLOSS1):
        return None
    i = torch.arange(rows.start, rows.stop, device=device, dtype=acc)[:, None]
    j = torch.arange(cols.start, cols.stop, device=device, dtype=acc)[None, :]
    lambdarank = (1 / torch.log2(i + 2) - 1 / torch.log2(j + 2)).abs_()
    if scheme == SCHEME_NDCGLOSS2 or scheme == SCHEME_NDCGLOSS2PP:
        delta = (j - i).abs_()
        ndcgloss2 = torch.where(delta > 0, (1 / torch.log2(1 + delta) - 1 / torch.log2(2 + delta)).abs_(), 0)
        return ndcgloss2 if scheme == SCHEME_NDCGLOSS2 else ndcgloss2.mul_(mu).add_(lambdarank)
    return lambdarank


def _differences(s, rows, cols, clean):
    """(clamped differences s_i - s_j for rows x cols, the mask where the clamp passes the gradient or None
    when it passes it everywhere). `clean`: no NaN, no inf, and a span within the limit, so no clamp."""
    d = s[:, rows, None] - s[:, None, cols]
    if clean:
        return d, None
    inside = d.abs() <= DIFFERENCE_LIMIT  # False at NaN
    return d.clamp_(-DIFFERENCE_LIMIT, DIFFERENCE_LIMIT).nan_to_num_(0.0, DIFFERENCE_LIMIT, -DIFFERENCE_LIMIT), inside


def _symmetric_tile(s, y_or_nan, gain, rows, cols, scheme, mu, sigma, clean, grad):
    """The unordered pairs i < j of one tile, for every scheme but NDCGLoss1: (loss sums (B,), pair counts (B,))
    and, when `grad` is given, the gradient added into it."""
    d, inside = _differences(s, rows, cols, clean)
    # sign(y_i - y_j): 0 where a label is not finite (NaN stands for those) or the labels tie
    a = (y_or_nan[:, rows, None] - y_or_nan[:, None, cols]).sign_().nan_to_num_(0.0)
    if rows.stop > cols.start:  # the tile reaches the diagonal: only i < j
        a.mul_(torch.arange(rows.start, rows.stop, device=s.device)[:, None]
               < torch.arange(cols.start, cols.stop, device=s.device)[None, :])
    count = torch.count_nonzero(a, (1, 2))
    x = d.mul_(a) if sigma == 1 else d.mul_(a).mul_(sigma)  # sigma * a * d: the counted direction's argument
    position = _position_weights(scheme, mu, rows, cols, s.dtype, s.device)
    if position is not None:  # RankNet's weight is 1
        a.mul_((gain[:, rows, None] - gain[:, None, cols]).abs_().mul_(position))  # now w * a, the signed weight
    # w |a| logsigmoid(x) = -|w a logsigmoid(x)|, as logsigmoid <= 0 and w >= 0
    loss = torch.nn.functional.logsigmoid(x).mul_(a).abs_().sum((1, 2)).neg_()
    if grad is not None:
        g = x.neg_().sigmoid_().mul_(a)  # w * a * sigmoid(-x); sigma and log_scale come later
        if inside is not None:
            g.mul_(inside)
        grad[:, rows] += g.sum(2)
        grad[:, cols] -= g.sum(1)
    return loss, count


def _ndcgloss1_tile(s, valid, unit, rows, cols, sigma, clean, grad):
    """NDCGLoss1's pairs i < j of one tile, both directions: u_i logsigmoid(sigma d) + u_j logsigmoid(-sigma d)
    with u = gain / D; (loss sums (B,), unordered pair counts (B,)), the gradient added into `grad`."""
    d, inside = _differences(s, rows, cols, clean)
    both = valid[:, rows, None] & valid[:, None, cols]
    if rows.stop > cols.start:
        both &= (torch.arange(rows.start, rows.stop, device=s.device)[:, None]
                 < torch.arange(cols.start, cols.stop, device=s.device)[None, :])
    if inside is not None:
        inside &= both
    x = d if sigma == 1 else d.mul_(sigma)
    u_i = torch.where(both, unit[:, rows, None], 0)
    u_j = torch.where(both, unit[:, None, cols], 0)
    forward, backward = torch.nn.functional.logsigmoid(x), torch.nn.functional.logsigmoid(x.neg())
    loss = (forward * u_i).sum((1, 2)) + (backward * u_j).sum((1, 2))
    if grad is not None:
        # d/ds_i = u_i sigmoid(-x) - u_j sigmoid(x), each sigmoid the exp of its logsigmoid
        g = backward.exp_().mul_(u_i).sub_(forward.exp_().mul_(u_j))
        if inside is not None:
            g.mul_(inside)
        grad[:, rows] += g.sum(2)
        grad[:, cols] -= g.sum(1)
    return loss, both.sum((1, 2))


def pair_tile(batch, rows, length, budget=PAIR_TILE_ELEMENTS):
    """Columns a tile of pairs holds: one (batch, rows, tile) buffer of about `budget` elements."""
    return max(1, min(length, budget // max(1, batch * rows)))


def torch_lambdaloss(inputs: LambdaLossInputs, need_grad: bool):
    """(row_loss (B,), row_pairs (B,) int64, grad (B, L) or None): the per-row losses in the accumulator dtype,
    the number of counted pairs of each row, and d(sum_b row_loss_b)/d(scores) in the accumulator dtype."""
    scores = inputs.scores.detach()
    batch, length = scores.shape
    acc = accumulator_dtype(scores.dtype)
    real = real_mask(scores, inputs.mask, inputs.lengths)
    order = score_order(scores, real)
    n_real = real.sum(1)
    # In score order the real documents come first: positions 0..n-1, then padding
    longest = int(n_real.max()) if batch else 0
    order_kept = order[:, :longest]
    s = scores.gather(1, order_kept).to(acc)
    y = inputs.labels.gather(1, order_kept).to(acc)
    in_row = torch.arange(longest, device=scores.device)[None, :] < n_real[:, None]
    valid = in_row & torch.isfinite(y)
    s = torch.where(in_row, s, 0)  # padding may hold anything; its pairs never count
    # RankNet (scheme "none") weighs every pair 1: no gains at all
    gain = None if inputs.scheme == SCHEME_NONE else _gains(y, valid, n_real, inputs.k, inputs.eps, acc)
    # No NaN, no inf, and a span within the clamp's limit: no pair needs the clamp or its mask
    clean = bool(torch.isfinite(s).all()) and longest > 0 and float(s.amax() - s.amin()) <= DIFFERENCE_LIMIT

    grad = torch.zeros(batch, longest, dtype=acc, device=scores.device) if need_grad else None
    row_loss = torch.zeros(batch, dtype=acc, device=scores.device)
    row_pairs = torch.zeros(batch, dtype=torch.int64, device=scores.device)
    top_rows = min(longest, inputs.k) if inputs.k else longest  # i < k once i < j
    ndcgloss1 = inputs.scheme == SCHEME_NDCGLOSS1
    if ndcgloss1:
        unit = gain / torch.log2(torch.arange(longest, device=scores.device, dtype=acc) + 2)
    else:
        y_or_nan = torch.where(valid, y, float("nan"))
    tile = pair_tile(batch, top_rows, longest)
    for start in range(1, longest, tile):  # column 0 has no pair i < j
        cols = slice(start, min(start + tile, longest))
        rows = slice(0, min(top_rows, cols.stop - 1))
        if ndcgloss1:
            loss, count = _ndcgloss1_tile(s, valid, unit, rows, cols, inputs.sigma, clean, grad)
            count = 2 * count
        else:
            loss, count = _symmetric_tile(s, y_or_nan, gain, rows, cols, inputs.scheme, inputs.mu,
                                          inputs.sigma, clean, grad)
        row_loss += loss
        row_pairs += count.to(torch.int64)
    if ndcgloss1:  # the diagonal: logsigmoid(0) = -log 2 for every finite label at a position < k (no gradient)
        diagonal = valid[:, :top_rows]
        row_loss -= math.log(2) * torch.where(diagonal, unit[:, :top_rows], 0).sum(1)
        row_pairs += diagonal.sum(1)
    row_loss.mul_(-inputs.log_scale)
    if grad is None:
        return row_loss, row_pairs, None
    grad.mul_(-inputs.log_scale * inputs.sigma)
    # back to input order; padding (and the columns past the longest row) get 0
    full = torch.zeros(batch, length, dtype=acc, device=scores.device)
    return row_loss, row_pairs, full.scatter_(1, order_kept, grad)
