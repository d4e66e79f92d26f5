"""The "BM25 over the same pool (reference)" row of this run's README, reproduced with the project's own code.

Same held-out set as the bi-encoder run (`--eval-data heldout --train-queries 160`: rows 161-200 of the sample, the
queries with a selected passage, the pool of all their distinct passages), ranked over the whole pool by
train/nanobeir.py's BM25 (`bm25_rank`, ties in pool order) and scored per query with the metric code of the dense
retrieval rows (train/retrieval.py `retrieval_metrics`: MRR@10, NDCG@10, Recall@100) plus MAP (train/metrics.py),
the BM25 ranking given as strictly decreasing scores. Also records the rank of every positive, to check why
Recall@100 is 1. Writes bm25_row.json next to this file. Run from the repository root:

    .venv/bin/python train/results/offline-sample-biencoder-minilm-l6-cpu/bm25_row.py
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, ROOT)

from train.evaluate import load_retrieval_sets  # noqa: E402
from train.metrics import average_precision  # noqa: E402
from train.retrieval import retrieval_metrics  # noqa: E402

TRAIN_DATA = os.path.join(ROOT, "..", "shared", "data", "msmarco-v1.1-sample.json")
TRAIN_QUERIES = 160

sets, _ = load_retrieval_sets("heldout", train_data=TRAIN_DATA, train_queries=TRAIN_QUERIES)
(retrieval_set,) = sets.values()
n = len(retrieval_set["corpus"])

rows, positive_ranks = [], []
for ranking, positives in zip(retrieval_set["first_stage"], retrieval_set["positives"]):
    scores = np.empty(n)
    scores[np.asarray(ranking)] = np.arange(n, 0, -1)  # BM25 order, best first, no ties
    row = retrieval_metrics(scores, positives)
    relevant = np.zeros(n)
    relevant[positives] = 1.0
    row["map"] = average_precision(relevant, scores)
    rows.append(row)
    position = {doc: rank for rank, doc in enumerate(ranking, 1)}
    positive_ranks.append(sorted(position[p] for p in positives))

result = {
    "what": "BM25 (train/nanobeir.py bm25_rank) over the whole held-out pool, metrics as the dense retrieval rows",
    "train_data": "../shared/data/msmarco-v1.1-sample.json",
    "train_queries": TRAIN_QUERIES,
    "queries": len(rows),
    "pool_passages": n,
    "positives": sum(len(p) for p in retrieval_set["positives"]),
    **{metric: float(np.mean([row[metric] for row in rows])) for metric in rows[0]},
    "map_note": "map over the whole pool; the cross-encoder run's base_map (0.4192) is over each query's BM25 top 30, "
                "where a query with no positive in its top 30 scores 0",
    "queries_without_positive_in_top_30": sum(min(ranks) > 30 for ranks in positive_ranks),
    "worst_positive_rank": max(max(ranks) for ranks in positive_ranks),
    "positives_outside_top_10": sum(r > 10 for ranks in positive_ranks for r in ranks),
    "positive_ranks_per_query": positive_ranks,
}
summary = {k: v for k, v in result.items() if k != "positive_ranks_per_query"}
text = json.dumps(summary, indent=1)[:-2] + ',\n "positive_ranks_per_query": ' + json.dumps(positive_ranks) + "\n}\n"
with open(os.path.join(HERE, "bm25_row.json"), "w", encoding="utf-8") as f:
    f.write(text)
print(json.dumps(summary, indent=1))
