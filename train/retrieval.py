"""Dense retrieval evaluation of a bi-encoder: exact search over the whole corpus of each retrieval set.

A retrieval set (train/nanobeir.py) is {"queries": [str], "corpus": [str], "corpus_ids": [id], "positives":
[[corpus index]], ...}. Queries and corpus are encoded in batches under torch.inference_mode, every query is scored
against every passage by dot product, and the metrics are those of sentence-transformers'
InformationRetrievalEvaluator:

- one ranking per query: score descending, equal scores by ascending corpus id (duplicate passages under two ids
  score the same, so the tie order matters);
- MRR@10: reciprocal rank of the first positive within the top 10;
- NDCG@10: binary, DCG of the top 10 over the DCG of min(#positives, 10) positives ranked first;
- Recall@100: share of the query's positives within the top 100.

As sentence-transformers' NanoBEIR evaluator builds that evaluator, empty passages are never retrieved (they still
count as positives: in the recall and NDCG denominators), and queries without positives or with empty text are left
out of the means. Its queries are every query with qrels; ours are the bm25 table's (the reranking evaluation's
queries), and a split whose tables differ there says so when it loads (train/nanobeir.py). Keys (sentence-transformers'
naming with the score function "dot"): "{Dataset}_dot_{metric}" ("NanoMSMARCO_dot_ndcg@10") and
"{prefix}_dot_{metric}" for the mean over datasets ("NanoBEIR_mean_dot_ndcg@10", or "HeldOut_mean_dot_ndcg@10" for
--eval-data heldout).
"""

import numpy as np
import torch

from .biencoder import encode_texts


def dense_scores(model, tokenizer, retrieval_set, pooling, max_length=512, batch_size=64, device="cpu", bf16=False,
                 progress=True):
    """(queries, corpus) float32 dot-product scores of every query against every passage."""
    args = dict(pooling=pooling, max_length=max_length, batch_size=batch_size, device=device, bf16=bf16,
                progress=progress)
    queries = encode_texts(model, tokenizer, retrieval_set["queries"], **args)
    corpus = encode_texts(model, tokenizer, retrieval_set["corpus"], **args)
    return queries @ corpus.T


def id_ranks(corpus_ids):
    """Position of each corpus entry in ascending order of its id: the tie order of the ranking."""
    ranks = np.empty(len(corpus_ids), dtype=np.int64)
    ranks[sorted(range(len(corpus_ids)), key=corpus_ids.__getitem__)] = np.arange(len(corpus_ids))
    return ranks


def retrieval_metrics(scores, positives, tie_ranks=None, at_k=10, recall_k=100, searchable=None):
    """{"mrr@10", "ndcg@10", "recall@100"} of one query from its full-corpus scores and positive corpus indices.

    tie_ranks (from `id_ranks`; default: corpus order) orders equal scores. searchable (bool per corpus entry;
    default: all) leaves the others out of the ranking while they still count as positives. `positives` must not be
    empty: the evaluator this follows has no value for a query without positives.
    """
    if len(positives) == 0:
        raise ValueError("retrieval_metrics needs at least one positive (queries without are left out of the means)")
    scores = np.asarray(scores, dtype=np.float64)
    tie_ranks = np.arange(len(scores)) if tie_ranks is None else tie_ranks
    ranking = np.lexsort((tie_ranks, -scores))  # the last key is the primary one
    if searchable is not None:
        ranking = ranking[np.asarray(searchable, dtype=bool)[ranking]]
    top = ranking[:max(at_k, recall_k)]
    hit = np.zeros(len(scores), dtype=bool)
    hit[list(positives)] = True
    hit = hit[top]
    discount = 1.0 / np.log2(np.arange(at_k) + 2.0)
    first = np.flatnonzero(hit[:at_k])
    return {f"mrr@{at_k}": 1.0 / (first[0] + 1) if len(first) else 0.0,
            f"ndcg@{at_k}": float(discount[:len(hit[:at_k])] @ hit[:at_k] / discount[:min(len(positives), at_k)].sum()),
            f"recall@{recall_k}": float(hit[:recall_k].sum() / len(positives))}


def evaluate_retrieval(model, tokenizer, retrieval_sets, prefix, pooling, max_length=512, batch_size=64, device="cpu",
                       bf16=False, at_k=10, recall_k=100, progress=True):
    """Dense retrieval metrics of every {name: retrieval set} and their mean over the sets (keys: module doc)."""
    results, per_metric = {}, {}
    for name, retrieval_set in retrieval_sets.items():
        scores = dense_scores(model, tokenizer, retrieval_set, pooling, max_length, batch_size, device, bf16,
                              progress).double().numpy()
        tie_ranks = id_ranks(retrieval_set["corpus_ids"])
        searchable = np.array([len(text) > 0 for text in retrieval_set["corpus"]], dtype=bool)
        rows = [retrieval_metrics(row, positives, tie_ranks, at_k, recall_k, searchable)
                for row, positives, query in zip(scores, retrieval_set["positives"], retrieval_set["queries"])
                if positives and len(query) > 0]
        for metric in rows[0] if rows else ():
            value = float(np.mean([row[metric] for row in rows]))
            results[f"{name}_dot_{metric}"] = value
            per_metric.setdefault(metric, []).append(value)
    for metric, values in per_metric.items():
        results[f"{prefix}_dot_{metric}"] = float(np.mean(values))
    return results


def dense_rankings(model, tokenizer, retrieval_set, pooling, k=100, **encode_args):
    """Per query, the corpus indices of its top k passages by dot product, best first (a first stage)."""
    scores = dense_scores(model, tokenizer, retrieval_set, pooling, **encode_args)
    return torch.topk(scores, min(k, scores.shape[1]), dim=1).indices.tolist()


def format_retrieval_table(results, dataset_names, prefix, at_k=10, recall_k=100):
    metrics = [f"ndcg@{at_k}", f"mrr@{at_k}", f"recall@{recall_k}"]
    lines = ["| dataset (dense retrieval, dot) | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name in list(dataset_names) + [prefix]:
        lines.append(f"| {name} | " + " | ".join(f"{results[f'{name}_dot_{m}']:.4f}" for m in metrics) + " |")
    return "\n".join(lines)
