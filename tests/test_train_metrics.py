"""train/metrics.py and train/nanobeir.evaluate_reranking: hand-computed values on toy rankings, and agreement with
scikit-learn and sentence-transformers' CrossEncoderRerankingEvaluator where those are installed."""

import train_fixtures  # noqa: F401  (first: puts the repository root on sys.path)
import math
import random

import numpy as np
import pytest

from train.metrics import average_precision, ndcg_at_k, ranking_metrics, ranking_order, reciprocal_rank
from train.nanobeir import evaluate_reranking

L2, L3, L4, L5 = (1 / math.log2(n) for n in (2, 3, 4, 5))  # discounts of positions 1..4


@pytest.mark.parametrize("relevant, scores, k, expected", [
    # (mrr@k, ndcg@k, ap)
    ([0, 1, 0, 0], [4, 3, 2, 1], 10, (1 / 2, L3, 1 / 2)),
    ([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], 10, (1.0, (1 + L4) / (1 + L3), (1 + 2 / 3) / 2)),
    ([0, 0, 1], [3, 2, 1], 2, (0.0, 0.0, 1 / 3)),           # the positive is past the cut-off k = 2
    ([0, 0, 1], [3, 2, 1], 3, (1 / 3, L4, 1 / 3)),
    ([0, 1, 1], [3, 2, 1], 1, (0.0, 0.0, (1 / 2 + 2 / 3) / 2)),  # ideal DCG@1 = 1
    # ties: a positive tied with a negative after it ranks second for MRR (numpy argsort reversed); NDCG averages
    # the gain over the tied positions; AP counts the tie group at once (precision 1/2 at recall 1)
    ([1, 0], [1.0, 1.0], 10, (1 / 2, 0.5 * (1 + L3), 1 / 2)),
    ([0, 1, 0, 0], [5.0, 2.0, 2.0, 2.0], 10, (1 / 4, (L3 + L4 + L5) / 3, 1 / 4)),
    ([1, 0, 1, 0], [1.0, 1.0, 1.0, 1.0], 2, (1 / 2, (0.5 * (1 + L3)) / (1 + L3), 1 / 2)),
])
def test_toy_rankings(relevant, scores, k, expected):
    assert ranking_metrics(relevant, scores, k) == pytest.approx(expected, abs=1e-12)


def test_no_positive_scores_zero():
    assert ndcg_at_k([0, 0, 0], [1, 2, 3], 10) == 0.0
    assert average_precision([0, 0], [1, 2]) == 0.0
    assert reciprocal_rank([0, 0], [1, 2], 10) == 0.0


def test_evaluate_reranking_by_hand():
    scores = {"P": 0.5, "Q": 3.0, "A": 2.0, "B": 1.0, "C": 9.0, "D": 0.0}
    samples = [
        # Q is a positive BM25 missed: base ranking A, P, B, then Q appended; reranked: Q, A, B, P
        {"query": "q1", "positive": ["P", "Q"], "documents": ["A", "P", "B"]},
        # no positive among the candidates: base metrics 0, but the positive is still reranked (C, B, D?): D last
        {"query": "q2", "positive": ["D"], "documents": ["C", "B"]},
        # a query without positives counts 0 in every mean
        {"query": "q3", "positive": [], "documents": ["A", "B"]},
    ]
    seen = []

    def score_fn(pairs):
        seen.extend(pairs)
        return [scores[doc] for _, doc in pairs]

    res = evaluate_reranking(score_fn, samples, at_k=10)
    assert sorted(seen) == sorted([("q1", d) for d in "PQAB"] + [("q2", d) for d in "DCB"])  # q3 not scored
    q1 = (1.0, (1 + L5) / (1 + L3), (1 + 2 / 4) / 2)
    q2 = (1 / 3, L4, 1 / 3)
    base_q1 = (1 / 2, (L3 + L5) / (1 + L3), (1 / 2 + 2 / 4) / 2)
    assert res["mrr@10"] == pytest.approx((q1[0] + q2[0]) / 3)
    assert res["ndcg@10"] == pytest.approx((q1[1] + q2[1]) / 3)
    assert res["map"] == pytest.approx((q1[2] + q2[2]) / 3)
    assert res["base_mrr@10"] == pytest.approx(base_q1[0] / 3)
    assert res["base_ndcg@10"] == pytest.approx(base_q1[1] / 3)
    assert res["base_map"] == pytest.approx(base_q1[2] / 3)
    # always_rerank_positives=False: only candidates are scored, the missed positive is dropped
    res = evaluate_reranking(lambda pairs: [scores[d] for _, d in pairs], samples, always_rerank_positives=False)
    assert res["mrr@10"] == pytest.approx((1 / 3) / 3)


def _random_lists(seed, n_lists=200):
    rng = np.random.default_rng(seed)
    for _ in range(n_lists):
        n = int(rng.integers(2, 30))
        relevant = (rng.random(n) < 0.25).astype(int)
        relevant[rng.integers(n)] = 1
        scores = rng.integers(0, 5, n).astype(np.float64)  # many ties
        yield relevant, scores, int(rng.integers(1, 12))


def test_agrees_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    for relevant, scores, k in _random_lists(0):
        assert ndcg_at_k(relevant, scores, k) == pytest.approx(sklearn_metrics.ndcg_score([relevant], [scores], k=k), abs=1e-12)
        assert average_precision(relevant, scores) == pytest.approx(
            sklearn_metrics.average_precision_score(relevant, scores), abs=1e-12)


def test_agrees_with_sentence_transformers_evaluator():
    evaluation = pytest.importorskip("sentence_transformers.cross_encoder.evaluation")
    rng = random.Random(0)
    samples, table = [], {}
    for i in range(60):
        docs = [f"d{i}_{j}" for j in range(rng.randint(1, 30))]
        positives = [d for d in docs if rng.random() < 0.2]
        if rng.random() < 0.3:
            positives.append(f"missed{i}")
        if i % 10 == 9:
            positives = []
        samples.append({"query": f"q{i}", "positive": positives, "documents": docs})
        for d in docs + positives:
            table[(f"q{i}", d)] = rng.randint(0, 4) if i % 2 else rng.gauss(0, 1)  # ties on odd queries

    class FakeCrossEncoder:  # the evaluator only calls predict (and writes model-card data, ignored here)
        def predict(self, pairs, **kwargs):  # float32, as CrossEncoder.predict(convert_to_numpy=True) returns
            return np.array([table[(q, d)] for q, d in pairs], dtype=np.float32)

        def __getattr__(self, name):
            return _Ignore()

    for always in (True, False):
        theirs = evaluation.CrossEncoderRerankingEvaluator(samples, name="x", write_csv=False,
                                                            always_rerank_positives=always)(FakeCrossEncoder())
        ours = evaluate_reranking(lambda pairs: [table[p] for p in pairs], samples, always_rerank_positives=always)
        assert {f"x_{k}": v for k, v in ours.items()} == pytest.approx(theirs, abs=1e-12)


def test_ranking_order_is_the_evaluators_argsort_of_float32_scores(monkeypatch):
    """numpy's default argsort is not stable (on AVX-512 CPUs not even for short lists: 14 candidates with ties
    below) and its tie order is not specified, so MRR breaks ties as sentence-transformers does only through the same
    call on the same input: its `np.argsort(y_pred)[::-1]` of CrossEncoder.predict's float32 scores. Our scores come
    in as float64 (evaluate_reranking): they must be sorted as float32."""
    scores = np.array([2, 1, 1, 0, 0, 0, 0, 0, 0, 2, 1, 2, 1, 1], dtype=np.float64)
    calls = []
    argsort = np.argsort

    def spy(a, *args, **kwargs):
        calls.append((np.asarray(a).dtype, args, kwargs))
        return argsort(a, *args, **kwargs)

    monkeypatch.setattr(np, "argsort", spy)
    order = ranking_order(scores)
    reciprocal_rank([1] + [0] * 13, scores, 10)
    assert calls == [(np.dtype(np.float32), (), {})] * 2  # default kind, float32 input
    monkeypatch.undo()
    assert order.tolist() == np.argsort(scores.astype(np.float32))[::-1].tolist()


def test_mrr_agrees_with_evaluator_compute_metrics_on_ties():
    """reciprocal_rank of float64 copies of float32 scores = the evaluator's MRR of the float32 scores, on tie-heavy
    lists of every length up to 40 (where the default argsort reorders ties)."""
    evaluation = pytest.importorskip("sentence_transformers.cross_encoder.evaluation")
    rng = np.random.default_rng(1)
    for _ in range(500):
        n, k = int(rng.integers(2, 41)), int(rng.integers(1, 12))
        relevant = (rng.random(n) < 0.3).astype(int)
        relevant[rng.integers(n)] = 1
        predicted = rng.integers(0, 3, n).astype(np.float32)  # CrossEncoder.predict's dtype
        evaluator = evaluation.CrossEncoderRerankingEvaluator([], at_k=k, write_csv=False)
        theirs = evaluator.compute_metrics(relevant.tolist(), predicted)[0]
        assert reciprocal_rank(relevant, predicted.astype(np.float64), k) == theirs


class _Ignore:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@pytest.mark.parametrize("head_bias", [0.0, 25.0])
def test_model_evaluation_agrees_with_sentence_transformers_cross_encoder(tmp_path, head_bias):
    """Our evaluation of a saved one-label model equals CrossEncoderRerankingEvaluator(CrossEncoder(dir)) on the same
    samples and max_length. head_bias 25 puts every logit far above 16.6, where CrossEncoder.predict's float32
    sigmoid rounds them all to 1.0: the scores tie there, and ours must tie the same way."""
    evaluation = pytest.importorskip("sentence_transformers.cross_encoder.evaluation")
    from sentence_transformers.cross_encoder import CrossEncoder
    import torch
    from train.evaluate import evaluate_model
    from train.models import load_model, save_model
    from train.nanobeir import load_nanobeir
    from train_fixtures import make_msmarco_rows, make_tiny_bert, write_nanobeir_dir

    rows = make_msmarco_rows(12)
    model, tokenizer = load_model("cross-encoder", make_tiny_bert(tmp_path / "bert", rows))
    with torch.no_grad():
        model.classifier.bias.fill_(head_bias)  # logits of the random head: about head_bias +- 1
    save_model("cross-encoder", model, tokenizer, tmp_path / "saved")
    samples = load_nanobeir(write_nanobeir_dir(tmp_path / "nano", rows), ["msmarco"], rerank_k=5)["NanoMSMARCO_R5"]

    theirs = evaluation.CrossEncoderRerankingEvaluator(samples, name="x", write_csv=False)(
        CrossEncoder(str(tmp_path / "saved"), max_length=32, device="cpu"))
    ours = evaluate_model(*load_model("cross-encoder", tmp_path / "saved"), {"x": samples}, "mean", max_length=32,
                          progress=False)
    assert {k: v for k, v in ours.items() if k.startswith("x_")} == pytest.approx(theirs, abs=1e-6)
