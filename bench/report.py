"""Run metadata, JSON/CSV output, speedups and the table printed at the end of a run."""

from __future__ import annotations

import csv
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from bench.cases import MAX_ELEMENTS_SMALL

# Which implementation is "ours" on each device: the Triton kernel on CUDA, the PyTorch path on CPU.
KERNEL_BY_DEVICE = {"cuda": "listmle_kernels_triton", "cpu": "listmle_kernels_torch"}
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


def _git(*args: str) -> str | None:
    """Read-only git queries (rev-parse, status); None when there is no repository or commit."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent.parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(module_name: str) -> str | None:
    # The installed distribution's metadata first: importing sentence-transformers just to read its
    # __version__ takes seconds. A package run from a source tree has no metadata: import it.
    try:
        return importlib.metadata.version(module_name)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        module = __import__(module_name)
    except Exception:
        return None
    return getattr(module, "__version__", "unknown")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_name()} ({torch.get_num_threads()} torch threads, {os.cpu_count()} cores)"


def run_metadata(device: torch.device, args: dict) -> dict:
    # A copy of the tree without .git (the GPU machine gets one) names its commit in LISTMLE_GIT_COMMIT.
    # Named first: a copy inside some other git checkout would otherwise record that checkout's commit.
    commit = os.environ.get("LISTMLE_GIT_COMMIT") or _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain")
    uncommitted = dirty.splitlines() if dirty else []
    return {
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device_type": device.type,
        "device": device_description(device),
        "git_commit": commit or "none (no commit yet)",
        "git_dirty": bool(dirty) if dirty is not None else None,
        "git_uncommitted": uncommitted[:20] + ([f"... {len(uncommitted) - 20} more"] if len(uncommitted) > 20 else []),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _version("triton"),
        "listmle_kernels": _version("listmle_kernels"),
        "sentence_transformers": _version("sentence_transformers"),
        "transformers": _version("transformers"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_load_average_1_5_15min": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "args": args,
    }


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
# The table
# --------------------------------------------------------------------------------------------------


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def gradient_bytes(row: dict) -> int:
    return row["B"] * row["L"] * (2 if row["dtype"] == "bfloat16" else 4)


def format_table(rows: list[dict], device_type: str) -> str:
    """One line per case: our time, each baseline's time and our speedup over it, % of copy BW, memory."""
    kernel = KERNEL_BY_DEVICE[device_type]
    present = [b for b in BASELINES if any(r["impl"] == b and r.get("status") == "ok" for r in rows)]
    labels = {r["impl"]: r["label"] for r in rows}
    by_case: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_case.setdefault(row["case"], {})[row["impl"]] = row

    header = f"{'B':>6} {'L':>6} {'mode':<44} {labels.get(kernel, kernel) + ' ms':>12}"
    for b in present:
        header += f" {labels[b] + ' ms':>14} {'x':>6}"
    header += f" {'%copyBW':>8}"
    if device_type == "cuda":
        header += f" {'graph ms':>9} {'wall ms':>9} {'wall x':>6} {'floor ms':>9} {'peak MB':>8} {'grad MB':>8}"
    lines = [header, "-" * len(header)]
    for impls in by_case.values():
        ours = impls.get(kernel)
        if ours is None:
            continue
        ok = ours.get("status") == "ok"
        line = f"{ours['B']:>6} {ours['L']:>6} {_mode(ours):<44} "
        line += f"{_fmt(ours.get('ms'), '.4f'):>12}" if ok else f"{ours.get('status', '?'):>12}"
        for b in present:
            other = impls.get(b, {})
            other_ms = other.get("ms") if other.get("status") == "ok" else None
            speedup = ours.get(f"speedup_vs_{b}")
            line += f" {_fmt(other_ms, '.4f', other.get('status', '-')[:8]):>14} {_fmt(speedup, '.1f'):>6}"
        line += f" {_fmt(ours.get('pct_copy_bw'), '.1f'):>8}"
        if device_type == "cuda":
            grad_mb = gradient_bytes(ours) / 2**20
            peak = ours.get("peak_extra_bytes")
            line += f" {_fmt(ours.get('graph_ms'), '.4f'):>9} {_fmt(ours.get('wall_ms'), '.4f'):>9}"
            line += f" {_fmt(ours.get('wall_speedup_vs_reference_eager'), '.1f'):>6}"
            line += f" {_fmt(ours.get('floor_wall_ms'), '.4f'):>9}"
            line += f" {_fmt(peak / 2**20 if peak else None, '.2f'):>8}"
            line += f" {grad_mb if ours['direction'] == 'fwd+bwd' else 0:>8.2f}"
        lines.append(line)
    return "\n".join(lines)


# The targets of the bench issue: (what, qualifying rows, the value checked, its bound, ">=" or "<=").
COPY_BW_MIN_ELEMENTS = 1 << 24
PEAK_SLACK_BYTES_PER_ROW = 64       # the O(B) of "gradient + O(B)": per-row losses, lengths, seeds
PEAK_SLACK_BYTES = 1 << 20          # allocator rounding on small cases


def _peak_over_gradient(row: dict):
    peak = row.get("peak_extra_bytes")
    if peak is None:
        return None
    return peak - gradient_bytes(row) - PEAK_SLACK_BYTES_PER_ROW * row["B"] - PEAK_SLACK_BYTES


def _speedup_over(baseline: str):
    """Our speedup over a baseline: on do_bench's times, but back to back with the host's time included
    at small shapes (B*L <= 2^16), where do_bench's `ms` is device time alone and hides the launch
    overhead a host-bound baseline pays (it launches while do_bench's L2 flush still runs)."""
    def value(row: dict):
        small = row["B"] * row["L"] <= MAX_ELEMENTS_SMALL
        return row.get(f"{'wall_' if small else ''}speedup_vs_{baseline}")
    return value


def speedup_ceiling(baseline: str):
    """The most any autograd-based loss could be faster than a baseline at a small shape: the baseline's
    back-to-back time over the autograd floor's (`floor_wall_ms`, `scores.sum()` and its gradient timed
    the same way). A speedup target above it cannot be met by a faster kernel, only by less host work
    per call (a CUDA graph, fewer launches); None at large shapes or where a time is missing."""
    def value(row: dict):
        speedup, wall, floor = row.get(f"wall_speedup_vs_{baseline}"), row.get("wall_ms"), row.get("floor_wall_ms")
        if row["B"] * row["L"] > MAX_ELEMENTS_SMALL or None in (speedup, wall, floor) or floor <= 0:
            return None
        return speedup * wall / floor
    return value


SMALL_SHAPES_NOTE = f"(back to back, host included, at B*L <= 2^{MAX_ELEMENTS_SMALL.bit_length() - 1})"
TARGETS = {
    "cuda": [
        (f"fwd+bwd >= 10x reference eager, every grid shape {SMALL_SHAPES_NOTE}",
         lambda r: r["group"] == "grid", _speedup_over("reference_eager"), 10.0, ">=",
         speedup_ceiling("reference_eager")),
        (f"fwd+bwd >= 10x sentence-transformers' math, every grid shape it runs {SMALL_SHAPES_NOTE}",
         lambda r: r["group"] == "grid", _speedup_over("sentence_transformers"), 10.0, ">=",
         speedup_ceiling("sentence_transformers")),
        (f"fwd+bwd >= 3x torch.compile(reference), every grid shape {SMALL_SHAPES_NOTE}",
         lambda r: r["group"] == "grid", _speedup_over("reference_compiled"), 3.0, ">=",
         speedup_ceiling("reference_compiled")),
        ("fwd+bwd >= 75% of copy bandwidth at B*L >= 2^24, float32",
         lambda r: r["B"] * r["L"] >= COPY_BW_MIN_ELEMENTS and r["dtype"] == "float32",
         lambda r: r.get("pct_copy_bw"), 75.0, ">="),
        ("fwd+bwd peak extra memory <= gradient + O(B) (bytes over the budget)",
         lambda r: True, _peak_over_gradient, 0.0, "<="),
    ],
    "cpu": [
        ("CPU path fwd+bwd >= 3x reference eager at 256 x 100",
         lambda r: (r["B"], r["L"]) == (256, 100), lambda r: r.get("speedup_vs_reference_eager"), 3.0, ">="),
        # the issue's own baseline, reference/ (the literal oracle); the vectorised one above is stricter
        ("CPU path fwd+bwd >= 3x the literal oracle reference/ at 256 x 100",
         lambda r: (r["B"], r["L"]) == (256, 100), lambda r: r.get("speedup_vs_reference_oracle"), 3.0, ">="),
    ],
}


def format_targets(rows: list[dict], device_type: str) -> str:
    """One line a target: met or missed, at how many of the cases it covers, and the worst case.

    "met" only when every covered case that ran was measured; "met at k/n" when some were not (the
    baseline skipped or failed there); the cases where our own kernel failed or disagreed with the
    reference are counted (`format_problems` lists them). Cases a time budget never ran have no rows (the run's notes say).
    """
    kernel = KERNEL_BY_DEVICE[device_type]
    ours = [r for r in rows if r["impl"] == kernel and r["direction"] == "fwd+bwd"]
    lines = []
    for name, qualifies, value_of, bound, sense, *ceiling in TARGETS[device_type]:
        covered = [r for r in ours if qualifies(r)]
        measured = [(value_of(r), r) for r in covered if r.get("status") == "ok" and value_of(r) is not None]
        failed = sum(r.get("status") in ("mismatch", "error") for r in covered)
        broken = f"; our kernel failed at {failed}" if failed else ""
        if not measured:
            lines.append(f"  not measured  {name}{broken}")
            continue
        missed = [(v, r) for v, r in measured if (v < bound if sense == ">=" else v > bound)]
        worst, row = (min if sense == ">=" else max)(measured, key=lambda pair: pair[0])
        if missed:
            verdict = f"MISSED {len(missed)}/{len(measured)}"
        else:
            verdict = "met" if len(measured) == len(covered) else f"met at {len(measured)}/{len(covered)}"
        lines.append(f"  {verdict:<13} {name}: worst {worst:.4g} at {row['B']} x {row['L']} {_mode(row)}{broken}")
        beyond_reach = _beyond_any_autograd_loss(missed, ceiling[0], bound) if missed and ceiling else None
        if beyond_reach:
            lines.append(beyond_reach)
    return "targets (" + kernel + "):\n" + "\n".join(lines)


def _beyond_any_autograd_loss(missed: list, ceiling_of, bound: float):
    """A line on how many of a speedup target's misses no autograd loss could meet (`speedup_ceiling`),
    or None where no miss has a floor measured (large shapes)."""
    ceilings = [c for c in (ceiling_of(row) for _, row in missed) if c is not None]
    if not ceilings:
        return None
    beyond = sum(c < bound for c in ceilings)
    return (f"{'':16}{beyond} of the {len(ceilings)} misses at small shapes are beyond any autograd loss: "
            f"there the baseline's time over the autograd floor's is {min(ceilings):.3g}-{max(ceilings):.3g}x")


def _mode(row: dict) -> str:
    return "/".join([row["direction"], row["weighting"], row["order"], row["dtype"],
                     "ragged" if row["ragged"] else "full"])


def format_problems(rows: list[dict]) -> str:
    """Skipped, mismatching and failing (implementation, case) pairs, grouped by reason."""
    grouped: dict[tuple[str, str, str], int] = {}
    for row in rows:
        if row.get("status") != "ok":
            key = (row["label"], row.get("status", "?"), row.get("note", ""))
            grouped[key] = grouped.get(key, 0) + 1
    return "\n".join(f"  {label:<12} {status:<9} x{count:<4} {note}" for (label, status, note), count in grouped.items())
