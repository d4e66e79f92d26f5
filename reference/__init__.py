"""The oracle: ListMLE written literally from its definition, one row at a time.

Independent of the package on purpose (no shared helpers): tests and benchmarks compare
`listmle_kernels` against this. Autograd goes through `torch.logcumsumexp`; pass float64 scores
for a high-precision reference.
"""

from fractions import Fraction

import torch

from .pairwise import WEIGHTING_SCHEMES, lambdaloss_reference, listnet_reference, ranknet_reference

__all__ = ["listmle_reference", "plistmle_weights", "lambdaloss_reference", "ranknet_reference",
           "listnet_reference", "WEIGHTING_SCHEMES"]


def plistmle_weights(n: int, dtype=torch.float64) -> torch.Tensor:
    """p-ListMLE weights of sentence-transformers 6.2: 2^(n - rank) - 1 for rank = 1..n, normalised.

    Exact big-integer arithmetic, rounded once, so it is right for any n (no overflow).
    """
    raw = [2 ** (n - rank) - 1 for rank in range(1, n + 1)]
    total = sum(raw)
    return torch.tensor([float(Fraction(r, total)) if total else 0.0 for r in raw], dtype=dtype)


def listmle_reference(scores, labels=None, mask=None, lengths=None, lambda_weight=None,
                      respect_input_order=True, reduction="mean", stagewise=False):
    """Per row: loss = -sum_r w_r * (s[pi(r)] - log sum_{t >= r} exp s[pi(t)]) over the real documents.

    pi is the input order of the real documents, or (respect_input_order=False) their order by
    label, descending, ties kept in input order. Lambda weights (None, "plistmle", a (B, L) tensor of
    per-rank weights, or a callable(rank_mask) -> (B, L)) are normalised w / (sum(w) + 1e-10).

    stagewise=True takes each rank's term as the Plackett-Luce choice it is, the log-softmax of the
    documents still unranked at that rank (n softmaxes a row: short rows only). Each softmax subtracts its
    own max, so loss and autograd gradient are exact at any scale and any span. `torch.logcumsumexp` (the
    default) and its backward lose about eps * |s| absolute: in float64, three scores of 1e16 give a loss of
    0 instead of log 6, and beside an outlier of 1e30 the outlier's gradient comes out 0 instead of 2.
    """
    batch, length = scores.shape
    if mask is None:
        mask = torch.ones(batch, length, dtype=torch.bool)
        if lengths is not None:
            mask = torch.arange(length)[None, :] < lengths.cpu()[:, None]
    mask = mask.cpu()
    if callable(lambda_weight):
        n_real = mask.sum(1)
        rank_mask = torch.arange(length)[None, :] < n_real[:, None]
        lambda_weight = lambda_weight(rank_mask.to(scores.device))

    losses = []
    for b in range(batch):
        real = torch.nonzero(mask[b]).flatten().to(scores.device)
        if not respect_input_order:
            order = torch.sort(labels[b, real].double(), descending=True, stable=True).indices
            real = real[order]
        s = scores[b, real]
        n = len(real)
        if n == 0:
            losses.append(scores.sum() * 0.0)  # keeps the graph; value exactly 0
            continue
        if stagewise:
            log_prob = torch.stack([torch.log_softmax(s[r:], dim=0)[0] for r in range(n)])
        else:
            log_prob = s - torch.logcumsumexp(s.flip(0), dim=0).flip(0)
        if lambda_weight is None:
            w = torch.ones(n, dtype=s.dtype, device=s.device)
        elif isinstance(lambda_weight, str):
            w = plistmle_weights(n, s.dtype).to(s.device)  # already normalised, exactly
        else:
            w = lambda_weight[b, :n].to(s.dtype)
            w = w / (w.sum() + 1e-10)
        losses.append(-(w * log_prob).sum())
    losses = torch.stack(losses)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / batch
