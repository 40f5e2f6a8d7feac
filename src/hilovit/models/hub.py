"""Fetching weight files: URLs into the torch hub cache, ``hf-hub:`` repositories, local paths.

Downloads land in ``$TORCH_HOME/hub/checkpoints`` (:func:`torch.hub.get_dir`), each under a name
keyed by its URL: ``<stem>-<8 hex digits of sha256(url)><ext>`` (``litv2_s-1b2c3d4e.pth``), so
two URLs ending in the same file name never share a cache entry. A file reaches that name only
once it is whole and is a weights file:

* it is streamed over ``urllib`` (:mod:`hilovit.models._transfer`) into a
  ``.<name>.<host>.<pid>-<random>.partial`` file, with a read
  timeout (``HILOVIT_DOWNLOAD_TIMEOUT`` seconds, default 30: a server that stops sending is an
  error, not a hang) and a size bound (the length the server announced, on the GET or a HEAD
  request; without one, ``HILOVIT_DOWNLOAD_MAX_BYTES``, default 4 GiB);
* redirects are followed only to ``http(s)://`` URLs; a server that refuses HEAD still works;
* a body shorter than announced, a zip or safetensors file without its end, and anything that is
  not a safetensors, ``torch.save`` zip or pickle file (an HTML page served with status 200) is
  deleted with an error naming the URL, the content type and what the bytes look like;
* a SHA-256 given by the caller (``sha256=``, ``pretrained_cfg_overlay={'sha256': ...}``) must match;
* the file's SHA-256 is recorded beside it (``<name>.sha256``, in ``sha256sum`` format) and then
  the partial file is renamed. Partial files whose process is gone (a kill) or untouched for
  twice the timeout are removed when the next download into the cache starts.

A cached file is used without the network, after its SHA-256 is compared with the recorded one
(and with the caller's): a file changed or cut short on disk is an error naming both hashes and
the ``rm`` command that clears it (a file put there by hand has no record: only the caller's
hash is checked).
``HILOVIT_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) turns every download off; the error then names the
URL and the ``curl`` command that fetches it by hand.

``hf-hub:org/name`` sources need the optional ``huggingface_hub`` package
(``pip install 'hilovit[hub]'``), imported only for them. ``local-dir:PATH`` (timm's prefix) is the
same repository layout on disk (``model.safetensors`` or ``pytorch_model.bin``, ``config.json``).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shlex
import socket
import sys
import time
import urllib.error
from pathlib import Path
from typing import Dict, Optional, Tuple, Union
from urllib.parse import unquote, urlparse

import torch

from hilovit.models._transfer import (
    TIMEOUT_VARIABLE,
    DownloadError,
    check_download,
    download_max_bytes,
    download_timeout,
    fetch_hint,
    partial_path,
    sweep_partials,
    transfer,
)

__all__ = [
    "DownloadError",
    "HF_HUB_PREFIX",
    "LOCAL_DIR_PREFIX",
    "cache_dir",
    "cached_path",
    "download",
    "download_max_bytes",
    "download_timeout",
    "file_sha256",
    "fetch",
    "hf_hub_file",
    "is_url",
    "local_dir_file",
    "offline_reason",
    "sweep_partials",
    "verify_cached",
]

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
OFFLINE_VARIABLES = ("HILOVIT_OFFLINE", "HF_HUB_OFFLINE")
# The files a Hugging Face model repository keeps its weights in, in the order they are tried.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_CHUNK = 1 << 20


def _true(value: Optional[str]) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def offline_reason() -> Optional[str]:
    """``'HILOVIT_OFFLINE=1'`` (or the ``HF_HUB_OFFLINE`` setting) when downloads are off, else None."""
    for name in OFFLINE_VARIABLES:
        if _true(os.environ.get(name)):
            return f"{name}={os.environ[name]}"
    return None


def is_url(text: str) -> bool:
    """Whether ``text`` is an ``http://`` or ``https://`` URL."""
    return isinstance(text, str) and text.split("://", 1)[0].lower() in ("http", "https") and "://" in text


def cache_dir() -> Path:
    """Where downloaded weights live: ``<torch.hub.get_dir()>/checkpoints`` (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _url_file_name(url: str) -> str:
    name = os.path.basename(unquote(urlparse(url).path))
    if not name:
        raise ValueError(f"url {url!r} names no file (its path ends with '/'); pass file_name=")
    return name


def cached_path(url: str, file_name: Optional[str] = None) -> Path:
    """The cache file ``url`` is (or would be) stored in.

    ``<stem>-<h><ext>`` in :func:`cache_dir`, where ``<stem><ext>`` is ``file_name`` (default: the
    URL's last path part) and ``<h>`` the first 8 hex digits of the SHA-256 of the whole URL.
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"url must be a non-empty str, got {url!r}")
    name = file_name or _url_file_name(url)
    if not isinstance(name, str) or os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise ValueError(f"file_name must be a plain file name, got {name!r}")
    stem, ext = os.path.splitext(name)
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:8]
    return cache_dir() / f"{stem}-{key}{ext}"


_DIGESTS: Dict[Tuple, str] = {}


def file_sha256(path: Union[str, os.PathLike], chunk: int = _CHUNK) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks.

    The result is remembered for a file untouched for 2 s (same inode, size and times), so a
    cached file is hashed once per process however often it is checked and loaded.
    """
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    digest = h.hexdigest()
    if time.time() - st.st_mtime > 2.0:  # a younger file may still change within its time stamp's tick
        if len(_DIGESTS) > 256:
            _DIGESTS.clear()
        _DIGESTS[key] = digest
    return digest


# --------------------------------------------------------------------------- the cache's hash records
def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_record(path: Path, digest: str) -> None:
    """Write ``<path>.sha256`` (``sha256sum`` format) through a temporary file and a rename."""
    from hilovit.io import atomic_write

    with atomic_write(_record_path(path), "w") as f:
        f.write(f"{digest}  {path.name}\n")


def _clear_hint(path: Path) -> str:
    return (f"Delete it and run again to download it anew:\n    rm -f {shlex.quote(str(path))} "
            f"{shlex.quote(str(_record_path(path)))}")


def verify_cached(path: Union[str, os.PathLike], sha256: Optional[str] = None) -> str:
    """Check a cached file against the SHA-256 recorded beside it at download and, if given,
    ``sha256``; return its SHA-256. A file put in the cache by hand has no record: only ``sha256``
    is checked.

    Raises:
        DownloadError: the file no longer matches its record (changed or cut short on disk), the
            record is unreadable, or the file's hash is not ``sha256``; the message names both
            hashes and the command that deletes the file.
    """
    path = Path(path)
    record = _record_path(path)
    digest = file_sha256(path)
    if record.is_file():
        text = record.read_text(encoding="utf-8", errors="replace").split()
        recorded = text[0].lower() if text else ""
        if not re.fullmatch(r"[0-9a-f]{64}", recorded):
            raise DownloadError(f"the hash record {record} of the cached file {path} is unreadable "
                                f"({recorded[:80]!r}). " + _clear_hint(path))
        if recorded != digest:
            raise DownloadError(
                f"the cached file {path} changed since it was downloaded (or was cut short on disk): SHA-256 "
                f"recorded at download {recorded}, now {digest}. " + _clear_hint(path))
    if sha256 is not None and digest != sha256.lower():
        raise DownloadError(f"SHA-256 mismatch for the cached file {path}: expected {sha256.lower()}, got {digest}. "
                            + _clear_hint(path))
    return digest


def download(
    url: str,
    file_name: Optional[str] = None,
    sha256: Optional[str] = None,
    progress: Optional[bool] = None,
) -> Path:
    """Return the cached copy of ``url``, downloading it first if needed (see the module's notes).

    Args:
        url: an ``http(s)://`` URL.
        file_name: the name in the cache before the URL's hash is added (default: the URL's last
            path part); see :func:`cached_path`.
        sha256: the expected hex SHA-256, checked after a download and on every use of the cached file.
        progress: a progress line on stderr (default: when stderr is a terminal).

    Raises:
        DownloadError: downloads are off and the file is not cached; the server is unreachable,
            answers with an HTTP error, redirects off http(s), stalls for the timeout, sends less
            or more than announced, or sends something that is not a weights file; a hash does
            not match. Nothing is left under the cache name in any of these cases.
        ValueError: a bad ``url``, ``sha256`` or ``HILOVIT_DOWNLOAD_*`` setting.
    """
    if not is_url(url):
        raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
    if sha256 is not None and (not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", sha256)):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    dest = cached_path(url, file_name)
    if dest.is_file():
        verify_cached(dest, sha256)
        return dest
    reason = offline_reason()
    if reason is not None:
        raise DownloadError(f"{url} is not in the cache ({dest}) and downloads are off ({reason}). "
                            + fetch_hint(url, dest))
    timeout = download_timeout()
    download_max_bytes()  # a bad setting fails before any transfer
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_partials(dest.parent, timeout)
    tmp = partial_path(dest)
    try:
        try:
            _, ctype = transfer(url, tmp, dest, timeout, sys.stderr.isatty() if progress is None else progress)
        except urllib.error.HTTPError as e:
            why = "the server has no such file" if e.code in (404, 410) else "the server refused it"
            raise DownloadError(f"HTTP {e.code} ({e.reason}) for {url}: {why}. " + fetch_hint(url, dest)) from None
        except (TimeoutError, socket.timeout) as e:
            raise DownloadError(f"{url} did not answer within {timeout:g} s ({TIMEOUT_VARIABLE}={timeout:g}): {e}. "
                                + fetch_hint(url, dest)) from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError) as e:
            why = getattr(e, "reason", None) or e
            if isinstance(why, (TimeoutError, socket.timeout)):
                why = f"no answer within {timeout:g} s ({TIMEOUT_VARIABLE}={timeout:g})"
            raise DownloadError(f"cannot download {url}: {why}. " + fetch_hint(url, dest)) from None
        check_download(url, tmp, dest, ctype)
        digest = file_sha256(tmp)
        if sha256 is not None and digest != sha256.lower():
            raise DownloadError(
                f"SHA-256 mismatch for {url}: expected {sha256.lower()}, got {digest}. The downloaded file "
                f"was deleted and nothing was cached (the published file changed, or the transfer was corrupted).")
        _write_record(dest, digest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _split_hf(source: str) -> Tuple[str, Optional[str]]:
    spec = source[len(HF_HUB_PREFIX):] if source.startswith(HF_HUB_PREFIX) else source
    repo_id, _, revision = spec.partition("@")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"a Hugging Face source must read 'hf-hub:org/name' (optionally '@revision'), got {source!r}")
    return repo_id, (revision or None)


def _hf_errors():
    try:
        from huggingface_hub import errors as mod  # huggingface_hub >= 0.23
    except ImportError:  # pragma: no cover - older releases
        from huggingface_hub import utils as mod
    return getattr(mod, "EntryNotFoundError", ()), getattr(mod, "LocalEntryNotFoundError", ())


def hf_hub_file(source: str, names: Tuple[str, ...] = HF_WEIGHT_FILES) -> Path:
    """Download (or find in the Hugging Face cache) a file of ``hf-hub:org/name[@revision]``: the
    first of ``names`` the repository holds (default: the weights, ``model.safetensors`` then
    ``pytorch_model.bin``). ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HOME`` are read at call time;
    offline (``HF_HUB_OFFLINE=1`` or ``HILOVIT_OFFLINE=1``) only the cache is looked at.

    Raises:
        ImportError: huggingface_hub is not installed (the message names ``pip install 'hilovit[hub]'``).
        DownloadError: the repository holds none of ``names``, or it cannot be fetched.
    """
    repo_id, revision = _split_hf(source)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError(
            f"{source!r} needs the huggingface_hub package: pip install 'hilovit[hub]' "
            "(or pip install huggingface_hub)"
        ) from None
    missing_cls, local_missing_cls = _hf_errors()
    endpoint = os.environ.get("HF_ENDPOINT") or None
    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )
    reason = offline_reason()
    base = (endpoint or "https://huggingface.co").rstrip("/")
    url = f"{base}/{repo_id}/resolve/{revision or 'main'}/{names[0]}"
    hint = (f"Fetch it by hand:\n    curl -fL --create-dirs -o {names[0]} {url}\n"
            + (f"and pass the file: pretrained='path/to/{names[0]}'" if names == HF_WEIGHT_FILES
               else f"into a folder and pass it as '{LOCAL_DIR_PREFIX}path/to/folder'"))
    tried = []
    for name in names:
        try:
            path = hf_hub_download(repo_id, name, revision=revision, endpoint=endpoint, cache_dir=cache,
                                   local_files_only=reason is not None)
        except Exception as e:  # noqa: BLE001 - sorted below, re-raised with the source named
            status = getattr(getattr(e, "response", None), "status_code", None)
            if local_missing_cls and isinstance(e, local_missing_cls):
                tried.append(f"{name}: not in the local cache")
                if reason is not None:
                    continue
                raise DownloadError(f"cannot fetch {name} of {HF_HUB_PREFIX}{repo_id}: {e}. " + hint) from None
            if (missing_cls and isinstance(e, missing_cls)) or status == 404:
                tried.append(f"{name}: not in the repository")
                continue
            raise DownloadError(f"cannot fetch {name} of {HF_HUB_PREFIX}{repo_id}: {e}. " + hint) from None
        return Path(path)
    if reason is not None:
        raise DownloadError(f"{HF_HUB_PREFIX}{repo_id} is not in the Hugging Face cache and downloads are off "
                            f"({reason}). " + hint)
    what = "weights file" if names == HF_WEIGHT_FILES else " or ".join(names)
    raise DownloadError(f"{HF_HUB_PREFIX}{repo_id} holds no {what} ({'; '.join(tried)})")


def local_dir_file(source: str, names: Tuple[str, ...] = HF_WEIGHT_FILES) -> Path:
    """The first of ``names`` in the folder of ``local-dir:PATH`` (default: its weights,
    ``model.safetensors`` then ``pytorch_model.bin``).

    Raises:
        FileNotFoundError: no such folder, or it holds none of ``names``.
    """
    folder = Path(source[len(LOCAL_DIR_PREFIX):] if source.startswith(LOCAL_DIR_PREFIX) else source).expanduser()
    if not str(folder) or not folder.is_dir():
        raise FileNotFoundError(f"{source!r}: no folder {str(folder)!r} (expected '{LOCAL_DIR_PREFIX}PATH', a folder "
                                "laid out as a Hugging Face model repository)")
    for name in names:
        if (folder / name).is_file():
            return folder / name
    what = "weights file" if names == HF_WEIGHT_FILES else "file"
    raise FileNotFoundError(f"{source!r}: the folder {str(folder)!r} holds no {what} ({' or '.join(names)})")


def fetch(source: Union[str, os.PathLike], sha256: Optional[str] = None, file_name: Optional[str] = None,
          progress: Optional[bool] = None) -> Path:
    """A local file for ``source``: a path (checked), an ``http(s)://`` URL (:func:`download`) or an
    ``hf-hub:org/name`` repository (:func:`hf_hub_file`) or a ``local-dir:PATH`` folder (:func:`local_dir_file`)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(f"a weights source must be a path, a URL or 'hf-hub:org/name', got {type(source).__name__}")
    if source.startswith(HF_HUB_PREFIX):
        path = hf_hub_file(source)
    elif source.startswith(LOCAL_DIR_PREFIX):
        path = local_dir_file(source)
    elif is_url(source):
        return download(source, file_name=file_name, sha256=sha256, progress=progress)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            raise ValueError(f"weights source {str(path)!r} is a folder; expected a weights file (the one inside it)")
        if not path.is_file():
            raise FileNotFoundError(f"weights file not found: {path}")
    if sha256 is not None:
        digest = file_sha256(path)
        if digest != sha256.lower():
            raise DownloadError(f"SHA-256 mismatch for {path}: expected {sha256.lower()}, got {digest}")
    return path
