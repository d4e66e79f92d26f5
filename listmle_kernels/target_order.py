"""The target order when sorting by labels, computed in PyTorch.

Used by the PyTorch backend, and by the Triton backend for rows longer than one block can sort.
Like the kernel, it sorts one packed int64 key per document, so both backends give the same order
(stable ties: input order):

    key = order-preserving int32 of the float32 label, negated   (padding: INT32_MAX, i.e. last)
    packed = key << 32 | random_bits << index_bits | position

Sorting `packed` ascending gives labels descending, then (random ties) random bits, then input
order. Every packed value is distinct, so only the sorted values are needed: the position is in
their low bits, as in the kernel. Sorting values is what CPUs do fastest (numpy's SIMD sort: ~0.1 ms
for 256 x 100 here, against ~1 ms for torch.sort's values and indices). (The kernel sorts the
unnegated key descending with L - 1 - position in the low bits: the same order.)
"""

import numpy as np
import torch

INT32_MAX = 2 ** 31 - 1


def order_preserving_int32(values: torch.Tensor) -> torch.Tensor:
    """Map float32 values to int32 keys with the same order (-0.0 sorts before 0.0: add 0.0 first)."""
    bits = values.view(torch.int32)
    # Negative floats order backwards as integers: flip their 31 magnitude bits.
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def index_bits(length: int) -> int:
    """Bits that hold a position in [0, length)."""
    return max(1, (length - 1).bit_length())


def sorted_rows(keys: torch.Tensor) -> torch.Tensor:
    """Each row of an int64 tensor sorted ascending (values only)."""
    if keys.device.type == "cpu":
        return torch.from_numpy(np.sort(keys.numpy(), axis=1))
    return torch.sort(keys, dim=1).values


def random_bits(shape, bits: int, seed: int, device) -> torch.Tensor:
    """int64 tensor of uniform integers in [0, 2^bits), reproducible from `seed` on each device type.

    On the CPU numpy's generator draws them (~3x faster than torch.randint at 256 x 100 here).
    """
    if torch.device(device).type == "cpu":
        draw = np.random.default_rng(seed).integers(0, 2 ** bits, size=shape, dtype=np.int64)
        return torch.from_numpy(draw)
    gen = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 2 ** bits, shape, generator=gen, device=device)


def packed_keys(labels, real, random_ties: bool, seed: int) -> torch.Tensor:
    """(B, L) int64 keys whose ascending order per row is the target order (see the module doc)."""
    batch, length = labels.shape
    bits = index_bits(length)
    # Descending labels = ascending -labels; 0.0 - x turns both zeros into +0.0, so they tie.
    key = order_preserving_int32(0.0 - labels.to(torch.float32)).masked_fill_(~real, INT32_MAX)
    packed = key.to(torch.int64).bitwise_left_shift_(32)
    packed.bitwise_or_(torch.arange(length, device=labels.device))
    if random_ties:
        packed.bitwise_or_(random_bits((batch, length), 32 - bits, seed, labels.device).bitwise_left_shift_(bits))
    return packed


def target_order(labels, real, random_ties: bool, seed: int) -> torch.Tensor:
    """(B, L) int64: the positions of each row in target order, real documents first."""
    position_mask = (1 << index_bits(labels.shape[1])) - 1
    return sorted_rows(packed_keys(labels, real, random_ties, seed)).bitwise_and_(position_mask)
