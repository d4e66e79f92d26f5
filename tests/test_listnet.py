"""ListNet against the literal oracle (reference.listnet_reference): loss, gradient, every option, any scale."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from listmle_kernels import ListNetFunction, ListNetLoss, listnet_loss
from reference import listnet_reference

from cases import (BACKENDS, DEVICE, GRAD_TOL, LOSS_TOL, assert_close, assert_matches_oracle, loss_and_grad,
                   pairwise_problems, to_device)


def check_against_reference(scores, labels, kwargs, backend, grad_output):
    assert_matches_oracle(listnet_loss, listnet_reference, scores, labels, kwargs, backend, grad_output)


@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=pairwise_problems(max_length=40, listnet=True), grad_seed=st.integers(0, 1000))
def test_loss_and_gradient_match_reference(backend, problem, grad_seed):
    scores, labels, kwargs = to_device(*problem)
    shape = (scores.shape[0],) if kwargs["reduction"] == "none" else ()
    grad_output = torch.rand(shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64) + 0.5
    check_against_reference(scores, labels, kwargs, backend, grad_output.to(scores.device))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("offset", [0.0, 1e4, -1e6, -1e20, 1e30])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_far_from_zero_and_with_wide_spans(backend, offset, dtype):
    """Max-shifted softmaxes: rows offset far from 0 and rows spanning thousands keep their loss and gradient
    (an unshifted exp would overflow to inf or underflow to 0)."""
    gen = torch.Generator().manual_seed(int(abs(offset)) % 1000)
    noise = torch.randn(3, 12, generator=gen, dtype=torch.float64) * torch.tensor([[1.0], [30.0], [1e3]])
    scores = (offset + noise).to(dtype)
    labels = torch.randn(3, 12, generator=gen) * torch.tensor([[1.0], [50.0], [1e3]])
    scores, labels, kwargs = to_device(scores, labels, dict(lengths=torch.tensor([12, 7, 1]), reduction="none"))
    if offset == 1e30 and dtype == torch.float32:  # the noise rounds away at 1e30: only the scale of the row is kept
        scores = torch.full_like(scores, offset) + torch.arange(12, device=scores.device) * 1e24
    check_against_reference(scores, labels, kwargs, backend, torch.rand(3, dtype=torch.float64,
                                                                          device=scores.device) + 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_minus_inf_labels_and_empty_rows(backend):
    """A label of -inf has target probability 0 (so a real score of -inf there costs nothing); a row without a real
    document has loss 0 and gradient 0."""
    inf = float("inf")
    scores = torch.tensor([[1.0, -inf, 0.5, 2.0], [0.0, 1.0, 2.0, 3.0]], device=DEVICE, requires_grad=True)
    labels = torch.tensor([[1.0, -inf, -inf, 0.0], [1.0, 1.0, 1.0, 1.0]], device=DEVICE)
    loss = listnet_loss(scores, labels, lengths=torch.tensor([4, 0], device=DEVICE), reduction="none", backend=backend)
    # the oracle's empty row is scores.sum() * 0, NaN beside an infinite score: row 0 alone
    ref = listnet_reference(scores.detach()[:1].double(), labels[:1].double(), reduction="none")
    torch.testing.assert_close(loss[:1].double(), ref.to(loss.device), rtol=2e-6, atol=2e-6)
    assert loss[1] == 0
    loss.sum().backward()
    assert torch.isfinite(scores.grad).all() and (scores.grad[1] == 0).all() and scores.grad[0, 1] == 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_padding_kinds_and_empty_rows(backend, dtype):
    """A mask with an empty row and holes, lengths with an empty row, and no padding at all: each against the
    oracle, in every reduction (the empty rows' NaN softmaxes never reach the loss or the gradient)."""
    gen = torch.Generator().manual_seed(7)
    scores = (torch.randn(4, 9, generator=gen) * 3).to(dtype)
    labels = torch.randn(4, 9, generator=gen)
    labels[0, 2] = float("-inf")
    mask = torch.rand(4, 9, generator=gen) < 0.6
    mask[1] = False
    mask[0, 0] = True
    for padding in (dict(mask=mask), dict(lengths=torch.tensor([9, 0, 4, 1])), {}):
        for reduction in ("mean", "sum", "none"):
            kwargs = dict(padding, reduction=reduction)
            grad_output = torch.rand((4,) if reduction == "none" else (), generator=gen, dtype=torch.float64) + 0.5
            check_against_reference(*to_device(scores, labels, kwargs), backend, grad_output.to(DEVICE))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch_matches_reference(backend, reduction):
    """A batch of no rows: "mean" is the mean of no row losses, NaN as in torch (and ListMLE, and
    sentence-transformers' cross-entropy); "sum" 0; "none" (0,). The gradient is (0, L)."""
    scores = torch.zeros(0, 5, device=DEVICE, requires_grad=True)
    labels = torch.zeros(0, 5, device=DEVICE)
    loss = listnet_loss(scores, labels, reduction=reduction, backend=backend)
    ref = listnet_reference(scores.detach().double(), labels.double(), reduction=reduction)
    assert loss.dtype == torch.float32 and loss.shape == ref.shape
    torch.testing.assert_close(loss.detach().double().cpu(), ref.cpu(), rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(loss).all() if reduction == "mean" else (loss == 0).all()
    loss.sum().backward()
    assert scores.grad.shape == (0, 5)

INTEGER_DTYPES = [torch.int8, torch.uint8, torch.int16, torch.uint16, torch.int32, torch.uint32, torch.int64,
                  torch.uint64]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths_dtype", INTEGER_DTYPES)
def test_lengths_of_every_integer_dtype(backend, lengths_dtype):
    """lengths may be any integer tensor, the unsigned 16-64-bit ones too (which torch will not promote against
    int64 positions): loss and gradient as the oracle's, the empty row's 0."""
    gen = torch.Generator().manual_seed(9)
    scores = torch.randn(3, 7, generator=gen, device=DEVICE)
    labels = torch.randn(3, 7, generator=gen).to(DEVICE)
    lengths = torch.tensor([7, 3, 0], device=DEVICE)
    loss, grad = loss_and_grad(lambda s: listnet_loss(s, labels, lengths=lengths.to(lengths_dtype),
                                                      reduction="none", backend=backend), scores)
    ref_loss, ref_grad = loss_and_grad(lambda s: listnet_reference(s, labels, lengths=lengths, reduction="none"),
                                       scores.double())
    assert_close(loss, ref_loss, torch.float32, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, torch.float32, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))
    assert loss[2] == 0 and (grad[1, 3:] == 0).all() and (grad[2] == 0).all()

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck(reduction):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = torch.randn(3, 7, dtype=torch.float64, generator=gen)
    mask = torch.rand(3, 7, generator=gen) > 0.25
    mask[:, 0] = True
    assert torch.autograd.gradcheck(lambda s: listnet_loss(s, labels, mask=mask, reduction=reduction,
                                                           backend="torch"), (scores,))


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_returns_the_saved_gradient_buffer(backend):
    scores = torch.randn(5, 9, device=DEVICE, requires_grad=True)
    labels = torch.randint(0, 4, (5, 9), device=DEVICE)
    expected = torch.autograd.grad(listnet_loss(scores, labels, backend=backend), scores,
                                   torch.tensor(2.5, device=DEVICE))[0]
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.data_ptr()) or t, lambda t: t):
        loss = listnet_loss(scores, labels, backend=backend)
    loss.backward(torch.tensor(2.5, device=DEVICE))
    assert scores.grad.data_ptr() in saved
    torch.testing.assert_close(scores.grad, expected, rtol=0, atol=0)


def test_modules_and_function_call_the_same_loss():
    scores, labels = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(ListNetLoss(reduction="sum")(scores, labels), listnet_loss(scores, labels, reduction="sum"))
    assert torch.equal(ListNetFunction.apply(scores, labels, None, None, "none", True, "torch"),
                       listnet_loss(scores, labels, reduction="none"))
    assert "reduction='mean'" in repr(ListNetLoss())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad_score", [float("nan"), float("inf")])
def test_a_nan_or_inf_score_leaves_the_padding_gradient_zero(backend, bad_score):
    """A NaN or +inf real score makes its row's softmax NaN throughout, the padding's -inf entries included: the
    row's loss and real gradient are NaN, but padding (after the row's end, or a hole in the mask) still gets 0,
    on both backends, and the other rows are untouched."""
    scores = torch.tensor([[0.5, bad_score, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]], device=DEVICE)
    labels = torch.tensor([[1.0, 0.0, 2.0, 0.0], [1.0, 0.0, 2.0, 3.0]], device=DEVICE)
    real = torch.tensor([[True, True, False, True], [True, True, True, False]], device=DEVICE)
    for padding in (dict(lengths=torch.tensor([2, 3], device=DEVICE)), dict(mask=real)):
        s = scores.clone().requires_grad_()
        loss = listnet_loss(s, labels, reduction="none", backend=backend, **padding)
        loss.sum().backward()
        pad = ~(real if "mask" in padding else torch.arange(4, device=DEVICE) < padding["lengths"][:, None])
        assert torch.isnan(loss[0]) and torch.isnan(s.grad[0][~pad[0]]).all()
        assert (s.grad[pad] == 0).all(), s.grad
        ref = listnet_reference(scores[1:].double(), labels[1:].double(),
                                **{name: value[1:] for name, value in padding.items()}, reduction="none")
        torch.testing.assert_close(loss[1].double(), ref[0].to(loss.device), rtol=2e-6, atol=2e-6)
