"""Custom lambda weights, on both backends against the float64 reference: only their ratios at real ranks
matter, whatever they hold at padded ranks and at any magnitude their dtype can hold."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from listmle_kernels import listmle_loss
from reference import listmle_reference

from cases import BACKENDS, DEVICE, GRAD_TOL, LOSS_TOL, assert_close
from cases import loss_and_grad as loss_and_grad_of

pytestmark = pytest.mark.parametrize("backend", BACKENDS)

JUNK = (float("nan"), float("inf"), float("-inf"), -1.0, 3e38)


def loss_and_grad(scores, labels, backend, **kwargs):
    moved = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
    loss, grad = loss_and_grad_of(lambda s: listmle_loss(s, labels.to(DEVICE), reduction="none", backend=backend,
                                                         **moved), scores.to(DEVICE))
    return loss.cpu(), grad.cpu()


def reference(scores, labels, **kwargs):
    return loss_and_grad_of(lambda s: listmle_reference(s, labels, reduction="none", **kwargs), scores.double())


def assert_matches(got, want, dtype):
    (loss, grad), (ref_loss, ref_grad) = got, want
    assert_close(loss, ref_loss, dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))


@st.composite
def problems(draw, max_length=24):
    """Scores, labels, a padding (mask or lengths, which may leave rows empty) and a target order."""
    batch, length = draw(st.integers(1, 5)), draw(st.integers(1, max_length))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    scores = torch.randn(batch, length, generator=gen) * draw(st.sampled_from([1.0, 30.0]))
    labels = torch.randint(0, 3, (batch, length), generator=gen)
    kwargs = dict(respect_input_order=draw(st.booleans()))
    if draw(st.booleans()):
        kwargs["mask"] = torch.rand(batch, length, generator=gen) < draw(st.sampled_from([0.0, 0.5, 0.9]))
        n_real = kwargs["mask"].sum(1)
    else:
        kwargs["lengths"] = n_real = torch.randint(0, length + 1, (batch,), generator=gen)
    return scores, labels, kwargs, n_real, gen


@given(problem=problems(), junk=st.lists(st.sampled_from(JUNK), min_size=1, max_size=4))
def test_weights_at_padded_ranks_are_ignored_whatever_they_hold(backend, problem, junk):
    """Ranks n..L-1 of a row hold NaN, inf, negatives: the result is that of zeros there (the reference reads
    real ranks only)."""
    scores, labels, kwargs, n_real, gen = problem
    batch, length = scores.shape
    weights = torch.rand(batch, length, generator=gen, dtype=torch.float64)
    padded = torch.arange(length)[None, :] >= n_real[:, None]
    fill = torch.tensor(junk, dtype=torch.float64)[torch.randint(0, len(junk), (batch, length), generator=gen)]
    dirty = torch.where(padded, fill, weights)
    got = loss_and_grad(scores, labels, backend, lambda_weight=dirty, **kwargs)
    assert_matches(got, reference(scores, labels, lambda_weight=weights.masked_fill(padded, 0.0), **kwargs),
                   scores.dtype)
    assert torch.isfinite(got[0]).all() and torch.isfinite(got[1]).all()


@given(problem=problems())
def test_a_callable_that_divides_by_the_number_of_documents(backend, problem):
    """Weights 1 / n at real ranks and 0 / 0 = NaN everywhere in an empty row: empty rows have loss 0."""
    scores, labels, kwargs, _, _ = problem
    weights = lambda rank_mask: rank_mask.double() / rank_mask.sum(1, keepdim=True)  # noqa: E731
    got = loss_and_grad(scores, labels, backend, lambda_weight=weights, **kwargs)
    assert_matches(got, reference(scores, labels, lambda_weight=lambda m: weights(m).nan_to_num(), **kwargs),
                   scores.dtype)


MAGNITUDES = {torch.float64: (-300, 306), torch.float32: (-44, 38), torch.bfloat16: (-39, 38),
              torch.float16: (-7, 4)}


@given(problem=problems(), dtype=st.sampled_from(list(MAGNITUDES)), exponent=st.floats(0.0, 1.0),
       scores_float64=st.booleans())
def test_weights_of_any_magnitude(backend, problem, dtype, exponent, scores_float64):
    """Weights of one row scale 10^e for any e the weights' dtype holds (float64 weights past float32's range,
    float32 ones whose sum overflows, subnormal ones): as the float64 reference, 1e-10 in its normaliser and all."""
    scores, labels, kwargs, _, gen = problem
    low, high = MAGNITUDES[dtype]
    scale = 10.0 ** (low + exponent * (high - low))
    weights = (torch.rand(scores.shape, generator=gen, dtype=torch.float64) * scale).to(dtype)
    weights = torch.where(torch.isfinite(weights), weights, torch.finfo(dtype).max)
    scores = scores.double() if scores_float64 else scores
    got = loss_and_grad(scores, labels, backend, lambda_weight=weights, **kwargs)
    assert_matches(got, reference(scores, labels, lambda_weight=weights.double(), **kwargs), scores.dtype)


@pytest.mark.parametrize("n", [60, 130, 200])
def test_raw_plistmle_weights_in_float64(backend, n):
    """2^(n - rank) - 1 for rank = 1..n as a float64 tensor (past float32's range from n = 129): "plistmle"'s loss."""
    scores = torch.randn(2, n, generator=torch.Generator().manual_seed(n))
    raw = torch.tensor([[float(2 ** (n - rank) - 1) for rank in range(1, n + 1)]] * 2, dtype=torch.float64)
    got = loss_and_grad(scores, scores, backend, lambda_weight=raw)
    assert_matches(got, reference(scores, scores, lambda_weight="plistmle"), torch.float32)
    assert_matches(got, loss_and_grad(scores, scores, backend, lambda_weight="plistmle"), torch.float32)


@pytest.mark.parametrize("length", [255, 256, 257])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_plistmle_weights_either_side_of_the_cached_table(backend, length, dtype):
    """The CPU path reads p-ListMLE's weights from a table up to PLISTMLE_TABLE_MAX_LENGTH slots and computes them
    in closed form past it: both against the reference, with lengths (every count from 0 to L in the batch, the
    table's first and last rows included), in input order and by labels."""
    from listmle_kernels.torch_listmle import PLISTMLE_TABLE_MAX_LENGTH
    assert PLISTMLE_TABLE_MAX_LENGTH == 256
    gen = torch.Generator().manual_seed(length)
    lengths = torch.tensor([0, 1, 2, 3, length // 2, length - 1, length])
    scores = (torch.randn(len(lengths), length, generator=gen) * 3).to(dtype)
    labels = torch.randint(0, 4, scores.shape, generator=gen)
    for kwargs in (dict(lengths=lengths), dict(lengths=lengths, respect_input_order=False)):
        got = loss_and_grad(scores, labels, backend, lambda_weight="plistmle", **kwargs)
        assert_matches(got, reference(scores, labels, lambda_weight="plistmle", **kwargs), dtype)


def test_float32_weights_whose_sum_overflows(backend):
    """Each weight finite, their sum not: equal weights are equal weights."""
    scores = torch.randn(3, 7, generator=torch.Generator().manual_seed(1))
    huge = torch.full((3, 7), 3e38)
    got = loss_and_grad(scores, scores, backend, lambda_weight=huge)
    plain = listmle_reference(scores.double(), reduction="none") / 7
    torch.testing.assert_close(got[0].double(), plain, rtol=2e-5, atol=2e-5)


def test_a_callable_receives_the_rank_mask(backend):
    """rank_mask[b, r] = r < n_b, n_b the row's real documents (a bool (B, L) tensor, as sentence-transformers passes
    it): with holes in the mask the real ranks are still the first n_b columns, not the real slots."""
    mask = torch.tensor([[False, True, False, True, True], [True, False, False, False, False],
                         [False] * 5], device=DEVICE)
    seen = []
    listmle_loss(torch.zeros(3, 5, device=DEVICE), mask=mask, backend=backend,
                 lambda_weight=lambda rank_mask: seen.append(rank_mask) or rank_mask.float())
    expected = torch.tensor([[True, True, True, False, False], [True] + [False] * 4, [False] * 5], device=DEVICE)
    assert len(seen) == 1 and seen[0].dtype == torch.bool and torch.equal(seen[0], expected)
