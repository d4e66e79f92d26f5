"""Train a cross-encoder reranker or a bi-encoder retriever with the fused ListMLE / p-ListMLE loss:
`python -m train [--arch cross-encoder|bi-encoder] [flags]`.

Read top to bottom: flags (train/config.py) -> processes and device -> data -> model and optimizer -> resume ->
a plain loop (scores of each of 16 queries against its candidate list, loss over the lists, backward, clip, step)
with evaluation + checkpoint every --eval-steps. The two architectures differ only in how a batch is scored
(`batch_scores`), how a model is loaded and saved (train/models.py) and how it is evaluated (train/evaluate.py):
  cross-encoder  one forward pass over every (query, passage) pair; NanoBEIR-style reranking of the first stage
                 (--candidates bm25 or dense:MODEL_DIR)
  bi-encoder     one shared encoder embeds queries and passages (--pooling cls|mean), scores are dot products with
                 the query's own passages (+ the batch's other passages with --in-batch-negatives); full-corpus
                 dense retrieval (train/retrieval.py)
Multi-GPU: `torchrun --nproc_per_node N -m train ...` (PyTorch DDP; gloo on CPU, nccl on CUDA); --batch-size is per
process. Progress goes to stderr through the `logging` module (train/logging_setup.py), from rank 0 only.

Output directory:
  train_log.jsonl        one line per step: step, epoch, loss, lr, grad_norm, queries_per_s
  eval_results.jsonl     one line per evaluation: step, val_loss, "<Dataset>_R100_ndcg@10", ..., "..._mean_ndcg@10"
                         (bi-encoder: "<Dataset>_dot_ndcg@10", ..., "NanoBEIR_mean_dot_ndcg@10")
  checkpoint-<step>/     model + tokenizer (save_pretrained) + trainer_state.pt (optimizer, scheduler, step, best)
                         + rng_state_<rank>.pt; the last --save-total-limit (default 2) are kept; --resume continues
                         from one exactly. --save-only-model saves the model and tokenizer only (trainer_state.pt
                         then holds step, best and flags), which --resume refuses
  best-model/            save_pretrained of the best evaluation by mean ndcg@10 (cross-encoder: loads with
                         transformers' AutoModelForSequenceClassification and sentence-transformers' CrossEncoder;
                         bi-encoder: with AutoModel and sentence-transformers' SentenceTransformer)
"""

import glob
import json
import logging
import math
import os
import random
import shutil
import time

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .config import parse_args
from .biencoder import biencoder_scores
from .data import batch_indices, collate, pad_scores, steps_per_epoch, training_records
from .evaluate import load_evaluation, run_evaluation
from .inputs import INPUT_ERRORS, UsageError, check_local_paths, report_input_error
from .logging_setup import setup_logging, show_progress_bars
from .losses import ranking_loss
from .models import load_model, save_model

logger = logging.getLogger(__name__)
RUN_OUTPUTS = ("train_log.jsonl", "eval_results.jsonl", "best-model")  # besides checkpoint-<step>/


def batch_scores(model, tokenizer, records, args, device, use_bf16):
    """(scores (B, L) fp32, labels (B, L), {"lengths": ...} or {"mask": ...}) of a batch of queries, each row a
    query's candidate list in target order (positives first); the loss runs in fp32 whatever the autocast dtype."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        if args.arch == "bi-encoder":
            scores, labels, mask = biencoder_scores(model, tokenizer, records, args.pooling, args.max_length, device,
                                                    args.in_batch_negatives)
            return scores, labels, {"mask": mask}
        # every pair in one forward pass, or --pairs-per-forward at a time (as sentence-transformers' mini_batch_size)
        encoded, lengths, labels = collate(tokenizer, records, args.max_length, args.pairs_per_forward)
        flat_scores = torch.cat([model(**part.to(device)).logits[:, 0] for part in encoded])
    return pad_scores(flat_scores.float(), lengths), labels.to(device), {"lengths": lengths.to(device)}


def compute_loss(model, tokenizer, records, args, device, use_bf16, generator=None):
    """ListMLE over a batch of queries, padding excluded exactly through lengths or mask."""
    scores, labels, padding = batch_scores(model, tokenizer, records, args, device, use_bf16)
    return ranking_loss(scores, labels, padding, args, generator)


def tie_generator(args, device, step):
    """A fresh generator per step, so --ties random is reproducible and needs no state in the checkpoint."""
    if args.ties != "random" or args.respect_input_order:
        return None
    return torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + step)


@torch.no_grad()
def validation_loss(model, tokenizer, records, args, device, use_bf16):
    if not records:
        return None
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(records), args.batch_size):
        batch = records[start : start + args.batch_size]
        total += compute_loss(model, tokenizer, batch, args, device, use_bf16, tie_generator(args, device, -1)).item() * len(batch)
    model.train(was_training)
    return total / len(records)


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def truncate_jsonl(path, last_step):
    """Drop log lines written after the checkpoint we resume from (a crashed run may have gone further)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= last_step]
    with open(path, "w") as f:
        f.writelines(kept)


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def checkpoints(output_dir):
    """checkpoint-<step> directories in output_dir, oldest step first."""
    return sorted(glob.glob(os.path.join(output_dir, "checkpoint-*")), key=lambda p: int(p.rsplit("-", 1)[1]))


def resume_checkpoint(args):
    """The checkpoint directory --resume names ("latest": the newest in --output-dir), or None."""
    if not args.resume:
        return None
    if args.resume != "latest":
        return args.resume
    found = checkpoints(args.output_dir)
    if not found:
        raise UsageError(f"--resume: no checkpoint-* in --output-dir {args.output_dir}")
    return found[-1]


def read_trainer_state(checkpoint):
    """The trainer_state.pt of a checkpoint --resume can continue exactly; UsageError for any other directory."""
    path = os.path.join(checkpoint, "trainer_state.pt")
    if not os.path.isfile(path):
        raise UsageError(f"--resume: {checkpoint} is not a checkpoint of python -m train (no trainer_state.pt)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "optimizer" not in state:
        raise UsageError(f"--resume: {checkpoint} was saved with --save-only-model (no optimizer, scheduler or RNG "
                         f"state), so training cannot resume from it exactly; start a new run from its weights with "
                         f"--model {checkpoint}, or save checkpoints without --save-only-model to resume")
    return state


def save_checkpoint(args, raw_model, tokenizer, optimizer, scheduler, step, best):
    """checkpoint-<step>/ (the RNG states are added by every rank), then the oldest beyond --save-total-limit go."""
    path = os.path.join(args.output_dir, f"checkpoint-{step}")
    save_model(args.arch, raw_model, tokenizer, path, args.pooling, args.max_length)
    state = {"step": step, "best": best, "args": vars(args)}
    if not args.save_only_model:
        state.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict())
    torch.save(state, os.path.join(path, "trainer_state.pt"))
    logger.info("saved %s (%s)", path, "model and tokenizer only: --save-only-model, cannot be resumed"
                if args.save_only_model else "model, tokenizer, optimizer, scheduler and RNG states")
    for stale in checkpoints(args.output_dir)[:-args.save_total_limit]:
        shutil.rmtree(stale)
        logger.info("deleted %s (--save-total-limit %d)", stale, args.save_total_limit)


def earlier_run_outputs(output_dir):
    """What an earlier run left in output_dir: its checkpoints, logs and best model."""
    named = [os.path.join(output_dir, name) for name in RUN_OUTPUTS]
    return checkpoints(output_dir) + [path for path in named if os.path.exists(path)]


def check_fresh_output_dir(args):
    """A fresh run must not mix with an earlier one: the rotation keeping the last --save-total-limit would delete
    the new run's checkpoints in favour of the old, higher-numbered ones, and --resume would pick those up."""
    if args.resume or args.overwrite_output_dir:
        return
    found = earlier_run_outputs(args.output_dir)
    if found:
        names = ", ".join(os.path.basename(path) for path in found)
        raise UsageError(f"--output-dir {args.output_dir} holds an earlier run ({names}); pass --resume to continue "
                         f"it or --overwrite-output-dir to delete it and start afresh")


def remove_earlier_run(output_dir):
    for path in earlier_run_outputs(output_dir):
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def main(argv=None):
    return run(parse_args(argv))


def run(args):
    """train(args) with logging set up for --log-level on this process's rank, an unreachable hub input reported as
    one paragraph, and a flag value that cannot work as one argparse-style line; both with exit code 2."""
    setup_logging(args.log_level, int(os.environ.get("RANK", "0")))
    try:
        return train(args)
    except INPUT_ERRORS as exc:
        return report_input_error("python -m train", exc)


def train(args):
    # ------------------------------------------------------------------ inputs that cannot work stop here, cheaply
    # (every rank checks before init_process_group, so before rank 0 writes anything into --output-dir)
    check_local_paths(args)
    check_fresh_output_dir(args)
    checkpoint = resume_checkpoint(args)  # resuming loads the model from it (the optimizer state follows below)
    state = read_trainer_state(checkpoint) if checkpoint else None
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.pairs_per_forward and world_size > 1:
        # DDP broadcasts the model's buffers at every forward: ranks with different numbers of forwards would hang
        raise UsageError("--pairs-per-forward runs in one process only, not under torchrun")

    # ------------------------------------------------------------------ processes, device, precision, seeds
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    distributed = world_size > 1
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    logger.info("output directory: %s", os.path.abspath(args.output_dir))
    use_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)  # also seeds the new classifier head of the model below

    # ------------------------------------------------------------------ data
    rows, records, train_records, val_records = training_records(args)
    eval_sets, mean_name = load_evaluation(
        args.arch, args.eval_data, args.eval_datasets, args.rerank_k, args.train_data, args.train_queries,
        args.candidates, args.max_length, args.eval_batch_size, device, use_bf16) if master else ({}, None)
    per_epoch = steps_per_epoch(len(train_records), args.batch_size, world_size)
    total_steps = args.max_steps if args.max_steps is not None else args.epochs * per_epoch
    logger.info("%d rows -> %d queries with a selected passage: %d train, %d validation; %d steps per epoch, %d "
                "steps, %d process(es), device %s, bf16 %s, %s", len(rows), len(records), len(train_records),
                len(val_records), per_epoch, total_steps, world_size, device, use_bf16, args.arch)

    # ------------------------------------------------------------------ model, optimizer, schedule
    from transformers import get_linear_schedule_with_warmup
    model, tokenizer = load_model(args.arch, checkpoint or args.model)
    model.to(device).train()
    raw_model = model
    if distributed:
        # A bi-encoder is a bare AutoModel: parts of it no bi-encoder loss uses (BERT's pooler, for one) get no
        # gradient, and DDP without find_unused_parameters then fails at step 2 ("Expected to have finished
        # reduction in the prior iteration"). The cross-encoder uses all its parameters and skips the graph walk.
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None,
                                                          find_unused_parameters=(args.arch == "bi-encoder"))
    # Hugging Face Trainer defaults (what the recipe used): "adamw_torch_fused" (fused on every device, torch >= 2.8),
    # betas (0.9, 0.999), eps 1e-8, no weight decay.
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(args.warmup_ratio * total_steps), total_steps)

    # ------------------------------------------------------------------ resume
    os.makedirs(args.output_dir, exist_ok=True)
    log_path = os.path.join(args.output_dir, "train_log.jsonl")
    eval_path = os.path.join(args.output_dir, "eval_results.jsonl")
    step, best = 0, None
    if checkpoint:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best = state["step"], state["best"]
        set_rng_state(torch.load(os.path.join(checkpoint, f"rng_state_{rank}.pt"), weights_only=False))
        if master:
            truncate_jsonl(log_path, step)
            truncate_jsonl(eval_path, step)
            logger.info("resumed from %s at step %d", checkpoint, step)
    elif master:
        remove_earlier_run(args.output_dir)  # only --overwrite-output-dir lets an earlier run get this far

    def evaluate_and_checkpoint(step):
        nonlocal best
        if master:
            results = {"step": step, "val_loss": validation_loss(raw_model, tokenizer, val_records, args, device, use_bf16)}
            metrics, table, best_key = run_evaluation(args.arch, raw_model, tokenizer, eval_sets, mean_name,
                                                      args.pooling, args.max_length, args.eval_batch_size, device,
                                                      use_bf16)
            results.update(metrics)
            append_jsonl(eval_path, results)
            val_loss = "" if results["val_loss"] is None else f": val_loss {results['val_loss']}"
            logger.info("step %d%s\n%s", step, val_loss, table)
            score = results[best_key]
            if best is None or score > best["score"]:
                best = {"score": score, "step": step, "key": best_key}
                best_dir = os.path.join(args.output_dir, "best-model")
                save_model(args.arch, raw_model, tokenizer, best_dir, args.pooling, args.max_length)
                logger.info("best %s so far (%.4f): saved %s", best_key, score, best_dir)
            if step > 0:
                save_checkpoint(args, raw_model, tokenizer, optimizer, scheduler, step, best)
        if distributed:
            dist.barrier()  # the checkpoint directory exists before every rank writes its RNG state into it
        if step > 0 and not args.save_only_model:
            torch.save(rng_state(), os.path.join(args.output_dir, f"checkpoint-{step}", f"rng_state_{rank}.pt"))
        if distributed:
            dist.barrier()

    # ------------------------------------------------------------------ the loop
    if step == 0:
        evaluate_and_checkpoint(0)
    progress = tqdm(total=total_steps, initial=step, desc="train", disable=not (master and show_progress_bars()))
    while step < total_steps:
        epoch, step_in_epoch = divmod(step, per_epoch)
        batch = [train_records[i] for i in batch_indices(len(train_records), args.batch_size, step_in_epoch, epoch,
                                                          args.seed, rank, world_size, args.batch_order)]
        started = time.perf_counter()
        loss = compute_loss(model, tokenizer, batch, args, device, use_bf16, tie_generator(args, device, step))
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1

        loss_value = loss.detach()
        if distributed:
            dist.all_reduce(loss_value)
            loss_value /= world_size
        record = {"step": step, "epoch": epoch + (step_in_epoch + 1) / per_epoch, "loss": loss_value.item(), "lr": lr,
                  "grad_norm": grad_norm.item(), "queries_per_s": len(batch) * world_size / (time.perf_counter() - started)}
        if master:
            append_jsonl(log_path, record)
            progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
            progress.update(1)
        if step % args.eval_steps == 0 or step == total_steps:
            evaluate_and_checkpoint(step)
    progress.close()
    if master and best is not None:
        logger.info("best %s = %.4f at step %d -> %s", best.get("key", "ndcg@10"), best["score"], best["step"],
                    os.path.join(args.output_dir, "best-model"))
    if distributed:
        dist.destroy_process_group()
    return 0
