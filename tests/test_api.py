"""The public API: modules, the autograd Function, reductions, dtypes, backend selection."""

import pytest
import torch

import listmle_kernels
from listmle_kernels import ListMLEFunction, ListMLELoss, PListMLELoss, listmle_loss

from cases import DEVICE


def problem(seed=0, batch=4, length=6):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, length, generator=gen).to(DEVICE)
    labels = torch.randint(0, 3, (batch, length), generator=gen).to(DEVICE)
    return scores, labels


def test_public_names():
    assert set(listmle_kernels.__all__) == {"listmle_loss", "ListMLELoss", "PListMLELoss", "ListMLEFunction"}


def test_modules_call_the_function():
    scores, labels = problem()
    lengths = torch.tensor([6, 3, 0, 5], device=DEVICE)
    assert torch.equal(ListMLELoss()(scores, lengths=lengths), listmle_loss(scores, lengths=lengths))
    assert torch.equal(PListMLELoss(respect_input_order=False, reduction="none")(scores, labels),
                       listmle_loss(scores, labels, lambda_weight="plistmle", respect_input_order=False,
                                    reduction="none"))
    assert "plistmle" in repr(PListMLELoss())


def test_autograd_function_positional_signature():
    scores, labels = problem()
    scores.requires_grad_(True)
    mask = scores > -1
    loss = ListMLEFunction.apply(scores, labels, mask, None, "plistmle", False, "stable", None, "sum", True, "auto")
    expected = listmle_loss(scores, labels, mask=mask, lambda_weight="plistmle", respect_input_order=False,
                            reduction="sum")
    assert torch.equal(loss, expected)
    loss.backward()
    assert scores.grad.shape == scores.shape


def test_reductions():
    scores, _ = problem()
    rows = listmle_loss(scores, reduction="none")
    assert rows.shape == (4,)
    torch.testing.assert_close(listmle_loss(scores, reduction="sum"), rows.sum())
    torch.testing.assert_close(listmle_loss(scores, reduction="mean"), rows.sum() / 4)


def test_auto_backend_is_torch_on_cpu(monkeypatch):
    from listmle_kernels import torch_listmle
    calls = []
    monkeypatch.setattr(torch_listmle, "torch_listmle", lambda *a: calls.append(a) or (torch.zeros(2), None))
    listmle_loss(torch.zeros(2, 3))
    assert len(calls) == 1


def test_retain_graph_backward_twice():
    scores, _ = problem()
    scores.requires_grad_(True)
    loss = listmle_loss(scores)
    (first,) = torch.autograd.grad(loss, scores, retain_graph=True)
    (second,) = torch.autograd.grad(loss, scores, torch.tensor(2.0))
    torch.testing.assert_close(second, 2 * first)


def test_no_gradient_when_not_needed():
    scores, _ = problem()
    loss = listmle_loss(scores)
    assert not loss.requires_grad


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_scores_give_float32_loss_and_half_gradient(dtype):
    scores = problem()[0].to(dtype).requires_grad_(True)
    loss = listmle_loss(scores)
    loss.backward()
    assert loss.dtype == torch.float32 and scores.grad.dtype == dtype


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_empty_inputs(backend):
    scores = torch.zeros(0, 5, device=DEVICE, requires_grad=True)
    assert listmle_loss(scores, reduction="sum", backend=backend) == 0
    assert listmle_loss(scores, reduction="none", backend=backend).shape == (0,)
    scores = torch.zeros(2, 0, device=DEVICE, requires_grad=True)
    loss = listmle_loss(scores, torch.zeros(2, 0, device=DEVICE), respect_input_order=False,
                        lambda_weight="plistmle", backend=backend)
    loss.backward()
    assert loss == 0 and scores.grad.shape == (2, 0)
