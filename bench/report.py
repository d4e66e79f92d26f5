"""Run metadata, JSON/CSV output, speedups and the table printed at the end of a run."""

from __future__ import annotations

import csv
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from bench.cases import MAX_ELEMENTS_SMALL
# Every result the project writes carries the same record of device, versions and commit: train/'s, which
# depends on nothing but torch (train/ itself uses no bench/ code).
from train.provenance import run_metadata  # noqa: F401  (re-exported: bench and tools record runs through it)

# Which implementation is "ours" on each device: the Triton kernel on CUDA, the PyTorch path on CPU.
KERNEL_BY_DEVICE = {"cuda": "listmle_kernels_triton", "cpu": "listmle_kernels_torch"}
# Where runs go unless --out says otherwise: output/ is git-ignored, so a run never dirties the tree;
# results worth keeping are copied into bench/results/ by hand.
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "output" / "bench"

BASELINES = ("reference_eager", "reference_oracle", "reference_compiled", "sentence_transformers", "allrank")

CSV_COLUMNS = (
    "case", "group", "B", "L", "direction", "weighting", "order", "dtype", "ragged", "impl", "label", "status",
    "ms", "ms_q20", "ms_q80", "graph_ms", "speedup_vs_reference_eager", "speedup_vs_reference_oracle",
    "speedup_vs_reference_compiled",
    "speedup_vs_sentence_transformers", "speedup_vs_allrank", "min_bytes", "bytes_per_s", "copy_bytes_per_s", "pct_copy_bw",
    "peak_extra_bytes", "loss_rel_err", "grad_rel_err", "first_call_s", "rotations", "note", "graph_note",
    "wall_ms", "wall_speedup_vs_reference_eager", "wall_speedup_vs_reference_compiled",
    "wall_speedup_vs_sentence_transformers", "floor_wall_ms",
)


def add_speedups(rows: list[dict], device_type: str) -> None:
    """speedup_vs_X = time(X) / time(kernel) for the same case; only where both were timed. The same
    from back-to-back wall-clock times (small shapes on CUDA) as wall_speedup_vs_X."""
    kernel = KERNEL_BY_DEVICE[device_type]
    by_case: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["impl"]] = row
    for impls in by_case.values():
        ours = impls.get(kernel)
        if not ours or ours.get("status") != "ok":
            continue
        for name in BASELINES:
            other = impls.get(name)
            if other and other.get("status") == "ok":
                ours[f"speedup_vs_{name}"] = other["ms"] / ours["ms"]
                if ours.get("wall_ms") and other.get("wall_ms"):
                    ours[f"wall_speedup_vs_{name}"] = other["wall_ms"] / ours["wall_ms"]


def output_stem(out_dir: Path, device: torch.device, timestamp: str) -> Path:
    stamp = timestamp.replace(":", "").replace("-", "").split("+")[0]
    return out_dir / f"{device.type}-{stamp}"


def write_json(path: Path, meta: dict, rows: list[dict], extras: dict) -> None:
    path.write_text(json.dumps({"meta": meta, **extras, "results": rows}, indent=1, default=str) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k)) for k in CSV_COLUMNS})


def _csv_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


# --------------------------------------------------------------------------------------------------
# Modes and speed-ups in words
# --------------------------------------------------------------------------------------------------

TABLE_WIDTH = 100  # the printed table and target lines fit a 100-column terminal


def mode_text(row: dict, direction: bool = True) -> str:
    """A case's mode in words: 'fwd+bwd, listmle, input order, float32, ragged rows'."""
    parts = [row["direction"]] if direction else []
    parts += [row["weighting"], "input order" if row["order"] == "input" else "sorted by labels", row["dtype"],
              "ragged rows" if row["ragged"] else "full rows"]
    return ", ".join(parts)


def mode_sort_key(row: dict) -> tuple:
    """The headline mode first (fwd+bwd, listmle, input order, float32, ragged), then the sweep's others."""
    return (row["direction"] != "fwd+bwd", row["weighting"] != "listmle", row["order"] != "input",
            row["dtype"] != "float32", not row["ragged"])


def is_small(row: dict) -> bool:
    return row["B"] * row["L"] <= MAX_ELEMENTS_SMALL


SMALL_SHAPES = f"B*L <= 2^{MAX_ELEMENTS_SMALL.bit_length() - 1}"


def judged_on_wall_clock(row: dict, device_type: str) -> bool:
    """Whether a speed-up is judged back to back with the host's time (CUDA, small shapes): there do_bench's
    `ms` is device time alone and hides the launch overhead that a host-bound baseline pays."""
    return device_type == "cuda" and is_small(row)


def speedup(row: dict, baseline: str, device_type: str):
    """Our speed-up over a baseline as the targets judge it: back to back at small shapes on CUDA,
    on `ms` elsewhere; None where either time is missing."""
    prefix = "wall_" if judged_on_wall_clock(row, device_type) else ""
    return row.get(f"{prefix}speedup_vs_{baseline}")


def gradient_bytes(row: dict) -> int:
    return row["B"] * row["L"] * (2 if row["dtype"] == "bfloat16" else 4)


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------

STATUS_WORD = {"skipped": "skip", "mismatch": "wrong", "error": "error"}


def _ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _mb(value) -> str:
    if value is None:
        return "-"
    mb = value / 2**20
    return f"{mb:.2f}" if mb < 10 else f"{mb:.1f}"


def _num(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table_columns(device_type: str, kernel_label: str, baselines: list[tuple[str, str]]):
    """(top header, bottom header, cell of (ours, rows of the case by impl)) for each column."""
    def status_or(fn):
        return lambda ours, impls: fn(ours, impls) if ours.get("status") == "ok" else "-"

    columns = [("", "B", lambda ours, impls: str(ours["B"])),
               ("", "L", lambda ours, impls: str(ours["L"])),
               (kernel_label, "ms", lambda ours, impls: _ms(ours.get("ms")) if ours.get("status") == "ok"
                else STATUS_WORD.get(ours.get("status"), str(ours.get("status"))))]
    if device_type == "cuda":
        columns += [("wall", "ms", status_or(lambda ours, impls: _ms(ours.get("wall_ms")))),
                    ("graph", "ms", status_or(lambda ours, impls: _ms(ours.get("graph_ms")))),
                    ("floor", "ms", lambda ours, impls: _ms(ours.get("floor_wall_ms")))]
    columns.append(("%copy", "BW", status_or(lambda ours, impls: _num(ours.get("pct_copy_bw"), ".1f"))))
    if device_type == "cuda":
        columns.append(("peak", "MB", status_or(lambda ours, impls: _mb(ours.get("peak_extra_bytes")))))

    def speedup_cell(baseline):
        def cell(ours, impls):
            other = impls.get(baseline)
            if other is None:
                return "-"
            if other.get("status") != "ok":
                return STATUS_WORD.get(other.get("status"), str(other.get("status")))
            value = speedup(ours, baseline, device_type) if ours.get("status") == "ok" else None
            star = "*" if judged_on_wall_clock(ours, device_type) and value is not None else ""
            return _num(value, ".1f") + star
        return cell

    columns += [(label, "x", speedup_cell(name)) for name, label in baselines]
    return columns


def format_table(rows: list[dict], device_type: str) -> str:
    """One line per case, grouped by mode: our time (on CUDA also back to back, graph replay and the autograd
    floor at small shapes), % of copy bandwidth, peak extra memory, and our speed-up over each baseline."""
    kernel = KERNEL_BY_DEVICE[device_type]
    labels = {r["impl"]: r["label"] for r in rows}
    kernel_label = labels.get(kernel, kernel)
    baselines = [(b, labels[b]) for b in BASELINES if any(r["impl"] == b and r.get("status") == "ok" for r in rows)]
    by_case: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["impl"]] = row
    cases = sorted((impls for impls in by_case.values() if kernel in impls),
                   key=lambda impls: (mode_sort_key(impls[kernel]), impls[kernel]["B"], impls[kernel]["L"]))
    columns = _table_columns(device_type, kernel_label, baselines)
    cells = [[cell(impls[kernel], impls) for _, _, cell in columns] for impls in cases]
    widths = [max([len(top), len(bottom)] + [len(line[i]) for line in cells])
              for i, (top, bottom, _) in enumerate(columns)]

    def join(values):
        return " ".join(value.rjust(width) for value, width in zip(values, widths))

    header = [join([top for top, _, _ in columns]), join([bottom for _, bottom, _ in columns])]
    lines = header + ["-" * len(header[0])]
    mode = None
    for impls, line in zip(cases, cells):
        if mode_text(impls[kernel]) != mode:
            mode = mode_text(impls[kernel])
            lines.append(f"-- {mode}")
        lines.append(join(line))
    return "\n".join(lines + _table_legend(device_type, kernel_label))


def _table_legend(device_type: str, kernel_label: str) -> list[str]:
    text = (f"Times are medians in ms. x: speed-up, the baseline's time over {kernel_label}'s. "
            "skip / wrong / error: that implementation was not run on the case, disagreed with the reference "
            "(so was not timed) or failed; the list above says why. %copy BW: minimal bytes / time as % of "
            "the measured copy bandwidth.")
    if device_type == "cuda":
        text += (f" At {SMALL_SHAPES}: wall = back to back with the host's time, graph = CUDA-graph replay, "
                 "floor = the cheapest autograd loss (scores.sum() and its gradient) timed like wall; "
                 "x* = speed-up on the wall times, as the targets judge it (elsewhere on ms, do_bench's "
                 "device time). peak MB: extra memory of one call, the returned gradient included.")
    return textwrap.wrap(text, TABLE_WIDTH)


# --------------------------------------------------------------------------------------------------
# The targets
# --------------------------------------------------------------------------------------------------

COPY_BW_MIN_ELEMENTS = 1 << 24
PEAK_SLACK_BYTES_PER_ROW = 64       # the O(B) of "gradient + O(B)": per-row losses, lengths, seeds
PEAK_SLACK_BYTES = 1 << 20          # allocator rounding on small cases


@dataclass(frozen=True)
class Target:
    """A performance target of our implementation's forward+backward, checked on every case it covers."""

    kind: str                                  # "speed-up", "bandwidth" or "memory"
    goal: str                                  # what is promised, in words
    scope: str                                 # which cases it covers, in words
    qualifies: Callable[[dict], bool]
    value_of: Callable[[dict], float | None]   # the value checked, None where not measured
    bound: float
    sense: str                                 # ">=" or "<="
    show: Callable[[float], str]               # a value in words
    baseline: str | None = None                # the implementation a speed-up target compares with

    def meets(self, value: float) -> bool:
        return value >= self.bound if self.sense == ">=" else value <= self.bound

    def title(self) -> str:
        return f"{self.kind} target: {self.goal}, {self.scope}"


def _peak_over_budget(row: dict):
    """Bytes of peak extra memory over the budget: the gradient, 64 bytes a row and 1 MiB of rounding."""
    peak = row.get("peak_extra_bytes")
    if peak is None:
        return None
    return peak - gradient_bytes(row) - PEAK_SLACK_BYTES_PER_ROW * row["B"] - PEAK_SLACK_BYTES


def _speedup_target(device_type: str, baseline: str, bound: float, against: str, scope: str, qualifies):
    return Target("speed-up", f">= {bound:g}x over {against}", scope, qualifies,
                  lambda row: speedup(row, baseline, device_type), bound, ">=", lambda v: f"{v:.3g}x", baseline)


def _on_grid(row: dict) -> bool:
    return row["group"] == "grid"


def _at_256x100(row: dict) -> bool:
    return (row["B"], row["L"]) == (256, 100)


TARGETS = {
    "cuda": [
        _speedup_target("cuda", "reference_eager", 10.0, "the eager vectorised reference (ref-eager)",
                        "every grid shape", _on_grid),
        _speedup_target("cuda", "sentence_transformers", 10.0, "sentence-transformers' ListMLELoss (st)",
                        "every grid shape it runs", _on_grid),
        _speedup_target("cuda", "reference_compiled", 3.0, "torch.compile of the eager reference (ref-compile)",
                        "every grid shape", _on_grid),
        Target("bandwidth", ">= 75% of the measured copy bandwidth", "float32 at B*L >= 2^24",
               lambda r: r["B"] * r["L"] >= COPY_BW_MIN_ELEMENTS and r["dtype"] == "float32",
               lambda r: r.get("pct_copy_bw"), 75.0, ">=", lambda v: f"{v:.3g}%"),
        Target("memory", "peak extra memory <= the gradient + 64 bytes a row + 1 MiB", "every case",
               lambda r: True, _peak_over_budget, 0.0, "<=",
               lambda v: f"{abs(v) / 2**20:.3g} MiB {'over' if v > 0 else 'under'} that"),
    ],
    "cpu": [
        _speedup_target("cpu", "reference_eager", 3.0, "the eager vectorised reference (ref-eager)",
                        "at 256 x 100", _at_256x100),
        # The literal per-row oracle of the tests; the vectorised reference above is the stricter baseline.
        _speedup_target("cpu", "reference_oracle", 3.0, "the literal per-row oracle reference/ (oracle)",
                        "at 256 x 100", _at_256x100),
    ],
}


def speedup_target(device_type: str, baseline: str) -> Target | None:
    return next((t for t in TARGETS[device_type] if t.baseline == baseline), None)


def speedup_ceiling(baseline: str):
    """The most any autograd-based loss could be faster than a baseline at a small shape: the baseline's
    back-to-back time over the autograd floor's (`floor_wall_ms`, `scores.sum()` and its gradient timed
    the same way). A speed-up target above it cannot be met by a faster kernel, only by less host work
    per call (a CUDA graph, fewer launches); None at large shapes or where a time is missing."""
    def value(row: dict):
        ratio, wall, floor = row.get(f"wall_speedup_vs_{baseline}"), row.get("wall_ms"), row.get("floor_wall_ms")
        if not is_small(row) or None in (ratio, wall, floor) or floor <= 0:
            return None
        return ratio * wall / floor
    return value


def format_targets(rows: list[dict], device_type: str) -> str:
    """Per target: what it is, then met or MISSED in how many of the cases it covers that were measured, how
    many it covers were not measured (and why), and the worst case.

    Cases a time budget never ran have no rows (the run's notes count them)."""
    kernel = KERNEL_BY_DEVICE[device_type]
    label = next((r["label"] for r in rows if r["impl"] == kernel), kernel)
    ours = [r for r in rows if r["impl"] == kernel and r["direction"] == "fwd+bwd"]
    heading = f"targets of {label}, forward+backward"
    if device_type == "cuda":
        heading += f" (speed-ups at {SMALL_SHAPES} back to back, host time included)"
    lines = [heading + ":"]
    for target in TARGETS[device_type]:
        lines.append(f"  {target.title()}")
        lines += [f"    {line}" for line in _verdict(target, [r for r in ours if target.qualifies(r)], device_type)]
    return "\n".join(lines)


def _verdict(target: Target, covered: list[dict], device_type: str) -> list[str]:
    measured = [(target.value_of(r), r) for r in covered if r.get("status") == "ok"]
    measured = [(value, row) for value, row in measured if value is not None]
    if not covered:
        return ["not measured: the run had none of the cases it covers"]
    unmeasured = _why_unmeasured(covered, len(measured))
    if not measured:
        return [f"not measured in any of its {len(covered)} cases{unmeasured}"]
    missed = [(value, row) for value, row in measured if not target.meets(value)]
    if missed:
        verdict = f"MISSED in {len(missed)} of {len(measured)} measured cases"
    elif len(measured) == 1:
        verdict = "met in the 1 measured case"
    else:
        verdict = f"met in all {len(measured)} measured cases"
    worst, row = (min if target.sense == ">=" else max)(measured, key=lambda pair: pair[0])
    lines = [verdict + unmeasured, f"worst: {target.show(worst)} at {row['B']} x {row['L']}, {mode_text(row)}"]
    if missed and target.baseline and device_type == "cuda":
        lines += _beyond_any_autograd_loss(missed, speedup_ceiling(target.baseline), target.bound)
    return lines


def _why_unmeasured(covered: list[dict], n_measured: int) -> str:
    """'' when every covered case was measured, else how many were not and why."""
    if n_measured == len(covered):
        return ""
    failed = sum(r.get("status") in ("mismatch", "error") for r in covered)
    skipped = sum(r.get("status") not in ("ok", "mismatch", "error") for r in covered)
    no_baseline = len(covered) - n_measured - failed - skipped
    reasons = [f"{n} {why}" for n, why in [(no_baseline, "without a baseline time"),
                                            (failed, "where our kernel failed or disagreed"),
                                            (skipped, "where our kernel was skipped")] if n]
    return f" ({len(covered) - n_measured} of its {len(covered)} cases not measured: {', '.join(reasons)})"


def _beyond_any_autograd_loss(missed: list, ceiling_of, bound: float) -> list[str]:
    """How many of a speed-up target's misses no autograd-based loss could meet (`speedup_ceiling`);
    nothing where no miss has a floor measured (large shapes)."""
    ceilings = [c for c in (ceiling_of(row) for _, row in missed) if c is not None]
    if not ceilings:
        return []
    beyond = sum(c < bound for c in ceilings)
    return [f"{beyond} of the {len(ceilings)} misses at {SMALL_SHAPES} are beyond any autograd-based loss:",
            f"  there the baseline's back-to-back time is {min(ceilings):.3g}-{max(ceilings):.3g}x the autograd "
            "floor's"]


def note_text(row: dict) -> str:
    """Why a row was not timed, without the status word some notes repeat ("skipped: needs CUDA")."""
    note = row.get("note") or ""
    prefix = f"{row.get('status')}: "
    return note[len(prefix):] if note.startswith(prefix) else note


def format_problems(rows: list[dict]) -> str:
    """Skipped, mismatching and failing (implementation, case) pairs, grouped by reason, one reason a line
    (wrapped to the table's width)."""
    grouped: dict[tuple[str, str, str], int] = {}
    for row in rows:
        if row.get("status") != "ok":
            key = (row["label"], row.get("status", "?"), note_text(row))
            grouped[key] = grouped.get(key, 0) + 1
    lines = []
    for (label, status, note), count in grouped.items():
        head = f"  {label:<12} {status:<8} {count:>4} case{'s' if count > 1 else ' '} "
        lines += textwrap.wrap(note or "-", TABLE_WIDTH, initial_indent=head, subsequent_indent=" " * len(head))
    return "\n".join(lines)
