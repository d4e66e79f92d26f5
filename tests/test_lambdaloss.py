"""LambdaLoss and RankNet against the literal oracle (reference.lambdaloss_reference): loss, gradient, every option."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from listmle_kernels import LambdaLoss, LambdaLossFunction, RankNetLoss, lambda_loss, ranknet_loss
from listmle_kernels import torch_lambdaloss
from reference import lambdaloss_reference, ranknet_reference

from cases import (BACKENDS, DEVICE, LOSS_TOL, WEIGHTING_SCHEMES, assert_close, assert_matches_oracle, loss_and_grad,
                   pairwise_problems, to_device)


def check_against_reference(scores, labels, kwargs, backend, grad_output):
    assert_matches_oracle(lambda_loss, lambdaloss_reference, scores, labels, kwargs, backend, grad_output)


@pytest.mark.parametrize("backend", BACKENDS)
@given(problem=pairwise_problems(), grad_seed=st.integers(0, 1000))
def test_loss_and_gradient_match_reference(backend, problem, grad_seed):
    scores, labels, kwargs = to_device(*problem)
    shape = (scores.shape[0],) if kwargs["reduction"] == "none" else ()
    grad_output = torch.rand(shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64) + 0.5
    check_against_reference(scores, labels, kwargs, backend, grad_output.to(scores.device))


def option_combinations():
    """Every scheme x padding x k, with reduction_log, reduction and dtype cycling through theirs: hypothesis'
    25 draws a run cover only a few of these products."""
    combos = [(scheme, padding, k) for scheme in WEIGHTING_SCHEMES for padding in ("none", "mask", "lengths")
              for k in (None, 2)]
    return [combo + (("binary", "natural")[i % 2], ("mean", "sum", "none")[i % 3],
                     ("float32", "bfloat16", "float64", "float16")[i % 4]) for i, combo in enumerate(combos)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme, padding, k, reduction_log, reduction, dtype", option_combinations())
def test_every_option_combination_matches_reference(backend, scheme, padding, k, reduction_log, reduction, dtype):
    gen = torch.Generator().manual_seed(len(scheme) * 7 + len(padding) * 5 + (k or 0))
    batch, length = 4, 11
    scores = torch.randn(batch, length, generator=gen).to(getattr(torch, dtype))
    labels = torch.randint(-1, 4, (batch, length), generator=gen).float()
    labels[0, 3] = float("-inf")  # a real document without pairs, at a position
    kwargs = dict(weighting_scheme=scheme, k=k, sigma=1.5, mu=4.0, reduction_log=reduction_log, reduction=reduction)
    if padding == "mask":
        kwargs["mask"] = torch.rand(batch, length, generator=gen) < 0.6
    elif padding == "lengths":
        kwargs["lengths"] = torch.tensor([11, 0, 6, 1])
    grad_output = torch.rand((batch,) if reduction == "none" else (), generator=gen, dtype=torch.float64) + 0.5
    scores, labels, kwargs = to_device(scores, labels, kwargs)
    check_against_reference(scores, labels, kwargs, backend, grad_output.to(scores.device))


@pytest.mark.parametrize("backend", BACKENDS)
def test_extreme_and_non_finite_scores_match_reference(backend):
    """Differences past the clamp (+-1e8: gradient 0 there), real scores far below sentence-transformers'
    padding value -1e16, +-inf scores (a real -inf ranks before the padding) and NaN scores (first in score
    order; their differences count as 0, with no gradient)."""
    inf, nan = float("inf"), float("nan")
    scores = torch.tensor([[3.0, -2e16, 1e9, 0.5, -1.0, 2.0],
                           [-inf, 1.0, 0.0, inf, 2.0, -3.0],
                           [nan, 1.0, 2.0, -1.0, nan, 0.0]], dtype=torch.float64)
    labels = torch.tensor([[1.0, 2.0, 0.0, 3.0, 1.0, 0.0],
                           [2.0, 0.0, 1.0, 1.0, 3.0, 0.0],
                           [1.0, 0.0, 2.0, 3.0, 0.0, 1.0]])
    lengths = torch.tensor([5, 4, 6])  # row 0: -2e16 is real, ranked before the padding
    for scheme in WEIGHTING_SCHEMES:
        for dtype in (torch.float64, torch.float32):
            kwargs = dict(weighting_scheme=scheme, lengths=lengths, reduction="none")
            s, y, kw = to_device(scores.to(dtype), labels, kwargs)
            check_against_reference(s, y, kw, backend, torch.rand(3, dtype=torch.float64, device=s.device) + 0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_scores_keep_input_order(backend):
    """All scores equal: positions follow input order, so swapping two documents' labels changes the loss as the
    oracle says (and the oracle's order is the stable one)."""
    scores = torch.zeros(1, 5, device=DEVICE)
    labels = torch.tensor([[0.0, 3.0, 1.0, 0.0, 2.0]], device=DEVICE)
    for scheme in WEIGHTING_SCHEMES:
        loss = lambda_loss(scores, labels, weighting_scheme=scheme, backend=backend)
        swapped = lambda_loss(scores, labels[:, [1, 0, 2, 3, 4]], weighting_scheme=scheme, backend=backend)
        ref = lambdaloss_reference(scores.double(), labels, weighting_scheme=scheme)
        ref_swapped = lambdaloss_reference(scores.double(), labels[:, [1, 0, 2, 3, 4]], weighting_scheme=scheme)
        torch.testing.assert_close(loss.double(), ref, rtol=2e-5, atol=2e-6)
        torch.testing.assert_close(swapped.double(), ref_swapped, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_without_pairs_give_zero(backend):
    """No counted pair (no real document, one, equal labels, -inf labels): loss 0 and gradient 0, not NaN; "mean"
    of a batch without pairs is 0 (sentence-transformers' max(1, pairs))."""
    scores = torch.randn(4, 3, device=DEVICE, requires_grad=True)
    labels = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [-float("inf")] * 3, [0.0, 5.0, 1.0]], device=DEVICE)
    lengths = torch.tensor([3, 1, 3, 0], device=DEVICE)
    loss = lambda_loss(scores, labels, lengths=lengths, backend=backend)
    loss.backward()
    assert loss.item() == 0 and (scores.grad == 0).all()


def large_label_problem(dtype):
    """Rows whose labels pass 2^y's float32 range (128) and maxDCG's (two labels of 127 sum past it), up to 1000
    (the oracle's Python floats hold 2^1000), beside labels within it: ties among large labels, a fraction, a
    -inf and a negative label, a row of small labels only, padding by mask."""
    gen = torch.Generator().manual_seed(11)
    scores = torch.randn(4, 9, generator=gen).to(dtype)
    labels = torch.tensor([[1000.0, 999.0, 3.0, 0.0, 127.0, 128.0, -1.0, 998.5, 5.0],
                           [127.0, 127.0, 126.0, 64.0, 65.5, 1.0, float("-inf"), 0.0, 2.0],
                           [300.0, 300.0, 300.0, 299.0, 1.0, 0.0, 40.0, 900.0, 901.0],
                           [1.0, 2.0, 0.0, 3.0, 0.0, 1.0, 2.0, -2.0, 4.0]])
    mask = torch.ones(4, 9, dtype=torch.bool)
    mask[2, 8] = False  # the row's largest label is padding: its gain must not count
    return scores, labels, mask


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths_dtype", [torch.int8, torch.uint8, torch.int16, torch.uint16, torch.int32,
                                           torch.uint32, torch.int64, torch.uint64])
def test_lengths_of_every_integer_dtype(backend, lengths_dtype):
    """lengths may be any integer tensor, the unsigned 16-64-bit ones too (which torch will not promote against
    int64): loss and gradient as the oracle's with int64 lengths."""
    gen = torch.Generator().manual_seed(9)
    scores = torch.randn(3, 7, generator=gen).to(DEVICE)
    labels = torch.randint(0, 4, (3, 7), generator=gen).to(DEVICE)
    lengths = torch.tensor([7, 3, 0], device=DEVICE)
    loss, grad = loss_and_grad(lambda s: lambda_loss(s, labels, lengths=lengths.to(lengths_dtype), reduction="none",
                                                     backend=backend), scores)
    ref_loss, ref_grad = loss_and_grad(lambda s: lambdaloss_reference(s, labels, lengths=lengths, reduction="none"),
                                       scores.double())
    assert_close(loss, ref_loss, torch.float32, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, torch.float32, LOSS_TOL, scale=max(1.0, ref_grad.abs().max().item()))
    assert loss[2] == 0 and (grad[1, 3:] == 0).all() and (grad[2] == 0).all()

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", WEIGHTING_SCHEMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_labels_match_reference(backend, scheme, dtype):
    """Gains stay exact for labels past 2^y's and maxDCG's range, every scheme (RankNet has no gains), with k."""
    scores, labels, mask = large_label_problem(dtype)
    for k in (None, 3):
        kwargs = dict(mask=mask, weighting_scheme=scheme, k=k, reduction="none")
        scores_d, labels_d, kwargs = to_device(scores, labels, kwargs)
        grad_output = torch.linspace(0.5, 1.5, 4, dtype=torch.float64, device=scores_d.device)
        check_against_reference(scores_d, labels_d, kwargs, backend, grad_output)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gains_of_huge_labels_are_ratios(backend):
    """Past the oracle's reach, up to float32's largest label: where the labels are all large, 2^y - 1 is 2^y to
    every digit, so adding a constant to every label changes no gain (they are ratios): the loss of labels near
    10^6 is that of the same labels near 500, the oracle's; the largest float32 labels give finite losses."""
    gen = torch.Generator().manual_seed(12)
    scores = torch.randn(3, 8, generator=gen, dtype=torch.float64, device=DEVICE)
    offsets = torch.randint(0, 6, (3, 8), generator=gen).double().to(DEVICE)
    for scheme in WEIGHTING_SCHEMES:
        near_500 = lambdaloss_reference(scores, offsets + 500, weighting_scheme=scheme, reduction="none")
        for dtype in (torch.float32, torch.float64):
            huge = lambda_loss(scores.to(dtype), (offsets + 1e6).float(), weighting_scheme=scheme, reduction="none",
                               backend=backend)
            assert_close(huge, near_500, dtype, LOSS_TOL, scale=max(1.0, near_500.abs().max().item()))
            largest = torch.tensor([[3.4e38, 3.0e38, 1.0, 0.0]], device=DEVICE)
            assert torch.isfinite(lambda_loss(scores[:1, :4].to(dtype), largest, weighting_scheme=scheme,
                                              backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheme", ["ndcgloss2pp", "ndcgloss1"])
def test_k_of_zero_counts_every_pair_as_none_does(backend, scheme):
    """k=0 means what k=None means (every pair), not "no pair": against the oracle without k."""
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(3, 8, generator=gen).to(DEVICE)
    labels = torch.randint(0, 4, (3, 8), generator=gen).to(DEVICE)
    kwargs = dict(lengths=torch.tensor([8, 5, 2], device=DEVICE), weighting_scheme=scheme, reduction="none")
    loss, grad = loss_and_grad(lambda s: lambda_loss(s, labels, k=0, backend=backend, **kwargs), scores)
    ref_loss, ref_grad = loss_and_grad(lambda s: lambdaloss_reference(s, labels, k=None, **kwargs), scores.double())
    assert (ref_loss > 0).all()
    assert_close(loss, ref_loss, torch.float32, LOSS_TOL, scale=ref_loss.abs().max().item())
    torch.testing.assert_close(grad.double(), ref_grad, rtol=2e-5, atol=2e-5 * ref_grad.abs().max().item())


def test_ranknet_is_lambdaloss_without_weights():
    gen = torch.Generator().manual_seed(3)
    scores, labels = torch.randn(3, 9, generator=gen), torch.randint(0, 3, (3, 9), generator=gen)
    for kwargs in (dict(), dict(k=2, sigma=0.5, reduction_log="natural", reduction="none")):
        torch.testing.assert_close(ranknet_loss(scores, labels, **kwargs),
                                   lambda_loss(scores, labels, weighting_scheme="none", **kwargs))
        torch.testing.assert_close(ranknet_loss(scores.double(), labels, **kwargs),
                                   ranknet_reference(scores.double(), labels, **kwargs))
    assert torch.equal(RankNetLoss(k=2)(scores, labels), ranknet_loss(scores, labels, k=2))
    assert torch.equal(LambdaLoss("lambdarank", sigma=2.0)(scores, labels),
                       lambda_loss(scores, labels, weighting_scheme="lambdarank", sigma=2.0))
    assert "lambdarank" in repr(LambdaLoss("lambdarank")) and "k=2" in repr(RankNetLoss(k=2))


@pytest.mark.parametrize("scheme", WEIGHTING_SCHEMES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck(scheme, reduction):
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    labels = torch.randint(-1, 3, (3, 7), generator=gen)
    mask = torch.rand(3, 7, generator=gen) > 0.25
    assert torch.autograd.gradcheck(
        lambda s: lambda_loss(s, labels, mask=mask, weighting_scheme=scheme, k=4, sigma=0.7, reduction=reduction,
                              backend="torch"), (scores,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_backward_scales_the_saved_gradient_once(backend, dtype):
    """"mean" divides by the batch's pair count in backward's one multiply; a float32 or float64 gradient is the
    saved buffer itself (no second (B, L) allocation), a float16 one is rounded from the float32 product; a
    retained graph keeps the saved gradient for a second backward."""
    scores = torch.randn(5, 9, device=DEVICE).to(dtype).requires_grad_(True)
    labels = torch.randint(0, 4, (5, 9), device=DEVICE)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.data_ptr()) or t, lambda t: t):
        loss = lambda_loss(scores, labels, backend=backend)
    (first,) = torch.autograd.grad(loss, scores, torch.tensor(3.0, device=DEVICE), retain_graph=True)
    assert first.data_ptr() not in saved
    loss.backward(torch.tensor(1.5, device=DEVICE))
    assert (scores.grad.data_ptr() in saved) == (dtype != torch.float16)
    rows = lambda_loss(scores, labels, backend=backend, reduction="none")
    pairs = lambda_loss(scores, labels, backend=backend, reduction="sum") / loss
    (by_rows,) = torch.autograd.grad(rows, scores, torch.full((5,), 1.5 / pairs.item(), device=DEVICE))
    torch.testing.assert_close(scores.grad, by_rows, rtol=2e-3 if dtype == torch.float16 else 1e-6, atol=1e-7)
    torch.testing.assert_close(first.float(), 2 * scores.grad.float(), rtol=2e-3, atol=1e-7)


def test_second_derivative_raises():
    scores = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(lambda_loss(scores, torch.randint(0, 3, (2, 5))), scores, create_graph=True)
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        grad.sum().backward()


def largest_tensor_numel(fn):
    """The number of elements of the largest tensor any torch op returns while `fn` runs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    Largest.numel = max(Largest.numel, t.numel())
            return out

    with Largest():
        fn()
    return Largest.numel


@pytest.mark.parametrize("scheme", ["ndcgloss2pp", "ndcgloss1"])
def test_memory_is_linear_in_the_list_length(scheme):
    """A row of 3000 documents: no tensor of the forward+backward is larger than a tile of pairs (or a (B, L)
    one), where (B, L, L) would hold 18 million elements."""
    batch, length = 2, 3000
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(batch, length, generator=gen, requires_grad=True)
    labels = torch.randint(0, 3, (batch, length), generator=gen)

    def step():
        lambda_loss(scores, labels, weighting_scheme=scheme, backend="torch").backward()

    largest = largest_tensor_numel(step)
    assert largest <= max(torch_lambdaloss.PAIR_TILE_ELEMENTS, batch * length)
    assert largest * 16 < batch * length * length


def test_tiles_do_not_change_the_result(monkeypatch):
    """One pair a tile, or all of them in one: the same loss and gradient to rounding."""
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(3, 17, dtype=torch.float64, generator=gen)
    labels = torch.randint(0, 4, (3, 17), generator=gen)
    mask = torch.rand(3, 17, generator=gen) < 0.8
    results = []
    for budget in (1, 1 << 30):
        monkeypatch.setattr(torch_lambdaloss, "PAIR_TILE_ELEMENTS", budget)
        for scheme in WEIGHTING_SCHEMES:
            results.append(loss_and_grad(lambda s: lambda_loss(s, labels, mask=mask, weighting_scheme=scheme, k=5,
                                                               reduction="none", backend="torch"),
                                         scores, torch.ones(3, dtype=torch.float64)))
    half = len(results) // 2
    for (loss_a, grad_a), (loss_b, grad_b) in zip(results[:half], results[half:]):
        torch.testing.assert_close(loss_a, loss_b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad_a, grad_b, rtol=1e-12, atol=1e-12)


def test_autograd_function_positional_signature():
    scores = torch.randn(2, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4))
    loss = LambdaLossFunction.apply(scores, labels, None, None, "lambdarank", 2, 1.0, 10.0, 1e-10, "natural", "sum",
                                    True, "torch")
    torch.testing.assert_close(loss, lambda_loss(scores, labels, weighting_scheme="lambdarank", k=2,
                                                 reduction_log="natural", reduction="sum"))
    loss.backward()
    assert scores.grad.shape == (2, 4)


def test_binary_log_is_natural_over_ln2():
    scores, labels = torch.randn(3, 6, dtype=torch.float64), torch.randint(0, 3, (3, 6))
    torch.testing.assert_close(lambda_loss(scores, labels, reduction_log="binary"),
                               lambda_loss(scores, labels, reduction_log="natural") / math.log(2))


def test_no_grad_computes_the_same_loss_without_a_gradient():
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(3, 8, generator=gen, requires_grad=True)
    labels = torch.randint(0, 3, (3, 8), generator=gen)
    for scheme in WEIGHTING_SCHEMES:
        with torch.no_grad():
            loss = lambda_loss(scores, labels, weighting_scheme=scheme)
        assert loss.grad_fn is None
        torch.testing.assert_close(loss, lambda_loss(scores, labels, weighting_scheme=scheme).detach())


def test_one_document_lists_warn():
    with pytest.warns(UserWarning, match=r"shape \(6, 1\).*reshaped to \(B, L\)"):
        loss = ranknet_loss(torch.randn(6, 1), torch.arange(6.0)[:, None])
    assert loss == 0


def ranknet_in_row_blocks(scores, labels, block=1024):
    """RankNet's row loss and gradient over one long row, from its definition in float64, a block of rows of the
    (L, L) pair matrix at a time (the whole matrix at L = 16384 would take 2 GiB)."""
    s, y = scores.double(), labels.double()
    loss, grad = torch.zeros((), dtype=torch.float64), torch.zeros_like(s)
    for start in range(0, len(s), block):
        d = s[start:start + block, None] - s[None, :]
        counted = y[start:start + block, None] > y[None, :]
        loss -= torch.where(counted, torch.nn.functional.logsigmoid(d), 0).sum()
        pull = torch.where(counted, torch.sigmoid(-d), 0)  # d/ds_i of -logsigmoid(s_i - s_j) is -sigmoid(-d)
        grad[start:start + block] -= pull.sum(1)
        grad += pull.sum(0)
    return loss / math.log(2), grad / math.log(2)


@pytest.mark.parametrize("backend", ["torch", "triton"] if DEVICE == "cuda" else ["torch"])
def test_a_row_of_16384_documents(backend):
    """The longest row the pairwise losses promise, against the definition (the interpreter would take hours for the
    kernel's 2^28 pairs: the Triton backend is checked where it runs natively)."""
    gen = torch.Generator().manual_seed(0)
    scores = torch.randn(1, 16384, generator=gen) * 3
    labels = torch.randint(0, 5, (1, 16384), generator=gen).float()
    loss, grad = loss_and_grad(lambda s: ranknet_loss(s, labels.to(DEVICE), reduction="sum", backend=backend),
                               scores.to(DEVICE), torch.ones((), device=DEVICE))
    ref_loss, ref_grad = ranknet_in_row_blocks(scores[0], labels[0])
    torch.testing.assert_close(loss.cpu().double(), ref_loss, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad[0].cpu().double(), ref_grad, rtol=0, atol=1e-5 * float(ref_grad.abs().max()))
