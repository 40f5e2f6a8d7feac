"""The ``hilovit`` command. Sub-commands parse their options and call into the library; no logic here.

Building the parser imports neither torch nor any model, so ``hilovit --help`` and a mistyped
option answer at once. ``train`` and ``eval`` take ``--task``; without it the task follows from
the recipe's ``task:``, the run being resumed, the checkpoint's metadata or the model
(:func:`hilovit.tasks.resolve_task`); ``predict`` and ``export`` find it the same way. Every
command's errors go through :func:`main`'s one handler: one line on stderr naming the option as
its flag, an exit status, no traceback (``HILOVIT_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

from hilovit.cli_support import (
    OneLineParser,
    command_parser,
    device_name,
    floats,
    int_pair,
    non_negative_int,
    onnx_opset,
    options_from_cli,
    out_of_memory_hint,
    positive_float,
    positive_floats,
    positive_int,
    user_message,
)
from hilovit.cli_train import add_train_options
from hilovit.tasks import TASK_NAMES

S = argparse.SUPPRESS  # options not given stay unset: a recipe, a checkpoint or a resumed run keeps its own
_NORMS = {"imagenet": None, "half": ((0.5,), (0.5,)), "none": ((0.0,), (1.0,))}  # imagenet: data/constants.py


def _task_option(p, what: str) -> None:
    p.add_argument("--task", choices=TASK_NAMES, default=None,
                   help=f"{', '.join(TASK_NAMES)} (default: from {what})")


def _given(args, *skip: str) -> Dict[str, Any]:
    """The options given on the command line (unset ones are absent), without the command's own keys."""
    drop = {"func", "command", "version", "json", "task", "viz_command", "bench_command", *skip}
    return {k: v for k, v in vars(args).items() if k not in drop}


def _task_options(task, given: Dict[str, Any], accepted, command: str) -> Dict[str, Any]:
    """``given`` restricted to what ``task`` takes; an option another task takes is refused by name."""
    foreign = sorted(k for k in given if k not in accepted)
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise ValueError(f"{flags}: not an option of {command} for {task.name}")
    return given


# --------------------------------------------------------------------------- predict
def _add_predict(commands) -> None:
    p = commands.add_parser(
        "predict",
        help="predict images with a trained model: classes, label maps (segmentation), boxes (detection)",
        description="Predicts each image (any Pillow format and mode) with the model of --checkpoint (its task, "
        "model and preprocessing recorded beside the weights) or published weights (--model with --pretrained). "
        "Unreadable images are reported by name and the others still predicted; the exit status is 1 when any "
        "image failed.", argument_default=S)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    _task_option(p, "the checkpoint or the model")
    p.add_argument("--model", help="registered model name (default: the one the checkpoint records)")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint",
                         help="model.safetensors, last.pt, any state-dict file, or a training output folder")
    weights.add_argument("--pretrained", nargs="?", const=True, metavar="TAG|FILE|URL",
                         help="published weights instead of a checkpoint: alone the model's default (downloaded "
                         "once), or a tag (alpha_0_5, ms_in22k_ft_in1k), a file, a URL, or a model repository "
                         "(hf-hub:org/name, local-dir:PATH), whose config.json names the model")
    p.add_argument("--device", type=device_name, help="cpu (default), cuda, cuda:N")
    p.add_argument("--json", action="store_true", default=False, help="print one JSON document instead of text")
    g = p.add_argument_group("classification")
    g.add_argument("--topk", type=positive_int, help="classes to list per image (default 5)")
    g.add_argument("--batch-size", type=positive_int, help="images per forward pass (default 16)")
    g.add_argument("--norm", choices=sorted(_NORMS),
                   help="normalisation when the checkpoint records none (default: the model's own, with a notice): "
                   "imagenet, half (mean 0.5, std 0.5) or none (mean 0, std 1)")
    g.add_argument("--mean", type=floats, help="normalisation mean, comma-separated (with --std); 1 value or one "
                   "per input channel")
    g.add_argument("--std", type=positive_floats, help="normalisation std, comma-separated, above 0 (with --mean); "
                   "1 value or one per input channel")
    g = p.add_argument_group("segmentation and detection")
    g.add_argument("--output", help="folder for the pictures (segmentation: NAME_labels.png, NAME_overlay.png; "
                   "detection: NAME_detections.png and NAME_detections.json, COCO results) (default predictions)")
    g.add_argument("--eval-scale", type=int_pair, metavar="LONG,SHORT",
                   help="rescale before inference (default: the training run's or the model's test scale)")
    g.add_argument("--max-pixels", type=positive_int, metavar="N",
                   help="without an eval scale, refuse images above N pixels (default 64000000)")
    g.add_argument("--score-thr", type=float, help="detection: the lowest score drawn and listed (0.3)")
    p.set_defaults(func=_run_predict)


def _predict_normalisation(given: Dict[str, Any]) -> None:
    norm = given.pop("norm", None)
    if norm and ("mean" in given or "std" in given):
        raise ValueError("--norm and --mean/--std choose the same thing: give one of them")
    if ("mean" in given) != ("std" in given):
        raise ValueError("--mean and --std go together: give both")
    if norm == "imagenet":
        from hilovit.data import constants

        given["mean"], given["std"] = constants.IMAGENET_DEFAULT_MEAN, constants.IMAGENET_DEFAULT_STD
    elif norm:
        given["mean"], given["std"] = _NORMS[norm]


def _run_predict(args) -> int:
    import warnings

    from hilovit.tasks import resolve_task

    given = _given(args)
    images = given.pop("images")
    task = resolve_task(args.task, checkpoint=given.get("checkpoint"), model=given.get("model"),
                        pretrained=given.get("pretrained"))
    _predict_normalisation(given)
    options = _task_options(task, given, task.predict_options, "predict")
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        results = task.predict_files(images, **options)
    for note in (n for n in notes if issubclass(n.category, UserWarning)):
        text = str(note.message).replace("pass mean= and std=", "use --norm or --mean/--std")
        print(f"hilovit predict: note: {text}", file=sys.stderr)
    failed = [r for r in results if _error_of(r)]
    for r in failed:
        print(f"hilovit predict: {_source_of(r)}: {_error_of(r)}", file=sys.stderr)
    if args.json or len(failed) < len(results):
        print(task.format_predictions(results, as_json=args.json))
    return 1 if failed else 0


def _error_of(result) -> Optional[str]:
    return result.get("error") if isinstance(result, dict) else getattr(result, "error", None)


def _source_of(result) -> str:
    return result.get("image") if isinstance(result, dict) else getattr(result, "source", "?")


# --------------------------------------------------------------------------- export
def _add_export(commands) -> None:
    p = commands.add_parser(
        "export",
        help="export a model to ONNX (verified with onnxruntime) or a Hugging Face model repository",
        description="Exports with torch.onnx (TorchScript tracer), checks the file with onnxruntime against PyTorch "
        "on random inputs and prints the largest difference. A classifier has its input size fixed in the graph; "
        "a segmenter has symbolic batch, height and width, verified at sizes that are multiples of neither 32 nor "
        "the windows; so has a detector, whose graph ends at its raw head maps (Mask R-CNN: the RPN maps and the "
        "FPN maps, with its box and mask heads in a second file, OUTPUT with .onnx replaced by .roi_heads.onnx). "
        "The files are written only when every difference is at most --atol (exit status 1 otherwise), all or "
        "none, and existing files only with --overwrite. --format hub writes a model repository folder instead "
        "(config.json, model.safetensors, README.md model card from the run's summary.json and config.yaml), which "
        "create_model('local-dir:OUTPUT') and predict --pretrained local-dir:OUTPUT read; --push org/name uploads it "
        "to the Hugging Face hub (needs huggingface_hub: pip install 'hilovit[hub]').")
    _task_option(p, "the checkpoint or the model")
    p.add_argument("--model", default=None, help="registered model name (default: the one the checkpoint records)")
    p.add_argument("--checkpoint", default=None, help="weights to export (default: random initialisation)")
    p.add_argument("--format", default="onnx", choices=["onnx", "hub"],
                   help="onnx (default): an ONNX graph; hub: a model repository folder (config.json, "
                   "model.safetensors, README.md)")
    p.add_argument("--output", default=None, help="the .onnx file to write (hub: the folder)")
    p.add_argument("--push", metavar="ORG/NAME", default=None,
                   help="hub: upload the repository to the Hugging Face hub (HF_TOKEN or a stored login)")
    p.add_argument("--private", action="store_true", help="hub: create the --push repository private")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="symbolic batch dimension (verified at batch 1 and 3); default: batch 1")
    p.add_argument("--img-size", type=positive_int, nargs="+", metavar=("H", "W"), default=None,
                   help="classification: the input size fixed in the graph (default: the model's input size)")
    p.add_argument("--sizes", type=int_pair, nargs="+", metavar="H,W", default=None,
                   help="segmentation: the sizes verified, the first traced (default 128,128 100,70 77,129 33,33)")
    p.add_argument("--opset", type=onnx_opset, default=17,
                   help="ONNX opset, from 14 to the newest this torch writes (default 17)")
    p.add_argument("--atol", type=positive_float, default=1e-4, help="largest accepted |onnx - torch| (1e-4)")
    p.add_argument("--no-verify", action="store_true", help="only check the file with onnx.checker")
    p.set_defaults(func=_run_export)


def _run_export_hub(args) -> int:
    """``export --format hub``: a model repository folder (``--output``) and/or an upload (``--push``)."""
    from hilovit import publish

    onnx_only = {"--img-size": args.img_size is not None, "--sizes": args.sizes is not None,
                 "--dynamic-batch": args.dynamic_batch, "--no-verify": args.no_verify, "--opset": args.opset != 17,
                 "--atol": args.atol != 1e-4}
    given = [flag for flag, on in onnx_only.items() if on]
    if given:
        raise ValueError(f"{', '.join(given)}: not an option of export --format hub (ONNX only)")
    if args.checkpoint is None:
        raise ValueError("--checkpoint: export --format hub needs a training run or checkpoint to publish")
    if args.output is None and args.push is None:
        raise ValueError("--output: export --format hub needs --output DIR, --push ORG/NAME, or both")
    from hilovit.tasks import resolve_task

    resolve_task(args.task, checkpoint=args.checkpoint)  # --task against what the checkpoint records
    if args.model is not None:
        from hilovit.models._builder import load_model

        load_model(args.checkpoint, args.model)  # --model against the recorded name (aliases accepted)
    if args.output is not None:
        folder = publish.save_pretrained(args.checkpoint, args.output, overwrite=args.overwrite)
        print(f"wrote {folder} (config.json, model.safetensors, README.md); load it with "
              f"hilovit.create_model('local-dir:{folder}')")
    if args.push is not None:
        url = publish.push_to_hub(args.checkpoint, args.push, private=args.private)
        print(f"uploaded to {url}; load it with hilovit.create_model('hf-hub:{args.push}')")
    return 0


def _run_export(args) -> int:
    import hilovit.export as ex

    if args.format == "hub":
        return _run_export_hub(args)
    if args.push is not None or args.private:
        raise ValueError("--push/--private: options of export --format hub")
    if args.output is None:
        raise ValueError("--output: export needs the .onnx file to write")
    if args.img_size is not None and len(args.img_size) > 2:
        raise ValueError(f"--img-size takes H or H W, got {len(args.img_size)} values")
    if args.img_size is not None and args.sizes is not None:
        raise ValueError("--img-size (a classifier's fixed size) and --sizes (a dense model's checks): give one")
    try:
        result = ex.export_model(args.model, args.output, checkpoint=args.checkpoint, format=args.format,
                                 img_size=args.img_size, dynamic_batch=args.dynamic_batch, opset=args.opset,
                                 verify=not args.no_verify, atol=args.atol, sizes=args.sizes, task=args.task,
                                 overwrite=args.overwrite)
    except ex.ExportVerificationError as e:
        print(f"hilovit export: verification failed: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    size = ", ".join(str(v) for v in result.input_shape)
    if result.dynamic_size:
        size = f"{result.input_shape[0]}, height, width"
    batch = "batch" if result.dynamic_batch else "1"
    print(f"wrote {result.path} ({result.size_bytes / 2**20:.1f} MiB, opset {result.opset}, input ({batch}, {size}), "
          f"{result.seconds:.1f} s)")
    if result.diffs:
        label = "batch " if not result.dynamic_size else ""
        per = ", ".join(f"{label}{b}: {d:.2e}" for b, d in result.diffs.items())
        print(f"onnxruntime vs PyTorch: max |diff| = {result.max_abs_diff:.2e} ({per}; tolerance {args.atol:g})")
    for other in result.companions:  # further graphs written with it (Mask R-CNN: its RoI heads)
        print(f"wrote {other.path} ({other.size_bytes / 2**20:.1f} MiB, opset {other.opset}, inputs "
              f"{', '.join(other.input_names)}, {other.seconds:.1f} s)")
        if other.diffs:
            per = ", ".join(f"{b}: {d:.2e}" for b, d in other.diffs.items())
            print(f"onnxruntime vs PyTorch: max |diff| = {other.max_abs_diff:.2e} ({per}; tolerance {args.atol:g})")
    for note in result.notes:
        print(note)
    return 0


# --------------------------------------------------------------------------- viz
def _add_viz_common(p) -> None:
    p.add_argument("image", metavar="IMAGE", help="an image file (any Pillow format)")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--checkpoint", default=None, help="trained weights (default: random initialisation)")
    p.add_argument("--output", required=True, help="the picture to write: .png, .jpg/.jpeg or .webp")
    p.add_argument("--layer", type=int, default=None, help="layer index (see the sub-command's help)")
    p.add_argument("--img-size", type=positive_int, nargs="+", metavar=("H", "W"), default=None,
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


def _viz_size(sizes, name: str = "img_size"):
    """``--img-size H [W]`` (or the option ``name``) checked before the model is built."""
    if sizes is not None and len(sizes) > 2:
        raise ValueError(f"--{name.replace('_', '-')} takes H or H W, got {len(sizes)} values")
    if sizes is not None:
        from hilovit.options import check_image_size

        check_image_size(sizes * (3 - len(sizes)), name)
    return sizes


def _run_viz_hilo(args) -> int:
    from hilovit.viz import viz_hilo

    path, branches = viz_hilo(args.image, args.model, args.output, checkpoint=args.checkpoint, layer=args.layer,
                              img_size=_viz_size(args.img_size), cutoff=args.cutoff)
    print(branches.summary())
    print(f"wrote {path}")
    return 0


def _run_viz_attention(args) -> int:
    from hilovit.viz import viz_attention

    path, amap = viz_attention(args.image, args.model, args.output, checkpoint=args.checkpoint, layer=args.layer,
                               img_size=_viz_size(args.img_size), query=args.query, heads=args.heads)
    print(amap.summary())
    print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- app
def _add_app(commands) -> None:
    p = commands.add_parser(
        "app",
        help="a local page (Gradio) to look at predictions: drop an image, see the classes, overlay or boxes",
        description="Serves a page on http://HOST:PORT: drop an image to see what the model predicts (a classifier's "
        "top-5 classes, a segmenter's overlay, a detector's boxes and masks) and, for LITv2 classifiers, what "
        "HiLo's Hi-Fi and Lo-Fi branches see (hilovit viz hilo). Needs the extra: pip install 'hilovit[app]'.")
    p.add_argument("--checkpoint", required=True, metavar="RUN_OR_NAME",
                   help="a training output folder, a checkpoint file, or a registered model name (published weights)")
    p.add_argument("--model", default=None, help="registered model name (default: the one the checkpoint records)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=None, help="port (default: the first free from 7860)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu (default), cuda, cuda:N")
    p.add_argument("--hilo-size", type=positive_int, nargs="+", metavar=("H", "W"), default=None,
                   help="input size of the HiLo picture, as hilovit viz hilo --img-size (default: the model's)")
    p.set_defaults(func=_run_app)


def _run_app(args) -> int:
    from hilovit.app.page import serve

    serve(args.checkpoint, model=args.model, host=args.host, port=args.port, device=args.device,
          hilo_size=_viz_size(args.hilo_size, "hilo_size"))
    return 0


# --------------------------------------------------------------------------- train
def _add_train(commands) -> None:
    p = commands.add_parser(
        "train",
        help="train a model (classification, segmentation, detection) on its embedded data or a folder; torchrun "
        "for many processes",
        description="Trains a registered model and writes last.pt (every epoch, atomically), model.safetensors, "
        "metrics.csv, summary.json and curves.png into --output (an empty or new folder, or an earlier run's). "
        "Precedence: defaults < --config recipe < flags. The task follows from --task, the recipe, the run being "
        "resumed or the model (semfpn_* models are segmentation, retinanet_*/mask_rcnn_* detection). "
        "Distributed: torchrun --nproc_per_node=N -m "
        "hilovit train ... (--batch-size is the global batch).",
        argument_default=S,
    )
    add_train_options(p)
    p.set_defaults(func=_run_train, config=None, task=None)


def _run_train(args) -> int:
    from hilovit.train import print_summary, train
    from hilovit.train.report import use_plain_output

    use_plain_output()  # the training lines on stdout, as plain text
    summary = train(recipe=args.config, task=args.task, **options_from_cli(_given(args, "config")))
    print_summary(summary, as_json=getattr(args, "json", False))  # rank 0 only under torchrun
    return 0


# --------------------------------------------------------------------------- eval
def _add_eval(commands) -> None:
    p = commands.add_parser(
        "eval",
        help="evaluate a checkpoint: top-1/top-5 (classification), mIoU (segmentation), COCO AP (detection)",
        description="Evaluates a checkpoint (model.safetensors, last.pt, a training output folder, or any state "
        "dict) on the evaluation split of the data it was trained on (as recorded beside it) or of --data, or "
        "published weights (--pretrained) on --data. Classification: top-1, top-5, loss, per-class accuracy and "
        "the confusion matrix; a folder of class folders alone (an ImageNet val/ folder) is evaluated whole, with "
        "the weights' preprocessing for --pretrained (the official protocol). Segmentation: mIoU, mAcc, aAcc and "
        "IoU per class, whole-image or sliding-window. Detection: COCO box AP (and mask AP), AP50, AP75, AP "
        "for small/medium/large objects and per class, through pycocotools' COCOeval. An earlier eval.json is "
        "kept: the new report gets the "
        "next free name (eval-2.json, ...) unless --overwrite.", argument_default=S)
    _task_option(p, "the checkpoint or the model")
    p.add_argument("--model", help="registered model name (default: the one the checkpoint records)")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="model.safetensors, last.pt or a training output folder")
    weights.add_argument("--pretrained", nargs="?", const=True, metavar="TAG|FILE|URL",
                         help="published weights instead of a checkpoint: alone the model's default (the official "
                         "weights), or a tag (alpha_0_5, ms_in22k_ft_in1k), a file, a URL or hf-hub:org/name")
    p.add_argument("--data", help="the embedded data or a folder (default: the data the checkpoint records)")
    p.add_argument("--data-dir")
    p.add_argument("--val-split", type=float,
                   help="as in training, for folders without val/ (default: as recorded, else 0)")
    p.add_argument("--seed", type=int, help="seed of the --val-split hold-out (default: as recorded)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--eval-subset", type=positive_int, metavar="N", help="the first N samples only")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--device", type=device_name)
    p.add_argument("--threads", type=positive_int)
    p.add_argument("--workers", type=non_negative_int)
    p.add_argument("--output", help="folder for eval.json (default: eval/ beside the checkpoint; nothing written "
                   "for --pretrained)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier eval.json")
    p.add_argument("--json", action="store_true", default=False, help="print the results as JSON")
    p.add_argument("--progress", choices=["auto", "bar", "off"])
    g = p.add_argument_group("classification")
    g.add_argument("--crop-pct", type=float,
                   help="image folders: resize the shorter side to img_size / crop_pct, then centre-crop "
                   "(default: the weights' value for --pretrained, 1.0 for checkpoints)")
    g.add_argument("--interpolation", choices=["bicubic", "bilinear", "nearest"],
                   help="resize filter for image folders (default: the weights' for --pretrained, else bilinear)")
    g.add_argument("--img-size", type=positive_int)
    g.add_argument("--in-chans", type=positive_int)
    g.add_argument("--ema", dest="use_ema", action="store_true", help="the EMA weights of a last.pt")
    g.add_argument("--confusion-png", help="path of the confusion-matrix picture")
    g = p.add_argument_group("segmentation and detection")
    g.add_argument("--num-classes", type=positive_int, help="classes of a mask folder (default: the model's)")
    g.add_argument("--eval-scale", type=int_pair, metavar="LONG,SHORT",
                   help="rescale (default: the training one, or a detector's test scale)")
    g.add_argument("--mode", choices=["whole", "slide"],
                   help="whole-image or sliding-window inference (default: the model's test_cfg)")
    g.add_argument("--crop-size", type=int_pair, metavar="N|H,W",
                   help="slide window (default: test_cfg's, else the model's input size)")
    g.add_argument("--stride", type=int_pair, metavar="N|H,W",
                   help="slide step (default: test_cfg's, else two thirds of the crop)")
    p.set_defaults(func=_run_eval, task=None)


_EVAL_DEFAULTS = {"classification": {"default_output": "eval", "batch_size": 256, "amp": "off", "device": "auto"},
                  "segmentation": {"batch_size": 8, "amp": "off", "device": "auto"},
                  "detection": {"batch_size": 8, "amp": "off", "device": "auto"}}


def _run_eval(args) -> int:
    import json

    from hilovit.tasks import resolve_task

    given = _given(args)
    task = resolve_task(args.task, checkpoint=given.get("checkpoint"), model=given.get("model"))
    options = {**_EVAL_DEFAULTS.get(task.name, {}), **_task_options(task, given, task.eval_options, "eval")}
    result = task.run_eval(**options)
    print(json.dumps(result, indent=2) if args.json else task.format_eval(result))
    return 0


# --------------------------------------------------------------------------- models
def _add_models(commands) -> None:
    p = commands.add_parser(
        "models",
        help="registered models and their official weights: task, parameters, FLOPs, metric, source, cached",
        description="Lists the registered models (or, with --pretrained, every published checkpoint as NAME.TAG, "
        "the names create_model accepts) with their task, parameters, FLOPs (multiply-adds at the input size), "
        "input size, the official metric, where the weights are published and whether they are in the torch hub "
        "cache ($TORCH_HOME/hub/checkpoints). A PATTERN is a shell pattern ('litv2*', 'swin_t.*') or a word "
        "found anywhere in the name ('litv2'). --download fetches the matched weights into that cache.",
    )
    p.add_argument("pattern", nargs="?", default=None, metavar="PATTERN",
                   help="shell pattern or word on names, timm names or NAME.TAG (default: all)")
    p.add_argument("--pretrained", action="store_true", help="one row per published checkpoint (NAME.TAG)")
    p.add_argument("--download", action="store_true",
                   help="download the matched weights (the default checkpoint of each model; every matched "
                   "checkpoint with --pretrained) and print where they are; needs a PATTERN")
    p.set_defaults(func=_run_models)


def _run_models(args) -> int:
    from hilovit.bench.common import format_table
    from hilovit.models._builder import model_rows
    from hilovit.models.hub import DownloadError, download
    from hilovit.models.pretrained import get_pretrained
    from hilovit.models.registry import split_tag

    if args.download and args.pattern is None:
        raise ValueError("--download needs a PATTERN naming the weights to fetch (e.g. litv2_s)")
    rows = model_rows(args.pattern or "*", pretrained=args.pretrained)
    if not rows:
        print(f"hilovit models: no {'published weights' if args.pretrained else 'model'} matches "
              f"{args.pattern!r}", file=sys.stderr)
        return 1
    cols = ["model", "params_M", "GFLOPs", "input", "result", "weights", "cached"]
    if args.pretrained:
        cols = ["model", "params_M", "GFLOPs", "input", "crop_pct", "result", "dataset", "weights", "hf_hub_id",
                "cached"]
    print(format_table(rows, cols))
    if not args.download:
        return 0
    failed = 0
    for row in rows:
        name, tag = split_tag(row["model"])
        entry = get_pretrained(name, tag)
        if entry is None:
            continue
        try:
            path = download(entry.url, file_name=entry.file_name, sha256=entry.sha256)
        except DownloadError as e:
            print(f"hilovit models: {row['model']}: {' '.join(str(e).split())}", file=sys.stderr)
            failed += 1
            continue
        print(f"{row['model']}: {path}")
    return 1 if failed else 0


# --------------------------------------------------------------------------- entry point
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="hilovit", description="Fast hierarchical vision transformers: HiLo / LITv2 and Swin.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    bench = commands.add_parser("bench", help="benchmarks (attention mechanisms, whole models, segmentation, data)")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True, parser_class=OneLineParser)
    from hilovit.bench.cli import add_bench_commands

    add_bench_commands(bench_sub)
    _add_predict(commands)
    _add_export(commands)
    _add_viz(commands)
    _add_app(commands)
    _add_train(commands)
    _add_eval(commands)
    _add_models(commands)
    return parser


def _fail(command: argparse.ArgumentParser, error: BaseException) -> None:
    print(f"{command.prog}: error: {user_message(error, command)}", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.version:
        from hilovit import __version__

        print(__version__)
        return 0
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    from hilovit.runtime import tune_allocator

    tune_allocator()  # reuse freed activation memory instead of page-faulting it in every pass
    command = command_parser(parser, args)
    debug = os.environ.get("HILOVIT_DEBUG", "").strip() not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, LookupError) as e:
        if debug:
            raise
        _fail(command, e)
        return 2
    except (RuntimeError, MemoryError, AssertionError) as e:
        from hilovit.device import is_out_of_memory
        from hilovit.models.hub import DownloadError

        if debug:
            raise
        if isinstance(e, DownloadError):
            _fail(command, e)
            return 2
        if is_out_of_memory(e):
            print(f"{command.prog}: error: {out_of_memory_hint(args)}", file=sys.stderr)
            return 3
        print(f"{command.prog}: error: {type(e).__name__}: {user_message(e, command)} (HILOVIT_DEBUG=1 shows "
              "where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
