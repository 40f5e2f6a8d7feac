"""Pictures: benchmark plots (and, later, what HiLo's branches see). Matplotlib, PNG, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence

__all__ = ["save_figure", "plot_attention_benchmark", "plot_bars", "plot_sweep"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` to ``path`` as PNG through a temporary file, then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        _pyplot().close(fig)
        if tmp.exists():
            tmp.unlink()
    return path


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
