"""The Triton backend of ListNet: one fused kernel computes per-row losses and their gradient.

Per row, over its real documents only (a mask with holes anywhere, or lengths), with p = softmax(labels) the
target distribution and q = softmax(scores):

    loss_row = -sum_j p_j log q_j,   d loss_row / d s_j = q_j - p_j.

Both softmaxes are shifted by their row's max (m_s of the scores, m_y of the labels), so every exponent is
<= 0 and log q_j = (s_j - m_s) - log Z_s is a difference of nearby numbers: scores far from 0 (1e4) lose no
float32 digits, and a spread of 1e4 within a row underflows only terms that are 0 at float32's precision anyway.
A real label of -inf has p_j = 0 and adds nothing to the loss (not 0 * -inf), as a padded slot does.

Layout: one program per row, walking it in chunks of BLOCK slots.
  * A row of one chunk is loaded once: its maxes, sums, loss and gradient come from registers.
  * A longer row takes two passes. Pass 1 keeps running (max, sum of exp(x - max)) pairs of the scores and of the
    labels, merging each chunk's pair in (the online softmax: the smaller max's sum is rescaled by
    exp(smaller - larger) <= 1). Pass 2 reloads each chunk and writes its share of the loss and its gradient.
Deterministic: no atomics; each program writes its row's loss once.

Accumulation in float32 (float64 for float64 scores); the gradient is stored in the scores' dtype, with the
reduction's 1 / row_divisor folded in (|grad| <= 1 / row_divisor). No libdevice call (one log per row, one
reciprocal per sum), so the same code runs compiled and under TRITON_INTERPRET=1.
"""

import torch
import triton
import triton.language as tl

from ._launch import cdiv, next_power_of_2, on_device_of
from .inputs import ListNetInputs
from .numerics import accumulator_dtype
from .triton_common import COMPILE_OPTIONS, finite_or_zero, real_kind

MAX_BLOCK = 4096  # slots per chunk; longer rows are walked in chunks (any length)

@triton.jit
def _merge(m1, s1, m2, s2):
    """Merge two softmax partials (max, sum of exp(x - max)) into one; (-inf, 0) is the empty partial.

    The partial with the smaller max is rescaled by exp(smaller - larger) <= 1; two empty partials merge to
    (-inf, 0), not to NaN from exp(-inf - -inf).
    """
    m = tl.maximum(m1, m2)
    shift = finite_or_zero(m)
    return m, s1 * tl.exp(m1 - shift) + s2 * tl.exp(m2 - shift)


@triton.jit
def _load_chunk(row, start, cols, L, scores_ptr, stride_sb, stride_sl, labels_ptr, stride_yb, stride_yl,
                mask_ptr, stride_mb, stride_ml, lengths_ptr, acc: tl.constexpr, REAL: tl.constexpr):
    """Slots start + cols of a row: (scores, labels), -inf where not real, in `acc`, and which slots are real."""
    pos = start + cols
    real = pos < L
    if REAL == 1:
        real = real & (tl.load(mask_ptr + row * stride_mb + pos * stride_ml, mask=real, other=0) != 0)
    elif REAL == 2:
        # Clamped: a negative length is an empty row (int64 lengths, so nothing wraps).
        real = real & (pos < tl.load(lengths_ptr + row).to(tl.int64))
    s = tl.load(scores_ptr + row * stride_sb + pos * stride_sl, mask=real, other=float("-inf")).to(acc)
    y = tl.load(labels_ptr + row * stride_yb + pos * stride_yl, mask=real, other=float("-inf")).to(acc)
    # where-masked too: a real document may hold a -inf label, padding must hold -inf whatever the other= did
    return tl.where(real, s, float("-inf")), tl.where(real, y, float("-inf")), real


@triton.jit
def _chunk_partial(x):
    """(max, sum of exp(x - max)) of one chunk; (-inf, 0) when every entry is -inf (no real document in the chunk,
    or only -inf labels)."""
    m = tl.max(x, axis=0)
    return m, tl.sum(tl.exp(x - finite_or_zero(m)), axis=0)


@triton.jit
def _loss_and_grad_terms(s, y, real, m_s, inv_z_s, log_z_s, m_y, inv_z_y):
    """Per slot: the loss term -p_j log q_j (0 where p_j = 0) and the unscaled gradient q_j - p_j (0 at padding)."""
    p = tl.exp(y - finite_or_zero(m_y)) * inv_z_y
    log_q = (s - finite_or_zero(m_s)) - log_z_s
    # p > 0 is False at padding, at -inf labels, and where every real label is -inf (p = 0 / 0): no term there
    term = tl.where(real & (p > 0), -p * log_q, 0.0)
    grad = tl.where(real, tl.exp(s - finite_or_zero(m_s)) * inv_z_s - p, 0.0)
    return term, grad


# The divisor changes with the batch: specialising on its value (== 1, divisible by 16) would compile new
# variants in the middle of training.
@triton.jit(do_not_specialize=["row_divisor"])
def _listnet_kernel(
    scores_ptr, stride_sb, stride_sl,
    labels_ptr, stride_yb, stride_yl,
    mask_ptr, stride_mb, stride_ml,
    lengths_ptr,
    loss_ptr, grad_ptr, stride_gb, stride_gl,
    L, num_chunks, row_divisor,
    REAL: tl.constexpr, STORE_GRAD: tl.constexpr, BLOCK: tl.constexpr, ONE_CHUNK: tl.constexpr,
):
    acc = loss_ptr.dtype.element_ty  # float32, or float64 for float64 scores
    inv_divisor = 1.0 / tl.full([], row_divisor, acc)  # 1/B of reduction="mean", exact in float64 too
    row = tl.program_id(0).to(tl.int64)  # 64-bit offsets: row * stride can pass 2^31
    cols = tl.arange(0, BLOCK).to(tl.int64)

    if ONE_CHUNK:
        s, y, real = _load_chunk(row, 0, cols, L, scores_ptr, stride_sb, stride_sl, labels_ptr, stride_yb,
                                 stride_yl, mask_ptr, stride_mb, stride_ml, lengths_ptr, acc, REAL)
        m_s, z_s = _chunk_partial(s)
        m_y, z_y = _chunk_partial(y)
    else:
        # Pass 1: the row's (max, sum) of scores and of labels, one chunk at a time.
        m_s = tl.full([], float("-inf"), acc)
        z_s = tl.zeros([], acc)
        m_y = tl.full([], float("-inf"), acc)
        z_y = tl.zeros([], acc)
        for k in range(0, num_chunks):
            s, y, real = _load_chunk(row, k * BLOCK, cols, L, scores_ptr, stride_sb, stride_sl, labels_ptr,
                                     stride_yb, stride_yl, mask_ptr, stride_mb, stride_ml, lengths_ptr, acc, REAL)
            chunk_m_s, chunk_z_s = _chunk_partial(s)
            chunk_m_y, chunk_z_y = _chunk_partial(y)
            m_s, z_s = _merge(m_s, z_s, chunk_m_s, chunk_z_s)
            m_y, z_y = _merge(m_y, z_y, chunk_m_y, chunk_z_y)

    # One division and one log a row. Z >= 1 whenever the row has a real finite value (its max contributes
    # exp(0)); Z = 0 (no real document, or every real label -inf) gives inf here, masked by the terms.
    inv_z_s = 1.0 / z_s
    log_z_s = tl.log(z_s)
    inv_z_y = 1.0 / z_y

    if ONE_CHUNK:
        term, grad = _loss_and_grad_terms(s, y, real, m_s, inv_z_s, log_z_s, m_y, inv_z_y)
        loss = tl.sum(term, axis=0)
        if STORE_GRAD:
            tl.store(grad_ptr + row * stride_gb + cols * stride_gl,
                     (grad * inv_divisor).to(grad_ptr.dtype.element_ty), mask=cols < L)
    else:
        # Pass 2: each chunk's loss terms and gradient, from the row's totals.
        loss = tl.zeros([], acc)
        for k in range(0, num_chunks):
            s, y, real = _load_chunk(row, k * BLOCK, cols, L, scores_ptr, stride_sb, stride_sl, labels_ptr,
                                     stride_yb, stride_yl, mask_ptr, stride_mb, stride_ml, lengths_ptr, acc, REAL)
            term, grad = _loss_and_grad_terms(s, y, real, m_s, inv_z_s, log_z_s, m_y, inv_z_y)
            loss += tl.sum(term, axis=0)
            if STORE_GRAD:
                pos = k * BLOCK + cols
                tl.store(grad_ptr + row * stride_gb + pos * stride_gl,
                         (grad * inv_divisor).to(grad_ptr.dtype.element_ty), mask=pos < L)

    tl.store(loss_ptr + row, loss)


def row_geometry(length: int, max_block: int = MAX_BLOCK) -> tuple[int, int]:
    """(block, chunks) for rows of `length` slots: one power-of-two block up to `max_block`, else chunks of it."""
    block = min(next_power_of_2(length), next_power_of_2(max_block))
    return block, cdiv(max(length, 1), block)


def num_warps_for(block: int) -> int:
    """One warp per 256 slots of the block, 1 to 16."""
    return max(1, min(16, block // 256))


def _strides(tensor):
    return tensor, tensor.stride(0), tensor.stride(1)


def triton_listnet(inputs: ListNetInputs, row_divisor: int, need_grad: bool, max_block: int = MAX_BLOCK):
    """Launch the kernel: per-row losses (B,) in the accumulator dtype, and the gradient of
    sum(loss) / row_divisor in the scores' dtype ((B, L) contiguous, 0 at padding), or None.

    `max_block`: the largest chunk (rounded up to a power of two); a smaller one sends rows through the chunked
    two-pass path at short lengths (the tests' way to cross chunk boundaries cheaply).
    """
    scores = inputs.scores.detach()
    batch, length = scores.shape
    row_loss = torch.empty(batch, dtype=accumulator_dtype(scores.dtype), device=scores.device)
    grad = torch.empty((batch, length), dtype=scores.dtype, device=scores.device) if need_grad else None
    if batch == 0:
        return row_loss, grad
    if length == 0:  # no documents anywhere: every row has loss 0
        return row_loss.zero_(), grad
    block, chunks = row_geometry(length, max_block)
    mask = inputs.mask.view(torch.uint8) if inputs.mask is not None else None
    # The kernel reads lengths[row] unstrided, as int64 (a slice or an expanded scalar is copied: O(B)).
    lengths = inputs.lengths.to(torch.int64).contiguous() if inputs.lengths is not None else None
    dummy = (row_loss, 0, 0)

    with on_device_of(scores):
        _listnet_kernel[(batch,)](
            *_strides(scores),
            *_strides(inputs.labels.detach()),
            *(_strides(mask) if mask is not None else dummy),
            lengths if lengths is not None else row_loss,
            row_loss, *(_strides(grad) if grad is not None else dummy),
            length, chunks, row_divisor,
            REAL=real_kind(mask, lengths), STORE_GRAD=need_grad, BLOCK=block, ONE_CHUNK=chunks == 1,
            num_warps=num_warps_for(block), **COMPILE_OPTIONS,
        )
    return row_loss, grad
