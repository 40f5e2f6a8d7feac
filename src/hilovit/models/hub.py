"""Fetching weight files: URLs into the torch hub cache, ``hf-hub:`` repositories, local paths.

Downloads go through :func:`torch.hub.download_url_to_file` into
``$TORCH_HOME/hub/checkpoints`` (:func:`torch.hub.get_dir`). A file reaches its cache name only
once it is whole: it is written under a temporary name, its length is compared with the length
the server announced, a zip or safetensors file is checked for its closing record, a known
SHA-256 is compared, and only then is it renamed. A file already in the cache is used without
touching the network. ``HILOVIT_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) turns every download off;
the error then names the URL and the one command that fetches it by hand.

``hf-hub:org/name`` sources need the optional ``huggingface_hub`` package
(``pip install 'hilovit[hub]'``), imported only for them.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shlex
import sys
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Optional, Tuple, Union
from urllib.parse import unquote, urlparse

import torch

__all__ = [
    "DownloadError",
    "HF_HUB_PREFIX",
    "cache_dir",
    "cached_path",
    "download",
    "file_sha256",
    "fetch",
    "hf_hub_file",
    "is_url",
    "offline_reason",
]

HF_HUB_PREFIX = "hf-hub:"
OFFLINE_VARIABLES = ("HILOVIT_OFFLINE", "HF_HUB_OFFLINE")
# The files a Hugging Face model repository keeps its weights in, in the order they are tried.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HEAD_TIMEOUT_S = 30.0


class DownloadError(RuntimeError):
    """Weights could not be fetched (offline, unreachable, missing, cut short or corrupted).

    The message names the source and, where a by-hand fetch can help, the command for it.
    """


def _true(value: Optional[str]) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes", "on")


def offline_reason() -> Optional[str]:
    """``'HILOVIT_OFFLINE=1'`` (or the ``HF_HUB_OFFLINE`` setting) when downloads are off, else None."""
    for name in OFFLINE_VARIABLES:
        if _true(os.environ.get(name)):
            return f"{name}={os.environ[name]}"
    return None


def is_url(text: str) -> bool:
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
    """The cache file ``url`` is (or would be) stored in: ``file_name`` or the URL's last path part."""
    name = file_name or _url_file_name(url)
    if os.sep in name or (os.altsep and os.altsep in name) or name in (".", ".."):
        raise ValueError(f"file_name must be a plain file name, got {name!r}")
    return cache_dir() / name


def file_sha256(path: Union[str, os.PathLike], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _fetch_hint(url: str, dest: Path) -> str:
    return (
        f"Fetch it by hand:\n    curl -fL --create-dirs -o {shlex.quote(str(dest))} {shlex.quote(url)}\n"
        f"then run again (the cached file is used), or pass the file itself: pretrained={str(dest)!r}"
    )


def _announced_size(url: str) -> Optional[int]:
    """The Content-Length a HEAD request announces (None when the server does not say).

    A missing file (404/410) raises :class:`DownloadError` at once; other refusals of HEAD are left
    to the download itself.
    """
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "hilovit"})
    try:
        with urllib.request.urlopen(req, timeout=_HEAD_TIMEOUT_S) as r:
            length = r.headers.get("Content-Length")
    except urllib.error.HTTPError as e:
        if e.code in (404, 410):
            raise
        return None
    try:
        return int(length) if length is not None else None
    except ValueError:
        return None


def _check_whole(path: Path) -> None:
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


def download(
    url: str,
    file_name: Optional[str] = None,
    sha256: Optional[str] = None,
    progress: Optional[bool] = None,
) -> Path:
    """Return the cached copy of ``url``, downloading it first if needed.

    Args:
        url: an ``http(s)://`` URL.
        file_name: the name in the cache (default: the URL's last path part).
        sha256: the expected hex SHA-256; a mismatch deletes the download and raises.
        progress: a progress bar on stderr (default: when stderr is a terminal).

    Raises:
        DownloadError: downloads are off and the file is not cached, the server is unreachable,
            answers with an HTTP error, or the transfer is cut short or corrupted. Nothing is
            left under the cache name in any of these cases.
    """
    if not is_url(url):
        raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
    if sha256 is not None and (not isinstance(sha256, str) or len(sha256) != 64):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    dest = cached_path(url, file_name)
    if dest.is_file():
        return dest
    reason = offline_reason()
    if reason is not None:
        raise DownloadError(f"{url} is not in the cache ({dest}) and downloads are off ({reason}). "
                            + _fetch_hint(url, dest))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.download")
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        expected = _announced_size(url)
        torch.hub.download_url_to_file(url, str(tmp), progress=progress)
        size = tmp.stat().st_size
        if expected is not None and size != expected:
            raise DownloadError(f"the transfer of {url} was cut short: {size} of {expected} bytes arrived; "
                                "nothing was cached. Run again, or " + _fetch_hint(url, dest))
        try:
            _check_whole(tmp)
        except DownloadError as e:
            raise DownloadError(f"the transfer of {url} was cut short ({e}); nothing was cached. "
                                + _fetch_hint(url, dest)) from None
        if sha256 is not None:
            digest = file_sha256(tmp)
            if digest != sha256.lower():
                raise DownloadError(
                    f"SHA-256 mismatch for {url}: expected {sha256.lower()}, got {digest}. The downloaded file "
                    f"was deleted and nothing was cached (the published file changed, or the transfer was corrupted)."
                )
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"HTTP {e.code} ({e.reason}) for {url}: the server has no such file. "
                            + _fetch_hint(url, dest)) from None
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as e:
        why = getattr(e, "reason", None) or e
        raise DownloadError(f"cannot download {url}: {why}. " + _fetch_hint(url, dest)) from None
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


def hf_hub_file(source: str) -> Path:
    """Download (or find in the Hugging Face cache) the weights of ``hf-hub:org/name[@revision]``.

    Tries ``model.safetensors`` then ``pytorch_model.bin``. ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and
    ``HF_HOME`` are read at call time; offline (``HF_HUB_OFFLINE=1`` or ``HILOVIT_OFFLINE=1``) only
    the cache is looked at.
    """
    repo_id, revision = _split_hf(source)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError(
            f"pretrained={source!r} needs the huggingface_hub package: pip install 'hilovit[hub]' "
            "(or pip install huggingface_hub)"
        ) from None
    missing_cls, local_missing_cls = _hf_errors()
    endpoint = os.environ.get("HF_ENDPOINT") or None
    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )
    reason = offline_reason()
    base = (endpoint or "https://huggingface.co").rstrip("/")
    url = f"{base}/{repo_id}/resolve/{revision or 'main'}/{HF_WEIGHT_FILES[0]}"
    hint = (f"Fetch it by hand:\n    curl -fL --create-dirs -o {HF_WEIGHT_FILES[0]} {url}\n"
            f"and pass the file: pretrained='path/to/{HF_WEIGHT_FILES[0]}'")
    tried = []
    for name in HF_WEIGHT_FILES:
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
    raise DownloadError(f"{HF_HUB_PREFIX}{repo_id} holds no weights file ({'; '.join(tried)})")


def fetch(source: Union[str, os.PathLike], sha256: Optional[str] = None, file_name: Optional[str] = None,
          progress: Optional[bool] = None) -> Path:
    """A local file for ``source``: a path (checked), an ``http(s)://`` URL (:func:`download`) or an
    ``hf-hub:org/name`` repository (:func:`hf_hub_file`)."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise TypeError(f"a weights source must be a path, a URL or 'hf-hub:org/name', got {type(source).__name__}")
    if source.startswith(HF_HUB_PREFIX):
        path = hf_hub_file(source)
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
