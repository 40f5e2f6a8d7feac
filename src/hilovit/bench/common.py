"""What every benchmark shares: timing rows side by side, the machine's matmul rate, peak memory,
and writing the results (CSV, Markdown, PNG) with the command that produced them.

Rows are timed **interleaved** (row A, row B, ..., then again) so that a slow moment of a shared
machine hits every row alike, and each row reports the median of its timed runs. Ratios between
rows of one run are the numbers to quote; absolute speeds depend on the machine and its load.
"""

from __future__ import annotations

import contextlib
import csv
import os
import platform
import shlex
import statistics
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "DTYPES",
    "parse_dtype",
    "set_threads",
    "synchronize",
    "matmul_rate",
    "interleaved_timings",
    "peak_memory_bytes",
    "machine_info",
    "command_line",
    "write_table",
    "format_table",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    """``'float32' | 'bfloat16' | 'float16'`` -> dtype, with an error listing the choices."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def set_threads(threads: Optional[int]) -> None:
    """``torch.set_num_threads(threads)`` when given, with a clear error for a non-positive count."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def synchronize(device: torch.device | str) -> None:
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(
    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", n: int = 2048, repeats: int = 7
) -> float:
    """The machine's matrix-multiply rate in GFLOP/s (2 FLOPs per multiply-add), median of ``repeats``.

    Measures ``n x n @ n x n`` in ``dtype`` (bfloat16 and float16 as real low-precision inputs).
    """
    device = torch.device(device)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(2):
        torch.mm(a, b)
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def interleaved_timings(
    fns: Dict[str, Callable[[], Any]],
    repeats: int = 10,
    warmup: int = 2,
    device: torch.device | str = "cpu",
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, List[float]]:
    """Seconds per call of each function, timed in rounds that visit every row once.

    Args:
        fns: row name -> a callable doing one unit of work (e.g. a forward pass of a batch).
        repeats: timed rounds (each row gets ``repeats`` timings).
        warmup: untimed rounds first (allocator, kernel selection, caches).
        progress: called with a short status string after each round.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
        if progress is not None:
            progress(f"round {r + 1}/{warmup + repeats}" + (" (warm-up)" if r < warmup else ""))
    return times


class _StorageTracker(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside the mode that are still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: Dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._seen.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # outputs that share an input's storage (views such as a weight's transpose, in-place
        # results, `.to` of the same dtype) allocate nothing
        given = {
            a.untyped_storage().data_ptr()
            for a in tree_flatten((args, kwargs))[0]
            if isinstance(a, torch.Tensor) and a.device.type == "cpu" and not a.is_mkldnn
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu" and not t.is_mkldnn:
                st = t.untyped_storage()
                key = id(st)
                if key in self._seen or st.nbytes() == 0 or st.data_ptr() in given:
                    continue
                self._seen[key] = st.nbytes()
                self.live += st.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(st, self._free, key)
        return out


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> int:
    """Peak bytes allocated while ``fn()`` runs, beyond what existed before (weights, inputs).

    CUDA: the caching allocator's peak. CPU: the live bytes of tensor storages created by the
    ops of ``fn`` (activations, saved tensors for backward, outputs), tracked op by op; scratch
    memory inside a kernel is not seen.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    tracker = _StorageTracker()
    with tracker:
        result = fn()
    del result
    return int(tracker.peak)


def machine_info(device: torch.device | str = "cpu") -> Dict[str, Any]:
    device = torch.device(device)
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "device": str(device),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def command_line(argv: Optional[Sequence[str]] = None) -> str:
    """The command as typed (``hilovit ...``), for the results' header."""
    argv = list(sys.argv if argv is None else argv)
    prog = "hilovit" if argv and argv[0].endswith(("hilovit", "__main__.py", "-m")) else os.path.basename(argv[0])
    return " ".join([prog] + [shlex.quote(a) for a in argv[1:]])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(rows: Sequence[Dict[str, Any]], columns: Optional[Iterable[str]] = None) -> str:
    """A Markdown table of ``rows`` (list of dicts sharing keys)."""
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns is not None else list(rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"  # noqa: E731
    out = [line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_table(
    rows: Sequence[Dict[str, Any]],
    out_prefix: str | os.PathLike,
    title: str,
    command: str,
    notes: Sequence[str] = (),
    columns: Optional[Iterable[str]] = None,
) -> Dict[str, Path]:
    """Write ``PREFIX.csv`` (all columns, raw numbers) and ``PREFIX.md`` (title, command, notes, table).

    Files are written atomically; the folder is created. Returns ``{'csv': path, 'md': path}``.
    """
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = prefix.with_suffix(".csv"), prefix.with_suffix(".md")
    keys: List[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = csv_path.with_name(f".{csv_path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, csv_path)
    md = [f"# {title}", "", "Command:", "", "```", command, "```", ""]
    md += [f"- {n}" for n in notes]
    md += ["", format_table(rows, columns), ""]
    _atomic_write(md_path, "\n".join(md))
    return {"csv": csv_path, "md": md_path}
