"""allRank's `listMLE(y_pred, y_true)` as one `listmle_loss` call (the README's allRank line), against allRank.

allRank marks padding with the label -1, sorts by labels after a random column shuffle (random ties),
and averages the row sums: `respect_input_order=False, ties="random"` and the default
reduction. Labels here are distinct, so every tie policy gives the same order and the two must agree.
allRank adds `eps` inside the log; with eps=0 the losses agree to float64 precision, and with its
default 1e-10 the difference is that epsilon's effect alone.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from bench.impls import load_allrank_listmle
from listmle_kernels import listmle_loss

from cases import BACKENDS, DEVICE

PADDED_Y_VALUE = -1.0  # allRank's padding label


@pytest.fixture(scope="module")
def allrank_listmle():
    try:
        return load_allrank_listmle()
    except ImportError as exc:
        pytest.skip(f"allRank is not installed ({exc}); `make install` adds it")


@st.composite
def allrank_batches(draw):
    """(y_pred, y_true) in allRank's layout: float64 scores, distinct labels in [0, 1), -1 at padding."""
    batch, length = draw(st.integers(1, 6)), draw(st.integers(1, 40))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    y_pred = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    labels = torch.rand(batch, length, generator=gen, dtype=torch.float64)
    padded = torch.rand(batch, length, generator=gen) < draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]))
    return y_pred, torch.where(padded, PADDED_Y_VALUE, labels)


def readme_line(y_pred, y_true, backend):
    return listmle_loss(y_pred, y_true, mask=y_true != -1, respect_input_order=False, ties="random",
                        backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@given(batch=allrank_batches())
def test_the_loss_is_allranks_without_its_epsilon(allrank_listmle, backend, batch):
    y_pred, y_true = batch
    ours = readme_line(y_pred.to(DEVICE), y_true.to(DEVICE), backend).cpu()
    torch.testing.assert_close(ours, allrank_listmle(y_pred, y_true, eps=0.0), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@given(batch=allrank_batches())
def test_loss_and_gradient_match_allranks_defaults(allrank_listmle, backend, batch):
    # Scores ~ N(0, 1) over at most 40 documents: every suffix sum after the max shift is >= e^-8, so
    # allRank's eps = 1e-10 inside the log moves each term by < 1e-6.
    y_pred, y_true = batch
    ours_scores = y_pred.to(DEVICE, copy=True).requires_grad_()
    ours = readme_line(ours_scores, y_true.to(DEVICE), backend)
    ours.backward()
    theirs_scores = y_pred.clone().requires_grad_()
    theirs = allrank_listmle(theirs_scores, y_true)
    theirs.backward()
    torch.testing.assert_close(ours.detach().cpu(), theirs.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_scores.grad.cpu(), theirs_scores.grad, rtol=0, atol=1e-5)
