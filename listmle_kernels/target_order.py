"""The target order when sorting by labels, computed in PyTorch.

Used by the PyTorch backend, and by the Triton backend for rows longer than one block can sort.
It builds the same packed sort key as the kernel, so both backends agree on stable ties:

    key = order-preserving int32 of the float32 label   (padding: INT32_MIN, i.e. last)
    packed = key << 32 | random_bits << index_bits | (L - 1 - position)

Sorting `packed` descending gives labels descending, then (random ties) random bits, then input
order. Every packed value is distinct, so the sort's own stability never matters.
"""

import torch

INT32_MIN = -(2 ** 31)


def order_preserving_int32(labels: torch.Tensor) -> torch.Tensor:
    """Map float32 labels to int32 keys with the same order (-0.0 and 0.0 map to the same key)."""
    x = labels.to(torch.float32)
    x = torch.where(x == 0, torch.zeros_like(x), x)
    bits = x.view(torch.int32)
    # Negative floats order backwards as integers: flip their 31 magnitude bits.
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def index_bits(length: int) -> int:
    """Bits that hold a position in [0, length)."""
    return max(1, (length - 1).bit_length())


def target_order(labels, real, random_ties: bool, seed: int) -> torch.Tensor:
    """(B, L) int64: the positions of each row in target order, real documents first."""
    batch, length = labels.shape
    bits = index_bits(length)
    key = torch.where(real, order_preserving_int32(labels), torch.full_like(real, INT32_MIN, dtype=torch.int32))
    position = torch.arange(length, device=labels.device)
    low = (length - 1 - position).expand(batch, length)
    if random_ties:
        gen = torch.Generator(device=labels.device).manual_seed(seed)
        rand = torch.randint(0, 2 ** (32 - bits), (batch, length), generator=gen, device=labels.device)
        low = low | (rand << bits)
    packed = (key.to(torch.int64) << 32) | low
    return torch.sort(packed, dim=1, descending=True).indices
