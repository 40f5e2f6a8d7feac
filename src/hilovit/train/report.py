"""What a training run prints and writes besides its checkpoint: log lines, ``metrics.csv``,
``curves.png``, ``config.yaml`` and the closing summary."""

from __future__ import annotations

import csv
import io
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List

from hilovit.train.distributed import DistEnv
from hilovit.train.state import atomic_write_text

__all__ = ["METRIC_COLUMNS", "Reporter", "write_metrics_csv", "yaml_dump", "plot_curves", "print_summary",
           "format_summary", "plural"]

METRIC_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "eval_top5",
                  "eval_top1_ema", "eval_top5_ema", "images_per_second", "train_seconds", "eval_seconds",
                  "wall_seconds"]


def plural(n: int, word: str, bare: bool = False) -> str:
    """``'1 epoch'``, ``'2 epochs'`` (``bare``: the word alone, in the form ``n`` asks for)."""
    form = word if n == 1 else word + "s"
    return form if bare else f"{n} {form}"


class Reporter:
    """Prints on rank 0 only; a tqdm bar on a terminal, plain log lines otherwise."""

    def __init__(self, env: DistEnv, mode: str, log_interval: int) -> None:
        self.main = env.is_main
        self.mode = mode
        if mode == "auto":
            self.mode = "bar" if sys.stderr.isatty() else "log"
        self.log_interval = log_interval

    def print(self, msg: str) -> None:
        if self.main and self.mode != "off":
            print(msg, flush=True)

    def bar(self, total: int, desc: str):
        if not self.main or self.mode != "bar":
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr, leave=True)


def write_metrics_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt_cell(row.get(k)) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _fmt_cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def yaml_dump(obj) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


def plot_curves(history, path: Path, title: str) -> None:
    try:
        from hilovit.viz import plot_training_curves

        plot_training_curves(history, path, title)
    except Exception as e:  # noqa: BLE001 - a picture must never stop training
        print(f"warning: could not draw {path}: {e}", file=sys.stderr)


def print_summary(summary: Dict[str, Any], as_json: bool = False) -> None:
    """Print the summary (text or JSON) from rank 0 only."""
    if summary.get("rank", 0) != 0:
        return
    if as_json:
        import json

        print(json.dumps({k: v for k, v in summary.items() if k != "rank"}, indent=2))
    else:
        print(format_summary(summary))


def format_summary(summary: Dict[str, Any]) -> str:
    """The lines ``hilovit train`` prints at the end."""
    lines = []
    if not summary.get("finished", True):
        last = summary.get("files", {}).get("last")
        output = str(Path(last).parent) if last else summary.get("config", {}).get("output") or "OUTPUT"
        lines.append(f"stopped after epoch {summary['epochs']} of {summary['epochs_planned']}; "
                     f"continue with: hilovit train --resume --output {shlex.quote(output)}")
    k = summary.get("test_topk", 5)  # top-min(5, classes)
    if "test_top1" in summary:
        lines.append(f"{summary['model']} on {summary['dataset']} ({summary['eval_split']}, "
                     f"{summary['eval_images']} images): top-1 {summary['test_top1']:.2f}%  "
                     f"top-{k} {summary['test_top5']:.2f}%  loss {summary['test_loss']:.4f}")
    if "test_top1_ema" in summary:
        lines.append(f"EMA weights: top-1 {summary['test_top1_ema']:.2f}%  top-{k} {summary['test_top5_ema']:.2f}%")
    ips = summary.get("train_images_per_second")
    lines.append(f"{plural(summary['epochs'], 'epoch')}, {plural(summary['steps'], 'step')}, "
                 f"{'n/a' if ips is None else f'{ips:.0f}'} training images/s, "
                 f"wall time {summary['wall_seconds']:.0f} s ({summary['wall_seconds'] / 60:.1f} min)")
    for kind, path in summary.get("files", {}).items():
        lines.append(f"  {kind}: {path}")
    return "\n".join(lines)
