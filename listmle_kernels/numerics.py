"""Numerics both backends share: the accumulator dtype, the linear sums' reach, the gradient's scaling.

A leaf: it imports nothing from the package, so every other module may import it.
"""

import torch
from torch import Tensor

# How far below its row's max a real score may lie for the linear sums (both backends), per accumulator
# dtype: exp(-span) and 1 / exp(-span) stay normal numbers (float32: 1.8e-35 / 5.5e34; float64: 1e-261).
LINEAR_SPAN = {torch.float32: 80.0, torch.float64: 600.0}


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for 16/32-bit scores, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def scaled_gradient(grad: Tensor, scale: Tensor) -> Tensor:
    """grad * scale (a 0-d scale, or one a row already shaped (B, 1)) as a new tensor, computed in the
    scale's precision and rounded once into the gradient's dtype: a loss scale of 65536 (GradScaler's
    first) is inf in float16, and a 0-d CUDA operand would otherwise be cast to the gradient's dtype."""
    return (grad.to(scale.dtype) * scale).to(grad.dtype)


# Added to each row's sum of custom lambda weights before dividing by it, as sentence-transformers does.
WEIGHT_SUM_EPSILON = 1e-10


def normalised_rank_weights(weights: Tensor, n_real: Tensor, acc: torch.dtype) -> Tensor:
    """(B, L) custom lambda weights by rank, normalised per row over its real ranks r < n_real[b]:
    w_r / (sum_{t < n} w_t + 1e-10) there, 0 at padded ranks, in the accumulator dtype `acc`.

    Padded ranks are replaced by 0 before any arithmetic, so whatever they hold (NaN, inf) is ignored. Each row
    is divided by M, its largest real weight (or the least normal float, if that is larger), in float64 for
    float64 weights or scores (else float32), and the epsilon with it: (w / M) / (sum(w / M) + 1e-10 / M). Only
    the weights' ratios reach `acc`, so float64 weights past float32's range, and float32 weights whose sum
    overflows, give the loss their ratios give. 1e-10 / M may overflow to inf: then the weights are 0, which is
    what w / (sum + 1e-10) rounds to.
    """
    wide = torch.promote_types(weights.dtype, acc)  # acc is float32 or float64
    positions = torch.arange(weights.shape[1], device=weights.device)
    w = torch.where(positions[None, :] < n_real[:, None], weights.to(wide), 0)
    # At least the least normal float: a row of zeros stays 0, and a subnormal top keeps its ratios exact
    top = w.amax(1, keepdim=True).clamp_min_(torch.finfo(wide).smallest_normal)
    scaled = w.div_(top).to(acc)
    epsilon = (WEIGHT_SUM_EPSILON / top.to(torch.float64)).to(acc)
    return scaled.div_(scaled.sum(1, keepdim=True).add_(epsilon))


# LambdaLoss's gains (2^y - 1) / max(eps, maxDCG) of labels up to this are computed as written. Past it, 2^y
# overflows float32 from y = 128, and maxDCG, a sum of such terms, earlier (two labels of 127 pass float32's
# range, and every gain of the row silently becomes 0); float64 overflows at 1024.
GAIN_EXPONENT_LIMIT = 64


def gain_shift(top_label: Tensor) -> Tensor:
    """The exponent s of the power of two 2^-s that LambdaLoss's gains are scaled by, per row, from the row's
    largest real label clamped at 0 (any shape, float): floor(top) - GAIN_EXPONENT_LIMIT where top is past
    GAIN_EXPONENT_LIMIT, else 0 (the row is computed as written).

    Gains are ratios, G_p = (2^y_p - 1) / max(eps, maxDCG), so multiplying numerator and denominator by 2^-s
    changes nothing: G_p = (2^(y_p - s) - 2^-s) / max(eps 2^-s, sum_q (2^(y_q - s) - 2^-s) / D_q). Then the
    largest term is 2^(top - s) < 2^(GAIN_EXPONENT_LIMIT + 1), and a row's sum stays below L 2^65: finite in
    float32. The scale is an integer power of two, so multiplying by it is exact, and y - s is exact where it
    matters (Sterbenz: y in [s/2, 2s]; a label below s/2 has a gain 2^-(s/2 + 64) of the top one's, far under
    the accumulator's precision). The floor stays exact too: maxDCG >= 2^top - 1 (the top label at position
    0, discount 1), so where s > 0 the floor binds only for eps > 2^65 - 1, and then eps 2^-s is exact (no
    underflow); where eps 2^-s does underflow, eps is far below maxDCG and the floor cannot bind either way.
    """
    return torch.where(top_label > GAIN_EXPONENT_LIMIT, top_label.floor() - GAIN_EXPONENT_LIMIT, 0.0)


def shifted_gains(clamped_labels: Tensor, shift: Tensor) -> Tensor:
    """(2^y - 1) 2^-s = 2^(y - s) - 2^-s of labels already clamped at 0, for the row shift s of `gain_shift`
    (2^y - 1 exactly as written where s = 0)."""
    return torch.exp2(clamped_labels - shift) - torch.exp2(-shift)
