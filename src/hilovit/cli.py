"""The ``hilovit`` command. Sub-commands parse their options and call into the library; no logic here."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from hilovit.cli_support import (
    OneLineParser,
    add_finetune_options,
    command_parser,
    device_name,
    non_negative_int,
    onnx_opset,
    out_of_memory_hint,
    positive_int,
    user_message,
)

# --------------------------------------------------------------------------- predict, export, viz


def _img_size(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive image size, got {text!r}")
    return value


def _add_predict(commands) -> None:
    p = commands.add_parser(
        "predict",
        help="classify images with a trained model (top-k classes and probabilities)",
        description="Classifies each image (any Pillow format and mode), prepared as the model's pretrained_cfg "
        "says. Unreadable images are reported by name and the others still predicted; the exit status is 1 "
        "when any image failed.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", required=True, help="registered model name (hilovit.list_models())")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint",
                         help="model.safetensors, last.pt, any state-dict file, or a training output folder")
    weights.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="TAG|FILE|URL",
                         help="published weights instead of a checkpoint: alone the model's default (official "
                         "ImageNet weights, downloaded once), or a tag (alpha_0_5, ms_in22k_ft_in1k), a file, a URL "
                         "or hf-hub:org/name; 1000-class weights print the ImageNet class names")
    p.add_argument("--topk", type=int, default=5, help="classes to list per image (default 5)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", type=device_name, default="cpu")
    p.add_argument("--norm", choices=sorted(_NORMS),
                   help="normalisation when the checkpoint records none (default: the model's own, with a notice): "
                   "imagenet, half (mean 0.5, std 0.5) or none (mean 0, std 1)")
    p.add_argument("--mean", type=_floats_arg, help="normalisation mean, comma-separated (with --std)")
    p.add_argument("--std", type=_floats_arg, help="normalisation std, comma-separated (with --mean)")
    p.set_defaults(func=_run_predict)


_NORMS = {"imagenet": None, "half": ((0.5,), (0.5,)), "none": ((0.0,), (1.0,))}  # imagenet: data/constants.py


def _floats_arg(text: str):
    try:
        values = tuple(float(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        values = ()
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    return values


class _download_errors:
    """Weights that cannot be fetched: the one-paragraph message (URL and the by-hand command), exit status 2."""

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        from hilovit.models.hub import DownloadError

        if kind is not None and issubclass(kind, DownloadError):
            raise _UsageError(str(error)) from None
        return False


class _UsageError(ValueError):
    """Shown by main() as ``hilovit COMMAND: error: ...`` with exit status 2."""


def _run_predict(args) -> int:
    import json
    import warnings

    from hilovit.predict import format_predictions, predict_files

    if args.norm and (args.mean or args.std):
        raise ValueError("--norm and --mean/--std choose the same thing: give one of them")
    if (args.mean is None) != (args.std is None):
        raise ValueError("--mean and --std go together: give both")
    mean, std = _NORMS[args.norm] if args.norm else (args.mean, args.std)
    if args.norm == "imagenet":
        from hilovit.data import constants

        mean, std = constants.IMAGENET_DEFAULT_MEAN, constants.IMAGENET_DEFAULT_STD
    with warnings.catch_warnings(record=True) as notes, _download_errors():
        warnings.simplefilter("always")
        results = predict_files(args.images, args.model, args.checkpoint, topk=args.topk,
                                batch_size=args.batch_size, device=args.device, mean=mean, std=std,
                                pretrained=args.pretrained)
    for note in (n for n in notes if issubclass(n.category, UserWarning)):
        text = str(note.message).replace("pass mean= and std=", "use --norm or --mean/--std")
        print(f"hilovit predict: note: {text}", file=sys.stderr)
    for r in results:
        if not r.ok:
            print(f"hilovit predict: {r.source}: {r.error}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    elif any(r.ok for r in results):
        print(format_predictions(results))
    return 0 if all(r.ok for r in results) else 1


def _add_export(commands) -> None:
    p = commands.add_parser(
        "export",
        help="export a model to ONNX and verify it with onnxruntime",
        description="Exports with torch.onnx (TorchScript tracer), checks the file with onnxruntime against PyTorch "
        "on random inputs and prints the largest difference. The file is written only when that difference is "
        "at most --atol (exit status 1 otherwise).",
    )
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--checkpoint", default=None, help="weights to export (default: random initialisation)")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="symbolic batch dimension (verified at batch 1 and 3); default: batch 1")
    p.add_argument("--img-size", type=_img_size, nargs="+", metavar=("H", "W"), default=None,
                   help="input size fixed in the graph (default: the model's pretrained_cfg input size)")
    p.add_argument("--opset", type=onnx_opset, default=17, help="ONNX opset, 14 to the newest torch.onnx knows (17)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest accepted |onnx - torch| (default 1e-4)")
    p.add_argument("--no-verify", action="store_true", help="only check the file with onnx.checker")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from hilovit.export import ExportVerificationError, export_model

    if args.img_size is not None and len(args.img_size) > 2:
        raise ValueError(f"--img-size takes H or H W, got {len(args.img_size)} values")
    try:
        result = export_model(args.model, args.output, checkpoint=args.checkpoint, format=args.format,
                              img_size=args.img_size, dynamic_batch=args.dynamic_batch, opset=args.opset,
                              verify=not args.no_verify, atol=args.atol)
    except ImportError as e:
        print(f"hilovit export: {e}", file=sys.stderr)
        return 2
    except ExportVerificationError as e:
        print(f"hilovit export: verification failed: {e}", file=sys.stderr)
        return 1
    batch = "batch" if result.dynamic_batch else "1"
    print(f"wrote {result.path} ({result.size_bytes / 2**20:.1f} MiB, opset {result.opset}, "
          f"input ({batch}, {', '.join(map(str, result.input_shape))}), {result.seconds:.1f} s)")
    if result.diffs:
        per = ", ".join(f"batch {b}: {d:.2e}" for b, d in result.diffs.items())
        print(f"onnxruntime vs PyTorch: max |diff| = {result.max_abs_diff:.2e} ({per}; tolerance {args.atol:g})")
    return 0


def _add_viz_common(p) -> None:
    p.add_argument("image", metavar="IMAGE", help="an image file (any Pillow format)")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--checkpoint", default=None, help="trained weights (default: random initialisation)")
    p.add_argument("--output", required=True, help="the picture to write: .png, .jpg/.jpeg or .webp")
    p.add_argument("--layer", type=int, default=None, help="layer index (see the sub-command's help)")
    p.add_argument("--img-size", type=_img_size, nargs="+", metavar=("H", "W"), default=None,
                   help="model input size (default: the model's pretrained_cfg input size)")


def _add_viz(commands) -> None:
    viz = commands.add_parser("viz", help="pictures: HiLo's high/low-frequency branches, attention maps")
    sub = viz.add_subparsers(dest="viz_command", metavar="PICTURE", required=True)
    p = sub.add_parser(
        "hilo",
        help="Hi-Fi and Lo-Fi branch outputs of a HiLo layer and their Fourier spectra",
        description="For one HiLo layer: the input image beside the Hi-Fi and Lo-Fi branch outputs (feature energy "
        "per position) and each branch's 2-D Fourier amplitude spectrum averaged over channels, with the share "
        "of spectral energy above --cutoff. --layer indexes the model's HiLo layers (default: the first with "
        "both branches).",
    )
    _add_viz_common(p)
    p.add_argument("--cutoff", type=float, default=0.25, help="high-frequency radius in cycles/token (default 0.25)")
    p.set_defaults(func=_run_viz_hilo)
    p = sub.add_parser(
        "attention",
        help="one query's Lo-Fi attention (LITv2) or window attention (Swin) over the image",
        description="LITv2: the Lo-Fi attention of the query over the pooled keys of HiLo layer --layer (default: "
        "the first with both branches). Swin: the window attention of the query in window-attention layer "
        "--layer (default 0). Overlaid on the image: the mean over heads and the first --heads heads.",
    )
    _add_viz_common(p)
    p.add_argument("--query", type=float, nargs=2, metavar=("Y", "X"), default=None,
                   help="query position in pixels of the model input (default: the centre)")
    p.add_argument("--heads", type=int, default=4, help="single heads to draw besides the mean (default 4)")
    p.set_defaults(func=_run_viz_attention)


def _viz_size(args):
    if args.img_size is not None and len(args.img_size) > 2:
        raise ValueError(f"--img-size takes H or H W, got {len(args.img_size)} values")
    return args.img_size


def _run_viz_hilo(args) -> int:
    from hilovit.viz import viz_hilo

    path, branches = viz_hilo(args.image, args.model, args.output, checkpoint=args.checkpoint, layer=args.layer,
                              img_size=_viz_size(args), cutoff=args.cutoff)
    print(branches.summary())
    print(f"wrote {path}")
    return 0


def _run_viz_attention(args) -> int:
    from hilovit.viz import viz_attention

    path, amap = viz_attention(args.image, args.model, args.output, checkpoint=args.checkpoint, layer=args.layer,
                               img_size=_viz_size(args), query=args.query, heads=args.heads)
    print(amap.summary())
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- train, eval


def _pair(text: str):
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected two comma-separated numbers LOW,HIGH, got {text!r}") from e
    return [lo, hi]


def _add_train(commands) -> None:
    S = argparse.SUPPRESS  # options not given stay unset, so a --config recipe (or a resumed run) keeps its own
    p = commands.add_parser(
        "train",
        help="train a model on Fashion-MNIST or an image folder (one process, or many under torchrun)",
        description="Trains a registered model and writes last.pt (every epoch, atomically), model.safetensors, "
        "metrics.csv, summary.json and curves.png into --output. Precedence: defaults < --config recipe < flags. "
        "Distributed: torchrun --nproc_per_node=N -m hilovit train ... (--batch-size is the global batch).",
        argument_default=S,
    )
    g = p.add_argument_group("run")
    g.add_argument("--config", default=None, help="recipe: a YAML file or a packaged recipe name (fashion-mnist)")
    g.add_argument("--model", help="registered model name (default litv2_nano; see hilovit.list_models())")
    g.add_argument("--data", help="'fashion-mnist' (default) or a folder: DIR/<class>/... or DIR/train + DIR/val")
    g.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files (default: HILOVIT_DATA_DIR, then "
                   "/usr/share/datasets/fashion-mnist)")
    g.add_argument("--output", help="output folder (default runs/train)")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int, help="images per optimiser step, all processes together")
    g.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")
    g.add_argument("--overwrite", action="store_true", help="start afresh even if --output holds a run")
    g.add_argument("--stop-at-epoch", type=int, help="end after this epoch (schedule still planned for --epochs)")
    g.add_argument("--seed", type=int)
    g.add_argument("--train-subset", type=int, metavar="N", help="use the first N training images")
    g.add_argument("--eval-subset", type=int, metavar="N", help="evaluate on the first N evaluation images")
    g.add_argument("--val-split", type=float, help="hold out this fraction of the training data for evaluation")
    g.add_argument("--img-size", type=int, help="model input side (default: the model's, 28 for the nano models)")
    g.add_argument("--in-chans", type=int, help="model input channels (default: the data's)")
    g.add_argument("--json", action="store_true", help="print the summary as JSON")
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, help="learning rate itself (default: --base-lr * batch / 512)")
    g.add_argument("--base-lr", type=float, help="learning rate for a batch of 512, scaled linearly (5e-4)")
    g.add_argument("--min-lr", type=float, help="final rate of the cosine for a batch of 512 (5e-6)")
    g.add_argument("--warmup-lr", type=float, help="initial warm-up rate for a batch of 512 (5e-7)")
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay (none on norms, biases, position tables)")
    g.add_argument("--optimizer", choices=["adamw", "sgd"])
    g.add_argument("--momentum", type=float, help="SGD momentum")
    g.add_argument("--clip-grad", type=float, help="max gradient norm (0: off; default 5)")
    g.add_argument("--accum-steps", type=int, help="split each step's batch into this many micro-batches")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--mixup", type=float, help="Mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, help="CutMix alpha (0: off)")
    g.add_argument("--mixup-prob", type=float)
    g.add_argument("--drop-path", type=float, help="stochastic depth rate (default: the model's)")
    g.add_argument("--model-ema", action="store_true", help="keep and evaluate an EMA of the weights")
    g.add_argument("--model-ema-decay", type=float)
    add_finetune_options(p)
    g = p.add_argument_group("augmentation (on the batch, kornia)")
    g.add_argument("--no-augment", action="store_true", help="no random augmentation at all")
    g.add_argument("--no-crop", dest="crop", action="store_false", help="no random resized crop")
    g.add_argument("--crop-scale", type=_pair, metavar="LO,HI", help="area range of the random crop (0.6,1)")
    g.add_argument("--no-hflip", dest="hflip", action="store_false", help="no horizontal flips")
    g.add_argument("--rand-augment", action="store_true", help="RandAugment (2 operations)")
    g.add_argument("--rand-augment-m", type=int, help="RandAugment magnitude (9)")
    g.add_argument("--random-erasing", type=float, metavar="P", help="probability of random erasing")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", type=device_name, help="auto (default), cpu, cuda, cuda:N, mps")
    g.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"],
                   help="autocast: auto = bfloat16 on a CPU with native bfloat16 (else float32), "
                   "float16 with a gradient scaler on CUDA")
    g.add_argument("--threads", type=int, help="CPU threads per process")
    g.add_argument("--workers", type=int, help="DataLoader workers for image folders")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute blocks in backward (less memory)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training step after a few timed eager steps; reports the compile "
                   "time and the speed-up")
    g.add_argument("--sync-bn", action="store_true", help="synchronise BatchNorm over processes")
    g.add_argument("--eval-interval", type=int, help="evaluate every N epochs (and after the last)")
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--progress", choices=["auto", "bar", "log", "off"],
                   help="auto: a bar on a terminal, log lines otherwise")
    g.add_argument("--log-interval", type=int, help="steps between log lines")
    p.set_defaults(func=_run_train, config=None)


def _run_train(args) -> int:
    from hilovit.train import print_summary, train
    from hilovit.train.config import options_from_cli
    from hilovit.train.report import use_plain_output

    use_plain_output()  # the training lines on stdout, as plain text
    summary = train(recipe=args.config, **options_from_cli(vars(args)))
    print_summary(summary, as_json=getattr(args, "json", False))  # rank 0 only under torchrun
    return 0


def _add_eval(commands) -> None:
    p = commands.add_parser(
        "eval",
        help="evaluate a checkpoint: top-1, top-5, loss, per-class accuracy, confusion matrix",
        description="Evaluates a checkpoint (model.safetensors, last.pt, a training output folder, or any state "
        "dict) on the evaluation split of the data it was trained on (as recorded beside it) or of --data "
        "(Fashion-MNIST: the 10,000 test images), or published weights (--pretrained) on --data. A folder of "
        "class folders alone (an ImageNet val/ folder: VAL_DIR/<wnid>/<images>) is evaluated whole, with the "
        "weights' preprocessing for --pretrained (the official protocol: shorter side to img_size / crop_pct, "
        "centre crop, normalise). An earlier eval.json is kept: the new report gets the next free name "
        "(eval-2.json, ...) unless --overwrite.",
    )
    p.add_argument("--model", required=True, help="registered model name (must match the checkpoint)")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="model.safetensors, last.pt or a training output folder")
    weights.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="TAG|FILE|URL",
                         help="published weights instead of a checkpoint: alone the model's default (the official "
                         "ImageNet weights), or a tag (alpha_0_5, ms_in22k_ft_in1k), a file, a URL or hf-hub:org/name")
    p.add_argument("--data", default=None,
                   help="'fashion-mnist' or a folder (default: the data the checkpoint records); a folder of "
                   "class folders alone is evaluated whole")
    p.add_argument("--crop-pct", type=float, default=None,
                   help="image folders: resize the shorter side to img_size / crop_pct, then centre-crop "
                   "(default: the weights' value for --pretrained, 1.0 for checkpoints)")
    p.add_argument("--interpolation", choices=["bicubic", "bilinear", "nearest"], default=None,
                   help="resize filter for image folders (default: the weights' for --pretrained, else bilinear)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--val-split", type=float, default=None,
                   help="as in training, for folders without val/ (default: as recorded, else 0)")
    p.add_argument("--seed", type=int, default=None, help="seed of the --val-split hold-out (default: as recorded)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--img-size", type=positive_int, default=None)
    p.add_argument("--in-chans", type=positive_int, default=None)
    p.add_argument("--eval-subset", type=positive_int, default=None, metavar="N", help="the first N images only")
    p.add_argument("--ema", action="store_true", help="the EMA weights of a last.pt")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="off")
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--threads", type=positive_int, default=None)
    p.add_argument("--workers", type=non_negative_int, default=2)
    p.add_argument("--output", default=None,
                   help="folder for eval.json and confusion.png (default: eval/ beside the checkpoint; "
                   "nothing written for --pretrained)")
    p.add_argument("--confusion-png", default=None, help="path of the confusion-matrix picture")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier eval.json and confusion.png")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--progress", choices=["auto", "bar", "off"], default="auto")
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    import json

    from hilovit.train import format_eval, run_eval

    with _download_errors():
        result = run_eval(
            model=args.model, checkpoint=args.checkpoint, data=args.data, data_dir=args.data_dir,
            batch_size=args.batch_size, img_size=args.img_size, in_chans=args.in_chans, eval_subset=args.eval_subset,
            val_split=args.val_split, seed=args.seed, amp=args.amp, device=args.device, workers=args.workers,
            threads=args.threads, output=args.output, confusion_png=args.confusion_png, use_ema=args.ema,
            progress=args.progress, default_output="eval", overwrite=args.overwrite, pretrained=args.pretrained,
            crop_pct=args.crop_pct, interpolation=args.interpolation,
        )
    print(json.dumps(result, indent=2) if args.json else format_eval(result))
    return 0


# --------------------------------------------------------------------------- bench models


# --------------------------------------------------------------------------- models


def _add_models(commands) -> None:
    p = commands.add_parser(
        "models",
        help="registered models and their official weights: parameters, FLOPs, top-1, source, cached",
        description="Lists the registered models (or, with --pretrained, every published checkpoint as NAME.TAG, "
        "the names create_model accepts) with parameters, FLOPs (multiply-adds at the input size), input size, "
        "the official ImageNet top-1, where the weights are published and whether they are in the torch hub cache "
        "($TORCH_HOME/hub/checkpoints). --download fetches the matched weights into that cache.",
    )
    p.add_argument("pattern", nargs="?", default=None, metavar="PATTERN",
                   help="shell pattern on names, timm names or NAME.TAG, e.g. 'litv2*' or 'swin_t.*' (default: all)")
    p.add_argument("--pretrained", action="store_true", help="one row per published checkpoint (NAME.TAG)")
    p.add_argument("--download", action="store_true",
                   help="download the matched weights (the default checkpoint of each model; every matched "
                   "checkpoint with --pretrained) and print where they are; needs a PATTERN")
    p.set_defaults(func=_run_models)


def _run_models(args) -> int:
    from hilovit.bench.common import format_table
    from hilovit.models.hub import DownloadError, download
    from hilovit.models.pretrained import get_pretrained, split_tag

    rows = _models_rows(args.pattern or "*", args.pretrained)
    if not rows:
        print(f"hilovit models: no {'published weights' if args.pretrained else 'model'} matches "
              f"{args.pattern!r}", file=sys.stderr)
        return 1
    cols = ["model", "params_M", "GFLOPs", "input", "top1", "weights", "cached"]
    if args.pretrained:
        cols = ["model", "params_M", "GFLOPs", "input", "crop_pct", "top1", "dataset", "weights", "hf_hub_id", "cached"]
    print(format_table(rows, cols))
    if not args.download:
        return 0
    if args.pattern is None:
        raise ValueError("--download needs a PATTERN naming the weights to fetch (e.g. litv2_s)")
    failed = 0
    for row in rows:
        name, tag = split_tag(row["model"])
        entry = get_pretrained(name, tag)
        if entry is None:
            continue
        try:
            path = download(entry.url, file_name=entry.file_name, sha256=entry.sha256)
        except DownloadError as e:
            print(f"hilovit models: {row['model']}: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"{row['model']}: {path}")
    return 1 if failed else 0


def _models_rows(pattern, pretrained):
    from hilovit.models.pretrained import model_rows

    return model_rows(pattern, pretrained=pretrained)


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hilovit", description="Fast hierarchical vision transformers: HiLo / LITv2 and Swin.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    bench = commands.add_parser("bench", help="benchmarks (attention mechanisms, whole models, segmentation)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    from hilovit.bench.cli import add_bench_commands

    add_bench_commands(bench_sub)
    _add_predict(commands)
    _add_export(commands)
    _add_viz(commands)
    _add_train(commands)
    _add_eval(commands)
    _add_models(commands)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    from hilovit.train.seg_cli import dispatch_segmentation

    status, argv = dispatch_segmentation(sys.argv[1:] if argv is None else list(argv))  # --task segmentation
    if status is not None:
        return status
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from hilovit import __version__

        print(__version__)
        return 0
    from hilovit.runtime import tune_allocator

    tune_allocator()  # reuse freed activation memory instead of page-faulting it in every pass
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    command = command_parser(parser, args)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, OSError) as e:
        print(f"{command.prog}: error: {user_message(e, command)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as e:
        from hilovit.device import is_out_of_memory

        if not is_out_of_memory(e):
            raise
        print(f"{command.prog}: error: {out_of_memory_hint(args)}", file=sys.stderr)
        return 3




if __name__ == "__main__":
    raise SystemExit(main())
