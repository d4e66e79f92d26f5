"""Second derivatives: the fused loss has none, and says so instead of returning zeros.

The gradient is computed in the forward pass, so differentiating it again (Hessians, MAML-style
meta-learning) has nothing to go through. What still holds under create_graph=True: the first
derivative itself, and its derivative with respect to the upstream gradient (per-row weights of
reduction="none"), both from the plain-autograd oracle's first derivatives.
"""

import gc
import weakref

import pytest
import torch
from hypothesis import given

from listmle_kernels import listmle_loss
from reference import listmle_reference

from cases import BACKENDS, DEVICE, listmle_problems, to_device

float64_problems = listmle_problems(max_batch=4, max_length=12, dtypes=(torch.float64,))


@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=float64_problems)
def test_hessian_raises_instead_of_returning_zeros(backend, problem):
    scores, labels, kwargs = to_device(*problem)
    kwargs["reduction"] = "sum"  # hessian needs a scalar
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        torch.autograd.functional.hessian(lambda s: listmle_loss(s, labels, backend=backend, **kwargs), scores)


@pytest.mark.parametrize("retain_graph", [True, False])
@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=float64_problems)
def test_create_graph_keeps_first_derivatives_exact(backend, retain_graph, problem):
    """Under create_graph=True the gradient g of sum_b w_b loss_b equals the oracle's, and so does
    the derivative of sum(g^2) with respect to the per-row weights w, which enter through grad_output
    only: 2 w_b |dloss_b/ds_b|^2."""
    scores, labels, kwargs = to_device(*problem)
    kwargs["reduction"] = "none"
    row_weights = torch.rand(scores.shape[0], dtype=torch.float64, device=DEVICE, requires_grad=True)
    leaf = scores.clone().requires_grad_(True)
    row_loss = listmle_loss(leaf, labels, backend=backend, **kwargs)
    # retain_graph=False frees the loss's graph, but the gradient's own graph is still being built
    (grad,) = torch.autograd.grad((row_loss * row_weights).sum(), leaf, create_graph=True, retain_graph=retain_graph)
    (weights_grad,) = torch.autograd.grad(grad.pow(2).sum(), row_weights)

    leaf = scores.clone().requires_grad_(True)
    (ref_row_grad,) = torch.autograd.grad(listmle_reference(leaf, labels, **kwargs).sum(), leaf)
    torch.testing.assert_close(grad.detach(), ref_row_grad * row_weights.detach()[:, None], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(weights_grad, 2 * row_weights.detach() * ref_row_grad.pow(2).sum(1),
                               rtol=1e-9, atol=1e-10)


def test_scores_changed_in_place_after_forward_still_backpropagate():
    """The scores kept for create_graph are a graph anchor, not saved values: changing them in place
    after the forward (allowed before, since only the gradient is saved) still is."""
    leaf = torch.randn(3, 5, device=DEVICE, requires_grad=True)
    scores = leaf * 1.0
    loss = listmle_loss(scores)
    expected = torch.autograd.grad(listmle_loss(leaf * 1.0), leaf)[0]
    with torch.no_grad():
        scores.add_(1.0)
    loss.backward()
    torch.testing.assert_close(leaf.grad, expected)


def test_scores_are_released_after_backward_while_the_loss_lives():
    """Keeping `loss` (a list of losses for logging) must not keep each step's scores alive, as the
    saved gradient is not: the anchor goes with the graph."""
    leaf = torch.randn(3, 5, device=DEVICE, requires_grad=True)
    scores = leaf * 1.0  # not a leaf: only the loss's node refers to it after `del`
    alive = weakref.ref(scores)
    loss = listmle_loss(scores)
    del scores
    assert alive() is not None
    loss.backward()
    gc.collect()
    assert alive() is None
