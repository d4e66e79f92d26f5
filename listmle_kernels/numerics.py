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
