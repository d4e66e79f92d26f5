"""PNG plots of one run, drawn from its result rows: after each run, or later from its JSON file with

    python -m bench.plots RESULT.json [--out DIR]

  <stem>-time-vs-L.png   forward+backward time against L, one panel per B (the shape grid)
  <stem>-speedup.png     our speed-up over each baseline on the (B, L) grid, one colour scale for all panels
  <stem>-bandwidth.png   our achieved bandwidth (minimal bytes / time) as % of the measured copy bandwidth

Every title names the mode (dtype included) and the device; targets are drawn where they apply, and
cells or points that were not timed say so and why.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from bench import cases as cases_mod  # noqa: E402
from bench.report import (  # noqa: E402
    BASELINES, DEFAULT_OUT, KERNEL_BY_DEVICE, SMALL_SHAPES, TARGETS, judged_on_wall_clock, mode_text, note_text,
    speedup, speedup_target,
)

class PlainLogFormatter(LogFormatter):
    """Labels the ticks matplotlib's log formatter would label, as plain numbers (0.6, 2, 10; not 6e-01)."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


GRID_MODE = mode_text(dict(direction="fwd+bwd", **cases_mod.HEADLINE))
NOT_TIMED = {"skipped": "skipped", "mismatch": "wrong result", "error": "failed"}
TARGET_COLOUR = "#e8112d"
UNTIMED_FILL = {"skipped": "#d9d9d9", "mismatch": "#f4b6b6", "error": "#f4b6b6", "not run": "#f4f4f4",
                "outside": "white", "no time": "#f4f4f4"}


def _device_line(meta: dict) -> str:
    commit = str(meta.get("git_commit", "?"))[:9]
    day = str(meta.get("timestamp_utc", ""))[:10]
    return f"{meta['device']} | commit {commit} | {day}"


def _save(fig, lines: list[str], path: Path) -> Path:
    """Title (what, mode, device), write and close a figure laid out by matplotlib's constrained layout."""
    fig.suptitle("\n".join(lines), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _status_word(row: dict | None) -> str:
    return "not run" if row is None else NOT_TIMED.get(row.get("status"), str(row.get("status")))


def _grid(rows, direction="fwd+bwd"):
    return [r for r in rows if r["group"] == "grid" and r["direction"] == direction]


def _grid_limit(meta: dict) -> int | None:
    """The largest B*L the run's shape grid had (--max-elements or the device's default), None if unknown."""
    args = meta.get("args") or {}
    if args.get("max_elements"):
        return args["max_elements"]
    if "quick" not in args:
        return None
    return cases_mod.default_grid(meta["device_type"] == "cuda", args["quick"])["max_elements"]


# --------------------------------------------------------------------------------------------------
# Time against L
# --------------------------------------------------------------------------------------------------


def plot_time_vs_length(rows, meta: dict, path: Path) -> Path | None:
    grid = _grid(rows)
    timed = {r["impl"] for r in grid if r.get("status") == "ok"}
    if not timed:
        return None
    labels = {r["impl"]: r["label"] for r in rows}
    impls = [impl for impl in dict.fromkeys(r["impl"] for r in grid) if impl in timed]
    colours = {impl: f"C{k}" for k, impl in enumerate(impls)}
    batch_sizes = sorted({r["B"] for r in grid})
    cols = min(4, len(batch_sizes))
    nrows = (len(batch_sizes) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 4.4 * nrows + 0.9), squeeze=False,
                             layout="constrained")
    for ax, B in zip(axes.flat, batch_sizes):
        lengths = sorted({r["L"] for r in grid if r["B"] == B})
        for impl in impls:
            by_length = {r["L"]: r for r in grid if r["B"] == B and r["impl"] == impl}
            times = [by_length[L]["ms"] if by_length.get(L, {}).get("status") == "ok" else math.nan for L in lengths]
            label = labels[impl] + _untimed_lengths(by_length, lengths)
            if any(t == t for t in times):  # a gap (nan) breaks the line where a case was not timed
                ax.plot(lengths, times, marker="o", markersize=4, color=colours[impl], label=label)
            else:
                ax.plot([], [], marker="o", linestyle="none", color=colours[impl], label=label)
        ax.set(xscale="log", yscale="log", title=f"B = {B}", xlabel="L (list length)",
               ylabel="ms (median" + (", do_bench: device time)" if meta["device_type"] == "cuda" else ")"))
        ax.set_xticks(lengths, [str(L) for L in lengths], minor=False, rotation=90, fontsize=7)
        ax.set_xticks([], minor=True)
        ax.yaxis.set_major_formatter(PlainLogFormatter())
        ax.yaxis.set_minor_formatter(PlainLogFormatter(minor_thresholds=(2, 0.5)))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.24), ncol=2, frameon=False)
    for ax in list(axes.flat)[len(batch_sizes):]:
        ax.axis("off")
    never = _never_on_grid(grid, timed, labels)
    if never:
        fig.supxlabel(textwrap.fill("not timed on the shape grid: " + "; ".join(never), 40 * cols), fontsize=7)
    return _save(fig, ["ListMLE forward+backward time against L, one panel per B",
                       f"shape grid: {GRID_MODE}", _device_line(meta)], path)


def _untimed_lengths(by_length: dict, lengths: list[int]) -> str:
    """' (skipped at L = 4096, 16384)' for the panel's lengths where an implementation was not timed."""
    untimed: dict[str, list[int]] = {}
    for L in lengths:
        if by_length.get(L, {}).get("status") != "ok":
            untimed.setdefault(_status_word(by_length.get(L)), []).append(L)
    if not untimed:
        return ""
    if len(untimed) == 1 and sum(map(len, untimed.values())) == len(lengths):
        return f" ({next(iter(untimed))} at every L)"
    return " (" + "; ".join(f"{word} at L = {', '.join(map(str, Ls))}" for word, Ls in untimed.items()) + ")"


def _never_on_grid(grid, timed, labels) -> list[str]:
    notes: dict[str, Counter] = {}
    for r in grid:
        if r["impl"] not in timed:
            notes.setdefault(r["impl"], Counter())[f"{_status_word(r)}: {note_text(r)}"] += 1
    return [f"{labels[impl]} ({counts.most_common(1)[0][0]})" for impl, counts in notes.items()]


# --------------------------------------------------------------------------------------------------
# Speed-up heatmaps
# --------------------------------------------------------------------------------------------------


def plot_speedup_heatmap(rows, meta: dict, path: Path) -> Path | None:
    device_type = meta["device_type"]
    kernel = KERNEL_BY_DEVICE[device_type]
    grid = _grid(rows)
    ours = {(r["B"], r["L"]): r for r in grid if r["impl"] == kernel}
    by_cell = {(r["B"], r["L"], r["impl"]): r for r in grid}
    baselines = [b for b in BASELINES if any(speedup(r, b, device_type) is not None for r in ours.values())]
    if not baselines:
        return None
    labels = {r["impl"]: r["label"] for r in rows}
    batch_sizes = sorted({r["B"] for r in grid})
    lengths = sorted({r["L"] for r in grid})
    values = [v for r in ours.values() for b in baselines for v in [speedup(r, b, device_type)] if v]
    bounds = [t.bound for t in (speedup_target(device_type, b) for b in baselines) if t]
    norm = LogNorm(vmin=min(values + [1.0] + bounds) / 1.1, vmax=max(values + [1.0] + bounds) * 1.1)
    cmap = plt.get_cmap("viridis")
    limit = _grid_limit(meta)

    panel_w, panel_h = max(4.2, 1.4 + 0.62 * len(lengths)), max(3.0, 1.2 + 0.42 * len(batch_sizes))
    fig, axes = plt.subplots(1, len(baselines), figsize=(panel_w * len(baselines) + 1.2, panel_h + 1.9),
                             squeeze=False, layout="constrained")
    for ax, baseline in zip(axes.flat, baselines):
        target = speedup_target(device_type, baseline)
        shown: dict[str, str] = {}  # legend text -> fill kind: what the panel's untimed cells mean
        met_any = starred = False
        for i, B in enumerate(batch_sizes):
            for j, L in enumerate(lengths):
                row = ours.get((B, L))
                value = speedup(row, baseline, device_type) if row else None
                if value is not None:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color=cmap(norm(value))))
                    star = "*" if judged_on_wall_clock(row, device_type) else ""
                    starred |= bool(star)
                    ax.text(j, i, f"{value:.1f}{star}" if value < 100 else f"{value:.0f}{star}", ha="center",
                            va="center", fontsize=7, color="black" if norm(value) > 0.6 else "white")
                    if target and target.qualifies(row) and target.meets(value):
                        met_any = True
                        ax.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False,
                                               edgecolor=TARGET_COLOUR, linewidth=2))
                    continue
                kind, text, why = _untimed_cell(row, by_cell.get((B, L, baseline)), B * L, limit, labels,
                                                labels.get(kernel, kernel))
                hatch = "///" if kind in NOT_TIMED else None
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=UNTIMED_FILL[kind], hatch=hatch,
                                       edgecolor="#9a9a9a", linewidth=0))
                ax.text(j, i, text, ha="center", va="center", fontsize=8 if text == "-" else 6, color="#333333")
                shown.setdefault(why, kind)
        ax.set_xlim(-0.5, len(lengths) - 0.5)
        ax.set_ylim(-0.5, len(batch_sizes) - 0.5)
        ax.set_xticks(range(len(lengths)), [str(L) for L in lengths])
        ax.set_yticks(range(len(batch_sizes)), [str(B) for B in batch_sizes])
        goal = f"target >= {target.bound:g}x ({target.scope})" if target else "no target"
        ax.set(xlabel="L", ylabel="B", title=f"over {labels.get(baseline, baseline)}: {goal}")
        ax.title.set_fontsize(8.5)
        handles = [_legend_target(target, met_any)]
        if starred:
            handles.append(Patch(alpha=0, label=f"x*: back to back, host time included ({SMALL_SHAPES})"))
        handles += [Patch(facecolor=UNTIMED_FILL[kind], hatch="///" if kind in NOT_TIMED else None,
                          edgecolor="#9a9a9a", label=textwrap.fill(textwrap.shorten(why, 110), 52))
                    for why, kind in shown.items()]
        ax.legend(handles=handles, fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    colourbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), shrink=0.8,
                             label="speed-up (x), one scale for all panels")
    _mark_colourbar(colourbar, norm, bounds)
    kernel_label = labels.get(kernel, kernel)
    how = (f"x* at {SMALL_SHAPES}: back to back with the host's time; elsewhere do_bench's device time"
           if device_type == "cuda" else "median times")
    return _save(fig, [f"{kernel_label} forward+backward speed-up over each baseline "
                       f"(baseline's time / {kernel_label}'s; {how})",
                       f"shape grid: {GRID_MODE}", _device_line(meta)], path)


def _untimed_cell(ours: dict | None, other: dict | None, elements: int, limit: int | None, labels,
                  kernel_label: str) -> tuple[str, str, str]:
    """(fill kind, cell text, legend text) of a grid cell without a speed-up."""
    if ours is None:
        if limit is not None and elements > limit:
            return "outside", "-", f"-: B*L > 2^{limit.bit_length() - 1}, beyond the grid"
        return "not run", "not run", "not run: no case here (time budget reached or run interrupted)"
    for row, whose in ((ours, kernel_label), (other, labels.get(other["impl"], "") if other else "")):
        if row is not None and row.get("status") != "ok":
            kind = row.get("status") if row.get("status") in NOT_TIMED else "skipped"
            text = {"skipped": "skip", "mismatch": "wrong", "error": "failed"}[kind]
            note = f": {note_text(row)}" if note_text(row) else ""
            return kind, text, f"{text}: {whose} {NOT_TIMED[kind]}{note}"
    return "no time", "n/a", "n/a: both timed, but without times comparable for this speed-up"


def _legend_target(target, met_any: bool) -> Patch:
    if target is None:
        return Patch(alpha=0, label="no target for this baseline")
    return Patch(facecolor="none", edgecolor=TARGET_COLOUR, linewidth=2,
                 label=f"meets the target >= {target.bound:g}x" + ("" if met_any else " (no cell does)"))


def _mark_colourbar(colourbar, norm, bounds) -> None:
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
             if norm.vmin <= t <= norm.vmax]
    colourbar.ax.minorticks_off()
    ticks = sorted(set(ticks) | set(bounds))
    colourbar.set_ticks(ticks, labels=[f"{t:g}" + (" target" if t in bounds else "") for t in ticks])
    colourbar.ax.axhline(1.0, color="white", linewidth=1)
    for bound, tick in zip(ticks, colourbar.ax.get_yticklabels()):
        if bound in bounds:
            colourbar.ax.axhline(bound, color=TARGET_COLOUR, linewidth=2)
            tick.set_color(TARGET_COLOUR)


# --------------------------------------------------------------------------------------------------
# Bandwidth
# --------------------------------------------------------------------------------------------------


def plot_bandwidth(rows, meta: dict, path: Path) -> Path | None:
    """Our achieved bandwidth (minimal bytes / median time) as % of the copy bandwidth measured in the run.
    Not a roofline (no operation count is measured): the memory roof alone, the bound of the bandwidth target."""
    device_type = meta["device_type"]
    kernel = KERNEL_BY_DEVICE[device_type]
    mine = [r for r in rows if r["impl"] == kernel]
    series = [
        ("shape grid, fwd+bwd", "C1", "o", True,
         lambda r: r["group"] == "grid" and r["direction"] == "fwd+bwd"),
        ("shape grid, fwd", "C0", "o", True, lambda r: r["group"] == "grid" and r["direction"] == "fwd"),
        ("mode sweep, fwd+bwd, float32 (its modes)", "C1", "s", False,
         lambda r: r["group"] == "modes" and r["direction"] == "fwd+bwd" and r["dtype"] == "float32"),
    ]
    fig, ax = plt.subplots(figsize=(7.5, 5.0), layout="constrained")
    ax.set_xscale("log", base=2)
    drawn = False
    for name, colour, marker, filled, selects in series:
        points = sorted((r["B"] * r["L"], r["pct_copy_bw"]) for r in mine
                        if selects(r) and r.get("status") == "ok" and r.get("pct_copy_bw") is not None)
        if points:
            drawn = True
            ax.plot(*zip(*points), marker=marker, linestyle="none", markersize=5, label=name,
                    color=colour, markerfacecolor=colour if filled else "none")
    if not drawn:
        plt.close(fig)
        return None
    untimed = Counter(_status_word(r) for r in mine if r.get("status") != "ok" and any(s[-1](r) for s in series))
    for word, count in untimed.items():
        ax.plot([], [], marker="x", linestyle="none", color="gray",
                label=f"{word}: {count} case{'s' if count > 1 else ''}, not plotted")
    target = next((t for t in TARGETS[device_type] if t.kind == "bandwidth"), None)
    if target:
        ax.autoscale_view()
        right = max(ax.get_xlim()[1], 2.0 * (1 << 24))
        ax.axvspan(1 << 24, right, color=TARGET_COLOUR, alpha=0.06, linewidth=0)
        ax.hlines(target.bound, 1 << 24, right, colors=TARGET_COLOUR, linestyles="--", linewidth=1.5)
        ax.add_line(Line2D([], [], color=TARGET_COLOUR, linestyle="--",
                           label=f"target: fwd+bwd {target.goal.replace('the measured ', '')}, {target.scope}"))
        ax.set_xlim(right=right)
        ax.set_ylim(0, 100)
    else:
        ax.set_ylim(bottom=0)
    ax.set(xlabel="B * L (scores in the batch)", ylabel="% of the measured copy bandwidth")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left")
    label = next((r["label"] for r in mine), kernel)
    return _save(fig, [f"{label}: achieved bandwidth (minimal bytes / median time) as % of copy bandwidth",
                       f"shape grid: {mode_text(cases_mod.HEADLINE | dict(direction='fwd'), direction=False)}"
                       "; mode sweep: the float32 fwd+bwd modes",
                       _device_line(meta)], path)


# --------------------------------------------------------------------------------------------------


def write_plots(rows, meta: dict, stem: Path) -> list[Path]:
    made = [
        plot_time_vs_length(rows, meta, stem.with_name(stem.name + "-time-vs-L.png")),
        plot_speedup_heatmap(rows, meta, stem.with_name(stem.name + "-speedup.png")),
        plot_bandwidth(rows, meta, stem.with_name(stem.name + "-bandwidth.png")),
    ]
    return [p for p in made if p is not None]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.plots",
                                description="Draw the PNG plots of a bench run from its JSON file.")
    p.add_argument("result", type=Path, help="a run's JSON file, as python -m bench writes it")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"folder for the PNGs, named after the JSON file (default: {DEFAULT_OUT})")
    args = p.parse_args(argv)
    try:
        data = json.loads(args.result.read_text())
    except (OSError, ValueError) as exc:
        p.error(f"result: cannot read {args.result}: {exc}")
    if not isinstance(data, dict) or "results" not in data or "device_type" not in data.get("meta", {}):
        p.error(f"result: {args.result} is not a python -m bench result file (no meta.device_type or results)")
    args.out.mkdir(parents=True, exist_ok=True)
    written = write_plots(data["results"], data["meta"], args.out / args.result.stem)
    print("wrote: " + (", ".join(str(path) for path in written) or "nothing (no timed grid cases)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
