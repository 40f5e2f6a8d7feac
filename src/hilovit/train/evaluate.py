"""Evaluation: top-1, top-5, loss, per-class accuracy, confusion matrix, images/s.

:func:`evaluate` runs a model over evaluation batches (summing over processes when distributed);
:func:`run_eval` is ``hilovit eval``: it rebuilds the model, loads a checkpoint (refusing one
made for another architecture or number of classes, and saying what differs), evaluates and
writes a JSON report and a confusion-matrix PNG.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.train.distributed import all_reduce_sum

__all__ = ["evaluate", "run_eval", "autocast_context", "resolve_amp", "read_training_metadata", "check_fits"]


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for ``amp`` on ``device``: ``'auto'`` is bfloat16 on CPU, float16 on CUDA; ``'off'`` None."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if amp == "auto":
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    raise ValueError(f"amp={amp!r}: choose one of auto, bf16, fp16, off")


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``device`` with ``dtype``, or a no-op when ``dtype`` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    pipeline: nn.Module,
    num_classes: int,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    progress=None,
) -> Dict[str, Any]:
    """Evaluate ``model`` on ``batches`` of ``(uint8 images, targets)``.

    Args:
        model: the classifier (put in eval mode here, and left so).
        batches: an iterable of uint8 image batches and int64 targets (e.g. :class:`EvalBatches`).
        pipeline: uint8 -> normalised model input (:class:`BatchPipeline`; set to eval mode here).
        num_classes: K.
        device: where to run.
        amp_dtype: autocast dtype, or None for float32.
        progress: optional callable ``progress(done_images)`` called after each batch.

    Returns:
        ``{'n', 'loss', 'top1', 'top5', 'per_class_accuracy', 'confusion', 'seconds',
        'images_per_second'}``: accuracies in percent, ``top5`` is top-min(5, K),
        ``confusion[i][j]`` counts images of class i predicted as j, per-class accuracy is
        None for a class without images. Summed over all processes when distributed.
    """
    model.eval()
    pipeline.eval()
    k = min(5, num_classes)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    sums = torch.zeros(3, dtype=torch.float64)  # loss sum, top-k correct, images
    t0 = time.perf_counter()
    for images, targets in batches:
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with autocast_context(device, amp_dtype):
            logits = model(pipeline(images))
        logits = logits.float()
        sums[0] += float(F.cross_entropy(logits, targets, reduction="sum"))
        topk = logits.topk(k, dim=1).indices
        sums[1] += float((topk == targets[:, None]).any(dim=1).sum())
        sums[2] += targets.numel()
        pred = topk[:, 0]
        flat = (targets * num_classes + pred).cpu()
        confusion += torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)
        if progress is not None:
            progress(targets.numel())
    seconds = time.perf_counter() - t0
    all_reduce_sum(confusion)
    all_reduce_sum(sums)
    n = int(sums[2])
    if n == 0:
        raise ValueError("evaluate: the evaluation set is empty")
    per_class_total = confusion.sum(1)
    per_class = [None if per_class_total[i] == 0 else float(100.0 * confusion[i, i] / per_class_total[i])
                 for i in range(num_classes)]
    return {
        "n": n,
        "loss": float(sums[0] / n),
        "top1": float(100.0 * confusion.diagonal().sum() / n),
        "top5": float(100.0 * sums[1] / n),
        "top5_k": k,
        "per_class_accuracy": per_class,
        "confusion": confusion.long().tolist(),
        "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else float("nan"),
    }


# --------------------------------------------------------------------------- checkpoints
def read_training_metadata(path: Path) -> Dict[str, str]:
    """The metadata the engine stores in ``model.safetensors`` (model name, classes, sizes); {} if none."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - not a safetensors file: the loader reports it
        return {}


def check_fits(model: nn.Module, model_name: str, state_dict: Dict[str, torch.Tensor], meta: Dict[str, str],
               source: str) -> None:
    """Refuse a checkpoint made for another architecture or another number of classes, saying what differs.

    Raises:
        hilovit.CheckpointError: with the architecture / class counts / keys that differ.
    """
    from hilovit.models.checkpoint import CheckpointError

    sd = dict(state_dict)
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(dict(sd))
        except Exception as e:  # noqa: BLE001 - a foreign layout: reported as a misfit
            raise CheckpointError(f"checkpoint {source} does not fit {model_name}: {e}") from e
    trained_as = meta.get("model")
    if trained_as and trained_as != model_name and not _same_entrypoint(trained_as, model_name):
        raise CheckpointError(
            f"checkpoint {source} holds a {trained_as!r} model, not {model_name!r}; "
            f"use --model {trained_as} (or the checkpoint of a {model_name} run)"
        )
    head = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "head")
    head_w = sd.get(f"{head}.weight")
    own = model.state_dict()
    if head_w is not None and f"{head}.weight" in own and head_w.shape[0] != own[f"{head}.weight"].shape[0]:
        raise CheckpointError(
            f"checkpoint {source} has a classifier for {head_w.shape[0]} classes ({head}.weight "
            f"{tuple(head_w.shape)}), but the data has {own[f'{head}.weight'].shape[0]} classes"
        )
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs {model_name} {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            more = " ..." if len(shapes) > 5 else ""
            parts.append(f"{len(shapes)} shape(s) differ: " + "; ".join(shapes[:5]) + more)
        if missing:
            parts.append(f"{len(missing)} key(s) missing, e.g. {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {', '.join(unexpected[:5])}")
        raise CheckpointError(
            f"checkpoint {source} was made for another architecture than {model_name}: " + "; ".join(parts)
        )


def default_img_size(model_name: str) -> int:
    """The input side a registered model is built for (its ``pretrained_cfg['input_size']``)."""
    from hilovit.models import create_model

    probe = create_model(model_name)
    return int((getattr(probe, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])


def _same_entrypoint(a: str, b: str) -> bool:
    """Whether two names are the same registered model (a name and its alias)."""
    from hilovit.models.registry import model_entrypoint

    try:
        return model_entrypoint(a) is model_entrypoint(b)
    except ValueError:
        return False


def run_eval(
    model: str,
    checkpoint,
    data: str = "fashion-mnist",
    data_dir: Optional[str] = None,
    batch_size: int = 256,
    img_size: Optional[int] = None,
    in_chans: Optional[int] = None,
    eval_subset: Optional[int] = None,
    val_split: float = 0.0,
    seed: int = 0,
    amp: str = "off",
    device: str = "auto",
    workers: int = 2,
    threads: Optional[int] = None,
    output: Optional[str] = None,
    confusion_png: Optional[str] = None,
    use_ema: bool = False,
    progress: str = "auto",
    default_output: Optional[str] = None,
) -> Dict[str, Any]:
    """Evaluate a checkpoint on a dataset's evaluation split (``hilovit eval``).

    Args:
        model: registered model name; must match the checkpoint.
        checkpoint: ``model.safetensors``, a ``last.pt``, any state-dict file, or a training
            output folder (its ``model.safetensors``). The model's ``img_size`` and ``in_chans``
            come from the checkpoint's metadata when the engine wrote it, else from the data.
        data, data_dir, val_split, seed: the dataset (:func:`hilovit.data.build_datasets`); its
            evaluation split is used (Fashion-MNIST: the 10,000 test images).
        batch_size, amp, device, workers, threads: how to run.
        eval_subset: evaluate the first N images only.
        output: folder for ``eval.json`` and ``confusion.png`` (None: nothing written unless
            ``confusion_png`` is given).
        confusion_png: path of the confusion-matrix picture (overrides ``output``'s).
        use_ema: load the EMA weights of a ``last.pt`` instead of the raw ones.
        default_output: when neither ``output`` nor ``confusion_png`` is given, write into this
            folder beside the checkpoint (``hilovit eval`` uses ``'eval'``); None writes nothing.

    Returns:
        The metrics of :func:`evaluate` plus ``model``, ``checkpoint``, ``dataset``, ``classes``,
        ``per_class`` (name -> accuracy) and ``files``.
    """
    from hilovit.data import build_datasets
    from hilovit.models import create_model
    from hilovit.models.checkpoint import read_checkpoint
    from hilovit.models.registry import model_entrypoint
    from hilovit.predict import resolve_checkpoint
    from hilovit.train.distributed import resolve_device
    from hilovit.train.loaders import BatchPipeline, EvalBatches
    from hilovit.train.state import check_writable_dir

    model_entrypoint(model)  # unknown name: ValueError listing the choices
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"--batch-size={batch_size!r}: expected a positive integer")
    ckpt_path = resolve_checkpoint(checkpoint)
    if output is None and confusion_png is None and default_output:
        output = str(ckpt_path.parent / default_output)
    out_dir = check_writable_dir(output) if output else None
    if confusion_png:
        check_writable_dir(Path(confusion_png).expanduser().parent, "folder of --confusion-png")
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    meta = read_training_metadata(ckpt_path)
    if use_ema:
        raw = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if not isinstance(raw, dict) or not raw.get("ema"):
            raise ValueError(f"--ema: {str(ckpt_path)!r} holds no EMA weights "
                             "(only the last.pt of a --model-ema run does)")
        sd = raw["ema"]["module"]
        meta = {k: str(v) for k, v in (raw.get("metadata") or {}).items()}
    else:
        sd = read_checkpoint(ckpt_path)
        if not meta and ckpt_path.suffix in (".pt", ".pth"):
            try:
                raw = torch.load(ckpt_path, map_location="cpu", weights_only=True)
                if isinstance(raw, dict) and isinstance(raw.get("metadata"), dict):
                    meta = {k: str(v) for k, v in raw["metadata"].items()}
            except Exception:  # noqa: BLE001 - read_checkpoint already read it
                pass
    img_size = img_size or (int(meta["img_size"]) if meta.get("img_size") else None) or default_img_size(model)
    _, eval_ds, info = build_datasets(data, img_size, data_dir=data_dir, val_split=val_split, seed=seed)
    if eval_subset is not None:
        if not hasattr(eval_ds, "select"):
            raise ValueError("--eval-subset is not supported for this dataset")
        eval_ds = eval_ds.select(range(min(int(eval_subset), len(eval_ds))))
    chans = in_chans or (int(meta["in_chans"]) if meta.get("in_chans") else info.in_chans)
    net = create_model(model, num_classes=info.num_classes, in_chans=chans, img_size=img_size)
    check_fits(net, model, sd, meta, repr(str(ckpt_path)))
    net.load_state_dict(_as_model_keys(net, sd), strict=True)
    net.to(dev)
    mean = [float(v) for v in meta["mean"].split(",")] if meta.get("mean") else info.mean
    std = [float(v) for v in meta["std"].split(",")] if meta.get("std") else info.std
    pipeline = BatchPipeline(chans, img_size, mean, std, augment=None).to(dev)
    batches = EvalBatches(eval_ds, batch_size, workers=workers, pin_memory=dev.type == "cuda")
    bar = _eval_bar(len(eval_ds), progress)
    try:
        result = evaluate(net, batches, pipeline, info.num_classes, dev, resolve_amp(amp, dev),
                          progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    classes = list(info.classes)
    result.update({
        "model": model,
        "checkpoint": str(ckpt_path),
        "dataset": info.name,
        "split": info.eval_split,
        "classes": classes,
        "per_class": {c: a for c, a in zip(classes, result["per_class_accuracy"])},
        "files": {},
    })
    from hilovit.train.state import write_json
    from hilovit.viz import plot_confusion_matrix

    png = Path(confusion_png).expanduser() if confusion_png else (out_dir / "confusion.png" if out_dir else None)
    if png is not None:
        plot_confusion_matrix(result["confusion"], classes, png,
                              title=f"{model} on {info.name} ({info.eval_split}): top-1 {result['top1']:.2f}%")
        result["files"]["confusion_png"] = str(png)
    if out_dir is not None:
        result["files"]["json"] = str(out_dir / "eval.json")
        write_json(out_dir / "eval.json", result)
    return result


def _as_model_keys(model: nn.Module, sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    return filter_fn(dict(sd)) if filter_fn is not None else sd


def _eval_bar(total: int, progress: str):
    import sys

    if progress == "off" or (progress == "auto" and not sys.stderr.isatty()) or progress == "log":
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="eval", unit="img", dynamic_ncols=True, leave=False)


def format_eval(result: Dict[str, Any], classes: Optional[Sequence[str]] = None) -> str:
    """A short human-readable report of :func:`run_eval`'s result."""
    lines = [
        f"{result['model']} on {result['dataset']} ({result['split']}, {result['n']} images): "
        f"top-1 {result['top1']:.2f}%  top-{result['top5_k']} {result['top5']:.2f}%  loss {result['loss']:.4f}  "
        f"{result['images_per_second']:.0f} images/s",
        "per-class accuracy:",
    ]
    width = max(len(c) for c in result["classes"])
    for name, acc in result["per_class"].items():
        lines.append(f"  {name:<{width}}  {'-' if acc is None else f'{acc:6.2f}%'}")
    for kind, path in result["files"].items():
        lines.append(f"wrote {kind}: {path}")
    return "\n".join(lines)


def dumps(result: Dict[str, Any]) -> str:
    return json.dumps(result, indent=2)
