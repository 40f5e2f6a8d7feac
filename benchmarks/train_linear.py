"""Linear layers under autograd: torch's products against oneDNN's linear kernel (hilovit.layers.fast.dense).

The shapes are linear layers of LITv2-S and Swin-T at batch 16 and 224 pixels (rows = tokens of the
batch). Each is timed forward plus backward (input, weight and bias gradients), float32 and under
bfloat16 autocast, through ``nn.Linear`` (``addmm`` forward, ``mm`` for the gradients) and through
the autograd function of :func:`hilovit.layers.fast.dense` (oneDNN's linear kernel forward and for
the input gradient, ``mm`` for the weight gradient; the library takes it in float32 only, and here
it is also run under bfloat16 autocast, the weight cast as autocast casts it, to show why); the
input comes in the dtype (as a preceding layer's output does). The rate is 2 FLOPs per
multiply-add of the three products, as a share of a 2048x2048 product of the same dtype timed in
the same run. Median of ``--repeats`` (9);
the two ways alternate within each repeat.

A second table times whole training steps of both models (batch 16, 224, forward, cross-entropy,
backward, fused AdamW; float32 and bfloat16 autocast) with every call site of ``fast.dense`` sent
through ``nn.Linear`` and through the oneDNN kernel, alternating step by step (median of
``--steps``, 5, after one warm-up step each).

    python benchmarks/train_linear.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.bench.common import matmul_rate
from hilovit.layers import fast
from hilovit.runtime import tune_allocator

# (name, rows, in, out)
SHAPES = [
    ("LITv2-S stage-1 fc1", 16 * 3136, 96, 384),
    ("LITv2-S stage-1 fc2", 16 * 3136, 384, 96),
    ("LITv2-S stage-3 fc1", 16 * 196, 384, 1536),
    ("LITv2-S stage-3 fc2", 16 * 196, 1536, 384),
    ("LITv2-S stage-3 Lo-Fi q", 16 * 196, 384, 320),
    ("Swin-T stage-1 qkv", 16 * 3136, 96, 288),
    ("Swin-T stage-2 fc1", 16 * 784, 192, 768),
    ("Swin-T stage-4 fc2", 16 * 49, 3072, 768),
]


_DENSE = fast.dense  # the library's own, kept while the whole-step timing swaps the module attribute


def _onednn(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``fast.dense``'s kernel, also under bfloat16 autocast (where the library calls the layer)."""
    if not torch.is_autocast_enabled("cpu"):
        return _DENSE(x, layer)
    dtype = torch.get_autocast_dtype("cpu")
    with torch.autocast("cpu", enabled=False):
        bias = None if layer.bias is None else layer.bias.to(dtype)
        out = fast._OneDnnLinear.apply(x.reshape(-1, x.shape[-1]).to(dtype), layer.weight.to(dtype), bias)
    return out.view(*x.shape[:-1], out.shape[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_allocator()
    torch.manual_seed(0)
    ways = {"nn.Linear": lambda x, layer: layer(x), "oneDNN": _onednn}
    print("| layer | rows x in -> out | dtype | nn.Linear ms | oneDNN ms | nn.Linear / oneDNN "
          "| nn.Linear share | oneDNN share |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        rate = matmul_rate(dtype, repeats=args.repeats) * 1e9  # FLOP/s
        for name, rows, n_in, n_out in SHAPES:
            layer = nn.Linear(n_in, n_out)
            x = torch.randn(rows, n_in, dtype=dtype, requires_grad=True)  # as the previous layer gives it
            g = torch.randn(rows, n_out, dtype=dtype)
            times = {w: [] for w in ways}

            def step(fn, layer=layer, x=x, g=g, dtype=dtype):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    out = fn(x, layer)
                out.backward(g)
                x.grad = layer.weight.grad = layer.bias.grad = None

            for fn in ways.values():
                step(fn)
            for _ in range(args.repeats):
                for w, fn in ways.items():
                    t0 = time.perf_counter()
                    step(fn)
                    times[w].append(time.perf_counter() - t0)
            ms = {w: 1e3 * statistics.median(t) for w, t in times.items()}
            flops = 3 * 2 * rows * n_in * n_out
            share = {w: flops / (m / 1e3) / rate for w, m in ms.items()}
            print(f"| {name} | {rows} x {n_in} -> {n_out} | {str(dtype).replace('torch.', '')} "
                  f"| {ms['nn.Linear']:.2f} | {ms['oneDNN']:.2f} | {ms['nn.Linear'] / ms['oneDNN']:.2f}x "
                  f"| {share['nn.Linear']:.0%} | {share['oneDNN']:.0%} |")

    print()
    print("| model | dtype | nn.Linear s/step | oneDNN s/step | speed-up |")
    print("|---|---|---|---|---|")
    for model_name in ("litv2_s", "swin_t"):
        for dtype in (torch.float32, torch.bfloat16):
            sec = _whole_steps(model_name, dtype, args.steps)
            print(f"| {model_name} | {str(dtype).replace('torch.', '')} | {sec['nn.Linear']:.3f} "
                  f"| {sec['oneDNN']:.3f} | {sec['nn.Linear'] / sec['oneDNN']:.3f}x |")


def _whole_steps(model_name: str, dtype: torch.dtype, steps: int) -> dict:
    """Median seconds of a training step with ``fast.dense``'s call sites on ``nn.Linear`` and on oneDNN."""
    import hilovit

    model = hilovit.create_model(model_name).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x, y = torch.randn(16, 3, 224, 224), torch.randint(0, 1000, (16,))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    ways = {"nn.Linear": lambda t, layer: layer(t), "oneDNN": _onednn}
    times = {w: [] for w in ways}
    try:
        for r in range(steps + 1):
            for w, fn in ways.items():
                fast.dense = fn  # the modules look it up at every call
                t0 = time.perf_counter()
                step()
                if r:
                    times[w].append(time.perf_counter() - t0)
    finally:
        fast.dense = _DENSE
    return {w: statistics.median(t) for w, t in times.items()}


if __name__ == "__main__":
    main()
