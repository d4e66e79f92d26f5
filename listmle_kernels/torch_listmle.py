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

On the CPU the rows are taken in blocks of about `CPU_BLOCK_ELEMENTS` documents, each block's loss and
gradient written straight into the outputs: the temporaries of a block stay in cache, and the peak memory
of a call is the gradient plus a block's temporaries, not a dozen (B, L) buffers.
"""

import functools

import numpy as np
import torch

from .inputs import WEIGHTS_NONE, WEIGHTS_PLISTMLE, ListMLEInputs
from .numerics import LINEAR_SPAN, accumulator_dtype, normalised_rank_weights
from .target_order import target_order

# Documents a block of rows on the CPU: its ~10 float32 temporaries (1 MiB each) stay in a server's L3 cache,
# and the ~35 ops and numpy calls a block cost a few us each, about 1% of a block's arithmetic. Interleaved at
# 1024 x 1000, 2^16 to 2^18 ran within 8% of each other, 2^18 first or tied; 2^14 was 1.4x slower.
CPU_BLOCK_ELEMENTS = 1 << 18
# Per accumulator dtype (torch.finfo is a Python call per use): the least finite and least normal floats.
LEAST_FINITE = {dtype: torch.finfo(dtype).min for dtype in (torch.float32, torch.float64)}
LEAST_NORMAL = {dtype: torch.finfo(dtype).tiny for dtype in (torch.float32, torch.float64)}


def row_blocks(batch: int, length: int, device: torch.device):
    """(first, last) row ranges that cover the batch: one on CUDA, blocks of an even number of rows of
    about CPU_BLOCK_ELEMENTS documents on the CPU (even, so each starts at an even document, where
    target_order's random tie bits can resume)."""
    if device.type != "cpu" or batch * length <= CPU_BLOCK_ELEMENTS:
        return ((0, batch),)
    rows = max(2, CPU_BLOCK_ELEMENTS // max(length, 1) // 2 * 2)
    return tuple((first, min(first + rows, batch)) for first in range(0, batch, rows))


@functools.lru_cache(maxsize=64)
def _positions(length, dtype, device):
    """0, 1, ..., length - 1 in `dtype` (read only; kept because at small shapes the arange is a tenth of a mask)."""
    return torch.arange(length, dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _rank_halves(length, dtype, device):
    """2^-(r+1) for ranks r = 0 .. length - 1 (read only: p-ListMLE's numerators, kept as `_positions` is)."""
    return torch.arange(-1, -length - 1, -1, dtype=dtype, device=device).exp2_()


# Rows of at most this many slots read their p-ListMLE weights from `_plistmle_table`: (L + 1) x L values, 263 KB
# in float32 at 256, so the cache's 64 tables stay under 34 MB even in float64.
PLISTMLE_TABLE_MAX_LENGTH = 256


@functools.lru_cache(maxsize=64)
def _plistmle_table(length, dtype, device):
    """(length + 1, length): row n holds the normalised p-ListMLE weights of a list of n real documents at ranks
    0 .. length - 1 (0 past n-1, and everywhere for n <= 1), computed in float64 and rounded once to `dtype`: one
    row gather a call instead of the eight ops of the closed form, whose fixed costs are the time at small shapes
    (read only)."""
    ranks = torch.arange(length, dtype=torch.float64)
    real = torch.arange(length + 1, dtype=torch.float64)[:, None]
    tail = torch.exp2(-real)
    numerators = (torch.exp2(-(ranks + 1)) - tail) * (ranks < real)
    total = 1 - (real + 1) * tail  # sum_{r < n} (2^-(r+1) - 2^-n)
    return torch.where(total > 0, numerators / total.clamp_min(torch.finfo(torch.float64).tiny), 0).to(device, dtype)


def _rank_weights(weight_kind, weights, holes, realf, acc):
    """(b, L) normalised lambda weight of each slot's rank (0 at padding). holes: the (b, L) bool mask when real
    slots need not come first (input order with a mask), else None (real slots come first)."""
    if weight_kind == WEIGHTS_NONE:
        return realf
    length = realf.shape[1]
    if weight_kind == WEIGHTS_PLISTMLE and holes is None:
        # Slot r has rank r (real slots come first), so a row's weights depend on its count n alone
        if length <= PLISTMLE_TABLE_MAX_LENGTH:
            return _plistmle_table(length, acc, realf.device).index_select(0, realf.sum(1, dtype=torch.int64))
        # (2^(n-1-r) - 1) / sum, scaled by 2^-n so it never overflows: 2^-(r+1) - 2^-n over its row's sum.
        # n <= 1: every numerator is 0, and so are the weights (0 / tiny).
        tail = realf.sum(1, keepdim=True).neg_().exp2_()
        numerators = torch.sub(_rank_halves(length, acc, realf.device), tail).mul_(realf)
        return numerators.div_(numerators.sum(1, keepdim=True).clamp_min_(LEAST_NORMAL[acc]))
    if holes is not None:
        rank = holes.cumsum(1) - 1  # a slot's rank counts the real slots before it
    else:
        rank = _positions(length, torch.int64, realf.device).unsqueeze(0)  # real slots come first
    if weight_kind == WEIGHTS_PLISTMLE:
        # as above, with each slot's own rank, and the sum in closed form: 1 - (n+1) 2^-n
        n = realf.sum(1, keepdim=True)
        tail = torch.exp2(-n)
        total = (1 - (n + 1) * tail).clamp_min_(LEAST_NORMAL[acc])
        return (torch.exp2(-(rank + 1).to(acc)) - tail).mul_(realf).div_(total)
    w = normalised_rank_weights(weights, realf.bool().sum(1), acc)  # finite, 0 at padded ranks
    return w.gather(1, rank.expand_as(realf).clamp(min=0)).mul_(realf)


@functools.lru_cache(maxsize=16)
def _negative_divisor(row_divisor, dtype, device):
    """-row_divisor as a 0-d tensor (read only): a Python number is wrapped in a tensor and cast at every division."""
    return torch.tensor(-row_divisor, dtype=dtype, device=device)


# From this many elements a CPU exp or log is numpy's (below, its two array conversions cost more than it saves)...
NUMPY_UNARY_MIN_ELEMENTS = 1 << 12
# ...unless torch would spread it over several threads: ATen runs an elementwise op on one thread below its grain
# size (this many elements), on all of torch.get_num_threads() above it, and from two threads on it is about as
# fast as numpy's one (2^18 float32 on 2 threads: exp 113 against 119 us, log 153 against 124).
TORCH_PARALLEL_MIN_ELEMENTS = 1 << 15


def numpy_unary(elements: int, is_cpu: bool) -> bool:
    """Whether a call of `elements` documents takes its exp and log from numpy: on the CPU where torch would take
    them on one thread. Chosen once for the whole batch, not per block of rows: a short last block would otherwise
    take torch's and its rows other bits than they get in a full block (numpy's are a few ulp from torch's)."""
    return (is_cpu and elements >= NUMPY_UNARY_MIN_ELEMENTS
            and (elements < TORCH_PARALLEL_MIN_ELEMENTS or torch.get_num_threads() == 1))


def _unary(x, by_numpy, numpy_ufunc, torch_fn):
    """torch_fn(x) as a new tensor; numpy's SIMD ufunc where `numpy_unary` chose it. On AVX-512 numpy's float32
    exp is 1.7x and its log 3x as fast as torch's (at most 2.52 / 3.83 ulp against torch's 1; float64: 1 ulp
    both): torch's took a quarter of the CPU path's time at 1024 x 1000, input order."""
    if not by_numpy:  # x never requires grad: torch_listmle detaches the scores or runs with grad off
        return torch_fn(x)
    out = torch.empty_like(x)
    numpy_ufunc(x.numpy(), out=out.numpy())
    return out


def _exp(x, by_numpy):
    return _unary(x, by_numpy, np.exp, torch.exp)


def _log(x, by_numpy):
    return _unary(x, by_numpy, np.log, torch.log)


def _linear_sums(s, realf, w, need_grad, row_divisor, by_numpy, grad_out=None):
    """(lse - s at real slots, gradient or None, rows too wide for them: (b,) bool, or None if there are none).

    Few full-size ops and few fresh buffers, on purpose (this is the CPU hot path, and at small shapes each op's
    fixed cost is the time): z = s - row max over all slots, and where every slot, padding included, lies within
    the linear span below its row's max (one reduction and one host read say so) that is all; otherwise, in the
    rows where some slot does not (each row's shift depends on that row alone), one `where` removes padding (which
    may hold NaN) and z is clamped so exp never takes its slow underflow path.
    Padding is zeroed by a multiply, so it drops out of every sum. Later steps reuse earlier buffers in place, and the
    gradient, divided by row_divisor, is built in `grad_out` (a (b, L) buffer, or None for a fresh one). The
    rows too wide get finite values here, which the caller replaces. by_numpy: exp and log from numpy (`numpy_unary`).
    """
    span = LINEAR_SPAN[s.dtype]
    z = s - torch.amax(s, 1, True)
    wide = None
    if not float(z.amin()) >= -span:  # NaN (a NaN or +inf score) and -inf fail too
        # A row whose slots all lie within the span keeps the shift by its max over every slot, the one it gets
        # in a block without such rows: a row's bits must not depend on its neighbours (blocks of rows)
        near = z.amin(1, keepdim=True) >= -span
        masked = torch.where(realf.bool(), s, float("-inf"))
        masked.sub_(masked.amax(1, keepdim=True).clamp_min_(LEAST_FINITE[s.dtype]))  # empty rows: no -inf - -inf
        z = torch.where(near, z, masked.clamp_min_(-(span + 4)))  # exp stays normal: no slow underflow path
        del masked
        real_z = torch.mul(z, realf)
        wide = (real_z.amin(1) < -span) if float(real_z.amin()) < -span else None  # per row only when needed
        del real_z
    e = _exp(z, by_numpy).mul_(realf)
    suffix = e.flip(1).cumsum_(1).flip(1).clamp_min_(LEAST_NORMAL[s.dtype])  # >= e at real slots; 0 at trailing padding
    neg_log_prob = _log(suffix, by_numpy).sub_(z)  # finite everywhere; padding is weighted by w = 0
    if not need_grad:
        return neg_log_prob, None, wide
    grad = torch.div(w, suffix, out=grad_out).cumsum_(1)
    if row_divisor == 1:
        return neg_log_prob, grad.mul_(e).sub_(w), wide
    divisor = _negative_divisor(row_divisor, grad.dtype, grad.device)
    return neg_log_prob, torch.addcmul(w, grad, e, value=-1, out=grad).div_(divisor), wide  # one pass less


def _log_space_sums(s, real, w, need_grad):
    """(lse - s, gradient or None) relative to each slot's suffix max (module docstring); any span, any scale.

    m_r is known up front (a cumulative max), so both sums are Hillis-Steele scans with a fixed reference a
    slot: log2(L) steps, each adding a partial sum 2^k slots away times exp(m_near - m_far) <= 1, a
    difference of two scores. Past the last real slot m is the least finite float, so those differences
    stay finite (no -inf - -inf) where the partial sums they scale are 0.
    """
    length = s.shape[1]
    z = torch.where(real, s, float("-inf"))
    top = z.flip(1).cummax(1).values.flip(1).clamp_min_(LEAST_FINITE[s.dtype])
    below_top = z.sub_(top)  # s_r - m_r <= 0 at real slots, -inf at padding
    suffix = torch.exp(below_top)  # becomes S_r = sum_{t >= r} exp(s_t - m_r), >= 1 at real slots
    step = 1
    while step < length:
        suffix[:, :-step] += torch.exp(top[:, step:] - top[:, :-step]).mul_(suffix[:, step:])
        step *= 2
    neg_log_prob = torch.where(real, torch.log(suffix) - below_top, 0)
    if not need_grad:
        return neg_log_prob, None
    # sum_{r <= j} w_r exp(-lse_r) = exp(-m_j) * sum_{r <= j} (w_r / S_r) exp(m_j - m_r), the last sum by scan
    prefix = torch.where(real, w / suffix, 0)
    step = 1
    while step < length:
        prefix[:, step:] += torch.exp(top[:, step:] - top[:, :-step]).mul_(prefix[:, :-step])
        step *= 2
    return neg_log_prob, torch.where(real, torch.exp(below_top) * prefix - w, 0)


def _prefix_slots(like, counts, acc):
    """(b, L) in dtype acc, on like's device: 1 at the first counts[b] slots of row b, 0 after.

    Compared in floating point straight into a float buffer: on the CPU a bool result costs ~6x more (neither
    the int64 compare nor the bool store is vectorised, nor the cast to float after). Positions are exact in
    float32 up to 2^24, and so are counts up to there; past them any count is at least L."""
    length = like.shape[1]
    positions = _positions(length, acc if length <= 1 << 24 else torch.float64, like.device)
    # empty_like, not empty(shape, dtype, device): at 16 x 10 a device to parse costs as much as the compare
    return torch.lt(positions, counts.unsqueeze(1), out=torch.empty_like(like, dtype=acc))


def _real_slots(scores, mask, lengths, acc):
    """(b, L) in dtype acc: 1 at real documents, 0 at padding (the float mask every sum is weighted by)."""
    if mask is not None:
        return mask.view(torch.uint8).to(acc)  # bool -> float casts are not vectorised on CPU: 3x slower
    if lengths is None:
        return torch.ones(scores.shape, dtype=acc, device=scores.device)
    return _prefix_slots(scores, lengths, acc)


def _block_rows(inputs, first_row, scores, mask, lengths, labels, weights, seed, row_divisor, need_grad, by_numpy,
                row_loss=None, grad=None):
    """(row losses (b,), gradient of their sum / row_divisor (b, L) or None) of a block of rows (scores, mask,
    lengths, labels, weights: those rows of the inputs, first_row the first one's row in the batch). Written
    into row_loss and grad when they are given (views of the whole batch's outputs), else into new tensors."""
    acc = accumulator_dtype(scores.dtype)
    realf = _real_slots(scores, mask, lengths, acc)
    order = None
    s = scores
    if labels is not None:
        order = target_order(labels, realf.bool() if mask is None else mask, inputs.random_ties, seed, first_row)
        s = s.gather(1, order)
        if mask is not None:
            # In target order the real documents come first (from lengths, `realf` already is that prefix).
            realf = _prefix_slots(s, mask.sum(1), acc)
    if s.dtype != acc:
        s = s.to(acc)
    w = _rank_weights(inputs.weight_kind, weights, mask if order is None and mask is not None else None, realf, acc)

    # In input order a float32/float64 gradient is built where it is returned; otherwise in a fresh buffer.
    in_place = order is None and scores.dtype == acc
    neg_log_prob, block_grad, wide = _linear_sums(s, realf, w, need_grad, row_divisor, by_numpy,
                                                  grad if in_place else None)
    if wide is not None:  # rows beyond the linear sums' reach: each takes the log-space sums on its own
        wide_rows = wide.nonzero().squeeze(1)
        wide_neg_log_prob, wide_grad = _log_space_sums(s[wide_rows], realf[wide_rows].bool(), w[wide_rows],
                                                       need_grad)
        neg_log_prob[wide_rows] = wide_neg_log_prob
        if block_grad is not None:
            block_grad[wide_rows] = wide_grad if row_divisor == 1 else wide_grad.div_(row_divisor)
    # a multiply and a sum, not vecdot: under autocast vecdot runs in half precision
    row_loss = torch.sum(neg_log_prob.mul_(w), 1, out=row_loss)
    if block_grad is None or (in_place and grad is not None):
        return row_loss, block_grad
    if order is not None:
        if grad is None:
            grad = torch.empty(scores.shape, dtype=scores.dtype, device=scores.device)
        return row_loss, grad.scatter_(1, order, block_grad if block_grad.dtype == grad.dtype else
                                       block_grad.to(grad.dtype))
    if grad is not None:
        return row_loss, grad.copy_(block_grad)
    if block_grad.dtype != scores.dtype:
        block_grad = block_grad.to(scores.dtype)
    # A fresh gradient has its inputs' layout (transposed scores or mask give a transposed one)
    return row_loss, block_grad.contiguous()


def torch_listmle(inputs: ListMLEInputs, seed: int, row_divisor: int, need_grad: bool):
    """Per-row losses (B,) in float32/float64 and the gradient of sum(loss) / row_divisor, or None.

    The gradient is contiguous, like the Triton backend's (and as the operator's fake promises torch.compile).
    """
    scores = inputs.scores
    if torch.is_grad_enabled():  # called outside autograd.Function.forward: out= ops refuse graph inputs
        scores = scores.detach()
    batch, length = scores.shape
    by_numpy = numpy_unary(batch * length, scores.is_cpu)
    if batch * length <= CPU_BLOCK_ELEMENTS or not scores.is_cpu:  # one block, no slicing (a slice costs a few us)
        return _block_rows(inputs, 0, scores, inputs.mask, inputs.lengths, inputs.labels, inputs.weights, seed,
                           row_divisor, need_grad, by_numpy)
    row_loss = torch.empty(batch, dtype=accumulator_dtype(scores.dtype), device=scores.device)
    grad = torch.empty((batch, length), dtype=scores.dtype, device=scores.device) if need_grad else None
    for first, last in row_blocks(batch, length, scores.device):
        rows = (inputs.mask, inputs.lengths, inputs.labels, inputs.weights, grad)
        mask, lengths, labels, weights, block_grad = (None if tensor is None else tensor[first:last] for tensor in rows)
        _block_rows(inputs, first, scores[first:last], mask, lengths, labels, weights, seed, row_divisor, need_grad,
                    by_numpy, row_loss[first:last], block_grad)
    return row_loss, grad
