"""`hilovit bench seg`: a segmentation model against a baseline at dense-prediction sizes.

The default pair is ``semfpn_litv2_s`` against ``semfpn_swin_t`` (150 classes, random weights,
eval mode, ``torch.inference_mode``, batch 1) at 512 x 512, 1024 x 1024 and 2048 x 512 (the
ADE20K test scale). For each size and dtype: milliseconds per image of each model, the speed
ratio (baseline time / model time: above 1 means the model is faster), the growth of each
model's time from the first size relative to the growth of the pixels, the official FLOP count
(:func:`hilovit.models.segmentation_flops.official_flops`, LITv2 backbones only), the multiply-adds
actually executed (:func:`hilovit.flops.count_flops`) and the share of the machine's float32
matmul rate, the matmul timed in the same interleaved rounds as the models.

bfloat16 rows are timed only where the device computes bfloat16 natively (CUDA, or a CPU whose
oneDNN has bfloat16 kernels); elsewhere the row says it was skipped and why, since emulated
bfloat16 is slower than float32 and its time says nothing about the models.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from hilovit.bench.common import (
    command_line,
    interleaved_timings,
    machine_info,
    parse_dtype,
    peak_memory_bytes,
    set_threads,
    synchronize,
    write_table,
)
from hilovit.runtime import autocast_context

__all__ = ["DEFAULT_PAIR", "DEFAULT_SIZES", "COLUMNS", "parse_size", "bf16_skip_reason", "run_seg_benchmark",
           "plot_seg_benchmark"]

DEFAULT_PAIR = ("semfpn_litv2_s", "semfpn_swin_t")
DEFAULT_SIZES: Tuple[Tuple[int, int], ...] = ((512, 512), (1024, 1024), (512, 2048))  # (H, W); 2048x512 is W x H
QUICK_SIZES: Tuple[Tuple[int, int], ...] = ((32, 32), (64, 64))
COLUMNS = [
    "img_size", "dtype", "status", "model", "baseline", "model_ms", "baseline_ms", "speed_ratio",
    "pixel_growth", "model_time_growth", "baseline_time_growth", "model_growth_per_pixel",
    "baseline_growth_per_pixel", "model_official_gflops", "model_counted_gmacs", "baseline_counted_gmacs",
    "model_share_of_fp32_matmul", "baseline_share_of_fp32_matmul", "model_peak_memory_MB",
    "baseline_peak_memory_MB", "fp32_matmul_gflops",
]
SizeArg = Union[int, Tuple[int, int], str]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_size(size: SizeArg) -> Tuple[int, int]:
    """``512``, ``(2048, 512)`` or ``'2048x512'`` (width x height, as the ADE20K test scale is
    written) -> ``(H, W)``; a clear error for anything else."""
    if isinstance(size, str):
        parts = size.lower().split("x")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) == 1:
            size = nums[0]
        elif len(nums) == 2:
            size = (nums[1], nums[0])  # WxH -> (H, W)
        else:
            raise ValueError(f"size: expected N or WxH (e.g. 512 or 2048x512), got {size!r}")
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if not (isinstance(size, tuple) and len(size) == 2 and all(isinstance(s, int) for s in size)):
        raise ValueError(f"size: expected N, (H, W) or 'WxH', got {size!r}")
    if min(size) < 1:
        raise ValueError(f"size: sides must be positive, got {size!r}")
    return size


def _size_label(hw: Tuple[int, int]) -> str:
    return f"{hw[1]}x{hw[0]}"  # W x H, as mmseg writes image scales


def bf16_skip_reason(device: torch.device) -> Optional[str]:
    """``None`` where bfloat16 is native on ``device``, else why its timing would be meaningless."""
    if device.type == "cuda":
        return None
    from hilovit.runtime import native_bf16

    if native_bf16(device):
        return None
    return ("skipped: this CPU has no native bfloat16 (oneDNN reports no AVX512-BF16/AMX); emulated bfloat16 "
            "is slower than float32 and would time the emulation, not the models")


class _Dummy(torch.nn.Module):
    """A two-stage detector's ``forward_dummy`` as a module (counted and timed as the network)."""

    def __init__(self, detector: torch.nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor):
        return self.detector.forward_dummy(x)


def _network(model: torch.nn.Module) -> torch.nn.Module:
    """What is timed: the model's call (a segmenter's logits, a one-stage detector's head maps), or for a
    two-stage detector its ``forward_dummy`` (1000 RoIs through the box head, 100 through the mask head, as
    mmdet's benchmarks run it)."""
    return _Dummy(model) if hasattr(model, "forward_dummy") else model


def _official_gflops(model: torch.nn.Module, hw: Tuple[int, int]) -> float:
    try:
        return model.flops(hw) / 1e9
    except (ValueError, TypeError, AttributeError):
        return float("nan")  # the official get_flops formula exists for LITv2 backbones only


def run_seg_benchmark(
    model: str = DEFAULT_PAIR[0],
    baseline: str = DEFAULT_PAIR[1],
    sizes: Sequence[SizeArg] = DEFAULT_SIZES,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    num_classes: int = 150,
    repeats: int = 5,
    warmup: int = 1,
    threads: Optional[int] = None,
    device: str = "cpu",
    output: Optional[str] = "runs/bench/seg",
    plot: bool = True,
    memory: bool = True,
    quiet: bool = False,
    matmul_n: int = 2048,
    title: str = "Segmentation benchmark",
) -> Dict[str, Any]:
    """Time ``model`` against ``baseline`` (registered dense-prediction models: segmenters, or detectors'
    networks up to their raw head outputs; batch 1, inference);
    return ``{'rows', 'matmul_gflops', 'notes', 'files'}``.

    Args:
        model, baseline: registered names (random weights, ``num_classes`` classes, eval mode).
        sizes: image sizes (``N``, ``(H, W)`` or ``'WxH'``); growths are relative to the first.
        dtypes: ``float32`` and/or ``bfloat16``/``float16`` (autocast of the float32 model);
            bfloat16 is skipped, with the reason in the row, where it is not native (:func:`bf16_skip_reason`).
        repeats, warmup: timed and untimed interleaved rounds per size (median reported).
        memory: also track each model's peak activation memory (one extra call per model and size).
        output: prefix of ``.csv``/``.md``/``.png`` (``None``: write nothing); matmul_n: side of the
            reference matrix multiply.
    """
    from hilovit.flops import count_flops
    from hilovit.models._builder import create_model

    set_threads(threads)
    for name, value in (("repeats", repeats), ("matmul_n", matmul_n), ("num_classes", num_classes)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    hws = [parse_size(s) for s in sizes]
    if not hws:
        raise ValueError("sizes: give at least one image size")
    dts = [(d, parse_dtype(d)) for d in dtypes]
    if not dts:
        raise ValueError("dtypes: give at least one of float32, bfloat16, float16")
    dev = torch.device(device)
    log = (lambda msg: None) if quiet else _log

    models: Dict[str, torch.nn.Module] = {}
    for role, name in (("model", model), ("baseline", baseline)):
        if role == "baseline" and name == model:  # the same architecture: one module serves both rows
            models[role] = models["model"]
            continue
        log(f"building {name} ({num_classes} classes, random weights) ...")
        torch.manual_seed(0)
        models[role] = create_model(name, num_classes=num_classes).to(dev).eval()
    a = torch.randn(matmul_n, matmul_n, device=dev)
    b = torch.randn(matmul_n, matmul_n, device=dev)

    rows: List[Dict[str, Any]] = []
    rates: List[float] = []
    for hw in hws:
        xs = {role: torch.randn(1, m.in_chans, *hw, device=dev) for role, m in models.items()}
        counted: Dict[str, int] = {}
        for role, m in models.items():
            if role == "baseline" and m is models["model"]:
                counted[role] = counted["model"]
                continue
            with torch.inference_mode():
                counted[role] = count_flops(_network(m), xs[role])
        for dname, dt in dts:
            row: Dict[str, Any] = {"img_size": _size_label(hw), "dtype": dname, "status": "timed",
                                   "model": model, "baseline": baseline}
            skip = bf16_skip_reason(dev) if dt == torch.bfloat16 else None
            if skip:
                rows.append({**row, "status": skip})
                log(f"{_size_label(hw)} {dname}: {skip}")
                continue
            fns: Dict[str, Callable[[], Any]] = {"matmul": lambda: torch.mm(a, b)}
            for role, m in models.items():

                def infer(m=m, x=xs[role], dt=dt):
                    with torch.inference_mode(), autocast_context(dev, dt):
                        return _network(m)(x)

                fns[role] = infer
            log(f"{_size_label(hw)} {dname}: timing {model} vs {baseline}, {repeats} rounds (+{warmup} warm-up)")
            times = interleaved_timings(fns, repeats=repeats, warmup=warmup, device=dev, progress=log)
            med = {k: float(statistics.median(v)) for k, v in times.items()}
            rate = 2.0 * matmul_n**3 / med["matmul"] / 1e9
            rates.append(rate)
            row.update(
                model_ms=med["model"] * 1e3,
                baseline_ms=med["baseline"] * 1e3,
                speed_ratio=med["baseline"] / med["model"],
                model_official_gflops=_official_gflops(models["model"], hw),
                model_counted_gmacs=counted["model"] / 1e9,
                baseline_counted_gmacs=counted["baseline"] / 1e9,
                model_share_of_fp32_matmul=2.0 * counted["model"] / med["model"] / 1e9 / rate,
                baseline_share_of_fp32_matmul=2.0 * counted["baseline"] / med["baseline"] / 1e9 / rate,
                fp32_matmul_gflops=rate,
            )
            for role in ("model", "baseline"):
                row[f"{role}_peak_memory_MB"] = (peak_memory_bytes(fns[role], dev) / 2**20 if memory
                                                 else float("nan"))
            rows.append(row)
    _add_growth(rows, hws)
    rows = [{c: r[c] for c in COLUMNS if c in r} for r in rows]
    synchronize(dev)

    notes = _notes(rows, model, baseline, hws, dts, num_classes, repeats, warmup, matmul_n, dev)
    result: Dict[str, Any] = {"rows": rows, "matmul_gflops": rates, "notes": notes, "files": {}}
    if output:
        files = write_table(rows, output, title, command_line(), notes=notes, columns=[
            "img_size", "dtype", "model_ms", "baseline_ms", "speed_ratio", "model_growth_per_pixel",
            "baseline_growth_per_pixel", "model_official_gflops", "model_share_of_fp32_matmul",
            "baseline_share_of_fp32_matmul", "model_peak_memory_MB", "baseline_peak_memory_MB", "status"])
        if plot and any(r["status"] == "timed" for r in rows):
            files["png"] = plot_seg_benchmark(rows, Path(f"{output}.png"))
        result["files"] = files
    return result


def _add_growth(rows: List[Dict[str, Any]], hws: Sequence[Tuple[int, int]]) -> None:
    """Each timed row's time growth from the first size's row of its dtype, and that growth per pixel growth."""
    first = {}
    pixels = {_size_label(hw): hw[0] * hw[1] for hw in hws}
    for r in rows:
        if r["status"] != "timed":
            continue
        base = first.setdefault(r["dtype"], r)
        r["pixel_growth"] = pixels[r["img_size"]] / pixels[base["img_size"]]
        for role in ("model", "baseline"):
            growth = r[f"{role}_ms"] / base[f"{role}_ms"]
            r[f"{role}_time_growth"] = growth
            r[f"{role}_growth_per_pixel"] = growth / r["pixel_growth"]


def _notes(rows, model, baseline, hws, dts, num_classes, repeats, warmup, matmul_n, dev) -> List[str]:
    timed = [r for r in rows if r["status"] == "timed"]
    notes = [
        f"machine: {machine_info(dev)}",
        f"protocol: {model} vs {baseline}, {num_classes} classes, random weights, eval mode, torch.inference_mode, "
        f"batch 1; per size and dtype, the two models and a {matmul_n}x{matmul_n} float32 matrix multiply timed in "
        f"interleaved rounds, median of {repeats} after {warmup} warm-up; low-precision rows autocast the float32 "
        "models",
        "speed_ratio = baseline_ms / model_ms (above 1: the model is faster); model_time_growth: time over the "
        f"first size's ({_size_label(hws[0])}); growth_per_pixel = time growth / pixel growth (1 = linear in "
        "pixels, below 1 = slower than linear)",
        "model_official_gflops: the official tools/get_flops.py count of the segmentation or detection code "
        "(mmcv's hooks count one multiply-add as one FLOP, plus the script's attention terms; LITv2 backbones "
        "only); *_counted_gmacs: "
        "multiply-adds of the matrix products and convolutions executed (hilovit.flops.count_flops); the matmul "
        "shares count 2 FLOPs per counted multiply-add",
        "peak_memory_MB: bytes of tensors alive at once during one call (weights and input excluded), tracked "
        "op by op",
        "detectors are timed up to their raw outputs (decoding, NMS and mask pasting not timed); a two-stage "
        "detector runs forward_dummy: the RPN maps, 1000 seeded boxes through the box head and the first 100 "
        "through the mask head, the RoI work mmdet's benchmarks and FLOP counts assume",
    ]
    for r in timed:
        notes.append(f"{r['img_size']} {r['dtype']}: {model} {r['model_ms']:.0f} ms, {baseline} "
                     f"{r['baseline_ms']:.0f} ms: {r['speed_ratio']:.2f}x; time growth {r['model_time_growth']:.2f}x "
                     f"and {r['baseline_time_growth']:.2f}x for {r['pixel_growth']:.2f}x the pixels")
    for r in rows:
        if r["status"] != "timed":
            notes.append(f"{r['img_size']} {r['dtype']}: {r['status']}")
    return notes


def plot_seg_benchmark(rows: Sequence[Dict[str, Any]], path: Path) -> Path:
    """Milliseconds per image of both models per size (one panel per timed dtype) and the time growth
    against the pixel growth."""
    from hilovit.viz.plots import _pyplot, plot_bars, save_figure

    plt = _pyplot()
    timed = [r for r in rows if r["status"] == "timed"]
    dtypes = list(dict.fromkeys(r["dtype"] for r in timed))
    fig, axes = plt.subplots(1, len(dtypes) + 1, figsize=(6 * (len(dtypes) + 1), 4.5), squeeze=False)
    model, baseline = timed[0]["model"], timed[0]["baseline"]
    for ax, d in zip(axes[0], dtypes):
        mine = [r for r in timed if r["dtype"] == d]
        plot_bars([r["img_size"] for r in mine], {model: [r["model_ms"] for r in mine],
                                                   baseline: [r["baseline_ms"] for r in mine]},
                  "ms per image (lower is better)", f"inference, batch 1, {d}", ax=ax)
    ax = axes[0][-1]
    d = dtypes[0]
    mine = [r for r in timed if r["dtype"] == d]
    xs = [r["pixel_growth"] for r in mine]
    for name, key in ((model, "model_time_growth"), (baseline, "baseline_time_growth")):
        ax.plot(xs, [r[key] for r in mine], marker="o", label=name)
    ax.plot(xs, xs, linestyle="--", color="grey", label="linear in pixels")
    for x, r in zip(xs, mine):
        ax.annotate(r["img_size"], (x, r["model_time_growth"]), textcoords="offset points", xytext=(4, -10),
                    fontsize=8)
    ax.set_xlabel(f"pixels / pixels of {mine[0]['img_size']}")
    ax.set_ylabel("time / time at the first size")
    ax.set_title(f"time growth vs pixel growth ({d})")
    ax.legend()
    return save_figure(fig, path)
