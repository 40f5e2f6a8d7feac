"""Writing files so that a kill at any moment leaves the old file or the new one, never half of one.

:func:`atomic_write` writes to a temporary file in the destination's folder
(``.NAME.tmp-PID``), flushes it to disk, gives it the permissions of any other new file
(``0666`` less the process umask, so ``0644`` under the usual umask) and renames it over the
destination (``os.replace`` is atomic on POSIX and Windows). On any error the temporary file is
removed and the destination is untouched. Temporaries left by processes that were killed
(their PID no longer runs) are removed at the next write beside them.

Example::

    >>> with atomic_write("out/summary.json", "w") as f:
    ...     f.write("{}")
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import IO, Iterator, Union

__all__ = ["atomic_write", "check_creatable_dir", "check_writable_dir", "missing_folders", "pid_running",
           "remove_empty_folders", "remove_stale_temporaries", "temporary_name"]

PathLike = Union[str, "os.PathLike[str]"]
_MODES = ("w", "wb")


def temporary_name(path: PathLike, pid: int | None = None) -> Path:
    """The temporary file :func:`atomic_write` uses for ``path``: ``.NAME.tmp-PID`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (this process does; one of another user, or a system
    that cannot tell, counts as running, so that its files are left alone)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else (PermissionError), or cannot tell
        return True
    return True


def remove_stale_temporaries(path: PathLike) -> list:
    """Remove ``.NAME.tmp-PID`` files beside ``path`` whose process no longer runs; return their paths."""
    path = Path(path)
    pattern = re.compile(r"^\." + re.escape(path.name) + r"\.tmp-(\d+)$")
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or pid_running(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb", encoding: str = "utf-8") -> Iterator[IO]:
    """Open a temporary file to write ``path`` through; on a clean exit it replaces ``path``.

    Args:
        path: the destination; its folder must exist.
        mode: ``'wb'`` (bytes) or ``'w'`` (text, ``encoding``).

    Yields:
        the open temporary file.

    Raises:
        ValueError: ``mode`` is not ``'w'`` or ``'wb'``.
    """
    if mode not in _MODES:
        raise ValueError(f"atomic_write: mode={mode!r}, expected one of {', '.join(map(repr, _MODES))}")
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = temporary_name(path)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # our own leftover (a reused PID)
    kwargs = {} if "b" in mode else {"encoding": encoding}
    # created 0666 less the umask, as open() creates any file (mkstemp would make it 0600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


# --------------------------------------------------------------------------- output folders
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
