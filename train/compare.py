"""`python -m train.compare --output-dir DIR [python -m train flags]`: train twice with the same flags and seed, once
with the fused loss (`--loss-backend` as given, default auto = the Triton kernel on CUDA) and once with the literal
oracle (`--loss-backend reference`), into DIR/fused and DIR/reference, then compare them: DIR/comparison.json,
DIR/comparison.md (also printed), DIR/loss_curves.png. Exit code 1 when the loss curves differ beyond the
tolerances, the run's own exit code when a run fails.

Both runs happen in this one process (not under torchrun), one after the other; each starts from the global state
the first one saw (RNG states restored, GPU cache emptied), so they differ only in the loss. Both start afresh: a
comparison run again into the same DIR replaces both runs. The reference knows only stable ties: keep
`--respect-input-order` (the default) or use `--ties stable`; with random ties the two would train on different
target orders anyway.
"""

import argparse
import contextlib
import gc
import json
import os
import shlex
import sys

import torch

from listmle_kernels import auto_backend

from .comparison import RUNS, add_loss_shares, plot_loss_curves, summarise, to_markdown
from .config import parse_args
from .data import batch_indices, list_lengths_and_labels, training_records
from .loop import rng_state, run, set_rng_state
from .losses import PACKAGE_BACKENDS, ranking_loss
from .provenance import run_metadata  # device, versions, git commit: the fields the benchmarks record
from .timing import time_back_to_back


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m train.compare", allow_abbrev=False,  # no prefix matching: other flags go to `python -m train`
        description=__doc__.split("\n\n")[0], epilog="Every other flag is passed to both runs of `python -m train` "
                                                    "(see `python -m train -h`).")
    p.add_argument("--output-dir", required=True, help="the two runs go to DIR/fused and DIR/reference")
    p.add_argument("--loss-rtol", type=float, default=1e-2,
                   help="largest relative loss difference allowed at any step (default 1e-2). Both runs use the "
                        "same device, precision and seed, so only the loss differs: by its fp32 rounding, ~1e-7 "
                        "relative (max 1.1e-7 over 18 steps of a tiny BERT under bf16 autocast on CPU). Training "
                        "can amplify that step by step (a slightly different gradient may round to a neighbouring "
                        "bf16 value, 0.4%% apart; GPU reductions need not sum in a fixed order), so the per-step "
                        "bound is loose; it still fails on a real difference in the loss (a wrong target order or "
                        "weighting changes it by tens of %%). The sharp check is --first-step-rtol")
    p.add_argument("--first-step-rtol", type=float, default=1e-4,
                   help="largest relative difference of step 1's loss and grad norm (default 1e-4): both runs score "
                        "identical weights on identical inputs there, so the loss differs only by its fp32 rounding "
                        "(~1e-7) and the gradient only by that rounding passed through the (bf16) backward")
    p.add_argument("--timing-skip-steps", type=int, default=5,
                   help="steps left out of the median speed as warm-up (Triton compilation, CUDA initialisation)")
    return p


def parse_run_args(train_argv, loss_backend, output_dir):
    """The `python -m train` arguments of one run (later flags win, so these override the user's). Both runs start
    afresh (no --resume), so a comparison run again into the same DIR replaces its runs."""
    return parse_args(train_argv + ["--loss-backend", loss_backend, "--output-dir", output_dir,
                                    "--overwrite-output-dir"])


@contextlib.contextmanager
def rng_states_restored():
    """Python, numpy, torch and CUDA RNG states as they were before the block, whatever it drew."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)


def run_isolated(args):
    """`run(args)`, leaving the process as it found it: train() seeds python/numpy/torch itself, but restoring every
    RNG state afterwards also keeps anything drawn outside that seeding (e.g. by a module a run imports first) from
    reaching the next run, and freeing the first run's cached GPU memory keeps it from shaping the second's speed."""
    with rng_states_restored():
        code = run(args)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return code


def package_backend(loss_backend, device):
    """The listmle_loss backend a run's --loss-backend resolves to on `device` (listmle_loss's own rule for auto)."""
    return auto_backend(device) if loss_backend == "auto" else loss_backend


def time_loss_alone(args, device, package_backend):
    """The loss alone, forward + backward, at the shapes of the run's first batch (scores random, labels and list
    lengths real), timed back to back with the host's time included (train/timing.py): the numerator of the
    loss's share of a training step. A reason instead where there is no such number."""
    if args.arch != "cross-encoder":
        return {"not_timed": "the bi-encoder's score matrix depends on its in-batch candidates"}
    if package_backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1":
        return {"not_timed": "interpreted Triton (TRITON_INTERPRET=1) is not performance"}
    _, _, train_records, _ = training_records(args)
    batch = [train_records[i] for i in batch_indices(len(train_records), args.batch_size, 0, 0, args.seed,
                                                      batch_order=args.batch_order)]
    lengths, labels = list_lengths_and_labels(batch)
    generator = torch.Generator().manual_seed(args.seed)
    scores = (2.0 * torch.randn(labels.shape, generator=generator)).to(device).requires_grad_()
    padding = {"lengths": lengths.to(device)}
    labels = labels.to(device)

    def step():
        return torch.autograd.grad(ranking_loss(scores, labels, padding, args), scores)

    median, q20, q80 = time_back_to_back(step, device, min_seconds=0.5)
    return {"ms": median, "ms_q20": q20, "ms_q80": q80, "shape": list(labels.shape)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    compare_args, train_argv = build_parser().parse_known_args(argv)
    out = compare_args.output_dir
    run_dirs = {name: os.path.join(out, name) for name in RUNS}
    requested = parse_args(train_argv)
    if requested.loss_backend not in PACKAGE_BACKENDS or requested.resume:
        build_parser().error(f"the fused run needs a package --loss-backend {PACKAGE_BACKENDS} and no --resume")
    fused_args = parse_run_args(train_argv, requested.loss_backend, run_dirs["fused"])
    reference_args = parse_run_args(train_argv, "reference", run_dirs["reference"])  # errors before any training
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        build_parser().error("runs as one process (the two runs follow each other); not under torchrun")

    for args in (fused_args, reference_args):
        code = run_isolated(args)
        if code != 0:
            print(f"python -m train.compare: the {args.loss_backend} run failed (exit code {code})", file=sys.stderr)
            return code

    device = torch.device(fused_args.device)  # resolved by the run ("auto" -> cuda or cpu)
    with rng_states_restored():  # reading sentence-transformers' version imports it, and that draws from `random`
        metadata = run_metadata(device, {"train_flags": train_argv, **vars(compare_args)})
    comparison = {
        "command": "python -m train.compare " + shlex.join(argv),
        "metadata": metadata,
        "batch_size": fused_args.batch_size,
        "runs": {"fused": {"loss_backend": fused_args.loss_backend, "output_dir": run_dirs["fused"],
                           "package_backend": package_backend(fused_args.loss_backend, device)},
                 "reference": {"loss_backend": "reference", "output_dir": run_dirs["reference"]}},
        **summarise(run_dirs, compare_args.loss_rtol, compare_args.first_step_rtol, compare_args.timing_skip_steps,
                    fused_args.batch_size),
    }
    with rng_states_restored():  # random ties draw from the global generator
        add_loss_shares(comparison["speed"], fused_args.batch_size, {
            "fused": time_loss_alone(fused_args, device, comparison["runs"]["fused"]["package_backend"]),
            "reference": time_loss_alone(reference_args, device, "reference")})
    with open(os.path.join(out, "comparison.json"), "w") as f:
        json.dump(comparison, f, indent=1, default=str)
    markdown = to_markdown(comparison)
    with open(os.path.join(out, "comparison.md"), "w") as f:
        f.write(markdown)
    plot_loss_curves(comparison, os.path.join(out, "loss_curves.png"))
    print(markdown)
    return 0 if comparison["loss"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
