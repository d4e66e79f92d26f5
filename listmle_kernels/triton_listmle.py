"""The Triton backend: one fused kernel computes per-row ListMLE losses and their gradient.

Layout: a program owns ROWS rows (ROWS > 1 packs short lists into one program) and walks each row
in chunks of BLOCK "slots"; slot r is the r-th document of the target order:

  * input order:          slot r = position r, padding leaves holes (rank = real docs before it);
  * sort in kernel:       one block: count label groups, or tl.sort packed (label or group key, tie bits,
                          position) keys, int32 where they fit (`_sorted_by_labels`);
  * order given:          rows too long to sort in one block get their order from target_order.py.

Math (see torch_listmle.py for the same formulas in PyTorch): with the suffix log-sum-exp
lse_r = log sum_{t >= r} exp s_t over real slots,

    loss_row = -sum_r w_r (s_r - lse_r),   grad_j = -w_j + exp(s_j + P_j),
    P_j = log sum_{r <= j} w_r exp(-lse_r).

Both formulas are shift-invariant, and every exponent below is a difference of scores, so scores far from
0 lose no float32 digits (unshifted, lse near 1e4 has float32's 1e-3 spacing, and every s - lse with it).
Two exact ways to take the sums, chosen per program (the CPU path's two, torch_listmle.py):

  * linear, when no real score of the program's rows lies more than KERNEL_LINEAR_SPAN below its
    row's max m: e = exp(s - m), S = reverse cumsum of e, s - lse = -log(S / e), and grad_j = e_j *
    cumsum_{r <= j} w_r / S_r - w_j. Plain sums instead of scans that take an exp at every merge:
    2.1x faster at 16384 x 4096 on an H100 (docs/performance-record.md).
  * log space (any span): a reverse (max, scaled-sum) scan gives each slot its suffix max m_r (a score)
    and S_r = sum_{t >= r} exp(s_t - m_r) in [1, n], so s_r - lse_r = (s_r - m_r) - log S_r; a forward
    scan of the pairs (-m_r, w_r / S_r) gives P_j as (-m_j, sum_{r <= j} (w_r / S_r) exp(m_j - m_r)), so
    grad_j = exp(s_j - m_j) * that sum - w_j. Nothing here is shifted by the row's max: beside a far
    outlier that shift would round the other scores to float32's spacing at the span (2^-10 one score 1e4
    up), and merge distinct scores into ties further out.

A row longer than one block takes two passes: pass 1 reduces each chunk to its (max, sum) total, and
every chunk gets the carry of the chunks to its right from those totals; pass 2 finishes each chunk
with that carry and a running prefix carry for the gradient's sum. Deterministic: no atomics.
"""

import functools

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice
from triton.runtime.interpreter import InterpretedFunction

from .inputs import WEIGHTS_TENSOR, ListMLEInputs, real_count, real_mask
from ._launch import cdiv, next_power_of_2, on_device_of
from .numerics import LINEAR_SPAN, accumulator_dtype, normalised_rank_weights
from .triton_common import COMPILE_OPTIONS, fast_divide, finite_or_zero, real_kind
from .target_order import target_order

MAX_BLOCK = 4096        # slots per chunk; longer rows are scanned in chunks
# Longest row sorted by labels inside the kernel. Longer rows take the torch pre-pass: on an H100 at
# 16384 x 4096 the in-kernel bitonic sort took 12.8 ms against the pre-pass's 10.3, while at 1024 the
# kernel won, 1.6 against 2.4 ms (bench/results/gpu-20261123/kernel-profile-sort-host.log).
SORT_MAX_BLOCK = 2048
ROW_TILE = 1024         # short rows are packed ROWS to a program, about this many slots each
# The linear sums' reach below a row's max: the CPU path's LINEAR_SPAN, but 60 for float32, so that
# S_r / e_r <= L exp(60) stays finite for any list length (with 80 it would overflow past L = 6,000).
KERNEL_LINEAR_SPAN = {torch.float32: 60.0, torch.float64: LINEAR_SPAN[torch.float64]}

ORDER_INPUT, ORDER_SORT, ORDER_GIVEN = 0, 1, 2


@triton.jit
def _linear_sums_exact(hi, lo, row_ok, LINEAR_SPAN: tl.constexpr):
    """Whether the program may take the linear sums: no row has a real score more than LINEAR_SPAN below its
    max `hi` (`lo`: its least real score). tl.max and tl.min skip NaN, so a NaN score does not widen its row's
    span, and a NaN span (every real score +inf, or every one -inf) does not count as too wide: such rows' losses
    are NaN on either path."""
    too_wide = row_ok & (hi - lo > LINEAR_SPAN)
    return tl.max(too_wide.to(tl.int32), axis=0) == 0


@triton.jit
def _lse_combine(m1, s1, m2, s2):
    """Merge two log-sum-exp partials (max, sum of exp(x - max)); (m, s) stands for s * exp(m).

    One exp per merge (the scans are bound by exp throughput): only the smaller partial is rescaled,
    by exp(min - max) <= 1. Symmetric, bit for bit (Triton's reverse scans need commutative
    combines), and guarded: two empty partials (-inf, 0) merge to (-inf, 0), not to NaN from
    exp(-inf - -inf).
    """
    m = tl.maximum(m1, m2)
    rescale = tl.exp(tl.minimum(m1, m2) - finite_or_zero(m))
    return m, tl.where(m1 >= m2, s1 + s2 * rescale, s2 + s1 * rescale)


@triton.jit
def _lse_total(x):
    """(max, sum of exp(x - max)) of each row of x; (-inf, 0) for an all -inf row."""
    m = tl.max(x, axis=1)
    return m, tl.sum(tl.exp(x - finite_or_zero(m)[:, None]), axis=1)


@triton.jit
def _scaled_total(m, s):
    """The merge of each row's pairs (m, s) (`_lse_combine`'s): (max m, sum of s * exp(m - max))."""
    top = tl.max(m, axis=1)
    return top, tl.sum(s * tl.exp(m - finite_or_zero(top)[:, None]), axis=1)


@triton.jit
def _log_of_ratio(x, FAST_MATH: tl.constexpr):
    """log x for the linear sums' ratios S_r / e_r in [1, L e^span].

    FAST_MATH (float32 on CUDA): the hardware log2 approximation (`__logf`: at most 2^-21.41 absolute error
    in [0.5, 2], 3 ulp above; the CUDA C Programming Guide), a multi-function-unit op and a multiply in place of
    libdevice's ~30-instruction logf polynomial, a quarter of the linear path's instructions before (sm_90
    SASS, docs/performance-record.md). Within the loss tolerance: a ratio near 1 (log < 0.02, the only
    ones where 2^-21.41 is not small against the log) needs every later score ~4 lower, and the suffix sums at
    least halve at each ratio <= 2, so a row of span <= 60 has at most ~16 such terms, whatever its length. A
    loss of ~0 may come out as -1e-7. Triton's interpreter has no libdevice, so it takes tl.log.
    """
    if FAST_MATH:
        return libdevice.fast_logf(x)
    else:
        return tl.log(x)


@triton.jit
def _exp2_of_negative(k, acc: tl.constexpr):
    """2^-k for integers k >= 1. Float32: built from its exponent bits, exact, with 0 for k > 126 (2^-126 is
    float32's least normal number; a p-ListMLE weight below it changes no sum at float32's precision)."""
    if acc == tl.float32:
        return (tl.maximum(127 - k, 0) << 23).to(tl.float32, bitcast=True)
    else:
        return tl.exp2(-k.to(acc))


@triton.jit
def _count_real(real, rows64, row_ok, L, lengths_ptr, REAL: tl.constexpr, ORDER: tl.constexpr):
    """Real documents in each row of a one-block row: its length clamped to [0, L] where lengths give them in
    input order, L without a mask (no reduction over the row), else the count of `real`."""
    if REAL == 2 and ORDER == 0:
        length = tl.load(lengths_ptr + rows64, mask=row_ok, other=0)
        return tl.minimum(tl.maximum(length, 0), L).to(tl.int32)
    elif REAL == 0:
        return tl.where(row_ok, L, 0).to(tl.int32)
    else:
        return tl.sum(real.to(tl.int32), axis=1)


@triton.jit
def _is_real(rows64, row_ok, pos, inside, mask_ptr, stride_mb, stride_ml, lengths_ptr, REAL: tl.constexpr):
    """Whether position `pos` of each row holds a real document (not padding, not past the row end)."""
    if REAL == 1:
        real = inside & (tl.load(mask_ptr + rows64[:, None] * stride_mb + pos * stride_ml,
                                 mask=inside, other=0) != 0)
    elif REAL == 2:
        length = tl.load(lengths_ptr + rows64, mask=row_ok, other=0)
        real = inside & (pos < length[:, None])
    else:
        real = inside
    return real


@triton.jit
def _load_chunk(start, rows64, row_ok, cols, L,
                scores_ptr, stride_sb, stride_sl, mask_ptr, stride_mb, stride_ml, lengths_ptr,
                order_ptr, stride_ob, stride_ol,
                REAL: tl.constexpr, ORDER: tl.constexpr):
    """Slots start + cols of ROWS rows: (score or -inf, is real, position) for input or given order."""
    slot = start + cols
    inside = row_ok[:, None] & (slot < L)[None, :]
    if ORDER == 2:
        pos = tl.load(order_ptr + rows64[:, None] * stride_ob + slot[None, :] * stride_ol,
                      mask=inside, other=0).to(tl.int64)
        pos = tl.where(inside, pos, L)  # slots past the row end own no position
    else:
        pos = slot[None, :] + tl.zeros_like(rows64)[:, None]
    real = _is_real(rows64, row_ok, pos, inside, mask_ptr, stride_mb, stride_ml, lengths_ptr, REAL)
    fetch = real
    if REAL == 2 and ORDER == 0:
        # Whole groups of 8 slots that hold a real document: a mask constant over 16 bytes of scores lets the
        # load be vectorised (sm_90: 2 LDG.128 for a thread's 8 float32 slots instead of 8 4-byte loads) and
        # still skips the padding past the last group. What it reads past the length is masked below. The group's
        # first slot is compared with the length as loaded: length + 7 would wrap in uint8 / int8 / int16 lengths.
        length = tl.load(lengths_ptr + rows64, mask=row_ok, other=0)
        fetch = inside & (((slot // 8) * 8)[None, :] < length[:, None])
    s = tl.load(scores_ptr + rows64[:, None] * stride_sb + pos * stride_sl, mask=fetch)
    return tl.where(real, s, float("-inf")), real, pos


@triton.jit
def _label_groups(label, real, GROUPS: tl.constexpr, INTEGER_LABELS: tl.constexpr):
    """Each document's label group g = top - label (top: its row's greatest real label), and whether a real
    document misses the groups: g must be an integer in [0, GROUPS) that gives the label back exactly.

    Then the map label -> g is one to one on the real labels and reverses their order (float subtraction is
    monotone, and top - g is one value for one g, so two labels cannot share a group): sorting by labels
    descending is sorting by g ascending. Integer labels (compared as float32, as the sort does) are integral
    floats, so top - label is exact wherever the true difference is below 2^24 and >= 2^24 where it is not:
    the check is only g < GROUPS. NaN and infinite labels miss (their g is NaN or inf, clamped to GROUPS).
    GROUPS <= 2^24: every group below it is an exact float32.
    """
    top = tl.max(tl.where(real, label, float("-inf")), axis=1)
    below = top[:, None] - label
    # Converted only where in range: a float-to-int of NaN, inf or a negative (padding above the top, or a row
    # with no real document, whose top is -inf) has no defined result
    group = tl.where((below >= 0) & (below < GROUPS), below, GROUPS).to(tl.int32)
    misses = group >= GROUPS
    if not INTEGER_LABELS:
        misses |= (top[:, None] - group.to(tl.float32)) != label
    return group, real & misses


@triton.jit
def _partitioned_by_labels(group, real, n, rows64, cols, inside, L, scratch_ptr, stride_xb, stride_xl,
                           REAL: tl.constexpr, BLOCK: tl.constexpr, FIELD_BITS: tl.constexpr, GROUPS: tl.constexpr):
    """Positions in target order (stable ties) by counting instead of sorting: the document at position j of
    label group g goes to slot

        t_j = (real documents of the groups before g) + (real documents of group g left of j),

    each count from one int64 scan: group g counts in bits [g F, g F + F) (F = FIELD_BITS = log2 BLOCK), so one
    cumsum of 2^(g F) a real document keeps every group's running count, and the row's totals times
    sum_{k >= 1} 2^(k F) put in field g the documents of the groups before g. No field below g carries into
    field g: at a document of group g each holds at most n - (documents of g) <= BLOCK - 1 (the totals' own
    field may hold BLOCK, but only as an integer, whose product is exact modulo 2^64, and the fields used
    lie below bit 63). Field g of (above + inclusive count) is t_j + 1 <= BLOCK, read as
    ((value >> g F) - 1) mod 2^F.

    Registers cannot be scattered: each position is stored at its slot of `scratch_ptr` (the gradient's row,
    reinterpreted as integers of its width) and the row read back in slot order; a barrier orders the two for
    the other threads of the program, and one more the reads before anything else writes that row. Slots from
    n on: with lengths (or no padding) the padding is the row's tail in input order, so slot t holds position t
    there and the gradient's store writes its zeros; with a mask they get position L (no document), and the
    caller zeroes the padding.
    """
    ABOVE: tl.constexpr = ((1 << (GROUPS * FIELD_BITS)) - 1) // ((1 << FIELD_BITS) - 1) - 1  # sum_{k>=1} 2^(k F)
    # Padding's group may lie far past GROUPS (its label is not read): clamped, no shift reaches 64 bits
    shift = (tl.minimum(group, GROUPS) * FIELD_BITS).to(tl.int64)
    one = tl.where(real, tl.full(group.shape, 1, tl.int64) << shift, 0)
    above = tl.sum(one, axis=1) * ABOVE
    field = ((above[:, None] + tl.cumsum(one, axis=1)) >> shift).to(tl.int32)
    slot = (field - 1) & (BLOCK - 1)
    row_base = scratch_ptr + rows64[:, None] * stride_xb
    if REAL == 1:
        tl.store(row_base + slot * stride_xl, cols[None, :].to(scratch_ptr.dtype.element_ty), mask=real)
        tl.debug_barrier()
        stored = tl.load(row_base + cols[None, :] * stride_xl, mask=inside)
        pos = tl.where(tl.arange(0, BLOCK)[None, :] < n[:, None], stored, L)  # past slot n: not a position
    else:
        # The padding is the row's tail: each padding position is its own slot, and every slot of the row is
        # stored and read back 16 bytes at a time, with no mask but the row's end
        slot = tl.where(real, slot, tl.arange(0, BLOCK)[None, :])
        tl.store(row_base + slot * stride_xl, cols[None, :].to(scratch_ptr.dtype.element_ty), mask=inside)
        tl.debug_barrier()
        pos = tl.load(row_base + cols[None, :] * stride_xl, mask=inside, other=L)
    tl.debug_barrier()
    return pos.to(tl.int32)


@triton.jit
def _as_integers(ptr):
    """The pointer to the same bytes read as signed integers of the element's width."""
    bits: tl.constexpr = ptr.dtype.element_ty.primitive_bitwidth
    if bits == 16:
        return ptr.to(tl.pointer_type(tl.int16), bitcast=True)
    elif bits == 32:
        return ptr.to(tl.pointer_type(tl.int32), bitcast=True)
    else:
        return ptr.to(tl.pointer_type(tl.int64), bitcast=True)


@triton.jit
def _hash32(x):
    """Wellons' lowbias32 of uint32 x: target_order._hash32, which the torch build computes in int64 ops."""
    x ^= x >> 16
    x *= tl.full([], 0x7FEB352D, tl.uint32)
    x ^= x >> 15
    x *= tl.full([], 0x846CA68B, tl.uint32)
    return x ^ (x >> 16)


@triton.jit
def _tie_words(seed, rows64, cols, L):
    """32 random bits a document, complemented: the bits of target_order.hashed_tie_bits, a hash of the seed and
    the document's index row * L + column (64-bit: no repeats past 2^32 documents). Sorted descending, their
    complements order ties as the torch build's ascending sort of those bits does, so on CUDA the kernel's int64
    keys and the pre-pass of rows too long for them draw the same order (its int32 keys keep the top 16 of the
    bits: the same order but where two tied documents share those). About a third of tl.randint's cost: random
    ties took 21 SASS a slot over stable ones with these bits, 58 with Philox's (int32 keys, 1024 slots; python -m
    tools.sass_count)."""
    index = rows64[:, None] * L + cols[None, :]
    word = _hash32((index & 0xFFFFFFFF).to(tl.uint32) ^ _hash32(seed.to(tl.uint32)))
    return ~_hash32(word ^ (index >> 32).to(tl.uint32))


@triton.jit
def _sorted_positions(label, real, rows64, cols, L, seed, RANDOM_TIES: tl.constexpr, BLOCK: tl.constexpr,
                      INDEX_BITS: tl.constexpr):
    """Positions in target order by a sort: pack (label key, tie bits, position) into int64 and tl.sort it
    descending; padding (any label) sorts last, in input order."""
    label = tl.where(label == 0, 0.0, label)  # -0.0 ties with 0.0
    bits = label.to(tl.int32, bitcast=True)
    key = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # order-preserving: flip negative floats' magnitude bits
    key = tl.where(real, key, -2147483648)    # padding sorts last
    low = (BLOCK - 1 - cols[None, :]).to(tl.int64) + tl.zeros_like(key).to(tl.int64)
    if RANDOM_TIES:  # the top 31 - INDEX_BITS bits, as many as the torch build keeps
        low = low | ((_tie_words(seed, rows64, cols, L) >> (INDEX_BITS + 1)).to(tl.int64) << INDEX_BITS)
    packed = tl.sort((key.to(tl.int64) << 32) | low, dim=1, descending=True)
    return (BLOCK - 1 - (packed & (BLOCK - 1))).to(tl.int32)


@triton.jit
def _sorted_groups(group, real, rows64, cols, L, seed, RANDOM_TIES: tl.constexpr, BLOCK: tl.constexpr,
                   INDEX_BITS: tl.constexpr, GROUP_BITS: tl.constexpr):
    """Positions in target order by a sort of int32 keys, for programs whose real labels all fall in groups
    g < 2^GROUP_BITS (`_label_groups`): (2^GROUP_BITS - 1 - g, random tie bits, position) in the 31 bits below
    the sign, sorted descending; padding has the sign bit set, so it sorts last, in input order. Half the
    key bits of `_sorted_positions`, about half its instructions (tl.sort at 1024 slots: 186 against 417 SASS a
    slot, python -m tools.sass_count), and the same order with stable ties. The tie bits are the top
    31 - GROUP_BITS - INDEX_BITS bits of the same random word, so with random ties the two orders differ only
    where two tied documents draw those alike (then input order decides here, the wide key's further bits
    there)."""
    TIE_BITS: tl.constexpr = 31 - GROUP_BITS - INDEX_BITS
    key = ((1 << GROUP_BITS) - 1 - group) << (31 - GROUP_BITS)
    if RANDOM_TIES:
        key |= (_tie_words(seed, rows64, cols, L) >> (32 - TIE_BITS)).to(tl.int32, bitcast=True) << INDEX_BITS
    key = tl.where(real, key, -2147483648) | (BLOCK - 1 - cols[None, :]).to(tl.int32)
    packed = tl.sort(key, dim=1, descending=True)
    return BLOCK - 1 - (packed & (BLOCK - 1))


@triton.jit
def _sorted_by_labels(rows64, row_ok, cols, L, seed, labels_ptr, stride_yb, stride_yl,
                      mask_ptr, stride_mb, stride_ml, lengths_ptr, grad_ptr, stride_gb, stride_gl,
                      REAL: tl.constexpr, RANDOM_TIES: tl.constexpr, BLOCK: tl.constexpr,
                      INDEX_BITS: tl.constexpr, LABEL_GROUPS: tl.constexpr, KEY_GROUP_BITS: tl.constexpr,
                      STORE_GRAD: tl.constexpr):
    """Positions of the row in target order (labels descending) and the number of real documents.

    Three ways, the cheapest that the program's labels allow; all give the same order with stable ties. Programs
    whose rows' labels all lie a whole number of steps, fewer than LABEL_GROUPS, below their row's top label
    (graded relevance; LABEL_GROUPS = 0 with random ties) count the order (`_partitioned_by_labels`), and zero
    the gradient's padding themselves where a mask leaves holes that the counted positions do not reach. Those
    whose labels all lie fewer than 2^KEY_GROUP_BITS whole steps below their row's top sort int32 keys of the
    steps (`_sorted_groups`); the others int64 keys of the labels (`_sorted_positions`).
    """
    inside = row_ok[:, None] & (cols < L)[None, :]
    real = _is_real(rows64, row_ok, cols[None, :], inside, mask_ptr, stride_mb, stride_ml, lengths_ptr, REAL)
    fetch = real
    if REAL == 2:  # as in _load_chunk: a mask constant over groups of 8 slots, vectorised; padding is masked below
        length = tl.load(lengths_ptr + rows64, mask=row_ok, other=0)
        fetch = inside & (((cols // 8) * 8)[None, :] < length[:, None])
    label = tl.load(labels_ptr + rows64[:, None] * stride_yb + cols[None, :] * stride_yl, mask=fetch,
                    other=0).to(tl.float32)
    group, misses = _label_groups(label, real, 1 << KEY_GROUP_BITS, labels_ptr.dtype.element_ty.is_int())
    if LABEL_GROUPS > 0:
        # one reduction for both: real documents in the low 16 bits (n <= BLOCK <= 2^15), above them those that
        # miss the groups or lie too many steps below the top to count
        far = misses | (real & (group >= LABEL_GROUPS))
        tally = tl.sum(real.to(tl.int32) + (far.to(tl.int32) << 16), axis=1)
        n = tally & 0xFFFF
        counted = tl.max(tally, axis=0) < 65536
        if counted:
            pos = _partitioned_by_labels(group, real, n, rows64, cols, inside, L, _as_integers(grad_ptr), stride_gb,
                                         stride_gl, REAL, BLOCK, max(INDEX_BITS, 1), LABEL_GROUPS)
            if STORE_GRAD and REAL == 1:
                tl.store(grad_ptr + rows64[:, None] * stride_gb + cols[None, :] * stride_gl, 0,
                         mask=inside & ~real)
        else:
            narrow = tl.max(tl.max(misses.to(tl.int32), axis=1), axis=0) == 0
            if narrow:
                pos = _sorted_groups(group, real, rows64, cols, L, seed, RANDOM_TIES, BLOCK, INDEX_BITS,
                                     KEY_GROUP_BITS)
            else:
                pos = _sorted_positions(label, real, rows64, cols, L, seed, RANDOM_TIES, BLOCK, INDEX_BITS)
    else:  # the same tally, of the documents that miss the int32 keys' groups
        tally = tl.sum(real.to(tl.int32) + (misses.to(tl.int32) << 16), axis=1)
        n = tally & 0xFFFF
        narrow = tl.max(tally, axis=0) < 65536
        if narrow:
            pos = _sorted_groups(group, real, rows64, cols, L, seed, RANDOM_TIES, BLOCK, INDEX_BITS, KEY_GROUP_BITS)
        else:
            pos = _sorted_positions(label, real, rows64, cols, L, seed, RANDOM_TIES, BLOCK, INDEX_BITS)
    # All ways meet with 32-bit positions (< BLOCK), widened after: with int64 ones ptxas took 128 registers and
    # spilled 20 B at 2048 slots, 8 warps, unaligned rows (python tests/compile_for_gpu.py --resources)
    return pos.to(tl.int64), n


# The seed changes every call with random ties and the divisor with the batch: specialising on
# their values (== 1, divisible by 16) would compile new variants in the middle of training.
@triton.jit(do_not_specialize=["row_divisor", "seed"])
def _listmle_kernel(
    scores_ptr, stride_sb, stride_sl,
    labels_ptr, stride_yb, stride_yl,
    mask_ptr, stride_mb, stride_ml,
    lengths_ptr,
    order_ptr, stride_ob, stride_ol,
    weights_ptr, stride_wb, stride_wl,
    loss_ptr, grad_ptr, stride_gb, stride_gl,
    B, L, num_chunks, row_divisor, seed,
    REAL: tl.constexpr, ORDER: tl.constexpr, WEIGHTS: tl.constexpr, RANDOM_TIES: tl.constexpr,
    STORE_GRAD: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr, CHUNKS: tl.constexpr,
    INDEX_BITS: tl.constexpr, LABEL_GROUPS: tl.constexpr, KEY_GROUP_BITS: tl.constexpr, LINEAR_SPAN: tl.constexpr,
    FAST_MATH: tl.constexpr,
):
    acc = loss_ptr.dtype.element_ty  # float32, or float64 for float64 scores
    inv_divisor = 1.0 / tl.full([], row_divisor, acc)  # 1/B of reduction="mean", exact in float64 too
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < B
    rows64 = rows.to(tl.int64)
    cols = tl.arange(0, BLOCK).to(tl.int64)  # 64-bit offsets: position * stride can pass 2^31
    chunk_ids = tl.arange(0, CHUNKS)  # num_chunks = cdiv(L, BLOCK) <= CHUNKS

    # Pass 1 (rows longer than one block): count real documents and keep
    # each chunk's (max, sum) total; then a reverse scan gives every chunk its suffix carry.
    n = tl.zeros([ROWS], dtype=tl.int32)
    if CHUNKS > 1:
        total_m = tl.full([ROWS, CHUNKS], float("-inf"), dtype=acc)
        total_s = tl.zeros([ROWS, CHUNKS], dtype=acc)
        row_min = tl.full([ROWS], float("inf"), dtype=acc)
        for k in range(0, num_chunks):
            s, real, pos = _load_chunk(k * BLOCK, rows64, row_ok, cols, L, scores_ptr, stride_sb,
                                       stride_sl, mask_ptr, stride_mb, stride_ml, lengths_ptr,
                                       order_ptr, stride_ob, stride_ol, REAL, ORDER)
            s = s.to(acc)
            m_k, s_k = _lse_total(s)
            row_min = tl.minimum(row_min, tl.min(tl.where(real, s, float("inf")), axis=1))
            here = chunk_ids[None, :] == k
            total_m = tl.where(here, m_k[:, None], total_m)
            total_s = tl.where(here, s_k[:, None], total_s)
            n += tl.sum(real.to(tl.int32), axis=1)
        row_max = tl.max(total_m, axis=1)
        linear = _linear_sums_exact(row_max, row_min, row_ok, LINEAR_SPAN)
        # linear: each chunk's sum of exp(s - row max); 0 for empty chunks
        chunk_sum = total_s * tl.exp(total_m - finite_or_zero(row_max)[:, None])
        suffix_m, suffix_s = tl.associative_scan((total_m, total_s), 1, _lse_combine, reverse=True)

    # Pass 2: per chunk, suffix lse (local reverse scan + carry), loss, and the forward scan for P.
    loss = tl.zeros([ROWS], dtype=acc)
    prefix_m = tl.full([ROWS], float("-inf"), dtype=acc)
    prefix_s = tl.zeros([ROWS], dtype=acc)
    ratio_carry = tl.zeros([ROWS], dtype=acc)  # linear: sum of w_r / S_r over the chunks to the left
    rank_base = tl.zeros([ROWS], dtype=tl.int32)
    for k in range(0, num_chunks):
        if ORDER == 1:  # one block: sort, then read scores in target order
            pos, n = _sorted_by_labels(rows64, row_ok, cols, L, seed, labels_ptr, stride_yb, stride_yl,
                                       mask_ptr, stride_mb, stride_ml, lengths_ptr, grad_ptr, stride_gb, stride_gl,
                                       REAL, RANDOM_TIES, BLOCK, INDEX_BITS, LABEL_GROUPS, KEY_GROUP_BITS,
                                       STORE_GRAD)
            real = cols[None, :] < n[:, None]
            s = tl.load(scores_ptr + rows64[:, None] * stride_sb + pos * stride_sl, mask=real,
                        other=float("-inf"))
        else:
            s, real, pos = _load_chunk(k * BLOCK, rows64, row_ok, cols, L, scores_ptr, stride_sb,
                                       stride_sl, mask_ptr, stride_mb, stride_ml, lengths_ptr,
                                       order_ptr, stride_ob, stride_ol, REAL, ORDER)
            if CHUNKS == 1 and WEIGHTS == 1:
                n = _count_real(real, rows64, row_ok, L, lengths_ptr, REAL, ORDER)
        s = s.to(acc)
        if CHUNKS == 1:
            row_max = tl.max(s, axis=1)
            row_min = tl.min(tl.where(real, s, float("inf")), axis=1)
            linear = _linear_sums_exact(row_max, row_min, row_ok, LINEAR_SPAN)
        if ORDER == 1 or (ORDER == 0 and REAL != 1):  # real slots come first: a real slot's rank is its slot
            rank = (k * BLOCK + cols[None, :]).to(tl.int32)
        else:
            rank = rank_base[:, None] + tl.cumsum(real.to(tl.int32), axis=1) - 1
            rank_base += tl.sum(real.to(tl.int32), axis=1)

        if WEIGHTS == 0:
            w = real.to(acc)
        elif WEIGHTS == 1:
            # p-ListMLE (2^(n-1-r) - 1) / sum, times 2^-n so it cannot overflow:
            # (2^-(r+1) - 2^-n) / (1 - (n+1) 2^-n); zero for n <= 1.
            # One division a row: each weight is multiplied by the reciprocal of its row's total.
            tail = tl.exp2(-n.to(acc))
            total = 1.0 - (n.to(acc) + 1.0) * tail
            scale = tl.where(total > 0, 1.0 / tl.where(total > 0, total, 1.0), 0.0)
            w = (_exp2_of_negative(rank + 1, acc) - tail[:, None]) * scale[:, None]  # used only where real
        else:  # normalised on the host (numerics.normalised_rank_weights), in the accumulator dtype
            w = tl.load(weights_ptr + rows64[:, None] * stride_wb + rank.to(tl.int64) * stride_wl, mask=real,
                        other=0).to(acc)

        if linear:
            # S_r = sum_{t >= r} e_t: this chunk's reverse cumsum plus the chunks to its right. S >= e_r >=
            # exp(-span) at real slots, S_r / e_r <= L exp(span) and sum_r w_r / S_r <= exp(span) (1 + log L):
            # no underflow, and no overflow for any L < 2^31 (KERNEL_LINEAR_SPAN).
            # Shifted by the row's max (nothing real: by 0): s - max is then a difference of nearby scores.
            e = tl.exp(s - finite_or_zero(row_max)[:, None])  # 0 at padding: s = -inf there
            suffix = tl.cumsum(e, axis=1, reverse=True)
            if CHUNKS > 1:
                suffix += tl.sum(tl.where(chunk_ids[None, :] > k, chunk_sum, 0.0), axis=1)[:, None]
            # s_r - log S_r as -log(S_r / e_r): the ratio's log is small and exact to a few ulps, while the
            # log of S_r itself (up to LINEAR_SPAN in size) would carry its own ulps, ~2e-6 at 30, into s - lse.
            # The fast division's 2-ulp range holds both denominators: exp(-span) <= e_r <= S_r <= L at real slots
            # (span <= 60, L < 2^31), and the quotients stay below 2^118. Its flush to zero turns a weight
            # w_r < 2^-126 (p-ListMLE ranks past 125) or a ratio w_r / S_r < 2^-126 into 0, which moves no
            # gradient entry by more than L 2^-126. Slots that are not real (e = 0) may give inf or NaN, as `/`
            # does; they are masked below.
            log_prob = -_log_of_ratio(fast_divide(suffix, e, FAST_MATH), FAST_MATH)
            if STORE_GRAD:
                if WEIGHTS == 0:  # w = 1 at real slots: a reciprocal
                    ratio = fast_divide(1.0, suffix, FAST_MATH)
                else:
                    ratio = fast_divide(w, suffix, FAST_MATH)
                if not (ORDER == 1 or (ORDER == 0 and REAL != 1)):
                    ratio = tl.where(real, ratio, 0.0)
                # else real slots come first: the inf or NaN of w / 0 past the last one reaches no real slot's
                # cumsum, and the gradient's padding is masked below.
                cumulative = tl.cumsum(ratio, axis=1)
                if CHUNKS > 1:
                    cumulative += ratio_carry[:, None]
                    ratio_carry += tl.sum(ratio, axis=1)
                if WEIGHTS == 0:
                    grad = e * cumulative - 1.0
                else:
                    grad = e * cumulative - w
        else:
            # Suffix lse of every slot: this chunk's reverse scan merged with the chunks to its right.
            lse_m, lse_s = tl.associative_scan((s, real.to(acc)), 1, _lse_combine, reverse=True)
            if CHUNKS > 1:
                right = chunk_ids[None, :] == k + 1
                carry_m = tl.max(tl.where(right, suffix_m, float("-inf")), axis=1)
                carry_s = tl.sum(tl.where(right, suffix_s, 0.0), axis=1)
                lse_m, lse_s = _lse_combine(lse_m, lse_s, carry_m[:, None], carry_s[:, None])
            # lse_m: the suffix max m_r, a score; lse_s = S_r >= 1 at real slots
            below_max = s - lse_m
            if STORE_GRAD:
                # sum_{r <= j} w_r exp(-lse_r) as the pairs (-m_r, w_r / S_r): forward scan merged with the
                # chunks to the left. Its max at a real slot j is -m_j (m_r falls with r), so p_s is the sum
                # times exp(m_j), and grad_j = exp(s_j - m_j) * p_s - w_j.
                a_m = tl.where(real, -lse_m, float("-inf"))
                a_s = tl.where(real, w / lse_s, 0.0)
                p_m, p_s = tl.associative_scan((a_m, a_s), 1, _lse_combine)
                if CHUNKS > 1:
                    p_m, p_s = _lse_combine(p_m, p_s, prefix_m[:, None], prefix_s[:, None])
                    total_a_m, total_a_s = _scaled_total(a_m, a_s)
                    prefix_m, prefix_s = _lse_combine(prefix_m, prefix_s, total_a_m, total_a_s)
                grad = tl.exp(below_max) * p_s - w
            # After the gradient's scan: fewer values live across it (at 1024 slots 72 registers rather than 80,
            # python -m tools.sass_count)
            log_prob = below_max - tl.log(lse_s)
        if WEIGHTS == 0:
            loss += tl.sum(tl.where(real, log_prob, 0.0), axis=1)  # w = 1 at real slots
        else:
            loss += tl.sum(tl.where(real, w * log_prob, 0.0), axis=1)

        if STORE_GRAD:
            grad = tl.where(real, grad, 0.0) * inv_divisor
            written = row_ok[:, None] & (pos < L)
            tl.store(grad_ptr + rows64[:, None] * stride_gb + pos * stride_gl,
                     grad.to(grad_ptr.dtype.element_ty), mask=written)

    tl.store(loss_ptr + rows64, -loss, mask=row_ok)


# Float32 linear sums take libdevice's fast log and division (`_log_of_ratio`, `fast_divide`) when compiled for CUDA:
# not when Triton interprets the kernel (no libdevice), nor on ROCm (its libdevice has no fast_logf).
FAST_MATH_FLOAT32 = not isinstance(_listmle_kernel, InterpretedFunction) and torch.version.hip is None


def row_geometry(length: int, sort_by_labels: bool) -> tuple[bool, int, int]:
    """(sorted in the kernel, block, chunks) for rows of `length` slots: rows longer than one sort
    block get their order from the torch pre-pass; rows longer than one block are scanned in chunks."""
    sort_in_kernel = sort_by_labels and length <= SORT_MAX_BLOCK
    block = min(next_power_of_2(length), SORT_MAX_BLOCK if sort_in_kernel else MAX_BLOCK)
    return sort_in_kernel, block, next_power_of_2(cdiv(length, block))


def label_groups(block: int, random_ties: bool) -> int:
    """Label groups a program sorting `block` slots may count instead of sort (`_partitioned_by_labels`): as
    many fields of log2(block) bits as fit below bit 63 of an int64; 0 with random ties, whose order among
    equal labels comes from sorting their random bits."""
    return 0 if random_ties else 63 // max(1, block.bit_length() - 1)


# Random tie bits of an int32 sort key (`_sorted_groups`): each pair of tied documents draws the same with odds 1 in
# 65536, and keeps its input order then (the CPU path's 32-bit keys keep at least 12, target_order.COMPACT_TIE_BITS).
# In a row of a thousand tied documents some pair usually does: such rows' order differs from the int64 keys' there.
KEY_TIE_BITS = 16


def key_group_bits(block: int, random_ties: bool) -> int:
    """Bits of label group that an int32 sort key of `block` slots holds below its sign bit, beside the position
    and (random ties) KEY_TIE_BITS tie bits: at most 24, so that every group is an exact float32
    (`_label_groups`). 21 at 1024 slots with stable ties, 5 with random ties (graded relevance needs 3)."""
    index_bits = block.bit_length() - 1
    return min(24, 31 - index_bits - (KEY_TIE_BITS if random_ties else 0))


def launch_config(block: int, chunks: int, batch: int, sort_in_kernel: bool, sm_count: int = 0) -> tuple[int, int]:
    """(rows packed into one program, num_warps) for rows scanned in blocks of `block` slots.

    Short rows are packed to about ROW_TILE slots a program, but never so many that fewer than two
    programs per SM remain (`sm_count`; 0 = unknown, no limit): 64 x 100 packed 16 rows a program
    would leave 128 of an H100's 132 SMs idle. One warp per 256 slots, up to 16. On an H100, in input
    order, 1024 slots and 4 warps a program beat 2048 and 8 by 1.07-1.5x at 65536 x 1024, 65536 x 128
    and 16384 x 100 (bench/results/gpu-20261123); `python -m tools.tune` sweeps the rest. `sort_in_kernel`
    is not used yet: ptxas already shows the sort wanting other configurations (docs/performance-record.md).
    """
    rows = 1
    if chunks == 1:
        rows = max(1, min(ROW_TILE // block, next_power_of_2(batch)))
        if sm_count:
            rows = min(rows, 1 << max(0, (batch // (2 * sm_count)).bit_length() - 1))  # a power of two
    return rows, max(1, min(16, rows * block // 256))


@functools.lru_cache(maxsize=None)
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; 0 elsewhere (the interpreter)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 0


def _strides(tensor):
    return (tensor, tensor.stride(0), tensor.stride(1)) if tensor is not None else None


def triton_listmle(inputs: ListMLEInputs, seed: int, row_divisor: int, need_grad: bool):
    """Launch the kernel: per-row losses (B,) and the gradient of sum(loss) / row_divisor, or None."""
    scores = inputs.scores.detach()
    batch, length = scores.shape
    row_loss = torch.empty(batch, dtype=accumulator_dtype(scores.dtype), device=scores.device)

    sort_in_kernel, block, chunks = row_geometry(length, inputs.sort_by_labels)
    order = None
    if inputs.sort_by_labels and not sort_in_kernel:
        # Too long to sort in one block: one sort pre-pass in PyTorch, same order as the kernel's.
        order = target_order(inputs.labels, real_mask(scores, inputs.mask, inputs.lengths),
                             inputs.random_ties, seed)
    rows, num_warps = launch_config(block, chunks, batch, sort_in_kernel, sm_count(scores.device))

    grad = torch.empty((batch, length), dtype=scores.dtype, device=scores.device) if need_grad else None
    groups = label_groups(block, inputs.random_ties) if sort_in_kernel else 0
    # A counted target order passes each row's positions through its gradient row; without a gradient, through
    # a row of 16-bit integers (positions < SORT_MAX_BLOCK)
    grad_rows = grad
    if groups and grad is None:
        grad_rows = torch.empty((batch, length), dtype=torch.int16, device=scores.device)
    dummy = (row_loss, 0, 0)
    labels = inputs.labels
    if labels is not None and labels.dtype == torch.bool:
        labels = labels.view(torch.uint8)
    mask = inputs.mask.view(torch.uint8) if inputs.mask is not None else None
    # The kernel reads lengths[row] unstrided (a slice or an expanded scalar is copied: O(B)).
    lengths = inputs.lengths.contiguous() if inputs.lengths is not None else None
    weights = None
    if inputs.weight_kind == WEIGHTS_TENSOR:
        weights = normalised_rank_weights(inputs.weights, real_count(scores, inputs.mask, inputs.lengths),
                                          row_loss.dtype)
    real_kind_code = real_kind(mask, inputs.lengths)
    order_kind = ORDER_SORT if sort_in_kernel else ORDER_GIVEN if order is not None else ORDER_INPUT

    with on_device_of(scores):
        _listmle_kernel[(cdiv(batch, rows),)](
            *_strides(scores),
            *(_strides(labels) if sort_in_kernel else dummy),
            *(_strides(mask) or dummy),
            lengths if lengths is not None else row_loss,
            *(_strides(order) or dummy),
            *(_strides(weights) or dummy),
            row_loss, *(_strides(grad_rows) or dummy),
            batch, length, cdiv(length, block), row_divisor, seed,
            REAL=real_kind_code, ORDER=order_kind, WEIGHTS=inputs.weight_kind,
            RANDOM_TIES=inputs.random_ties, STORE_GRAD=need_grad, ROWS=rows, BLOCK=block, CHUNKS=chunks,
            INDEX_BITS=block.bit_length() - 1, LABEL_GROUPS=groups,
            KEY_GROUP_BITS=key_group_bits(block, inputs.random_ties), LINEAR_SPAN=KERNEL_LINEAR_SPAN[row_loss.dtype],
            FAST_MATH=FAST_MATH_FLOAT32 and scores.is_cuda and row_loss.dtype == torch.float32,
            num_warps=num_warps, **COMPILE_OPTIONS,
        )
    return row_loss, grad
