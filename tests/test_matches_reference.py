"""Both backends against the literal reference: loss and gradient, every option, every dtype."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from listmle_kernels import listmle_loss
from reference import listmle_reference

from cases import BACKENDS, GRAD_TOL, LOSS_TOL, assert_close, listmle_problems, to_device


def loss_and_grad(fn, scores, grad_output):
    scores = scores.detach().requires_grad_(True)
    loss = fn(scores)
    (grad,) = torch.autograd.grad(loss, scores, grad_output)
    return loss.detach(), grad


@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=listmle_problems(), grad_seed=st.integers(0, 1000))
def test_loss_and_gradient_match_reference(backend, problem, grad_seed):
    scores, labels, kwargs = to_device(*problem)
    expected_shape = (scores.shape[0],) if kwargs["reduction"] == "none" else ()
    grad_output = torch.rand(expected_shape, generator=torch.Generator().manual_seed(grad_seed)) + 0.5
    grad_output = grad_output.to(scores.device)

    loss, grad = loss_and_grad(lambda s: listmle_loss(s, labels, backend=backend, **kwargs), scores,
                               grad_output.float() if scores.dtype != torch.float64 else grad_output.double())
    ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, **kwargs), scores.double(),
                                       grad_output.double())

    assert loss.dtype == (torch.float64 if scores.dtype == torch.float64 else torch.float32)
    assert grad.dtype == scores.dtype
    assert loss.shape == expected_shape
    assert_close(loss, ref_loss, scores.dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, scores.dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))
    real = kwargs.get("mask")
    if real is None and "lengths" in kwargs:
        real = torch.arange(scores.shape[1], device=scores.device)[None, :] < kwargs["lengths"][:, None]
    if real is not None:
        assert (grad[~real] == 0).all(), "padding must get exactly zero gradient"


@given(problem=listmle_problems(dtypes=(torch.float32, torch.float64)))
def test_backends_agree(problem):
    """With stable ties the two backends see the same target order; they agree to rounding."""
    scores, labels, kwargs = to_device(*problem)
    results = [loss_and_grad(lambda s: listmle_loss(s, labels, backend=b, reduction="none",
                                                    **{k: v for k, v in kwargs.items() if k != "reduction"}),
                             scores, torch.ones(scores.shape[0], dtype=torch.float64 if scores.dtype == torch.float64
                                                else torch.float32, device=scores.device))
               for b in BACKENDS]
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert_close(loss_a, loss_b, scores.dtype, LOSS_TOL, scale=max(1.0, loss_b.abs().max().item()))
    assert_close(grad_a, grad_b, scores.dtype, GRAD_TOL)
