"""The LambdaLoss Triton kernels (`triton_lambdaloss`) against the float64 oracle (interpreted, without a GPU).

Rows are short, and the launcher's tile and in-kernel sort bound are forced small, so that every path runs:
the one-kernel path (the row fits a tile), the sorted scratch written by the kernel and read in tiles, and
the scratch sorted on the host (float64 scores, rows past the sort bound), with tile boundaries crossed.
"""

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from listmle_kernels.inputs import WEIGHTING_SCHEMES, LambdaLossInputs
from listmle_kernels.triton_lambdaloss import triton_lambdaloss
from reference import lambdaloss_reference

from cases import DEVICE, DTYPES

pytest.importorskip("triton")

# Row losses are sums of terms of one sign (weights >= 0, logsigmoid <= 0), so a relative tolerance holds
# whatever the row's length. The kernels accumulate in float32 for 16- and 32-bit scores (float64 for
# float64), from the scores exactly as given: the oracle sees the same rounded scores in float64.
LOSS_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}
# The gradient is in the accumulator dtype too; its terms have both signs, so the tolerance is relative to
# the largest entry of the batch's gradient.
GRAD_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}
PATHS = {"one kernel": dict(tile=64), "sorted in kernel, tiles": dict(tile=2),
         "sorted in kernel, tiles of 4": dict(tile=4), "sorted on host, tiles": dict(tile=4, sort_max_block=1)}
BINARY = 1 / math.log(2)


def run(inputs, need_grad, **launch):
    """triton_lambdaloss on DEVICE (the CPU, interpreted, without a GPU); its results back on the CPU."""
    moved = dataclasses.replace(inputs, **{field: getattr(inputs, field).to(DEVICE)
                                           for field in ("scores", "labels", "mask", "lengths")
                                           if getattr(inputs, field) is not None})
    return tuple(None if out is None else out.cpu() for out in triton_lambdaloss(moved, need_grad, **launch))


@st.composite
def problems(draw, max_batch=3, max_length=13, dtypes=DTYPES):
    """(LambdaLossInputs, launcher keywords): scores with ties and non-finite values, labels with ties, -inf
    and negative values, masks with holes or lengths, and every scheme, k, sigma, mu and log scale."""
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_length))
    dtype = draw(st.sampled_from(dtypes))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    scores = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    plan = draw(st.sampled_from(["spread", "ties", "extreme"]))
    if plan == "spread":
        scores *= draw(st.sampled_from([0.1, 1.0, 10.0]))
    elif plan == "ties":  # few distinct values, -0.0 among them
        scores = torch.round(scores * 1.5) / 2
    else:  # inf, -inf, NaN and (where the dtype holds it) differences past the clamp at +-1e8
        values = [float("inf"), float("-inf"), float("nan"), -float("nan")]
        if dtype not in (torch.float16,):
            values += [1e9, -1e9, 3e8]
        where = torch.rand(batch, length, generator=gen) < 0.3
        picks = torch.tensor(values, dtype=torch.float64)[torch.randint(len(values), (batch, length), generator=gen)]
        scores = torch.where(where, picks, scores)
    scores = scores.to(dtype)
    label_kind = draw(st.sampled_from(["binary", "graded", "float"]))
    if label_kind == "float":
        labels = torch.randn(batch, length, generator=gen)
    else:
        labels = torch.randint(-1 if label_kind == "graded" else 0, 2 if label_kind == "binary" else 5,
                               (batch, length), generator=gen).float()
    minus_inf = draw(st.sampled_from([0.0, 0.3]))
    labels = torch.where(torch.rand(batch, length, generator=gen) < minus_inf, float("-inf"), labels)
    mask = lengths = None
    padding = draw(st.sampled_from(["none", "mask", "lengths"]))
    if padding == "mask":  # holes anywhere, rows with no real document included
        mask = torch.rand(batch, length, generator=gen) < draw(st.sampled_from([0.3, 0.7]))
    elif padding == "lengths":
        lengths = torch.randint(0, length + 1, (batch,), generator=gen)
    scheme = draw(st.integers(0, len(WEIGHTING_SCHEMES) - 1))
    inputs = LambdaLossInputs(scores=scores, labels=labels, mask=mask, lengths=lengths, scheme=scheme,
                              k=draw(st.sampled_from([0, 1, 2, 5])), sigma=draw(st.sampled_from([1.0, 0.3, 2.5])),
                              mu=draw(st.sampled_from([10.0, 0.7])), eps=1e-10,
                              log_scale=draw(st.sampled_from([BINARY, 1.0])))
    return inputs, PATHS[draw(st.sampled_from(sorted(PATHS)))]


def oracle(inputs):
    """(row losses, gradient of their sum) of the float64 oracle on the same scores."""
    scores = inputs.scores.detach().to(torch.float64, copy=True).requires_grad_(True)
    losses = lambdaloss_reference(scores, inputs.labels, mask=inputs.mask, lengths=inputs.lengths,
                                  weighting_scheme=WEIGHTING_SCHEMES[inputs.scheme], k=inputs.k or None,
                                  sigma=inputs.sigma, eps=inputs.eps, mu=inputs.mu,
                                  reduction_log="binary" if inputs.log_scale == BINARY else "natural",
                                  reduction="none")
    # + 0 * scores: a batch whose only terms have NaN differences (no gradient) still has a graph
    (losses.sum() + 0.0 * scores.sum()).backward()
    return losses.detach(), scores.grad


def counted_pairs(inputs):
    """Per row, the ordered pairs the definition counts: real documents with finite labels, label_i > label_j
    (any two, the diagonal too, for NDCGLoss1), and a score-order position below k on either side."""
    real = real_positions(inputs)
    counts = []
    for b in range(real.shape[0]):
        docs = torch.nonzero(real[b]).flatten()
        order = torch.sort(inputs.scores[b, docs].double(), descending=True, stable=True).indices
        y = inputs.labels[b, docs[order]].tolist()
        count = 0
        for i, yi in enumerate(y):
            for j, yj in enumerate(y):
                finite = math.isfinite(yi) and math.isfinite(yj)
                ordered = inputs.scheme == 1 or yi > yj
                near_top = inputs.k == 0 or i < inputs.k or j < inputs.k
                count += finite and ordered and near_top
        counts.append(count)
    return torch.tensor(counts, dtype=torch.int64)


def real_positions(inputs):
    batch, length = inputs.scores.shape
    if inputs.mask is not None:
        return inputs.mask
    if inputs.lengths is not None:
        return torch.arange(length)[None, :] < inputs.lengths[:, None]
    return torch.ones(batch, length, dtype=torch.bool)


def check_against_oracle(inputs, launch):
    dtype = inputs.scores.dtype
    accumulator = torch.float64 if dtype == torch.float64 else torch.float32
    row_loss, row_pairs, grad = run(inputs, True, **launch)
    expected_loss, expected_grad = oracle(inputs)
    expected_pairs = counted_pairs(inputs)
    # The oracle's row without pairs is 0 * (sum of every score), NaN beside a NaN or infinite score; the
    # contract's is 0
    expected_loss = torch.where(expected_pairs == 0, 0.0, expected_loss)
    assert row_loss.dtype == accumulator and grad.dtype == accumulator and row_pairs.dtype == torch.int64
    assert grad.shape == inputs.scores.shape and grad.is_contiguous()
    tol = LOSS_TOL[dtype]
    torch.testing.assert_close(row_loss.double(), expected_loss, rtol=tol, atol=tol, equal_nan=True)
    tol = GRAD_TOL[dtype]
    torch.testing.assert_close(grad.double(), expected_grad, rtol=tol,
                               atol=tol * max(1.0, float(expected_grad.abs().max())))
    assert torch.equal(row_pairs, expected_pairs)
    assert not grad[~real_positions(inputs)].any(), "gradient at padding"
    loss_only, pairs_only, no_grad = run(inputs, False, **launch)
    assert no_grad is None
    assert torch.equal(loss_only, row_loss) and torch.equal(pairs_only, row_pairs)


@settings(max_examples=80)
@given(problem=problems())
def test_matches_oracle(problem):
    check_against_oracle(*problem)


@settings(max_examples=10)
@given(problem=problems(max_batch=2, max_length=40, dtypes=(torch.float32, torch.float64)))
def test_matches_oracle_across_many_tiles(problem):
    inputs, _ = problem
    check_against_oracle(inputs, dict(tile=8, sort_max_block=64 if inputs.scores.shape[1] < 33 else 16))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_path_and_dtype(dtype, path):
    """Each launcher path for each dtype, on one row with everything in it: a hole, ties in scores and labels,
    a NaN and an infinite score, a -inf and a negative label."""
    scores = torch.tensor([[0.5, float("nan"), 0.5, -1.0, 2.0, float("inf"), 0.5, -0.0, 0.0, 3.0, 1.0]]).to(dtype)
    labels = torch.tensor([[1.0, 2.0, 1.0, float("-inf"), 0.0, 3.0, 2.0, -1.0, 1.0, 0.0, 2.0]])
    mask = torch.tensor([[True] * 9 + [False, True]])
    for scheme in range(len(WEIGHTING_SCHEMES)):
        inputs = LambdaLossInputs(scores, labels, mask, None, scheme, 4, 1.0, 10.0, 1e-10, BINARY)
        check_against_oracle(inputs, PATHS[path])


@pytest.mark.parametrize("lengths_dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_strided_inputs_and_length_dtypes(lengths_dtype):
    """Scores and labels as strided views (every other column of wider tensors), lengths of any integer dtype."""
    gen = torch.Generator().manual_seed(3)
    wide_scores = torch.randn(3, 22, generator=gen)
    wide_labels = torch.randint(-1, 4, (3, 22), generator=gen).float()
    scores, labels = wide_scores[:, ::2], wide_labels[:, ::2]
    assert not scores.is_contiguous()
    lengths = torch.tensor([11, 4, 0], dtype=lengths_dtype)
    for launch in (dict(tile=16), dict(tile=4), dict(tile=4, sort_max_block=1)):
        inputs = LambdaLossInputs(scores, labels, None, lengths, 3, 0, 1.0, 10.0, 1e-10, 1.0)
        check_against_oracle(inputs, launch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_gain_with_an_eps_below_float32(dtype):
    """Labels 0 and -1 only: pairs count but every gain is 0, and maxDCG is eps = 1e-50, 0 in float32: weights 0,
    not 0 / 0."""
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(2, 9, generator=gen).to(dtype)
    labels = torch.randint(-1, 1, (2, 9), generator=gen).float()
    for launch in PATHS.values():
        for scheme in range(len(WEIGHTING_SCHEMES)):
            check_against_oracle(LambdaLossInputs(scores, labels, None, None, scheme, 0, 1.0, 10.0, 1e-50, 1.0), launch)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_labels_on_every_path(dtype):
    """Labels past 2^y's float32 range (128) and maxDCG's (two of 127), up to 1000, beside small ones, a -inf and
    padding holding the row's largest label: gains exact on every launcher path, every scheme, with and without k."""
    gen = torch.Generator().manual_seed(5)
    scores = torch.randn(2, 9, generator=gen).to(dtype)
    labels = torch.tensor([[1000.0, 999.0, 3.0, 0.0, 127.0, 128.0, -1.0, 998.5, 5.0],
                           [127.0, 127.0, 126.0, 65.5, float("-inf"), 0.0, 2.0, 300.0, 1000.0]])
    lengths = torch.tensor([9, 7])
    for launch in PATHS.values():
        for scheme in range(len(WEIGHTING_SCHEMES)):
            for k in (0, 3):
                check_against_oracle(LambdaLossInputs(scores, labels, None, lengths, scheme, k, 1.0, 10.0, 1e-10,
                                                      BINARY), launch)


def test_empty_batch_and_rows():
    for batch, length in ((0, 5), (3, 0)):
        inputs = LambdaLossInputs(torch.zeros(batch, length), torch.zeros(batch, length), None, None, 4, 0, 1.0,
                                  10.0, 1e-10, BINARY)
        row_loss, row_pairs, grad = run(inputs, True)
        assert row_loss.shape == row_pairs.shape == (batch,) and grad.shape == (batch, length)
        assert not row_loss.any() and not row_pairs.any()


def test_rows_without_pairs():
    """No real document, one, or only equal or -inf labels: loss 0, no pairs, gradient 0."""
    scores = torch.randn(4, 6)
    labels = torch.tensor([[1.0] * 6, [2.0] * 6, [float("-inf")] * 5 + [1.0], [1.0, 0.0] * 3])
    lengths = torch.tensor([0, 6, 6, 1])
    for launch in PATHS.values():
        inputs = LambdaLossInputs(scores, labels, None, lengths, 4, 0, 1.0, 10.0, 1e-10, BINARY)
        row_loss, row_pairs, grad = run(inputs, True, **launch)
        assert torch.equal(row_loss, torch.zeros(4)) and torch.equal(row_pairs, torch.zeros(4, dtype=torch.int64))
        assert torch.equal(grad, torch.zeros(4, 6))


def test_deterministic():
    """No atomics: the same inputs give the same bits, whatever the path."""
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 37, generator=gen)
    labels = torch.randint(0, 4, (3, 37), generator=gen).float()
    inputs = LambdaLossInputs(scores, labels, None, None, 4, 0, 1.0, 10.0, 1e-10, BINARY)
    for launch in (dict(tile=8), dict(tile=8, sort_max_block=1)):
        first = run(inputs, True, **launch)
        second = run(inputs, True, **launch)
        for a, b in zip(first, second):
            assert torch.equal(a, b)


class AllocationSizes(TorchDispatchMode):
    """The bytes of every tensor the ops under it produce (the interpreter's copies of the kernels' arguments,
    as bytes, included)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.sizes.append(tensor.numel() * tensor.element_size())
        return out


@pytest.mark.parametrize("launch", [dict(tile=16), dict(tile=16, sort_max_block=1)], ids=["kernel sort", "host sort"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_memory_is_linear_in_the_batch(launch, dtype):
    """No tensor the launcher makes holds more than B * L elements of 8 bytes (B = 8 also covers its O(L) table of
    3 x next_power_of_2(L) weights by position): the L^2 pairs exist only a tile at a time."""
    batch, length = 8, 150
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(batch, length, generator=gen).to(dtype)
    labels = torch.randint(0, 3, (batch, length), generator=gen).float()
    mask = torch.rand(batch, length, generator=gen) < 0.9
    inputs = LambdaLossInputs(scores, labels, mask, None, 4, 0, 1.0, 10.0, 1e-10, BINARY)
    with AllocationSizes() as allocations:
        run(inputs, True, **launch)
    assert allocations.sizes and max(allocations.sizes) <= 8 * batch * length
