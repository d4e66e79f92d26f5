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

Every weighted scheme's position factor is at least 0 (mu >= 0) and the gains rise with the labels, so the
signed weight w_ij * a_ij is (g_i - g_j) times the position factor, and a_ij = sign of that wherever w_ij is
not 0: the tiles of weighted schemes read gains only. The pair counts need no tile: per row, the pairs of
valid documents with different labels (a sort and a searchsorted), less those whose positions are both k or
later. One log_sigmoid_forward pass gives the terms and exp(-|x|), from which log_sigmoid_backward gets
w a sigmoid(-x) in one more pass.

Memory and speed: pairs are visited in tiles of columns, (B', tile, rows) at a time with the rows contiguous
(long rows of short columns reduce and broadcast much faster than the transpose), one pair buffer holding about
PAIR_TILE_ELEMENTS elements; never (B, L, L) at long rows. With more than one tile the rows are taken longest
first, so the B' rows that reach a tile's first column are a prefix of the batch: no tile visits the pairs of
a row past its end but for the tile that holds that end. One host sync reads the rows' lengths, the span of the
real scores (within the clamp's limit, no pair needs the clamp) and whether every real label is finite.
"""

import bisect
import functools
import math

import torch

from .inputs import (SCHEME_LAMBDARANK, SCHEME_NDCGLOSS1, SCHEME_NDCGLOSS2, SCHEME_NONE, LambdaLossInputs,
                     real_mask)
from .numerics import accumulator_dtype, gain_shift, shifted_gains

DIFFERENCE_LIMIT = 1e8  # sentence-transformers clamps score differences to +-1e8
# Elements of one (B, tile, rows) pair buffer: a tile's dozen float32 buffers stay within about 12 MiB, near the
# caches, for elementwise work that is memory-bound on a CPU, and memory stays O(B * L * tile) at any length.
PAIR_TILE_ELEMENTS = 1 << 18
CACHED_FACTOR_ELEMENTS = 1 << 12  # position factors of tiles this small are kept between calls


def score_order(scores, real, may_hold_neg_inf=True):
    """(B, L) indices putting each row's real documents first, in score order: descending, equal scores in
    input order, NaN first (as torch.sort(descending=True) puts it), then the padding. `may_hold_neg_inf`
    False: the caller knows no real score is -inf (the check costs a host sync)."""
    key = torch.where(real, scores, float("-inf"))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    if may_hold_neg_inf and bool((key == float("-inf")).logical_and_(real).any()):
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


def _distinct_label_pairs(y, valid):
    """(B,) the pairs of valid documents with different labels in each row: for every valid label, the number of
    valid labels below it (invalid ones sort last as +inf and are below nothing)."""
    keys = torch.where(valid, y, float("inf")).sort(dim=1).values
    below = torch.searchsorted(keys, keys, side="left")  # sorted keys: the start of each key's run of equals
    return torch.where(keys < float("inf"), below, 0).sum(1)


def _counted_pairs(y, valid, top_rows):
    """(B,) int64 pairs i < j with y_i != y_j, both valid, and i < k (every scheme but NDCGLoss1): all such
    pairs but those whose positions are both k or later. Counted per row, so the tiles need not count."""
    count = _distinct_label_pairs(y, valid)
    if top_rows < y.shape[1]:
        count = count - _distinct_label_pairs(y[:, top_rows:], valid[:, top_rows:])
    return count.to(torch.int64)


@functools.lru_cache(maxsize=32)
def _cached_position_factor(scheme, mu, rows, cols, acc, device):
    """`_position_factor` of a small tile, kept: a short list's one tile would rebuild it with a dozen tiny
    ops at every call. Read only."""
    return _position_factor(scheme, mu, slice(*rows), slice(*cols), acc, device)


def position_factor(scheme, mu, rows, cols, acc, device):
    """`_position_factor`, from the cache when it is small (the cache then stays within a few MiB)."""
    if (rows.stop - rows.start) * (cols.stop - cols.start) <= CACHED_FACTOR_ELEMENTS:
        return _cached_position_factor(scheme, mu, (rows.start, rows.stop), (cols.start, cols.stop), acc, device)
    return _position_factor(scheme, mu, rows, cols, acc, device)


def _position_factor(scheme, mu, rows, cols, acc, device):
    """(cols, rows) factor of the pair weights that depends on positions only, 0 wherever i >= j (so that it
    also keeps the pairs i < j of a tile that reaches the diagonal): 1 (RankNet), |1/D_i - 1/D_j| (LambdaRank),
    |1/log2(1 + |i-j|) - 1/log2(2 + |i-j|)| (NDCGLoss2), or mu times the second plus the first (NDCGLoss2++)."""
    i = torch.arange(rows.start, rows.stop, device=device, dtype=acc)[None, :]
    j = torch.arange(cols.start, cols.stop, device=device, dtype=acc)[:, None]
    if scheme == SCHEME_NONE:
        return (i < j).to(acc)
    # 1/log2(2 + p) decreases with p: positive for i < j, at most 0 elsewhere
    lambdarank = (1 / torch.log2(i + 2) - 1 / torch.log2(j + 2)).clamp_min_(0)
    if scheme == SCHEME_LAMBDARANK:
        return lambdarank
    delta = (j - i).clamp_min_(0)
    ndcgloss2 = torch.where(delta > 0, 1 / torch.log2(1 + delta) - 1 / torch.log2(2 + delta), 0)
    return ndcgloss2 if scheme == SCHEME_NDCGLOSS2 else ndcgloss2.mul_(mu).add_(lambdarank)


def _differences(s, rows, cols, clean):
    """(clamped differences s_i - s_j, (B, cols, rows), the mask where the clamp passes the gradient or None
    when it passes it everywhere). `clean`: no NaN, no inf, and a span within the limit, so no clamp."""
    d = s[:, None, rows] - s[:, cols, None]
    if clean:
        return d, None
    inside = d.abs() <= DIFFERENCE_LIMIT  # False at NaN
    return d.clamp_(-DIFFERENCE_LIMIT, DIFFERENCE_LIMIT).nan_to_num_(0.0, DIFFERENCE_LIMIT, -DIFFERENCE_LIMIT), inside


def _symmetric_tile(s, key, rows, cols, position, weighted, masked, sigma, clean, grad):
    """The unordered pairs i < j of one tile, for every scheme but NDCGLoss1: the loss sums (B,), and, when
    `grad` is given, the gradient added into it. `key`: the gains (weighted schemes) or the labels (RankNet),
    NaN where a document has no pairs; `masked`: the tile may hold such NaN, which then stand for "not counted"."""
    # wa = w * a, the signed weight: the gains rise with the labels, so sign(g_i - g_j) is a = sign(y_i - y_j)
    # wherever the weight is not 0; RankNet's w is 1, a from the labels
    wa = key[:, None, rows] - key[:, cols, None]
    if not weighted:
        wa.sgn_()
    if masked:
        wa.nan_to_num_(0.0)
    if position is not None:  # None: RankNet on a tile above the diagonal, where every factor is 1
        wa.mul_(position)
    d, inside = _differences(s, rows, cols, clean)
    x = d.mul_(wa.sgn() if weighted else wa)  # a * d, the counted direction's difference
    if sigma != 1:
        x.mul_(sigma)
    # log_sigmoid_forward also returns exp(-|x|), from which log_sigmoid_backward gets sigmoid(-x) in one pass
    logsig, buffer = torch.ops.aten.log_sigmoid_forward(x)
    # the terms w |a| logsigmoid(x), as w >= 0: a dot product per row
    batch = s.shape[0]
    loss = torch.linalg.vecdot(logsig.view(batch, -1), wa.abs().view(batch, -1))
    if grad is not None:
        g = torch.ops.aten.log_sigmoid_backward(wa, x, buffer)  # w * a * sigmoid(-x); sigma, log_scale later
        if inside is not None:
            g.mul_(inside)
        grad[:, rows] += g.sum(1)
        grad[:, cols] -= g.sum(2)
    return loss


def _ndcgloss1_tile(s, valid, unit, rows, cols, sigma, clean, grad):
    """NDCGLoss1's pairs i < j of one tile, both directions: u_i logsigmoid(sigma d) + u_j logsigmoid(-sigma d)
    with u = gain / D; (loss sums (B,), unordered pair counts (B,)), the gradient added into `grad`."""
    d, inside = _differences(s, rows, cols, clean)
    both = valid[:, None, rows] & valid[:, cols, None]
    if rows.stop > cols.start:
        both &= (torch.arange(rows.start, rows.stop, device=s.device)[None, :]
                 < torch.arange(cols.start, cols.stop, device=s.device)[:, None])
    if inside is not None:
        inside &= both
    x = d if sigma == 1 else d.mul_(sigma)
    u_i = torch.where(both, unit[:, None, rows], 0)
    u_j = torch.where(both, unit[:, cols, None], 0)
    forward, backward = torch.nn.functional.logsigmoid(x), torch.nn.functional.logsigmoid(x.neg())
    loss = (forward * u_i).sum((1, 2)) + (backward * u_j).sum((1, 2))
    if grad is not None:
        # d/ds_i = u_i sigmoid(-x) - u_j sigmoid(x), each sigmoid the exp of its logsigmoid
        g = backward.exp_().mul_(u_i).sub_(forward.exp_().mul_(u_j))
        if inside is not None:
            g.mul_(inside)
        grad[:, rows] += g.sum(1)
        grad[:, cols] -= g.sum(2)
    return loss, both.sum((1, 2))


def column_tiles(lengths, top_rows, budget=PAIR_TILE_ELEMENTS):
    """[(reach, start, stop)]: the tiles of columns start..stop-1 of pairs, over rows whose lengths (in
    decreasing order) are `lengths`; `reach` rows (a prefix) reach the tile's first column. Each tile's
    (reach, rows, columns) pair buffer, rows = min(top_rows, stop - 1), holds at most about `budget` elements."""
    tiles, start, longest = [], 1, lengths[0] if lengths else 0  # column 0 has no pair i < j
    negated = [-n for n in lengths]
    while start < longest:
        reach = bisect.bisect_left(negated, -start)  # rows longer than `start`
        per_row = budget / reach
        # columns t with min(top_rows, start + t - 1) * t <= per_row
        width = max(1, int((math.sqrt((start - 1) ** 2 + 4 * per_row) - (start - 1)) / 2), int(per_row // top_rows))
        stop = min(longest, start + width)
        tiles.append((reach, start, stop))
        start = stop
    return tiles


def torch_lambdaloss(inputs: LambdaLossInputs, need_grad: bool):
    """(row_loss (B,), row_pairs (B,) int64, grad (B, L) or None): the per-row losses in the accumulator dtype,
    the number of counted pairs of each row, and d(sum_b row_loss_b)/d(scores) in the accumulator dtype."""
    scores = inputs.scores.detach()
    batch, length = scores.shape
    acc = accumulator_dtype(scores.dtype)
    device = scores.device
    real = real_mask(scores, inputs.mask, inputs.lengths)
    n_real = real.sum(1)
    # One host sync for the tile plan and the fast paths: each row's length; the span of the real scores (NaN
    # or inf when one is: then no clamp and no mask are needed only if it is within the clamp's limit); the
    # sum of the real labels (finite when every label is; a label without pairs makes it NaN or inf)
    low, high = torch.aminmax(torch.where(real, scores, 0).to(acc))
    label_sum = torch.where(real, inputs.labels, 0).sum()
    plan = torch.cat([n_real.to(torch.float64), torch.stack([(high - low).double(), label_sum.double()])]).tolist()
    lengths, span, label_sum = [int(n) for n in plan[:batch]], plan[batch], plan[batch + 1]
    clean = span <= DIFFERENCE_LIMIT
    labels_finite = math.isfinite(label_sum)
    longest = max(lengths, default=0)
    top_rows = min(longest, inputs.k) if inputs.k else longest  # i < k once i < j
    tiles = column_tiles(sorted(lengths, reverse=True), top_rows)
    if len(tiles) > 1:
        # Rows by decreasing length: the rows that reach a column are then a prefix of the batch, and a tile
        # of columns visits those only (no pairs of padding past the end of a shorter row)
        n_real, by_length = torch.sort(n_real, descending=True, stable=True)
        lengths = sorted(lengths, reverse=True)
        real = real.index_select(0, by_length)
        scores = scores.index_select(0, by_length)
        labels = inputs.labels.index_select(0, by_length)
    else:  # one tile: every row in it, in input order
        by_length, labels = None, inputs.labels
        tiles = [(batch, start, stop) for _, start, stop in tiles]
    order = score_order(scores, real, may_hold_neg_inf=not clean)
    # In score order the real documents come first: positions 0..n-1, then padding
    order_kept = order[:, :longest]
    s = scores.gather(1, order_kept).to(acc)
    y = labels.gather(1, order_kept).to(acc)
    shortest = min(lengths, default=0)
    in_row = torch.arange(longest, device=device)[None, :] < n_real[:, None]
    valid = in_row & torch.isfinite(y) if not labels_finite else in_row
    if shortest < longest:
        s = torch.where(in_row, s, 0)  # padding may hold anything; its pairs never count
    weighted = inputs.scheme != SCHEME_NONE
    gain = _gains(y, valid, n_real, inputs.k, inputs.eps, acc) if weighted else None  # RankNet has no gains
    grad = torch.zeros(batch, longest, dtype=acc, device=device) if need_grad else None
    row_loss = torch.zeros(batch, dtype=acc, device=device)
    ndcgloss1 = inputs.scheme == SCHEME_NDCGLOSS1
    if ndcgloss1:
        unit = gain / torch.log2(torch.arange(longest, device=device, dtype=acc) + 2)
        row_pairs = torch.zeros(batch, dtype=torch.int64, device=device)
    else:
        key = gain if weighted else y
        if shortest < longest or not labels_finite:
            key = torch.where(valid, key, float("nan"))
        row_pairs = _counted_pairs(y, valid, top_rows)
    for reach, start, stop in tiles:
        cols = slice(start, stop)
        rows = slice(0, min(top_rows, stop - 1))
        tile_grad = grad[:reach] if grad is not None else None
        if ndcgloss1:
            loss, count = _ndcgloss1_tile(s[:reach], valid[:reach], unit[:reach], rows, cols, inputs.sigma, clean,
                                          tile_grad)
            row_pairs[:reach] += 2 * count
        else:
            # RankNet's position factor is 1 on a tile wholly above the diagonal
            reaches_diagonal = rows.stop > cols.start
            position = (position_factor(inputs.scheme, inputs.mu, rows, cols, acc, device)
                        if weighted or reaches_diagonal else None)
            # NaN keys in the tile: a label without pairs, or padding past a shorter row's end
            masked = not labels_finite or min(lengths[:reach]) < stop
            loss = _symmetric_tile(s[:reach], key[:reach], rows, cols, position, weighted, masked, inputs.sigma,
                                   clean, tile_grad)
        row_loss[:reach] += loss
    if ndcgloss1:  # the diagonal: logsigmoid(0) = -log 2 for every finite label at a position < k (no gradient)
        diagonal = valid[:, :top_rows]
        row_loss -= math.log(2) * torch.where(diagonal, unit[:, :top_rows], 0).sum(1)
        row_pairs += diagonal.sum(1)
    row_loss.mul_(-inputs.log_scale)
    if by_length is not None:  # back to the input's row order
        row_loss = torch.empty_like(row_loss).index_copy_(0, by_length, row_loss)
        row_pairs = torch.empty_like(row_pairs).index_copy_(0, by_length, row_pairs)
    if grad is None:
        return row_loss, row_pairs, None
    grad.mul_(-inputs.log_scale * inputs.sigma)
    # back to input order; padding (and the columns past the longest row) get 0
    full = torch.zeros(batch, length, dtype=acc, device=device).scatter_(1, order_kept, grad)
    return row_loss, row_pairs, full if by_length is None else torch.empty_like(full).index_copy_(0, by_length, full)
