"""The output folder of a training run: which folders a run may write into, and what ``--overwrite`` removes.

A run writes into an empty (or new) folder, or into the folder of an earlier run: one that holds
``last.pt`` (continue it with ``resume``, start afresh with ``overwrite``) or only files a run
writes. A folder holding anything else (the user's files) is refused, with or without
``overwrite``: nothing of the user's is replaced. ``overwrite`` removes the files a run writes
and leaves every other file in place.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import List, Union

from hilovit.io import check_creatable_dir
from hilovit.options import OptionError

__all__ = ["ENGINE_FILES", "RUN_FILES", "RUN_FOLDERS", "check_output", "clear_output", "foreign_entries"]

# What the engine writes, and what the tasks write beside it (pictures, evaluation reports).
ENGINE_FILES = ("last.pt", "model.safetensors", "model_ema.safetensors", "summary.json", "metrics.csv",
                "curves.png", "config.yaml")
RUN_FILES = ENGINE_FILES + ("confusion.png", "predictions.png")
RUN_FOLDERS = ("tensorboard", "eval")
_TEMPORARY = re.compile(r"^\..+\.tmp-\d+$|^\.write-test-\d+$")


def foreign_entries(folder: Path) -> List[str]:
    """The names in ``folder`` that a training run does not write (sorted)."""
    names = []
    for entry in folder.iterdir():
        if entry.name in RUN_FILES or entry.name in RUN_FOLDERS or _TEMPORARY.match(entry.name):
            continue
        names.append(entry.name)
    return sorted(names)


def check_output(output: Union[str, Path], resume: bool = False, overwrite: bool = False) -> Path:
    """The output folder of a run, proven writable or creatable; nothing is created here (the engine
    creates it when it writes, and removes what it created when the run fails before its first epoch).

    Raises:
        OptionError: the folder holds a run and neither ``resume`` nor ``overwrite`` is given, or it
            holds files a run does not write (named, up to five).
        ValueError: it cannot be created or written.
    """
    out = Path(output).expanduser()
    if out.is_dir() and not resume:
        foreign = foreign_entries(out)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise OptionError(
                f"output folder {str(out)!r} is neither empty nor a training run: it holds {shown}; train into an "
                "empty or new {output} (nothing of yours is replaced, even with {overwrite})")
        if not overwrite and (out / "last.pt").exists():
            raise OptionError(
                f"output folder {str(out)!r} already holds a training run (last.pt): continue it with {{resume}}, "
                "start afresh with {overwrite}, or choose another {output}")
    return check_creatable_dir(out, "output folder")


def clear_output(out: Path) -> List[str]:
    """Remove what a run writes from ``out`` (``overwrite``); every other file stays. Returns the names removed."""
    removed = []
    for name in RUN_FILES:
        path = out / name
        if path.is_file():
            path.unlink()
            removed.append(name)
    for name in RUN_FOLDERS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed
