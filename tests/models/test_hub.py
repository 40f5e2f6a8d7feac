"""Downloads under faults: each against a local HTTP server on 127.0.0.1 (tests/file_server.py),
bounded in time (a stall ends when the server stops, at most 10 s) and bytes (64 MiB at most), with
``TORCH_HOME`` in ``tmp_path`` and a download timeout of 1 s where a stall is expected."""

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from file_server import FileServer
from hilovit.models import _transfer
from hilovit.models.hub import DownloadError, cache_dir, cached_path, download, sweep_partials

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    for var in ("HILOVIT_OFFLINE", "HF_HUB_OFFLINE", "HILOVIT_DOWNLOAD_TIMEOUT", "HILOVIT_DOWNLOAD_MAX_BYTES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture
def weights(tmp_path):
    """A small ``torch.save`` checkpoint as the release files are: ``{'model': state_dict}``."""
    torch.manual_seed(0)
    torch.save({"model": {"w": torch.randn(64, 32), "b": torch.randn(64)}}, tmp_path / "w.pth")
    return (tmp_path / "w.pth").read_bytes()


def _cache_files():
    d = cache_dir()
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _assert_nothing_cached():
    assert _cache_files() == [], _cache_files()  # neither the file nor a partial one


# --------------------------------------------------------------------------- stalls, sizes
def test_a_server_that_stalls_after_the_headers_is_a_timeout_error(server, weights, monkeypatch):
    monkeypatch.setenv("HILOVIT_DOWNLOAD_TIMEOUT", "1")
    server.files["/w.pth"], server.mode["/w.pth"] = weights, "stall"
    url = server.url("/w.pth")
    with pytest.raises(DownloadError, match="sent nothing for 1 s") as err:
        download(url)
    msg = str(err.value)
    assert url in msg and "HILOVIT_DOWNLOAD_TIMEOUT=1" in msg and f"after {len(weights) // 2} bytes" in msg
    _assert_nothing_cached()


def test_an_endless_body_stops_at_the_announced_length(server, monkeypatch):
    server.mode["/w.pth"] = "endless"  # HEAD: 10 bytes; GET: no length, bytes without end
    url = server.url("/w.pth")
    with pytest.raises(DownloadError, match=r"more than the 10 bytes it announced \(HEAD Content-Length\)") as err:
        download(url)
    got = int(str(err.value).split("stopped at ")[1].split(" bytes")[0])
    assert 10 < got <= 1 << 20  # one read past the announced length, never more
    assert url in str(err.value)
    _assert_nothing_cached()


def test_without_an_announced_length_a_cap_applies(server, weights, monkeypatch):
    server.files["/w.pth"], server.mode["/w.pth"] = weights, "nolength"
    url = server.url("/w.pth")
    monkeypatch.setenv("HILOVIT_DOWNLOAD_MAX_BYTES", "1000")
    with pytest.raises(DownloadError, match=r"announced no length and sent more than 1000 bytes") as err:
        download(url)
    assert "HILOVIT_DOWNLOAD_MAX_BYTES=1000" in str(err.value) and len(weights) > 1000
    _assert_nothing_cached()
    monkeypatch.delenv("HILOVIT_DOWNLOAD_MAX_BYTES")  # the default cap: the whole file comes
    assert download(url).read_bytes() == weights


@pytest.mark.parametrize("var, value", [("HILOVIT_DOWNLOAD_TIMEOUT", "soon"), ("HILOVIT_DOWNLOAD_TIMEOUT", "0"),
                                        ("HILOVIT_DOWNLOAD_MAX_BYTES", "-5"), ("HILOVIT_DOWNLOAD_MAX_BYTES", "1e9")])
def test_bad_settings_are_named(server, weights, monkeypatch, var, value):
    server.files["/w.pth"] = weights
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=f"{var}='{value}': expected a positive"):
        download(server.url("/w.pth"))
    assert server.requests == []


# --------------------------------------------------------------------------- HEAD, redirects
@pytest.mark.parametrize("mode", ["nohead", "nohead-501"])
def test_a_server_that_refuses_head_still_serves_the_file(server, weights, mode):
    server.files["/w.pth"], server.mode["/w.pth"] = weights, mode
    path = download(server.url("/w.pth"))
    assert path.read_bytes() == weights and [m for m, _ in server.requests] == ["HEAD", "GET"]


def test_redirects_are_followed_on_http_only(server, weights):
    server.files["/real/w.pth"] = weights
    server.mode["/moved/w.pth"], server.redirects["/moved/w.pth"] = "redirect", "/real/w.pth"
    url = server.url("/moved/w.pth")
    assert download(url).read_bytes() == weights and cached_path(url).is_file()
    for target in ("file:///etc/passwd", "ftp://127.0.0.1/w.pth"):
        path = f"/to-{target.split(':')[0]}/w.pth"
        server.mode[path], server.redirects[path] = "redirect", target
        with pytest.raises(DownloadError, match="only http:// and https:// redirects are followed") as err:
            download(server.url(path))
        assert repr(target) in str(err.value) and server.url(path) in str(err.value)
        assert not cached_path(server.url(path)).exists()


# --------------------------------------------------------------------------- what arrived
def test_an_html_page_served_with_200_is_not_cached(server):
    page = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>log in first</body></html>\n"
    server.files["/w.pth"], server.content_type["/w.pth"] = page, "text/html; charset=utf-8"
    url = server.url("/w.pth")
    with pytest.raises(DownloadError, match="did not send a weights file") as err:
        download(url)
    msg = str(err.value)
    assert url in msg and "'text/html; charset=utf-8'" in msg and "an HTML page" in msg and "<!DOCTYPE html>" in msg
    _assert_nothing_cached()


@pytest.mark.parametrize("body, kind", [
    (b'{"error": "rate limited"}', "JSON text"),
    (b"Not Found\n", "text"),
    (bytes(range(256)) * 4, "binary data"),
    (pickle.dumps({"model": [1, 2, 3]}, protocol=2), "binary data"),  # a pickle, but not torch.save's
])
def test_other_bodies_that_are_not_weights_are_named(server, body, kind):
    server.files["/w.bin"] = body
    with pytest.raises(DownloadError, match=f"start like {kind} ") as err:
        download(server.url("/w.bin"))
    assert "'application/octet-stream'" in str(err.value)
    _assert_nothing_cached()


def test_weights_formats_are_recognised_without_loading(tmp_path):
    sd = {"a": torch.randn(5, 3), "b": torch.arange(4)}
    torch.save({"model": sd}, tmp_path / "zip.pth")
    torch.save({"model": sd}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(sd, str(tmp_path / "w.safetensors"))
    for name in ("zip.pth", "legacy.pth", "w.safetensors"):
        assert _transfer._not_weights(tmp_path / name) is None, name
    data = (tmp_path / "zip.pth").read_bytes()
    (tmp_path / "html").write_bytes(b"<html></html>")
    (tmp_path / "json").write_bytes(json.dumps({"a": 1}).encode())
    (tmp_path / "pickle").write_bytes(pickle.dumps([1, 2], protocol=2))
    (tmp_path / "other.zip").write_bytes(data.replace(b"data.pkl", b"data.txt"))
    for name, why in (("html", "neither"), ("json", "neither"), ("pickle", "magic number"),
                      ("other.zip", "without the data.pkl")):
        assert why in _transfer._not_weights(tmp_path / name), name


# --------------------------------------------------------------------------- partial files
def _partial(folder: Path, host: str, pid: int, age_s: float = 0.0) -> Path:
    p = folder / f".w-0123abcd.pth.{host}.{pid}-{os.urandom(4).hex()}.partial"
    p.write_bytes(b"half")
    if age_s:
        t = time.time() - age_s
        os.utime(p, (t, t))
    return p


def test_sweep_removes_partials_of_dead_writers_and_stale_ones(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    here, me = _transfer._HOST, os.getpid()
    keep = [_partial(tmp_path, here, me), _partial(tmp_path, "elsewhere", dead), tmp_path / "w-0123abcd.pth",
            tmp_path / ".w.pth.tmp-1"]
    for p in keep[2:]:
        p.write_bytes(b"x")
    gone = [_partial(tmp_path, here, dead), _partial(tmp_path, here, me, age_s=30),
            _partial(tmp_path, "elsewhere", 12345, age_s=30)]
    removed = sweep_partials(tmp_path, timeout=10)  # stale: untouched for over 2 x 10 s
    assert sorted(removed) == sorted(gone)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)


def test_a_download_killed_by_sigterm_leaves_a_partial_file_that_the_next_download_sweeps(server, weights, tmp_path):
    server.files["/slow.pth"], server.mode["/slow.pth"] = weights, "stall"
    server.files["/w.pth"] = weights
    env = dict(os.environ, PYTHONPATH=str(SRC), TORCH_HOME=str(tmp_path / "torch"), HILOVIT_DOWNLOAD_TIMEOUT="20")
    code = f"from hilovit.models.hub import download; download({server.url('/slow.pth')!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        partials = []
        while not partials and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            partials = [p for p in cache_dir().glob(".*.partial") if p.stat().st_size] if cache_dir().is_dir() else []
        assert partials, proc.communicate(timeout=5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert partials[0].exists() and partials[0].stat().st_size == len(weights) // 2  # what the kill left
    path = download(server.url("/w.pth"))  # the next download into the cache sweeps it
    assert not partials[0].exists() and path.read_bytes() == weights
    assert _cache_files() == sorted([path.name, path.name + ".sha256"])


def test_the_recorded_hash_is_the_files(server, weights):
    url = server.url("/w.pth")
    server.files["/w.pth"] = weights
    path = download(url)
    assert path.name == f"w-{hashlib.sha256(url.encode()).hexdigest()[:8]}.pth"
    record = path.with_name(path.name + ".sha256").read_text().split()
    assert record == [hashlib.sha256(weights).hexdigest(), path.name]
