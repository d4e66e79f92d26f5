"""What `python -m train.compare` reports about two training runs that differ only in the loss backend: per-step
losses and their differences, the tolerance check, evaluation at the first and last evaluation, median speed, as a
JSON-ready dict, as markdown, and as a PNG of the loss curves."""

import math
import os
import statistics

from .loop import read_jsonl

RUNS = ("fused", "reference")


def relative_difference(value, reference_value):
    """|value - reference| / |reference|; inf when either is NaN or infinite, so no tolerance passes it."""
    if not (math.isfinite(value) and math.isfinite(reference_value)):
        return math.inf
    return abs(value - reference_value) / max(abs(reference_value), 1e-30)


def step_differences(fused_log, reference_log):
    """One row per step: both runs' loss and grad norm and their differences (reference = the denominator)."""
    if [r["step"] for r in fused_log] != [r["step"] for r in reference_log]:
        raise ValueError("the two runs logged different steps; were they started with the same flags?")
    rows = []
    for fused, ref in zip(fused_log, reference_log):
        rows.append({
            "step": fused["step"], "loss_fused": fused["loss"], "loss_reference": ref["loss"],
            "loss_abs_diff": abs(fused["loss"] - ref["loss"]),
            "loss_rel_diff": relative_difference(fused["loss"], ref["loss"]),
            "grad_norm_fused": fused["grad_norm"], "grad_norm_reference": ref["grad_norm"],
            "grad_norm_rel_diff": relative_difference(fused["grad_norm"], ref["grad_norm"]),
        })
    return rows


def loss_check(steps, loss_rtol, first_step_rtol):
    """Failures (strings; empty = pass): any step's loss beyond loss_rtol; step 1's loss or grad norm beyond
    first_step_rtol (both runs score identical weights on identical inputs there, so only the loss differs)."""
    failures = [f"step {r['step']}: loss {r['loss_fused']:.7g} (fused) vs {r['loss_reference']:.7g} (reference), "
                f"relative difference {r['loss_rel_diff']:.2e} > --loss-rtol {loss_rtol:g}"
                for r in steps if r["loss_rel_diff"] > loss_rtol]
    if steps:
        first = steps[0]
        for key in ("loss", "grad_norm"):
            if first[f"{key}_rel_diff"] > first_step_rtol:
                failures.append(f"step {first['step']}: {key} relative difference {first[f'{key}_rel_diff']:.2e} > "
                                f"--first-step-rtol {first_step_rtol:g}")
    return failures


def median_speed(log, skip_steps, batch_size):
    """Median queries/s over the steps after the first `skip_steps` (all steps if there are no more), and the
    steps/s of a full batch at that rate. A step's time runs from tokenizing its batch (on the host, in the
    loop, as `python -m train` does) to the optimizer step; an epoch's last, partial batch counts as a step
    like the others (the median absorbs it)."""
    timed = [r for r in log if r["step"] > skip_steps] or log
    queries_per_s = statistics.median(r["queries_per_s"] for r in timed)
    return {"timed_steps": [timed[0]["step"], timed[-1]["step"]], "median_queries_per_s": queries_per_s,
            "median_steps_per_s": queries_per_s / batch_size}


def add_loss_shares(speed, batch_size, loss_alone):
    """speed[run]["loss_alone"]: the loss's own time (or why it was not timed) and its share of the run's median
    step, for each run that has a speed."""
    for name, timing in loss_alone.items():
        if name not in speed:
            continue
        if "ms" in timing:
            step_ms = 1e3 * batch_size / speed[name]["median_queries_per_s"]
            timing = {**timing, "share_of_median_step": timing["ms"] / step_ms}
        speed[name]["loss_alone"] = timing


def summarise(run_dirs, loss_rtol, first_step_rtol, timing_skip_steps, batch_size):
    """The comparison of two run directories {"fused": DIR, "reference": DIR} (train_log.jsonl and
    eval_results.jsonl of `python -m train`)."""
    logs = {name: read_jsonl(os.path.join(run_dirs[name], "train_log.jsonl")) for name in RUNS}
    evals = {name: read_jsonl(os.path.join(run_dirs[name], "eval_results.jsonl")) for name in RUNS}
    steps = step_differences(logs["fused"], logs["reference"])
    failures = loss_check(steps, loss_rtol, first_step_rtol)
    worst = max(steps, key=lambda r: r["loss_rel_diff"]) if steps else None
    speed = {name: median_speed(logs[name], timing_skip_steps, batch_size) for name in RUNS if logs[name]}
    if len(speed) == len(RUNS):
        speed["fused_over_reference"] = (speed["fused"]["median_queries_per_s"]
                                         / speed["reference"]["median_queries_per_s"])
    return {
        "loss": {
            "steps": len(steps),
            "max_abs_diff": max((r["loss_abs_diff"] for r in steps), default=None),
            "max_rel_diff": worst["loss_rel_diff"] if worst else None,
            "step_of_max_rel_diff": worst["step"] if worst else None,
            "first_step": steps[0] if steps else None,
            "loss_rtol": loss_rtol, "first_step_rtol": first_step_rtol,
            "passed": not failures, "failures": failures,
        },
        "eval": {which: {name: evals[name][index] for name in RUNS} for which, index in (("first", 0), ("last", -1))},
        "speed": {"skipped_warmup_steps": timing_skip_steps, **speed},
        "per_step": steps,
    }


# ------------------------------------------------------------------------------------------------ markdown

def _number(value):
    return "-" if value is None else f"{value:.6g}"


def _evenly_spaced(rows, keep):
    """At most `keep` rows: the first, the last and evenly spaced ones between (long runs stay readable)."""
    if len(rows) <= keep:
        return rows
    picks = sorted({round(i * (len(rows) - 1) / (keep - 1)) for i in range(keep)})
    return [rows[i] for i in picks]


def to_markdown(comparison, max_table_steps=25):
    meta, runs, loss, speed = comparison["metadata"], comparison["runs"], comparison["loss"], comparison["speed"]
    dirty = " (uncommitted changes)" if meta.get("git_dirty") else ""
    lines = [
        "# Training with the fused ListMLE kernel vs the reference loss", "",
        f"`{comparison['command']}`", "",
        f"Device: {meta['device']}. torch {meta['torch']}, triton {meta['triton']}, transformers "
        f"{meta['transformers']}, listmle_kernels {meta['listmle_kernels']}, python {meta['python']}; commit "
        f"`{meta['git_commit']}`{dirty}; {meta['timestamp_utc']}.", "",
        f"- fused: `--loss-backend {runs['fused']['loss_backend']}` = `listmle_loss(backend="
        f"'{runs['fused']['package_backend']}')`, in `{runs['fused']['output_dir']}`",
        f"- reference: `--loss-backend reference` = `reference.listmle_reference` through autograd, in "
        f"`{runs['reference']['output_dir']}`", "",
        "## Loss curves", "",
        f"**{'PASS' if loss['passed'] else 'FAIL'}**: {loss['steps']} steps, max |loss difference| "
        f"{_number(loss['max_abs_diff'])}, max relative {_number(loss['max_rel_diff'])} (step "
        f"{loss['step_of_max_rel_diff']}); tolerances: every step {loss['loss_rtol']:g} relative, step 1 "
        f"(identical weights and inputs) {loss['first_step_rtol']:g} for loss and grad norm.",
    ]
    lines += [f"- {failure}" for failure in loss["failures"]]
    if loss["first_step"]:
        first = loss["first_step"]
        lines += ["", f"Step 1: relative loss difference {first['loss_rel_diff']:.2e}, relative grad-norm difference "
                      f"{first['grad_norm_rel_diff']:.2e}. Plot: `loss_curves.png`; every step: `comparison.json`."]
    lines += ["", "| step | loss fused | loss reference | abs diff | rel diff | grad norm rel diff |",
              "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['loss_fused']:.6f} | {r['loss_reference']:.6f} | {r['loss_abs_diff']:.2e} | "
              f"{r['loss_rel_diff']:.2e} | {r['grad_norm_rel_diff']:.2e} |"
              for r in _evenly_spaced(comparison["per_step"], max_table_steps)]

    evals = comparison["eval"]
    first_step, last_step = evals["first"]["fused"]["step"], evals["last"]["fused"]["step"]
    lines += ["", "## Evaluation", "",
              f"| metric | fused step {first_step} | reference step {first_step} | fused step {last_step} | "
              f"reference step {last_step} |", "|---|---:|---:|---:|---:|"]
    for key in (k for k in evals["first"]["fused"] if k != "step"):
        values = [evals[which][name].get(key) for which in ("first", "last") for name in RUNS]
        lines.append(f"| {key} | " + " | ".join(_number(v) for v in values) + " |")

    first_timed, last_timed = speed["fused"]["timed_steps"]
    warmup = (f"steps 1-{first_timed - 1} left out as warm-up (Triton compilation, CUDA and cuBLAS start-up)"
              if first_timed > 1 else "no warm-up steps left out")
    lines += ["", "## Speed", "",
              f"Median over steps {first_timed}-{last_timed}, {warmup}; a step is tokenizing (on the host, in the "
              f"loop) + forward + loss + backward + clipping + optimizer step of one batch of "
              f"{comparison['batch_size']} queries.", "",
              "| loss | queries/s | steps/s | loss alone, ms | loss share of a step |", "|---|---:|---:|---:|---:|"]
    notes = []
    for name in RUNS:
        alone = speed[name].get("loss_alone", {})
        if "not_timed" in alone:
            notes.append(f"{name}: loss alone not timed, {alone['not_timed']}.")
        line = f"| {name} | {speed[name]['median_queries_per_s']:.2f} | {speed[name]['median_steps_per_s']:.3f} |"
        line += (f" {alone['ms']:.4f} | {100 * alone['share_of_median_step']:.3g}% |" if "ms" in alone else " - | - |")
        lines.append(line)
    shapes = {tuple(speed[name]["loss_alone"]["shape"]) for name in RUNS if "ms" in speed[name].get("loss_alone", {})}
    lines += ["", f"fused / reference: {speed['fused_over_reference']:.2f}x queries/s. Loss alone: forward + backward "
              f"at the first batch's shapes ({', '.join(' x '.join(map(str, s)) for s in shapes) or '-'}; scores "
              "random), calls back to back with the host's time included, median; its share is of the run's median "
              "step."] + [""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ plot

def plot_loss_curves(comparison, path):
    """Both runs' loss per step (top) and their relative difference with the tolerance (bottom, log scale)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed
    import matplotlib.pyplot as plt

    steps = comparison["per_step"]
    x = [r["step"] for r in steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    top.plot(x, [r["loss_fused"] for r in steps], marker="o", markersize=3, label="fused kernel")
    top.plot(x, [r["loss_reference"] for r in steps], marker="x", markersize=4, linestyle="--", label="reference")
    top.set(ylabel="training loss")
    top.legend()
    top.grid(True, alpha=0.3)
    floor = 1e-12  # an exact match would vanish from a log axis
    bottom.plot(x, [max(r["loss_rel_diff"], floor) for r in steps], marker="o", markersize=3, color="C2")
    bottom.axhline(comparison["loss"]["loss_rtol"], color="C3", linestyle=":", label="--loss-rtol")
    bottom.set(yscale="log", xlabel="step", ylabel=f"relative difference\n(floor {floor:g})")
    bottom.legend()
    bottom.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Training loss: fused kernel vs reference\n{comparison['metadata']['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
