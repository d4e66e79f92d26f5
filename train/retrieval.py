"""Dense retrieval evaluation of a bi-encoder: exact search over the whole corpus of each retrieval set.

A retrieval set (train/nanobeir.py) is {"queries": [str], "corpus": [str], "positives": [[corpus index]], ...}.
Queries and corpus are encoded in batches under torch.inference_mode, every query is scored against every passage
by dot product, and per query train/metrics.py gives, over the full-corpus scores (so the definitions are those of
the reranking evaluation, ties included):

- MRR@10: reciprocal rank of the first positive within the top 10 (`np.argsort(scores)[::-1]` order);
- NDCG@10: binary, ideal DCG over all the query's positives, tied scores sharing their discounts;
- Recall@100: share of the query's positives within the top 100.

A query without positives scores 0 and still counts in the mean. Keys (sentence-transformers' naming with the score
function "dot"): "{Dataset}_dot_{metric}" ("NanoMSMARCO_dot_ndcg@10") and "{prefix}_dot_{metric}" for the mean over
datasets ("NanoBEIR_mean_dot_ndcg@10", or "HeldOut_mean_dot_ndcg@10" for --eval-data heldout).
"""

import numpy as np
import torch

from .biencoder import encode_texts
from .metrics import ndcg_at_k, recall_at_k, reciprocal_rank


def dense_scores(model, tokenizer, retrieval_set, pooling, max_length=512, batch_size=64, device="cpu", bf16=False,
                 progress=True):
    """(queries, corpus) float32 dot-product scores of every query against every passage."""
    args = dict(pooling=pooling, max_length=max_length, batch_size=batch_size, device=device, bf16=bf16,
                progress=progress)
    queries = encode_texts(model, tokenizer, retrieval_set["queries"], **args)
    corpus = encode_texts(model, tokenizer, retrieval_set["corpus"], **args)
    return queries @ corpus.T


def retrieval_metrics(scores, positives, at_k=10, recall_k=100):
    """{"mrr@10", "ndcg@10", "recall@100"} of one query from its full-corpus scores and positive corpus indices."""
    if not positives:
        return {f"mrr@{at_k}": 0.0, f"ndcg@{at_k}": 0.0, f"recall@{recall_k}": 0.0}
    relevant = np.zeros(len(scores))
    relevant[list(positives)] = 1.0
    return {f"mrr@{at_k}": reciprocal_rank(relevant, scores, at_k), f"ndcg@{at_k}": ndcg_at_k(relevant, scores, at_k),
            f"recall@{recall_k}": recall_at_k(relevant, scores, recall_k)}


def evaluate_retrieval(model, tokenizer, retrieval_sets, prefix, pooling, max_length=512, batch_size=64, device="cpu",
                       bf16=False, at_k=10, recall_k=100, progress=True):
    """Dense retrieval metrics of every {name: retrieval set} and their mean over the sets (keys: module doc)."""
    results, per_metric = {}, {}
    for name, retrieval_set in retrieval_sets.items():
        scores = dense_scores(model, tokenizer, retrieval_set, pooling, max_length, batch_size, device, bf16,
                              progress).double().numpy()
        rows = [retrieval_metrics(row, positives, at_k, recall_k)
                for row, positives in zip(scores, retrieval_set["positives"])]
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
