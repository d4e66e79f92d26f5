"""Shared test helpers: random ListMLE problems, the backends under test, tolerances per dtype."""

import torch
from hypothesis import strategies as st

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BACKENDS = ("torch", "triton")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)

# Loss and gradient tolerances against the float64 reference computed from the same (rounded) scores.
# The loss is always accumulated in float32 (float64), so it is as exact as float32 for every dtype;
# the gradient is rounded to the scores' dtype.
LOSS_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}
GRAD_TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def assert_close(actual, expected, dtype, tol_table, scale=1.0):
    tol = tol_table[dtype]
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol * scale)


@st.composite
def listmle_problems(draw, max_batch=6, max_length=40, dtypes=DTYPES):
    """A random problem: tensors plus the keyword arguments of listmle_loss (backend excluded)."""
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_length))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2 ** 31 - 1))
    gen = torch.Generator().manual_seed(seed)
    # 25: rows of a few documents stay within the linear sums' span (60 below the row's max in the kernel,
    # 80 on the CPU), longer ones pass it and take the log-space scans
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 25.0]))
    scores = (torch.randn(batch, length, generator=gen) * scale).to(dtype)
    label_kind = draw(st.sampled_from(["binary", "graded", "float"]))
    if label_kind == "float":
        labels = torch.randn(batch, length, generator=gen)
    else:
        labels = torch.randint(0, 2 if label_kind == "binary" else 5, (batch, length), generator=gen)
    kwargs = {}
    padding = draw(st.sampled_from(["none", "mask", "lengths"]))
    if padding == "mask":
        kwargs["mask"] = torch.rand(batch, length, generator=gen) < draw(st.sampled_from([0.3, 0.7, 1.0]))
    elif padding == "lengths":
        kwargs["lengths"] = torch.randint(0, length + 1, (batch,), generator=gen)
    weight = draw(st.sampled_from(["none", "plistmle", "tensor", "callable"]))
    if weight == "plistmle":
        kwargs["lambda_weight"] = "plistmle"
    elif weight == "tensor":
        kwargs["lambda_weight"] = torch.rand(batch, length, generator=gen, dtype=torch.float64)
    elif weight == "callable":
        kwargs["lambda_weight"] = lambda rank_mask: 1.0 / (1.0 + torch.cumsum(rank_mask.double(), 1))
    kwargs["respect_input_order"] = draw(st.booleans())
    kwargs["reduction"] = draw(st.sampled_from(["mean", "sum", "none"]))
    return scores, labels, kwargs


def to_device(scores, labels, kwargs, device=DEVICE):
    moved = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    return scores.to(device), labels.to(device), moved


def pretend_zero_based_plistmle_default(monkeypatch, weight_class):
    """Make sentence-transformers' `PListMLELambdaWeight` (`weight_class`) behave as before 6.2 (6.0.1's forward:
    default weights 2^(n - rank) - 1 on 0-based ranks), and drop the drop-in's cached check of the release."""
    def forward(self, mask):
        if self.rank_discount_fn is not None:
            return self.rank_discount_fn(mask)
        n = mask.sum(dim=1, keepdim=True)
        return (torch.pow(2.0, n - torch.arange(mask.size(1)).expand_as(mask)) - 1.0) * mask

    from listmle_kernels.integrations import sentence_transformers as drop_in
    monkeypatch.setattr(weight_class, "forward", forward)
    monkeypatch.setattr(drop_in, "_default_weights_match_kernel", drop_in._default_weights_match_kernel.__wrapped__)


# How the rows of `extreme_scores` are drawn: within the linear sums' reach, past it, far from 0 (offsets up to
# 1e30), or with far outliers (up to 1e30 above or below the rest, which may sit far from 0 too).
SCORE_PLANS = ("narrow", "wide", "far", "outliers")


@st.composite
def extreme_row(draw, length, dtype, plan):
    """One row of `length` scores drawn by `plan` (SCORE_PLANS), as `dtype` (float16 cannot hold them)."""
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    noise = torch.randn(length, generator=gen, dtype=torch.float64)
    if plan == "narrow":
        row = noise * draw(st.sampled_from([0.1, 1.0, 5.0]))
    elif plan == "wide":
        row = noise * draw(st.sampled_from([100.0, 1e3]))
    elif plan == "far":
        row = draw(st.sampled_from([-1.0, 1.0])) * draw(st.sampled_from([1e4, 1e6, 1e30])) \
            + noise * draw(st.sampled_from([1.0, 30.0]))
    else:
        row = draw(st.sampled_from([0.0, 1e4, -1e4])) + noise * draw(st.sampled_from([0.1, 1.0, 5.0]))
        for _ in range(draw(st.integers(1, 3))):
            size = 10.0 ** draw(st.floats(1.5, 30.0))
            row[draw(st.integers(0, length - 1))] += draw(st.sampled_from([-1.0, 1.0])) * size
    return row.to(dtype)


class ScoreTable(torch.nn.Module):
    """A stand-in for a CrossEncoder on the losses' path: one learnable score a document, so that many batches
    run in the time of one transformer forward."""

    num_labels = 1
    device = torch.device("cpu")

    def __init__(self, size, seed):
        super().__init__()
        self.scores = torch.nn.Parameter(torch.randn(size, generator=torch.Generator().manual_seed(seed)) * 3)

    def preprocess(self, pairs, prompt=None, task=None):
        return {"ids": torch.tensor([int(document) for _, document in pairs], dtype=torch.long)}

    def forward(self, features):
        return {"scores": self.scores[features["ids"]]}


WEIGHTING_SCHEMES = ("none", "ndcgloss1", "ndcgloss2", "lambdarank", "ndcgloss2pp")


@st.composite
def pairwise_problems(draw, max_batch=5, max_length=24, dtypes=DTYPES, listnet=False):
    """A random LambdaLoss (or, with listnet=True, ListNet) problem: scores, labels and the keyword arguments of
    lambda_loss / listnet_loss (backend excluded). Labels: binary, graded (negative ones too) or float, some -inf
    at real documents; scores sometimes rounded so that they tie; padding by mask (holes) or lengths."""
    batch = draw(st.integers(1, max_batch))
    length = draw(st.integers(1, max_length))
    dtype = draw(st.sampled_from(dtypes))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 31 - 1)))
    scores = torch.randn(batch, length, generator=gen) * draw(st.sampled_from([0.1, 1.0, 5.0, 30.0]))
    if draw(st.booleans()):  # equal scores: their input order decides their positions
        scores = scores.round()
    scores = scores.to(dtype)
    label_kind = draw(st.sampled_from(["binary", "graded", "float"]))
    if label_kind == "float":
        labels = torch.randn(batch, length, generator=gen) * 2
    else:
        labels = torch.randint(-1 if label_kind == "graded" else 0, 2 if label_kind == "binary" else 5,
                               (batch, length), generator=gen).float()
    minus_inf = torch.rand(batch, length, generator=gen) < draw(st.sampled_from([0.0, 0.2]))
    labels = labels.masked_fill(minus_inf, float("-inf"))
    kwargs = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    padding = draw(st.sampled_from(["none", "mask", "lengths"]))
    if padding == "mask":
        kwargs["mask"] = torch.rand(batch, length, generator=gen) < draw(st.sampled_from([0.3, 0.7, 1.0]))
    elif padding == "lengths":
        kwargs["lengths"] = torch.randint(0, length + 1, (batch,), generator=gen)
    if listnet:  # a target distribution needs one finite label a row: the first real document's
        real = kwargs.get("mask")
        if real is None:
            real = torch.arange(length)[None, :] < kwargs.get("lengths", torch.full((batch,), length))[:, None]
        first = (real.cumsum(1) == 1) & real
        labels = torch.where(first, labels.nan_to_num(neginf=0.0), labels)
        return scores, labels, kwargs
    kwargs["weighting_scheme"] = draw(st.sampled_from(WEIGHTING_SCHEMES))
    kwargs["k"] = draw(st.sampled_from([None, 1, 3, 10]))
    kwargs["sigma"] = draw(st.sampled_from([1.0, 0.5, 2.5]))
    kwargs["mu"] = draw(st.sampled_from([10.0, 3.0, 0.0]))
    kwargs["reduction_log"] = draw(st.sampled_from(["binary", "natural"]))
    return scores, labels, kwargs


def real_documents(scores, kwargs):
    """(B, L) bool: the real documents of a problem's keyword arguments."""
    if kwargs.get("mask") is not None:
        return kwargs["mask"]
    if kwargs.get("lengths") is not None:
        return torch.arange(scores.shape[1], device=scores.device)[None, :] < kwargs["lengths"][:, None]
    return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)


def loss_and_grad(fn, scores, grad_output=None):
    """fn(scores) and its gradient against `grad_output` (None: of its sum), from a fresh leaf of the same values."""
    scores = scores.detach().clone().requires_grad_(True)
    loss = fn(scores)
    (grad,) = torch.autograd.grad(loss if grad_output is not None else loss.sum(), scores, grad_output)
    return loss.detach(), grad


def assert_matches_oracle(loss_fn, oracle, scores, labels, kwargs, backend, grad_output):
    """Loss and gradient of `loss_fn` against `oracle` on the float64 of the same (rounded) scores: dtypes,
    shape, the per-dtype tolerances, and exactly 0 at padding."""
    acc = torch.float64 if scores.dtype == torch.float64 else torch.float32
    loss, grad = loss_and_grad(lambda s: loss_fn(s, labels, backend=backend, **kwargs), scores, grad_output.to(acc))
    ref_loss, ref_grad = loss_and_grad(lambda s: oracle(s, labels, **kwargs), scores.double(), grad_output.double())
    assert loss.dtype == acc and grad.dtype == scores.dtype and loss.shape == ref_loss.shape
    assert_close(loss, ref_loss, scores.dtype, LOSS_TOL, scale=max(1.0, ref_loss.abs().max().item()))
    assert_close(grad, ref_grad, scores.dtype, GRAD_TOL, scale=max(1.0, ref_grad.abs().max().item()))
    assert (grad[~real_documents(scores, kwargs)] == 0).all(), "padding must get exactly zero gradient"
