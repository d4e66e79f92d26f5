"""Exact at any scale and any span, whatever the batch: both backends against the stagewise reference.

Rows far from 0 (offsets up to 1e30), rows with far outliers (up to 1e30 from the rest), rows past the linear
sums' reach and rows within it, mixed in one batch: each row's loss and gradient match the float64 oracle to the
tolerances of every other test, scaled by that row's own loss and gradient, and match the same row computed alone.
The oracle takes each rank's term as its own log-softmax (`stagewise=True`), exact at any scale, where
`torch.logcumsumexp` and its backward would not be.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from listmle_kernels import listmle_loss
from reference import listmle_reference

from cases import BACKENDS, DEVICE, GRAD_TOL, LOSS_TOL, SCORE_PLANS, assert_close, extreme_row
from cases import loss_and_grad as loss_and_grad_of

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

DTYPES = (torch.float32, torch.float64, torch.bfloat16)  # float16 cannot hold scores of 1e6


def loss_and_grad(scores, labels, kwargs, backend):
    return loss_and_grad_of(lambda s: listmle_loss(s, labels, reduction="none", backend=backend, **kwargs), scores)


def stagewise_reference(scores, labels, kwargs):
    return loss_and_grad_of(lambda s: listmle_reference(s, labels, reduction="none", stagewise=True, **kwargs),
                            scores.double())


def assert_rows_close(got, want, dtype):
    """Row by row, each to its own scale: a row of losses near 1e30 sets no tolerance for its neighbours."""
    (loss, grad), (ref_loss, ref_grad) = got, want
    for b in range(loss.shape[0]):
        assert_close(loss[b], ref_loss[b], dtype, LOSS_TOL, scale=max(1.0, ref_loss[b].abs().item()))
        assert_close(grad[b], ref_grad[b], dtype, GRAD_TOL, scale=max(1.0, ref_grad[b].abs().max().item()))


@st.composite
def options(draw, batch, length):
    """Labels and the keyword arguments of listmle_loss: lengths, lambda weights, target order."""
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    labels = torch.randint(0, 4, (batch, length), generator=gen)
    kwargs = dict(respect_input_order=draw(st.booleans()))
    if draw(st.booleans()):
        kwargs["lengths"] = torch.randint(0, length + 1, (batch,), generator=gen)
    weight = draw(st.sampled_from(["none", "plistmle", "tensor"]))
    if weight == "plistmle":
        kwargs["lambda_weight"] = "plistmle"
    elif weight == "tensor":
        kwargs["lambda_weight"] = torch.rand(batch, length, generator=gen, dtype=torch.float64)
    return labels, kwargs


def on_device(labels, kwargs):
    return labels.to(DEVICE), {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


@given(data=st.data(), batch=st.integers(1, 5), length=st.integers(1, 24), dtype=st.sampled_from(DTYPES))
def test_extreme_scores_match_the_stagewise_reference(backend, data, batch, length, dtype):
    plans = [data.draw(st.sampled_from(SCORE_PLANS)) for _ in range(batch)]
    scores = torch.stack([data.draw(extreme_row(length, dtype, plan)) for plan in plans])
    labels, kwargs = data.draw(options(batch, length))
    got = loss_and_grad(scores.to(DEVICE), *on_device(labels, kwargs), backend)
    assert_rows_close([t.cpu() for t in got], stagewise_reference(scores, labels, kwargs), dtype)


@given(data=st.data(), length=st.integers(1, 24), neighbours=st.integers(1, 4), dtype=st.sampled_from(DTYPES))
def test_a_row_is_computed_alike_whatever_its_neighbours(backend, data, length, neighbours, dtype):
    """Neighbours drawn to make the batch take the other way to the sums (the kernel chooses per program of packed
    rows): the row's loss and gradient match the same row alone, and the reference."""
    plan = data.draw(st.sampled_from(SCORE_PLANS))
    other = "wide" if plan == "narrow" else "narrow"
    plans = [other] + [data.draw(st.sampled_from(SCORE_PLANS)) for _ in range(neighbours - 1)]
    rows = [data.draw(extreme_row(length, dtype, p)) for p in plans]
    at = data.draw(st.integers(0, neighbours))
    rows.insert(at, data.draw(extreme_row(length, dtype, plan)))
    scores = torch.stack(rows)
    labels, kwargs = data.draw(options(neighbours + 1, length))
    alone_kwargs = {k: v[at:at + 1] if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}

    in_batch = [t[at:at + 1].cpu() for t in loss_and_grad(scores.to(DEVICE), *on_device(labels, kwargs), backend)]
    alone = [t.cpu() for t in loss_and_grad(scores[at:at + 1].to(DEVICE),
                                            *on_device(labels[at:at + 1], alone_kwargs), backend)]
    assert_rows_close(in_batch, [t.double() for t in alone], dtype)
    assert_rows_close(in_batch, stagewise_reference(scores[at:at + 1], labels[at:at + 1], alone_kwargs), dtype)
