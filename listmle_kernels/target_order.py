"""The target order when sorting by labels, computed outside the kernel.

Used by the PyTorch backend, and by the Triton backend for rows longer than one block can sort.
It sorts one packed int64 key per document, all of them distinct and >= 0:

    key    = order-preserving unsigned 32 bits of the float32 label, negated   (padding: all ones)
    packed = key << 31 | random_bits << index_bits | position

Sorting `packed` ascending gives labels descending, then (random ties) random bits, then input
order, padding last. Only the sorted values are needed: the position is in their low bits. With
stable ties this is the kernel's order (the kernel sorts the unnegated key descending with
L - 1 - position in its low bits). The torch build sorts stable ties by `key` alone with a stable
sort instead: the same order from a 32-bit key, since torch.sort returns the positions anyway. The
numpy build packs in both cases, because numpy sorts values faster than it argsorts.

The key is built in 32 bits and widened once, and padding is OR-ed in (an arithmetic op) rather
than filled in by a mask: masked writes cost 3-6x more than arithmetic on CPU, in torch and numpy
alike, and each int64 pass costs twice an int32 one.

The numpy build packs a row of at least COMPACT_MIN_LENGTH documents whose real labels are few-bit (graded
relevance, 0/1, halves: finite, >= +0.0, with only a few distinct significant bits) into uint32 instead:

    compact = (top - label_bits >> shift) << (32 - key_bits) | top tie bits << index_bits | position

the same order for stable ties, at 2.5x numpy's speed for 64-bit values (`_compact_order`).

Two builds of the same keys: numpy for CPU tensors, torch for the rest. numpy's SIMD sort of values takes
~0.1 ms at 256 x 100 here against ~1 ms for torch.sort's values and indices; but in the smallest batches a
call's time is its count of ops, and a dozen numpy calls among torch's cost more than four torch ops, so CPU
batches under SMALL_ORDER_MAX_ELEMENTS documents with stable ties take one torch sort of float64 keys
(`small_stable_order`). Random tie bits: numpy's PCG64, at a state drawn from the seed; the torch build hashes
(seed, document index) with plain integer ops instead of drawing from a torch.Generator, because a CUDA graph
cannot capture a draw from a generator it does not own (the seed, a host integer, is captured, and replays
repeat the captured order, as in the kernel). The kernel hashes the same bits, so on CUDA its int64 keys and
the pre-pass of its longer rows draw one order (its int32 keys keep 16 of the bits). The random order differs
between the numpy and torch builds; each is reproducible from the seed.
"""

import functools
import threading
import time

import numpy as np
import torch

KEY_SHIFT = 31  # bits below the key: random tie bits, then the position
SIGN_BIT = -(2 ** 31)  # int32 with only the top bit set
FLOAT32_INF_BITS = 0x7F800000  # +inf's bits; finite non-negative floats' are below
# Random tie bits a compact (32-bit) key keeps at least: 1 in 4096 that two tied documents draw the same
# and keep their input order, as wide keys have at rows of 2^20 documents.
COMPACT_TIE_BITS = 12
# Shorter rows keep the wide keys: there the sort is a few us a row either way, less than the dozen numpy calls
# that check whether the compact keys fit (64 x 240: 0.74-0.87x with them, 256 x 500: 1.25-1.67x, graded labels).
COMPACT_MIN_LENGTH = 512
# numpy (x86-simd-sort) sorts up to this many 64-bit values with a sorting network in registers; longer arrays it
# first partitions with AVX-512 compress stores, which some CPUs run slowly (AMD Zen 4: 8 ns a value at 512, 12
# at 1000, against 1.9 at 256).
NETWORK_SORT_MAX = 256
# CPU batches of fewer documents than this take stable ties from `small_stable_order`: at 16 x 10 a block's
# numpy order cost about 60 us inside a call (its dozen numpy calls among torch's), four torch ops about 25.
# The two meet between 2048 and 4096 documents (graded labels); from 2048 on the numpy order is kept.
SMALL_ORDER_MAX_ELEMENTS = 2048


def index_bits(length: int) -> int:
    """Bits that hold a position in [0, length)."""
    return max(1, (length - 1).bit_length())


def unsigned_order_bits_(bits):
    """In place: float32 bit patterns (int32; torch or numpy) -> bits that, read as uint32, sort as the floats.

    Non-negative floats get the sign bit set; negative floats, which order backwards as integers,
    get all their bits flipped. NaN with the sign bit clear sorts above +inf.
    """
    bits ^= (bits >> 31) | SIGN_BIT
    return bits


def _mul32(x, constant: int):
    """(x * constant) mod 2^32 for int64 x in [0, 2^32), in two 16-bit halves so nothing overflows int64."""
    high = (x * (constant >> 16)).bitwise_and_(0xFFFF).bitwise_left_shift_(16)
    return (x * (constant & 0xFFFF)).add_(high).bitwise_and_(0xFFFFFFFF)


def _hash32(x):
    """A 32-bit integer hash (Wellons' lowbias32) of int64 x in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x ^= x >> 15
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def hashed_tie_bits(batch: int, length: int, seed: int, width: int, device, first_row: int = 0) -> torch.Tensor:
    """(B, L) int64 of `width` random bits a document, a function of (seed, row * L + column) only, rows
    counted from `first_row`."""
    index = torch.arange(first_row * length, (first_row + batch) * length, device=device).view(batch, length)
    seed_bits = int(_hash32(torch.tensor(seed & 0xFFFFFFFF)))  # a CPU scalar: no device sync
    key = _hash32((index & 0xFFFFFFFF) ^ seed_bits)
    key = _hash32(key ^ (index >> 32))  # rows past 2^32 documents
    return key >> (32 - width)


def torch_target_order(labels, real, random_ties: bool, seed: int, first_row: int = 0) -> torch.Tensor:
    """target_order in torch ops (any device)."""
    # Descending labels = ascending -labels; 0.0 - x turns both zeros into +0.0, so they tie.
    key = unsigned_order_bits_((0.0 - labels.to(torch.float32)).view(torch.int32))
    key.bitwise_or_(real.to(torch.int32).sub_(1))  # padding: all 32 bits set
    if not random_ties:
        # torch.sort returns the positions anyway, and a stable sort breaks ties by them: the 32-bit key
        # alone (flipped to signed order) gives the same order as the packed int64, with half the key.
        return torch.sort(key.bitwise_xor_(SIGN_BIT), dim=1, stable=True).indices
    batch, length = labels.shape
    bits = index_bits(length)
    packed = key.to(torch.int64).bitwise_and_(2 ** 32 - 1).bitwise_left_shift_(KEY_SHIFT)
    packed.bitwise_or_(torch.arange(length, device=labels.device))
    tie_bits = hashed_tie_bits(batch, length, seed, KEY_SHIFT - bits, labels.device, first_row)
    packed.bitwise_or_(tie_bits.bitwise_left_shift_(bits))
    return torch.sort(packed, dim=1).values.bitwise_and_((1 << bits) - 1)


_THREAD_STREAMS = threading.local()
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """Steele, Lea and Flood's SplitMix64 finaliser of x + the golden gamma, on Python integers."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _seeded_stream(seed: int):
    """This thread's PCG64 set to a state drawn from seed by SplitMix64. np.random.PCG64(seed) hashes its seed
    through a SeedSequence: ~8 us with warm caches, 47 us inside a 64 x 100 call with random ties, more than
    drawing the batch's bits. One generator a thread, so concurrent calls never share a state."""
    stream = getattr(_THREAD_STREAMS, "pcg64", None)
    if stream is None:
        stream = _THREAD_STREAMS.pcg64 = np.random.PCG64(0)
    low = _splitmix64(seed)
    high = _splitmix64(low)
    stream.state = {"bit_generator": "PCG64", "state": {"state": high << 64 | low, "inc": _splitmix64(high) | 1},
                    "has_uint32": 0, "uinteger": 0}
    return stream


def _random_words(batch: int, length: int, seed: int, first_row: int):
    """(B, L) uint32: the raw stream of a seeded PCG64, 32 bits a document, from document first_row * L on
    (numpy's ranged integers cost twice as much)."""
    stream = _seeded_stream(seed).advance(first_row * length // 2)  # two documents a 64-bit draw
    return stream.random_raw((batch * length + 1) // 2).view(np.uint32)[:batch * length].reshape(batch, length)


def sort_rows_(values, in_runs: bool | None = None) -> None:
    """Sorts each row of a 2-D numpy array in place: by numpy's quicksort, or (in_runs) as runs of at most
    NETWORK_SORT_MAX values each sorted by a network, then merged by numpy's stable sort (a timsort, which takes
    the sorted runs as they are and only merges them). in_runs None: whichever `sort_in_runs` found faster here
    (asked only for rows longer than a network sorts)."""
    batch, length = values.shape
    if length > NETWORK_SORT_MAX and (sort_in_runs() if in_runs is None else in_runs):
        runs = -(-length // NETWORK_SORT_MAX)
        run = length // runs  # runs of equal length (a reshape), and fewer than `runs` values left over
        values[:, :runs * run].reshape(batch, runs, run).sort(axis=2)
        values.sort(axis=1, kind="stable")
    else:
        values.sort(axis=1)


@functools.cache
def sort_in_runs() -> bool:
    """Whether `sort_rows_` is faster in runs here: timed once a process on random 64-bit values, rows of 1024
    (the better of three interleaved rounds each). The order is the same either way; only the time differs (AMD
    Zen 4: 12.3 against 8.8 ns a value at 1000; on CPUs whose compress stores are fast, quicksort is the faster)."""
    values = np.random.default_rng(0).integers(0, 2 ** 62, (32, 1024))
    best = {False: float("inf"), True: float("inf")}
    for _ in range(3):
        for in_runs in best:
            trial = values.copy()
            start = time.perf_counter()
            sort_rows_(trial, in_runs)
            best[in_runs] = min(best[in_runs], time.perf_counter() - start)
    return best[True] < best[False]


def _wide_order(values, real, words, bits: int):
    """(b, L) int64 positions in target order from the packed int64 keys (module docstring); any labels."""
    negated = np.subtract(np.float32(0.0), values, dtype=np.float32)
    key = unsigned_order_bits_(negated.view(np.int32))
    key |= np.subtract(real.view(np.uint8), 1, dtype=np.int32)  # padding: all 32 bits set
    packed = np.left_shift(key.view(np.uint32), KEY_SHIFT, dtype=np.int64)  # widened and shifted in one pass
    low = np.arange(values.shape[1], dtype=np.uint32)
    if words is not None:  # the top 31 - bits bits of each word: random tie bits above the position
        low = (words >> 1) & np.uint32(2 ** KEY_SHIFT - 2 ** bits) | low
    packed |= low
    sort_rows_(packed)
    packed &= (1 << bits) - 1
    return packed


def _compact_fields(label_bits, real, bits: int, random_ties: bool):
    """Per row, where its keys fit 32 bits: (fits (b,) bool, shift, top, key_bits (b, 1) int32).

    A row whose real labels are finite, >= 0 and few-bit (graded relevance 0-4 or 0/1, halves, ...) orders
    them as the integers label_bits >> shift, shift the trailing zero bits all its real labels share. Each of
    those is at most top = (OR of the row's label bits) >> shift, so the key top - that integer takes key_bits
    bits, with all ones left for padding. It fits where key_bits + position bits, plus at least COMPACT_TIE_BITS
    random tie bits, make 32. Rows of continuous labels fail on the width, before the min and max are read.
    """
    row_bits = label_bits & -real.view(np.int8)  # padding -> 0: changes no row's OR, min or max below
    common = np.bitwise_or.reduce(row_bits, axis=1, keepdims=True)
    shift = np.maximum(np.frexp(common & -common)[1] - 1, 0)  # trailing zeros (frexp's exponent is exact)
    top = common >> shift
    key_bits = np.frexp(top + 1)[1]  # bits of top + 1: the padding's all-ones key lies above every real key
    fits = key_bits[:, 0] + (bits + (COMPACT_TIE_BITS if random_ties else 0)) <= 32
    if fits.any():  # -0.0, negative, infinite or NaN labels do not fit
        fits &= (row_bits.min(1) >= 0) & (row_bits.max(1) < FLOAT32_INF_BITS)
    return fits, shift, top, key_bits


def _compact_order(label_bits, real, words, bits: int, shift, top, key_bits):
    """(b, L) int64 positions in target order from packed uint32 keys, for rows that `_compact_fields` fit:

        packed = (top - label_bits >> shift) << (32 - key_bits) | tie_bits << bits | position   (padding: key all ones)

    The tie bits are the top 32 - key_bits - bits bits of the wide keys' (the same words): the two orders differ
    only where two tied documents share those, which the wide keys might still separate. Stable ties with keys of
    at most 16 bits need no packing: numpy's stable argsort of 16-bit integers is a radix sort, which keeps input
    order among ties (1024 x 1000: 4.5 ms, against 6.9 for the packed sort, its mask and widening; ad hoc).
    """
    key = top - (label_bits >> shift)
    key |= np.subtract(real.view(np.uint8), 1, dtype=np.int32)  # padding: all ones, shifted into the key field
    if words is None and key_bits.max() <= 16:
        return np.argsort(key.astype(np.uint16), axis=1, kind="stable")  # padding: 0xFFFF > top
    packed = key.view(np.uint32) << (32 - key_bits).astype(np.uint32)
    packed |= np.arange(label_bits.shape[1], dtype=np.uint32)
    if words is not None:
        tie_bits = (32 - key_bits - bits).astype(np.uint32)
        packed |= (words >> (32 - tie_bits)) << np.uint32(bits)
    packed.sort(axis=1)
    packed &= np.uint32((1 << bits) - 1)
    return packed.astype(np.int64)


def numpy_target_order(labels, real, random_ties: bool, seed: int, first_row: int = 0) -> torch.Tensor:
    """target_order in numpy (CPU tensors only): the keys of torch_target_order, in 32 bits where they fit.

    Rows of few-bit labels (`_compact_fields`) sort packed uint32 keys, the others int64: numpy sorts 32-bit
    values 2.5x faster (1024 x 1000: 5.0 against 12.6 ms). Each row's keys depend on that row alone, so a batch
    taken in blocks gets the order it gets whole. first_row * L must be even: the tie bits are the stream's
    32-bit halves from that document on.
    """
    batch, length = labels.shape
    bits = index_bits(length)
    values = labels.detach().to(torch.float32).numpy()
    real = real.numpy()
    words = _random_words(batch, length, seed, first_row) if random_ties else None
    if length < COMPACT_MIN_LENGTH:
        return torch.from_numpy(_wide_order(values, real, words, bits))
    label_bits = values.view(np.int32)
    fits, shift, top, key_bits = _compact_fields(label_bits, real, bits, random_ties)
    if fits.all():
        return torch.from_numpy(_compact_order(label_bits, real, words, bits, shift, top, key_bits))
    if not fits.any():
        return torch.from_numpy(_wide_order(values, real, words, bits))
    order = np.empty((batch, length), dtype=np.int64)
    rows = fits.nonzero()[0]
    order[rows] = _compact_order(label_bits[rows], real[rows], None if words is None else words[rows], bits,
                                 shift[rows], top[rows], key_bits[rows])
    rows = (~fits).nonzero()[0]
    order[rows] = _wide_order(values[rows], real[rows], None if words is None else words[rows], bits)
    return torch.from_numpy(order)


def small_stable_order(labels, real) -> torch.Tensor:
    """target_order with stable ties in four torch ops: one stable descending sort of float64 keys, each real
    label's float32 value (-inf raised to -1e300, still below every float32) and -inf at padding, so that padding
    comes last and in input order. -0.0 and +0.0 compare equal, as the packed keys make them."""
    if labels.dtype != torch.float32:
        labels = labels.to(torch.float32)
    key = torch.where(real, labels.to(torch.float64).clamp_min_(-1e300), float("-inf"))
    return torch.sort(key, dim=1, descending=True, stable=True).indices


def target_order(labels, real, random_ties: bool, seed: int, first_row: int = 0) -> torch.Tensor:
    """(B, L) int64: the positions of each row in target order, real documents first.

    labels: (B, L) bool, integer or float16/bfloat16/float32/float64, compared as float32; real: (B, L) bool.
    first_row: where these rows start in the batch (an even row where L is odd), so that a batch taken in
    blocks of rows gets the random tie order it gets whole.
    """
    if labels.is_cpu:
        if not random_ties and labels.numel() < SMALL_ORDER_MAX_ELEMENTS:
            return small_stable_order(labels, real)
        return numpy_target_order(labels, real, random_ties, seed, first_row)
    return torch_target_order(labels, real, random_ties, seed, first_row)
