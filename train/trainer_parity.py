"""`python -m train.trainer_parity --output-dir DIR [python -m train flags]`: train the same model on the same data
twice, once with `python -m train` (into DIR/loop) and once the way the published ListMLE model card was trained,
with sentence-transformers' `CrossEncoderTrainer` and its own `ListMLELoss` (into DIR/trainer), then compare them
step by step: DIR/parity.json, DIR/parity.md (also printed). Exit code 1 when a step's loss, grad norm or learning
rate or the final parameters differ beyond the tolerances.

Already the same in both, by default: AdamW (fused, betas (0.9, 0.999), eps 1e-8, no weight decay), the linear
schedule with ceil(warmup ratio * steps) warmup steps, clipping at norm 1.0, the mean ListMLE loss over the lists
of a batch in their input order (positives first), bf16 autocast where the loop uses it. What this module sets so
that the two take the very same steps:
- the same start: both load DIR/initial-model, the model `python -m train` starts from (--model, its one-label
  head initialised after seeding with --seed);
- the same training lists: the trainer gets the published script's listwise rows, built here from --train-data
  on their own (passages sorted by is_selected, stable, positives first; queries without one dropped), less the
  loop's seeded --val-queries split (the script's own split was not seeded);
- the same batches: the loop runs with --batch-order trainer (the trainer's sampler: a permutation per epoch
  seeded with seed + epoch);
- the same forwards: --pairs-per-forward N on the loop, ListMLELoss(mini_batch_size=N) on the trainer (default N
  = --batch-size, the loss's own default; the published script used 16 with 16 queries a batch);
- the same dropout masks: both seed torch with --seed and draw the masks in the same forwards. The trainer's
  DataLoader also draws once from torch's global CPU generator when an epoch starts (the base seed of workers
  it does not have); the loop has no DataLoader, so a callback puts the generator back before the epoch's first
  step. (On CUDA, dropout draws from the GPU's generator, which that draw does not touch.)
Left different: the loss's own float32 arithmetic (sentence-transformers' logcumsumexp over flipped scores vs
`listmle_kernels`), a few ulps per step, which training carries on.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shlex
import sys

import torch

from .compare import rng_states_restored, run_isolated
from .provenance import run_metadata  # device, versions, git commit: the record every result file carries
from .comparison import relative_difference
from .config import parse_args
from .data import load_msmarco_rows, split_validation, training_records
from .loop import read_jsonl
from .inputs import INPUT_ERRORS, check_local_paths, report_input_error
from .models import load_model, save_model

PROG = "python -m train.trainer_parity"


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False,  # other flags go to `python -m train`
        description=__doc__.split("\n\n")[0],
        epilog="Every other flag is passed to `python -m train` (see `python -m train -h`); those of the data, batch, "
               "schedule, seed, length, device and precision also set the trainer's arguments.")
    p.add_argument("--output-dir", required=True, help="DIR/initial-model, DIR/loop and DIR/trainer go here")
    p.add_argument("--loss-rtol", type=float, default=1e-5,
                   help="largest relative difference of a step's loss and grad norm (default 1e-5). The two "
                        "losses are different float32 programs of one formula: ~1e-7 apart at step 1, and "
                        "training carries such differences on; a different batch, start or dropout mask moves "
                        "the loss by percents")
    p.add_argument("--param-atol", type=float, default=1e-6,
                   help="largest absolute difference of any final parameter but the gradient-free ones "
                        "(`gradient_free`), default 1e-6: a few float32 ulps at magnitude 1, where Adam moves a "
                        "parameter by up to about lr a step (parity.json gives the largest move)")
    return p


def card_listwise(rows, max_docs=None):
    """The published training script's listwise rows from ms_marco v1.1 rows: (query, passages, is_selected ints),
    passages ordered by label, highest first, the file's order kept among equal labels (Python's sort is stable,
    reverse=True too);
    queries without a selected passage dropped; at most max_docs passages (None: all)."""
    listwise = []
    for row in rows:
        passages = row["passages"]
        if isinstance(passages, dict):
            pairs = list(zip(passages["passage_text"], passages["is_selected"]))
        else:
            pairs = [(p["passage_text"], p["is_selected"]) for p in passages]
        pairs.sort(key=lambda pair: pair[1], reverse=True)
        if not pairs or max(label for _, label in pairs) < 1:
            continue
        pairs = pairs[:max_docs] if max_docs else pairs
        listwise.append({"query": row["query"], "docs": [text for text, _ in pairs],
                         "labels": [int(label) for _, label in pairs]})
    return listwise


def trainer_records(args):
    """(the trainer's training lists, whether they equal the loop's: query, passages and labels, in order)."""
    rows = load_msmarco_rows(args.train_data)
    if args.train_queries is not None:
        rows = rows[: args.train_queries]
    train, _ = split_validation(card_listwise(rows, args.max_docs), args.val_queries, args.seed)
    loop_train = training_records(args)[2]
    same = [(r["query"], r["docs"], [float(x) for x in r["labels"]]) for r in train] == [
        (r["query"], r["docs"], r["labels"]) for r in loop_train]
    return train, same


def run_trainer(args, train, initial_model, out, use_bf16):
    """Train with CrossEncoderTrainer + ListMLELoss as the published script did (its arguments, mapped from ours),
    logging every step; writes out/train_log.jsonl (the loop's keys) and out/final-model."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import ListMLELoss
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """Each step's own loss, lr and pre-clip grad norm, as the trainer logs them with logging_steps=1."""

        def __init__(self):
            self.records = []

        def on_log(self, targs, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.records.append({"step": state.global_step, "epoch": state.epoch, "loss": logs["loss"],
                                     "lr": logs["learning_rate"], "grad_norm": logs["grad_norm"]})

    class UndoLoaderSeedDraw(TrainerCallback):
        """Puts torch's global CPU generator back to where it was before the epoch's DataLoader iterator drew its
        workers' base seed, so that the dropout masks come from the same place in the stream as in the loop."""

        def __init__(self):
            self.state = None

        def on_epoch_begin(self, targs, state, control, **kwargs):
            self.state = torch.get_rng_state()

        def on_step_begin(self, targs, state, control, **kwargs):
            if self.state is not None:
                torch.set_rng_state(self.state)
                self.state = None

    dataset = Dataset.from_dict({"query": [r["query"] for r in train], "docs": [r["docs"] for r in train],
                                 "labels": [r["labels"] for r in train]})
    model = CrossEncoder(initial_model, num_labels=1, max_length=args.max_length, device=args.device)
    loss = ListMLELoss(model, mini_batch_size=args.pairs_per_forward, respect_input_order=True)
    trainer_args = CrossEncoderTrainingArguments(
        output_dir=out, num_train_epochs=args.epochs, max_steps=args.max_steps or -1,
        per_device_train_batch_size=args.batch_size, learning_rate=args.lr, warmup_ratio=args.warmup_ratio,
        bf16=use_bf16, use_cpu=args.device == "cpu", seed=args.seed,
        logging_steps=1, eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True)
    step_log = StepLog()
    trainer = CrossEncoderTrainer(model=model, args=trainer_args, train_dataset=dataset, loss=loss,
                                  callbacks=[step_log, UndoLoaderSeedDraw()])
    trainer.train()
    with open(os.path.join(out, "train_log.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in step_log.records)
    model[0].model.save_pretrained(os.path.join(out, "final-model"))


def load_weights(directory):
    from safetensors.torch import load_file
    return load_file(os.path.join(directory, "model.safetensors"))


def compare_steps(loop_log, trainer_log):
    if [r["step"] for r in loop_log] != [r["step"] for r in trainer_log]:
        raise ValueError(f"the runs logged different steps: loop {[r['step'] for r in loop_log]}, trainer "
                         f"{[r['step'] for r in trainer_log]}")
    return [{"step": a["step"], "loss_loop": a["loss"], "loss_trainer": b["loss"],
             "loss_rel_diff": relative_difference(a["loss"], b["loss"]),
             "grad_norm_loop": a["grad_norm"], "grad_norm_trainer": b["grad_norm"],
             "grad_norm_rel_diff": relative_difference(a["grad_norm"], b["grad_norm"]),
             "lr_loop": a["lr"], "lr_trainer": b["lr"]} for a, b in zip(loop_log, trainer_log)]


def gradient_free(name):
    """Whether a parameter's gradient is zero in exact arithmetic: an attention key bias adds q.b to the score of
    every key of a query (the softmax is unchanged), a classification head's bias adds one constant to every score
    of a list (ListMLE is unchanged). Their float32 gradients are rounding noise, which Adam scales up to steps of
    about lr, in directions that differ between two runs."""
    return name.endswith(GRADIENT_FREE_SUFFIXES)


GRADIENT_FREE_SUFFIXES = ("attention.self.key.bias", "attention.k_lin.bias", "classifier.bias",
                          "classifier.out_proj.bias")  # BERT-like models, DistilBERT, RoBERTa-like heads


def max_abs_diff(first, second, names):
    """(largest |first - second| over the tensors `names`, the tensor it is in)."""
    diffs = {name: (first[name] - second[name]).abs().max().item() for name in names}
    worst = max(diffs, key=diffs.get, default=None)
    return (diffs[worst] if worst else 0.0), worst


def compare_parameters(initial, loop_final, trainer_final):
    """Largest |loop - trainer| over the final parameters, and the largest move of a parameter in training; the
    gradient-free tensors apart."""
    if set(loop_final) != set(trainer_final):
        raise ValueError(f"the final models hold different tensors: {sorted(set(loop_final) ^ set(trainer_final))}")
    free = sorted(name for name in loop_final if gradient_free(name))
    trained = sorted(set(loop_final) - set(free))
    diff, worst = max_abs_diff(loop_final, trainer_final, trained)
    free_diff, free_worst = max_abs_diff(loop_final, trainer_final, free)
    return {"tensors": len(trained), "max_abs_diff": diff, "tensor_of_max_abs_diff": worst,
            "bitwise_equal_tensors": sum(torch.equal(loop_final[n], trainer_final[n]) for n in trained),
            "max_abs_update": max_abs_diff(trainer_final, initial, trained)[0],
            "gradient_free": {"tensors": free, "max_abs_diff": free_diff, "tensor_of_max_abs_diff": free_worst,
                              "max_abs_update": max_abs_diff(trainer_final, initial, free)[0]}}


def check(steps, params, loss_rtol, param_atol):
    """Failures (strings; empty = pass)."""
    failures = [f"step {r['step']}: {key} {r[key + '_loop']:.8g} (loop) vs {r[key + '_trainer']:.8g} (trainer), "
                f"relative difference {r[key + '_rel_diff']:.2e} > --loss-rtol {loss_rtol:g}"
                for r in steps for key in ("loss", "grad_norm") if r[key + "_rel_diff"] > loss_rtol]
    failures += [f"step {r['step']}: lr {r['lr_loop']!r} (loop) vs {r['lr_trainer']!r} (trainer)"
                 for r in steps if abs(r["lr_loop"] - r["lr_trainer"]) > 1e-12 * max(abs(r["lr_trainer"]), 1e-30)]
    if params["max_abs_diff"] > param_atol:
        failures.append(f"final parameters: max |difference| {params['max_abs_diff']:.2e} "
                        f"({params['tensor_of_max_abs_diff']}) > --param-atol {param_atol:g}")
    return failures


def to_markdown(result):
    meta, params = result["metadata"], result["parameters"]
    free = params["gradient_free"]
    steps = result["per_step"]
    lines = [
        "# `python -m train` vs sentence-transformers' CrossEncoderTrainer + ListMLELoss", "",
        f"`{result['command']}`", "",
        f"Device: {meta['device']}. torch {meta['torch']}, transformers {meta['transformers']}, sentence-transformers "
        f"{meta['sentence_transformers']}, accelerate {result['accelerate']}, python {meta['python']}; commit "
        f"`{meta['git_commit']}`{' (uncommitted changes)' if meta.get('git_dirty') else ''}; {meta['timestamp_utc']}.",
        "",
        f"Both from `initial-model/`; {result['training_queries']} training queries (the same lists both ways: "
        f"{result['same_training_lists']}), {result['batch_size']} a batch, {result['pairs_per_forward']} pairs a "
        f"forward, bf16 {result['bf16']}; loop flags `{shlex.join(result['loop_flags'])}`.", "",
        f"**{'PASS' if result['passed'] else 'FAIL'}**: {len(steps)} steps; max relative loss difference "
        f"{max(r['loss_rel_diff'] for r in steps):.2e}, grad norm {max(r['grad_norm_rel_diff'] for r in steps):.2e} "
        f"(tolerance {result['loss_rtol']:g}); final parameters: max |difference| {params['max_abs_diff']:.2e} in "
        f"`{params['tensor_of_max_abs_diff']}` (tolerance {result['param_atol']:g}; {params['bitwise_equal_tensors']} "
        f"of {params['tensors']} tensors bitwise equal), against a largest parameter move of "
        f"{params['max_abs_update']:.2e} in training.", "",
        f"Left out of that: {len(free['tensors'])} tensors whose gradient is zero in exact arithmetic (attention key "
        f"biases, the head's bias: no score, or no ListMLE loss, depends on them), so Adam moves them on float32 "
        f"rounding noise: max |difference| {free['max_abs_diff']:.2e}, largest move {free['max_abs_update']:.2e}.",
    ]
    lines += [f"- {failure}" for failure in result["failures"]]
    lines += ["", "| step | lr | loss loop | loss trainer | rel diff | grad norm loop | grad norm trainer | rel diff |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['lr_trainer']:.3g} | {r['loss_loop']:.7f} | {r['loss_trainer']:.7f} | "
              f"{r['loss_rel_diff']:.2e} | {r['grad_norm_loop']:.6f} | {r['grad_norm_trainer']:.6f} | "
              f"{r['grad_norm_rel_diff']:.2e} |" for r in steps]
    return "\n".join(lines) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parity_args, train_argv = build_parser().parse_known_args(argv)
    out = parity_args.output_dir
    requested = parse_args(train_argv)
    if requested.arch != "cross-encoder" or requested.loss != "listmle" or not requested.respect_input_order:
        build_parser().error("compares the published recipe: --arch cross-encoder, --loss listmle, "
                             "--respect-input-order")
    if requested.resume or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        build_parser().error("runs both trainings afresh in one process: no --resume, not under torchrun")
    if importlib.util.find_spec("sentence_transformers") is None:
        build_parser().error("needs sentence-transformers with its training extras: "
                             "pip install 'sentence-transformers[train]'")
    device = requested.device if requested.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    pairs_per_forward = requested.pairs_per_forward or requested.batch_size
    initial_model = os.path.join(out, "initial-model")
    loop_flags = ["--model", initial_model, "--device", device, "--batch-order", "trainer",
                  "--pairs-per-forward", str(pairs_per_forward), "--output-dir", os.path.join(out, "loop"),
                  "--overwrite-output-dir"]
    args = parse_args(train_argv + loop_flags)  # later flags win
    use_bf16 = args.bf16 == "on" or (args.bf16 == "auto" and device == "cuda" and torch.cuda.is_bf16_supported())

    with rng_states_restored():  # the model `python -m train` starts from: seeded, then loaded
        torch.manual_seed(args.seed)
        try:
            check_local_paths(requested)
            model, tokenizer = load_model("cross-encoder", requested.model)
        except INPUT_ERRORS as exc:
            return report_input_error(PROG, exc)
        save_model("cross-encoder", model, tokenizer, initial_model)
    code = run_isolated(args)
    if code != 0:
        print(f"{PROG}: the loop's run failed (exit code {code})", file=sys.stderr)
        return code
    trainer_out = os.path.join(out, "trainer")
    train, same_lists = trainer_records(args)
    with rng_states_restored():
        run_trainer(args, train, initial_model, trainer_out, use_bf16)

    loop_log = read_jsonl(os.path.join(out, "loop", "train_log.jsonl"))
    steps = compare_steps(loop_log, read_jsonl(os.path.join(trainer_out, "train_log.jsonl")))
    params = compare_parameters(load_weights(initial_model),
                                load_weights(os.path.join(out, "loop", f"checkpoint-{loop_log[-1]['step']}")),
                                load_weights(os.path.join(trainer_out, "final-model")))
    failures = check(steps, params, parity_args.loss_rtol, parity_args.param_atol)
    if not same_lists:
        failures.insert(0, "the trainer's training lists differ from the loop's")
    with rng_states_restored():  # reading sentence-transformers' version imports it, and that draws from `random`
        metadata = run_metadata(torch.device(device), {"train_flags": train_argv, **vars(parity_args)})
    result = {
        "command": f"{PROG} {shlex.join(argv)}", "metadata": metadata,
        "accelerate": importlib.metadata.version("accelerate"), "datasets": importlib.metadata.version("datasets"),
        "loop_flags": train_argv + loop_flags, "training_queries": len(train), "same_training_lists": same_lists,
        "batch_size": args.batch_size, "pairs_per_forward": pairs_per_forward, "bf16": use_bf16,
        "loss_rtol": parity_args.loss_rtol, "param_atol": parity_args.param_atol,
        "passed": not failures, "failures": failures,
        "parameters": params, "per_step": steps,
    }
    with open(os.path.join(out, "parity.json"), "w") as f:
        json.dump(result, f, indent=1, default=str)
    markdown = to_markdown(result)
    with open(os.path.join(out, "parity.md"), "w") as f:
        f.write(markdown)
    print(markdown)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
