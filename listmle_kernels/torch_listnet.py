"""The PyTorch backend of ListNet: one pass over each row, exact (max-shifted), O(B*L).

Per row, over its real documents, with target p = softmax(labels) (a label of -inf has probability 0):

    loss   = -sum_j p_j log softmax(s)_j = -sum_j p_j ((s_j - m) - log sum_t exp(s_t - m)),   m = max_t s_t
    dloss/ds_j = softmax(s)_j - p_j

Both come from torch's own log_softmax and softmax over the real entries (the others -inf), which shift by the
row's max, so neither overflows. Terms with p_j = 0 are left out, so a real score of -inf costs nothing where its
label is -inf too. A row with no real document (every entry -inf: its softmaxes are NaN): loss 0, gradient 0.
A NaN or +inf real score makes its row's softmax NaN, its loss and real gradient NaN, its padding's gradient 0.

Why it is written as it is: on a CPU a small batch (16 x 10) costs what its operator calls cost, a few
microseconds each whatever they compute, so each elementwise pass here is one the result needs, and the fills
are 0-d tensors made once (a Python float is wrapped into a tensor at every call).
"""

import functools

import torch

from .inputs import ListNetInputs
from .numerics import accumulator_dtype

# Fills and bounds as 0-d CPU tensors: a scalar operand on any device, taking the other operand's dtype, where a
# Python number would be wrapped into a tensor (and for a float32 operand, converted) at every call
MINUS_INF, ZERO = torch.tensor(float("-inf")), torch.tensor(0.0)


@functools.lru_cache(maxsize=64)
def _scalar(value: float, dtype: torch.dtype) -> torch.Tensor:
    """`value` as a 0-d CPU tensor of `dtype`, made once (see MINUS_INF)."""
    return torch.tensor(value, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _positions(length: int, device: torch.device) -> torch.Tensor:
    """arange(length) on `device`, made once per length: compared with lengths at every call, never written."""
    return torch.arange(length, device=device)


def _real_mask(scores, mask, lengths):
    """(B, L) bool, True at real documents, or None when every document is real."""
    if mask is not None:
        return mask
    if lengths is not None:
        return _positions(scores.shape[1], scores.device) < lengths.unsqueeze(1)
    return None


def _padding_may_be_nan(real, lengths, row_loss):
    """Whether softmax(s) may be NaN at some row's padding, so its gradient there needs clearing: a row with no
    real document (its softmaxes are NaN throughout), or a row holding a NaN or +inf real score (its softmax is
    NaN throughout, the padding's -inf included; its loss then is NaN too, as every checked row has a p_j > 0).
    Asked only on the CPU, where reading the answer costs no device sync; elsewhere the answer is taken as yes."""
    if not real.is_cpu:
        return True
    # a length below 0 is checked by validate=True; unchecked, it is an empty row too
    empty = int(lengths.min()) <= 0 if lengths is not None else not bool(real.any(1).all())
    return empty or not bool(torch.isfinite(row_loss).all())


def torch_listnet(inputs: ListNetInputs, row_divisor: int, need_grad: bool):
    """(row_loss (B,) in the accumulator dtype, grad of sum(row_loss) / row_divisor in the scores' dtype, or None)."""
    scores, labels = inputs.scores, inputs.labels  # read only: the ops below build no graph in the callers
    dtype = scores.dtype
    acc = accumulator_dtype(dtype)
    # int64: torch neither compares uint16/32/64 with the int64 positions nor takes their min (a no-op for int64)
    lengths = inputs.lengths.long() if inputs.lengths is not None else None
    real = _real_mask(scores, inputs.mask, lengths)
    if real is not None:
        scores, labels = torch.where(real, scores, MINUS_INF), torch.where(real, labels, MINUS_INF)
    log_prob = torch.log_softmax(scores, 1, dtype=acc)
    target = torch.softmax(labels, 1, dtype=acc)
    # p_j > 0: False at padding, at -inf labels, and across a row with no real document (NaN)
    row_loss = torch.where(target > ZERO, target * log_prob, ZERO).sum(1).neg_()
    if not need_grad:
        return row_loss, None
    # softmax(s) - p, each entry exact to the rounding of q_j and p_j: a second softmax rather than exp(log_prob),
    # one fused pass where torch.exp is slower through the padding's -inf. (torch's backward of log_softmax would
    # fold the divisor in, one pass fewer, but subtracts q_j * sum(p), and sum(p) is 1 only to the rounding of a
    # sum over the row, an error that grows with its length.)
    grad = torch.softmax(scores, 1, dtype=acc).sub_(target)  # 0 at padding: 0 - 0
    if row_divisor != 1:
        grad.div_(_scalar(row_divisor, acc))
    if real is not None and _padding_may_be_nan(real, lengths, row_loss):
        grad = torch.where(real, grad, ZERO)
    return row_loss, grad if dtype == acc else grad.to(dtype)
