"""Reranking evaluation of a cross-encoder: `python -m train.evaluate --model DIR`.

Scores (query, doc) pairs with an AutoModelForSequenceClassification (one label) in batches sorted by length,
under torch.inference_mode and bf16 autocast on GPUs that support it, and prints the NanoBEIR-style table.
"""

import argparse
import json
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from .data import load_msmarco_rows, to_listwise
from .hub import HubUnavailableError, hub_unavailable
from .nanobeir import NANOBEIR_HUB_ID, evaluate_datasets, format_table, heldout_samples, load_nanobeir


def make_score_fn(model, tokenizer, max_length=512, batch_size=64, device="cpu", bf16=False, progress=True):
    """score_fn(list of (query, doc)) -> np.ndarray of model logits, in the order given."""

    def score_fn(pairs):
        # Longest first: batches of similar lengths waste little padding, and an out-of-memory shows up at once.
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        scores = np.zeros(len(pairs), dtype=np.float64)
        was_training = model.training
        model.eval()
        with torch.inference_mode(), torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                                                    enabled=bf16):
            for start in tqdm(range(0, len(order), batch_size), desc="scoring", leave=False, disable=not progress):
                chunk = order[start : start + batch_size]
                encoded = tokenizer([pairs[i][0] for i in chunk], [pairs[i][1] for i in chunk], padding=True,
                                    truncation=True, max_length=max_length, return_tensors="pt").to(device)
                logits = model(**encoded).logits[:, 0].float().cpu().numpy()
                scores[chunk] = logits
        model.train(was_training)
        return scores

    return score_fn


def load_eval_sets(eval_data, eval_datasets="msmarco,nfcorpus,nq", rerank_k=100, train_data=None,
                   train_queries=None):
    """({dataset name: reranking samples}, name of the mean row) for --eval-data."""
    if eval_data == "heldout":
        if train_data is None or train_queries is None:
            raise ValueError("--eval-data heldout needs --train-data FILE and --train-queries N")
        rows = load_msmarco_rows(train_data)[train_queries:]
        if not rows:
            raise ValueError(f"--train-queries {train_queries} leaves no held-out rows in {train_data}")
        records = to_listwise(rows, positives_first=False)  # queries without a selected passage have no qrels
        return {f"MSMARCOHeldOut_R{rerank_k}": heldout_samples(records, rerank_k)}, f"HeldOut_R{rerank_k}_mean"
    names = [name.strip() for name in eval_datasets.split(",") if name.strip()]
    return load_nanobeir(eval_data, names, rerank_k), f"NanoBEIR_R{rerank_k}_mean"


def evaluate_model(model, tokenizer, eval_sets, mean_name, max_length=512, batch_size=64, device="cpu", bf16=False,
                   at_k=10, progress=True):
    score_fn = make_score_fn(model, tokenizer, max_length, batch_size, device, bf16, progress)
    return evaluate_datasets(score_fn, eval_sets, at_k=at_k, prefix=mean_name)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__)
    p.add_argument("--model", required=True, help="model directory (or hub id) of a one-label cross-encoder")
    p.add_argument("--eval-data", default=NANOBEIR_HUB_ID, help="NanoBEIR hub id, local directory, or 'heldout'")
    p.add_argument("--eval-datasets", default="msmarco,nfcorpus,nq")
    p.add_argument("--train-data", default=None, help="for --eval-data heldout: the ms_marco-schema file")
    p.add_argument("--train-queries", type=int, default=None, help="for --eval-data heldout: rows used for training")
    p.add_argument("--rerank-k", type=int, default=100)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--output", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and device == "cuda" and torch.cuda.is_bf16_supported())
    try:
        eval_sets, mean_name = load_eval_sets(args.eval_data, args.eval_datasets, args.rerank_k, args.train_data,
                                              args.train_queries)
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.model)
            model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1).to(device)
        except OSError as exc:
            raise hub_unavailable(args.model, exc) from exc
    except HubUnavailableError as exc:
        print(exc, file=sys.stderr)
        return 2
    results = evaluate_model(model, tokenizer, eval_sets, mean_name, args.max_length, args.batch_size, device, bf16)
    print(format_table(results, list(eval_sets), mean_name))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
