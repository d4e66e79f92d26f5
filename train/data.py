"""MS MARCO v1.1 as listwise training data: (query, candidate passages, is_selected labels) per query.

Rows come from the hub (`microsoft/ms_marco`, config `v1.1`) or from a local JSON / JSON-lines file in the same
schema. Real-data quirks handled here: queries without any selected passage (dropped, as the published recipe did),
5-10 passages per query (lists are padded per batch and passed to the loss with `lengths`), and `passages` given
either as a dict of lists (hub schema) or as a list of per-passage dicts (the original MS MARCO JSON).
"""

import json
import os
import random

import torch

from .hub import hub_unavailable
from .inputs import UsageError
from .logging_setup import hide_hub_progress_bars

MSMARCO_HUB_ID = "microsoft/ms_marco"
MSMARCO_CONFIG = "v1.1"
BATCH_ORDERS = ("loop", "trainer")  # how each epoch's permutation is seeded: see epoch_seed


def load_msmarco_rows(source, split="train"):
    """Raw rows (dicts in the ms_marco schema) from a local .json/.jsonl file or a hub dataset id."""
    if os.path.isfile(source):
        with open(source, encoding="utf-8") as f:
            text = f.read()
        try:
            data = json.loads(text)  # one JSON document: a list of rows, {"data": [...]} or a single row
        except json.JSONDecodeError:
            return [json.loads(line) for line in text.splitlines() if line.strip()]  # JSON lines
        if isinstance(data, dict):
            return data["data"] if "data" in data else [data]
        return data
    try:
        from datasets import load_dataset
        hide_hub_progress_bars()
        return list(load_dataset(source, MSMARCO_CONFIG, split=split))
    except Exception as exc:
        raise hub_unavailable(f"{source} ({MSMARCO_CONFIG}, {split})", exc) from exc


def _passages(row):
    passages = row["passages"]
    if isinstance(passages, dict):
        return list(passages["passage_text"]), [int(bool(s)) for s in passages["is_selected"]]
    return [p["passage_text"] for p in passages], [int(bool(p["is_selected"])) for p in passages]


def to_listwise(rows, max_docs=None, positives_first=True):
    """One record {"query_id", "query", "docs", "labels"} per row that has a selected passage.

    Positives are moved first (stable: the original order is kept among positives and among negatives), so that
    the input order is a valid target ranking for `respect_input_order=True`. max_docs keeps the first max_docs
    documents of that order (so positives survive the cut). positives_first=False keeps the file's order.
    """
    records = []
    for row in rows:
        docs, labels = _passages(row)
        if sum(labels) == 0:
            continue
        order = list(range(len(docs)))
        if positives_first:
            order.sort(key=lambda i: -labels[i])  # list.sort is stable
        if max_docs:
            order = order[:max_docs]
        records.append({
            "query_id": row.get("query_id"),
            "query": row["query"],
            "docs": [docs[i] for i in order],
            "labels": [float(labels[i]) for i in order],
        })
    return records


def split_validation(records, val_queries, seed):
    """(train, validation): a seeded random choice of val_queries records for the validation loss."""
    if val_queries <= 0:
        return records, []
    if val_queries >= len(records):
        raise UsageError(f"--val-queries {val_queries} leaves no training queries: the training data has "
                         f"{len(records)} queries with a selected passage; pass a smaller --val-queries "
                         f"(0: no validation loss)")
    chosen = set(random.Random(seed).sample(range(len(records)), val_queries))
    train = [r for i, r in enumerate(records) if i not in chosen]
    val = [r for i, r in enumerate(records) if i in chosen]
    return train, val


def steps_per_epoch(n_records, batch_size, world_size=1):
    """Optimizer steps in one pass: global batches of batch_size * world_size queries; a last partial global
    batch is kept as long as every process still gets at least one query."""
    global_batch = batch_size * world_size
    full, rest = divmod(n_records, global_batch)
    return full + (1 if rest >= world_size else 0)


def training_records(args):
    """(rows read, listwise records, train records, validation records) of `python -m train`'s flags: the data, the
    --train-queries cut, the positives-first lists and the seeded validation split."""
    rows = load_msmarco_rows(args.train_data)
    if args.train_queries is not None:
        rows = rows[: args.train_queries]
    records = to_listwise(rows, args.max_docs)
    return (rows, records) + split_validation(records, args.val_queries, args.seed)


def epoch_seed(seed, epoch, batch_order="loop"):
    """The seed of an epoch's permutation of the training records. "loop": seed * 1000 + epoch. "trainer": seed +
    epoch, what sentence-transformers' CrossEncoderTrainer shuffles with by default (its random sampler, made
    seedable by accelerate, is reseeded with the training seed plus the epoch before each epoch), so that a run
    can take the trainer's batches one for one (`python -m train.trainer_parity`)."""
    if batch_order == "loop":
        return seed * 1000 + epoch
    if batch_order == "trainer":
        return seed + epoch
    raise ValueError(f"batch_order must be one of {BATCH_ORDERS}, got {batch_order!r}")


def batch_indices(n_records, batch_size, step_in_epoch, epoch, seed, rank=0, world_size=1, batch_order="loop"):
    """Record indices of this process's batch at a given step: one seeded permutation per epoch (`epoch_seed`),
    global batch `step_in_epoch`, every world_size-th entry from `rank`. Pure function of its arguments, so
    resuming at any step reproduces the order exactly."""
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch, batch_order))
    order = torch.randperm(n_records, generator=generator).tolist()
    global_batch = batch_size * world_size
    chunk = order[step_in_epoch * global_batch : (step_in_epoch + 1) * global_batch]
    return chunk[rank::world_size]


def collate(tokenizer, records, max_length, pairs_per_forward=None):
    """Tokenised (query, doc) pairs of all records, flattened in record order and cut into forward batches of at
    most pairs_per_forward pairs (None: one batch), each padded to its own longest pair; plus the per-query list
    lengths and padded labels."""
    queries = [r["query"] for r in records for _ in r["docs"]]
    docs = [d for r in records for d in r["docs"]]
    size = pairs_per_forward or len(docs)
    encoded = [tokenizer(queries[start : start + size], docs[start : start + size], padding=True, truncation=True,
                         max_length=max_length, return_tensors="pt") for start in range(0, len(docs), size)]
    return (encoded,) + list_lengths_and_labels(records)


def list_lengths_and_labels(records):
    """(B,) list lengths and (B, max length) float labels, 0 at padding, of a batch of records."""
    lengths = torch.tensor([len(r["docs"]) for r in records])
    labels = torch.zeros(len(records), int(lengths.max()))
    for i, r in enumerate(records):
        labels[i, : len(r["labels"])] = torch.tensor(r["labels"])
    return lengths, labels


def pad_scores(flat_scores, lengths):
    """(sum(lengths),) scores -> (B, max(lengths)) with zeros in the padding (the loss ignores it via lengths)."""
    rows = torch.split(flat_scores, lengths.tolist())
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
