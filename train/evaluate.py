"""Evaluation of a trained model: `python -m train.evaluate --model DIR [--arch cross-encoder|bi-encoder]`.

cross-encoder: NanoBEIR-style reranking (train/nanobeir.py) of each query's first-stage candidates, BM25 (the
  NanoBEIR bm25 table) or a bi-encoder's dense top --rerank-k (`--candidates dense:MODEL_DIR`). Pairs are scored with
  an AutoModelForSequenceClassification (one label) in batches sorted by length, under torch.inference_mode and bf16
  autocast on GPUs that support it.
bi-encoder: full-corpus dense retrieval (train/retrieval.py) with MRR@10, NDCG@10 and Recall@100.
"""

import argparse
import json
import sys

import numpy as np
import torch

from .biencoder import saved_pooling
from .config import DefaultsHelpFormatter
from .data import load_msmarco_rows, to_listwise
from .inference import run_batched
from .inputs import INPUT_ERRORS, UsageError, check_local_paths, parse_candidates, report_input_error
from .logging_setup import add_logging_flags, setup_logging
from .models import ARCHS, load_model
from .nanobeir import (NANOBEIR_HUB_ID, evaluate_datasets, format_table, heldout_retrieval_set,
                       load_nanobeir_retrieval, reranking_samples)
from .retrieval import dense_rankings, evaluate_retrieval, format_retrieval_table


def make_score_fn(model, tokenizer, max_length=512, batch_size=64, device="cpu", bf16=False, progress=True):
    """score_fn(list of (query, doc)) -> np.ndarray of sigmoid(logit) in float32, in the order given.

    These are the scores CrossEncoderRerankingEvaluator ranks: sentence-transformers' CrossEncoder.predict upcasts
    a one-label model's logits to float32 and applies its default Sigmoid. Ranking the same values keeps the ties
    the same: float32 sigmoid rounds every logit above ~16.6 to 1.0 (and nearby large logits to one value)."""

    def forward(pairs):
        encoded = tokenizer([q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt").to(device)
        logits = model(**encoded).logits[:, 0].float()  # bf16 under autocast: upcast first, as CrossEncoder does
        return torch.sigmoid(logits)

    def score_fn(pairs):
        return run_batched(model, pairs, forward, batch_size, device, bf16, length=lambda p: len(p[0]) + len(p[1]),
                           progress=progress).numpy().astype(np.float64)

    return score_fn


def load_retrieval_sets(eval_data, eval_datasets="msmarco,nfcorpus,nq", train_data=None, train_queries=None):
    """({dataset name: retrieval set}, prefix of the mean row) for --eval-data: NanoBEIR ("NanoMSMARCO", ...;
    "NanoBEIR") or the held-out rows of --train-data ("MSMARCOHeldOut"; "HeldOut")."""
    if eval_data == "heldout":
        if train_data is None or train_queries is None:
            raise UsageError("--eval-data heldout needs --train-data FILE and --train-queries N")
        rows = load_msmarco_rows(train_data)[train_queries:]
        if not rows:
            raise UsageError(f"--train-queries {train_queries} leaves no held-out rows in {train_data}")
        records = to_listwise(rows, positives_first=False)  # queries without a selected passage have no qrels
        return {"MSMARCOHeldOut": heldout_retrieval_set(records)}, "HeldOut"
    names = [name.strip() for name in eval_datasets.split(",") if name.strip()]
    return load_nanobeir_retrieval(eval_data, names), "NanoBEIR"


def load_eval_sets(eval_data, eval_datasets="msmarco,nfcorpus,nq", rerank_k=100, train_data=None,
                   train_queries=None, first_stage=None):
    """({dataset name: reranking samples}, name of the mean row) for --eval-data. first_stage(retrieval set, k) ->
    per-query candidate rankings; default: the BM25 first stage of the set."""
    retrieval_sets, prefix = load_retrieval_sets(eval_data, eval_datasets, train_data, train_queries)
    samples = {}
    for name, retrieval_set in retrieval_sets.items():
        candidates = first_stage(retrieval_set, rerank_k) if first_stage else retrieval_set["first_stage"]
        samples[f"{name}_R{rerank_k}"] = reranking_samples(retrieval_set, candidates, rerank_k)
    return samples, f"{prefix}_R{rerank_k}_mean"


def dense_first_stage(model_dir, max_length=512, batch_size=64, device="cpu", bf16=False, progress=True):
    """first_stage for load_eval_sets: the dense top-k of the bi-encoder in model_dir (its saved pooling, else CLS)."""
    model, tokenizer = load_model("bi-encoder", model_dir)
    model.to(device)
    pooling = saved_pooling(model_dir)
    return lambda retrieval_set, k: dense_rankings(model, tokenizer, retrieval_set, pooling, k, max_length=max_length,
                                                   batch_size=batch_size, device=device, bf16=bf16, progress=progress)


def load_evaluation(arch, eval_data, eval_datasets, rerank_k=100, train_data=None, train_queries=None,
                    candidates="bm25", max_length=512, batch_size=64, device="cpu", bf16=False):
    """(evaluation sets, mean name) for a model of kind `arch`: retrieval sets for a bi-encoder, reranking samples
    with the first stage given by `candidates` for a cross-encoder."""
    dense_dir = parse_candidates(candidates)
    if arch == "bi-encoder":
        if dense_dir is not None:
            raise UsageError("--candidates applies to the cross-encoder's reranking evaluation only")
        retrieval_sets, prefix = load_retrieval_sets(eval_data, eval_datasets, train_data, train_queries)
        return retrieval_sets, f"{prefix}_mean"
    with torch.random.fork_rng(devices=[]):  # loading the retriever must not move the seeded init of the model
        first_stage = dense_dir and dense_first_stage(dense_dir, max_length, batch_size, device, bf16)
        return load_eval_sets(eval_data, eval_datasets, rerank_k, train_data, train_queries, first_stage)


def run_evaluation(arch, model, tokenizer, eval_sets, mean_name, pooling=None, max_length=512, batch_size=64,
                   device="cpu", bf16=False, at_k=10, progress=True):
    """(results, markdown table, key of the score that picks the best model)."""
    if arch == "bi-encoder":
        results = evaluate_retrieval(model, tokenizer, eval_sets, mean_name, pooling, max_length, batch_size, device,
                                     bf16, at_k, progress=progress)
        return results, format_retrieval_table(results, list(eval_sets), mean_name), f"{mean_name}_dot_ndcg@{at_k}"
    results = evaluate_model(model, tokenizer, eval_sets, mean_name, max_length, batch_size, device, bf16, at_k,
                             progress)
    return results, format_table(results, list(eval_sets), mean_name), f"{mean_name}_ndcg@{at_k}"


def evaluate_model(model, tokenizer, eval_sets, mean_name, max_length=512, batch_size=64, device="cpu", bf16=False,
                   at_k=10, progress=True):
    score_fn = make_score_fn(model, tokenizer, max_length, batch_size, device, bf16, progress)
    return evaluate_datasets(score_fn, eval_sets, at_k=at_k, prefix=mean_name)


class RawDescriptionDefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultsHelpFormatter):
    """The module docstring as written, and every flag's default."""


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                formatter_class=RawDescriptionDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model directory (or hub id)")
    p.add_argument("--arch", choices=ARCHS, default="cross-encoder",
                   help="cross-encoder: one-label reranker, reranking evaluation; bi-encoder: dense retrieval")
    p.add_argument("--pooling", choices=["cls", "mean"], default=None,
                   help="bi-encoder pooling (default: the one saved in MODEL/1_Pooling/config.json, else cls)")
    p.add_argument("--candidates", default="bm25",
                   help="cross-encoder first stage: 'bm25' or 'dense:MODEL_DIR' (a bi-encoder's top --rerank-k)")
    p.add_argument("--eval-data", default=NANOBEIR_HUB_ID, help="NanoBEIR hub id, local directory, or 'heldout'")
    p.add_argument("--eval-datasets", default="msmarco,nfcorpus,nq", help="comma-separated NanoBEIR datasets")
    p.add_argument("--train-data", default=None, help="for --eval-data heldout: the ms_marco-schema file")
    p.add_argument("--train-queries", type=int, default=None, help="for --eval-data heldout: rows used for training")
    p.add_argument("--rerank-k", type=int, default=100, help="cross-encoder: candidates per query reranked")
    p.add_argument("--max-length", type=int, default=512,
                   help="max tokens per (query, doc) pair (cross-encoder) or per text (bi-encoder)")
    p.add_argument("--batch-size", type=int, default=64, help="pairs (cross-encoder) or texts per scoring batch")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto = cuda when a GPU is visible, else cpu")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast; auto = on for CUDA GPUs that support it")
    p.add_argument("--output", default=None, help="write the results as JSON here; default: the table only")
    add_logging_flags(p)
    args = p.parse_args(argv)
    setup_logging(args.log_level)

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and device == "cuda" and torch.cuda.is_bf16_supported())
    try:
        check_local_paths(args)
        eval_sets, mean_name = load_evaluation(args.arch, args.eval_data, args.eval_datasets, args.rerank_k,
                                               args.train_data, args.train_queries, args.candidates, args.max_length,
                                               args.batch_size, device, bf16)
        model, tokenizer = load_model(args.arch, args.model)
    except INPUT_ERRORS as exc:
        return report_input_error(p.prog, exc)
    pooling = args.pooling or saved_pooling(args.model)
    results, table, _ = run_evaluation(args.arch, model.to(device), tokenizer, eval_sets, mean_name, pooling,
                                       args.max_length, args.batch_size, device, bf16)
    print(table)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
