"""Training state on disk: atomic writes, random-number-generator states, ``last.pt``.

Every file is written to a temporary name in the same folder, flushed to disk, then renamed over
the destination (``os.replace`` is atomic on POSIX and Windows), so a kill at any moment leaves
either the previous file or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from hilovit.io import atomic_write

__all__ = [
    "atomic_torch_save",
    "atomic_write_text",
    "write_json",
    "get_rng_state",
    "set_rng_state",
    "load_training_state",
    "check_writable_dir",
    "check_creatable_dir",
    "missing_folders",
    "remove_empty_folders",
    "remove_stale_temporaries",
]

PathLike = Union[str, "os.PathLike[str]"]


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save(obj, path)``, atomically (see :func:`hilovit.io.atomic_write`)."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """``text`` into ``path``, atomically (see :func:`hilovit.io.atomic_write`)."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def get_rng_state() -> Dict[str, Any]:
    """The states of torch's CPU (and CUDA) generators, numpy's and Python's global generators.

    Stored as tensors, ints and tuples only, so ``torch.load(..., weights_only=True)`` reads them.
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu())
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


def load_training_state(path: PathLike) -> Dict[str, Any]:
    """Read a ``last.pt`` written by the engine (``weights_only``: no code runs on load)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"cannot resume: {str(path)!r} does not exist (the output folder holds no training run to continue)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - reported with the path
        raise ValueError(f"cannot resume: {str(path)!r} is not a readable training checkpoint ({e})") from e
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise ValueError(f"cannot resume: {str(path)!r} is not a training checkpoint written by `hilovit train` "
                         "(it has no 'model' and 'epoch' entries)")
    return state


def check_writable_dir(path: PathLike, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove it writable by writing and removing a probe file.

    Raises:
        ValueError: it cannot be created or written (names the folder and the reason: a file in the
            way, a folder without write permission, ...).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} exists and is not a directory")
    for parent in path.parents:  # "File exists" from mkdir would not say which file is in the way
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {str(path)!r} cannot be created: {str(parent)!r} is a file, not a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{what} {str(path)!r} is not writable: {e.strerror or e}") from e
    return path


def check_creatable_dir(path: PathLike, what: str = "output folder") -> Path:
    """Check that ``path`` is a writable folder, or one that can be created, without touching anything: the
    nearest existing folder on the way must be a folder this process may write into (``os.access``). A
    command checks its output this way first and creates the folder (:func:`check_writable_dir`, which
    proves it with a probe file) only when it writes.

    Raises:
        ValueError: a file in the way, or a folder that cannot be written (both named).
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} exists and is not a directory")
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ValueError(f"{what} {str(path)!r} cannot be created: {str(existing)!r} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (in {str(existing)!r})"
        raise ValueError(f"{what} {str(path)!r} is not writable{where}: permission denied")
    return path


def missing_folders(path: PathLike) -> list:
    """The folders of ``path`` (itself included) that do not exist yet, deepest first: what creating it makes."""
    path = Path(path).expanduser()
    return [p for p in (path, *path.parents) if not p.exists()]


def remove_empty_folders(folders) -> None:
    """Remove each of ``folders`` (deepest first) that is an empty folder; the others stay."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone
            pass


_TEMPORARY = re.compile(r"^\.(?:.+\.tmp|write-test)-(\d+)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # called before this process writes anything: the name is a dead process's reused pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(folder: PathLike) -> list:
    """Remove the temporary files (``.NAME.tmp-PID``, ``.write-test-PID``) of processes that are gone.

    A process killed while writing leaves its temporary file behind (the destination itself is
    intact); a new run in the same folder calls this before writing. Files of live processes
    are kept. Returns the paths removed.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        m = _TEMPORARY.match(path.name)
        if m and path.is_file() and not _alive(int(m.group(1))):
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed
