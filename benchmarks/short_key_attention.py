"""The fused attention kernel against two products around a softmax at window and pooled-key sizes.

The shapes are the short-key attentions of LITv2-S and Swin-T at batch 16 and 224 pixels; each is
timed forward (inference) and forward plus backward (training), float32 and bfloat16, through
``torch.nn.functional.scaled_dot_product_attention`` and through ``hilovit.layers.fast``'s
product path (what :func:`hilovit.layers.fast.attention` runs on the CPU in float32 inference and in
training; bfloat16 inference takes its exp path instead, not timed here). Median of ``--repeats`` (15).

    python benchmarks/short_key_attention.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from hilovit.layers import fast
from hilovit.runtime import tune_allocator

# (name, q shape, k/v shape, mask): heads of 32 channels
SHAPES = [
    ("LITv2-S Lo-Fi, stage 3", (16, 10, 196, 32), (16, 10, 49, 32), None),
    ("LITv2-S Hi-Fi band, stage 3", (112, 2, 28, 32), (112, 2, 28, 32), "band"),
    ("LITv2-S Lo-Fi, stage 4", (16, 24, 49, 32), (16, 24, 49, 32), None),
    ("Swin-T windows, stage 1", (1024, 3, 49, 32), (1024, 3, 49, 32), "bias"),
    ("Swin-T windows, stage 3", (64, 12, 49, 32), (64, 12, 49, 32), "bias"),
]


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _time_both_ways(q, k, v, mask, scale, g, repeats: int) -> dict:
    """``{(way, pass): ms}`` for the fused kernel and the products, forward and forward + backward."""
    ways = {"fused": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale),
            "products": lambda q, k, v: fast._product_attention(q, k, v, mask, scale)}
    ms = {}
    for way, fn in ways.items():
        with torch.no_grad():
            ms[(way, "forward")] = _median_ms(lambda fn=fn: fn(q, k, v), repeats)
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        ms[(way, "forward + backward")] = _median_ms(lambda fn=fn, leaves=leaves: fn(*leaves).backward(g), repeats)
    return ms


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_allocator()
    print("| shape | dtype | pass | fused ms | products ms | fused / products |")
    print("|---|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        for name, qs, ks, kind in SHAPES:
            q, k, v = (torch.randn(s, dtype=dtype) for s in (qs, ks, ks))
            mask = None
            if kind == "band":  # 2x2 windows of a band of 2 rows, kept apart
                idx = torch.arange(qs[2]) % (qs[2] // 2) // 2
                mask = torch.where(idx[:, None] == idx[None, :], 0.0, float("-inf")).to(dtype)
            elif kind == "bias":
                mask = torch.randn(1, qs[1], qs[2], ks[2], dtype=dtype)
            g = torch.randn(qs[:3] + (ks[3],), dtype=dtype)
            ms = _time_both_ways(q, k, v, mask, qs[3] ** -0.5, g, args.repeats)
            for what in ("forward", "forward + backward"):
                a, b = ms[("fused", what)], ms[("products", what)]
                print(f"| {name} | {str(dtype).replace('torch.', '')} | {what} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")


if __name__ == "__main__":
    main()
