"""The target order when sorting by labels, computed outside the kernel.

Used by the PyTorch backend, and by the Triton backend for rows longer than one block can sort.
It sorts one packed int64 key per document, all of them distinct and >= 0:

    key    = order-preserving int32 of the float32 label, negated, plus 2^31: in [0, 2^32)
    packed = key << 31 | random_bits << index_bits | position      (padding: all 32 key bits set)

Sorting `packed` ascending gives labels descending, then (random ties) random bits, then input
order, padding last. Only the sorted values are needed: the position is in their low bits. With
stable ties this is the kernel's order (the kernel sorts the unnegated key descending with
L - 1 - position in its low bits).

Padding is OR-ed into the key (an arithmetic op) rather than filled in by a mask: masked writes
cost 3-6x more than arithmetic on CPU, in torch and numpy alike.

Two builds of the same keys: numpy for CPU tensors, torch for the rest. On small CPU arrays numpy's
ops cost a fraction of torch's dispatch, and its SIMD sort of values takes ~0.1 ms at 256 x 100 here
against ~1 ms for torch.sort's values and indices. Random tie bits come from each library's own
generator, so the random order differs between the two builds (each is reproducible from the seed).
"""

import numpy as np
import torch

KEY_SHIFT = 31  # bits below the key: random tie bits, then the position
PADDING_KEY = (2 ** 32 - 1) << KEY_SHIFT  # above every real key: only NaN labels reach 2^32 - 1


def index_bits(length: int) -> int:
    """Bits that hold a position in [0, length)."""
    return max(1, (length - 1).bit_length())


def order_preserving_int32(bits):
    """Map float32 bit patterns (as int32; torch or numpy) to int32 keys in the floats' order."""
    # Negative floats order backwards as integers: flip their 31 magnitude bits.
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def torch_target_order(labels, real, random_ties: bool, seed: int) -> torch.Tensor:
    """target_order in torch ops (any device)."""
    batch, length = labels.shape
    bits = index_bits(length)
    # Descending labels = ascending -labels; 0.0 - x turns both zeros into +0.0, so they tie.
    key = order_preserving_int32((0.0 - labels.to(torch.float32)).view(torch.int32))
    packed = key.to(torch.int64).add_(2 ** 31).bitwise_left_shift_(KEY_SHIFT)
    packed.bitwise_or_(torch.arange(length, device=labels.device))
    packed.bitwise_or_((~real).to(torch.int64).mul_(PADDING_KEY))
    if random_ties:
        gen = torch.Generator(device=labels.device).manual_seed(seed)
        draw = torch.randint(0, 2 ** (KEY_SHIFT - bits), (batch, length), generator=gen, device=labels.device)
        packed.bitwise_or_(draw.bitwise_left_shift_(bits))
    return torch.sort(packed, dim=1).values.bitwise_and_((1 << bits) - 1)


def numpy_target_order(labels, real, random_ties: bool, seed: int) -> torch.Tensor:
    """target_order in numpy (CPU tensors only): the same keys as torch_target_order."""
    batch, length = labels.shape
    bits = index_bits(length)
    negated = np.subtract(np.float32(0.0), labels.detach().to(torch.float32).numpy(), dtype=np.float32)
    packed = order_preserving_int32(negated.view(np.int32)).astype(np.int64)
    packed += 2 ** 31
    packed <<= KEY_SHIFT
    packed |= np.arange(length)
    padding = np.logical_not(real.numpy()).astype(np.int64)
    padding *= PADDING_KEY
    packed |= padding
    if random_ties:
        draw = np.random.default_rng(seed).integers(0, 2 ** (KEY_SHIFT - bits), size=(batch, length))
        draw <<= bits
        packed |= draw
    packed.sort(axis=1)
    packed &= (1 << bits) - 1
    return torch.from_numpy(packed)


def target_order(labels, real, random_ties: bool, seed: int) -> torch.Tensor:
    """(B, L) int64: the positions of each row in target order, real documents first.

    labels: (B, L) of any real dtype, compared as float32; real: (B, L) bool.
    """
    if labels.device.type == "cpu":
        return numpy_target_order(labels, real, random_ties, seed)
    return torch_target_order(labels, real, random_ties, seed)
