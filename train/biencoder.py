"""Bi-encoder (TAS-B style dense retriever): one shared transformers encoder for queries and passages, a pooled
embedding per text, relevance = dot product of query and passage embeddings.

Saved models are plain `save_pretrained` directories (they load with transformers' `AutoModel`) plus the two small
files sentence-transformers reads, `modules.json` and `1_Pooling/config.json`, so `SentenceTransformer(DIR)` gives
the same embeddings and this code knows the pooling a saved model was trained with.
"""

import json
import os

import torch

from .inference import run_batched

POOLINGS = ("cls", "mean")


def pool(last_hidden_state, attention_mask, pooling):
    """(N, T, H) token states -> (N, H): the [CLS] token's state, or the mean over real tokens (padding excluded)."""
    if pooling == "cls":
        return last_hidden_state[:, 0]
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
        return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def embed(model, tokenizer, texts, pooling, max_length, device):
    """Embeddings of `texts` in one forward pass (with gradients when enabled)."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    return pool(model(**encoded).last_hidden_state, encoded["attention_mask"], pooling)


def encode_texts(model, tokenizer, texts, pooling, max_length=512, batch_size=64, device="cpu", bf16=False,
                 progress=True):
    """(len(texts), H) float32 CPU embeddings, batched (longest first) under torch.inference_mode."""
    return run_batched(model, texts, lambda chunk: embed(model, tokenizer, chunk, pooling, max_length, device),
                       batch_size, device, bf16, desc="encoding", progress=progress)


def candidate_lists(records, in_batch_negatives=False):
    """Which passages of the batch each query is scored against, as indices into the flat list of all passages
    (records in order, each record's docs in order).

    Returns (index, mask, labels), each (B, L): row b holds query b's own documents first, in their order, then, with
    in_batch_negatives, every other query's documents (label 0), each text once and none that is a copy of one of its
    own documents (a copy of a positive must not become a negative); mask is False on padding, wherever it sits;
    index is 0 there."""
    offsets, flat_docs = [], []
    for record in records:
        offsets.append(len(flat_docs))
        flat_docs.extend(record["docs"])
    rows = []
    for b, record in enumerate(records):
        own = list(range(offsets[b], offsets[b] + len(record["docs"])))
        labels = [float(label) for label in record["labels"]]
        if in_batch_negatives:
            seen, others = set(record["docs"]), []
            for i in range(len(flat_docs)):
                if not offsets[b] <= i < offsets[b] + len(record["docs"]) and flat_docs[i] not in seen:
                    seen.add(flat_docs[i])
                    others.append(i)
            own, labels = own + others, labels + [0.0] * len(others)
        rows.append((own, labels))
    width = max(len(own) for own, _ in rows)
    index = torch.zeros(len(records), width, dtype=torch.long)
    mask = torch.zeros(len(records), width, dtype=torch.bool)
    labels = torch.zeros(len(records), width)
    for b, (own, row_labels) in enumerate(rows):
        index[b, : len(own)] = torch.tensor(own)
        mask[b, : len(own)] = True
        labels[b, : len(own)] = torch.tensor(row_labels)
    return index, mask, labels


def biencoder_scores(model, tokenizer, records, pooling, max_length, device, in_batch_negatives=False):
    """Dot-product scores of each query against its candidate list: (scores (B, L) fp32, labels, mask).

    Queries and passages go through the shared encoder in one forward call (one graph for DDP); scores at padding
    are 0 and masked out. The encoder runs under the caller's autocast (bf16 in training); the dot products do not:
    autocast would cast the float32 embeddings back to bf16 for the matmul."""
    queries = [r["query"] for r in records]
    docs = [d for r in records for d in r["docs"]]
    embeddings = embed(model, tokenizer, queries + docs, pooling, max_length, device).float()
    query_embeddings, doc_embeddings = embeddings[: len(queries)], embeddings[len(queries) :]
    index, mask, labels = candidate_lists(records, in_batch_negatives)
    index, mask = index.to(device), mask.to(device)
    with torch.autocast(device_type=embeddings.device.type, enabled=False):
        all_scores = query_embeddings @ doc_embeddings.T  # (B, all passages of the batch), float32
        scores = torch.gather(all_scores, 1, index).masked_fill(~mask, 0.0)
    return scores, labels.to(device), mask


# ---------------------------------------------------------------------------------------------- saving, loading

def save_biencoder(model, tokenizer, path, pooling, max_length):
    """save_pretrained of model and tokenizer, plus sentence-transformers' module list (Transformer, Pooling; no
    Normalize: scores are plain dot products) and the training's max length, so SentenceTransformer(path)
    truncates where training did."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    with open(os.path.join(path, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": max_length, "do_lower_case": False}, f, indent=2)
    os.makedirs(os.path.join(path, "1_Pooling"), exist_ok=True)
    with open(os.path.join(path, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": model.config.hidden_size, "pooling_mode_cls_token": pooling == "cls",
                   "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False}, f, indent=2)
    with open(os.path.join(path, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}],
                  f, indent=2)
    with open(os.path.join(path, "config_sentence_transformers.json"), "w") as f:
        json.dump({"similarity_fn_name": "dot"}, f, indent=2)


def saved_pooling(path, default="cls"):
    """The pooling recorded in a model directory's sentence-transformers `1_Pooling/config.json`, else `default`."""
    config_path = os.path.join(str(path), "1_Pooling", "config.json")
    if not os.path.isfile(config_path):
        return default
    with open(config_path) as f:
        config = json.load(f)
    if config.get("pooling_mode_cls_token"):
        return "cls"
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    raise ValueError(f"{config_path}: only CLS or mean pooling is supported")
