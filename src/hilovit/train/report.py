"""What a training run prints and writes besides its checkpoint: log lines, ``metrics.csv``,
``curves.png``, ``config.yaml``, TensorBoard scalars and the closing summary.

Log lines go through :mod:`logging`, logger ``"hilovit.train"`` (INFO; warnings at WARNING). A
plain handler (the message alone, on ``sys.stdout``) is attached to that logger so a script sees
what the command line shows; it stands aside as soon as another handler is attached to
``"hilovit.train"``. To silence the lines: ``logging.getLogger("hilovit.train").setLevel(logging.WARNING)``;
to redirect them: attach your own handler to that logger (records also propagate to the root logger).
"""

from __future__ import annotations

import csv
import io
import logging
import shlex
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

from hilovit.train.distributed import DistEnv
from hilovit.train.state import atomic_write_text

__all__ = ["METRIC_COLUMNS", "Reporter", "write_metrics_csv", "yaml_dump", "plot_curves", "print_summary",
           "format_summary", "plural", "logger", "PlainHandler", "use_plain_output", "TensorBoardLog"]

logger = logging.getLogger("hilovit.train")


class PlainHandler(logging.Handler):
    """Writes the message alone to the ``sys.stdout`` of the moment (``sys.stderr`` for warnings and
    worse), as the command line has always printed; steps aside when ``"hilovit.train"`` has another
    handler (the user's)."""

    def emit(self, record: logging.LogRecord) -> None:
        if any(h is not self for h in logger.handlers):
            return
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(record.getMessage() + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must not stop training
            self.handleError(record)


def use_plain_output() -> None:
    """Print the training lines as the command line shows them: the plain handler attached (once) and
    INFO let through unless the level was set. Called on import and by ``hilovit train``."""
    if not any(isinstance(h, PlainHandler) for h in logger.handlers):
        logger.addHandler(PlainHandler())
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


use_plain_output()

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
        """One line to logger ``"hilovit.train"`` at INFO (rank 0 only, nothing with progress 'off')."""
        if self.main and self.mode != "off":
            logger.info(msg)

    def bar(self, total: int, desc: str):
        if not self.main or self.mode != "bar":
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, file=sys.stderr, leave=True)


def write_metrics_csv(path: Path, rows: List[Dict[str, Any]], columns: Sequence[str] = METRIC_COLUMNS) -> None:
    """``rows`` as a CSV of ``columns`` (floats to 6 significant digits, None empty), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt_cell(row.get(k)) for k in columns})
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
        logger.warning(f"warning: could not draw {path}: {e}")


class TensorBoardLog:
    """Per-epoch scalars for TensorBoard (``torch.utils.tensorboard.SummaryWriter``) in ``folder``:
    ``train/loss``, ``train/top1``, ``train/lr``, ``train/images_per_second``, ``eval/loss``,
    ``eval/top1``, ``eval/top5`` (and ``eval/top1_ema``), at step = epoch. Written on rank 0 only."""

    EXTRA = "tensorboard"
    TAGS = {"train_loss": "train/loss", "train_top1": "train/top1", "lr": "train/lr",
            "images_per_second": "train/images_per_second", "eval_loss": "eval/loss", "eval_top1": "eval/top1",
            "eval_top5": "eval/top5", "eval_top1_ema": "eval/top1_ema", "eval_top5_ema": "eval/top5_ema"}

    @classmethod
    def check_available(cls) -> None:
        """Raise a one-line ``ValueError`` naming the extra to install when TensorBoard is absent."""
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as e:
            from hilovit.train.config import OptionError

            raise OptionError(f"{{log_tensorboard}} needs TensorBoard, which is not installed ({e}): "
                              f"pip install 'hilovit[{cls.EXTRA}]'") from None

    def __init__(self, folder: Path) -> None:
        self.check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def write_epoch(self, row: Dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        for key, tag in self.TAGS.items():
            value = row.get(key)
            if isinstance(value, (int, float)):
                self.writer.add_scalar(tag, float(value), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


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
