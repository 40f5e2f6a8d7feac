"""Linear layers under autograd: torch's products against hilovit.layers.fast.dense (oneDNN's kernel).

The shapes are linear layers of LITv2-S and Swin-T at batch 16 and 224 pixels (rows = tokens of the
batch). Each is timed forward plus backward (input, weight and bias gradients), float32 and under
bfloat16 autocast, through ``nn.Linear`` (``addmm`` forward, ``mm`` for the gradients) and through
:func:`hilovit.layers.fast.dense` (oneDNN's linear kernel forward and for the input gradient,
``mm`` for the weight gradient); the input comes in the dtype (as a preceding layer's output
does), the float32 weight is cast by autocast. The rate is 2 FLOPs per multiply-add of the three products, as a
share of a 2048x2048 product of the same dtype timed in the same run. Median of ``--repeats`` (9);
the two ways alternate within each repeat.

    python benchmarks/train_linear.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn

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


def _matmul_rate(dtype: torch.dtype, repeats: int) -> float:
    a = torch.randn(2048, 2048, dtype=dtype)
    a @ a
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t0)
    return 2 * 2048**3 / statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_allocator()
    torch.manual_seed(0)
    ways = {"nn.Linear": lambda layer, x: layer(x), "fast.dense": fast.dense}
    print("| layer | rows x in -> out | dtype | nn.Linear ms | fast.dense ms | nn.Linear / fast.dense "
          "| nn.Linear share | fast.dense share |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        rate = _matmul_rate(dtype, args.repeats)
        for name, rows, n_in, n_out in SHAPES:
            layer = nn.Linear(n_in, n_out)
            x = torch.randn(rows, n_in, dtype=dtype, requires_grad=True)  # as the previous layer gives it
            g = torch.randn(rows, n_out, dtype=dtype)
            times = {w: [] for w in ways}

            def step(fn, layer=layer, x=x, g=g, dtype=dtype):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                    out = fn(layer, x)
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
                  f"| {ms['nn.Linear']:.2f} | {ms['fast.dense']:.2f} | {ms['nn.Linear'] / ms['fast.dense']:.2f}x "
                  f"| {share['nn.Linear']:.0%} | {share['fast.dense']:.0%} |")


if __name__ == "__main__":
    main()
