"""`hilovit bench attention`: HiLo against the attention mechanisms it is measured with.

The protocol of the public vit-attention-benchmark: a 14x14 token map, dim 768, 12 heads,
batch 64; HiLo with window 2 and alpha 0.9; PVT's SRA with ``sr_ratio`` 2; Swin's local
window 7 and shifted window 7 (shift 3); global MSA. ``HiLo (naive)`` is the straightforward
formulation (explicit products and softmax, windows cut out before the projection), kept here so
the speed-up of :class:`hilovit.HiLo` is measured in the same run.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from hilovit.bench.common import (
    command_line,
    interleaved_timings,
    machine_info,
    parse_dtype,
    peak_memory_bytes,
    set_threads,
    write_table,
)
from hilovit.flops import count_flops
from hilovit.layers.attention import Attention, SpatialReductionAttention
from hilovit.layers.hilo import HiLo
from hilovit.layers.window_attention import WindowAttention
from hilovit.runtime import autocast_context

__all__ = ["NaiveHiLo", "MECHANISMS", "build_mechanism", "run_attention_benchmark", "PAPER_CPU_RATIOS"]

# HiLo's CPU speed-up over each mechanism in the paper (Pan et al., 2022).
PAPER_CPU_RATIOS = {"MSA": 2.04, "SRA": 1.45, "Local window": 1.63}


class NaiveHiLo(nn.Module):
    """HiLo written the straightforward way, as a speed baseline (same parameters as :class:`HiLo`).

    Square maps divisible by the window only. Windows are cut out of the input before the Hi-Fi
    projection, attention is explicit (``q @ k^T``, softmax, ``@ v``) and the Lo-Fi keys come from
    ``nn.AvgPool2d`` on a channels-first copy.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, window_size: int = 2, alpha: float = 0.5):
        super().__init__()
        head_dim = dim // num_heads
        self.dim, self.ws, self.head_dim = dim, window_size, head_dim
        self.l_heads = int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        if window_size == 1:
            self.l_heads, self.h_heads = num_heads, 0
        self.l_dim, self.h_dim = self.l_heads * head_dim, self.h_heads * head_dim
        self.scale = head_dim**-0.5
        if self.l_heads:
            self.sr = nn.AvgPool2d(window_size, window_size) if window_size > 1 else nn.Identity()
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, 2 * self.l_dim, bias=qkv_bias)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim)
        if self.h_heads:
            self.h_qkv = nn.Linear(dim, 3 * self.h_dim, bias=qkv_bias)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim)

    def hifi(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        s, nh, hd = self.ws, self.h_heads, self.head_dim
        g_h, g_w = H // s, W // s
        # (B, g_h, g_w, s, s, C), cut out as a copy: handed to the projection as a strided view (as
        # the official code does), bfloat16 autocast makes torch broadcast the weight to every window
        # row pair (a 3.7 GB copy per call at the benchmark's size), which times page faults, not attention
        windows = x.reshape(B, g_h, s, g_w, s, C).transpose(2, 3).contiguous()
        qkv = self.h_qkv(windows).reshape(B, g_h * g_w, s * s, 3, nh, hd).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, groups, nh, s*s, hd)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(2, 3).reshape(B, g_h, g_w, s, s, self.h_dim)
        out = out.transpose(2, 3).reshape(B, H, W, self.h_dim)
        return self.h_proj(out)

    def lofi(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        nh, hd = self.l_heads, self.head_dim
        q = self.l_q(x).reshape(B, H * W, nh, hd).permute(0, 2, 1, 3)
        pooled = self.sr(x.permute(0, 3, 1, 2)).reshape(B, C, -1).permute(0, 2, 1)
        kv = self.l_kv(pooled).reshape(B, -1, 2, nh, hd).permute(2, 0, 3, 1, 4)
        attn = ((q @ kv[0].transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ kv[1]).transpose(1, 2).reshape(B, H, W, self.l_dim)
        return self.l_proj(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, H, W, C)
        if not self.h_heads:
            return self.lofi(x)
        if not self.l_heads:
            return self.hifi(x)
        return torch.cat((self.hifi(x), self.lofi(x)), dim=-1)

    def flops(self, H: int, W: Optional[int] = None) -> int:
        ref = HiLo.__new__(HiLo)
        ref.__dict__.update(dim=self.dim, ws=self.ws, h_dim=self.h_dim, l_dim=self.l_dim)
        return HiLo.flops(ref, H, W)


@dataclass(frozen=True)
class Mechanism:
    name: str
    family: str  # for the paper's ratios: MSA, SRA, Local window, ...
    build: Callable[[int, int], nn.Module]


# Each builder takes (dim, num_heads); qkv bias on, as in the models they come from.
MECHANISMS: List[Mechanism] = [
    Mechanism("MSA", "MSA", lambda d, h: Attention(d, h, qkv_bias=True)),
    Mechanism("SRA (sr=2)", "SRA", lambda d, h: SpatialReductionAttention(d, h, qkv_bias=True, sr_ratio=2)),
    Mechanism("Local window (7)", "Local window", lambda d, h: WindowAttention(d, h, 7, 0)),
    Mechanism("Shifted window (7, shift 3)", "Shifted window", lambda d, h: WindowAttention(d, h, 7, 3)),
    Mechanism(
        "HiLo (naive)", "HiLo (naive)", lambda d, h: NaiveHiLo(d, h, qkv_bias=True, window_size=2, alpha=0.9)
    ),
    Mechanism("HiLo", "HiLo", lambda d, h: HiLo(d, h, qkv_bias=True, window_size=2, alpha=0.9)),
]


def build_mechanism(name: str, dim: int = 768, num_heads: int = 12) -> nn.Module:
    for m in MECHANISMS:
        if m.name == name or m.family == name:
            return m.build(dim, num_heads)
    raise ValueError(f"unknown mechanism {name!r}; choose one of: {', '.join(m.name for m in MECHANISMS)}")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_attention_benchmark(
    sizes: Sequence[int] = (14,),
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    batch: int = 64,
    dim: int = 768,
    num_heads: int = 12,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    threads: Optional[int] = None,
    mechanisms: Optional[Sequence[str]] = None,
    output: Optional[str] = "runs/bench/attention",
    plot: bool = True,
    quiet: bool = False,
    matmul_n: int = 2048,
) -> Dict[str, object]:
    """Time every mechanism side by side; return ``{'rows', 'summary', 'matmul_gflops', 'files'}``.

    ``matmul_n`` is the side of the reference matrix multiply whose rate the shares are taken of.

    For each map size, all (mechanism, dtype) rows are timed interleaved in one loop; speed is
    images/s in inference mode from the fastest of ``repeats`` runs after ``warmup``, and the
    reference products' rate from their fastest run too: the calls here are short (a tenth to half
    a second), so a busy moment of a shared machine slows some of them, and it slowed the reference
    product more than the rows (over four runs in a row, the fp32 reference's median moved by 20%
    and the rows' medians by 2-13%; their fastest runs by 6% and 1-7%). ``bfloat16`` and
    ``float16`` rows run the float32 module under ``torch.autocast``.
    """
    set_threads(threads)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"sizes must be positive map sides, got {list(sizes)}")
    dev = torch.device(device)
    dts = [(name, parse_dtype(name)) for name in dtypes]
    known = {m.name for m in MECHANISMS} | {m.family for m in MECHANISMS}
    unknown = [] if mechanisms is None else [n for n in mechanisms if n not in known]
    if unknown or (mechanisms is not None and not mechanisms):
        raise ValueError(f"no mechanism matches {unknown or list(mechanisms)}; choose names or families from: "
                         f"{', '.join(sorted(known))}")
    chosen = [m for m in MECHANISMS if mechanisms is None or m.name in mechanisms or m.family in mechanisms]
    log = (lambda msg: None) if quiet else _log
    if matmul_n < 1:
        raise ValueError(f"matmul_n must be >= 1, got {matmul_n}")
    # the reference products are timed in the same interleaved rounds as the rows (the machine's
    # speed drifts; a rate measured once before the rows made shares move by a fifth between runs)
    ref_dtypes = {"float32": torch.float32, **{name: dt for name, dt in dts if dt != torch.float32}}
    mats = {name: [torch.randn(matmul_n, matmul_n, device=dev).to(dt) for _ in range(2)]
            for name, dt in ref_dtypes.items()}
    ref_fns = {f"matmul|{name}": (lambda a=a, b=b: torch.mm(a, b)) for name, (a, b) in mats.items()}
    ref_times: Dict[str, List[float]] = {name: [] for name in mats}
    torch.manual_seed(0)
    modules = {m.name: m.build(dim, num_heads).to(dev).eval() for m in chosen}
    if "HiLo (naive)" in modules and "HiLo" in modules:  # same weights: same function, checked below
        modules["HiLo (naive)"].load_state_dict(modules["HiLo"].state_dict())
    rows: List[Dict[str, object]] = []
    for size in sizes:
        x = torch.randn(batch, size, size, dim, device=dev)
        fns: Dict[tuple, Callable[[], object]] = {}
        for m in chosen:
            for dname, dt in dts:
                mod = modules[m.name]

                def fn(mod=mod, dt=dt, x=x):
                    with torch.inference_mode(), autocast_context(dev, dt):
                        return mod(x)

                fns[(m.name, dname)] = fn
        if "HiLo (naive)" in modules and "HiLo" in modules and size % 2 == 0:
            with torch.inference_mode():
                diff = (modules["HiLo"](x[:2]) - modules["HiLo (naive)"](x[:2])).abs().max().item()
            if diff > 1e-3:
                raise RuntimeError(f"HiLo and HiLo (naive) disagree by {diff:.2e}; the benchmark would be unfair")
        log(f"{size}x{size} tokens, batch {batch}: timing {len(fns)} rows x {repeats} runs (+{warmup} warm-up)")
        times = interleaved_timings(
            {**ref_fns, **{f"{k[0]}|{k[1]}": f for k, f in fns.items()}}, repeats=repeats, warmup=warmup, device=dev,
            progress=log,
        )
        for name in mats:
            ref_times[name] += times[f"matmul|{name}"]
        for m in chosen:
            mod = modules[m.name]
            params = sum(p.numel() for p in mod.parameters())
            flops = mod.flops(size, size)
            with torch.inference_mode():
                counted = count_flops(mod, x[:1])
            for dname, _ in dts:
                best = min(times[f"{m.name}|{dname}"])
                peak = peak_memory_bytes(fns[(m.name, dname)], dev)
                achieved = 2.0 * flops * batch / best / 1e9
                rows.append(
                    {
                        "tokens": f"{size}x{size}",
                        "mechanism": m.name,
                        "dtype": dname,
                        "params_M": params / 1e6,
                        "flops_M": flops / 1e6,
                        "counted_flops_M": counted / 1e6,
                        "images_per_s": batch / best,
                        "ms_per_batch": best * 1e3,
                        "peak_memory_MB": peak / 2**20,
                        "gflops_per_s": achieved,
                        "share_of_fp32_matmul": math.nan,  # set below, from the rounds' reference rate
                    }
                )
    rates = {name: 2.0 * matmul_n**3 / min(t) / 1e9 for name, t in ref_times.items()}
    rate32 = rates["float32"]
    rate_low = {name: r for name, r in rates.items() if name != "float32"}
    for row in rows:
        row["share_of_fp32_matmul"] = row["gflops_per_s"] / rate32
    summary = _summarise(rows, sizes)
    for row in rows:
        base = _find(rows, row["tokens"], "HiLo (naive)", "float32")
        row["speedup_vs_naive_fp32"] = row["images_per_s"] / base["images_per_s"] if base else math.nan
    result: Dict[str, object] = {"rows": rows, "summary": summary, "matmul_gflops": rate32, "files": {}}
    notes = [
        f"machine: {machine_info(dev)}",
        f"fp32 matrix-multiply rate: {rate32:.1f} GFLOP/s ({matmul_n}x{matmul_n}, 2 FLOPs per multiply-add, "
        f"the fastest of its runs in the same interleaved rounds as the rows)"
        + "".join(f"; {n} {r:.1f} GFLOP/s" for n, r in rate_low.items()),
        f"protocol: batch {batch}, dim {dim}, {num_heads} heads, inference mode, the fastest of {repeats} "
        f"interleaved runs after {warmup} warm-up (the rows and the reference alike: the noise of a shared machine "
        f"only adds time); FLOPs are multiply-adds (analytic; counted = executed ops)",
    ] + summary
    result["notes"] = notes
    if output:
        files = write_table(rows, output, "Attention benchmark", command_line(), notes=notes)
        if plot:
            from hilovit.viz.plots import plot_attention_benchmark

            files["png"] = plot_attention_benchmark(rows, Path(output).with_suffix(".png"))
        result["files"] = files
    return result


def _find(rows, tokens, mechanism, dtype):
    for r in rows:
        if r["tokens"] == tokens and r["mechanism"] == mechanism and r["dtype"] == dtype:
            return r
    return None


def _summarise(rows: List[Dict[str, object]], sizes: Sequence[int]) -> List[str]:
    lines = []
    for size in sizes:
        tok = f"{size}x{size}"
        hilo32 = _find(rows, tok, "HiLo", "float32")
        naive32 = _find(rows, tok, "HiLo (naive)", "float32")
        hilo16 = _find(rows, tok, "HiLo", "bfloat16")
        if hilo32 and naive32:
            lines.append(f"{tok}: HiLo float32 is {hilo32['images_per_s'] / naive32['images_per_s']:.2f}x HiLo (naive)")
        if hilo16 and naive32:
            lines.append(
                f"{tok}: HiLo bfloat16 autocast is {hilo16['images_per_s'] / naive32['images_per_s']:.2f}x "
                "HiLo (naive) float32"
            )
        if hilo32:
            for family, paper in PAPER_CPU_RATIOS.items():
                same = [r for r in rows if r["tokens"] == tok and r["dtype"] == "float32"]
                other = next((r for r in same if r["mechanism"].startswith(family)), None)
                if other:
                    ratio = hilo32["images_per_s"] / other["images_per_s"]
                    lines.append(f"{tok}: HiLo float32 is {ratio:.2f}x {other['mechanism']} (paper, CPU: {paper:.2f}x)")
    return lines
