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

# The output-folder checks live in hilovit.io (export and the tasks use them too); their names stay importable here.
from hilovit.io import (  # noqa: F401
    atomic_write,
    check_creatable_dir,
    check_writable_dir,
    missing_folders,
    remove_empty_folders,
)

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
