"""Kernel layout: rows longer than one block (the chunked scan, the argsort pre-pass for sorting),
short rows packed several to a program, and any launch configuration."""

from unittest import mock

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import listmle_kernels.triton_listmle as triton_listmle
from listmle_kernels import listmle_loss
from reference import listmle_reference

from cases import (DEVICE, GRAD_TOL, LOSS_TOL, SCORE_PLANS, assert_close, extreme_row, listmle_problems, loss_and_grad,
                   to_device)


def assert_kernel_matches_reference(scores, labels, kwargs):
    loss, grad = loss_and_grad(lambda s: listmle_loss(s, labels, backend="triton", **kwargs), scores)
    ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, **kwargs), scores.double())
    assert_close(loss, ref_loss, scores.dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, scores.dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))


@given(problem=listmle_problems(max_batch=3, max_length=50, dtypes=(torch.float32, torch.float64)))
def test_tiny_blocks_match_reference(problem):
    """Blocks of 8 slots turn every row past 8 into a multi-chunk scan (and sorting into the pre-pass)."""
    scores, labels, kwargs = to_device(*problem)
    with mock.patch.multiple(triton_listmle, MAX_BLOCK=8, SORT_MAX_BLOCK=8, ROW_TILE=16):
        assert_kernel_matches_reference(scores, labels, kwargs)


@given(data=st.data(), batch=st.integers(1, 3), length=st.integers(9, 40),
       dtype=st.sampled_from([torch.float32, torch.float64]), weight=st.sampled_from([None, "plistmle"]),
       sort=st.booleans())
def test_tiny_blocks_keep_extreme_scores_exact(data, batch, length, dtype, weight, sort):
    """Scores far from 0 and far outliers (tests/cases.py's SCORE_PLANS) across chunks: the chunks' carries
    lose nothing either, against the stagewise reference (exact at any scale)."""
    scores = torch.stack([data.draw(extreme_row(length, dtype, data.draw(st.sampled_from(SCORE_PLANS))))
                          for _ in range(batch)])
    labels = torch.randint(0, 4, (batch, length), generator=torch.Generator().manual_seed(length))
    kwargs = dict(lambda_weight=weight, respect_input_order=not sort, reduction="none")
    with mock.patch.multiple(triton_listmle, MAX_BLOCK=8, SORT_MAX_BLOCK=8, ROW_TILE=16):
        loss, grad = loss_and_grad(lambda s: listmle_loss(s, labels.to(DEVICE), backend="triton", **kwargs),
                                   scores.to(DEVICE))
    ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, stagewise=True, **kwargs),
                                       scores.double())
    for b in range(batch):  # each row to its own scale
        assert_close(loss[b].cpu(), ref_loss[b], dtype, LOSS_TOL, scale=max(1.0, ref_loss[b].abs().item()))
        assert_close(grad[b].cpu(), ref_grad[b], dtype, GRAD_TOL, scale=max(1.0, ref_grad[b].abs().max().item()))


def test_chunked_rows_whose_score_span_passes_the_largest_float():
    """A span past the largest float across chunks, and a row far from 0: nothing overflows, nothing is lost."""
    scores = torch.zeros(2, 20)
    # Extremes in different chunks; the max first keeps the loss finite and the reference's gradient exact (after
    # it, e.g. at index 1, float64 autograd absorbs log 2 into 3e38 where the kernel does not).
    scores[0, 0], scores[0, 18], scores[0, 19] = 3e38, -2e38, -3e38
    scores[1] = torch.linspace(-4.0, 4.0, 20) + 1e4  # far from 0, and in log space beside row 0
    with mock.patch.multiple(triton_listmle, MAX_BLOCK=8, SORT_MAX_BLOCK=8, ROW_TILE=16):
        assert_kernel_matches_reference(scores.to(DEVICE), None, dict(reduction="none"))


@given(problem=listmle_problems(max_batch=6, max_length=40), rows=st.sampled_from([1, 2, 4, 16]),
       num_warps=st.sampled_from([1, 2, 4]))
def test_any_launch_config_matches_reference(problem, rows, num_warps):
    """What `python -m tools.tune` may pick (rows packed a program, num_warps) changes no result."""
    scores, labels, kwargs = to_device(*problem)
    with mock.patch.object(triton_listmle, "launch_config", lambda *args: (rows, num_warps)):
        assert_kernel_matches_reference(scores, labels, kwargs)


@given(batch=st.integers(1, 1 << 20), length=st.integers(1, 1 << 17), sort=st.booleans(),
       sm_count=st.sampled_from([0, 1, 108, 132]))
def test_launch_config_keeps_the_gpu_busy(batch, length, sort, sm_count):
    """Powers of two; packing never leaves fewer than two programs per SM when the batch has them."""
    sort_in_kernel, block, chunks = triton_listmle.row_geometry(length, sort)
    rows, num_warps = triton_listmle.launch_config(block, chunks, batch, sort_in_kernel, sm_count)
    assert rows & (rows - 1) == 0 and num_warps & (num_warps - 1) == 0 and 1 <= num_warps <= 16
    assert rows == 1 or (chunks == 1 and rows * block <= triton_listmle.ROW_TILE and rows < 2 * batch)
    if sm_count and rows > 1:
        assert -(-batch // rows) >= 2 * sm_count


@pytest.mark.parametrize("length, kwargs", [
    (65536, dict()),
    (20000, dict(lengths=torch.tensor([20000, 12345]))),
    (5000, dict(lambda_weight="plistmle", respect_input_order=False)),   # sort via the pre-pass
    (triton_listmle.SORT_MAX_BLOCK, dict(respect_input_order=False)),   # the longest in-kernel sort
    (triton_listmle.SORT_MAX_BLOCK + 1, dict(respect_input_order=False)),  # the shortest pre-pass sort
])
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_long_rows_match_reference(backend, length, kwargs):
    gen = torch.Generator().manual_seed(length)
    batch = 2 if "lengths" in kwargs else 1  # interpreted kernels are slow: few long rows
    scores = torch.randn(batch, length, generator=gen).to(DEVICE)
    labels = torch.randint(0, 4, (batch, length), generator=gen).to(DEVICE)
    kwargs = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    loss, grad = loss_and_grad(lambda s: listmle_loss(s, labels, reduction="none", backend=backend, **kwargs),
                               scores)
    ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, reduction="none", **kwargs),
                                       scores.double())
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-5 * ref_grad.abs().max().item())


@pytest.mark.parametrize("batch, length", [(300, 5), (70, 60), (20, 130)])
@pytest.mark.parametrize("sort", [False, True])
def test_many_rows_packed_per_program(batch, length, sort):
    """Short rows are packed several to a program; the last program is partly empty."""
    gen = torch.Generator().manual_seed(batch)
    scores = torch.randn(batch, length, generator=gen).to(DEVICE)
    labels = torch.randint(0, 3, (batch, length), generator=gen).to(DEVICE)
    lengths = torch.randint(0, length + 1, (batch,), generator=gen).to(DEVICE)
    kwargs = dict(lengths=lengths, lambda_weight="plistmle", respect_input_order=not sort, reduction="none")
    loss, grad = loss_and_grad(lambda s: listmle_loss(s, labels, backend="triton", **kwargs), scores)
    ref_loss, ref_grad = loss_and_grad(lambda s: listmle_reference(s, labels, **kwargs), scores.double())
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("real", ["lengths", "uint8 lengths", "mask", "all"])
@pytest.mark.parametrize("sort", [False, True])
def test_plistmle_float32_ranks_past_the_least_normal_weight(real, sort):
    """Float32 p-ListMLE weights of ranks past 125 lie under 2^-126 and the kernel takes them as 0; the counts
    of real documents (from the lengths, or counted) and the ranks (slots, or a running count) still match."""
    gen = torch.Generator().manual_seed(len(real) + sort)
    batch, length = 4, 200
    scores = (torch.randn(batch, length, generator=gen) * 3).to(DEVICE)
    labels = torch.randint(0, 5, (batch, length), generator=gen).to(DEVICE)
    lengths = torch.tensor([200, 127, 2, 1])  # past rank 126, at it, the shortest with a weight, a zero total
    kwargs = dict(lambda_weight="plistmle", respect_input_order=not sort, reduction="none")
    if real == "lengths":
        kwargs["lengths"] = lengths.to(DEVICE)
    elif real == "uint8 lengths":
        kwargs["lengths"] = lengths.to(torch.uint8).to(DEVICE)
    elif real == "mask":
        kwargs["mask"] = (torch.rand(batch, length, generator=gen) < 0.8).to(DEVICE)
    assert_kernel_matches_reference(scores, labels, kwargs)


def test_block_sizes_are_the_documented_ones():
    """The README's numbers: rows past one block of 4096 slots are scanned in chunks (65,536 documents: 16 of them,
    as test_long_rows_match_reference runs); sorting by labels happens in the kernel up to 2048 documents, by the
    PyTorch pre-pass beyond."""
    assert triton_listmle.row_geometry(4096, False) == (False, 4096, 1)
    assert triton_listmle.row_geometry(4097, False) == (False, 4096, 2)
    assert triton_listmle.row_geometry(65536, False) == (False, 4096, 16)
    assert triton_listmle.row_geometry(2048, True) == (True, 2048, 1)
    assert triton_listmle.row_geometry(2049, True)[0] is False
