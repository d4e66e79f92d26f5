"""The target order when sorting by labels, computed in PyTorch.

Used by the PyTorch backend, and by the Triton backend for rows longer than one block can sort.
It builds the same packed sort key as the kernel, so both backends agree on stable ties:

    key = order-preserving int32 of the float32 label   (padding: INT32_MIN, i.e. last)
    packed = key << 32 | random_bits << index_bits | (L - 1 - position)

Sorting `packed` descending gives labels descending, then (random ties) random bits, then input
order. Every packed value is distinct, so only the sorted values are needed: the position is in
their low bits, as in the kernel. Sorting values is what CPUs do fastest (numpy's SIMD sort: ~0.1 ms
for 256 x 100 here, against ~1 ms for torch.sort's values and indices).
"""

import numpy as np
import torch

INT32_MIN = -(2 ** 31)


def order_preserving_int32(labels: torch.Tensor) -> torch.Tensor:
    """Map float32 labels to int32 keys with the same order (-0.0 and 0.0 map to the same key)."""
    x = labels.to(torch.float32) + 0.0  # IEEE: -0.0 + 0.0 = +0.0, so the two zeros tie
    bits = x.view(torch.int32)
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


def target_order(labels, real, random_ties: bool, seed: int) -> torch.Tensor:
    """(B, L) int64: the positions of each row in target order, real documents first."""
    batch, length = labels.shape
    bits = index_bits(length)
    packed = order_preserving_int32(labels).to(torch.int64).masked_fill_(~real, INT32_MIN).bitwise_left_shift_(32)
    packed.bitwise_or_(torch.arange(length - 1, -1, -1, device=labels.device))  # L - 1 - position
    if random_ties:
        gen = torch.Generator(device=labels.device).manual_seed(seed)
        rand = torch.randint(0, 2 ** (32 - bits), (batch, length), generator=gen, device=labels.device)
        packed.bitwise_or_(rand.bitwise_left_shift_(bits))
    # ~x reverses the order of int64 without overflow: an ascending sort of ~packed is descending.
    descending = sorted_rows(packed.bitwise_not_()).bitwise_not_()
    return (length - 1) - (descending & ((1 << bits) - 1))
