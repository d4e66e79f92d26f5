"""PNG plots of one run: time vs L per B, speedup heatmap over (B, L), % of copy-bandwidth roofline.

All plots use the shape-grid cases (headline mode), fwd+bwd unless stated; they are drawn from
whatever device the run was on (CPU results on a machine without CUDA, labelled as such).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on CI or the GPU machine
import matplotlib.pyplot as plt  # noqa: E402

from bench.report import KERNEL_BY_DEVICE  # noqa: E402


def _grid_rows(rows, direction="fwd+bwd"):
    return [r for r in rows if r["group"] == "grid" and r["direction"] == direction and r.get("status") == "ok"]


def _save(fig, title, path: Path) -> Path:
    """Title, lay out, write and close a figure."""
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_time_vs_length(rows, device_label, path: Path) -> Path | None:
    grid = _grid_rows(rows)
    if not grid:
        return None
    batch_sizes = sorted({r["B"] for r in grid})
    impls = list(dict.fromkeys(r["impl"] for r in grid))
    labels = {r["impl"]: r["label"] for r in grid}
    cols = min(4, len(batch_sizes))
    nrows = (len(batch_sizes) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.3 * nrows), squeeze=False)
    for ax, B in zip(axes.flat, batch_sizes):
        for impl in impls:
            points = sorted((r["L"], r["ms"]) for r in grid if r["B"] == B and r["impl"] == impl)
            if points:
                ax.plot(*zip(*points), marker="o", label=labels[impl])
        ax.set(xscale="log", yscale="log", title=f"B = {B}", xlabel="L (list length)", ylabel="ms (median)")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(batch_sizes):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    return _save(fig, f"ListMLE forward+backward time\n{device_label}", path)


def plot_speedup_heatmap(rows, device_type, device_label, path: Path) -> Path | None:
    grid = _grid_rows(rows)
    kernel = KERNEL_BY_DEVICE[device_type]
    baselines = [b for b in ("reference_eager", "reference_compiled", "sentence_transformers")
                 if any(f"speedup_vs_{b}" in r for r in grid if r["impl"] == kernel)]
    if not baselines:
        return None
    batch_sizes = sorted({r["B"] for r in grid})
    lengths = sorted({r["L"] for r in grid})
    panel_w, panel_h = max(4.0, 1.5 + 0.7 * len(lengths)), max(3.2, 1.5 + 0.45 * len(batch_sizes))
    fig, axes = plt.subplots(1, len(baselines), figsize=(panel_w * len(baselines), panel_h), squeeze=False)
    labels = {r["impl"]: r["label"] for r in rows}
    for ax, baseline in zip(axes.flat, baselines):
        matrix = [[float("nan")] * len(lengths) for _ in batch_sizes]
        for r in grid:
            if r["impl"] == kernel and f"speedup_vs_{baseline}" in r:
                matrix[batch_sizes.index(r["B"])][lengths.index(r["L"])] = r[f"speedup_vs_{baseline}"]
        image = ax.imshow(matrix, cmap="viridis", origin="lower", aspect="auto")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if value == value:  # not nan
                    ax.text(j, i, f"{value:.1f}", ha="center", va="center", color="w", fontsize=7)
        ax.set_xticks(range(len(lengths)), [str(L) for L in lengths])
        ax.set_yticks(range(len(batch_sizes)), [str(B) for B in batch_sizes])
        ax.set(xlabel="L", ylabel="B", title=f"x over {labels.get(baseline, baseline)}")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return _save(fig, f"{labels.get(kernel, kernel)} fwd+bwd speedup (time of baseline / ours)\n{device_label}", path)


def plot_roofline_fraction(rows, device_type, device_label, path: Path) -> Path | None:
    kernel = KERNEL_BY_DEVICE[device_type]
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for direction in ("fwd", "fwd+bwd"):
        points = sorted((r["B"] * r["L"], r["pct_copy_bw"]) for r in _grid_rows(rows, direction) if r["impl"] == kernel)
        if points:
            ax.plot(*zip(*points), marker="o", linestyle="none", label=f"{kernel} {direction}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return None
    if device_type == "cuda":
        ax.axhline(75, color="gray", linestyle="--", linewidth=1, label="75% target")
    ax.set(xscale="log", xlabel="B * L", ylabel="% of measured copy bandwidth")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, f"minimal bytes / time vs copy bandwidth\n{device_label}", path)


def write_plots(rows, device_type, device_label, stem: Path) -> list[Path]:
    made = [
        plot_time_vs_length(rows, device_label, stem.with_name(stem.name + "-time-vs-L.png")),
        plot_speedup_heatmap(rows, device_type, device_label, stem.with_name(stem.name + "-speedup.png")),
        plot_roofline_fraction(rows, device_type, device_label, stem.with_name(stem.name + "-roofline.png")),
    ]
    return [p for p in made if p is not None]
