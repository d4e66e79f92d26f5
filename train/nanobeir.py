"""NanoBEIR R100 reranking evaluation, defined as sentence-transformers 6.3's CrossEncoderNanoBEIREvaluator does it.

A reranking *sample* is {"query": str, "positive": [str], "documents": [str]}: `documents` is the first-stage
candidate list in its base order (NanoBEIR: the BM25 top 100). `evaluate_reranking` scores the candidates with
`score_fn` and reports MAP, MRR@k and NDCG@k of the reranked list and of the base order (`base_*`), with
sentence-transformers' conventions:

- always_rerank_positives=True: the reranked list is all positives followed by every candidate that is not a
  positive, so a positive missed by BM25 is still scored (the maximum is 1.0); False: the candidates only;
- base order: the candidates as given (a positive missing from them is not appended);
- MAP and NDCG are normalised by all the query's positives, those missing from the ranked list included (the
  ideal DCG@k places min(#positives, k) positives first; AP's recall is out of #positives);
- a ranked list without a positive scores 0, and a query without any positive scores 0 everywhere; both are
  still counted in the mean.

Metric keys: "{Dataset}_R100_{metric}" per dataset ("NanoMSMARCO_R100_ndcg@10") and
"NanoBEIR_R100_mean_{metric}" for the mean over datasets ("NanoBEIR_R100_mean_ndcg@10").

The samples are built from a *retrieval set* (queries, whole corpus, positives and BM25 first stage as corpus
indices), which is also what the dense retrieval evaluation of a bi-encoder (train/retrieval.py) searches.
"""

import json
import math
import os
import re
import warnings
from collections import Counter

import numpy as np

from .hub import hub_unavailable
from .inputs import UsageError
from .logging_setup import hide_hub_progress_bars
from .metrics import ranking_metrics

NANOBEIR_HUB_ID = "sentence-transformers/NanoBEIR-en"

# short name (--eval-datasets) -> split name of NanoBEIR-en / local sub-directory
NANOBEIR_SPLITS = {
    "climatefever": "NanoClimateFEVER",
    "dbpedia": "NanoDBPedia",
    "fever": "NanoFEVER",
    "fiqa2018": "NanoFiQA2018",
    "hotpotqa": "NanoHotpotQA",
    "msmarco": "NanoMSMARCO",
    "nfcorpus": "NanoNFCorpus",
    "nq": "NanoNQ",
    "quoraretrieval": "NanoQuoraRetrieval",
    "scidocs": "NanoSCIDOCS",
    "arguana": "NanoArguAna",
    "scifact": "NanoSciFact",
    "touche2020": "NanoTouche2020",
}


def evaluate_reranking(score_fn, samples, at_k=10, always_rerank_positives=True):
    """Rerank every sample with score_fn(list of (query, doc)) -> scores; returns the mean metrics.

    Keys: "map", "mrr@{at_k}", "ndcg@{at_k}", "base_map", "base_mrr@{at_k}", "base_ndcg@{at_k}".
    All pairs of all samples go to score_fn in one call, so it can batch and sort by length across queries.
    """
    reranked_lists = []  # per sample: (query, docs to score, is_relevant, number of known positives)
    base = []
    for sample in samples:
        positives = sample["positive"]
        positives = [positives] if isinstance(positives, str) else list(positives)
        documents = list(sample["documents"])

        base_relevant = [int(doc in positives) for doc in documents]
        base.append(ranking_metrics(base_relevant, np.arange(len(documents), 0, -1), at_k,
                                    _known_positives(positives, base_relevant)))

        if always_rerank_positives:
            docs = positives + [doc for doc in documents if doc not in positives]
            relevant = [1] * len(positives) + [0] * (len(docs) - len(positives))
        else:
            docs, relevant = documents, base_relevant
        reranked_lists.append((sample["query"], docs, relevant, _known_positives(positives, relevant)))

    pairs = [(query, doc) for query, docs, relevant, _ in reranked_lists if sum(relevant) > 0 for doc in docs]
    all_scores = np.asarray(score_fn(pairs), dtype=np.float64).reshape(-1) if pairs else np.zeros(0)

    reranked, offset = [], 0
    for query, docs, relevant, n_positives in reranked_lists:
        if sum(relevant) == 0:
            reranked.append((0.0, 0.0, 0.0))
            continue
        scores = all_scores[offset : offset + len(docs)]
        offset += len(docs)
        reranked.append(ranking_metrics(relevant, scores, at_k, n_positives))

    def means(rows):
        mrr, ndcg, ap = (float(np.mean(column)) for column in zip(*rows)) if rows else (0.0, 0.0, 0.0)
        return {"map": ap, f"mrr@{at_k}": mrr, f"ndcg@{at_k}": ndcg}

    results = means(reranked)
    results.update({f"base_{key}": value for key, value in means(base).items()})
    return results


def _known_positives(positives, relevant):
    """The number of known positives a ranked list is normalised by: every positive of the query, or the relevant
    candidates if there are more (a positive listed twice among the candidates counts twice, as in the evaluator)."""
    return max(len(positives), sum(relevant))


def evaluate_datasets(score_fn, datasets, at_k=10, always_rerank_positives=True, prefix="NanoBEIR_R100_mean"):
    """Evaluate {name: samples}; keys "{name}_{metric}" and "{prefix}_{metric}" (mean over the datasets)."""
    results, per_metric = {}, {}
    for name, samples in datasets.items():
        for metric, value in evaluate_reranking(score_fn, samples, at_k, always_rerank_positives).items():
            results[f"{name}_{metric}"] = value
            per_metric.setdefault(metric, []).append(value)
    for metric, values in per_metric.items():
        results[f"{prefix}_{metric}"] = float(np.mean(values))
    return results


def format_table(results, dataset_names, mean_name, at_k=10):
    """Per-dataset and mean results as a markdown table, reranked value with the change over the base order."""
    metrics = [f"ndcg@{at_k}", f"mrr@{at_k}", "map"]
    lines = ["| dataset | " + " | ".join(metrics) + " | base " + metrics[0] + " |",
             "|---|" + "---|" * (len(metrics) + 1)]
    for name in list(dataset_names) + [mean_name]:
        cells = [f"{results[f'{name}_{m}']:.4f} ({results[f'{name}_{m}'] - results[f'{name}_base_{m}']:+.4f})"
                 for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {results[f'{name}_base_{metrics[0]}']:.4f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- loading NanoBEIR

def _read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _load_tables(source, split):
    """The four NanoBEIR tables of one split, from a local directory or from the hub."""
    if os.path.isdir(source):
        if not os.path.isdir(os.path.join(source, split)):
            raise missing_split_error(source, split)
        return {table: _read_jsonl(os.path.join(source, split, f"{table}.jsonl"))
                for table in ("corpus", "queries", "qrels", "bm25")}
    try:
        from datasets import load_dataset
        hide_hub_progress_bars()
        return {table: list(load_dataset(source, table, split=split)) for table in ("corpus", "queries", "qrels", "bm25")}
    except Exception as exc:  # no network, no such dataset, ...: one clear message naming the offline flags
        raise hub_unavailable(f"{source} ({split})", exc) from exc


def missing_split_error(source, split):
    """A local --eval-data directory without one of the --eval-datasets: name it and the datasets that are there."""
    short_names = {directory: short for short, directory in NANOBEIR_SPLITS.items()}
    present = sorted(short_names.get(d, d) for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)))
    hint = (f"pass --eval-datasets {','.join(present)} to evaluate on the datasets it holds" if present else
            "it holds no dataset directory such as NanoMSMARCO/")
    return UsageError(f"--eval-data {source}: {os.path.join(source, split)} does not exist (a dataset of "
                      f"--eval-datasets); {hint}")


def nanobeir_retrieval_set(tables, split="NanoBEIR"):
    """One NanoBEIR split as a retrieval set (see `reranking_samples`): the whole corpus, one query per row of the
    bm25 table (the queries the reranking evaluation uses), positives = every corpus id the qrels give for the query,
    first stage = the bm25 table's ranking."""
    corpus_ids = [str(row["_id"]) for row in tables["corpus"]]
    index = {corpus_id: i for i, corpus_id in enumerate(corpus_ids)}
    queries = {str(row["_id"]): row["text"] for row in tables["queries"]}
    positives = {}  # query id -> corpus ids, first-seen order, no repeats
    for row in tables["qrels"]:
        ids = row["corpus-id"] if isinstance(row["corpus-id"], list) else [row["corpus-id"]]
        known = positives.setdefault(str(row["query-id"]), [])
        known.extend(str(i) for i in ids if str(i) not in known)
    missing = sorted({i for ids in positives.values() for i in ids if i not in index})
    if missing:
        raise UsageError(f"{split}: its qrels name {len(missing)} corpus id(s) that its corpus does not hold, "
                         f"e.g. {missing[0]!r}")
    query_ids = [str(row["query-id"]) for row in tables["bm25"]]
    unranked = {q for q, ids in positives.items() if ids and queries.get(q)} - set(query_ids)
    if unranked:  # sentence-transformers' NanoBEIR retrieval evaluator would evaluate them too
        warnings.warn(f"{split}: {len(unranked)} queries with qrels have no bm25 row and are left out of the "
                      f"evaluation, e.g. {min(unranked)!r}")
    return {
        "queries": [queries[q] for q in query_ids],
        "corpus": [row["text"] for row in tables["corpus"]],
        "corpus_ids": corpus_ids,  # the tie order of dense retrieval (train/retrieval.py)
        "positives": [[index[i] for i in positives.get(q, [])] for q in query_ids],
        "first_stage": [[index[str(i)] for i in row["corpus-ids"]] for row in tables["bm25"]],
    }


def reranking_samples(retrieval_set, candidates, rerank_k=100):
    """Reranking samples from a retrieval set {"queries": [str], "corpus": [str], "corpus_ids": [id],
    "positives": [[corpus index]], "first_stage": [[corpus index]]} and per-query candidate lists (corpus indices,
    best first: its "first_stage", or a dense retriever's ranking): the first rerank_k candidates of each query."""
    corpus = retrieval_set["corpus"]
    return [{"query": query, "positive": [corpus[i] for i in positives], "documents": [corpus[i] for i in ranked[:rerank_k]]}
            for query, positives, ranked in zip(retrieval_set["queries"], retrieval_set["positives"], candidates)]


def nanobeir_samples(tables, rerank_k=100):
    """Reranking samples of one NanoBEIR split: per row of the bm25 table, its top rerank_k candidates in BM25
    order, positives = every corpus id the qrels give for the query."""
    retrieval_set = nanobeir_retrieval_set(tables)
    return reranking_samples(retrieval_set, retrieval_set["first_stage"], rerank_k)


def load_nanobeir_retrieval(source=NANOBEIR_HUB_ID, dataset_names=("msmarco", "nfcorpus", "nq")):
    """{"NanoMSMARCO": retrieval set, ...} from the hub id or a local directory DIR/NanoMSMARCO/*.jsonl."""
    sets = {}
    for short in dataset_names:
        split = NANOBEIR_SPLITS.get(short.lower(), short)
        sets[split] = nanobeir_retrieval_set(_load_tables(source, split), split)
    return sets


def load_nanobeir(source=NANOBEIR_HUB_ID, dataset_names=("msmarco", "nfcorpus", "nq"), rerank_k=100):
    """{"NanoMSMARCO_R100": samples, ...} from the hub id or a local directory DIR/NanoMSMARCO/*.jsonl."""
    return {f"{name}_R{rerank_k}": reranking_samples(retrieval_set, retrieval_set["first_stage"], rerank_k)
            for name, retrieval_set in load_nanobeir_retrieval(source, dataset_names).items()}


# ------------------------------------------------------------- held-out MS MARCO queries as a NanoBEIR-style set

def _words(text):
    return re.findall(r"\w+", text.lower())


def bm25_rank(query, documents, k1=1.5, b=0.75):
    """Indices of `documents` by Okapi BM25 score for `query`, best first (ties keep document order)."""
    doc_words = [Counter(_words(doc)) for doc in documents]
    lengths = np.array([sum(c.values()) for c in doc_words], dtype=np.float64)
    avg_length = lengths.mean() if len(lengths) else 1.0
    document_frequency = Counter(word for c in doc_words for word in c)
    n = len(documents)
    scores = np.zeros(n)
    for word in set(_words(query)):
        df = document_frequency.get(word, 0)
        if df == 0:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        tf = np.array([c.get(word, 0) for c in doc_words], dtype=np.float64)
        scores += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / avg_length))
    return list(np.argsort(-scores, kind="stable"))


def heldout_retrieval_set(queries):
    """A retrieval set from MS MARCO rows (data.to_listwise records): the corpus is every passage of every given
    query (deduplicated), positives are each query's selected passages, the first stage is BM25 over that pool."""
    pool = list(dict.fromkeys(doc for q in queries for doc in q["docs"]))
    index = {doc: i for i, doc in enumerate(pool)}
    return {
        "queries": [q["query"] for q in queries],
        "corpus": pool,
        "corpus_ids": list(range(len(pool))),
        "positives": [[index[doc] for doc, label in zip(q["docs"], q["labels"]) if label > 0] for q in queries],
        "first_stage": [bm25_rank(q["query"], pool) for q in queries],
    }


def heldout_samples(queries, rerank_k=100):
    """NanoBEIR-style reranking samples from MS MARCO rows (data.to_listwise records): the candidate pool is every
    passage of every given query (deduplicated), each query's candidates are its BM25 top rerank_k from that pool,
    so its own passages are mixed with the other queries' passages; positives are its selected passages."""
    retrieval_set = heldout_retrieval_set(queries)
    return reranking_samples(retrieval_set, retrieval_set["first_stage"], rerank_k)
