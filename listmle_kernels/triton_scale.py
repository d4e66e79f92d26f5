"""The backward of the fused loss on the Triton backend: grad_output times the saved gradient, in place.

Forward already wrote d(loss)/d(scores) with the reduction folded in, so backward only multiplies by
grad_output: a scalar for "mean"/"sum", one value a row for "none". It is 1 in the common case
(`loss.backward()`), and then the multiply is skipped on the device: each program reads its scale and
returns without touching the gradient, so a training step moves the scores and the gradient once, no
host synchronisation needed (CUDA graphs capture it).
"""

import torch
import triton
import triton.language as tl

from ._launch import cdiv, next_power_of_2, on_device_of
from .triton_common import COMPILE_OPTIONS

TILE = 4096  # gradient elements per program: ROWS rows x COLS columns


@triton.jit
def _scale_rows_kernel(grad_ptr, scale_ptr, stride_scale, B, L,
                       PER_ROW: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.program_id(1) * COLS + tl.arange(0, COLS)
    row_ok = rows < B
    rows64 = rows.to(tl.int64)
    if PER_ROW:  # one scale a row, read once per row of the tile (no per-element row index)
        scale = tl.load(scale_ptr + rows64 * stride_scale, mask=row_ok, other=1.0)
        differs = tl.sum((scale != 1.0).to(tl.int32), axis=0) > 0
        scale = scale[:, None]
    else:
        scale = tl.load(scale_ptr)
        differs = scale != 1.0  # NaN differs too, and propagates
    if differs:
        offs = rows64[:, None] * L + cols[None, :]
        inside = row_ok[:, None] & (cols < L)[None, :]
        grad = tl.load(grad_ptr + offs, mask=inside)
        # In grad_output's precision (float32, or float64 for float64 scores), then back to the gradient's.
        tl.store(grad_ptr + offs, (grad.to(scale.dtype) * scale).to(grad_ptr.dtype.element_ty), mask=inside)


def tile_shape(batch: int, length: int) -> tuple[int, int]:
    """(rows, cols) of one program's tile: whole short rows, TILE elements at most."""
    cols = min(next_power_of_2(length), TILE)
    return min(TILE // cols, next_power_of_2(batch)), cols


def scale_rows_(grad: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """grad (B, L), contiguous, times scale ((B,) one per row, or a 0-d scalar), in place; returns grad."""
    if not grad.is_contiguous():
        raise ValueError(f"scale_rows_ needs a contiguous gradient, got strides {grad.stride()}")
    batch, length = grad.shape
    if grad.numel() == 0:
        return grad
    per_row = scale.dim() == 1
    rows, cols = tile_shape(batch, length)
    with on_device_of(grad):
        _scale_rows_kernel[(cdiv(batch, rows), cdiv(length, cols))](
            grad, scale, scale.stride(0) if per_row else 0, batch, length,
            PER_ROW=per_row, ROWS=rows, COLS=cols, num_warps=8, **COMPILE_OPTIONS,
        )
    return grad
