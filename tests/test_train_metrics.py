"""train/metrics.py and train/nanobeir.evaluate_reranking: hand-computed values on toy rankings, and agreement with
scikit-learn and with sentence-transformers 6.3.0's CrossEncoderRerankingEvaluator and CrossEncoderNanoBEIREvaluator
where those are installed."""

import train_fixtures  # noqa: F401  (first: puts the repository root on sys.path)
import json
import math
import os
import random
import zlib

import numpy as np
import pytest

from train.metrics import average_precision, ndcg_at_k, ranking_metrics, ranking_order, reciprocal_rank
from train.nanobeir import evaluate_datasets, evaluate_reranking, load_nanobeir

L2, L3, L4, L5 = (1 / math.log2(n) for n in (2, 3, 4, 5))  # discounts of positions 1..4

# The release whose evaluator train/metrics.py and train/nanobeir.py follow (6.3 changed the definitions: MAP and
# NDCG normalised by every known positive, base ranking without the missed positives appended).
SENTENCE_TRANSFORMERS_RELEASE = "6.3.0"


def sentence_transformers_evaluation():
    """sentence_transformers.cross_encoder.evaluation of the release train's metrics follow; skips otherwise."""
    evaluation = pytest.importorskip("sentence_transformers.cross_encoder.evaluation")
    import sentence_transformers
    if sentence_transformers.__version__ != SENTENCE_TRANSFORMERS_RELEASE:
        pytest.skip(f"train's metrics follow sentence-transformers {SENTENCE_TRANSFORMERS_RELEASE}'s evaluator; "
                    f"{sentence_transformers.__version__} is installed")
    return evaluation


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
    ([1], [0.3], 10, (1.0, 1.0, 1.0)),                       # a one-candidate list
])
def test_toy_rankings(relevant, scores, k, expected):
    assert ranking_metrics(relevant, scores, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("relevant, scores, k, n_positives, expected", [
    # known positives missing from the list: the ideal DCG@k places min(n_positives, k) positives first, and AP's
    # recall is out of n_positives (a missing positive adds 0); MRR does not change
    ([0, 1, 0, 0], [4, 3, 2, 1], 10, 2, (1 / 2, L3 / (1 + L3), (1 / 2) / 2)),
    ([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], 10, 3, (1.0, (1 + L4) / (1 + L3 + L4), (1 + 2 / 3) / 3)),
    ([1, 0, 1], [3, 2, 1], 1, 3, (1.0, 1.0, (1 + 2 / 3) / 3)),            # ideal DCG@1 = 1 however many positives
    ([1], [0.3], 10, 2, (1.0, 1 / (1 + L3), 1 / 2)),                       # shorter than the ideal ranking
    ([0, 1, 0, 0], [5.0, 2.0, 2.0, 2.0], 10, 4, (1 / 4, ((L3 + L4 + L5) / 3) / (1 + L3 + L4 + L5), (1 / 4) / 4)),
    ([0, 1], [2.0, 1.0], 10, 1, (1 / 2, L3, 1 / 2)),                       # n_positives = those in the list
])
def test_toy_rankings_with_missing_positives(relevant, scores, k, n_positives, expected):
    assert ranking_metrics(relevant, scores, k, n_positives) == pytest.approx(expected, abs=1e-12)


def test_no_positive_scores_zero():
    assert ndcg_at_k([0, 0, 0], [1, 2, 3], 10) == 0.0
    assert average_precision([0, 0], [1, 2]) == 0.0
    assert reciprocal_rank([0, 0], [1, 2], 10) == 0.0
    assert ranking_metrics([0, 0], [1, 2], 10, n_positives=3) == (0.0, 0.0, 0.0)  # positives, none in the list
    assert ranking_metrics([], [], 10, n_positives=1) == (0.0, 0.0, 0.0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n_positives"):
        ndcg_at_k([1, 1, 0], [3, 2, 1], 10, n_positives=1)
    with pytest.raises(ValueError, match="n_positives"):
        average_precision([1, 1, 0], [3, 2, 1], n_positives=1)
    for k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="k must be"):
            ranking_metrics([1, 0], [2, 1], k)


def test_evaluate_reranking_by_hand():
    scores = {"P": 0.5, "Q": 3.0, "A": 2.0, "B": 1.0, "C": 9.0, "D": 0.0}
    samples = [
        # Q is a positive BM25 missed: base ranking A, P, B; reranked with all positives: Q, A, B, P
        {"query": "q1", "positive": ["P", "Q"], "documents": ["A", "P", "B"]},
        # no positive among the candidates: base metrics 0, but the positive is still reranked (C, B, D): D last
        {"query": "q2", "positive": ["D"], "documents": ["C", "B"]},
        # a query without positives counts 0 in every mean
        {"query": "q3", "positive": [], "documents": ["A", "B"]},
    ]
    seen = []

    def score_fn(pairs):
        seen.extend(pairs)
        return [scores[doc] for _, doc in pairs]

    # (mrr@10, ndcg@10, map) per query; NDCG's ideal and AP's recall count both positives of q1, Q included
    base_q1 = (1 / 2, L3 / (1 + L3), (1 / 2) / 2)  # P at rank 2 of A, P, B; Q not in the list adds nothing
    expected = {
        True: {  # q1 reranks Q, A, B, P; q2 reranks C, B, D
            "reranked": [(1.0, (1 + L5) / (1 + L3), (1 + 2 / 4) / 2), (1 / 3, L4, 1 / 3), (0, 0, 0)],
            "scored": [("q1", d) for d in "PQAB"] + [("q2", d) for d in "DCB"],  # q3 not scored
        },
        False: {  # q1 reranks its candidates only: A, B, P, still out of 2 positives; q2 has no positive to rank
            "reranked": [(1 / 3, L4 / (1 + L3), (1 / 3) / 2), (0, 0, 0), (0, 0, 0)],
            "scored": [("q1", d) for d in "APB"],
        },
    }
    for always, want in expected.items():
        seen.clear()
        res = evaluate_reranking(score_fn, samples, at_k=10, always_rerank_positives=always)
        assert sorted(seen) == sorted(want["scored"])
        mrr, ndcg, ap = (sum(column) / 3 for column in zip(*want["reranked"]))
        assert res == pytest.approx({"mrr@10": mrr, "ndcg@10": ndcg, "map": ap, "base_mrr@10": base_q1[0] / 3,
                                     "base_ndcg@10": base_q1[1] / 3, "base_map": base_q1[2] / 3}, abs=1e-12)


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


def _parity_samples(seed, n_queries=80):
    """Samples with every case the evaluator distinguishes, and (query, doc) -> float32-exact score: positives
    missing from the candidates (some queries with none among them), queries without positives, empty and
    one-candidate lists, a candidate listed twice, and tie-heavy integer scores on odd queries."""
    rng = random.Random(seed)
    samples, table = [], {}
    for i in range(n_queries):
        docs = [f"d{i}_{j}" for j in range(rng.choice([0, 1, 2] + list(range(3, 30))))]
        if docs and rng.random() < 0.05:
            docs.append(docs[0])
        positives = [d for d in dict.fromkeys(docs) if rng.random() < 0.2]
        if rng.random() < 0.4:
            positives += [f"missed{i}_{j}" for j in range(rng.randint(1, 3))]
        if i % 10 == 9:
            positives = []
        samples.append({"query": f"q{i}", "positive": positives, "documents": docs})
        for d in docs + positives:
            table[(f"q{i}", d)] = rng.randint(0, 4) if i % 2 else float(np.float32(rng.gauss(0, 1)))
    cases = [(len(s["positive"]), sum(d in s["positive"] for d in dict.fromkeys(s["documents"]))) for s in samples]
    assert any(0 < found < n for n, found in cases) and any(found == 0 < n for n, found in cases)
    assert any(n == 0 for n, _ in cases) and any(len(s["documents"]) < 2 for s in samples)
    return samples, table


class FakeCrossEncoder:
    """What the evaluators need of a CrossEncoder: predict (model-card calls are ignored)."""

    def __init__(self, score):
        self.score = score

    def predict(self, pairs, **kwargs):  # float32, as CrossEncoder.predict(convert_to_numpy=True) returns
        return np.array([self.score(q, d) for q, d in pairs], dtype=np.float32)

    def __getattr__(self, name):
        return _Ignore()


@pytest.mark.parametrize("at_k", [10, 3])
@pytest.mark.parametrize("always", [True, False])
def test_agrees_with_sentence_transformers_evaluator(always, at_k):
    """Every key (map, mrr@k, ndcg@k and base_*) equals CrossEncoderRerankingEvaluator's."""
    evaluation = sentence_transformers_evaluation()
    samples, table = _parity_samples(0)
    theirs = evaluation.CrossEncoderRerankingEvaluator(samples, at_k=at_k, name="x", write_csv=False,
                                                        always_rerank_positives=always)(
        FakeCrossEncoder(lambda q, d: table[(q, d)]))
    ours = evaluate_reranking(lambda pairs: [table[p] for p in pairs], samples, at_k, always_rerank_positives=always)
    assert {f"x_{k}": v for k, v in ours.items()} == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize("always", [True, False])
def test_nanobeir_keys_and_means_agree_with_sentence_transformers(tmp_path, monkeypatch, always):
    """evaluate_datasets(load_nanobeir(DIR)) reports what CrossEncoderNanoBEIREvaluator reports when it reads the same
    tables (its hub loading redirected to DIR): every per-dataset key and every NanoBEIR_R{k}_mean key. rerank_k 3
    cuts positives off the candidates, some queries' all of them. The scores are distinct per query: that evaluator
    puts a query's positives in set order, which varies between processes, so their order must not matter."""
    evaluation = sentence_transformers_evaluation()
    datasets = pytest.importorskip("datasets")
    rows = train_fixtures.make_msmarco_rows(40, seed=3)
    root = train_fixtures.write_nanobeir_dir(tmp_path / "nano", rows[:20], split="NanoMSMARCO")
    train_fixtures.write_nanobeir_dir(tmp_path / "nano", rows[20:], split="NanoNQ")

    def read_table(self, subset, split, required_columns):
        with open(os.path.join(root, split, f"{subset}.jsonl")) as f:
            return datasets.Dataset.from_list([json.loads(line) for line in f])

    monkeypatch.setattr(evaluation.CrossEncoderNanoBEIREvaluator, "_load_dataset_subset_split", read_table)

    def score(query, doc):  # a fixed function of the pair, distinct within every list here
        return float(zlib.crc32(f"{query}\t{doc}".encode()) % (1 << 20))

    ours_sets = load_nanobeir(root, ["msmarco", "nq"], rerank_k=3)
    cases = [(len(s["positive"]), sum(d in s["positive"] for d in s["documents"]))
             for samples in ours_sets.values() for s in samples]
    assert any(0 < found < n for n, found in cases) and any(found == 0 for _, found in cases)
    for samples in ours_sets.values():
        for s in samples:
            assert len({score(s["query"], d) for d in s["positive"] + s["documents"]}) == len(
                set(s["positive"] + s["documents"]))

    theirs = evaluation.CrossEncoderNanoBEIREvaluator(["msmarco", "nq"], rerank_k=3, always_rerank_positives=always,
                                                      write_csv=False)(FakeCrossEncoder(score))
    ours = evaluate_datasets(lambda pairs: [score(q, d) for q, d in pairs], ours_sets,
                             always_rerank_positives=always, prefix="NanoBEIR_R3_mean")
    assert len(theirs) == 2 * 6 + 6
    assert ours == pytest.approx(theirs, abs=1e-12)


def _metrics_of_release_6_2(samples, score, at_k, always_rerank_positives):
    """sentence-transformers 6.2.0's CrossEncoderRerankingEvaluator on `documents` samples, per query, written out
    from its definition: the base ranking is the candidates with the missed positives appended last (0 if no
    positive is among the candidates); NDCG is sklearn's ndcg_score and MAP sklearn's average_precision_score of
    the ranked list alone, so positives absent from it do not count."""
    sklearn_metrics = pytest.importorskip("sklearn.metrics")

    def compute(relevant, scores):
        ranking = np.argsort(np.asarray(scores, dtype=np.float32))[::-1]
        mrr = next((1 / (rank + 1) for rank, i in enumerate(ranking[:at_k]) if relevant[i]), 0)
        return (mrr, sklearn_metrics.ndcg_score([relevant], [scores], k=at_k),
                sklearn_metrics.average_precision_score(relevant, scores))

    reranked, base = [], []
    for sample in samples:
        positives, documents = sample["positive"], sample["documents"]
        base_relevant = [int(d in positives) for d in documents]
        if sum(base_relevant) == 0:
            base.append((0, 0, 0))
        else:
            padded = base_relevant + [1] * (len(positives) - sum(base_relevant))
            base.append(compute(padded, np.arange(len(padded), 0, -1)))
        if always_rerank_positives:
            docs = positives + [d for d in documents if d not in positives]
            relevant = [1] * len(positives) + [0] * (len(docs) - len(positives))
        else:
            docs, relevant = documents, base_relevant
        reranked.append(compute(relevant, [score(sample["query"], d) for d in docs]) if sum(relevant) else (0, 0, 0))
    return reranked, base


def test_what_changed_from_release_6_2():
    """What the evaluation paragraphs of train/README.md say changed from sentence-transformers 6.2 to 6.3, query by
    query against 6.2's definitions. Only a query with a positive missing from its candidates and another among them
    differs. With always_rerank_positives=True its reranked metrics are the same (every positive is in the reranked
    list, so normalising by all positives changes nothing); its base MAP is lower (6.2 ranked the missed positive
    after the candidates, 6.3 counts it as never found), its base NDCG@k only when the candidate list is shorter than
    k (6.2's appended positive then lands in the top k), its base MRR@k never. With always_rerank_positives=False its
    reranked MAP is lower, and its NDCG@k when fewer than k of its positives are among the candidates and one of
    them is ranked in the top k."""
    rng = random.Random(5)
    samples, table = [], {}
    for i in range(40):
        docs = [f"d{i}_{j}" for j in range(rng.choice([4, 8, 20, 30]))]
        missed = [f"missed{i}_{j}" for j in range(rng.choice([0, 0, 1, 2]))]
        positives = [d for d in docs if rng.random() < 0.15] + missed
        samples.append({"query": f"q{i}", "positive": positives, "documents": docs})
        table.update({(f"q{i}", d): float(np.float32(rng.gauss(0, 1))) for d in docs + positives})
    found = [sum(d in s["positive"] for d in s["documents"]) for s in samples]
    partly_missed = [0 < n < len(s["positive"]) for n, s in zip(found, samples)]
    branches = set()
    for at_k in (3, 10):
        for always in (True, False):
            old_reranked, old_base = _metrics_of_release_6_2(samples, lambda q, d: table[(q, d)], at_k, always)
            for sample, n_found, differs, old, old_b in zip(samples, found, partly_missed, old_reranked, old_base):
                new = evaluate_reranking(lambda pairs: [table[p] for p in pairs], [sample], at_k, always)
                reranked = (new[f"mrr@{at_k}"], new[f"ndcg@{at_k}"], new["map"])
                base = (new[f"base_mrr@{at_k}"], new[f"base_ndcg@{at_k}"], new["base_map"])
                if not differs:
                    assert reranked == pytest.approx(old, abs=1e-12) and base == pytest.approx(old_b, abs=1e-12)
                    continue
                if always:
                    assert reranked == pytest.approx(old, abs=1e-12)
                else:
                    assert reranked[0] == pytest.approx(old[0], abs=1e-12) and reranked[2] < old[2] - 1e-6
                    if n_found < at_k and old[1] > 0:  # ideal DCG over more positives than 6.2's
                        assert reranked[1] < old[1] - 1e-6
                        branches.add("reranked ndcg lower")
                    else:
                        assert reranked[1] == pytest.approx(old[1], abs=1e-12)
                        branches.add("reranked ndcg same" if old[1] > 0 else "reranked ndcg 0")
                assert base[0] == pytest.approx(old_b[0], abs=1e-12) and base[2] < old_b[2] - 1e-6
                if len(sample["documents"]) >= at_k:
                    assert base[1] == pytest.approx(old_b[1], abs=1e-12)
                    branches.add("base ndcg same")
                else:
                    assert base[1] < old_b[1] - 1e-6
                    branches.add("base ndcg lower")
    assert branches == {"reranked ndcg lower", "reranked ndcg same", "reranked ndcg 0", "base ndcg same",
                        "base ndcg lower"}


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
    evaluation = sentence_transformers_evaluation()
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
    evaluation = sentence_transformers_evaluation()
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


# The held-out base row as first recorded, computed with 6.2's definitions (train/results/offline-sample-minilm-l6-cpu
# at commit 791a344).
BASE_ROW_UNDER_6_2 = {"base_map": 0.4191781537176274, "base_mrr@10": 0.4203529657477026,
                      "base_ndcg@10": 0.547239911854454}


def test_committed_heldout_base_row_holds_under_release_6_3():
    """The base row of train/results/offline-sample-minilm-l6-cpu (BM25 top 30 of the held-out pool of the committed
    MS MARCO sample), recomputed now, is the one the run recorded and the one first recorded with 6.2's definitions:
    its one query whose positive BM25 missed has no positive among its candidates, which scores 0 under both."""
    from train.evaluate import load_eval_sets

    root = train_fixtures.REPO_ROOT
    with open(os.path.join(root, "train", "results", "offline-sample-minilm-l6-cpu", "eval_results.jsonl")) as f:
        committed = json.loads(f.readline())
    sets, _ = load_eval_sets("heldout", rerank_k=30, train_data=os.path.join(root, "data", "msmarco-v1.1-sample.json"),
                             train_queries=160)
    samples = sets["MSMARCOHeldOut_R30"]
    found = [sum(d in s["positive"] for d in s["documents"]) for s in samples]
    assert [(n, len(s["positive"])) for n, s in zip(found, samples) if n < len(s["positive"])] == [(0, 1)]
    base = {k: v for k, v in evaluate_reranking(lambda pairs: [0.0] * len(pairs), samples).items()
            if k.startswith("base_")}
    assert base == pytest.approx({k[len("MSMARCOHeldOut_R30_"):]: v for k, v in committed.items()
                                  if k.startswith("MSMARCOHeldOut_R30_base_")}, abs=1e-12)
    assert base == pytest.approx(BASE_ROW_UNDER_6_2, abs=1e-12)
