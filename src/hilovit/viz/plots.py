"""Plots shared by the benchmarks, training and evaluation: bars, sweeps, training curves, confusion
matrices. Matplotlib (Agg); PNG, JPEG or WebP by the file's extension, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence

__all__ = ["save_figure", "plot_attention_benchmark", "plot_bars", "plot_sweep", "plot_training_curves",
           "plot_confusion_matrix"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` (PNG, JPEG or WebP by its extension; an unknown one is a ValueError)
    through a temporary file, then close it."""
    from hilovit.viz.files import write_figure

    try:
        return write_figure(fig, path, dpi=dpi)
    finally:
        _pyplot().close(fig)


def plot_bars(
    groups: Sequence[str], series: Dict[str, Sequence[float]], ylabel: str, title: str, ax=None
):
    """Grouped bars: one group per label in ``groups``, one bar per series."""
    import numpy as np

    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups)), 4))
    width = 0.8 / max(1, len(series))
    xs = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(xs + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(xs, groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return ax


def plot_sweep(
    xs: Sequence[float], series: Dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str, ax=None, log=True
):
    """Lines of ``series`` over ``xs`` (e.g. time or memory against token count)."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for name, ys in series.items():
        ax.plot(xs[: len(ys)], ys, marker="o", label=name)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def plot_attention_benchmark(rows: List[dict], path: str | os.PathLike) -> Path:
    """Images/s per mechanism and dtype (first map size); with several sizes, time and memory against tokens."""
    plt = _pyplot()
    sizes = list(dict.fromkeys(r["tokens"] for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    mechs = list(dict.fromkeys(r["mechanism"] for r in rows))
    ncols = 1 if len(sizes) == 1 else 3
    fig, axes = plt.subplots(1, ncols, figsize=(7 if ncols == 1 else 18, 4.5), squeeze=False)
    first = [r for r in rows if r["tokens"] == sizes[0]]
    series = {d: [next(r["images_per_s"] for r in first if r["mechanism"] == m and r["dtype"] == d) for m in mechs]
              for d in dtypes}
    plot_bars(mechs, series, "images / s (higher is better)", f"attention, {sizes[0]} tokens", ax=axes[0][0])
    if len(sizes) > 1:
        tokens = [int(s.split("x")[0]) * int(s.split("x")[1]) for s in sizes]
        d = dtypes[0]
        for ax, key, label in ((axes[0][1], "ms_per_batch", "ms per batch"),
                               (axes[0][2], "peak_memory_MB", "peak memory (MB)")):
            lines = {m: [r[key] for r in rows if r["mechanism"] == m and r["dtype"] == d] for m in mechs}
            plot_sweep(tokens, lines, "tokens (H x W)", label, f"{label} vs tokens ({d})", ax=ax)
    return save_figure(fig, path)


_CURVE_LABELS = {
    "train_loss": "train (augmented)",
    "eval_loss": "evaluation",
    "train_top1": "train (augmented)",
    "eval_top1": "evaluation",
    "eval_top1_ema": "evaluation, EMA weights",
}


def plot_training_curves(rows: List[dict], path: str | os.PathLike, title: str = "training") -> Path:
    """Loss, the task's metrics and the learning rate per epoch, from the rows of a training run's ``metrics.csv``.

    Each row needs ``epoch``, ``train_loss``, ``lr``; ``eval_loss`` and every percentage the rows
    carry (``train_top1``, ``eval_top1``, ``eval_top1_ema``; ``train_pixel_acc``, ``eval_miou``, ...;
    ``eval_ap50``, ...) are drawn where present (epochs without evaluation are skipped).
    """
    plt = _pyplot()
    skip = ("epoch", "step", "lr", "train_loss", "eval_loss", "images_per_second", "train_images", "train_seconds",
            "eval_seconds", "wall_seconds")
    metrics = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in skip
               and (k.startswith("train_") or k.startswith("eval_"))]

    def series(key):
        pts = [(float(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in (None, "", "nan")]
        return [p[0] for p in pts], [p[1] for p in pts]

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    percent = "top-1 accuracy (%)" if metrics and all("top" in k for k in metrics) else "metric (%)"
    for ax, (keys, label) in zip(axes[:2], ((("train_loss", "eval_loss"), "loss"), (tuple(metrics), percent))):
        for key in keys:
            xs, ys = series(key)
            if xs:
                ax.plot(xs, ys, marker="o", label=_CURVE_LABELS.get(key, key))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    xs, ys = series("lr")
    axes[2].plot(xs, ys, marker="o")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate (end of epoch)")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    axes[2].grid(alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion_matrix(confusion: Sequence[Sequence[float]], classes: Sequence[str], path: str | os.PathLike,
                          title: str = "confusion matrix", normalize: bool = True) -> Path:
    """Confusion matrix with the class names: rows are true classes, columns predictions.

    Cells are coloured by the share of the row (``normalize``) and labelled with the counts.
    """
    import numpy as np

    plt = _pyplot()
    cm = np.asarray(confusion, dtype=np.float64)
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"plot_confusion_matrix: confusion has shape {cm.shape}, expected ({k}, {k}) for the classes")
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    side = max(5.0, 0.6 * k + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class" if normalize else "images")
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black")
    ax.set_title(title)
    return save_figure(fig, path)
