"""The Triton backend of LambdaLoss (RankNet is its scheme "none"): per-row losses, pair counts and the gradient.

Math (reference/pairwise.py is the definition). Per row, the n real documents in order of score, descending
(equal scores keep input order, NaN first, as torch.sort): position p holds score s_p and label y_p. Gains
g_p = (2^max(y_p, 0) - 1) / max(eps, maxDCG@k), inverse discounts r_p = 1 / log2(2 + p). The ordered pair
(i, j) counts when y_i and y_j are finite, y_i > y_j (every such pair, the diagonal too, for NDCGLoss1), and
i < k or j < k (k = 0: always). With d_ij = clamp(s_i - s_j, +-1e8) (0 where NaN) and x_ij = sigma * d_ij,

    row_loss = -c * sum_{(i, j) counted} a_ij * logsigmoid(x_ij),          c = log_scale

    a_ij = 1                                     (none)
         = g_i r_i                               (NDCGLoss1)
         = |1/D(|i-j|) - 1/D(|i-j|+1)| |g_i - g_j|,  D(t) = log2(1 + t), 0 at i = j     (NDCGLoss2)
         = |r_i - r_j| |g_i - g_j|               (LambdaRank)
         = mu NDCGLoss2 + LambdaRank             (NDCGLoss2++)

Gradient. d logsigmoid(x) / dx = sigmoid(-x), and x_ji = -x_ij. Write a_ij for the weight of (i, j) when it
counts and 0 when not; a document i meets document j as the first of (i, j) and as the second of (j, i), so

    d row_loss / d s_i = -c sigma sum_{j != i, |s_i - s_j| <= 1e8} [a_ij sigmoid(-x_ij) - a_ji sigmoid(x_ij)]
                       = -c sigma sum_{j ...} [(a_ij + a_ji) sigmoid(-x_ij) - a_ji]

(the clamp passes no gradient beyond +-1e8, nor a NaN difference; the diagonal's difference is s_i - s_i).
One cell (i, j) thus gives document i all it gets from document j: one exp, e = exp(-|x|), serves
logsigmoid(x) = min(x, 0) - log1p(e) and sigmoid(-x) = (x >= 0 ? e : 1) / (1 + e), both without overflow
(`_log1p_of_unit`: a short polynomial, as e is in [0, 1]).

Why tiles of cells, and why both orders: the n^2 cells are never stored. A program owns a tile of positions
i and walks every tile of positions j of its row, so it sums the whole gradient of its documents itself and
writes it once, through their input index: no atomics, no cross-program writes, deterministic. The price is
that each unordered pair is evaluated twice (once by each side's program): halving that would make one
program write the other's gradient. The loss and the pair count of (i, j) are summed by the program owning
i, the first position, so each ordered pair counts once; per-program partials are summed once on the host.
Within a program the cells' sums stay per cell across the loop over tiles of j and are reduced once after it
(reducing every tile cost 10 shuffles a cell). Weights by position come from a table computed once in float64
(`position_tables`): 1 / log2(2 + p) as hi + lo, so that LambdaRank's |r_i - r_j| keeps its digits far down
the list, and NDCGLoss2's weight by distance |i - j|, which cancels if computed as a difference.
Memory: O(B * L) scratch (sorted scores, labels, gains and input indices), O(B * L / tile) partials and the
O(L) table.

Three paths, chosen by the launcher:

  * short rows (the row's power-of-two block fits one tile, e.g. 16 x 10): one kernel, one program a row,
    sorts in registers and evaluates every cell of the row at once: one launch.
  * longer rows sorted in the kernel (up to SORT_MAX_BLOCK): `_sort_rows_kernel` writes the sorted row to
    scratch, `_pair_tiles_kernel` (grid: row x tile of positions i) evaluates the cells.
  * float64 scores, or rows longer than SORT_MAX_BLOCK: the sorted scratch is built on the host with a
    stable torch.sort, then `_pair_tiles_kernel`. Float64 because the in-kernel sort key is 32 bits of score
    packed with the position into an int64 (tl.sort sorts one tensor, so the tiebreak must share the word):
    two distinct float64 scores may round to the same float32 and would be ordered by position instead of
    by value. Long rows as ListMLE's launcher does (triton_listmle.SORT_MAX_BLOCK: at 4096 its in-kernel
    sort lost to the host sort on an H100); next to the row's L^2 cells either sort is small.

In-kernel sort: the score (16/32-bit scores as float32, exactly) maps to an order-preserving int32 key (flip
the magnitude bits of negative floats; -0.0 as 0.0, every NaN as the largest key, padding as the smallest),
packed as (key << 32) | (BLOCK - 1 - position) and sorted descending: equal scores keep input order.
"""

import functools
import math
import struct

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.runtime.interpreter import InterpretedFunction

from ._launch import cdiv, next_power_of_2, on_device_of
from .inputs import LambdaLossInputs, real_mask
from .numerics import GAIN_EXPONENT_LIMIT as GAIN_LIMIT, accumulator_dtype, gain_shift, shifted_gains
from .triton_common import COMPILE_OPTIONS, fast_divide, real_kind

# Positions a side of a tile of cells. 32 x 32 at 8 cells a thread (4 warps) for float32: no spills for any scheme
# and 72-126 registers, at the SASS a pair of 64 x 64 at 16 cells a thread (136-187 registers); 32 a thread spills
# at 64 x 64; float64 spills at 8 a thread, so it takes 4 (python -m tools.sass_count --lambdaloss).
PAIR_TILE = 32
CELLS_PER_THREAD = {torch.float32: 8, torch.float64: 4}
SORT_MAX_BLOCK = 2048   # longest row sorted in the kernel; longer rows are sorted on the host
NO_K = 2 ** 31 - 1      # k = 0 (every position) as a position bound no row reaches

GAIN_EXPONENT_LIMIT = tl.constexpr(GAIN_LIMIT)  # labels past it have their gains scaled (numerics.gain_shift)


@triton.jit
def _split_float(hi, lo, acc: tl.constexpr):
    """A host float passed as two float32 halves (hi + lo): Triton passes Python floats as float32, and the
    float64 path needs sigma, mu, eps and log_scale to float64 precision (2^-48 relative with the pair)."""
    if acc == tl.float64:
        return tl.full([], hi, tl.float64) + tl.full([], lo, tl.float64)
    else:
        return tl.full([], hi, tl.float32)


@triton.jit
def _exp(x, FAST_MATH: tl.constexpr):
    """exp(x) for x <= 0; FAST_MATH (float32 on CUDA): `__expf`, the flush-to-zero hardware exp2: tl.exp keeps
    subnormal results, at 3 more instructions (a range test and two rescales) around each of the cells' exps.
    Flushed: e < 2^-126 (|x| > 87), whose log1p(e) and sigmoid change no float32 sum they enter."""
    if FAST_MATH:
        return libdevice.fast_expf(x)
    else:
        return tl.exp(x)


@triton.jit
def _log1p_of_unit(e, FAST_MATH: tl.constexpr):
    """log(1 + e) for e in [0, 1], to a few ulps (logsigmoid's log1p(exp(-|x|))).

    Float32: 2 atanh(t) with t = e / (2 + e) in [0, 1/3], as 2t p(t^2), p a degree-4 fit of atanh(t)/t on
    t^2 in [0, 1/9] (relative error 4.5e-9; 4 ulp in float32 arithmetic over [2^-126, 1], checked against
    float64 log1p): one division and five multiply-adds, where a log of 1 + e would cost the accurate logf's
    ~15 instructions, plus Goldberg's e / ((1 + e) - 1) to recover what 1 + e rounds away. Float64: that log.
    """
    if e.dtype == tl.float64:
        u = 1.0 + e
        return tl.where(u == 1.0, e, tl.log(u) * (e / tl.where(u == 1.0, 1.0, u - 1.0)))
    else:
        t = fast_divide(e, 2.0 + e, FAST_MATH)  # a denominator in [2, 3]: inside the fast division's range
        z = t * t
        p = 1.0 + z * (0.3333320617675781 + z * (0.2001080960035324 + z * (0.1400042325258255
                                                                         + z * 0.14007562398910522)))
        return 2.0 * t * p


@triton.jit
def _discount_weight(position, tables_ptr, size):
    """1 / log2(2 + p) of positions p, as the table's float64 value split hi + lo: the difference of two
    (LambdaRank's weight) is exact to the accumulator's precision, not to that of 1 / log2 near p."""
    return tl.load(tables_ptr + position) + tl.load(tables_ptr + size + position)


@triton.jit
def _pair_cells(si, yi, gi, ri_hi, ri_lo, pi, sj, yj, gj, rj_hi, rj_lo, pj, k, sigma, mu, tables_ptr, size,
                loss, count, grad, SCHEME: tl.constexpr, TOP_K: tl.constexpr, STORE_GRAD: tl.constexpr,
                FAST_MATH: tl.constexpr):
    """Adds the cells (i, j) of a tile to the running (TI, TJ) sums `loss`, `count` and `grad`: i along axis 0
    ((TI, 1) operands), j along axis 1 ((1, TJ) operands); reduced once, after the last tile.

    s: sorted scores, y: labels with NaN for -inf and past the row's real documents (so that y_i > y_j is
    False unless both are finite), g: gains, r_hi + r_lo: inverse discounts, p: positions. Per cell: the term
    a_ij logsigmoid(x_ij) (i first), whether (i, j) counts, and (a_ij + a_ji) sigmoid(-x_ij) - a_ji where the
    difference passes gradient (the gradient of the row's loss divided by -log_scale * sigma).
    """
    if SCHEME == 1:  # NDCGLoss1: every pair of finite labels, in both orders, the diagonal included
        first = (yi == yi) & (yj == yj)
        second = first
    else:  # y_i > y_j: at most one of (i, j) and (j, i) counts, with the same (symmetric) weight
        first = yi > yj
        second = yj > yi
    if TOP_K:
        near_top = (pi < k) | (pj < k)
        first = first & near_top
        second = second & near_top

    if SCHEME == 0:
        a_first = first.to(loss.dtype)
        a_second = second.to(loss.dtype)
    elif SCHEME == 1:
        a_first = tl.where(first, gi * (ri_hi + ri_lo), 0.0)
        a_second = tl.where(second, gj * (rj_hi + rj_lo), 0.0)
    else:
        gap = tl.abs(gi - gj)
        if SCHEME == 2 or SCHEME == 4:
            # 1/D(t) - 1/D(t + 1), D(t) = log2(1 + t), t = |i - j|: the table's third row (0 at t = 0)
            ndcg2 = tl.load(tables_ptr + 2 * size + tl.abs(pi - pj)) * gap
        if SCHEME == 3 or SCHEME == 4:
            lambdarank = tl.abs((ri_hi - rj_hi) + (ri_lo - rj_lo)) * gap
        if SCHEME == 2:
            w = ndcg2
        elif SCHEME == 3:
            w = lambdarank
        else:
            w = mu * ndcg2 + lambdarank
        a_first = tl.where(first, w, 0.0)
        a_second = tl.where(second, w, 0.0)

    d = si - sj
    clamped = tl.where(d == d, tl.minimum(tl.maximum(d, -1e8), 1e8), 0.0)  # a NaN difference is taken as 0
    x = sigma * clamped
    e = _exp(-tl.abs(x), FAST_MATH)
    log1p_e = _log1p_of_unit(e, FAST_MATH)
    loss += a_first * (tl.minimum(x, 0.0) - log1p_e)
    count += first.to(tl.int32)
    if STORE_GRAD:
        # no gradient beyond the clamp, nor through a NaN difference (both fail |d| <= 1e8)
        live = tl.abs(d) <= 1e8
        if SCHEME == 1:
            live = live & (pi != pj)  # d(s_i - s_i) = 0
        # else a_ii = 0: the diagonal adds nothing
        sigmoid_neg = fast_divide(tl.where(x >= 0, e, 1.0), 1.0 + e, FAST_MATH)  # 1 + e in [1, 2]
        grad += tl.where(live, (a_first + a_second) * sigmoid_neg - a_second, 0.0)
    return loss, count, grad


@triton.jit
def _is_real(row64, pos, inside, mask_ptr, stride_mb, stride_ml, lengths_ptr, REAL: tl.constexpr):
    """Whether input position `pos` of the row holds a real document (not padding, not past the row end)."""
    if REAL == 1:
        real = inside & (tl.load(mask_ptr + row64 * stride_mb + pos * stride_ml, mask=inside, other=0) != 0)
    elif REAL == 2:
        real = inside & (pos < tl.load(lengths_ptr + row64))
    else:
        real = inside
    return real


@triton.jit
def _pair_label(y):
    """Labels as the cells compare them: NaN for -inf (a real document with no pairs), so that y_i > y_j and
    y_j > y_i are both False with it; validation rules out NaN labels at real documents."""
    return tl.where(y > float("-inf"), y, float("nan"))


@triton.jit
def _sort_row(row64, cols, L, k, eps, scores_ptr, stride_sb, stride_sl, labels_ptr, stride_yb, stride_yl,
              mask_ptr, stride_mb, stride_ml, lengths_ptr, tables_ptr, size, acc: tl.constexpr,
              REAL: tl.constexpr, BLOCK: tl.constexpr):
    """One row in score order: per position, (score, label as `_pair_label`, gain, input index), and n, the
    number of real documents.

    Positions past n hold padding (label NaN, gain 0) with their input indices, so that the indices of
    positions < L are a permutation of the row's input positions: every one gets its gradient written.
    """
    inside = cols < L
    real = _is_real(row64, cols, inside, mask_ptr, stride_mb, stride_ml, lengths_ptr, REAL)
    score = tl.load(scores_ptr + row64 * stride_sb + cols * stride_sl, mask=real, other=0.0).to(tl.float32)
    score = tl.where(score == 0, 0.0, score)  # -0.0 ties with 0.0
    bits = score.to(tl.int32, bitcast=True)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # order-preserving: flip negative floats' magnitude bits
    key = tl.where(score != score, 2147483647, key)  # NaN (any sign) first, as torch.sort descending
    key = tl.where(real, key, -2147483648)  # padding last
    packed = tl.sort((key.to(tl.int64) << 32) | (BLOCK - 1 - cols).to(tl.int64), dim=0, descending=True)
    index = (BLOCK - 1 - (packed & (BLOCK - 1))).to(tl.int32)
    n = tl.sum(real.to(tl.int32), axis=0)

    is_doc = cols < n
    s = tl.load(scores_ptr + row64 * stride_sb + index.to(tl.int64) * stride_sl, mask=is_doc, other=0.0).to(acc)
    y = tl.load(labels_ptr + row64 * stride_yb + index.to(tl.int64) * stride_yl, mask=is_doc,
                other=float("-inf"))
    # maxDCG@k: the real labels clamped at 0 (-inf gains nothing), descending; padding 0 adds nothing
    clamped = tl.maximum(tl.load(labels_ptr + row64 * stride_yb + cols * stride_yl, mask=real, other=0.0), 0.0)
    ideal = tl.sort(clamped, dim=0, descending=True).to(acc)
    # Numerators and maxDCG scaled by 2^-shift, exact for any finite label (numerics.gain_shift says why)
    top_label = tl.max(ideal, axis=0)
    shift = tl.where(top_label > GAIN_EXPONENT_LIMIT, tl.floor(top_label) - GAIN_EXPONENT_LIMIT, 0.0)
    unit = tl.exp2(-shift)  # 2^-shift: 1 for rows computed as written
    top = (cols < k) & (cols < n)
    max_dcg = tl.sum(tl.where(top, (tl.exp2(ideal - shift) - unit) * _discount_weight(cols, tables_ptr, size), 0.0),
                     axis=0)
    # maxDCG is 0 only when eps rounds to 0 in acc and no real label is above 0: every gain is then 0, as
    # 0 / inf gives it
    max_dcg = tl.maximum(max_dcg, eps * unit)
    max_dcg = tl.where(max_dcg > 0, max_dcg, float("inf"))
    g = tl.where(is_doc, (tl.exp2(tl.maximum(y, 0.0).to(acc) - shift) - unit) / max_dcg, 0.0)
    return s, _pair_label(y), g, index, n


@triton.jit(do_not_specialize=["k"])
def _sort_rows_kernel(
    scores_ptr, stride_sb, stride_sl,
    labels_ptr, stride_yb, stride_yl,
    mask_ptr, stride_mb, stride_ml,
    lengths_ptr, tables_ptr, size,
    sorted_s_ptr, sorted_y_ptr, sorted_g_ptr, sorted_i_ptr, count_ptr,
    loss_ptr, pairs_ptr, grad_ptr,
    L, k, sigma_hi, sigma_lo, mu_hi, mu_lo, eps_hi, eps_lo, scale_hi, scale_lo,
    REAL: tl.constexpr, SCHEME: tl.constexpr, TOP_K: tl.constexpr, FUSED: tl.constexpr,
    STORE_GRAD: tl.constexpr, BLOCK: tl.constexpr, FAST_MATH: tl.constexpr,
):
    """One program a row: sort it; FUSED (the row fits one tile): evaluate all its cells and write the row's
    loss, pair count and gradient; else write the sorted row to scratch (rows of L, contiguous)."""
    acc: tl.constexpr = loss_ptr.dtype.element_ty
    row64 = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    s, y, g, index, n = _sort_row(row64, cols, L, k, _split_float(eps_hi, eps_lo, acc), scores_ptr, stride_sb,
                                  stride_sl, labels_ptr, stride_yb, stride_yl, mask_ptr, stride_mb, stride_ml,
                                  lengths_ptr, tables_ptr, size, acc, REAL, BLOCK)
    if FUSED:
        sigma = _split_float(sigma_hi, sigma_lo, acc)
        scale = _split_float(scale_hi, scale_lo, acc)
        r_hi = tl.load(tables_ptr + cols)
        r_lo = tl.load(tables_ptr + size + cols)
        loss = tl.zeros([BLOCK, BLOCK], dtype=acc)
        count = tl.zeros([BLOCK, BLOCK], dtype=tl.int32)
        grad = tl.zeros([BLOCK, BLOCK], dtype=acc)
        loss, count, grad = _pair_cells(s[:, None], y[:, None], g[:, None], r_hi[:, None], r_lo[:, None],
                                        cols[:, None], s[None, :], y[None, :], g[None, :], r_hi[None, :],
                                        r_lo[None, :], cols[None, :], k, sigma, _split_float(mu_hi, mu_lo, acc),
                                        tables_ptr, size, loss, count, grad, SCHEME, TOP_K, STORE_GRAD, FAST_MATH)
        tl.store(loss_ptr + row64, -scale * tl.sum(tl.sum(loss, axis=1), axis=0))
        tl.store(pairs_ptr + row64, tl.sum(tl.sum(count, axis=1), axis=0).to(tl.int64))
        if STORE_GRAD:
            tl.store(grad_ptr + row64 * L + index, -scale * sigma * tl.sum(grad, axis=1), mask=cols < L)
    else:
        out = row64 * L + cols
        inside = cols < L
        tl.store(sorted_s_ptr + out, s, mask=inside)
        tl.store(sorted_y_ptr + out, y, mask=inside)
        tl.store(sorted_g_ptr + out, g, mask=inside)
        tl.store(sorted_i_ptr + out, index, mask=inside)
        tl.store(count_ptr + row64, n)


@triton.jit
def _load_positions(p, is_doc, base, sorted_s_ptr, sorted_y_ptr, sorted_g_ptr, tables_ptr, size):
    """Score, label (NaN past the real documents: no pairs), gain and the inverse discount's two halves at
    score-order positions p of a row's sorted scratch."""
    s = tl.load(sorted_s_ptr + base + p, mask=is_doc, other=0.0)
    y = tl.load(sorted_y_ptr + base + p, mask=is_doc, other=float("nan"))
    g = tl.load(sorted_g_ptr + base + p, mask=is_doc, other=0.0)
    return s, y, g, tl.load(tables_ptr + p), tl.load(tables_ptr + size + p)


@triton.jit(do_not_specialize=["k"])
def _pair_tiles_kernel(
    sorted_s_ptr, sorted_y_ptr, sorted_g_ptr, sorted_i_ptr, count_ptr, tables_ptr, size,
    loss_ptr, pairs_ptr, grad_ptr,
    L, tiles, k, sigma_hi, sigma_lo, mu_hi, mu_lo, scale_hi, scale_lo,
    SCHEME: tl.constexpr, TOP_K: tl.constexpr, STORE_GRAD: tl.constexpr, TILE: tl.constexpr,
    FAST_MATH: tl.constexpr,
):
    """Program (row, tile of positions i): all cells (i, j) of the row's real positions j, a tile of j at a
    time. Writes its documents' gradient and its partial loss and pair count (loss_ptr, pairs_ptr: (B, tiles))."""
    acc: tl.constexpr = loss_ptr.dtype.element_ty
    program = tl.program_id(0)
    row64 = (program // tiles).to(tl.int64)
    first = (program % tiles) * TILE
    n = tl.load(count_ptr + row64)
    sigma = _split_float(sigma_hi, sigma_lo, acc)
    mu = _split_float(mu_hi, mu_lo, acc)
    scale = _split_float(scale_hi, scale_lo, acc)

    base = row64 * L
    lanes = tl.arange(0, TILE)
    # i along axis 0, loaded once; j along axis 1, loaded as (1, TILE) so that it is born in the tile's layout
    pi = (first + lanes)[:, None]
    is_doc = pi < n
    si, yi, gi, ri_hi, ri_lo = _load_positions(pi, is_doc, base, sorted_s_ptr, sorted_y_ptr, sorted_g_ptr,
                                               tables_ptr, size)
    loss = tl.zeros([TILE, TILE], dtype=acc)
    count = tl.zeros([TILE, TILE], dtype=tl.int32)
    grad = tl.zeros([TILE, TILE], dtype=acc)
    # Positions j that can pair with this tile: every real one while the tile starts before k, only those
    # below k after it (pairs need i < k or j < k); none for a tile past the row's real documents.
    last = tl.where(first < k, n, tl.minimum(n, k))
    last = tl.where(first < n, last, 0)
    for start in range(0, last, TILE):
        pj = start + lanes[None, :]
        real_j = pj < last
        sj, yj, gj, rj_hi, rj_lo = _load_positions(pj, real_j, base, sorted_s_ptr, sorted_y_ptr, sorted_g_ptr,
                                                   tables_ptr, size)
        loss, count, grad = _pair_cells(si, yi, gi, ri_hi, ri_lo, pi, sj, yj, gj, rj_hi, rj_lo, pj, k, sigma, mu,
                                        tables_ptr, size, loss, count, grad, SCHEME, TOP_K, STORE_GRAD, FAST_MATH)

    tl.store(loss_ptr + program, -scale * tl.sum(tl.sum(loss, axis=1), axis=0))
    tl.store(pairs_ptr + program, tl.sum(tl.sum(count, axis=1), axis=0).to(tl.int64))
    if STORE_GRAD:
        pos = first + lanes
        inside = pos < L
        index = tl.load(sorted_i_ptr + base + pos, mask=inside, other=0)
        tl.store(grad_ptr + base + index, -scale * sigma * tl.sum(grad, axis=1), mask=inside)


# Float32 cells take the fast division when compiled for CUDA: not interpreted (no libdevice), nor on ROCm.
FAST_MATH_FLOAT32 = not isinstance(_pair_tiles_kernel, InterpretedFunction) and torch.version.hip is None


def _host_sorted_rows(inputs: LambdaLossInputs, acc: torch.dtype, k: int):
    """The scratch `_sort_rows_kernel` writes, built with torch: (scores, labels, gains, input index, count),
    rows in score order, descending, real documents first. A stable sort by score (torch.sort puts NaN first,
    as the oracle does), then a stable sort by real-ness keeps that order among the real documents."""
    scores = inputs.scores.detach()
    real = real_mask(scores, inputs.mask, inputs.lengths)
    length = scores.shape[1]
    keyed = torch.where(real, scores.to(acc), float("-inf"))
    by_score = torch.sort(keyed, dim=1, descending=True, stable=True).indices
    real_first = torch.sort(real.gather(1, by_score).to(torch.uint8), dim=1, descending=True, stable=True).indices
    index = by_score.gather(1, real_first)
    count = real.sum(1, dtype=torch.int32)
    is_doc = torch.arange(length, device=scores.device)[None, :] < count[:, None]
    sorted_s = keyed.gather(1, index).contiguous()
    labels = inputs.labels.to(torch.float32).gather(1, index)
    sorted_y = torch.where(is_doc & (labels > float("-inf")), labels, float("nan")).contiguous()  # `_pair_label`
    clamped = torch.where(real, inputs.labels.to(acc).clamp_min(0.0), 0.0)
    ideal = torch.sort(clamped, dim=1, descending=True).values
    shift = gain_shift(ideal[:, :1])  # as `_sort_row`: numerators and maxDCG scaled by 2^-shift
    ideal = ideal[:, :min(k, length)]
    discount = torch.log2(torch.arange(ideal.shape[1], device=scores.device, dtype=acc) + 2.0)
    max_dcg = torch.maximum((shifted_gains(ideal, shift) / discount).sum(1, keepdim=True),
                            torch.exp2(-shift) * inputs.eps)
    numerators = shifted_gains(labels.to(acc).clamp_min(0.0), shift)
    sorted_g = torch.where(is_doc & (max_dcg > 0), numerators / max_dcg, 0.0)
    return sorted_s, sorted_y, sorted_g.contiguous(), index.to(torch.int32).contiguous(), count


@functools.lru_cache(maxsize=None)
def position_tables(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(3, size), computed once per size in float64: 1 / log2(2 + p) split into dtype hi and lo rows, and
    1/log2(1 + t) - 1/log2(2 + t) for t = |i - j| (0 at t = 0), written log1p(1 / (1 + t)) / (ln 2 log2(1 + t)
    log2(2 + t)) because the difference itself cancels (at t = 16384 it is 6e-6 of either term)."""
    p = torch.arange(size, dtype=torch.float64)
    inverse_discount = 1.0 / torch.log2(p + 2.0)
    hi = inverse_discount.to(dtype)
    lo = (inverse_discount - hi.double()).to(dtype)
    t = p.clamp_min(1.0)
    apart = torch.where(p > 0, torch.log1p(1.0 / (1.0 + t)) / (math.log(2) * torch.log2(1.0 + t) * torch.log2(2.0 + t)),
                        0.0)
    return torch.stack([hi, lo, apart.to(dtype)]).to(device)


def _float32(value: float) -> float:
    """value rounded to float32, in plain Python: a torch scalar a call would add microseconds per launch."""
    return struct.unpack("f", struct.pack("f", value))[0]


def _halves(value: float) -> tuple[float, float]:
    """value as float32 hi + lo (see `_split_float`)."""
    hi = _float32(value)
    return hi, _float32(value - hi)


def triton_lambdaloss(inputs: LambdaLossInputs, need_grad: bool, *, tile: int = PAIR_TILE,
                      sort_max_block: int = SORT_MAX_BLOCK):
    """(row_loss (B,), row_pairs (B,) int64, grad (B, L) or None): see the module's docstring.

    row_loss: -log_scale times the sum of each row's counted pair terms, in the accumulator dtype (float32;
    float64 for float64 scores); grad: d(sum of row_loss)/d(scores) in the accumulator dtype, 0 at padding.
    `tile` (a power of two: positions a side of a tile of cells) and `sort_max_block` (longest row sorted in
    the kernel) exist so that tests can reach every path with small rows.
    """
    if tile < 1 or tile & (tile - 1):
        raise ValueError(f"tile must be a power of two, got {tile}")
    scores = inputs.scores.detach()
    batch, length = scores.shape
    acc = accumulator_dtype(scores.dtype)
    device = scores.device
    row_loss = torch.empty(batch, dtype=acc, device=device)
    row_pairs = torch.empty(batch, dtype=torch.int64, device=device)
    grad = torch.empty((batch, length), dtype=acc, device=device) if need_grad else None
    if batch == 0 or length == 0:
        row_loss.zero_()
        row_pairs.zero_()
        return row_loss, row_pairs, grad

    k = inputs.k if inputs.k > 0 else NO_K
    block = next_power_of_2(length)
    fast_math = FAST_MATH_FLOAT32 and scores.is_cuda and acc == torch.float32
    floats = dict(sigma=_halves(inputs.sigma), mu=_halves(inputs.mu), eps=_halves(inputs.eps),
                  scale=_halves(inputs.log_scale))
    tables = position_tables(block, acc, device)
    sort_in_kernel = scores.dtype != torch.float64 and block <= sort_max_block
    fused = sort_in_kernel and block <= tile
    tile = min(tile, block)
    tiles = cdiv(length, tile)

    with on_device_of(scores):
        if sort_in_kernel:
            labels = inputs.labels
            mask = inputs.mask.view(torch.uint8) if inputs.mask is not None else None
            lengths = inputs.lengths.contiguous() if inputs.lengths is not None else None
            if fused:
                scratch = (row_loss,) * 5
            else:
                scratch = (torch.empty((batch, length), dtype=acc, device=device),
                           torch.empty((batch, length), dtype=torch.float32, device=device),
                           torch.empty((batch, length), dtype=acc, device=device),
                           torch.empty((batch, length), dtype=torch.int32, device=device),
                           torch.empty(batch, dtype=torch.int32, device=device))
            _sort_rows_kernel[(batch,)](
                scores, scores.stride(0), scores.stride(1),
                labels, labels.stride(0), labels.stride(1),
                *((mask, mask.stride(0), mask.stride(1)) if mask is not None else (row_loss, 0, 0)),
                lengths if lengths is not None else row_loss, tables, block,
                *scratch,
                row_loss, row_pairs, grad if grad is not None else row_loss,
                length, k, *floats["sigma"], *floats["mu"], *floats["eps"], *floats["scale"],
                REAL=real_kind(inputs.mask, inputs.lengths), SCHEME=inputs.scheme, TOP_K=inputs.k > 0, FUSED=fused,
                STORE_GRAD=need_grad, BLOCK=block, FAST_MATH=fast_math,
                num_warps=_warps(block * block, acc) if fused else max(1, min(8, block // 256)), **COMPILE_OPTIONS,
            )
            if fused:
                return row_loss, row_pairs, grad
        else:
            scratch = _host_sorted_rows(inputs, acc, k)

        one_tile = tiles == 1
        partial_loss = row_loss if one_tile else torch.empty((batch, tiles), dtype=acc, device=device)
        partial_pairs = row_pairs if one_tile else torch.empty((batch, tiles), dtype=torch.int64, device=device)
        _pair_tiles_kernel[(batch * tiles,)](
            *scratch, tables, block, partial_loss, partial_pairs, grad if grad is not None else row_loss,
            length, tiles, k, *floats["sigma"], *floats["mu"], *floats["scale"],
            SCHEME=inputs.scheme, TOP_K=inputs.k > 0, STORE_GRAD=need_grad, TILE=tile, FAST_MATH=fast_math,
            num_warps=_warps(tile * tile, acc), **COMPILE_OPTIONS,
        )
    if not one_tile:  # per-program partials, summed once: deterministic
        torch.sum(partial_loss, dim=1, out=row_loss)
        torch.sum(partial_pairs, dim=1, out=row_pairs)
    return row_loss, row_pairs, grad


def _warps(cells: int, acc: torch.dtype) -> int:
    """Warps for a tile of `cells`: CELLS_PER_THREAD cells a thread, 1 to 8 warps."""
    return max(1, min(8, cells // (32 * CELLS_PER_THREAD[acc])))
