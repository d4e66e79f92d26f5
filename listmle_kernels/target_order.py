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

Two builds of the same keys: numpy for CPU tensors, torch for the rest. On small CPU arrays numpy's
ops cost a fraction of torch's dispatch, and its SIMD sort of values takes ~0.1 ms at 256 x 100 here
against ~1 ms for torch.sort's values and indices. Random tie bits: numpy's seeded PCG64; the torch
build hashes (seed, document index) with plain integer ops instead of drawing from a torch.Generator,
because a CUDA graph cannot capture a draw from a generator it does not own (the seed, a host integer,
is captured, and replays repeat the captured order, as in the kernel). So the random order differs
between the two builds; each is reproducible from the seed.
"""

import numpy as np
import torch

KEY_SHIFT = 31  # bits below the key: random tie bits, then the position
SIGN_BIT = -(2 ** 31)  # int32 with only the top bit set


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


def numpy_target_order(labels, real, random_ties: bool, seed: int, first_row: int = 0) -> torch.Tensor:
    """target_order in numpy (CPU tensors only): the same keys as torch_target_order.

    first_row * L must be even: the tie bits are the stream's 32-bit halves from that document on.
    """
    batch, length = labels.shape
    bits = index_bits(length)
    negated = np.subtract(np.float32(0.0), labels.detach().to(torch.float32).numpy(), dtype=np.float32)
    key = unsigned_order_bits_(negated.view(np.int32))
    key |= np.subtract(real.numpy().view(np.uint8), 1, dtype=np.int32)  # padding: all 32 bits set
    packed = np.left_shift(key.view(np.uint32), KEY_SHIFT, dtype=np.int64)  # widened and shifted in one pass
    low = np.arange(length, dtype=np.uint32)
    if random_ties:
        # The raw stream of a seeded PCG64, 32 bits a document, keeps its top 31 - bits (numpy's ranged
        # integers cost twice as much): random tie bits above the position.
        stream = np.random.PCG64(seed).advance(first_row * length // 2)  # two documents a 64-bit draw
        raw = stream.random_raw((batch * length + 1) // 2).view(np.uint32)[:batch * length]
        low = (raw.reshape(batch, length) >> 1) & np.uint32(2 ** KEY_SHIFT - 2 ** bits) | low
    packed |= low
    packed.sort(axis=1)
    packed &= (1 << bits) - 1
    return torch.from_numpy(packed)


def target_order(labels, real, random_ties: bool, seed: int, first_row: int = 0) -> torch.Tensor:
    """(B, L) int64: the positions of each row in target order, real documents first.

    labels: (B, L) bool, integer or float16/bfloat16/float32/float64, compared as float32; real: (B, L) bool.
    first_row: where these rows start in the batch (an even row where L is odd), so that a batch taken in
    blocks of rows gets the random tie order it gets whole.
    """
    if labels.device.type == "cpu":
        return numpy_target_order(labels, real, random_ties, seed, first_row)
    return torch_target_order(labels, real, random_ties, seed, first_row)
