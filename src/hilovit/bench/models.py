"""`hilovit bench models`: whole registered models side by side.

For every model and dtype: parameters, FLOPs (analytic, and counted by executing the ops),
inference images/s, training images/s (``train=True``), peak memory, and the model's speed as a
share of the machine's matrix-multiply rate. The matrix multiply (2048 x 2048, one row per dtype)
is timed **interleaved with the models**, in the same rounds, so the share is a ratio measured
under the same load. Optionally a resolution sweep times the backbone (no head) at growing sizes.

Works for any registered model (it only uses ``create_model``, ``model.flops``,
``forward_features`` when present, and ``parameters()``); float16/bfloat16 rows run the float32
model under ``torch.autocast``.
"""

from __future__ import annotations

import copy
import fnmatch
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

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
from hilovit.flops import count_flops
from hilovit.models.registry import list_models
from hilovit.runtime import autocast_context
from hilovit.train.optim import fused_adamw_supported

__all__ = [
    "DEFAULT_MODELS",
    "resolve_models",
    "build_model",
    "model_flops",
    "run_models_benchmark",
    "op_time_breakdown",
    "interleaved_breakdown",
]

DEFAULT_MODELS = ("swin_t", "litv2_s")
MATMUL_N = 2048

Size = Union[int, Tuple[int, int]]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def resolve_models(patterns: Optional[Sequence[str]] = None) -> List[str]:
    """Registered names matching ``patterns`` (names, aliases or shell patterns such as ``'swin_*'``).

    Default: those of :data:`DEFAULT_MODELS` that are registered. A pattern that matches nothing
    is an error listing the registered names.
    """
    registered = list_models()
    if not patterns:
        chosen = [m for m in DEFAULT_MODELS if m in registered]
        return chosen or registered[:1]
    from hilovit.models.registry import _ALIASES

    names: List[str] = []
    for pat in patterns:
        pat = pat.strip()
        hits = [_ALIASES[pat]] if pat in _ALIASES else fnmatch.filter(registered, pat)
        if not hits:
            raise ValueError(f"models: {pat!r} matches no registered model; choose from: {', '.join(registered)}")
        names += [h for h in hits if h not in names]
    return names


def build_model(name: str, img_size: Optional[Size] = None, **overrides: Any) -> nn.Module:
    """``create_model(name, img_size=img_size, **overrides)``; without ``img_size`` for families that
    do not take it."""
    from hilovit.models._builder import create_model

    if img_size is not None:
        try:
            return create_model(name, img_size=img_size, **overrides)
        except TypeError:
            pass
    return create_model(name, **overrides)


def model_flops(model: nn.Module, img_size: Size) -> Optional[int]:
    """The model's analytic multiply-adds for one image of ``img_size`` (``None`` if it has no ``flops``)."""
    fn = getattr(model, "flops", None)
    if fn is None:
        return None
    for args in ((img_size,), ()):
        try:
            return int(fn(*args))
        except TypeError:
            continue
    return None


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _to_pair(size: Size) -> Tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _tokens(model: nn.Module, size: int) -> int:
    """Tokens of the first stage for a ``size x size`` image (patch size from ``patch_embed``, else 4)."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", 4)
    p = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
    return (-(-size // p)) ** 2


def _backbone_fn(model: nn.Module) -> Callable[[torch.Tensor], Any]:
    return getattr(model, "forward_features", model)


# kinds of operation, by the profiler's op names (self time, so composite ops never count twice)
OP_KINDS: Dict[str, Tuple[str, ...]] = {
    "linear layers": ("mkldnn::_linear_pointwise", "aten::addmm", "aten::mm", "aten::_addmm_activation"),
    "attention products": ("aten::bmm", "aten::baddbmm"),
    "fused attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                        "aten::_scaled_dot_product_attention_math", "aten::_scaled_dot_product_flash_attention",
                        "aten::_scaled_dot_product_efficient_attention"),
    "convolutions": ("mkldnn::_convolution_pointwise", "aten::mkldnn_convolution", "aten::_slow_conv2d_forward",
                     "aten::thnn_conv2d", "aten::cudnn_convolution"),
    "norms": ("aten::native_layer_norm", "aten::native_batch_norm",
              "aten::_native_batch_norm_legit_no_training"),
}
BREAKDOWN_PROTOCOL = (
    "protocol: one profiled inference call per run (torch.profiler, CPU self time of every op, so nested ops "
    "count once), the dtypes interleaved, median over runs per kind; 'fused attention' is PyTorch's "
    "attention kernel (long key sequences), 'attention products' the two batched products of the short-key "
    "attention (windows, pooled keys), whose softmax (float32) or exp, sums and division (bfloat16) fall in "
    "'other' with every remaining op (element-wise, "
    "copies, reductions, sampling); the profiler adds a little time per op, so totals sit slightly above "
    "the timed rows"
)


def op_time_breakdown(fn: Callable[[], Any]) -> Dict[str, float]:
    """Milliseconds of one call of ``fn`` by kind of operation (:data:`OP_KINDS`, plus ``'other'``
    and ``'total'``), from the profiler's self CPU time of each op."""
    from torch.profiler import ProfilerActivity, profile

    kind_of = {op: kind for kind, ops in OP_KINDS.items() for op in ops}
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    parts = {kind: 0.0 for kind in OP_KINDS}
    parts["other"] = 0.0
    for event in prof.key_averages():
        parts[kind_of.get(event.key, "other")] += event.self_cpu_time_total / 1e3
    parts["total"] = sum(parts.values())
    return parts


def interleaved_breakdown(fns: Dict[str, Callable[[], Any]], runs: int = 3) -> Dict[str, Dict[str, float]]:
    """:func:`op_time_breakdown` of each function, ``runs`` rounds interleaved (after one untimed
    call each), the median per kind."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for fn in fns.values():
        fn()
    seen: Dict[str, List[Dict[str, float]]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            seen[name].append(op_time_breakdown(fn))
    return {name: {k: _median([p[k] for p in parts]) for k in parts[0]} for name, parts in seen.items()}


def _breakdown_rows(model: str, dtypes: Sequence[str], parts: Sequence[Dict[str, float]]) -> List[Dict[str, Any]]:
    rows = []
    for dname, p in zip(dtypes, parts):
        for kind, ms in p.items():
            base = parts[0][kind]
            rows.append({
                "model": model,
                "dtype": dname,
                "kind": kind,
                "ms_per_batch": ms,
                "share_of_total": ms / p["total"] if p["total"] else float("nan"),
                "speedup_vs_first_dtype": base / ms if ms > 0 and base > 0 else float("nan"),
            })
    return rows


def _breakdown_notes(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """One line per model and low-precision dtype: each kind's speed-up over the first dtype and its share."""
    notes = []
    first = {r["model"]: r["dtype"] for r in reversed(rows)}
    for model in dict.fromkeys(r["model"] for r in rows):
        for dname in dict.fromkeys(r["dtype"] for r in rows if r["model"] == model and r["dtype"] != first[model]):
            mine = {r["kind"]: r for r in rows if r["model"] == model and r["dtype"] == dname}
            base = {r["kind"]: r for r in rows if r["model"] == model and r["dtype"] == first[model]}
            pieces = []
            for kind, r in mine.items():
                was, now = base[kind]["ms_per_batch"], r["ms_per_batch"]
                if kind == "total" or (was <= 0 and now <= 0):
                    continue
                if was > 0 and now > 0:
                    pieces.append(f"{kind} {was / now:.2f}x ({base[kind]['share_of_total']:.0%} of {first[model]})")
                else:
                    pieces.append(f"{kind} {was:.0f} -> {now:.0f} ms")
            notes.append(f"{model} inference, {dname} vs {first[model]} by kind: " + "; ".join(pieces)
                         + f"; whole call {mine['total']['speedup_vs_first_dtype']:.2f}x")
    return notes


def run_models_benchmark(
    models: Optional[Sequence[str]] = None,
    batch: int = 16,
    img_size: Size = 224,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    train: bool = False,
    sweep: Optional[Sequence[int]] = None,
    sweep_batch: int = 1,
    repeats: int = 10,
    warmup: int = 2,
    threads: Optional[int] = None,
    device: str = "cpu",
    output: Optional[str] = "runs/bench/models",
    plot: bool = True,
    quiet: bool = False,
    overrides: Optional[Dict[str, Any]] = None,
    compile: bool = False,
    breakdown: bool = False,
    matmul_n: int = MATMUL_N,
) -> Dict[str, Any]:
    """Benchmark whole models; return ``{'rows', 'sweep_rows', 'matmul_gflops', 'notes', 'files'}``.

    Args:
        models: names or patterns (see :func:`resolve_models`).
        batch, img_size: the inference and training batch (images/s is the median of ``repeats``
            interleaved runs after ``warmup``).
        dtypes: ``float32`` and/or ``bfloat16``/``float16`` (autocast of the float32 model).
        train: also time a training step (forward, cross-entropy, backward, SGD step).
        sweep: image sides for the backbone sweep (``forward_features`` at ``sweep_batch``), in the
            first dtype; time and peak memory against tokens.
        threads: ``torch.set_num_threads``; device: ``'cpu'`` or ``'cuda'``.
        output: prefix of the ``.csv``/``.md``/``.png`` files (``None``: write nothing).
        overrides: constructor arguments for every model (e.g. ``{'num_classes': 10}``).
        compile: also time ``torch.compile(model)`` (default inductor backend) in inference, rows
            of mode ``'compiled'`` interleaved with the eager ones (compiled before the timings);
            the notes give its speed-up over eager per model and dtype.
        breakdown: also split each model's inference time by kind of operation (:data:`OP_KINDS`:
            linear layers, attention products, fused attention, convolutions, norms; and the rest)
            with the profiler, for every dtype
            (:func:`op_time_breakdown`); rows in ``result['breakdown_rows']``, file ``PREFIX_breakdown``.
        matmul_n: side of the reference matrix multiply (2048).
    """
    set_threads(threads)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if matmul_n < 1:
        raise ValueError(f"matmul_n must be >= 1, got {matmul_n}")
    H, W = _to_pair(img_size)
    if H < 1 or W < 1:
        raise ValueError(f"img_size must be positive, got {img_size!r}")
    if sweep and (any(s < 1 for s in sweep) or sweep_batch < 1):
        raise ValueError(f"sweep sizes and sweep_batch must be positive, got {list(sweep)} and {sweep_batch}")
    dev = torch.device(device)
    dts = [(name, parse_dtype(name)) for name in dtypes]
    if not dts:
        raise ValueError("dtypes: give at least one of float32, bfloat16, float16")
    names = resolve_models(models)
    log = (lambda msg: None) if quiet else _log
    overrides = dict(overrides or {})

    # matrix multiply rows: the reference rate, timed in the same rounds as the models
    mats = {}
    for dname, dt in [("float32", torch.float32)] + [d for d in dts if d[1] != torch.float32]:
        a = torch.randn(matmul_n, matmul_n, device=dev).to(dt)
        b = torch.randn(matmul_n, matmul_n, device=dev).to(dt)
        mats[dname] = (a, b)
    fns: Dict[str, Callable[[], Any]] = {
        f"matmul|{d}": (lambda a=a, b=b: torch.mm(a, b)) for d, (a, b) in mats.items()
    }

    info: Dict[str, Dict[str, Any]] = {}
    x = torch.randn(batch, 3, H, W, device=dev)
    for name in names:
        log(f"building {name} ...")
        torch.manual_seed(0)
        model = build_model(name, (H, W), **overrides).to(dev).eval()
        in_chans = getattr(model, "in_chans", 3)
        xm = x if in_chans == 3 else torch.randn(batch, in_chans, H, W, device=dev)
        flops = model_flops(model, (H, W))
        with torch.no_grad():
            counted = count_flops(model, xm[:1])
        info[name] = {
            "model": model,
            "x": xm,
            "params": sum(p.numel() for p in model.parameters()),
            "flops": flops,
            "counted": counted,
        }
        for dname, dt in dts:

            def infer(model=model, xm=xm, dt=dt):
                with torch.inference_mode(), autocast_context(dev, dt):
                    return model(xm)

            fns[f"{name}|{dname}|inference"] = infer
        if compile:
            with torch.inference_mode():
                model(xm)  # eager first: fills the size-dependent caches (window plans) outside the trace
            cmodel = torch.compile(model)
            for dname, dt in dts:

                def infer_compiled(cmodel=cmodel, xm=xm, dt=dt):
                    with torch.inference_mode(), autocast_context(dev, dt):
                        return cmodel(xm)

                log(f"compiling {name} ({dname}) ...")
                t0 = time.perf_counter()
                infer_compiled()  # compilation stays out of the timings
                info[name][f"compile_seconds|{dname}|compiled"] = time.perf_counter() - t0
                fns[f"{name}|{dname}|compiled"] = infer_compiled
        if train:
            tmodel = copy.deepcopy(model).train()
            opt = torch.optim.AdamW(tmodel.parameters(), lr=1e-6, fused=fused_adamw_supported(tmodel))
            num_classes = getattr(tmodel, "num_classes", 0) or 1000
            target = torch.randint(0, num_classes, (batch,), device=dev)
            info[name]["train_model"] = tmodel
            forwards = {"train": tmodel}
            if compile:
                forwards["train compiled"] = torch.compile(tmodel)
            for mode, fwd in forwards.items():
                for dname, dt in dts:

                    def step(fwd=fwd, opt=opt, xm=xm, dt=dt, target=target):
                        with autocast_context(dev, dt):
                            out = fwd(xm)
                            loss = F.cross_entropy(out.float(), target) if out.dim() == 2 else out.float().mean()
                        loss.backward()
                        opt.step()
                        opt.zero_grad(set_to_none=True)

                    if mode != "train":
                        log(f"compiling the training step of {name} ({dname}) ...")
                        t0 = time.perf_counter()
                        step()  # compilation of the forward and backward stays out of the timings
                        info[name][f"compile_seconds|{dname}|{mode}"] = time.perf_counter() - t0
                    fns[f"{name}|{dname}|{mode}"] = step

    log(f"timing {len(fns)} rows x {repeats} runs (+{warmup} warm-up), batch {batch}, {H}x{W}, interleaved")
    times = interleaved_timings(fns, repeats=repeats, warmup=warmup, device=dev, progress=log)
    rates = {d: 2.0 * matmul_n**3 / _median(times[f"matmul|{d}"]) / 1e9 for d in mats}
    rate32 = rates["float32"]

    rows: List[Dict[str, Any]] = []
    modes = (("inference",) + (("compiled",) if compile else ()) + (("train",) if train else ())
             + (("train compiled",) if train and compile else ()))
    for name in names:
        m = info[name]
        for mode in modes:
            base = None
            for dname, _ in dts:
                key = f"{name}|{dname}|{mode}"
                med = _median(times[key])
                ips = batch / med
                work = m["flops"] * (3 if mode.startswith("train") else 1) if m["flops"] else None
                achieved = 2.0 * work * ips / 1e9 if work else float("nan")
                # CPU tracking runs under a dispatch mode, where compiled code runs eagerly: not measured
                peak = (float("nan") if mode.endswith("compiled") and dev.type == "cpu"
                        else peak_memory_bytes(fns[key], dev))
                row = {
                    "model": name,
                    "mode": mode,
                    "dtype": dname,
                    "batch": batch,
                    "img_size": f"{H}x{W}",
                    "params_M": m["params"] / 1e6,
                    "flops_G": (m["flops"] or float("nan")) / 1e9,
                    "counted_flops_G": m["counted"] / 1e9,
                    "images_per_s": ips,
                    "ms_per_batch": med * 1e3,
                    "peak_memory_MB": peak / 2**20,
                    "gflops_per_s": achieved,
                    "share_of_fp32_matmul": achieved / rate32,
                    "share_of_dtype_matmul": achieved / rates.get(dname, rate32),
                }
                if mode.endswith("compiled"):
                    row["compile_seconds"] = m[f"compile_seconds|{dname}|{mode}"]
                if base is None:
                    base = ips
                row["speedup_vs_first_dtype"] = ips / base
                rows.append(row)

    sweep_rows: List[Dict[str, Any]] = []
    if sweep:
        dname, dt = dts[0]
        for size in sweep:
            sfns: Dict[str, Callable[[], Any]] = {f"matmul|{dname}": fns[f"matmul|{dname}"]}
            for name in names:
                model = info[name]["model"]
                in_chans = getattr(model, "in_chans", 3)
                xs = torch.randn(sweep_batch, in_chans, size, size, device=dev)

                def backbone(model=model, xs=xs, dt=dt):
                    with torch.inference_mode(), autocast_context(dev, dt):
                        return _backbone_fn(model)(xs)

                sfns[name] = backbone
            log(f"sweep {size}x{size}, batch {sweep_batch}: timing {len(sfns)} rows")
            st = interleaved_timings(sfns, repeats=max(1, repeats // 2), warmup=1, device=dev, progress=log)
            srate = 2.0 * matmul_n**3 / _median(st[f"matmul|{dname}"]) / 1e9
            for name in names:
                med = _median(st[name])
                flops = model_flops(info[name]["model"], (size, size))
                achieved = 2.0 * flops * sweep_batch / med / 1e9 if flops else float("nan")
                sweep_rows.append(
                    {
                        "model": name,
                        "dtype": dname,
                        "img_size": size,
                        "tokens": _tokens(info[name]["model"], size),
                        "batch": sweep_batch,
                        "flops_G": (flops or float("nan")) / 1e9,
                        "ms_per_image": med * 1e3 / sweep_batch,
                        "peak_memory_MB": peak_memory_bytes(sfns[name], dev) / 2**20,
                        "share_of_matmul": achieved / srate,
                    }
                )
        for name in names:
            mine = [r for r in sweep_rows if r["model"] == name]
            for r in mine:
                r["time_growth"] = r["ms_per_image"] / mine[0]["ms_per_image"]
                r["memory_growth"] = r["peak_memory_MB"] / max(mine[0]["peak_memory_MB"], 1e-9)

    breakdown_rows: List[Dict[str, Any]] = []
    if breakdown:
        for name in names:
            keys = [f"{name}|{d}|inference" for d, _ in dts]
            log(f"profiling {name} inference by kind of operation ({len(keys)} dtypes)")
            parts = interleaved_breakdown({k: fns[k] for k in keys}, runs=min(repeats, 3))
            breakdown_rows += _breakdown_rows(name, [d for d, _ in dts], [parts[k] for k in keys])

    synchronize(dev)
    notes = [
        f"machine: {machine_info(dev)}",
        "matrix-multiply rate, timed in the same interleaved rounds as the models "
        f"({matmul_n}x{matmul_n}, 2 FLOPs per multiply-add): "
        + "; ".join(f"{d} {r:.1f} GFLOP/s" for d, r in rates.items()),
        f"protocol: batch {batch}, {H}x{W}, median of {repeats} interleaved runs after {warmup} warm-up; "
        "inference under torch.inference_mode; training = forward + cross-entropy + backward + AdamW step "
        "(torch's fused kernel); "
        "low-precision rows autocast the float32 model",
        "flops_G: analytic multiply-adds per image (the official count); counted_flops_G: multiply-adds of the "
        "matrix products actually executed (hilovit.flops.count_flops); gflops_per_s counts 2 FLOPs per "
        "multiply-add of the analytic count (x3 for a training step)",
        "peak_memory_MB: CPU: bytes of tensors alive at once during one call (weights and input excluded), "
        "tracked op by op (under the tracker, fused oneDNN kernels give way to the plain ops)",
    ]
    for name in names:
        for mode in modes:
            mine = {r["dtype"]: r for r in rows if r["model"] == name and r["mode"] == mode}
            if "float32" in mine:
                share = mine["float32"]["share_of_fp32_matmul"]
                line = f"{name} {mode}: float32 at {share:.0%} of the fp32 matmul rate"
                for d, r in mine.items():
                    if d != "float32":
                        line += f"; {d} {r['images_per_s'] / mine['float32']['images_per_s']:.2f}x float32"
                notes.append(line)
    if compile:
        for compiled, eager, what in (("compiled", "inference", "inference"),
                                      ("train compiled", "train", "training")):
            speedups = [
                f"{r['model']} {r['dtype']} {r['images_per_s'] / e['images_per_s']:.2f}x (compiled in "
                f"{r['compile_seconds']:.0f} s)"
                for r in rows if r["mode"] == compiled
                for e in rows if e["mode"] == eager and (e["model"], e["dtype"]) == (r["model"], r["dtype"])
            ]
            if speedups:
                notes.append(f"torch.compile (inductor) speed-up over eager {what} on {dev.type}, measured side by "
                             "side: " + "; ".join(speedups))
    breakdown_notes = _breakdown_notes(breakdown_rows)
    notes += breakdown_notes
    result: Dict[str, Any] = {"rows": rows, "sweep_rows": sweep_rows, "breakdown_rows": breakdown_rows,
                              "matmul_gflops": rates, "notes": notes, "files": {}}
    if output:
        cmd = command_line()
        files = write_table(rows, output, "Model benchmark", cmd, notes=notes)
        if sweep_rows:
            sw = write_table(sweep_rows, f"{output}_sweep", "Backbone resolution sweep", cmd, notes=notes[:2])
            files.update({f"sweep_{k}": v for k, v in sw.items()})
        if breakdown_rows:
            bd = write_table(breakdown_rows, f"{output}_breakdown", "Inference time by kind of operation", cmd,
                             notes=notes[:1] + [BREAKDOWN_PROTOCOL] + breakdown_notes)
            files.update({f"breakdown_{k}": v for k, v in bd.items()})
        if plot:
            files["png"] = plot_models_benchmark(rows, sweep_rows, Path(f"{output}.png"))
        result["files"] = files
    return result


def plot_models_benchmark(rows: List[Dict[str, Any]], sweep_rows: List[Dict[str, Any]], path: Path) -> Path:
    """Images/s per model and dtype (inference, training) and, with a sweep, time and memory vs tokens."""
    from hilovit.viz.plots import _pyplot, plot_bars, plot_sweep, save_figure

    plt = _pyplot()
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    ncols = len(modes) + (2 if sweep_rows else 0)
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.5), squeeze=False)
    models = list(dict.fromkeys(r["model"] for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    for ax, mode in zip(axes[0], modes):
        series = {
            d: [next((r["images_per_s"] for r in rows if r["model"] == m and r["dtype"] == d and r["mode"] == mode), 0)
                for m in models]
            for d in dtypes
        }
        plot_bars(models, series, "images / s (higher is better)", f"{mode}, batch {rows[0]['batch']}, "
                  f"{rows[0]['img_size']}", ax=ax)
    if sweep_rows:
        names = list(dict.fromkeys(r["model"] for r in sweep_rows))
        for ax, key, label in ((axes[0][len(modes)], "ms_per_image", "ms per image"),
                               (axes[0][len(modes) + 1], "peak_memory_MB", "peak memory (MB)")):
            lines = {n: [r[key] for r in sweep_rows if r["model"] == n] for n in names}
            xs = [r["tokens"] for r in sweep_rows if r["model"] == names[0]]
            plot_sweep(xs, lines, "tokens of the first stage", label, f"backbone {label} vs tokens", ax=ax)
    return save_figure(fig, path)
