"""One HTTP download into a partial file, and the checks that it holds whole weights.

:mod:`hilovit.models.hub` owns the cache (names, hash records, renames); this module owns the
transfer beneath it, on ``urllib``:

* a read timeout on every step (connect, headers, each read of the body):
  ``HILOVIT_DOWNLOAD_TIMEOUT`` seconds, default 30;
* a size bound: the length announced by the GET (else by a HEAD request; a server that refuses
  HEAD still works); without any, ``HILOVIT_DOWNLOAD_MAX_BYTES`` (default 4 GiB);
* redirects followed to ``http(s)://`` URLs only;
* partial files named ``.<name>.<host>.<pid>-<random>.partial``, and :func:`sweep_partials` for
  the ones a killed process leaves;
* :func:`check_download`: a body cut short, a zip or safetensors file without its end, or bytes
  that do not parse as safetensors, a ``torch.save`` zip or a ``torch.save`` pickle (pickles are
  parsed opcode by opcode with :mod:`pickletools`, never loaded) is refused, naming the URL, the
  content type and what the bytes look like ("an HTML page").
"""

from __future__ import annotations

import json
import os
import pickletools
import re
import shlex
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import List, Optional, Tuple, Union
from urllib.parse import urljoin, urlparse

import torch

from hilovit.io import pid_running

__all__ = ["DownloadError", "check_download", "check_whole", "download_max_bytes", "download_timeout", "fetch_hint",
           "partial_path", "sweep_partials", "transfer"]

TIMEOUT_VARIABLE = "HILOVIT_DOWNLOAD_TIMEOUT"
MAX_BYTES_VARIABLE = "HILOVIT_DOWNLOAD_MAX_BYTES"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_MAX_BYTES = 4 << 30  # the largest official file (Swin-L, ImageNet-22k) is under 1 GiB
_CHUNK = 1 << 20
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)-[0-9a-f]{8}\.partial$")


class DownloadError(RuntimeError):
    """Weights could not be fetched (offline, unreachable, missing, cut short, stalled or corrupted).

    The message names the source and, where a by-hand fetch can help, the command for it.
    """


def _env_number(name: str, default: float, kind: type):
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if value is None or not value > 0 or value != value or value == float("inf"):
        what = "a positive number of seconds" if kind is float else "a positive whole number of bytes"
        raise ValueError(f"{name}={raw!r}: expected {what}")
    return value


def download_timeout() -> float:
    """Seconds a download may wait for the server (connect, headers, each read): ``$HILOVIT_DOWNLOAD_TIMEOUT``,
    default 30. ``ValueError`` for a value that is not a positive number."""
    return float(_env_number(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT_S, float))


def download_max_bytes() -> int:
    """The most bytes taken from a server that announces no length: ``$HILOVIT_DOWNLOAD_MAX_BYTES``,
    default 4 GiB. ``ValueError`` for a value that is not a positive integer."""
    return int(_env_number(MAX_BYTES_VARIABLE, DEFAULT_MAX_BYTES, int))


def fetch_hint(url: str, dest: Path) -> str:
    """The ``curl`` command that puts ``url`` at ``dest`` by hand, for an error message."""
    return (
        f"Fetch it by hand:\n    curl -fL --create-dirs -o {shlex.quote(str(dest))} {shlex.quote(url)}\n"
        f"then run again (the cached file is used), or pass the file itself: pretrained={str(dest)!r}"
    )


# --------------------------------------------------------------------------- partial files
def partial_path(dest: Path) -> Path:
    """A new partial file name beside ``dest``: ``.<name>.<host>.<pid>-<random>.partial``."""
    return dest.with_name(f".{dest.name}.{_HOST}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")


def sweep_partials(folder: Union[str, os.PathLike], timeout: Optional[float] = None) -> List[Path]:
    """Remove the partial downloads a killed process left in ``folder``.

    A ``.<name>.<host>.<pid>-<random>.partial`` file goes when its process (on this host) no
    longer runs, or when it has not been written for twice ``timeout`` (default
    :func:`download_timeout`): a live download writes at least once per timeout or gives up.
    Returns the removed paths.
    """
    folder = Path(folder)
    limit = 2.0 * (timeout if timeout is not None else download_timeout())
    removed: List[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        m = _PARTIAL.match(entry.name)
        if m is None:
            continue
        try:
            age = now - entry.stat().st_mtime
        except OSError:
            continue
        if (m["host"] == _HOST and not pid_running(int(m["pid"]))) or age > limit:
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
    return removed


# --------------------------------------------------------------------------- the transfer
class _HttpRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to ``http(s)://`` URLs only (urllib alone also follows ``ftp://``)."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("Location") or headers.get("URI")
        if target:
            target = urljoin(req.full_url, target)
            scheme = urlparse(target).scheme.lower()
            if scheme not in ("http", "https"):
                fp.close()
                raise DownloadError(f"{req.full_url} redirects (HTTP {code}) to {target!r}, a {scheme or 'schemeless'}:"
                                    " URL; only http:// and https:// redirects are followed")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _open(url: str, timeout: float, method: str = "GET"):
    opener = urllib.request.build_opener(_HttpRedirects)
    req = urllib.request.Request(url, method=method, headers={"User-Agent": "hilovit", "Accept-Encoding": "identity"})
    return opener.open(req, timeout=timeout)


def _int_header(value: Optional[str]) -> Optional[int]:
    try:
        n = int(value) if value is not None else None
    except ValueError:
        return None
    return n if n is not None and n >= 0 else None


def _announced_size(url: str, timeout: float) -> Optional[int]:
    """The Content-Length a HEAD request announces (None when the server does not say).

    A missing file (404/410) raises at once; a server that refuses HEAD (405, 501, ...) is left to
    the download itself.
    """
    try:
        with _open(url, timeout, "HEAD") as r:
            return _int_header(r.headers.get("Content-Length"))
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise
        return None


class _Progress:
    """A one-line progress report on stderr, rewritten at each whole percent (or 10 MiB without a length)."""

    def __init__(self, name: str, total: Optional[int]):
        self.name, self.total, self.shown = name, total, -1

    def update(self, done: int) -> None:
        step = done * 100 // self.total if self.total else done // (10 << 20)
        if step != self.shown:
            self.shown = step
            of = f" of {self.total / 2**20:.1f} MiB ({step}%)" if self.total else " MiB"
            sys.stderr.write(f"\rdownloading {self.name}: {done / 2**20:.1f}{of}")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def transfer(url: str, tmp: Path, dest: Path, timeout: float, progress: bool) -> Tuple[int, str]:
    """Stream ``url`` into ``tmp`` (created here); return ``(bytes, content type)``.

    Stops with :class:`DownloadError` when the body passes the announced length (GET, else HEAD)
    or, without one, :func:`download_max_bytes`, when it ends short of the announced length, and
    when no byte arrives for ``timeout`` seconds.
    """
    head = _announced_size(url, timeout)
    got = 0
    with _open(url, timeout) as r, open(tmp, "xb") as f:
        ctype = r.headers.get("Content-Type") or "none"
        length = _int_header(r.headers.get("Content-Length"))
        limit, which = (length, "Content-Length") if length is not None else (head, "HEAD Content-Length")
        cap = download_max_bytes() if limit is None else None
        bar = _Progress(dest.name, limit) if progress else None
        try:
            while True:
                try:
                    block = r.read1(_CHUNK)
                except TimeoutError:
                    raise DownloadError(
                        f"{url} sent nothing for {timeout:g} s after {got} bytes ({TIMEOUT_VARIABLE}={timeout:g}); "
                        "the partial file was deleted and nothing was cached. " + fetch_hint(url, dest)) from None
                if not block:
                    break
                if limit is not None and got + len(block) > limit:
                    raise DownloadError(
                        f"{url} sent more than the {limit} bytes it announced ({which}): stopped at "
                        f"{got + len(block)} bytes; the partial file was deleted and nothing was cached.")
                if cap is not None and got + len(block) > cap:
                    raise DownloadError(
                        f"{url} announced no length and sent more than {cap} bytes ({MAX_BYTES_VARIABLE}={cap}): "
                        f"stopped at {got + len(block)} bytes; the partial file was deleted and nothing was cached. "
                        f"Raise {MAX_BYTES_VARIABLE} if the file is really that large.")
                f.write(block)
                got += len(block)
                if bar is not None:
                    bar.update(got)
        finally:
            if bar is not None:
                bar.close()
    if limit is not None and got < limit:
        raise DownloadError(f"the transfer of {url} was cut short: {got} of {limit} bytes arrived; "
                            "nothing was cached. Run again, or " + fetch_hint(url, dest))
    return got, ctype


# --------------------------------------------------------------------------- is it a weights file?
def check_whole(path: Path) -> None:
    """Raise :class:`DownloadError` if a zip (``torch.save``) or safetensors file lacks its end."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        if head[:4] == b"PK\x03\x04":
            if not zipfile.is_zipfile(f):
                raise DownloadError(f"a zip archive of {size} bytes without its closing record")
            return
        if len(head) < 9 or head[8:9] != b"{":
            return  # another format (a legacy pickle): nothing to check here
        n = int.from_bytes(head[:8], "little")
        if 8 + n > size:
            raise DownloadError(f"a safetensors file of {size} bytes whose header alone needs {8 + n}")
        f.seek(8)
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return  # not safetensors after all
    if not isinstance(header, dict):
        return
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)]
    need = 8 + n + (max(ends) if ends else 0)
    if size < need:
        raise DownloadError(f"a safetensors file of {size} bytes, {need} expected")


def _parse_pickle(stream) -> List:
    """The arguments of one pickle's opcodes, read up to its STOP without running anything.

    Raises ValueError when the bytes are not a pickle."""
    return [arg for _, arg, _ in pickletools.genops(stream)]


def _not_weights(path: Path) -> Optional[str]:
    """Why ``path`` is not a weights file, or None when it parses as one: a safetensors file (a JSON
    header of tensors), a ``torch.save`` zip (a ``data.pkl`` pickle) or a legacy ``torch.save``
    pickle (torch's magic number first). Pickles are parsed opcode by opcode, never loaded."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:4] == b"PK\x03\x04":
            try:
                with zipfile.ZipFile(path) as z:
                    pkl = [n for n in z.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                    if not pkl:
                        return "a zip archive without the data.pkl of a torch.save file"
                    with z.open(pkl[0]) as p:
                        _parse_pickle(p)
            except (ValueError, zipfile.BadZipFile, EOFError) as e:
                return f"a zip archive whose data.pkl does not parse ({e})"
            return None
        if len(head) >= 9 and head[8:9] == b"{":
            n = int.from_bytes(head[:8], "little")
            f.seek(8)
            try:
                header = json.loads(f.read(min(n, 100 << 20)))
            except ValueError as e:
                return f"a file with no safetensors header ({e})"
            return None if isinstance(header, dict) else "a file with no safetensors header"
        if head[:1] == b"\x80":
            f.seek(0)
            try:
                first = _parse_pickle(f)
            except ValueError as e:
                return f"a file that does not parse as a pickle ({e})"
            if torch.serialization.MAGIC_NUMBER in first:
                return None
            return "a pickle without torch's magic number (not a torch.save file)"
    return "neither a safetensors, a torch.save zip nor a pickle file"


def _describe_start(head: bytes) -> str:
    """What the first bytes of a file look like: ``'an HTML page (b"<!DOCTYPE html>...")'``."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head:
        kind = "an empty file"
    elif text.startswith((b"<!doctype html", b"<html")) or b"<html" in text or b"<head" in text:
        kind = "an HTML page"
    elif text.startswith(b"<"):
        kind = "an XML document"
    elif text[:1] in (b"{", b"["):
        kind = "JSON text"
    else:
        try:
            kind = "text" if head.decode("utf-8").isprintable() or b"\n" in head else "binary data"
        except UnicodeDecodeError:
            kind = "binary data"
    return f"{kind} ({head[:40]!r}{'...' if len(head) > 40 else ''})"


def check_download(url: str, tmp: Path, dest: Path, ctype: str) -> None:
    """Raise :class:`DownloadError` unless ``tmp`` is a whole weights file."""
    try:
        check_whole(tmp)
    except DownloadError as e:
        raise DownloadError(f"the transfer of {url} was cut short ({e}); nothing was cached. "
                            + fetch_hint(url, dest)) from None
    why = _not_weights(tmp)
    if why is not None:
        with open(tmp, "rb") as f:
            head = f.read(512)
        raise DownloadError(
            f"{url} did not send a weights file: the server answered with Content-Type {ctype!r} and "
            f"{tmp.stat().st_size} bytes that start like {_describe_start(head)}: {why}. The file was deleted "
            "and nothing was cached (a login, error or landing page instead of the file? check the URL).")
