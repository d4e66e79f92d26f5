"""The floor tools.sass_count measures the kernel against: ListMLE's simplest case as one small Triton kernel.

Rows given by lengths, input order, plain ListMLE (every weight 1), the linear sums only (no row may span
more than the float32 linear span below its max), fast log and fast division on CUDA, int32 offsets
(B * L < 2^31, contiguous rows). It computes what the package's kernel computes for that case, per-row
losses and the gradient of sum(loss) / row_divisor, with none of its generality: no masks, orders, weights,
chunks, NaN or overflow guards. Compiled at the tile the package's launcher picks, its instruction count is
what any kernel of that tile must at least issue for these sums; `minimal_listmle` runs it (tests compare
it with the oracle under the interpreter). `bare_sort_kernel` is the same kind of floor for sorting by labels.
"""

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from listmle_kernels.triton_common import COMPILE_OPTIONS


@triton.jit(do_not_specialize=["row_divisor"])
def minimal_listmle_kernel(scores_ptr, lengths_ptr, loss_ptr, grad_ptr, B, L, row_divisor,
                           ROWS: tl.constexpr, BLOCK: tl.constexpr, FAST: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK)
    row_ok = rows < B
    length = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
    inside = row_ok[:, None] & (cols < L)[None, :]
    real = cols[None, :] < length[:, None]
    offsets = rows[:, None] * L + cols[None, :]
    s = tl.where(real, tl.load(scores_ptr + offsets, mask=inside), float("-inf"))
    e = tl.exp(s - tl.max(s, axis=1)[:, None])
    suffix = tl.cumsum(e, axis=1, reverse=True)
    if FAST:
        neg_log_prob = libdevice.fast_logf(libdevice.fast_dividef(suffix, e))
        ratio = libdevice.fast_dividef(1.0, suffix)
    else:
        neg_log_prob = tl.log(suffix / e)
        ratio = 1.0 / suffix
    loss = tl.sum(tl.where(real, neg_log_prob, 0.0), axis=1)
    grad = e * tl.cumsum(tl.where(real, ratio, 0.0), axis=1) - real.to(tl.float32)
    tl.store(grad_ptr + offsets, grad * (1.0 / row_divisor), mask=inside)
    tl.store(loss_ptr + rows, loss, mask=row_ok)


def minimal_listmle(scores: torch.Tensor, lengths: torch.Tensor, row_divisor: int = 1, rows: int = 1):
    """(per-row losses, gradient of their sum / row_divisor) of float32 `scores` (B, L) with `lengths` (B,)."""
    batch, length = scores.shape
    scores, lengths = scores.contiguous(), lengths.contiguous()
    loss = torch.empty(batch, dtype=torch.float32, device=scores.device)
    grad = torch.empty_like(scores)
    minimal_listmle_kernel[(-(-batch // rows),)](
        scores, lengths, loss, grad, batch, length, row_divisor,
        ROWS=rows, BLOCK=1 << max(0, length - 1).bit_length(), FAST=scores.is_cuda, **COMPILE_OPTIONS)
    return loss, grad


@triton.jit
def bare_sort_kernel(keys_ptr, out_ptr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """tl.sort of ROWS x BLOCK keys, descending along each row, alone: what sorting by labels in the kernel
    costs at least at a tile with keys of that width (the kernel packs label, tie bits and position in int64)."""
    offsets = (tl.program_id(0) * ROWS + tl.arange(0, ROWS))[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :]
    tl.store(out_ptr + offsets, tl.sort(tl.load(keys_ptr + offsets), dim=1, descending=True))
