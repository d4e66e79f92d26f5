"""`python -m train --arch bi-encoder` on a tiny random BERT and data made here: candidate lists and padding are
exact, the loss goes down, the saved model loads with AutoModel (and SentenceTransformer, same embeddings), --resume
continues exactly, dense retrieval metrics are right on a toy corpus with hand-picked embeddings, and a bi-encoder's
top-k serves as the cross-encoder evaluation's first stage (`--candidates dense:DIR`)."""

import train_fixtures  # noqa: F401  (first: puts the repository root on sys.path)

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from listmle_kernels import listmle_loss
from train.biencoder import biencoder_scores, candidate_lists, embed, encode_texts, pool, saved_pooling
from train.evaluate import main as evaluate_main
from train.loop import main as train_main
from train.retrieval import dense_scores, evaluate_retrieval, id_ranks, retrieval_metrics

from train_fixtures import (assert_resume_is_exact, assert_two_processes_match_one, make_training_material,
                            read_jsonl, training_args)

L3, L4 = 1 / math.log2(3), 1 / math.log2(4)  # discounts of ranks 2 and 3


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    return make_training_material(tmp_path_factory.mktemp("biencoder_material"))


def common(material, out, model="bert"):
    return ["--arch", "bi-encoder"] + training_args(material, out, model)


# ------------------------------------------------------------------------------------------- lists and padding

RECORDS = [{"query": "q0", "docs": ["a", "b"], "labels": [1.0, 0.0]},
           {"query": "q1", "docs": ["c", "a", "d"], "labels": [1.0, 0.0, 0.0]},  # "a" is also q0's positive
           {"query": "q2", "docs": ["e"], "labels": [1.0]}]


def test_candidate_lists_own_docs_then_in_batch_negatives():
    index, mask, labels = candidate_lists(RECORDS)
    assert index.tolist() == [[0, 1, 0], [2, 3, 4], [5, 0, 0]]
    assert mask.tolist() == [[True, True, False], [True, True, True], [True, False, False]]
    assert labels.tolist() == [[1, 0, 0], [1, 0, 0], [1, 0, 0]]

    index, mask, labels = candidate_lists(RECORDS, in_batch_negatives=True)
    # flat passages: 0 a, 1 b, 2 c, 3 a, 4 d, 5 e. q0 does not get q1's copy of its own positive "a" (index 3);
    # q2 gets "a" once (index 0, not its copy 3).
    assert [row[m].tolist() for row, m in zip(index, mask)] == [[0, 1, 2, 4, 5], [2, 3, 4, 1, 5], [5, 0, 1, 2, 4]]
    assert [row[m].tolist() for row, m in zip(labels, mask)] == [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [1, 0, 0, 0, 0]]
    assert mask.sum(1).tolist() == [5, 5, 5] and index.shape == (3, 5)


def test_scores_are_dot_products_and_padding_is_exact(material):
    from transformers import AutoModel, AutoTokenizer
    model, tokenizer = AutoModel.from_pretrained(material["bert_no_dropout"]), AutoTokenizer.from_pretrained(material["bert_no_dropout"])
    records = [{"query": "what is the apple price", "docs": ["apple price is high", "river size"], "labels": [1.0, 0.0]},
               {"query": "what is the river use", "docs": ["the river", "apple", "many copper"], "labels": [1.0, 0.0, 0.0]}]
    with torch.no_grad():
        for in_batch in (False, True):
            scores, labels, mask = biencoder_scores(model, tokenizer, records, "cls", 64, "cpu", in_batch)
            index, _, _ = candidate_lists(records, in_batch)
            for b, record in enumerate(records):
                docs = [d for r in records for d in r["docs"]]
                q = encode_texts(model, tokenizer, [record["query"]], "cls", progress=False)[0]
                d = encode_texts(model, tokenizer, [docs[i] for i in index[b][mask[b]]], "cls", progress=False)
                assert scores[b][mask[b]] == pytest.approx((d @ q).tolist(), abs=1e-4)
                assert (scores[b][~mask[b]] == 0).all()
            # the masked loss equals the loss of each list on its own, without padding
            loss = listmle_loss(scores, labels, mask=mask, reduction="none")
            alone = [listmle_loss(scores[b][mask[b]][None]).item() for b in range(len(records))]
            assert loss.tolist() == pytest.approx(alone, rel=1e-6)


def test_scores_are_float32_under_bf16_autocast(material):
    """Training calls biencoder_scores inside bf16 autocast: the encoder runs in bf16 there, but the scores are the
    float32 dot products of the (float32-cast) embeddings, not a bf16 matmul of them."""
    from transformers import AutoModel, AutoTokenizer
    model, tokenizer = AutoModel.from_pretrained(material["bert_no_dropout"]), AutoTokenizer.from_pretrained(material["bert_no_dropout"])
    records = [{"query": "what is the apple price", "docs": ["apple price is high", "river size"], "labels": [1.0, 0.0]},
               {"query": "what is the river use", "docs": ["the river", "apple", "many copper"], "labels": [1.0, 0.0, 0.0]}]
    queries, docs = [r["query"] for r in records], [d for r in records for d in r["docs"]]
    with torch.no_grad():
        for pooling in ("cls", "mean"):
            for in_batch in (False, True):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    scores, _, mask = biencoder_scores(model, tokenizer, records, pooling, 64, "cpu", in_batch)
                    embeddings = embed(model, tokenizer, queries + docs, pooling, 64, "cpu").float()  # same forward
                    assert (embeddings @ embeddings.T).dtype == torch.bfloat16  # what autocast makes of a matmul
                expected = embeddings[: len(queries)] @ embeddings[len(queries) :].T  # float32, outside autocast
                index, _, _ = candidate_lists(records, in_batch)
                expected = torch.gather(expected, 1, index).masked_fill(~mask, 0.0)
                assert scores.dtype == torch.float32
                torch.testing.assert_close(scores, expected, rtol=1e-6, atol=1e-6)


def test_dense_scores_are_float32_dot_products_with_bf16(material):
    """The retrieval evaluation encodes under bf16 autocast (bf16=True) but takes the dot products of the float32
    embeddings outside it."""
    from transformers import AutoModel, AutoTokenizer
    model, tokenizer = AutoModel.from_pretrained(material["bert_no_dropout"]), AutoTokenizer.from_pretrained(material["bert_no_dropout"])
    retrieval_set = {"queries": ["what is the apple price", "what is the river use"],
                     "corpus": ["apple price is high", "river size", "the river", "many copper"]}
    args = dict(pooling="mean", max_length=64, device="cpu", bf16=True, progress=False)
    scores = dense_scores(model, tokenizer, retrieval_set, **args)
    queries = encode_texts(model, tokenizer, retrieval_set["queries"], **args)
    corpus = encode_texts(model, tokenizer, retrieval_set["corpus"], **args)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, queries @ corpus.T, rtol=1e-6, atol=1e-6)


def test_pooling():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    attention = torch.tensor([[1, 1, 0]])
    assert pool(hidden, attention, "cls").tolist() == [[1.0, 2.0]]
    assert pool(hidden, attention, "mean").tolist() == [[2.0, 3.0]]  # the padded token is left out
    with pytest.raises(ValueError):
        pool(hidden, attention, "max")


# ------------------------------------------------------------------------------------------- training end to end

def test_loss_decreases_eval_runs_saved_model_loads(material, tmp_path):
    out = tmp_path / "run"
    # one batch holding all 8 training queries, seen 10 times: the loss of the same lists must fall
    argv = common(material, out, "bert_no_dropout") + [
        "--train-queries", "9", "--val-queries", "0", "--batch-size", "8", "--epochs", "10", "--lr", "1e-3",
        "--pooling", "mean", "--warmup-ratio", "0", "--eval-steps", "5", "--eval-data", material["nano"],
        "--eval-datasets", "msmarco"]
    assert train_main(argv) == 0
    losses = [r["loss"] for r in read_jsonl(out / "train_log.jsonl")]
    assert len(losses) == 10 and all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.8 * losses[0]

    evals = read_jsonl(out / "eval_results.jsonl")
    assert [e["step"] for e in evals] == [0, 5, 10]
    for key in ("NanoMSMARCO_dot_ndcg@10", "NanoMSMARCO_dot_mrr@10", "NanoMSMARCO_dot_recall@100",
                "NanoBEIR_mean_dot_ndcg@10", "NanoBEIR_mean_dot_mrr@10", "NanoBEIR_mean_dot_recall@100"):
        assert all(0.0 <= e[key] <= 1.0 for e in evals)
    assert all(e["NanoMSMARCO_dot_recall@100"] == 1.0 for e in evals)  # the toy corpus has < 100 passages
    assert sorted(p.name for p in out.iterdir()) == ["best-model", "checkpoint-10", "checkpoint-5",
                                                     "eval_results.jsonl", "train_log.jsonl"]

    # the best model re-evaluates to the logged numbers through `python -m train.evaluate --arch bi-encoder`
    best = max(evals, key=lambda e: e["NanoBEIR_mean_dot_ndcg@10"])
    assert saved_pooling(out / "best-model") == "mean"
    result_file = tmp_path / "eval.json"
    assert evaluate_main(["--arch", "bi-encoder", "--model", str(out / "best-model"), "--eval-data", material["nano"],
                          "--eval-datasets", "msmarco", "--max-length", "64", "--device", "cpu",
                          "--output", str(result_file)]) == 0
    again = json.loads(result_file.read_text())
    assert again == pytest.approx({k: v for k, v in best.items() if k in again}, abs=1e-6)

    from transformers import AutoModel, AutoTokenizer
    model, tokenizer = AutoModel.from_pretrained(out / "best-model"), AutoTokenizer.from_pretrained(out / "best-model")
    texts = ["what is the apple price", "the river is very long and many people say so"]
    ours = encode_texts(model, tokenizer, texts, "mean", max_length=64, progress=False)
    sentence_transformers = pytest.importorskip("sentence_transformers")
    st_model = sentence_transformers.SentenceTransformer(str(out / "best-model"), device="cpu")
    assert st_model.max_seq_length == 64  # the training's --max-length, saved with the model
    assert st_model.encode(texts, convert_to_tensor=True) == pytest.approx(ours, abs=1e-5)


def test_resume_continues_exactly(material, tmp_path):
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    argv = ["--train-queries", "32", "--val-queries", "4", "--batch-size", "4", "--max-steps", "6", "--eval-steps",
            "3", "--lr", "1e-3", "--eval-data", "heldout", "--in-batch-negatives", "--loss", "plistmle",
            "--sort-by-labels", "--ties", "random"]
    assert_resume_is_exact(train_main, common(material, full), common(material, resumed), argv, full, resumed)
    assert "HeldOut_mean_dot_ndcg@10" in read_jsonl(full / "eval_results.jsonl")[-1]


def test_torchrun_two_processes_match_one(material, tmp_path):
    """As the cross-encoder's. The bi-encoder's AutoModel has parameters no loss uses (BERT's pooler): DDP must be
    built to expect that, else step 2 fails."""
    assert_two_processes_match_one(train_main, lambda out: common(material, out, "bert_no_dropout"), tmp_path,
                                   rel=1e-5)


def test_candidates_apply_to_cross_encoder_only(material, tmp_path):
    with pytest.raises(SystemExit):
        train_main(common(material, tmp_path / "x") + ["--candidates", "dense:somewhere"])


# ------------------------------------------------------------------------------ dense retrieval on a toy corpus

class OneHotTokenizer:
    """Each text is one token: its position in `texts`."""

    def __init__(self, texts):
        self.ids = {text: i for i, text in enumerate(texts)}

    def __call__(self, texts, **kwargs):
        from transformers import BatchEncoding
        ids = torch.tensor([[self.ids[t]] for t in texts])
        return BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})


class TableEncoder(torch.nn.Module):
    """The embedding of token i is row i of `table`."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table), requires_grad=False)

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(last_hidden_state=self.table[input_ids])


def test_dense_retrieval_metrics_by_hand():
    # corpus d0..d3 = orthogonal unit vectors; a query's scores are its coordinates
    corpus = ["d0", "d1", "d2", "d3"]
    queries = {"q0": [2.0, 3.0, 1.0, 0.0],   # ranking d1 d0 d2 d3, positive d0 at rank 2
               "q1": [3.0, 0.0, 1.0, 2.0],   # ranking d0 d3 d2 d1, positives d3 (rank 2) and d2 (rank 3)
               "q2": [1.0, 0.0, 0.0, 0.0]}   # no positive: left out of the means, as the evaluator leaves it out
    table = [[float(i == j) for j in range(4)] for i in range(4)] + list(queries.values())
    model, tokenizer = TableEncoder(table), OneHotTokenizer(corpus + list(queries))
    retrieval_set = {"queries": list(queries), "corpus": corpus, "corpus_ids": corpus, "positives": [[0], [3, 2], []]}

    results = evaluate_retrieval(model, tokenizer, {"Toy": retrieval_set}, "Toy_mean", "cls", recall_k=2,
                                 progress=False)
    mrr = (1 / 2 + 1 / 2) / 2
    ndcg = (L3 + (L3 + L4) / (1 + L3)) / 2
    recall_at_2 = (1 + 1 / 2) / 2  # q0: d0 is in the top 2; q1: d3 is, d2 is not
    assert results == pytest.approx({"Toy_dot_mrr@10": mrr, "Toy_dot_ndcg@10": ndcg, "Toy_dot_recall@2": recall_at_2,
                                     "Toy_mean_dot_mrr@10": mrr, "Toy_mean_dot_ndcg@10": ndcg,
                                     "Toy_mean_dot_recall@2": recall_at_2}, abs=1e-12)
    # cut-offs: the positive of q0 at rank 2 is outside the top 1
    assert retrieval_metrics([2.0, 3.0, 1.0, 0.0], [0], at_k=1, recall_k=1) == {"mrr@1": 0.0, "ndcg@1": 0.0,
                                                                                 "recall@1": 0.0}
    assert retrieval_metrics([2.0, 3.0, 1.0, 0.0], [0], at_k=2, recall_k=3)["recall@3"] == 1.0
    # equal scores rank by ascending corpus id: d1 before d0 when d1's id sorts first
    assert retrieval_metrics([1.0, 1.0], [0], id_ranks(["b", "a"]), at_k=2, recall_k=2)["mrr@2"] == 1 / 2
    with pytest.raises(ValueError, match="at least one positive"):
        retrieval_metrics([1.0, 0.0], [])


def test_dense_retrieval_leaves_out_empty_passages_and_queries():
    """As sentence-transformers' NanoBEIR evaluator: an empty passage is never retrieved but still counts as a
    positive; a query with empty text is not evaluated."""
    texts = ["d0", "", "d2", "q0"]
    table = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 5.0, 3.0]]
    retrieval_set = {"queries": ["q0", ""], "corpus": texts[:3], "corpus_ids": ["d0", "e", "d2"],
                     "positives": [[0, 1], [0]]}
    results = evaluate_retrieval(TableEncoder(table), OneHotTokenizer(texts), {"Toy": retrieval_set}, "Toy_mean",
                                 "cls", recall_k=2, progress=False)
    # q0 alone: ranking d2 d0 (the empty passage, scored 5, is not retrieved), 2 positives
    assert results == pytest.approx({"Toy_dot_mrr@10": 1 / 2, "Toy_dot_ndcg@10": L3 / (1 + L3),
                                     "Toy_dot_recall@2": 1 / 2, "Toy_mean_dot_mrr@10": 1 / 2,
                                     "Toy_mean_dot_ndcg@10": L3 / (1 + L3), "Toy_mean_dot_recall@2": 1 / 2}, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_dense_retrieval_metrics_match_the_information_retrieval_evaluator(data):
    """The metrics of sentence-transformers' InformationRetrievalEvaluator (its compute_metrics on every hit) on
    tie-heavy scores, string ids whose order is not the corpus order, more positives than k, queries without any,
    passages left out of the search (empty ones, which its NanoBEIR loader drops from the corpus, not the qrels)."""
    ir = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation.information_retrieval")
    n = data.draw(st.integers(1, 30), label="corpus size")
    at_k, recall_k = data.draw(st.integers(1, 12), label="at_k"), data.draw(st.integers(1, 12), label="recall_k")
    corpus_ids = data.draw(st.lists(st.text("abc0123", min_size=1, max_size=3), min_size=n, max_size=n, unique=True))
    levels = st.sampled_from([0.0, 0.5, 1.0, 2.0])  # few distinct scores: many ties
    queries = data.draw(st.lists(st.tuples(st.lists(levels, min_size=n, max_size=n),
                                           st.sets(st.integers(0, n - 1))), min_size=1, max_size=4))
    searchable = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="searchable")
    assume(any(positives for _, positives in queries))
    evaluator = ir.InformationRetrievalEvaluator(
        queries={f"q{i}": "" for i in range(len(queries))}, corpus={cid: "" for cid in corpus_ids},
        relevant_docs={f"q{i}": {corpus_ids[j] for j in positives} for i, (_, positives) in enumerate(queries)},
        mrr_at_k=[at_k], ndcg_at_k=[at_k], precision_recall_at_k=[recall_k], accuracy_at_k=[1], map_at_k=[1])
    expected = evaluator.compute_metrics([[{"corpus_id": cid, "score": score}
                                           for cid, score, kept in zip(corpus_ids, scores, searchable) if kept]
                                          for scores, positives in queries if positives])
    rows = [retrieval_metrics(scores, sorted(positives), id_ranks(corpus_ids), at_k, recall_k, searchable)
            for scores, positives in queries if positives]
    assert np.mean([row[f"mrr@{at_k}"] for row in rows]) == pytest.approx(expected["mrr@k"][at_k], abs=1e-12)
    assert np.mean([row[f"ndcg@{at_k}"] for row in rows]) == pytest.approx(expected["ndcg@k"][at_k], abs=1e-12)
    assert np.mean([row[f"recall@{recall_k}"] for row in rows]) == pytest.approx(expected["recall@k"][recall_k],
                                                                                abs=1e-12)


# ------------------------------------------------------------------- a bi-encoder as the cross-encoder's first stage

def test_dense_candidates_for_cross_encoder_evaluation(material, tmp_path):
    biencoder = tmp_path / "bi"
    assert train_main(common(material, biencoder, "bert_no_dropout") + [
        "--train-queries", "9", "--val-queries", "0", "--batch-size", "8", "--max-steps", "1",
        "--eval-data", material["nano"], "--eval-datasets", "msmarco"]) == 0
    evals = read_jsonl(biencoder / "eval_results.jsonl")
    dense = next(e for e in evals if e["NanoBEIR_mean_dot_ndcg@10"] == max(x["NanoBEIR_mean_dot_ndcg@10"] for x in evals))
    evaluate = ["--model", material["bert_no_dropout"], "--eval-data", material["nano"], "--eval-datasets", "msmarco",
                "--max-length", "64", "--device", "cpu"]

    # rerank-k 1000 > corpus: the base order of the dense candidates is the bi-encoder's full ranking
    out = tmp_path / "rerank_dense.json"
    assert evaluate_main(evaluate + ["--candidates", f"dense:{biencoder / 'best-model'}", "--rerank-k", "1000",
                                     "--output", str(out)]) == 0
    reranked = json.loads(out.read_text())
    for metric in ("mrr@10", "ndcg@10"):
        assert reranked[f"NanoMSMARCO_R1000_base_{metric}"] == pytest.approx(dense[f"NanoMSMARCO_dot_{metric}"], abs=1e-9)

    # the default BM25 first stage still works alongside
    out_bm25 = tmp_path / "rerank_bm25.json"
    assert evaluate_main(evaluate + ["--output", str(out_bm25)]) == 0
    assert "NanoMSMARCO_R100_base_mrr@10" in json.loads(out_bm25.read_text())

    # `python -m train` (cross-encoder) with the dense first stage: rerank the bi-encoder's top 5
    cross = tmp_path / "cross"
    assert train_main(["--model", material["bert_no_dropout"], "--train-data", material["rows"], "--max-length", "64",
                       "--output-dir", str(cross), "--device", "cpu", "--train-queries", "9", "--val-queries", "0",
                       "--batch-size", "8", "--max-steps", "1", "--eval-data", material["nano"], "--eval-datasets",
                       "msmarco", "--rerank-k", "5", "--candidates", f"dense:{biencoder / 'best-model'}"]) == 0
    first = read_jsonl(cross / "eval_results.jsonl")[0]
    # base order = the dense top 5: the same first positive when it is in the top 5, else 0
    assert 0.0 <= first["NanoMSMARCO_R5_base_mrr@10"] <= dense["NanoMSMARCO_dot_mrr@10"] + 1e-9
