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

__all__ = ["Reporter", "write_metrics_csv", "yaml_dump", "plot_curves", "print_summary",
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


def write_metrics_csv(path: Path, rows: List[Dict[str, Any]], columns: Sequence[str]) -> None:
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
        from hilovit.viz.plots import plot_training_curves

        plot_training_curves(history, path, title)
    except Exception as e:  # noqa: BLE001 - a picture must never stop training
        logger.warning(f"warning: could not draw {path}: {e}")


class TensorBoardLog:
    """Per-epoch scalars for TensorBoard (``torch.utils.tensorboard.SummaryWriter``) in ``folder``: each
    number of an epoch's row as ``train/<name>`` (``train/loss``, ``train/top1``, ``train/lr``,
    ``train/images_per_second``, ...) or ``eval/<name>`` for the evaluation's (``eval/top1``,
    ``eval/miou``, ``eval/top1_ema``, ...), at step = epoch. Written on rank 0 only."""

    EXTRA = "tensorboard"
    SKIP = ("epoch", "step", "train_images", "train_seconds", "eval_seconds", "wall_seconds")

    @classmethod
    def tag(cls, key: str) -> str:
        """The scalar's tag for a row entry: ``eval_top1`` -> ``eval/top1``, ``lr`` -> ``train/lr``."""
        for prefix in ("train_", "eval_"):
            if key.startswith(prefix):
                return prefix[:-1] + "/" + key[len(prefix):]
        return "train/" + key

    @classmethod
    def check_available(cls) -> None:
        """Raise a one-line ``ValueError`` naming the extra to install when TensorBoard is absent."""
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as e:
            from hilovit.options import OptionError

            raise OptionError(f"{{log_tensorboard}} needs TensorBoard, which is not installed ({e}): "
                              f"pip install 'hilovit[{cls.EXTRA}]'") from None

    def __init__(self, folder: Path) -> None:
        self.check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))

    def write_epoch(self, row: Dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        for key, value in row.items():
            if key not in self.SKIP and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(self.tag(key), float(value), epoch)
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
    from hilovit.tasks import get_task

    lines += get_task(summary.get("task", "classification")).format_summary(summary)
    ips = summary.get("train_images_per_second")
    lines.append(f"{plural(summary['epochs'], 'epoch')}, {plural(summary['steps'], 'step')}, "
                 f"{'n/a' if ips is None else (f'{ips:.0f}' if ips >= 10 else f'{ips:.1f}')} training images/s, "
                 f"wall time {summary['wall_seconds']:.0f} s ({summary['wall_seconds'] / 60:.1f} min)")
    for kind, path in summary.get("files", {}).items():
        lines.append(f"  {kind}: {path}")
    return "\n".join(lines)
