"""The oracles of the pairwise and ListNet losses against sentence-transformers' own losses.

sentence-transformers pads scores with -1e16 and labels with -inf; the oracles take a mask instead. On rows of
distinct scores above -1e16 (so that its unstable sort has one answer and its padding sorts last) the two must
give the same loss and gradient: this is what makes the oracles an independent definition of its losses.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import lambdaloss_reference, listnet_reference

from cases import ScoreTable

st_losses = pytest.importorskip("sentence_transformers.cross_encoder.losses")

SCHEMES = {"none": st_losses.NoWeightingScheme, "ndcgloss1": st_losses.NDCGLoss1Scheme,
           "ndcgloss2": st_losses.NDCGLoss2Scheme, "lambdarank": st_losses.LambdaRankScheme,
           "ndcgloss2pp": st_losses.NDCGLoss2PPScheme}


def batch(sizes, seed, minus_inf):
    """Distinct scores (a random permutation of a grid, one per document), graded labels with some -inf."""
    gen = torch.Generator().manual_seed(seed)
    total = sum(sizes)
    model = ScoreTable(total, seed)
    with torch.no_grad():
        model.scores.copy_((torch.randperm(total, generator=gen).double() * 0.37 - total * 0.1).float())
    ids = iter(range(total))
    docs = [[str(next(ids)) for _ in range(n)] for n in sizes]
    labels = [torch.where(torch.rand(n, generator=gen) < minus_inf, float("-inf"),
                          torch.randint(-1, 4, (n,), generator=gen).float()) for n in sizes]
    return model, ([f"query {i}" for i in range(len(sizes))], docs), labels


def padded(model, sizes, labels):
    """The oracle's inputs: the table's scores as a (B, L) matrix, labels, and lengths."""
    length = max(sizes)
    scores = torch.zeros(len(sizes), length, dtype=torch.float64)
    label_matrix = torch.zeros(len(sizes), length, dtype=torch.float64)
    start = 0
    for b, n in enumerate(sizes):
        scores[b, :n] = model.scores.detach()[start:start + n].double()
        label_matrix[b, :n] = labels[b].double()
        start += n
    return scores.requires_grad_(True), label_matrix, torch.tensor(sizes)


def theirs(loss_fn, model, inputs, labels):
    model.zero_grad()
    loss = loss_fn(inputs, labels)
    if loss.grad_fn is not None:  # a fresh 0 when no pair counts
        loss.backward()
    grad = model.scores.grad if model.scores.grad is not None else torch.zeros_like(model.scores)
    return loss.detach().double(), grad.double()


def ours(oracle, model, sizes, labels, **kwargs):
    scores, label_matrix, lengths = padded(model, sizes, labels)
    loss = oracle(scores, label_matrix, lengths=lengths, **kwargs)
    loss.backward()
    grad = torch.cat([scores.grad[b, :n] for b, n in enumerate(sizes)])
    return loss.detach(), grad


@settings(max_examples=30)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3), seed=st.integers(0, 10 ** 6),
       scheme=st.sampled_from(sorted(SCHEMES)), k=st.sampled_from([None, 1, 3]), sigma=st.sampled_from([1.0, 0.5]),
       reduction_log=st.sampled_from(["binary", "natural"]), minus_inf=st.sampled_from([0.0, 0.3]))
def test_lambdaloss_oracle_is_sentence_transformers_lambdaloss(sizes, seed, scheme, k, sigma, reduction_log,
                                                               minus_inf):
    model, inputs, labels = batch(sizes, seed, minus_inf)
    weighting = SCHEMES[scheme](mu=3.0) if scheme == "ndcgloss2pp" else SCHEMES[scheme]()
    ref_loss, ref_grad = theirs(st_losses.LambdaLoss(model, weighting_scheme=weighting, k=k, sigma=sigma,
                                                     reduction_log=reduction_log), model, inputs, labels)
    loss, grad = ours(lambdaloss_reference, model, sizes, labels, weighting_scheme=scheme, k=k, sigma=sigma,
                      mu=3.0, reduction_log=reduction_log)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


@settings(max_examples=20)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=3), seed=st.integers(0, 10 ** 6),
       minus_inf=st.sampled_from([0.0, 0.3]))
def test_listnet_oracle_is_sentence_transformers_listnet(sizes, seed, minus_inf):
    model, inputs, labels = batch(sizes, seed, minus_inf)
    labels = [torch.where(torch.isinf(row).all(), torch.zeros_like(row), row) for row in labels]  # a defined target
    ref_loss, ref_grad = theirs(st_losses.ListNetLoss(model), model, inputs, labels)
    loss, grad = ours(listnet_reference, model, sizes, labels)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
