"""Ranking metrics with the same definitions as sentence-transformers 6.3's CrossEncoderRerankingEvaluator.

That evaluator uses `np.argsort(scores)[::-1]` (on float32 scores) for MRR@k, sklearn's `dcg_score(k=k)` (which
averages the gain over tied scores) for the DCG and sklearn's `average_precision_score` (one precision/recall point
per distinct score), and normalises NDCG and AP by every known positive of the query, also those missing from the
ranked list (`n_positives`). These are written out here in plain numpy so that the training scripts do not need
scikit-learn; tests compare them with it.

All functions take `relevant` (binary 0/1 per candidate) and `scores` (higher = ranked earlier), same length.
`n_positives` (NDCG, AP) is the number of the query's known positives, at least those in the list; the default is
those in the list, which gives scikit-learn's `ndcg_score` and `average_precision_score`.
"""

import numpy as np


def ranking_order(scores):
    """Candidate indices best first: `np.argsort(scores)[::-1]` on the scores as float32.

    This is CrossEncoderRerankingEvaluator.compute_metrics' own call on the input it gets (CrossEncoder.predict
    returns float32 numpy arrays), and that sameness is why score ties are broken as there. numpy's default sort is
    not stable and its tie order is not specified: it varies with numpy's build and the CPU (AVX-512 sorts reorder
    ties even in lists of a few candidates) and may vary with the dtype, so the scores are sorted in float32, not in
    the float64 they are handed in. The scores of this package are float32 values (train/evaluate.py make_score_fn)
    or distinct integers (base rankings), so the cast is exact.
    """
    return np.argsort(np.asarray(scores, dtype=np.float32))[::-1]


def _check_at_k(k):
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _known_positives(relevant, n_positives):
    """n_positives, defaulting to the positives in the list; fewer than those in the list is a contradiction."""
    in_list = int(np.sum(relevant))
    if n_positives is None:
        return in_list
    if n_positives < in_list:
        raise ValueError(f"n_positives ({n_positives}) is less than the {in_list} relevant candidates in the list")
    return int(n_positives)


def reciprocal_rank(relevant, scores, k):
    """1 / rank of the first relevant candidate within the top k (in ranking_order), else 0."""
    _check_at_k(k)
    relevant = np.asarray(relevant)
    ranking = ranking_order(scores)
    for rank, index in enumerate(ranking[:k]):
        if relevant[index]:
            return 1.0 / (rank + 1)
    return 0.0


def ndcg_at_k(relevant, scores, k, n_positives=None):
    """Binary NDCG@k, with tied scores sharing their positions' discounts equally (sklearn's tie averaging).

    DCG = sum over groups of equal score (best first) of mean(gain in group) * sum(discounts of the positions the
    group occupies); discount(position p, 0-based) = 1/log2(p + 2) for p < k, else 0. The ideal DCG places all
    n_positives known positives first (missing ones included, so a list that lacks some positives stays below 1).
    0 when nothing in the list is relevant.
    """
    _check_at_k(k)
    relevant = np.asarray(relevant, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n_positives = _known_positives(relevant, n_positives)
    if not relevant.any():
        return 0.0
    n = len(relevant)
    discount = 1.0 / np.log2(np.arange(n) + 2.0)
    discount[k:] = 0.0
    discount_cumsum = np.cumsum(discount)

    # Group equal scores, best first; every member of a group gets the group's mean gain.
    _, group_of, group_size = np.unique(-scores, return_inverse=True, return_counts=True)
    group_gain = np.zeros(len(group_size))
    np.add.at(group_gain, group_of.reshape(-1), relevant)
    group_last_position = np.cumsum(group_size) - 1
    group_discount = np.diff(discount_cumsum[group_last_position], prepend=0.0)
    dcg = float(np.sum(group_gain / group_size * group_discount))

    ideal_dcg = float(np.sum(1.0 / np.log2(np.arange(min(n_positives, k)) + 2.0)))
    return dcg / ideal_dcg


def average_precision(relevant, scores, n_positives=None):
    """Average precision: sum over distinct score thresholds (best first) of (recall gained at the threshold) *
    (precision at the threshold), counting all tied candidates at once; recall is out of n_positives, so a known
    positive missing from the list adds nothing. 0 when nothing in the list is relevant."""
    relevant = np.asarray(relevant, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    n_positives = _known_positives(relevant, n_positives)
    if not relevant.any():
        return 0.0
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_relevant = scores[order], relevant[order]
    # Last index of each run of equal scores: that is where a threshold includes the whole tie group.
    threshold_end = np.r_[np.flatnonzero(np.diff(sorted_scores) != 0), len(scores) - 1]
    true_positives = np.cumsum(sorted_relevant)[threshold_end]
    precision = true_positives / (threshold_end + 1)
    recall_gain = np.diff(true_positives, prepend=0.0) / n_positives
    return float(np.sum(recall_gain * precision))


def ranking_metrics(relevant, scores, at_k=10, n_positives=None):
    """(mrr@k, ndcg@k, ap) for one query, as CrossEncoderRerankingEvaluator.compute_metrics returns them: all 0 when
    nothing in the list is relevant, NDCG and AP normalised by n_positives known positives."""
    return (reciprocal_rank(relevant, scores, at_k), ndcg_at_k(relevant, scores, at_k, n_positives),
            average_precision(relevant, scores, n_positives))
