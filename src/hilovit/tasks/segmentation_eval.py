"""Segmentation evaluation: whole-image inference, mmseg's mIoU over a data set, segmentation checkpoints.

Whole-image inference (mmseg's ``mode='whole'``): the uint8 image is optionally rescaled keeping
its aspect ratio (the official test ``Resize(img_scale=(2048, 512), keep_ratio=True)``), scaled to
[0, 1] and normalised, run through the model, and the logits are resized bilinearly to the size of
the label map before the argmax. The metrics sum intersections and unions over the whole data set
(:class:`~hilovit.tasks.segmentation_metrics.SegMetric`), then average IoU over the classes present.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from hilovit.runtime import autocast_context
from hilovit.tasks.segmentation_metrics import SegMetric

__all__ = ["seg_cross_entropy", "normalize_images", "resolve_inference", "infer_logits", "evaluate_segmentation",
           "load_seg_checkpoint", "run_seg_eval", "format_seg_eval", "seg_metadata_of", "build_segmenter"]

ModelSource = Union[str, nn.Module, Callable[..., nn.Module]]


def seg_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
                      normalizer: Optional[float] = None) -> torch.Tensor:
    """Pixel-wise cross-entropy averaged over the pixels whose label is not ``ignore_index``.

    ``logits`` (B, K, h, w) are resized bilinearly to the label size (B, H, W) when they differ (as
    mmseg's decode head does). A batch without any labelled pixel gives 0 (with a gradient path),
    not NaN. ``normalizer`` divides the summed loss instead of this batch's labelled-pixel count
    (the training engine passes the count over all processes divided by their number, so that the
    gradients DDP averages equal one process's on the whole batch).
    """
    if logits.dim() != 4 or labels.dim() != 3 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"seg_cross_entropy: logits (B, K, H, W) and labels (B, H, W) expected, got "
                         f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    if tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]):
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    labels = labels.long()
    if not bool((labels != ignore_index).any()):
        return logits.float().sum() * 0.0
    if normalizer is not None:
        return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum") / normalizer
    return F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)


def normalize_images(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std`` per channel."""
    x = images.float().div_(255.0)
    m = torch.as_tensor(list(mean), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(list(std), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if m.shape[1] not in (1, x.shape[1]):
        raise ValueError(f"normalize_images: {m.shape[1]} mean values for {x.shape[1]}-channel images")
    return (x - m) / s


def resolve_inference(model: nn.Module, mode: Optional[str] = None, crop_size=None, stride=None
                      ) -> Dict[str, Any]:
    """The inference options for ``model``: ``{'mode': 'whole'}`` or ``{'mode': 'slide', 'crop_size': (h, w),
    'stride': (h, w)}``.

    Unset values come from the model's ``test_cfg``; a slide crop the ``test_cfg`` does not give is
    the model's input size (``pretrained_cfg['input_size']``) and a missing stride two thirds of the
    crop (as the official 512 / 341 configs). A crop larger than the image is allowed (the window is
    cut to the image, as mmseg); a non-positive crop or stride, a stride above the crop, an unknown
    mode, or a crop/stride with ``mode='whole'`` is a ValueError.
    """
    test_cfg = dict(getattr(model, "test_cfg", None) or {"mode": "whole"})
    chosen = test_cfg.get("mode", "whole") if mode is None else mode
    if chosen not in ("whole", "slide"):
        raise ValueError(f"mode must be 'whole' or 'slide', got {chosen!r}")
    if chosen == "whole":
        if crop_size is not None or stride is not None:
            raise ValueError(f"crop_size={crop_size!r} and stride={stride!r} apply to mode='slide' only; "
                             "mode is 'whole'")
        return {"mode": "whole"}
    if not hasattr(model, "slide_inference"):
        raise ValueError(f"mode='slide': {type(model).__name__} has no sliding-window inference")

    def pair(value, name):
        value = [value, value] if isinstance(value, int) else list(value)
        if len(value) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
            raise ValueError(f"{name} must be a positive int or (h, w) pair, got {value!r}")
        return int(value[0]), int(value[1])

    if crop_size is None:
        crop_size = test_cfg.get("crop_size") or tuple(getattr(model, "pretrained_cfg", {}).get("input_size",
                                                                                                (3, 512, 512))[1:])
    crop = pair(crop_size, "crop_size")
    if stride is None:
        stride = test_cfg.get("stride") if test_cfg.get("crop_size") is not None else None
        stride = stride or tuple(max(1, c * 2 // 3) for c in crop)
    step = pair(stride, "stride")
    if step[0] > crop[0] or step[1] > crop[1]:
        raise ValueError(f"stride {step} must not exceed crop_size {crop} (the windows would leave pixels uncovered)")
    return {"mode": "slide", "crop_size": crop, "stride": step}


@torch.no_grad()
def infer_logits(model: nn.Module, images: torch.Tensor, mean, std, out_size: Optional[Tuple[int, int]] = None,
                 eval_scale: Optional[Tuple[int, int]] = None, amp_dtype: Optional[torch.dtype] = None,
                 inference: Optional[Dict[str, Any]] = None, resize: bool = True) -> torch.Tensor:
    """Inference on uint8 images (B, C, H, W) of one size: float32 logits (B, K, *out_size).

    ``eval_scale`` (long, short) rescales the input first as the official test pipeline; the logits
    are resized to ``out_size`` (default: the input size) bilinearly. ``inference``: the options of
    :func:`resolve_inference` (default: ``model(x)``, i.e. the model's ``test_cfg``); with
    ``mode='slide'`` the logits come from the model's ``inference(x, 'slide', crop_size, stride)``.
    ``resize=False``: the model's logits at the size it gives them (``out_size`` ignored).
    """
    from hilovit.data.seg_transforms import rescale_for_eval

    if eval_scale is not None:
        images = torch.stack([rescale_for_eval(im, tuple(eval_scale)) for im in images.cpu()]).to(images.device)
    out_size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
    x = normalize_images(images, mean, std)
    with autocast_context(x.device, amp_dtype):
        if inference is None:
            logits = model(x)
        elif inference["mode"] == "slide":
            logits = model.inference(x, "slide", inference["crop_size"], inference["stride"])
        else:
            logits = model.inference(x, "whole") if hasattr(model, "inference") else model(x)
    logits = logits.float()
    if resize and tuple(logits.shape[-2:]) != out_size:
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def infer_labels(model: nn.Module, images: torch.Tensor, mean, std, out_size: Optional[Tuple[int, int]] = None,
                 eval_scale: Optional[Tuple[int, int]] = None, inference: Optional[Dict[str, Any]] = None,
                 rows_per_chunk: int = 512) -> torch.Tensor:
    """Label maps (B, *out_size) int64: the argmax of :func:`infer_logits`, with the bilinear resize of
    the logits to ``out_size`` done ``rows_per_chunk`` output rows at a time, so a large image never
    holds its full-size logits in memory (a 10000 x 10000 image with 11 classes: 4.4 GB). Each band
    uses ``F.interpolate``'s sampling positions and weights (float32, as its CPU kernel); the labels
    equal the argmax of the whole resize except where two classes tie to within float rounding."""
    out_size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
    logits = infer_logits(model, images, mean, std, None, eval_scale, None, inference, resize=False)
    H, W = out_size
    if tuple(logits.shape[-2:]) == out_size or H * W <= rows_per_chunk * max(W, 1024):
        return F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False).argmax(1) \
            if tuple(logits.shape[-2:]) != out_size else logits.argmax(1)
    h = logits.shape[-2]
    scale = torch.tensor(h, dtype=torch.float32) / H
    labels = torch.empty(logits.shape[0], H, W, dtype=torch.int64, device=logits.device)
    for top in range(0, H, rows_per_chunk):
        bottom = min(H, top + rows_per_chunk)
        ys = ((torch.arange(top, bottom, dtype=torch.float32) + 0.5) * scale - 0.5).clamp(min=0)
        y0 = ys.long().clamp(max=h - 1)
        y1 = torch.where(y0 < h - 1, y0 + 1, y0)
        wy = (ys - y0).to(logits.device).view(1, 1, -1, 1)
        rows = logits[:, :, y0.to(logits.device)] * (1 - wy) + logits[:, :, y1.to(logits.device)] * wy
        if rows.shape[-1] != W:  # the height is right: this resize moves along the width alone
            rows = F.interpolate(rows, size=(bottom - top, W), mode="bilinear", align_corners=False)
        labels[:, top:bottom] = rows.argmax(1)
    return labels


def _collate_list(samples):
    return samples


def _by_size(samples) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Group ``[(image, label), ...]`` into stacks of equal image and label size (order kept within a size)."""
    groups: Dict[Tuple, List] = {}
    for image, label in samples:
        groups.setdefault((tuple(image.shape), tuple(label.shape)), []).append((image, label))
    return [(torch.stack([s[0] for s in g]), torch.stack([s[1] for s in g]).long()) for g in groups.values()]


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    ignore_index: int = 255,
    class_names: Optional[Sequence[str]] = None,
    batch_size: int = 8,
    eval_scale: Optional[Tuple[int, int]] = None,
    device: Union[str, torch.device] = "cpu",
    amp_dtype: Optional[torch.dtype] = None,
    rank: int = 0,
    world_size: int = 1,
    workers: int = 0,
    progress: Optional[Callable[[int], None]] = None,
    inference: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """mmseg's metrics of ``model`` on ``dataset`` (each process takes samples ``rank::world_size``;
    the areas are summed over processes). ``inference``: whole or sliding-window options
    (:func:`resolve_inference`; default: the model's ``test_cfg``).

    Returns:
        ``miou``, ``macc``, ``aacc`` in percent, ``loss`` (mean pixel cross-entropy), ``iou``/``acc``
        per class in percent (None for a class absent from the labels and the predictions),
        ``classes``, ``images``, ``seconds``, ``images_per_second``, and ``metric`` (the
        :class:`SegMetric`, summed over processes).
    """
    from hilovit.train.distributed import all_reduce_sum

    device = torch.device(device)
    was_training = model.training
    model.eval()
    metric = SegMetric(num_classes, ignore_index, class_names)
    sums = torch.zeros(3, dtype=torch.float64)  # loss * pixels, labelled pixels, images
    indices = list(range(rank, len(dataset), world_size))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate_list)
    t0 = time.perf_counter()
    for samples in loader:
        for images, labels in _by_size(samples):
            images, labels = images.to(device), labels.to(device)
            logits = infer_logits(model, images, mean, std, labels.shape[-2:], eval_scale, amp_dtype, inference)
            valid = int((labels != ignore_index).sum())
            if valid:
                loss = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
                sums[0] += float(loss)
                sums[1] += valid
            sums[2] += images.shape[0]
            metric.update(logits.argmax(1), labels)
        if progress is not None:
            progress(len(samples))
    seconds = time.perf_counter() - t0
    all_reduce_sum(sums)
    metric.all_reduce()
    model.train(was_training)
    res = metric.compute()

    def pct(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else 100.0 * float(v)

    n = int(sums[2])
    return {
        "miou": pct(res["miou"]), "macc": pct(res["macc"]), "aacc": pct(res["aacc"]),
        "loss": float(sums[0] / sums[1]) if sums[1] > 0 else None,
        "iou": [pct(v) for v in res["iou"]], "acc": [pct(v) for v in res["acc"]],
        "classes": list(class_names) if class_names is not None else [str(i) for i in range(num_classes)],
        "images": n, "seconds": seconds, "images_per_second": n / seconds if seconds > 0 else None,
        "metric": metric,
    }


# --------------------------------------------------------------------------- models and checkpoints
def build_segmenter(model: ModelSource, num_classes: int, in_chans: int,
                    model_kwargs: Optional[Dict[str, Any]] = None) -> Tuple[nn.Module, str]:
    """The model to train or evaluate, and its name.

    ``model`` is a registered name (built with ``hilovit.create_model(name, num_classes=...,
    in_chans=..., **model_kwargs)``), an ``nn.Module`` used as it is, or a factory called as
    ``factory(num_classes=..., in_chans=...)``.
    """
    if isinstance(model, nn.Module):
        return model, type(model).__name__
    if isinstance(model, str):
        from hilovit.models import create_model
        from hilovit.models.registry import model_entrypoint

        model_entrypoint(model)  # ValueError listing the models
        kwargs = dict(model_kwargs or {})
        kwargs.update(num_classes=num_classes, in_chans=in_chans)
        try:
            return create_model(model, **kwargs), model
        except TypeError as e:
            raise ValueError(f"model {model!r} does not accept these options {sorted(kwargs)}: {e}") from e
    if callable(model):
        built = model(num_classes=num_classes, in_chans=in_chans)
        if not isinstance(built, nn.Module):
            raise TypeError(f"model factory returned {type(built).__name__}, expected an nn.Module")
        return built, getattr(model, "__name__", type(built).__name__)
    raise TypeError(f"model must be a registered model name, an nn.Module or a factory, got {type(model).__name__}")


def seg_metadata_of(checkpoint) -> Dict[str, str]:
    """The metadata a segmentation run stored with its weights (``task``, ``model``, ``classes``, ...);
    {} when the file holds none."""
    from hilovit.models.checkpoint import read_metadata, resolve_checkpoint

    return dict(read_metadata(resolve_checkpoint(checkpoint)))


def _floats(text: Optional[str]) -> Optional[Tuple[float, ...]]:
    return tuple(float(v) for v in text.split(",")) if text else None


def load_seg_checkpoint(checkpoint, model: Optional[ModelSource] = None, num_classes: Optional[int] = None,
                        in_chans: Optional[int] = None) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the segmenter a checkpoint was trained as and load its weights (strictly).

    Args:
        checkpoint: ``model.safetensors``, ``last.pt`` or a training output folder.
        model: the model (name, module or factory); None uses the name in the checkpoint's metadata.
        num_classes, in_chans: needed only when the checkpoint has no metadata.

    Returns:
        ``(model in eval mode, info)`` with ``info``: ``model``, ``classes``, ``num_classes``,
        ``in_chans``, ``mean``, ``std``, ``ignore_index``, ``eval_scale`` (or None), ``path``.
    """
    from hilovit.models.checkpoint import load_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    meta = seg_metadata_of(path)
    if not meta:
        from hilovit.models.checkpoint import read_checkpoint

        read_checkpoint(path)  # an unreadable file says so, and why, rather than "no metadata"
    if meta and meta.get("task", "classification") != "segmentation":
        raise ValueError(f"checkpoint {str(path)!r} holds a {meta.get('task', 'classification')} model "
                         f"({meta.get('model')}), not a segmentation model; use it without --task segmentation")
    classes = json.loads(meta["classes"]) if meta.get("classes") else None
    n = num_classes or (int(meta["num_classes"]) if meta.get("num_classes") else None)
    c = in_chans or (int(meta["in_chans"]) if meta.get("in_chans") else None)
    name = model if model is not None else meta.get("model")
    if name is None or n is None or c is None:
        raise ValueError(f"checkpoint {str(path)!r} has no segmentation metadata: pass the model, num_classes "
                         "and in_chans")
    if classes is None:
        classes = [str(i) for i in range(n)]
    net, model_name = build_segmenter(name, n, c, json.loads(meta["model_kwargs"]) if meta.get("model_kwargs")
                                      else None)
    load_checkpoint(net, path, strict=True, allow_new_classifier=False)
    net.eval()
    scale = _floats(meta.get("eval_scale"))
    info = {
        "model": meta.get("model", model_name), "classes": classes, "num_classes": n, "in_chans": c,
        "mean": _floats(meta.get("mean")) or (0.0,) * c, "std": _floats(meta.get("std")) or (1.0,) * c,
        "ignore_index": int(meta.get("ignore_index", 255)),
        "eval_scale": tuple(int(v) for v in scale) if scale else None, "path": str(path),
    }
    return net, info


def run_seg_eval(
    checkpoint,
    data: Optional[str] = None,
    model: Optional[ModelSource] = None,
    num_classes: Optional[int] = None,
    data_dir: Optional[str] = None,
    val_split: Optional[float] = None,
    seed: Optional[int] = None,
    eval_subset: Optional[int] = None,
    batch_size: int = 8,
    eval_scale: Optional[Tuple[int, int]] = None,
    amp: str = "off",
    device: str = "auto",
    threads: Optional[int] = None,
    workers: int = 0,
    output: Optional[str] = None,
    mode: Optional[str] = None,
    crop_size=None,
    stride=None,
) -> Dict[str, Any]:
    """Evaluate a segmentation checkpoint on the evaluation split of ``data`` (``hilovit eval --task
    segmentation``); writes ``eval.json`` into ``output`` when given (created once every check has
    passed). ``mode`` (``'whole'`` or ``'slide'``), ``crop_size`` and ``stride`` choose the inference
    (defaults: the model's ``test_cfg``; see :func:`resolve_inference`).

    ``data`` None: the data the checkpoint records (the run's ``config.yaml``, else its metadata's
    ``dataset``; :func:`hilovit.tasks.eval_checks.recorded_data`), with its ``val_split``, ``seed`` and
    ``data_dir`` unless given; a ValueError when nothing is recorded. A mask folder takes the checkpoint's
    class names (masks hold no names); other data (fashion-scenes, ADE20K) have their own, compared with
    the checkpoint's: other names are refused naming both lists, the same names in another order are
    scored by name (``class_order`` says so).

    Returns:
        ``model``, ``dataset``, ``eval_split``, ``class_order``, ``miou``, ``macc``, ``aacc`` (percent),
        ``loss``, ``per_class_iou`` and ``per_class_acc`` ({class: percent or None}), ``images``, ``seconds``.
    """
    from hilovit.io import check_creatable_dir, check_writable_dir
    from hilovit.options import check_image_size
    from hilovit.runtime import resolve_amp
    from hilovit.train.distributed import resolve_device
    from hilovit.train.state import write_json

    check_image_size(eval_scale, "eval_scale", allow_none=True)
    check_image_size(crop_size, "crop_size", allow_none=True)
    if output:
        check_creatable_dir(output, "output folder")  # created once every check has passed
    if threads:
        torch.set_num_threads(int(threads))
    net, info = load_seg_checkpoint(checkpoint, model)
    inference = resolve_inference(net, mode, crop_size, stride)
    data, data_dir, recorded = _seg_data_to_evaluate(data, data_dir, info["path"])
    val_split = float(recorded.get("val_split", 0.0) if val_split is None else val_split)
    seed = int(recorded.get("seed", 0) if seed is None else seed)
    eval_ds, dinfo, order = _seg_eval_data(net, info, data, data_dir, val_split, seed, num_classes, eval_subset)
    folder = check_writable_dir(output, "output folder") if output else None
    dev = resolve_device(device)
    net.to(dev)
    res = evaluate_segmentation(net, eval_ds, dinfo.num_classes, info["mean"], info["std"], dinfo.ignore_index,
                                dinfo.classes, batch_size, eval_scale or info["eval_scale"], dev,
                                resolve_amp(amp, dev), inference=inference)
    out = _seg_eval_result(info, dinfo, order, inference, res)
    if folder is not None:
        write_json(folder / "eval.json", out)
        out["files"] = {"eval": str(folder / "eval.json")}
    return out


def _seg_data_to_evaluate(data, data_dir, path: str):
    """``(data, data_dir, recorded)``: the data given, else the one the checkpoint at ``path`` records;
    ``recorded`` (its hold-out: ``val_split``, ``seed``) emptied when the data is another one."""
    from hilovit.models.checkpoint import read_metadata
    from hilovit.tasks.eval_checks import recorded_data

    recorded = recorded_data(Path(path), read_metadata(path))
    if data is None:
        if recorded.get("data") is None:
            raise ValueError(f"checkpoint {path!r} records no dataset (its metadata has no 'dataset' entry "
                             "and no config.yaml lies beside it): name the data to evaluate on")
        data = recorded["data"]
        data_dir = data_dir if data_dir is not None else recorded.get("data_dir")
    elif str(data) != str(recorded.get("data")):
        recorded = {}  # another dataset: the recorded hold-out does not apply to it
    return data, data_dir, recorded


def _seg_eval_data(net: nn.Module, info: Dict[str, Any], data, data_dir, val_split: float, seed: int,
                   num_classes: Optional[int], eval_subset: Optional[int]):
    """``(dataset, data info, class order)``: the evaluation split checked against the checkpoint's model
    (classes, channels, class names by name; its classifier reordered when needed), cut to ``eval_subset``."""
    from hilovit.data.segmentation import build_seg_datasets, is_ade20k_dir
    from hilovit.tasks.eval_checks import class_order, reorder_classifier

    n_cls = num_classes or info["num_classes"]
    named_data = is_ade20k_dir(data) or not Path(str(data)).expanduser().is_dir()  # ADE20K, fashion-scenes
    classes = info["classes"] if len(info["classes"]) == n_cls and not named_data else None
    _, eval_ds, dinfo = build_seg_datasets(data, num_classes=n_cls, classes=classes, seed=seed, val_split=val_split,
                                           data_dir=data_dir, num_test=eval_subset)
    if dinfo.num_classes != info["num_classes"]:
        raise ValueError(f"data {data!r} has {dinfo.num_classes} classes, the checkpoint's model "
                         f"{info['num_classes']}")
    if dinfo.in_chans != info["in_chans"]:
        raise ValueError(f"data {data!r} has {dinfo.in_chans}-channel images, the checkpoint's model takes "
                         f"{info['in_chans']}")
    order = class_order(info["classes"], dinfo.classes, info["path"], dinfo.name)
    if order is not None:
        reorder_classifier(net, order)  # the same classes in the data's order: scored by name, not by index
    if eval_subset is not None and len(eval_ds) > eval_subset:
        eval_ds = Subset(eval_ds, range(eval_subset))
    return eval_ds, dinfo, order


def _seg_eval_result(info: Dict[str, Any], dinfo, order, inference: Dict[str, Any], res: Dict[str, Any]
                     ) -> Dict[str, Any]:
    """The result :func:`run_seg_eval` documents, from the checkpoint, the data and the metrics."""
    return {
        "model": info["model"], "checkpoint": info["path"], "dataset": dinfo.name, "eval_split": dinfo.eval_split,
        "class_order": "by name: the checkpoint's classes in another order, mapped to the data's" if order
        else "as recorded",
        "inference": {k: list(v) if isinstance(v, tuple) else v for k, v in inference.items()},
        "miou": res["miou"], "macc": res["macc"], "aacc": res["aacc"], "loss": res["loss"],
        "per_class_iou": dict(zip(dinfo.classes, res["iou"])), "per_class_acc": dict(zip(dinfo.classes, res["acc"])),
        "images": res["images"], "seconds": res["seconds"],
    }


def _fmt_pct(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def format_seg_eval(result: Dict[str, Any]) -> str:
    """The text ``hilovit eval --task segmentation`` prints: the totals, then IoU and Acc per class."""
    how = result.get("inference", {"mode": "whole"})
    if how.get("mode") == "slide":
        mode = f", slide {'x'.join(map(str, how['crop_size']))} every {'x'.join(map(str, how['stride']))}"
    else:
        mode = ", whole image"
    lines = [f"{result['model']} on {result['dataset']} ({result['eval_split']}, {result['images']} images{mode}): "
             f"mIoU {_fmt_pct(result['miou'])}%  mAcc {_fmt_pct(result['macc'])}%  aAcc {_fmt_pct(result['aacc'])}%"]
    if str(result.get("class_order", "")).startswith("by name"):
        lines.append("classes matched by name: the checkpoint records the data's classes in another order")
    width = max((len(c) for c in result["per_class_iou"]), default=5)
    lines.append(f"  {'class':<{width}}  {'IoU':>6}  {'Acc':>6}")
    for name, iou in result["per_class_iou"].items():
        lines.append(f"  {name:<{width}}  {_fmt_pct(iou):>6}  {_fmt_pct(result['per_class_acc'][name]):>6}")
    for kind, path in result.get("files", {}).items():
        lines.append(f"wrote {kind}: {path}")
    return "\n".join(lines)
