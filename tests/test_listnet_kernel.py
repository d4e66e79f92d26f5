"""The ListNet kernel (`triton_listnet`, called directly) against the float64 oracle `reference.listnet_reference`.

The oracle takes a softmax over each row's real documents and differentiates with autograd; the kernel writes the
loss and the gradient (softmax(s) - p) / row_divisor in one launch. Small `max_block`s send short rows through the
chunked two-pass path, so the interpreter crosses chunk boundaries at a few dozen slots.
"""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from listmle_kernels.inputs import ListNetInputs
from listmle_kernels.triton_listnet import MAX_BLOCK, row_geometry, triton_listnet
from reference import listnet_reference

from cases import DEVICE, DTYPES, GRAD_TOL, LOSS_TOL

pytest.importorskip("triton")

BLOCKS = (4, 8, 16, MAX_BLOCK)  # 4 and 8: rows past them take the chunked path


def oracle(scores, labels, mask, lengths, row_divisor):
    """Float64 row losses and the gradient of their sum / row_divisor, from the scores as given (rounded)."""
    scores = scores.detach().cpu().double().requires_grad_(True)
    mask = mask.cpu() if mask is not None else None
    lengths = lengths.cpu() if lengths is not None else None
    loss = listnet_reference(scores, labels.cpu(), mask=mask, lengths=lengths, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum() / row_divisor, scores)
    return loss.detach(), grad


def kernel(scores, labels, mask, lengths, row_divisor, need_grad=True, max_block=MAX_BLOCK):
    inputs = ListNetInputs(scores.to(DEVICE), labels.float().to(DEVICE),
                           mask.to(DEVICE) if mask is not None else None,
                           lengths.to(DEVICE) if lengths is not None else None, backend="triton")
    loss, grad = triton_listnet(inputs, row_divisor, need_grad, max_block=max_block)
    return loss.cpu(), grad.cpu() if grad is not None else None


def assert_matches(actual, expected, dtype, tol_table, scale):
    """Within the dtype's tolerance (absolute part times `scale`), NaN exactly where the oracle has NaN."""
    assert torch.equal(actual.isnan(), expected.isnan()), (actual, expected)
    keep = ~expected.isnan()
    tol = tol_table[dtype]
    torch.testing.assert_close(actual[keep].double(), expected[keep], rtol=tol, atol=tol * scale)


def assert_kernel_matches_oracle(scores, labels, mask=None, lengths=None, row_divisor=1, max_block=MAX_BLOCK):
    loss, grad = kernel(scores, labels, mask, lengths, row_divisor, max_block=max_block)
    ref_loss, ref_grad = oracle(scores, labels, mask, lengths, row_divisor)
    dtype = scores.dtype
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert grad.dtype == dtype and grad.shape == scores.shape and grad.is_contiguous()
    for b in range(scores.shape[0]):  # each row to its own scale: a loss of 1e4 beside one of 0.1
        finite = ref_loss[b].isfinite()
        assert_matches(loss[b:b + 1], ref_loss[b:b + 1], dtype, LOSS_TOL,
                       scale=max(1.0, ref_loss[b].abs().item() if finite else 1.0))
    assert_matches(grad, ref_grad, dtype, GRAD_TOL, scale=1.0 / row_divisor)
    # softmax(s) - p lies in [-1, 1]: the stored gradient within 1 / row_divisor (plus its dtype's rounding)
    assert (grad.double().nan_to_num(0.0).abs() <= (1.0 + GRAD_TOL[dtype]) / row_divisor).all()
    return loss, grad


@st.composite
def listnet_problems(draw, max_batch=4, max_length=40, dtypes=DTYPES):
    """(scores, float32 labels, mask or None, lengths or None, row_divisor) of random shape, padding and spread."""
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_length))
    dtype = draw(st.sampled_from(dtypes))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    noise = torch.randn(batch, length, generator=gen, dtype=torch.float64).clamp(-3, 3)
    spread = draw(st.sampled_from(["narrow", "wide", "far", "huge"]))
    if spread == "narrow":
        scores = noise * draw(st.sampled_from([0.1, 1.0, 5.0]))
    elif spread == "wide":  # 1e4 apart within a row: most exp(s - max) underflow to 0
        scores = noise * 1e4
    elif spread == "far":   # far from 0, close together: s - max must not lose the differences
        scores = draw(st.sampled_from([-1e4, 1e4])) + noise
    else:                   # one score per row far above or below the rest
        scores = noise.clone()
        scores[torch.arange(batch), torch.randint(0, length, (batch,), generator=gen)] += \
            draw(st.sampled_from([-1e4, 1e4]))
    scores = scores.to(dtype)
    if draw(st.booleans()):  # strided: column-major storage
        scores = scores.t().contiguous().t()
    label_kind = draw(st.sampled_from(["binary", "graded", "float", "wide"]))
    if label_kind == "float":
        labels = torch.randn(batch, length, generator=gen)
    elif label_kind == "wide":  # label softmax with underflowing terms
        labels = torch.randn(batch, length, generator=gen) * 100
    else:
        labels = torch.randint(0, 2 if label_kind == "binary" else 5, (batch, length), generator=gen).float()
    minus_inf = draw(st.sampled_from([0.0, 0.3]))  # -inf labels at real documents: target probability 0
    labels = labels.masked_fill(torch.rand(batch, length, generator=gen) < minus_inf, float("-inf"))
    mask = lengths = None
    padding = draw(st.sampled_from(["none", "mask", "lengths"]))
    if padding == "mask":  # holes anywhere
        mask = torch.rand(batch, length, generator=gen) < draw(st.sampled_from([0.3, 0.7, 1.0]))
    elif padding == "lengths":
        lengths = torch.randint(0, length + 1, (batch,), generator=gen)
    row_divisor = draw(st.sampled_from([1, batch, 7]))
    return scores, labels, mask, lengths, row_divisor


@given(problem=listnet_problems(), max_block=st.sampled_from(BLOCKS))
def test_matches_oracle(problem, max_block):
    """Every dtype, padding, spread and block size (small ones: several chunks a row)."""
    assert_kernel_matches_oracle(*problem, max_block=max_block)


@given(problem=listnet_problems(max_batch=2, max_length=30, dtypes=(torch.float32, torch.float64)),
       max_block=st.sampled_from(BLOCKS))
def test_loss_without_gradient_is_the_same(problem, max_block):
    """need_grad=False writes no gradient and the same losses, bit for bit."""
    scores, labels, mask, lengths, row_divisor = problem
    with_grad, grad = kernel(scores, labels, mask, lengths, row_divisor, True, max_block)
    without, none = kernel(scores, labels, mask, lengths, row_divisor, False, max_block)
    assert none is None and grad is not None
    assert torch.equal(with_grad.nan_to_num(7.0), without.nan_to_num(7.0))


@given(data=st.data(), length=st.integers(1, 40), max_block=st.sampled_from(BLOCKS))
def test_chunks_do_not_change_the_result(data, length, max_block):
    """The two-pass chunked path and the one-block path agree to float32 rounding on the same row."""
    problem = data.draw(listnet_problems(max_batch=3, max_length=length, dtypes=(torch.float32,)))
    one_loss, one_grad = kernel(*problem, max_block=MAX_BLOCK)
    chunked_loss, chunked_grad = kernel(*problem, max_block=max_block)
    torch.testing.assert_close(chunked_loss, one_loss, rtol=1e-5, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(chunked_grad, one_grad, rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("max_block", [4, MAX_BLOCK])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_without_real_documents_have_loss_and_gradient_zero(dtype, max_block):
    scores = torch.randn(3, 9).to(dtype)
    labels = torch.randn(3, 9)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1] = False
    loss, grad = assert_kernel_matches_oracle(scores, labels, mask=mask, row_divisor=3, max_block=max_block)
    assert loss[1] == 0 and (grad[1] == 0).all()
    loss, grad = assert_kernel_matches_oracle(scores, labels, lengths=torch.tensor([9, 0, 4]), max_block=max_block)
    assert loss[1] == 0 and (grad[1] == 0).all() and (grad[2, 4:] == 0).all()


@pytest.mark.parametrize("max_block", [4, MAX_BLOCK])
def test_minus_inf_labels(max_block):
    """A -inf label at a real document has target probability 0 (gradient softmax(s) there); a row whose real labels
    are all -inf has no target distribution: loss 0 and a NaN gradient, as the oracle's."""
    scores = torch.tensor([[0.5, -1.0, 2.0, 0.0, 1.0, 3.0], [0.5, -1.0, 2.0, 0.0, 1.0, 3.0]])
    labels = torch.tensor([[1.0, float("-inf"), 2.0, float("-inf"), 0.0, float("-inf")],
                           [float("-inf")] * 5 + [4.0]])
    mask = torch.tensor([[True] * 6, [True] * 5 + [False]])  # row 1's only finite label is padding
    loss, grad = assert_kernel_matches_oracle(scores, labels, mask=mask, max_block=max_block)
    softmax = torch.softmax(scores[0], 0)
    torch.testing.assert_close(grad[0, [1, 3, 5]], softmax[[1, 3, 5]])
    assert loss[1] == 0 and grad[1, :5].isnan().all() and grad[1, 5] == 0


@pytest.mark.parametrize("max_block", [8, MAX_BLOCK])
def test_extreme_rows(max_block):
    """Spreads of 1e4 and rows far from 0, in chunks or one block: float32 keeps every digit the oracle has."""
    scores = torch.stack([torch.linspace(-1e4, 1e4, 20), torch.linspace(-2.0, 2.0, 20) + 1e4,
                          torch.linspace(-2.0, 2.0, 20) - 1e4, torch.full((20,), 1e30)])
    labels = torch.stack([torch.linspace(3.0, -3.0, 20), torch.arange(20.0) % 3, -torch.arange(20.0),
                          torch.randn(20, generator=torch.Generator().manual_seed(0))])
    assert_kernel_matches_oracle(scores, labels, row_divisor=4, max_block=max_block)


@pytest.mark.parametrize("length, padding", [(16384, "mask"), (16385, "lengths"), (4097, "none")])
def test_long_rows_match_oracle(length, padding):
    """Rows of several default-size chunks, the last one partial."""
    gen = torch.Generator().manual_seed(length)
    scores = torch.randn(2, length, generator=gen) * 3
    labels = torch.randint(0, 5, (2, length), generator=gen).float()
    mask = torch.rand(2, length, generator=gen) < 0.6 if padding == "mask" else None
    lengths = torch.tensor([length, length // 3]) if padding == "lengths" else None
    assert row_geometry(length)[1] > 1
    assert_kernel_matches_oracle(scores, labels, mask=mask, lengths=lengths, row_divisor=2)


def test_strided_labels_and_integer_lengths():
    """Labels read through any strides (an expanded row), lengths of any integer dtype."""
    scores = torch.randn(3, 12, dtype=torch.float64)
    labels = torch.randn(1, 12).expand(3, 12)
    for lengths in (torch.tensor([12, 5, 0], dtype=torch.int32), torch.tensor([12, 5, 1], dtype=torch.uint8)):
        assert_kernel_matches_oracle(scores, labels, lengths=lengths, row_divisor=3, max_block=4)


def test_empty_shapes():
    for shape in [(0, 5), (3, 0)]:
        scores = torch.zeros(shape)
        loss, grad = kernel(scores, torch.zeros(shape), None, None, 1)
        assert loss.shape == (shape[0],) and (loss == 0).all() and grad.shape == shape


@given(length=st.integers(1, 1 << 20), max_block=st.sampled_from([1, 3, 8, 4096]))
def test_row_geometry_covers_the_row(length, max_block):
    block, chunks = row_geometry(length, max_block)
    assert block & (block - 1) == 0 and block <= max(1, 2 * max_block - 1)
    assert (chunks - 1) * block < length <= chunks * block
