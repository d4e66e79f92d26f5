"""Invariants of the loss that hold whatever the implementation: checked on both backends."""

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from listmle_kernels import listmle_loss
from reference import listmle_reference

from cases import BACKENDS, DEVICE, GRAD_TOL, LOSS_TOL, assert_close
from cases import loss_and_grad as loss_and_grad_of

pytestmark = pytest.mark.parametrize("backend", BACKENDS)


def loss_and_grad(scores, labels=None, **kwargs):
    return loss_and_grad_of(lambda s: listmle_loss(s, labels, **kwargs), scores)


def randn(*shape, seed, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(DEVICE)


@given(seed=st.integers(0, 10 ** 6), batch=st.integers(1, 5), length=st.integers(1, 24),
       weight=st.sampled_from([None, "plistmle"]), sort=st.booleans())
def test_shift_invariance(backend, seed, batch, length, weight, sort):
    scores = randn(batch, length, seed=seed, dtype=torch.float64)
    labels = randn(batch, length, seed=seed + 1)
    shift = randn(batch, 1, seed=seed + 2, dtype=torch.float64) * 100
    kwargs = dict(lambda_weight=weight, respect_input_order=not sort, reduction="none", backend=backend)
    loss, grad = loss_and_grad(scores, labels, **kwargs)
    shifted_loss, shifted_grad = loss_and_grad(scores + shift, labels, **kwargs)
    torch.testing.assert_close(shifted_loss, loss, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(shifted_grad, grad, rtol=1e-9, atol=1e-9)


@given(seed=st.integers(0, 10 ** 6), batch=st.integers(1, 4), length=st.integers(1, 40),
       offset=st.sampled_from([1e2, -1e3, 1e4, -1e5]), weight=st.sampled_from([None, "plistmle"]),
       sort=st.booleans())
def test_far_from_zero_float32_stays_exact(backend, seed, batch, length, offset, weight, sort):
    """float32 scores around a large offset (unnormalised dot products): as exact as around 0, against
    the float64 oracle on the same float32 values. Unshifted, lse near 1e4 has float32's 1e-3 spacing."""
    scores = randn(batch, length, seed=seed) + offset
    labels = randn(batch, length, seed=seed + 1)
    kwargs = dict(lambda_weight=weight, respect_input_order=not sort, reduction="none")
    loss, grad = loss_and_grad(scores, labels, backend=backend, **kwargs)
    ref = scores.double().requires_grad_(True)
    ref_loss = listmle_reference(ref, labels, **kwargs)
    (ref_grad,) = torch.autograd.grad(ref_loss.sum(), ref)
    assert_close(loss, ref_loss, torch.float32, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, torch.float32, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))


@given(seed=st.integers(0, 10 ** 6), batch=st.integers(1, 4), length=st.integers(1, 16),
       extra=st.integers(1, 20), weight=st.sampled_from([None, "plistmle"]), sort=st.booleans(),
       dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_padding_invariance(backend, seed, batch, length, extra, weight, sort, dtype):
    """Padding of any width, at any positions, changes neither the loss nor the real gradients."""
    scores = randn(batch, length, seed=seed).to(dtype)
    labels = torch.randint(0, 3, (batch, length), generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    kwargs = dict(lambda_weight=weight, respect_input_order=not sort, reduction="none", backend=backend)
    loss, grad = loss_and_grad(scores, labels, **kwargs)

    width = length + extra
    gen = torch.Generator().manual_seed(seed + 1)
    slots = torch.stack([torch.randperm(width, generator=gen)[:length].sort().values for _ in range(batch)]).to(DEVICE)
    mask = torch.zeros(batch, width, dtype=torch.bool, device=DEVICE).scatter_(1, slots, True)
    padded_scores = (randn(batch, width, seed=seed + 2) * 30).to(dtype).scatter(1, slots, scores)
    padded_labels = torch.randint(-5, 9, (batch, width), generator=gen).to(DEVICE).scatter(1, slots, labels)
    padded_loss, padded_grad = loss_and_grad(padded_scores, padded_labels, mask=mask, **kwargs)

    assert torch.equal(padded_loss, loss) or torch.allclose(padded_loss, loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(padded_grad.gather(1, slots), grad)
    assert (padded_grad[~mask] == 0).all()


@given(seed=st.integers(0, 10 ** 6), batch=st.integers(1, 4), length=st.integers(1, 20),
       weight=st.sampled_from([None, "plistmle"]))
def test_permutation_invariance_with_distinct_labels(backend, seed, batch, length, weight):
    scores = randn(batch, length, seed=seed, dtype=torch.float64)
    labels = torch.stack([torch.randperm(length, generator=torch.Generator().manual_seed(seed + b))
                          for b in range(batch)]).to(DEVICE).float()
    perm = torch.randperm(length, generator=torch.Generator().manual_seed(seed + 99)).to(DEVICE)
    kwargs = dict(lambda_weight=weight, respect_input_order=False, reduction="none", backend=backend)
    loss, grad = loss_and_grad(scores, labels, **kwargs)
    perm_loss, perm_grad = loss_and_grad(scores[:, perm], labels[:, perm], **kwargs)
    torch.testing.assert_close(perm_loss, loss)
    torch.testing.assert_close(perm_grad, grad[:, perm])


def tie_consistent_losses(scores, labels):
    """Reference loss of every target order that sorts labels descending (small rows only)."""
    n = scores.shape[0]
    losses = []
    for perm in itertools.permutations(range(n)):
        ordered = labels[list(perm)]
        if all(ordered[i] >= ordered[i + 1] for i in range(n - 1)):
            losses.append(listmle_reference(scores[list(perm)][None], reduction="sum").item())
    return losses


@given(seed=st.integers(0, 10 ** 6), length=st.integers(2, 5))
def test_random_ties_pick_a_valid_order_reproducibly(backend, seed, length):
    scores = randn(1, length, seed=seed, dtype=torch.float64)
    labels = torch.randint(0, 2, (1, length), generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    kwargs = dict(respect_input_order=False, ties="random", reduction="sum", backend=backend)
    loss, grad = loss_and_grad(scores, labels, generator=torch.Generator().manual_seed(seed), **kwargs)
    again, again_grad = loss_and_grad(scores, labels, generator=torch.Generator().manual_seed(seed), **kwargs)
    assert torch.equal(loss, again) and torch.equal(grad, again_grad)
    valid = tie_consistent_losses(scores[0].cpu(), labels[0].cpu())
    assert min(abs(loss.item() - v) for v in valid) < 1e-9


def test_random_ties_differ_between_seeds(backend):
    scores = randn(1, 6, seed=0)
    labels = torch.zeros(1, 6, device=DEVICE)
    losses = {listmle_loss(scores, labels, respect_input_order=False, ties="random", backend=backend,
                           generator=torch.Generator().manual_seed(seed)).item() for seed in range(12)}
    assert len(losses) > 3


@pytest.mark.parametrize("length", [6, 5000])  # sorted in the kernel; sorted by target_order's torch build on CUDA
def test_random_ties_shuffle_each_row_on_its_own(backend, length):
    """Identical rows, all labels tied: one shared shuffle would give every row the same loss."""
    scores = randn(1, length, seed=3).expand(12, length)
    labels = torch.zeros(12, length, device=DEVICE)
    losses = listmle_loss(scores, labels, respect_input_order=False, ties="random", reduction="none", backend=backend,
                          generator=torch.Generator().manual_seed(0))
    assert len(set(losses.tolist())) > 6


def test_random_ties_are_uniform(backend):
    """Three tied documents with distinct scores in 1,200 rows: each of the 6 orders (6 losses) about 200 times."""
    scores = torch.tensor([[0.0, 1.0, 2.5]], device=DEVICE).expand(1200, 3)
    losses = listmle_loss(scores, torch.zeros(1200, 3, device=DEVICE), respect_input_order=False, ties="random",
                          reduction="none", backend=backend, generator=torch.Generator().manual_seed(5))
    counts = torch.unique(losses, return_counts=True)[1].double()
    assert len(counts) == 6 and ((counts - 200.0) ** 2 / 200).sum() < 35  # chi-square, 5 dof, p ~ 1e-6


def test_random_ties_draw_from_the_global_generator(backend):
    """generator=None: each call takes a new seed from torch's global generator, so torch.manual_seed repeats them."""
    scores, labels = randn(8, 6, seed=4), torch.zeros(8, 6, device=DEVICE)

    def losses():
        return listmle_loss(scores, labels, respect_input_order=False, ties="random", reduction="none",
                            backend=backend)

    torch.manual_seed(11)
    first, second = losses(), losses()
    torch.manual_seed(11)
    assert torch.equal(losses(), first) and torch.equal(losses(), second)
    assert not torch.equal(first, second)


def test_stable_ties_keep_input_order(backend):
    scores = randn(3, 7, seed=1, dtype=torch.float64)
    labels = torch.tensor([[1, 0, 1, 0, 2, 0, 1]] * 3, device=DEVICE)
    order = torch.tensor([4, 0, 2, 6, 1, 3, 5], device=DEVICE)
    sorted_loss = listmle_loss(scores, labels, respect_input_order=False, backend=backend)
    torch.testing.assert_close(sorted_loss, listmle_loss(scores[:, order], backend=backend))


def test_huge_scores_stay_finite(backend):
    scores = torch.tensor([[1e4, -1e4, 0.0, 1e4], [-1e4, -1e4, -1e4, -1e4]], device=DEVICE)
    for weight in (None, "plistmle"):
        loss, grad = loss_and_grad(scores, lambda_weight=weight, reduction="none", backend=backend)
        ref = listmle_reference(scores.double(), lambda_weight=weight, reduction="none")
        assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
        torch.testing.assert_close(loss.double(), ref, rtol=1e-6, atol=1e-3)


def test_score_span_past_the_largest_float(backend):
    """Finite scores whose span overflows float32 (the row's max minus its least is inf): such a row takes the
    log-space sums, whose differences of scores stay finite wherever they matter; exact as the reference."""
    scores = torch.tensor([[3e38, -3e38, 0.0], [2e38, -2e38, -2.5e38], [1.0, -1.0, 0.5]], device=DEVICE)
    loss, grad = loss_and_grad(scores, reduction="none", backend=backend)
    ref = scores.double().requires_grad_(True)
    ref_loss = listmle_reference(ref, reduction="none")
    (ref_grad,) = torch.autograd.grad(ref_loss.sum(), ref)
    torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-6, atol=1e-6)


def test_no_epsilon_inside_the_log(backend):
    """sentence-transformers <= 5.x gave 0.7645 here (1e-10 added inside the log)."""
    loss = listmle_loss(torch.tensor([[-20.0, -20.0]], device=DEVICE), backend=backend)
    assert abs(loss.item() - math.log(2)) < 1e-6
    # After the shift by the row's max the last two suffix sums are 2e^-30 and e^-30 (~1e-13): an epsilon added
    # there, not only to unshifted sums, would move the loss by ~7. Exact: log(1 + 2e^-30) + log 2.
    loss, grad = loss_and_grad(torch.tensor([[0.0, -30.0, -30.0]], device=DEVICE), backend=backend)
    assert abs(loss.item() - math.log(2)) < 1e-6
    torch.testing.assert_close(grad.cpu(), torch.tensor([[0.0, -0.5, 0.5]]), rtol=0, atol=1e-6)


def test_plistmle_weights_for_three_documents(backend):
    """n = 3: raw weights (3, 1, 0), normalised to (3/4, 1/4, 0)."""
    s = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64, device=DEVICE)
    lse = [math.log(sum(math.exp(v) for v in s[0, r:].tolist())) for r in range(3)]
    expected = -(0.75 * (0.5 - lse[0]) + 0.25 * (-1.0 - lse[1]))
    assert abs(listmle_loss(s, lambda_weight="plistmle", backend=backend).item() - expected) < 1e-12


def test_plistmle_long_rows_do_not_overflow(backend):
    scores = randn(2, 300, seed=3, dtype=torch.float64)
    loss, grad = loss_and_grad(scores, lambda_weight="plistmle", reduction="none", backend=backend)
    ref = listmle_reference(scores, lambda_weight="plistmle", reduction="none")
    torch.testing.assert_close(loss, ref)
    assert torch.isfinite(grad).all()


def test_rows_without_documents(backend):
    scores = randn(3, 5, seed=4)
    lengths = torch.tensor([0, 5, 0], device=DEVICE)
    loss, grad = loss_and_grad(scores, lengths=lengths, reduction="none", backend=backend)
    assert loss[0] == 0 and loss[2] == 0 and loss[1] > 0
    assert (grad[0] == 0).all() and (grad[2] == 0).all()
    loss, grad = loss_and_grad(scores, mask=torch.zeros(3, 5, dtype=torch.bool, device=DEVICE), backend=backend)
    assert loss == 0 and (grad == 0).all()


def test_deterministic(backend):
    scores = randn(9, 33, seed=5)
    labels = randn(9, 33, seed=6).round()
    runs = [loss_and_grad(scores, labels, respect_input_order=False, lambda_weight="plistmle", backend=backend)
            for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_non_contiguous_inputs(backend):
    base = randn(12, 10, seed=7)
    scores = base.t()[:, ::2]              # (10, 6), strided both ways
    labels = randn(6, 10, seed=8).t()
    mask = (randn(10, 6, seed=9) > -0.5).t().contiguous().t()
    weights = randn(6, 10, seed=10).abs().t()
    kwargs = dict(mask=mask, lambda_weight=weights, respect_input_order=False, reduction="none", backend=backend)
    loss, grad = loss_and_grad(scores, labels, **kwargs)
    kwargs.update(mask=mask.contiguous(), lambda_weight=weights.contiguous())
    ref_loss, ref_grad = loss_and_grad(scores.contiguous(), labels.contiguous(), **kwargs)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad)


def test_non_contiguous_lengths(backend):
    scores = randn(4, 7, seed=13)
    lengths = torch.tensor([[3, 9], [0, 9], [7, 9], [5, 9]], device=DEVICE)[:, 0]  # stride 2
    for strided, dense in ((lengths, lengths.contiguous()),
                           (torch.tensor(4, device=DEVICE).expand(4), torch.full((4,), 4, device=DEVICE))):
        loss, grad = loss_and_grad(scores, lengths=strided, reduction="none", backend=backend)
        ref_loss, ref_grad = loss_and_grad(scores, lengths=dense, reduction="none", backend=backend)
        torch.testing.assert_close(loss, ref_loss)
        torch.testing.assert_close(grad, ref_grad)


def test_label_dtypes(backend):
    scores = randn(4, 9, seed=11)
    labels = torch.randint(0, 3, (4, 9), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    expected = listmle_loss(scores, labels.float(), respect_input_order=False, backend=backend)
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.float16, torch.bfloat16, torch.float64):
        got = listmle_loss(scores, labels.to(dtype), respect_input_order=False, backend=backend)
        assert torch.equal(got, expected), dtype
    binary = labels > 0
    torch.testing.assert_close(listmle_loss(scores, binary, respect_input_order=False, backend=backend),
                               listmle_loss(scores, binary.float(), respect_input_order=False, backend=backend))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.uint32,
                                   torch.int64, torch.uint64])
def test_lengths_dtypes_up_to_their_largest_value(backend, dtype):
    """Near the top of a narrow integer type nothing may wrap: not the kernel's reads (in groups of 8 slots up to
    the length), nor the check against L, which the type may not hold (uint8 lengths, L = 300)."""
    top = min(torch.iinfo(dtype).max, 300)
    scores = randn(4, 300, seed=13)
    lengths = torch.tensor([top, top - 1, top - 6, top - 8], device=DEVICE)
    expected = listmle_reference(scores.cpu().double(), lengths=lengths.cpu(), reduction="none")
    got = listmle_loss(scores, lengths=lengths.to(dtype), reduction="none", backend=backend)
    assert_close(got.cpu(), expected, torch.float32, LOSS_TOL)


def test_negative_zero_ties_with_zero(backend):
    scores = randn(1, 3, seed=12)
    labels = torch.tensor([[0.0, -0.0, 0.0]], device=DEVICE)
    torch.testing.assert_close(listmle_loss(scores, labels, respect_input_order=False, backend=backend),
                               listmle_loss(scores, backend=backend))


@pytest.mark.parametrize("span", [1.0, 59.0, 61.0, 79.0, 81.0, 599.0, 601.0, 5000.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_any_score_span_is_exact(backend, span, dtype):
    """Both backends switch from exp/cumsum to log space past a span (float32: 60 in the kernel, 80 on the CPU;
    float64: 600); both sides of each switch match."""
    gen = torch.Generator().manual_seed(int(span))
    scores = (torch.rand(3, 12, generator=gen, dtype=torch.float64) * span - span / 2).to(dtype).to(DEVICE)
    lengths = torch.tensor([12, 7, 1], device=DEVICE)
    for weight in (None, "plistmle"):
        loss, grad = loss_and_grad(scores, lengths=lengths, lambda_weight=weight, reduction="none", backend=backend)
        ref = scores.double().detach().requires_grad_(True)
        ref_loss = listmle_reference(ref, lengths=lengths, lambda_weight=weight, reduction="none")
        (ref_grad,) = torch.autograd.grad(ref_loss.sum(), ref)
        tol = 1e-5 if dtype == torch.float32 else 1e-10
        # exp(s_j - lse_r) loses ~eps * |s| to rounding of the exponent, so large scores earn slack
        torch.testing.assert_close(loss.double(), ref_loss.detach(), rtol=tol, atol=tol * span)
        torch.testing.assert_close(grad.double(), ref_grad, rtol=tol, atol=tol * max(1.0, span / 50))


def test_nan_and_inf_scores(backend):
    """NaN in a real score makes that row's loss NaN (as in torch); NaN/inf padding changes nothing."""
    scores = randn(3, 4, seed=13)
    lengths = torch.tensor([4, 2, 3], device=DEVICE)
    clean = listmle_loss(scores, lengths=lengths, reduction="none", backend=backend)
    dirty = scores.clone()
    dirty[0, 1] = float("nan")
    dirty[1, 2:] = torch.tensor([float("nan"), float("inf")])
    dirty[2, 3] = float("-inf")
    loss = listmle_loss(dirty, lengths=lengths, reduction="none", backend=backend)
    assert torch.isnan(loss[0])
    assert torch.equal(loss[1:], clean[1:])


def test_random_ties_of_neighbouring_rows_are_independent(backend):
    """Tie bits are drawn per (row, column): row r + 1 must not reuse row r's bits shifted by one column, which would
    make it rank documents 0 and 1 as row r ranks documents 1 and 2 (agreement 1 instead of about 1/2)."""
    scores = torch.tensor([[0.0, 1.0, 2.5]], device=DEVICE).expand(1200, 3)
    losses = listmle_loss(scores, torch.zeros(1200, 3, device=DEVICE), respect_input_order=False, ties="random",
                          reduction="none", backend=backend, generator=torch.Generator().manual_seed(7)).cpu()
    orders = list(itertools.permutations(range(3)))  # each target order's loss identifies it
    loss_of_order = torch.tensor([listmle_reference(scores[:1, list(order)].cpu().double()).item() for order in orders])
    rows = [orders[i] for i in (losses.double()[:, None] - loss_of_order[None, :]).abs().argmin(1).tolist()]

    def before(order, a, b):
        return order.index(a) < order.index(b)

    agree = sum(before(rows[r + 1], 0, 1) == before(rows[r], 1, 2) for r in range(len(rows) - 1))
    assert abs(agree / (len(rows) - 1) - 0.5) < 0.1


def test_labels_one_ulp_apart_are_not_ties(backend):
    """Random tie bits must stay below the label's bits: labels 1 + k * 2^-23 (adjacent float32 values) have no
    ties, so random ties give exactly the stable order."""
    gen = torch.Generator().manual_seed(3)
    labels = torch.stack([1.0 + torch.randperm(8, generator=gen).float() * 2.0 ** -23 for _ in range(64)]).to(DEVICE)
    assert labels.unique().numel() == 8
    scores = randn(64, 8, seed=3)
    kwargs = dict(respect_input_order=False, reduction="none", backend=backend)
    stable = listmle_loss(scores, labels, ties="stable", **kwargs)
    assert torch.equal(listmle_loss(scores, labels, ties="random", generator=torch.Generator().manual_seed(1), **kwargs),
                       stable)


def test_nan_grad_output_reaches_the_gradient(backend, backward_scaling):
    """A NaN grad_output is not a scale of 1: a per-row one makes its row's gradient NaN (the other rows' stay
    finite), a scalar one the whole gradient."""
    scores = randn(4, 6, seed=2).requires_grad_()
    listmle_loss(scores, reduction="none", backend=backend).backward(
        torch.tensor([1.0, float("nan"), 1.0, 1.0], device=DEVICE))
    assert scores.grad[1].isnan().all() and scores.grad[[0, 2, 3]].isfinite().all()
    (grad,) = torch.autograd.grad(listmle_loss(scores, backend=backend), scores,
                                  torch.tensor(float("nan"), device=DEVICE))
    assert grad.isnan().all()


def test_float32_rows_spanning_past_the_linear_range_stay_exact(backend):
    """A real score more than 80 below its row's max: exp of it would be a float32 subnormal (a few significant
    bits), so such a batch takes the log-space sums; the last document's log-probability must stay exact."""
    gaps = [90.1, 92.7, 93.3, 93.9, 94.5, 94.9]
    scores = torch.tensor([[0.0, -gap] for gap in gaps], device=DEVICE)
    want = torch.stack([listmle_reference(row[None].cpu().double()) for row in scores])
    got = listmle_loss(scores, reduction="none", backend=backend).cpu().double()
    assert (got - want).abs().max() < 1e-6
