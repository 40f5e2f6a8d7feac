"""The ``hilovit`` command. Sub-commands parse their options and call into the library; no logic here."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _csv_list(cast=str):
    def parse(text: str):
        try:
            items = [cast(t) for t in text.split(",") if t.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from e
        if not items:
            raise argparse.ArgumentTypeError("expected at least one value")
        return items

    return parse


# --------------------------------------------------------------------------- bench attention


def _add_bench_attention(sub) -> None:
    p = sub.add_parser(
        "attention",
        help="HiLo vs MSA, SRA, local and shifted window attention (vit-attention-benchmark protocol)",
        description="Times every attention mechanism side by side in one process and reports ratios.",
    )
    p.add_argument("--sizes", type=_csv_list(int), default=[14], help="token map sides, e.g. 14,28,56 (default 14)")
    p.add_argument("--dtype", type=_csv_list(), default=["float32", "bfloat16"], help="float32,bfloat16 (autocast)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--repeats", type=int, default=10, help="timed runs per row (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--mechanisms", type=_csv_list(), default=None, help="subset of rows, e.g. HiLo,MSA")
    p.add_argument("--output", default="benchmarks/attention", help="prefix for .csv/.md/.png ('' for none)")
    p.add_argument("--no-plot", action="store_true")
    p.set_defaults(func=_run_bench_attention)


def _run_bench_attention(args) -> int:
    from hilovit.bench.attention import run_attention_benchmark
    from hilovit.bench.common import format_table

    result = run_attention_benchmark(
        sizes=args.sizes,
        dtypes=args.dtype,
        batch=args.batch,
        dim=args.dim,
        num_heads=args.heads,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        threads=args.threads,
        mechanisms=args.mechanisms,
        output=args.output or None,
        plot=not args.no_plot,
    )
    cols = ["tokens", "mechanism", "dtype", "params_M", "flops_M", "images_per_s", "ms_per_batch",
            "peak_memory_MB", "share_of_fp32_matmul", "speedup_vs_naive_fp32"]
    print(format_table(result["rows"], cols))
    print()
    for note in result["notes"]:
        print(note)
    for kind, path in result["files"].items():
        print(f"wrote {kind}: {path}")
    return 0


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hilovit", description="Fast hierarchical vision transformers: HiLo / LITv2 and Swin."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser("bench", help="benchmarks (attention mechanisms, whole models)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    _add_bench_attention(bench_sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from hilovit import __version__

        print(__version__)
        return 0
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"hilovit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
