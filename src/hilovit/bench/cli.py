"""The ``hilovit bench`` sub-commands (attention, models, seg, data): their options and the tables they print."""

from __future__ import annotations

import argparse

from hilovit.cli_support import device_name, non_negative_int, positive_int

__all__ = ["add_bench_commands", "csv_list", "add_timing_options", "print_notes_and_files"]


def csv_list(cast=str):
    def parse(text: str):
        try:
            items = [cast(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from e
        if not items:
            raise argparse.ArgumentTypeError("expected at least one value")
        return items

    return parse


def add_timing_options(p, default_output: str) -> None:
    """Options every benchmark shares: runs, device, threads and where the results go."""
    p.add_argument("--repeats", type=positive_int, default=10,
                   help="timed runs per row (the attention benchmark reports the fastest, the others the median)")
    p.add_argument("--warmup", type=non_negative_int, default=2)
    p.add_argument("--matmul-n", type=positive_int, default=2048,
                   help="side of the reference matrix multiply whose rate the shares are of (default 2048)")
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--output", default=default_output,
                   help=f"prefix for .csv/.md/.png ('' for none; default {default_output}; the committed results "
                   "in benchmarks/ are made by `make bench`)")
    p.add_argument("--no-plot", action="store_true")


def print_notes_and_files(result) -> int:
    """A benchmark's closing notes and the files it wrote, after its tables."""
    print()
    for note in result["notes"]:
        print(note)
    for kind, path in result["files"].items():
        print(f"wrote {kind}: {path}")
    return 0


# --------------------------------------------------------------------------- bench attention


def _add_bench_attention(sub) -> None:
    p = sub.add_parser(
        "attention",
        help="HiLo vs MSA, SRA, local and shifted window attention (vit-attention-benchmark protocol)",
        description="Times every attention mechanism side by side in one process and reports ratios.",
    )
    p.add_argument("--sizes", type=csv_list(int), default=[14], help="token map sides, e.g. 14,28,56 (default 14)")
    p.add_argument("--dtype", type=csv_list(), default=["float32", "bfloat16"], help="float32,bfloat16 (autocast)")
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--mechanisms", type=csv_list(), default=None,
                   help="subset of rows by name or family, e.g. 'HiLo,MSA,Shifted window'")
    add_timing_options(p, "runs/bench/attention")
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
        matmul_n=args.matmul_n,
    )
    cols = ["tokens", "mechanism", "dtype", "params_M", "flops_M", "images_per_s", "ms_per_batch",
            "peak_memory_MB", "share_of_fp32_matmul", "speedup_vs_naive_fp32"]
    print(format_table(result["rows"], cols))
    return print_notes_and_files(result)


def _add_bench_models(sub) -> None:
    p = sub.add_parser(
        "models",
        help="whole models: params, FLOPs, images/s (inference, training), memory, share of the matmul rate",
        description="Times registered models side by side with the machine's matrix multiply, in one process.",
    )
    p.add_argument("--models", type=csv_list(), default=None,
                   help="names or patterns, e.g. swin_t,litv2_s or 'swin_*' (default swin_t,litv2_s)")
    p.add_argument("--batch", type=positive_int, default=16)
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--dtype", type=csv_list(), default=["float32", "bfloat16"], help="float32,bfloat16 (autocast)")
    p.add_argument("--train", action="store_true", help="also time a training step (forward, backward, SGD)")
    p.add_argument("--sweep", type=csv_list(int), default=None,
                   help="image sides for a backbone sweep, e.g. 224,384,512,768,1024")
    p.add_argument("--sweep-batch", type=int, default=1)
    add_timing_options(p, "runs/bench/models")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile(model) (inductor) in inference; the notes give its speed-up")
    p.add_argument("--breakdown", action="store_true",
                   help="also split inference time by kind of operation (linear layers, attention products, fused "
                   "attention, convolutions, norms, other) with the profiler, per dtype")
    p.set_defaults(func=_run_bench_models)


def _run_bench_models(args) -> int:
    from hilovit.bench.common import format_table
    from hilovit.bench.models import run_models_benchmark

    result = run_models_benchmark(
        models=args.models,
        batch=args.batch,
        img_size=args.img_size,
        dtypes=args.dtype,
        train=args.train,
        sweep=args.sweep,
        sweep_batch=args.sweep_batch,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        device=args.device,
        output=args.output or None,
        plot=not args.no_plot,
        compile=args.compile,
        breakdown=args.breakdown,
        matmul_n=args.matmul_n,
    )
    cols = ["model", "mode", "dtype", "params_M", "flops_G", "images_per_s", "ms_per_batch", "peak_memory_MB",
            "share_of_fp32_matmul", "speedup_vs_first_dtype"]
    print(format_table(result["rows"], cols))
    if result["sweep_rows"]:
        print()
        print(format_table(result["sweep_rows"], ["model", "img_size", "tokens", "ms_per_image", "peak_memory_MB",
                                                  "time_growth", "memory_growth", "share_of_matmul"]))
    if result["breakdown_rows"]:
        print()
        print(format_table(result["breakdown_rows"], ["model", "dtype", "kind", "ms_per_batch", "share_of_total",
                                                      "speedup_vs_first_dtype"]))
    return print_notes_and_files(result)



# --------------------------------------------------------------------------- bench seg


def _add_bench_seg(sub) -> None:
    p = sub.add_parser(
        "seg",
        help="segmentation: semfpn_litv2_s vs semfpn_swin_t at 512x512, 1024x1024, 2048x512 (batch 1)",
        description="Times a segmentation model against a baseline, side by side in one process, at "
        "dense-prediction sizes: ms per image, speed ratio, time growth vs pixel growth, official FLOPs and "
        "the share of the machine's float32 matmul rate.",
    )
    p.add_argument("--model", default="semfpn_litv2_s")
    p.add_argument("--baseline", default="semfpn_swin_t")
    p.add_argument("--sizes", type=csv_list(), default=None,
                   help="N or WxH, comma-separated (default 512,1024,2048x512); growths relative to the first")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (32x32,64x64) for a check in seconds")
    p.add_argument("--dtype", type=csv_list(), default=["float32", "bfloat16"],
                   help="float32,bfloat16 (bfloat16 only where native; otherwise a skipped row)")
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory tracking call")
    add_timing_options(p, "runs/bench/seg")
    p.set_defaults(func=_run_bench_seg, repeats=5, warmup=1)


def _run_bench_seg(args) -> int:
    from hilovit.bench.common import format_table
    from hilovit.bench.seg import DEFAULT_SIZES, QUICK_SIZES, run_seg_benchmark

    if args.quick and args.sizes:
        raise ValueError("--quick and --sizes: give one of them")
    sizes = QUICK_SIZES if args.quick else (args.sizes or DEFAULT_SIZES)
    result = run_seg_benchmark(
        model=args.model, baseline=args.baseline, sizes=sizes, dtypes=args.dtype, num_classes=args.num_classes,
        repeats=args.repeats, warmup=args.warmup, threads=args.threads, device=args.device,
        output=args.output or None, plot=not args.no_plot, memory=not args.no_memory, matmul_n=args.matmul_n,
    )
    print(format_table(result["rows"], ["img_size", "dtype", "model_ms", "baseline_ms", "speed_ratio",
                                        "model_growth_per_pixel", "baseline_growth_per_pixel",
                                        "model_official_gflops", "model_share_of_fp32_matmul",
                                        "baseline_share_of_fp32_matmul"]))
    return print_notes_and_files(result)


# --------------------------------------------------------------------------- bench data


def _image_size(text: str):
    """``WIDTHxHEIGHT`` -> ``(width, height)``, through the segmentation benchmark's size parser."""
    from hilovit.bench.seg import parse_size

    try:
        height, width = parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 2048x1536 ({e})") from None
    return width, height


def _add_bench_data(sub) -> None:
    p = sub.add_parser(
        "data",
        help="the data path: JPEG decode, crop and batching per worker and with 2 workers, beside a training step",
        description="Images/s of the DataLoader workers (decode, training or evaluation crop, batching) for "
        "photo-sized JPEGs, with and without reduced-scale decoding, the device-side augmentation and a model's "
        "training step, in one process; and the share of a core the loader needs at the model's speed.",
    )
    p.add_argument("--sizes", type=csv_list(_image_size), default=[(500, 375), (2048, 1536)],
                   help="WIDTHxHEIGHT of the generated JPEGs (default 500x375,2048x1536)")
    p.add_argument("--folder", default=None, help="time a folder of class subfolders of your own images instead")
    p.add_argument("--files", type=positive_int, default=16, help="JPEGs written per size (default 16)")
    p.add_argument("--img-size", type=positive_int, default=224)
    p.add_argument("--batch", type=positive_int, default=16)
    p.add_argument("--batches", type=positive_int, default=6, help="batches per timed pass (default 6)")
    p.add_argument("--workers", type=csv_list(int), default=[0, 2], help="DataLoader workers to time (default 0,2)")
    p.add_argument("--model", default="litv2_s", help="model whose training step is timed ('none' to skip)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--output", default="runs/bench/data",
                   help="prefix for .csv/.md ('' for none; the committed results in benchmarks/ are made by "
                   "`make bench`)")
    p.set_defaults(func=_run_bench_data)


def _run_bench_data(args) -> int:
    from hilovit.bench.common import format_table
    from hilovit.bench.data import COLUMNS, run_data_benchmark

    if args.folder is not None:
        from pathlib import Path

        if not Path(args.folder).is_dir():
            raise FileNotFoundError(f"--folder {args.folder!r} is not a folder")
    result = run_data_benchmark(
        sizes=args.sizes, folder=args.folder, files_per_size=args.files, img_size=args.img_size,
        batch=args.batch, batches=args.batches, workers=args.workers,
        model=None if args.model.lower() == "none" else args.model, threads=args.threads,
        output=args.output or None,
    )
    print(format_table(result["rows"], COLUMNS))
    return print_notes_and_files(result)


def _add_bench_det(sub) -> None:
    p = sub.add_parser(
        "det",
        help="detection: retinanet_litv2_s vs retinanet_swin_t at 1333x800 (batch 1)",
        description="Times a detector's network (preprocessed batch -> raw head outputs) against a baseline, side "
        "by side in one process: ms per image, speed ratio, official FLOPs, the share of the machine's float32 "
        "matmul rate and peak memory. Post-processing (decoding, NMS) is not timed.",
    )
    p.add_argument("--model", default="retinanet_litv2_s")
    p.add_argument("--baseline", default="retinanet_swin_t")
    p.add_argument("--sizes", type=csv_list(), default=None, help="N or WxH, comma-separated (default 1333x800)")
    p.add_argument("--dtype", type=csv_list(), default=["float32", "bfloat16"],
                   help="float32,bfloat16 (bfloat16 only where native; otherwise a skipped row)")
    p.add_argument("--num-classes", type=int, default=80)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory tracking call")
    add_timing_options(p, "runs/bench/det")
    p.set_defaults(func=_run_bench_det, repeats=5, warmup=1)


def _run_bench_det(args) -> int:
    from hilovit.bench.common import format_table
    from hilovit.bench.seg import run_seg_benchmark

    result = run_seg_benchmark(
        model=args.model, baseline=args.baseline, sizes=args.sizes or ["1333x800"], dtypes=args.dtype,
        num_classes=args.num_classes, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
        device=args.device, output=args.output or None, plot=not args.no_plot, memory=not args.no_memory,
        matmul_n=args.matmul_n, title="Detection benchmark",
    )
    print(format_table(result["rows"], ["img_size", "dtype", "model_ms", "baseline_ms", "speed_ratio",
                                        "model_official_gflops", "model_share_of_fp32_matmul",
                                        "baseline_share_of_fp32_matmul", "model_peak_memory_MB",
                                        "baseline_peak_memory_MB"]))
    return print_notes_and_files(result)


def add_bench_commands(sub) -> None:
    """``attention``, ``models``, ``seg``, ``det`` and ``data`` under ``hilovit bench``."""
    _add_bench_attention(sub)
    _add_bench_models(sub)
    _add_bench_seg(sub)
    _add_bench_det(sub)
    _add_bench_data(sub)
