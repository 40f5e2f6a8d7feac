"""Command-line handling of segmentation: ``hilovit train|eval --task segmentation``, and ``hilovit predict`` and
``hilovit export`` on a segmentation checkpoint.

:func:`dispatch_segmentation` looks at the command line before the main parser: it takes out
``--task``, and answers the command itself when the task is segmentation (``--task segmentation``,
a ``--config`` recipe saying ``task: segmentation``, or ``predict``/``eval`` with a checkpoint whose
metadata says so). Importing this module imports nothing heavy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

__all__ = ["dispatch_segmentation", "build_seg_parser"]

TASKS = ("classification", "segmentation")


def _take_task(argv: List[str]) -> Tuple[Optional[str], List[str]]:
    """``--task X`` / ``--task=X`` removed from ``argv``; ValueError for an unknown task."""
    rest, task, i = [], None, 0
    while i < len(argv):
        a = argv[i]
        if a == "--task":
            if i + 1 >= len(argv):
                raise ValueError(f"--task needs a value: one of {', '.join(TASKS)}")
            task, i = argv[i + 1], i + 2
            continue
        if a.startswith("--task="):
            task, i = a.split("=", 1)[1], i + 1
            continue
        rest.append(a)
        i += 1
    if task is not None and task not in TASKS:
        raise ValueError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    return task, rest


def _option(argv: List[str], name: str) -> Optional[str]:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def _recipe_task(recipe: Optional[str]) -> Optional[str]:
    if recipe is None:
        return None
    try:
        from hilovit.train.config import load_recipe

        return load_recipe(recipe).get("task")
    except (FileNotFoundError, ValueError):
        return None  # the main parser reports it


def _checkpoint_task(checkpoint: Optional[str]) -> Optional[str]:
    if checkpoint is None:
        return None
    try:
        from hilovit.train.seg_eval import seg_metadata_of

        return seg_metadata_of(checkpoint).get("task")
    except (FileNotFoundError, ValueError, OSError):
        return None


def dispatch_segmentation(argv: List[str]) -> Tuple[Optional[int], List[str]]:
    """``(exit status, argv)``: the status when the command was a segmentation one (run here), else None and
    the command line without ``--task``."""
    if not argv or argv[0] not in ("train", "eval", "predict", "export"):
        return None, argv
    command = argv[0]
    try:
        task, rest = _take_task(argv[1:])
    except ValueError as e:
        print(f"hilovit {command}: error: {e}", file=sys.stderr)
        return 2, argv
    if task is None:
        if command == "train":
            task = _recipe_task(_option(rest, "--config"))
        else:
            task = _checkpoint_task(_option(rest, "--checkpoint"))
    if task != "segmentation":
        return None, [command, *rest]
    parser = build_seg_parser()
    args = parser.parse_args([command, *rest])
    try:
        return int(args.func(args) or 0), argv
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"hilovit {command}: error: {e}", file=sys.stderr)
        return 2, argv
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130, argv


def _ints(text: str) -> List[int]:
    try:
        values = [int(t) for t in text.replace("x", ",").split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected one or two integers such as 512 or 512,512, got {text!r}") from e
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected one or two positive integers, got {text!r}")
    return values if len(values) == 2 else values * 2


def _floats(text: str) -> List[float]:
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected two numbers LOW,HIGH, got {text!r}") from e
    return [lo, hi]


def build_seg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hilovit", description="Semantic segmentation (--task segmentation).")
    commands = parser.add_subparsers(dest="command", required=True)
    S = argparse.SUPPRESS
    p = commands.add_parser(
        "train", argument_default=S,
        help="train a segmentation model (Semantic FPN) on fashion-scenes, ADE20K or a mask folder",
        description="Trains a registered segmentation model; writes last.pt (every epoch, atomically), "
        "model.safetensors, metrics.csv, summary.json (test mIoU, mAcc, aAcc, IoU per class) and "
        "predictions.png into --output. Defaults: the official ADE20K recipe (AdamW lr 1e-4, weight decay "
        "1e-4, poly 0.9, 512x512 crops). Precedence: defaults < --config recipe < flags.")
    p.add_argument("--config", default=None, help="recipe: a YAML file or a packaged name (fashion-scenes)")
    p.add_argument("--model", help="registered segmentation model (default semfpn_litv2_s)")
    p.add_argument("--data", help="'fashion-scenes', an ADE20K folder, or images/ + masks/")
    p.add_argument("--num-classes", type=int, help="classes of a mask folder (required there)")
    p.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files (fashion-scenes)")
    p.add_argument("--output", help="output folder (default runs/seg)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="samples per step, all processes together")
    p.add_argument("--lr", type=float, help="AdamW learning rate (1e-4)")
    p.add_argument("--min-lr", type=float, help="final rate of the poly schedule (1e-6)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (1e-4)")
    p.add_argument("--poly-power", type=float, help="power of the poly schedule (0.9)")
    p.add_argument("--warmup-iters", type=int, help="linear warm-up steps (0)")
    p.add_argument("--clip-grad", type=float, help="max gradient norm (default: none)")
    p.add_argument("--crop-size", type=_ints, help="training crop H,W (512)")
    p.add_argument("--img-scale", type=_ints, help="LONG,SHORT bound of the random rescale (4 x crop, crop)")
    p.add_argument("--ratio-range", type=_floats, help="random rescale ratios LOW,HIGH (0.5,2.0)")
    p.add_argument("--eval-scale", type=_ints, help="LONG,SHORT rescale before inference (default: --img-scale)")
    p.add_argument("--no-photometric", dest="photometric", action="store_false", help="no photometric distortion")
    p.add_argument("--train-subset", type=int, metavar="N", help="the first N training samples (scenes)")
    p.add_argument("--eval-subset", type=int, metavar="N", help="the first N evaluation samples (scenes)")
    p.add_argument("--val-split", type=float, help="hold-out fraction of an images/ + masks/ folder")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last.pt")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --output holds a run")
    p.add_argument("--stop-at-epoch", type=int, help="end after this epoch (schedule still planned for --epochs)")
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--threads", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--eval-interval", type=int)
    p.add_argument("--eval-batch-size", type=int)
    p.add_argument("--predictions", type=int, help="test samples drawn in predictions.png (4; 0: none)")
    p.add_argument("--progress", choices=["auto", "bar", "log", "off"])
    p.add_argument("--log-interval", type=int)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run_train, config=None)

    p = commands.add_parser(
        "eval", help="mIoU, mAcc, aAcc and IoU per class of a segmentation checkpoint",
        description="Whole-image or sliding-window (--mode slide) inference over the evaluation split of --data; "
        "intersections and unions summed "
        "over the data set, then averaged over the classes present (as mmseg).")
    p.add_argument("--checkpoint", required=True, help="model.safetensors, last.pt or a training output folder")
    p.add_argument("--data", default="fashion-scenes")
    p.add_argument("--model", default=None, help="registered model (default: the checkpoint's)")
    p.add_argument("--num-classes", type=int, default=None, help="classes of a mask folder (default: the model's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--val-split", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-subset", type=int, default=None, metavar="N")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-scale", type=_ints, default=None, help="LONG,SHORT rescale (default: the training one)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], default="off")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--output", default=None, help="folder for eval.json")
    p.add_argument("--mode", choices=["whole", "slide"], default=None,
                   help="whole-image or sliding-window inference (default: the model's test_cfg)")
    p.add_argument("--crop-size", type=_ints, default=None, metavar="N|H,W",
                   help="slide window (default: test_cfg's, else the model's input size)")
    p.add_argument("--stride", type=_ints, default=None, metavar="N|H,W",
                   help="slide step (default: test_cfg's, else two thirds of the crop)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_eval)

    p = commands.add_parser(
        "predict", help="label maps (palette PNG) and overlays of images with a segmentation checkpoint")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--model", default=None, help="registered model (default: the checkpoint's)")
    p.add_argument("--output", default="predictions", help="folder for NAME_labels.png and NAME_overlay.png")
    p.add_argument("--eval-scale", type=_ints, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_predict)

    p = commands.add_parser(
        "export", help="ONNX with dynamic batch, height and width, verified in onnxruntime at two sizes")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--model", default=None, help="registered model (default: the checkpoint's)")
    p.add_argument("--output", required=True, help="the .onnx file")
    p.add_argument("--format", default="onnx", choices=["onnx"])
    p.add_argument("--sizes", type=_ints, nargs="+", default=[[128, 128], [96, 160]], metavar="H,W",
                   help="sizes verified (two at least; the first is traced), default 128,128 96,160")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--atol", type=float, default=1e-4)
    p.set_defaults(func=_run_export)
    return parser


def _run_train(args) -> int:
    from hilovit.train.seg_task import print_seg_summary, train_segmentation

    values = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config", "json")}
    summary = train_segmentation(recipe=args.config, **values)
    print_seg_summary(summary, as_json=getattr(args, "json", False))
    return 0


def _run_eval(args) -> int:
    import json

    from hilovit.train.seg_eval import format_seg_eval, run_seg_eval

    result = run_seg_eval(args.checkpoint, args.data, model=args.model, num_classes=args.num_classes,
                          data_dir=args.data_dir, val_split=args.val_split, seed=args.seed,
                          eval_subset=args.eval_subset, batch_size=args.batch_size, eval_scale=args.eval_scale,
                          amp=args.amp, device=args.device, threads=args.threads, workers=args.workers,
                          output=args.output, mode=args.mode, crop_size=args.crop_size, stride=args.stride)
    print(json.dumps(result, indent=2) if args.json else format_seg_eval(result))
    return 0


def _run_export(args) -> int:
    from hilovit.export import ExportVerificationError
    from hilovit.export_seg import export_segmenter

    try:
        res = export_segmenter(args.checkpoint, args.output, sizes=args.sizes, opset=args.opset, atol=args.atol,
                               model=args.model)
    except ImportError as e:
        print(f"hilovit export: {e}", file=sys.stderr)
        return 2
    except ExportVerificationError as e:
        print(f"hilovit export: verification failed: {e}", file=sys.stderr)
        return 1
    print(f"wrote {res.path} ({res.size_bytes / 2**20:.1f} MiB, opset {res.opset}, input (batch, {res.in_chans}, "
          f"height, width), {res.seconds:.1f} s)")
    print("onnxruntime vs PyTorch: max |diff| = " + ", ".join(f"{k}: {v:.2e}" for k, v in res.diffs.items()))
    return 0


def _run_predict(args) -> int:
    import json

    from hilovit.predict_seg import SegPredictor

    predictor = SegPredictor(args.checkpoint, model=args.model, device=args.device, eval_scale=args.eval_scale)
    out = Path(args.output)
    results, failed = [], 0
    for image in args.images:
        try:
            results.append(predictor.predict_file(image, out))
        except (ValueError, OSError) as e:
            print(f"hilovit predict: {image}: {e}", file=sys.stderr)
            failed += 1
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            shares = ", ".join(f"{k} {v:.1f}%" for k, v in list(r["class_shares"].items())[:5])
            print(f"{r['image']}: {r['height']}x{r['width']} -> {r['labels']}, {r['overlay']} ({shares})")
    return 1 if failed else 0
