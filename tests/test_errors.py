"""Bad input: a clear ValueError/TypeError naming the argument, before any kernel runs."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from listmle_kernels import (LambdaLoss, ListMLELoss, ListNetLoss, PListMLELoss, RankNetLoss, lambda_loss,
                             listmle_loss, listnet_loss)
from listmle_kernels.backends import triton_unavailable_reason
from listmle_kernels.custom_op import listmle_rows
from reference import listmle_reference

from cases import DEVICE

S = torch.zeros(2, 3)


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.zeros(3),), {}, ValueError, r"scores must be 2-D.*\(3,\)"),
    ((torch.zeros(2, 3, 1),), {}, ValueError, r"scores must be 2-D.*\(2, 3, 1\).*squeeze\(-1\)"),
    ((S, S), dict(respect_input_order="False"), TypeError, r"respect_input_order must be a bool, got str 'False'"),
    ((S,), dict(validate="False"), TypeError, r"validate must be a bool, got str 'False'"),
    ((torch.zeros(2, 3, dtype=torch.long),), {}, TypeError, r"scores must be floating.*int64"),
    ((torch.zeros(2, 3, dtype=torch.float8_e4m3fn),), {}, TypeError,
     r"scores must be floating point \(float16, bfloat16, float32 or float64\), got dtype torch.float8_e4m3fn"),
    ((torch.zeros(2, 3, device="meta"),), {}, ValueError, r"scores are on meta; listmle_loss takes CPU or CUDA"),
    ((S, torch.zeros(2, 3, dtype=torch.float8_e5m2)), dict(respect_input_order=False), TypeError,
     r"labels must be bool, integer or float16, bfloat16, float32 or float64, got dtype torch.float8_e5m2"),
    ((S,), dict(lambda_weight=torch.ones(2, 3, dtype=torch.float8_e4m3fn)), TypeError,
     r"lambda_weight must be floating point \(float16, bfloat16, float32 or float64\), got dtype torch.float8"),
    (([[0.0]],), {}, TypeError, r"scores must be a torch.Tensor"),
    ((S, torch.zeros(2, 4)), {}, ValueError, r"labels must have the shape of scores \(2, 3\).*\(2, 4\)"),
    ((S, torch.zeros(2, 3, dtype=torch.complex64)), {}, TypeError, r"labels must hold real numbers"),
    ((S,), dict(mask=torch.ones(3, 2, dtype=torch.bool)), ValueError, r"mask must have the shape"),
    ((S,), dict(mask=torch.ones(2, 3)), TypeError, r"mask must be a bool tensor.*float32"),
    ((S,), dict(mask=torch.ones(2, 3, dtype=torch.bool), lengths=torch.tensor([1, 2])), ValueError,
     r"either mask or lengths"),
    ((S,), dict(lengths=torch.tensor([1, 4])), ValueError, r"lengths must lie in \[0, 3\].*got 4"),
    ((S,), dict(lengths=torch.tensor([-1, 0])), ValueError, r"lengths must lie in \[0, 3\].*got -1"),
    ((S,), dict(lengths=torch.tensor([1.0, 2.0])), TypeError, r"lengths must be an integer tensor"),
    ((S,), dict(lengths=torch.tensor([True, False])), TypeError, r"lengths must be an integer tensor, got dtype torch.bool"),
    ((S,), dict(lengths=[1, 2]), TypeError, r"lengths must be a torch.Tensor, got list"),
    ((S, [[0.0] * 3] * 2), {}, TypeError, r"labels must be a torch.Tensor, got list"),
    ((S,), dict(mask=[[True] * 3] * 2), TypeError, r"mask must be a torch.Tensor, got list"),
    ((S,), dict(lengths=torch.tensor([1, 2, 3])), ValueError, r"lengths must have shape \(2,\)"),
    ((S,), dict(respect_input_order=False), ValueError, r"sorts by labels, but labels is None"),
    ((S, torch.tensor([[0.0, float("nan"), 1.0], [0.0, 0.0, 0.0]])), dict(respect_input_order=False),
     ValueError, r"labels contain NaN"),
    ((S,), dict(lambda_weight="ndcg"), ValueError, r"lambda_weight must be None, 'plistmle'.*'ndcg'"),
    ((S,), dict(lambda_weight=3), TypeError, r"lambda_weight must be None, 'plistmle', a tensor or a callable"),
    ((S,), dict(lambda_weight=torch.ones(2, 2)), ValueError, r"lambda_weight must have the shape of scores"),
    ((S,), dict(lambda_weight=torch.ones(2, 3, dtype=torch.long)), TypeError, r"lambda_weight must be floating"),
    ((S,), dict(lambda_weight=lambda m: torch.ones(1, 3)), ValueError,
     r"lambda_weight\(rank_mask\) must have the shape of scores"),
    ((S,), dict(lambda_weight=torch.tensor([[1.0, -0.5, 0.0], [1.0, 1.0, 1.0]])), ValueError,
     r"lambda_weight must be finite and >= 0 at real ranks, got -0.5"),
    ((S,), dict(lambda_weight=lambda m: -m.float()), ValueError, r"lambda_weight\(rank_mask\) must be finite and >= 0 .* -1"),
    ((S,), dict(lambda_weight=torch.tensor([[1.0, float("nan"), 0.0], [1.0, 1.0, 1.0]])), ValueError,
     r"lambda_weight must be finite and >= 0 at real ranks, got nan"),
    ((S,), dict(lambda_weight=torch.tensor([[1.0, 1.0, 0.0], [float("inf"), 1.0, 1.0]])), ValueError,
     r"lambda_weight must be finite and >= 0 at real ranks, got inf"),
    ((S,), dict(generator=42), TypeError, r"generator must be a torch.Generator or None, got int"),
    ((S,), dict(ties="shuffle"), ValueError, r"ties must be one of \('stable', 'random'\), got 'shuffle'"),
    ((S,), dict(reduction="avg"), ValueError, r"reduction must be one of .*'avg'"),
    ((S,), dict(backend="cuda"), ValueError, r"backend must be one of .*'cuda'"),
    ((S.to_sparse(),), {}, TypeError, r"scores must be a dense \(strided\) tensor, got layout torch.sparse_coo"),
    ((S.to_sparse_csr(),), {}, TypeError, r"scores must be a dense \(strided\) tensor, got layout torch.sparse_csr"),
    ((torch.nested.nested_tensor([torch.zeros(3), torch.zeros(2)]),), {}, TypeError,
     r"scores must be a dense \(strided\) tensor, got a nested one"),
    ((S, S.to_sparse()), dict(respect_input_order=False), TypeError, r"labels must be a dense \(strided\) tensor"),
    ((S,), dict(mask=torch.ones(2, 3, dtype=torch.bool).to_sparse()), TypeError,
     r"mask must be a dense \(strided\) tensor"),
    ((S,), dict(lengths=torch.tensor([1, 2]).to_sparse()), TypeError, r"lengths must be a dense \(strided\) tensor"),
    ((S,), dict(lambda_weight=torch.ones(2, 3).to_sparse()), TypeError,
     r"lambda_weight must be a dense \(strided\) tensor"),
    ((S,), dict(lambda_weight=lambda m: m.float().to_sparse()), TypeError,
     r"lambda_weight\(rank_mask\) must be a dense \(strided\) tensor"),
])
def test_bad_input_names_the_argument(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        listmle_loss(*args, **kwargs)


@pytest.mark.parametrize("module, kwargs, error, match", [
    (ListMLELoss, dict(reduction="avg"), ValueError, r"reduction must be one of .*'avg'"),
    (ListMLELoss, dict(backend="cuda"), ValueError, r"backend must be one of .*'cuda'"),
    (ListMLELoss, dict(ties="shuffle"), ValueError, r"ties must be one of \('stable', 'random'\), got 'shuffle'"),
    (ListMLELoss, dict(respect_input_order="False"), TypeError, r"respect_input_order must be a bool, got str"),
    (ListMLELoss, dict(lambda_weight="ndcg"), ValueError, r"lambda_weight must be None, 'plistmle'.*'ndcg'"),
    (ListMLELoss, dict(lambda_weight=3), TypeError, r"lambda_weight must be None, 'plistmle', a tensor or a callable"),
    (ListMLELoss, dict(generator=42), TypeError, r"generator must be a torch.Generator or None, got int"),
    (PListMLELoss, dict(reduction="avg"), ValueError, r"reduction must be one of .*'avg'"),
    (PListMLELoss, dict(lambda_weight="p-listmle"), ValueError, r"lambda_weight must be None, 'plistmle'"),
    (LambdaLoss, dict(weighting_scheme="ndcg"), ValueError, r"weighting_scheme must be one of .*'ndcg'"),
    (LambdaLoss, dict(k=-1), ValueError, r"k must be None or an int >= 0, got -1"),
    (LambdaLoss, dict(sigma=0.0), ValueError, r"sigma must be finite and > 0, got 0.0"),
    (LambdaLoss, dict(mu=float("nan")), ValueError, r"mu must be finite and >= 0, got nan"),
    (LambdaLoss, dict(eps=0.0), ValueError, r"eps must be finite and > 0, got 0.0"),
    (LambdaLoss, dict(reduction_log="log2"), ValueError, r"reduction_log must be one of"),
    (LambdaLoss, dict(reduction="avg"), ValueError, r"reduction must be one of .*'avg'"),
    (RankNetLoss, dict(k=2.0), TypeError, r"k must be None or an int >= 0, got float 2.0"),
    (RankNetLoss, dict(sigma="1"), TypeError, r"sigma must be a real number, got str '1'"),
    (ListNetLoss, dict(reduction="avg"), ValueError, r"reduction must be one of .*'avg'"),
    (ListNetLoss, dict(backend="cuda"), ValueError, r"backend must be one of .*'cuda'"),
])
def test_modules_name_a_bad_option_when_built(module, kwargs, error, match):
    """Where the loss is configured, not at the first batch of a training run."""
    with pytest.raises(error, match=match):
        module(**kwargs)


def test_nan_labels_at_padding_are_fine():
    labels = torch.tensor([[0.0, float("nan"), 1.0]])
    loss = listmle_loss(torch.zeros(1, 3), labels, lengths=torch.tensor([1]), respect_input_order=False)
    assert loss == 0
    loss = listmle_loss(torch.zeros(1, 3), labels, mask=torch.tensor([[True, False, False]]), respect_input_order=False)
    assert loss == 0
    with pytest.raises(ValueError, match="NaN"):
        listmle_loss(torch.zeros(1, 3), labels, mask=torch.tensor([[True, True, False]]), respect_input_order=False)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_labels_are_not_read_in_input_order(backend):
    """respect_input_order=True ignores the labels' values: NaN and infinities at real documents are not checked
    (validate=True) and change nothing."""
    scores = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.tensor([[float("nan"), 1.0, float("inf"), 0.0, float("-inf")]] * 3)
    loss = listmle_loss(scores, labels, lambda_weight="plistmle", reduction="none", backend=backend)
    (grad,) = torch.autograd.grad(loss.sum(), scores)
    expected = listmle_reference(scores.detach().double(), lambda_weight="plistmle", reduction="none")
    torch.testing.assert_close(loss.detach().double(), expected, rtol=2e-5, atol=2e-5)
    unlabelled = listmle_loss(scores, lambda_weight="plistmle", reduction="none", backend=backend)
    assert torch.equal(loss, unlabelled)
    assert torch.equal(grad, torch.autograd.grad(unlabelled.sum(), scores)[0])


def test_one_document_lists_warn_that_the_loss_is_zero():
    """A cross-encoder's flattened (B * L, 1) logits make B * L one-document lists: a loss of 0 that trains nothing."""
    scores = torch.randn(6, 1, requires_grad=True)
    with pytest.warns(UserWarning, match=r"shape \(6, 1\).*reshaped to \(B, L\)"):
        loss = listmle_loss(scores, torch.arange(6.0)[:, None], respect_input_order=False)
    loss.backward()
    assert loss == 0 and (scores.grad == 0).all()
    with warnings.catch_warnings():  # one (1, 1) list is no flattened batch: no warning
        warnings.simplefilter("error")
        assert listmle_loss(torch.randn(1, 1)) == 0


def test_validate_false_skips_the_value_checks():
    """validate=False reads no values (no host sync on CUDA): bad values go unchecked, as documented."""
    listmle_loss(S, lengths=torch.tensor([1, 4]), validate=False)
    listmle_loss(S, torch.tensor([[0.0, float("nan"), 1.0], [0.0] * 3]), respect_input_order=False, validate=False)
    listmle_loss(S, lambda_weight=torch.tensor([[1.0, -0.5, 0.0], [1.0] * 3]), validate=False)


def test_infinite_labels_are_not_nan():
    """+inf and -inf labels sum to NaN: the NaN check's fast path must fall back, not raise."""
    scores = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, -3.0]])
    labels = torch.tensor([[float("inf"), float("-inf"), 1.0], [0.0, 1.0, 2.0]])
    loss = listmle_loss(scores, labels, respect_input_order=False, reduction="none")
    expected = listmle_loss(scores.gather(1, torch.tensor([[0, 2, 1], [2, 1, 0]])), reduction="none")
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="NaN"):
        listmle_loss(S, torch.tensor([[float("inf"), float("nan"), 1.0], [0.0, 1.0, 2.0]]), respect_input_order=False)


def test_negative_weights_at_padded_ranks_are_ignored():
    weights = torch.tensor([[1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    loss = listmle_loss(S, lengths=torch.tensor([1, 3]), lambda_weight=weights, reduction="none")
    # row 1: one document, loss 0; row 2: weights 1/3 each, loss (log 3 + log 2 + log 1) / 3
    torch.testing.assert_close(loss, torch.tensor([0.0, math.log(6.0) / 3]))


def test_triton_needs_cuda_or_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    reason = triton_unavailable_reason(torch.device("cpu"))
    assert "CUDA tensors" in reason and "TRITON_INTERPRET=1" in reason
    with pytest.raises(ValueError, match=r"backend='triton' cannot run: .*CUDA tensors"):
        listmle_loss(S, backend="triton")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs two devices (CPU and CUDA)")
def test_tensors_on_different_devices():
    with pytest.raises(ValueError, match=r"labels is on cpu but scores are on cuda"):
        listmle_loss(S.cuda(), torch.zeros(2, 3), respect_input_order=False)


def creatable_dtypes():
    """Every torch dtype a (2, 3) tensor of small integers can be converted to."""
    dtypes = []
    for name in dir(torch):
        dtype = getattr(torch, name)
        if isinstance(dtype, torch.dtype) and dtype not in dtypes:
            try:
                with warnings.catch_warnings():  # complex32 is "experimental"
                    warnings.simplefilter("ignore")
                    torch.zeros(2, 3).to(dtype)
            except (RuntimeError, TypeError):
                continue
            dtypes.append(dtype)
    return sorted(dtypes, key=str)


ALL_DTYPES = creatable_dtypes()
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
LABELS = FLOATS + (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16,
                   torch.uint32, torch.uint64)


@pytest.mark.parametrize("backend", ["auto", "torch", "triton"])
@settings(max_examples=60)
@given(scores_dtype=st.sampled_from(FLOATS) | st.sampled_from(ALL_DTYPES),
       labels_dtype=st.sampled_from(LABELS) | st.sampled_from(ALL_DTYPES),
       weights_dtype=st.sampled_from(FLOATS) | st.sampled_from(ALL_DTYPES), seed=st.integers(0, 1000))
def test_dtypes_are_accepted_exactly_as_documented(backend, scores_dtype, labels_dtype, weights_dtype, seed):
    """Scores and lambda weights: float16/bfloat16/float32/float64, labels: bool, any integer or those; anything else
    (float8, complex) is a TypeError naming the first argument at fault; what is accepted matches the reference."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(3, 5, generator=gen).to(scores_dtype)
    labels = torch.randint(0, 4, (3, 5), generator=gen).to(labels_dtype)
    weights = torch.rand(3, 5, generator=gen).to(weights_dtype)
    kwargs = dict(lambda_weight=weights, respect_input_order=False, reduction="none", backend=backend)
    culprit = ("scores" if scores_dtype not in FLOATS else "labels" if labels_dtype not in LABELS
               else "lambda_weight" if weights_dtype not in FLOATS else None)
    if culprit is not None:
        with pytest.raises(TypeError, match=rf"^{culprit} must"):
            listmle_loss(scores, labels, **kwargs)
        return
    loss = listmle_loss(scores, labels, **kwargs)
    ref = listmle_reference(scores.double(), labels.double(), lambda_weight=weights.double(),
                            respect_input_order=False, reduction="none")
    torch.testing.assert_close(loss.double(), ref, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("backend", ["auto", "torch", "triton"])
def test_scores_on_the_meta_device(backend):
    """Nothing to compute with: a ValueError naming scores, whichever backend is asked for."""
    with pytest.raises(ValueError, match=r"scores are on meta; listmle_loss takes CPU or CUDA tensors"):
        listmle_loss(torch.zeros(2, 3, device="meta", requires_grad=True), backend=backend)


def test_the_operator_runs_on_meta_tensors():
    """The registered operator (what torch.compile traces) keeps its fake: called on meta tensors it gives the
    shapes and dtypes of its outputs, as tracing with fake tensors does."""
    scores = torch.zeros(4, 7, device="meta", dtype=torch.bfloat16)
    row_loss, grad = listmle_rows(scores, None, None, None, None, 0, False, 0, 1, True, "torch")
    assert row_loss.device.type == "meta" and row_loss.shape == (4,) and row_loss.dtype == torch.float32
    assert grad.device.type == "meta" and grad.shape == (4, 7) and grad.dtype == torch.bfloat16


def test_tensors_on_different_devices_meta():
    with pytest.raises(ValueError, match=r"mask is on meta but scores are on cpu"):
        listmle_loss(S, mask=torch.ones(2, 3, dtype=torch.bool, device="meta"))
    with pytest.raises(ValueError, match=r"lengths is on meta but scores are on cpu"):
        listmle_loss(S, lengths=torch.ones(2, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match=r"labels is on meta but scores are on cpu"):
        listmle_loss(S, torch.zeros(2, 3, device="meta"), respect_input_order=False)
    with pytest.raises(ValueError, match=r"lambda_weight is on meta but scores are on cpu"):
        listmle_loss(S, lambda_weight=torch.ones(2, 3, device="meta"))


def value_check_inputs(device):
    scores = torch.zeros(2, 3, device=device)
    labels = torch.tensor([[float("inf"), float("-inf"), 1.0], [0.0, 1.0, float("nan")]], device=device)
    lengths = torch.tensor([3, 2], device=device)  # the NaN label is padding
    weights = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, -1.0]], device=device)  # so is the negative weight
    return scores, labels, lengths, weights


@pytest.mark.parametrize("device", sorted({"cpu", DEVICE}))
def test_value_checks_read_together_raise_the_first_failure(device):
    """The value checks are read together (one host sync on CUDA) and raise in argument order."""
    scores, labels, lengths, weights = value_check_inputs(device)
    kwargs = dict(lambda_weight=weights, respect_input_order=False)
    listmle_loss(scores, labels, lengths=lengths, **kwargs)  # infinite labels, NaN and negatives at padding: fine
    too_long = torch.tensor([4, 3], device=device)
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 3\].*got 4"):
        listmle_loss(scores, labels, lengths=too_long, **kwargs)  # every check fails: lengths come first
    with pytest.raises(ValueError, match="NaN"):
        listmle_loss(scores, labels, lengths=torch.tensor([3, 3], device=device), **kwargs)
    with pytest.raises(ValueError, match=r"must be finite and >= 0 at real ranks, got -1"):
        listmle_loss(scores, labels.nan_to_num(), lengths=torch.tensor([3, 3], device=device), **kwargs)


def test_label_sums_that_overflow_are_not_nan():
    """float32 labels whose sum overflows to inf: the NaN check's quick sum says nothing, no false alarm."""
    labels = torch.tensor([[3e38, 3e38, -3e38, 1.0], [-3e38, 3e38, -3e38, 3e38]])
    loss = listmle_loss(torch.zeros(2, 4), labels, respect_input_order=False, reduction="none")
    assert torch.isfinite(loss).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host syncs exist only on CUDA")
def test_value_checks_cost_one_host_sync_on_cuda():
    scores, labels, lengths, weights = value_check_inputs("cuda")
    labels = labels.nan_to_num(posinf=2.0, neginf=-2.0)  # +inf meeting -inf would ask for the masked check
    listmle_loss(scores, labels, lengths=lengths, lambda_weight=weights, respect_input_order=False)  # warm up
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with pytest.warns(UserWarning) as syncs:
            listmle_loss(scores, labels, lengths=lengths, lambda_weight=weights, respect_input_order=False)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len([w for w in syncs if "synchroniz" in str(w.message)]) == 1


LABELS3 = torch.zeros(2, 3)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(weighting_scheme="ndcg"), ValueError, r"weighting_scheme must be one of \('none', .*'ndcg'"),
    (dict(weighting_scheme=None), ValueError, r"weighting_scheme must be one of .*None"),
    (dict(k=-1), ValueError, r"k must be None or an int >= 0, got -1"),
    (dict(k=2.0), TypeError, r"k must be None or an int >= 0, got float 2.0"),
    (dict(k=True), TypeError, r"k must be None or an int >= 0, got bool"),
    (dict(sigma=0.0), ValueError, r"sigma must be finite and > 0, got 0.0"),
    (dict(sigma=float("inf")), ValueError, r"sigma must be finite and > 0, got inf"),
    (dict(sigma="1"), TypeError, r"sigma must be a real number, got str '1'"),
    (dict(mu=-1.0), ValueError, r"mu must be finite and >= 0, got -1.0"),
    (dict(mu=float("nan")), ValueError, r"mu must be finite and >= 0, got nan"),
    (dict(eps=0.0), ValueError, r"eps must be finite and > 0, got 0.0"),
    (dict(reduction_log="log2"), ValueError, r"reduction_log must be one of \('binary', 'natural'\), got 'log2'"),
    (dict(reduction="avg"), ValueError, r"reduction must be one of .*'avg'"),
    (dict(backend="cuda"), ValueError, r"backend must be one of .*'cuda'"),
    (dict(mask=torch.ones(2, 3)), TypeError, r"mask must be a bool tensor"),
    (dict(lengths=torch.tensor([1, 4])), ValueError, r"lengths must lie in \[0, 3\].*got 4"),
])
def test_lambda_loss_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        lambda_loss(S, LABELS3, **kwargs)


@pytest.mark.parametrize("loss", ["lambda_loss", "ranknet_loss", "listnet_loss"])
@pytest.mark.parametrize("args, kwargs, error, match", [
    ((torch.zeros(3), torch.zeros(3)), {}, ValueError, r"scores must be 2-D.*\(3,\)"),
    ((torch.zeros(2, 3, dtype=torch.long), LABELS3), {}, TypeError, r"scores must be floating"),
    ((torch.zeros(2, 3, device="meta"), LABELS3), {}, ValueError, r"scores are on meta; \w+_loss takes CPU or CUDA"),
    ((S, None), {}, ValueError, r"labels are required"),
    ((S, LABELS3), dict(validate=0), TypeError, r"validate must be a bool, got int 0"),
    ((S, torch.zeros(2, 4)), {}, ValueError, r"labels must have the shape of scores"),
    ((S, torch.zeros(2, 3, dtype=torch.complex64)), {}, TypeError, r"labels must hold real numbers"),
    ((S, [[0.0] * 3] * 2), {}, TypeError, r"labels must be a torch.Tensor, got list"),
    ((S, torch.tensor([[0.0, float("nan"), 1.0], [0.0] * 3])), {}, ValueError, r"labels contain NaN at a real"),
    ((S, torch.tensor([[0.0, float("inf"), 1.0], [0.0] * 3])), {}, ValueError, r"labels contain \+inf at a real"),
    ((S, torch.tensor([[0.0, 1e300, 1.0], [0.0] * 3], dtype=torch.float64)), {}, ValueError,
     r"labels contain \+inf at a real document \(or a value past float32's range"),
    ((S, LABELS3), dict(mask=torch.ones(2, 3, dtype=torch.bool), lengths=torch.tensor([1, 2])), ValueError,
     r"either mask or lengths"),
    ((S.to_sparse(), LABELS3), {}, TypeError, r"scores must be a dense \(strided\) tensor, got layout"),
    ((S, LABELS3.to_sparse()), {}, TypeError, r"labels must be a dense \(strided\) tensor, got layout"),
    ((S, LABELS3), dict(mask=torch.ones(2, 3, dtype=torch.bool).to_sparse()), TypeError,
     r"mask must be a dense \(strided\) tensor"),
    ((S, LABELS3), dict(lengths=torch.tensor([1, 2]).to_sparse()), TypeError,
     r"lengths must be a dense \(strided\) tensor"),
])
def test_pairwise_and_listnet_bad_inputs_are_named(loss, args, kwargs, error, match):
    import listmle_kernels
    with pytest.raises(error, match=match):
        getattr(listmle_kernels, loss)(*args, **kwargs)


@pytest.mark.parametrize("loss, why", [("lambda_loss", r"its gain 2\^label is infinite"),
                                       ("ranknet_loss", r"two of them have no order"),
                                       ("listnet_loss", r"softmax\(labels\), the target distribution, is NaN")])
def test_infinite_label_error_names_what_it_breaks_in_that_loss(loss, why):
    """RankNet and ListNet have no gains: their +inf label errors name what +inf breaks there instead."""
    import listmle_kernels
    with pytest.raises(ValueError, match=r"labels contain \+inf at a real document.*" + why):
        getattr(listmle_kernels, loss)(S, torch.tensor([[0.0, float("inf"), 1.0], [0.0] * 3]))


def test_label_checks_ignore_padding_and_infinite_sums():
    """NaN and +inf at padding are fine; -inf at a real document is a label (no pairs / probability 0); +inf
    meeting -inf at padding asks for the masked check, which finds nothing."""
    labels = torch.tensor([[0.0, float("-inf"), float("nan")], [1.0, float("inf"), float("-inf")]])
    lengths = torch.tensor([2, 1])
    assert torch.isfinite(lambda_loss(S, labels, lengths=lengths))
    assert torch.isfinite(listnet_loss(S, labels, lengths=lengths))
    lambda_loss(S, torch.tensor([[0.0, float("nan"), 1.0], [0.0] * 3]), validate=False)  # unchecked, as documented


def test_listnet_needs_a_finite_label_a_row():
    labels = torch.tensor([[0.0, 1.0, 2.0], [float("-inf")] * 3])
    with pytest.raises(ValueError, match=r"labels of row 1 are -inf at every real document"):
        listnet_loss(S, labels)
    assert listnet_loss(S, labels, lengths=torch.tensor([3, 0])) > 0  # an empty row needs no target
    with pytest.raises(ValueError, match=r"labels of row 0 are -inf at every real document"):
        listnet_loss(S, torch.tensor([[float("-inf"), 1.0, 2.0], [0.0] * 3]), mask=torch.tensor(
            [[True, False, False], [True, True, True]]))


def test_pairwise_operators_run_on_meta_tensors():
    from listmle_kernels.custom_op import lambdaloss_rows, listnet_rows
    scores = torch.zeros(4, 7, device="meta", dtype=torch.bfloat16)
    labels = torch.zeros(4, 7, device="meta")
    row_loss, row_pairs, grad = lambdaloss_rows(scores, labels, None, None, 4, 0, 1.0, 10.0, 1e-10, 1.0, True, "torch")
    assert row_loss.dtype == torch.float32 and row_pairs.dtype == torch.int64 and row_pairs.shape == (4,)
    assert grad.shape == (4, 7) and grad.dtype == torch.float32  # the accumulator dtype: scaled in backward
    row_loss, grad = listnet_rows(scores, labels, None, None, 1, True, "torch")
    assert row_loss.dtype == torch.float32 and grad.dtype == torch.bfloat16 and grad.device.type == "meta"
