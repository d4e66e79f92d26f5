"""The oracles of LambdaLoss, RankNet and ListNet: sentence-transformers' definitions, one row at a time.

Written from the definitions (Wang et al., CIKM 2018; Burges et al., ICML 2005; Cao et al., ICML 2007) as
sentence-transformers 6.3 computes them, but over the real documents of each row only: padding is a mask
here, not a sentinel score. Independent of `listmle_kernels` on purpose. Pass float64 scores for a
high-precision reference; autograd gives the gradient.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["lambdaloss_reference", "ranknet_reference", "listnet_reference", "WEIGHTING_SCHEMES"]

WEIGHTING_SCHEMES = ("none", "ndcgloss1", "ndcgloss2", "lambdarank", "ndcgloss2pp")
DIFFERENCE_LIMIT = 1e8  # sentence-transformers clamps score differences to +-1e8


def _real_mask(scores, mask, lengths):
    batch, length = scores.shape
    if mask is not None:
        return mask.cpu().bool()
    if lengths is not None:
        return torch.arange(length)[None, :] < lengths.cpu()[:, None]
    return torch.ones(batch, length, dtype=torch.bool)


def _discount(position):
    """log2(2 + p) for the 0-based position p: the DCG discount of rank p + 1."""
    return math.log2(2 + position)


def _pair_weight(scheme, i, j, gain, mu):
    """The weight of the pair at score-order positions (i, j), by weighting scheme."""
    if scheme == "none":
        return 1.0
    if scheme == "ndcgloss1":
        return gain[i] / _discount(i)
    lambdarank = abs(1 / _discount(i) - 1 / _discount(j)) * abs(gain[i] - gain[j])
    if scheme == "lambdarank":
        return lambdarank
    delta = abs(i - j)
    # 1/D(|i-j|) - 1/D(|i-j| + 1) with D(d) = log2(1 + d); 0 on the diagonal
    ndcgloss2 = 0.0 if delta == 0 else abs(1 / math.log2(1 + delta) - 1 / math.log2(2 + delta)) * abs(gain[i] - gain[j])
    if scheme == "ndcgloss2":
        return ndcgloss2
    return mu * ndcgloss2 + lambdarank  # ndcgloss2pp


def lambdaloss_reference(scores, labels, mask=None, lengths=None, weighting_scheme="ndcgloss2pp", k=None,
                         sigma=1.0, eps=1e-10, mu=10.0, reduction_log="binary", reduction="mean"):
    """LambdaLoss over the real documents of each row (RankNet is weighting_scheme="none").

    Per row: the real documents in order of score, descending (equal scores keep input order; NaN first, as
    torch.sort puts it); gains (2^max(label, 0) - 1) / max(eps, maxDCG@k); discounts log2(2 + position).
    The pair at positions (i, j) counts when both labels are finite, label_i > label_j (any two finite labels,
    the diagonal included, for "ndcgloss1") and, with k, when i < k or j < k. Its term is
    weight_ij * logsigmoid(sigma * clamp(s_i - s_j, +-1e8)) (a NaN difference taken as 0), divided by ln 2 for
    reduction_log="binary". A row's loss is minus the sum of its counted terms.

    reduction: "mean" (sentence-transformers: the sum of all rows' losses over the number of counted pairs in
    the whole batch, at least 1), "sum", or "none" (the (B,) row losses).
    """
    if weighting_scheme not in WEIGHTING_SCHEMES:
        raise ValueError(f"weighting_scheme must be one of {WEIGHTING_SCHEMES}, got {weighting_scheme!r}")
    real = _real_mask(scores, mask, lengths)
    losses, pair_count = [], 0
    for b in range(scores.shape[0]):
        docs = torch.nonzero(real[b]).flatten()
        s_row = scores[b, docs.to(scores.device)]
        order = torch.sort(s_row.detach().cpu(), descending=True, stable=True).indices
        s = s_row[order.to(scores.device)]
        y = [float(v) for v in labels[b, docs[order].to(labels.device)].double().cpu()]
        n = len(y)
        top = n if not k else min(k, n)
        ideal = sorted((max(v, 0.0) for v in y), reverse=True)  # -inf and negative labels gain nothing
        max_dcg = max(eps, sum((2.0 ** v - 1) / _discount(p) for p, v in enumerate(ideal[:top])))
        gain = [(2.0 ** max(v, 0.0) - 1) / max_dcg for v in y]
        terms = []
        for i in range(n):
            for j in range(n):
                if not (math.isfinite(y[i]) and math.isfinite(y[j])):
                    continue
                if weighting_scheme != "ndcgloss1" and not y[i] > y[j]:
                    continue
                if k and not (i < k or j < k):
                    continue
                difference = (s[i] - s[j]).clamp(-DIFFERENCE_LIMIT, DIFFERENCE_LIMIT)
                if torch.isnan(difference):
                    difference = difference.detach().nan_to_num(0.0)
                term = _pair_weight(weighting_scheme, i, j, gain, mu) * F.logsigmoid(sigma * difference)
                terms.append(term / math.log(2) if reduction_log == "binary" else term)
        pair_count += len(terms)
        losses.append(-torch.stack(terms).sum() if terms else scores[b, :0].sum())  # 0, on the graph, never NaN
    losses = torch.stack(losses) if losses else scores.new_zeros(0)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / max(pair_count, 1)


def ranknet_reference(scores, labels, mask=None, lengths=None, k=None, sigma=1.0, eps=1e-10,
                      reduction_log="binary", reduction="mean"):
    """RankNet: LambdaLoss without weights, over pairs label_i > label_j."""
    return lambdaloss_reference(scores, labels, mask, lengths, "none", k, sigma, eps, 10.0, reduction_log,
                                reduction)


def listnet_reference(scores, labels, mask=None, lengths=None, reduction="mean"):
    """ListNet: per row, the cross-entropy -sum_j p_j * log softmax(s)_j with p = softmax(labels), both over
    the real documents only (a real label of -inf has probability 0). A row with no real document has loss 0;
    one whose real labels are all -inf has no target distribution (its NaN target gives no defined result
    here, and the package rejects it).

    reduction: "mean" (sentence-transformers: over the B rows; NaN for a batch of no rows, the mean of nothing, as
    torch's and sentence-transformers' cross-entropy give), "sum", or "none" ((B,)).
    """
    real = _real_mask(scores, mask, lengths)
    losses = []
    for b in range(scores.shape[0]):
        docs = torch.nonzero(real[b]).flatten().to(scores.device)
        if len(docs) == 0:
            losses.append(scores[b, :0].sum())  # 0, on the graph, never NaN
            continue
        target = torch.softmax(labels[b, docs.to(labels.device)].to(scores.dtype).to(scores.device), dim=0)
        log_prob = torch.log_softmax(scores[b, docs], dim=0)
        losses.append(-torch.where(target > 0, target * log_prob, 0.0).sum())
    losses = torch.stack(losses) if losses else scores.new_zeros(0)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / scores.shape[0]
