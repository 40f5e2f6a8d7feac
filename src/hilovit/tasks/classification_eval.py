"""Evaluating a classifier: the metric loop of training and ``hilovit eval`` of a checkpoint or published weights.

:func:`evaluate` runs a model over evaluation batches (top-1, top-5, loss, per-class accuracy,
confusion matrix; summed over processes when distributed). :func:`run_eval` rebuilds the model,
loads a checkpoint (refusing one made for another architecture or number of classes, and saying
what differs), evaluates and writes a JSON report and a confusion-matrix PNG.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.runtime import resolve_amp

__all__ = ["evaluate", "run_eval", "recorded_data", "format_eval", "folder_eval_dataset", "default_img_size"]


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, batches, pipeline: nn.Module, num_classes: int, device: torch.device,
             amp_dtype: Optional[torch.dtype] = None, progress=None) -> Dict[str, Any]:
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
    from hilovit.runtime import autocast_context
    from hilovit.train.distributed import all_reduce_sum

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
        flat = (targets * num_classes + topk[:, 0]).cpu()
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
        "n": n, "loss": float(sums[0] / n), "top1": float(100.0 * confusion.diagonal().sum() / n),
        "top5": float(100.0 * sums[1] / n), "top5_k": k, "per_class_accuracy": per_class,
        "confusion": confusion.long().tolist(), "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else float("nan"),
    }


def default_img_size(model_name: str) -> int:
    """The input side a registered model is built for (its ``pretrained_cfg['input_size']``)."""
    from hilovit.models import create_model

    with torch.device("meta"):
        probe = create_model(model_name)
    return int((getattr(probe, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])


def recorded_data(checkpoint: Path, meta: Dict[str, Any]) -> Dict[str, Any]:
    """The data a checkpoint was trained on, as far as it is recorded: ``data``, ``data_dir``,
    ``val_split``, ``seed`` from the run's ``config.yaml`` beside it, else ``data`` from the
    ``dataset`` entry of its metadata (``'fashion-mnist'``, ``'idx:<folder>'``, ``'folder:<path>'``).
    Entries that are not recorded are absent."""
    out: Dict[str, Any] = {}
    config = Path(checkpoint).parent / "config.yaml"
    if config.is_file():
        try:
            import yaml

            values = yaml.safe_load(config.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - an unreadable config records nothing
            values = None
        if isinstance(values, dict) and (not meta.get("model") or values.get("model") in (None, meta["model"])):
            out.update({k: values[k] for k in ("data", "data_dir", "val_split", "seed") if values.get(k) is not None})
    dataset = meta.get("dataset")
    if "data" not in out and isinstance(dataset, str) and dataset:
        kind, sep, where = dataset.partition(":")
        out["data"] = where if sep and kind in ("idx", "folder") else dataset
    return out


def _free_name(folder: Path, stem: str, suffix: str, overwrite: bool) -> Path:
    """``folder/stem.suffix``, or with ``overwrite=False`` and that file present the first free ``stem-N.suffix``."""
    path = folder / f"{stem}{suffix}"
    n = 2
    while not overwrite and path.exists():
        path = folder / f"{stem}-{n}{suffix}"
        n += 1
    return path


_PICTURE_MAX_CLASSES = 100  # above this the confusion matrix is neither drawn nor stored in eval.json


def _is_class_folder(path: Path) -> bool:
    """A folder of class folders alone (the ImageNet ``val/`` layout): no ``train/``/``val/``, no IDX files."""
    from hilovit.data.idx import _is_idx_dir

    return path.is_dir() and not (path / "train").is_dir() and not (path / "val").is_dir() and not _is_idx_dir(path)


def folder_eval_dataset(folder, num_classes: int, img_size: int, crop_pct: float = 1.0,
                        interpolation: str = "bilinear", strict: bool = False, crop_mode: str = "center"):
    """Every image of a folder of class folders, labelled for a ``num_classes`` classifier.

    Folders named by ImageNet-1k WordNet ids (``n01440764``) or class names (``tench``) get their
    ImageNet label for a 1000-class model (any subset of the 1000 classes; all 1000 folders sorted
    are the ImageNet label order); otherwise the sorted folder names are the labels, and their
    number must equal ``num_classes``. Samples follow the evaluation protocol
    (:func:`hilovit.data.resize_center_crop` with ``crop_pct``, ``interpolation`` and ``crop_mode``).

    Returns:
        ``(dataset, info)``: an :class:`~hilovit.data.ImageFolderDataset` and a
        :class:`~hilovit.data.DatasetInfo` (ImageNet statistics, split ``'all'``).

    Raises:
        ValueError: the number of class folders differs from ``num_classes`` (for folders that are
            not ImageNet classes), or a class folder holds no images.
    """
    from hilovit.data import IMAGENET_MEAN, IMAGENET_STD, DatasetInfo, ImageFolderDataset, scan_image_folder
    from hilovit.data.imagenet import IMAGENET_NUM_CLASSES, imagenet_class_names, imagenet_label_indices

    root = Path(folder).expanduser()
    names, samples = scan_image_folder(root)
    labels = imagenet_label_indices(names) if num_classes == IMAGENET_NUM_CLASSES else None
    if labels is not None:
        classes = imagenet_class_names()
        files = [(p, labels[k]) for p, k in samples]
    elif len(names) != num_classes:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ValueError(
            f"data={str(root)!r} has {len(names)} class folders ({shown}) but the model has {num_classes} classes; "
            "expected one folder per class of the model (for a 1000-class ImageNet model: folders named by "
            "WordNet ids such as n01440764, or by ImageNet class names)"
        )
    else:
        classes, files = names, samples
    ds = ImageFolderDataset(root, img_size, classes=classes, files=files, strict=strict, crop_pct=crop_pct,
                            interpolation=interpolation, crop_mode=crop_mode)
    info = DatasetInfo(name=f"folder:{root}", classes=tuple(classes), num_classes=len(classes), in_chans=3,
                       mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD), input_size=(3, img_size, img_size),
                       eval_split="all")
    return ds, info


def _unique(names: Sequence[str]) -> List[str]:
    """Names made unique for keys: a repeated one (ImageNet's two 'crane' classes) gets ' [index]'."""
    counts: Dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return [n if counts[n] == 1 else f"{n} [{i}]" for i, n in enumerate(names)]


def _same_data(a, b) -> bool:
    if a is None or b is None:
        return False
    if str(a).strip().lower() == str(b).strip().lower():
        return True
    try:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    except OSError:
        return False


def run_eval(
    model: str,
    checkpoint=None,
    data: Optional[str] = None,
    data_dir: Optional[str] = None,
    batch_size: int = 256,
    img_size: Optional[int] = None,
    in_chans: Optional[int] = None,
    eval_subset: Optional[int] = None,
    val_split: Optional[float] = None,
    seed: Optional[int] = None,
    amp: str = "off",
    device: str = "auto",
    workers: int = 2,
    threads: Optional[int] = None,
    output: Optional[str] = None,
    confusion_png: Optional[str] = None,
    use_ema: bool = False,
    progress: str = "auto",
    default_output: Optional[str] = None,
    overwrite: bool = False,
    pretrained=None,
    crop_pct: Optional[float] = None,
    interpolation: Optional[str] = None,
) -> Dict[str, Any]:
    """Evaluate a checkpoint or published weights on a dataset (``hilovit eval``).

    Args:
        model: registered model name; must match the checkpoint.
        checkpoint: ``model.safetensors``, a ``last.pt``, any state-dict file, or a training
            output folder (its ``model.safetensors``). It is loaded by
            :func:`hilovit.models.checkpoint.load_model`: the classes, ``in_chans`` and ``img_size``
            follow the checkpoint (its shapes and metadata) unless given here.
        pretrained: instead of a checkpoint, published weights (:func:`hilovit.models._builder.pretrained_model`):
            True (the model's default), a tag (``'alpha_0_5'``), a file, a URL or ``'hf-hub:org/name'``.
            Their ``pretrained_cfg`` gives the input size, ``crop_pct``, ``crop_mode``, interpolation
            and mean/std: the official evaluation protocol. ``data`` must be named.
        data, data_dir, val_split, seed: the dataset (:func:`hilovit.data.build_datasets`); its
            evaluation split is used. A folder of class folders alone (the ImageNet ``val/`` layout)
            is evaluated whole (:func:`folder_eval_dataset`). None: what the checkpoint records
            (the run's ``config.yaml`` beside it, else its metadata's ``dataset``; ``val_split`` and
            ``seed`` as recorded for that data, else 0); a ValueError when no data is given or recorded.
        batch_size, amp, device, workers, threads: how to run.
        eval_subset: evaluate the first N images only.
        crop_pct, interpolation: the centre-crop protocol for image folders (resize the shorter side
            to ``int(img_size / crop_pct)``, centre-crop ``img_size``). Defaults: the weights' for
            ``pretrained``; 1.0 and bilinear for training checkpoints (as their training-run
            validation).
        output: folder for ``eval.json`` and ``confusion.png`` (None: nothing written unless
            ``confusion_png`` is given).
        confusion_png: path of the confusion-matrix picture (overrides ``output``'s). Not drawn,
            and the matrix left out of ``eval.json``, above 100 classes.
        use_ema: load the EMA weights of a ``last.pt`` instead of the raw ones.
        default_output: when neither ``output`` nor ``confusion_png`` is given, write into this
            folder beside the checkpoint (``hilovit eval`` uses ``'eval'``); None writes nothing.
        overwrite: replace an earlier ``eval.json``/``confusion.png`` in the output folder; by
            default an earlier report is kept and the new one gets the first free name
            (``eval-2.json``, ``confusion-2.png``, ...), named in ``files``.

    Returns:
        The metrics of :func:`evaluate` plus ``model``, ``checkpoint`` (or the weights' source),
        ``dataset``, ``classes``, ``per_class`` (name -> accuracy), ``preprocessing`` and ``files``.
    """
    from hilovit.data import ImageFolderDataset, build_datasets
    from hilovit.models._builder import load_model
    from hilovit.models.checkpoint import CheckpointError, read_metadata, resolve_checkpoint
    from hilovit.models.registry import model_entrypoint
    from hilovit.train.distributed import resolve_device
    from hilovit.train.loaders import BatchPipeline, EvalBatches
    from hilovit.train.state import check_writable_dir

    model_entrypoint(model.partition(".")[0])  # unknown name: ValueError listing the choices
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: expected a positive integer")
    if eval_subset is not None and (isinstance(eval_subset, bool) or not isinstance(eval_subset, int)
                                    or eval_subset < 1):
        raise ValueError(f"eval_subset={eval_subset!r}: expected a positive number of images")
    use_pretrained = pretrained is not None and pretrained is not False
    if use_pretrained == (checkpoint is not None):
        raise ValueError("give either a checkpoint or pretrained weights (pretrained=True, a tag, a file or a URL)")
    if use_pretrained and data is None:
        raise ValueError("pretrained weights record no evaluation data: name the data (e.g. an ImageNet val/ folder)")
    if crop_pct is not None and (isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float))
                                 or not 0.0 < crop_pct <= 1.0):
        raise ValueError(f"crop_pct={crop_pct!r}: expected a fraction in (0, 1]")
    if interpolation is not None:
        from hilovit.data import pil_interpolation

        pil_interpolation(interpolation)
    ckpt_path = resolve_checkpoint(checkpoint) if checkpoint is not None else None
    if output is None and confusion_png is None and default_output and ckpt_path is not None:
        output = str(ckpt_path.parent / default_output)
    out_dir = check_writable_dir(output) if output else None
    if confusion_png:
        check_writable_dir(Path(confusion_png).expanduser().parent, "folder of the confusion picture")
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    overrides: Dict[str, Any] = {}
    if in_chans:
        overrides["in_chans"] = int(in_chans)
    if img_size:
        overrides["img_size"] = int(img_size)
    if use_pretrained:
        from hilovit.models._builder import pretrained_model

        net = pretrained_model(model, pretrained, device=dev, **overrides)
        cfg = dict(net.pretrained_cfg)
        source = str((cfg.get("weights") or {}).get("source", pretrained))
        img_size = int(img_size or cfg["input_size"][-1])
        mean, std = cfg.get("mean"), cfg.get("std")
        crop_pct = float(crop_pct if crop_pct is not None else cfg.get("crop_pct") or 1.0)
        interpolation = interpolation or cfg.get("interpolation") or "bilinear"
        crop_mode = cfg.get("crop_mode") or "center"
        recorded: Dict[str, Any] = {}
    else:
        recorded = recorded_data(ckpt_path, read_metadata(ckpt_path))
        if data is None:
            data = recorded.get("data")
            if data is None:
                raise ValueError(f"checkpoint {str(ckpt_path)!r} records no dataset: name the data to evaluate on")
            data_dir = data_dir if data_dir is not None else recorded.get("data_dir")
        if not _same_data(data, recorded.get("data")):
            recorded = {}  # another dataset: the recorded hold-out does not apply to it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the data's statistics stand in for a missing normalisation
            net, meta = load_model(ckpt_path, model, device=dev, ema=use_ema, **overrides)
        size = int(net.pretrained_cfg["input_size"][-1]) if getattr(net, "pretrained_cfg", None) else None
        img_size = int(img_size or (meta["img_size"][-1] if meta["img_size"] else None) or size
                       or default_img_size(model))
        mean, std = meta["mean"], meta["std"]
        crop_pct = float(crop_pct if crop_pct is not None else 1.0)
        interpolation = interpolation or "bilinear"
        crop_mode = "center"
        source = str(ckpt_path)
    val_split = float(recorded.get("val_split", 0.0) if val_split is None else val_split)
    seed = int(recorded.get("seed", 0) if seed is None else seed)
    path = Path(str(data)).expanduser()
    if val_split == 0 and _is_class_folder(path):
        eval_ds, info = folder_eval_dataset(path, net.num_classes, img_size, crop_pct, interpolation,
                                            crop_mode=crop_mode)
    else:
        _, eval_ds, info = build_datasets(data, img_size, data_dir=data_dir, val_split=val_split, seed=seed)
        if isinstance(eval_ds, ImageFolderDataset):
            eval_ds.set_eval_crop(crop_pct, interpolation, crop_mode)
    if net.num_classes != info.num_classes:
        raise CheckpointError(
            f"{'weights' if use_pretrained else 'checkpoint'} {source!r} have a classifier for {net.num_classes} "
            f"classes, but the data ({info.name}) has {info.num_classes} classes"
        )
    if eval_subset is not None:
        if not hasattr(eval_ds, "select"):
            raise ValueError("eval_subset is not supported for this dataset")
        eval_ds = eval_ds.select(range(min(int(eval_subset), len(eval_ds))))
    mean = mean if mean is not None else info.mean
    std = std if std is not None else info.std
    pipeline = BatchPipeline(net.in_chans, img_size, mean, std, augment=None).to(dev)
    batches = EvalBatches(eval_ds, batch_size, workers=workers, pin_memory=dev.type == "cuda")
    bar = _eval_bar(len(eval_ds), progress)
    try:
        result = evaluate(net, batches, pipeline, info.num_classes, dev, resolve_amp(amp, dev),
                          progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    classes = list(info.classes)
    skipped = batches.pop_skipped()
    result.update({
        "model": model,
        "checkpoint": source,
        "dataset": info.name,
        "split": info.eval_split,
        "classes": classes,
        "per_class": dict(zip(_unique(classes), result["per_class_accuracy"])),
        "preprocessing": {"img_size": img_size, "crop_pct": crop_pct, "crop_mode": crop_mode,
                          "interpolation": interpolation,
                          "mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "skipped_images": skipped,
        "files": {},
    })
    if len(classes) > _PICTURE_MAX_CLASSES:
        result["confusion"] = None  # 1000 x 1000 counts: neither drawn nor stored
    from hilovit.train.state import write_json
    from hilovit.viz.plots import plot_confusion_matrix

    if result["confusion"] is None:
        png = None
    elif confusion_png:
        png = Path(confusion_png).expanduser()
    else:
        png = _free_name(out_dir, "confusion", ".png", overwrite) if out_dir is not None else None
    if png is not None:
        plot_confusion_matrix(result["confusion"], classes, png,
                              title=f"{model} on {info.name} ({info.eval_split}): top-1 {result['top1']:.2f}%")
        result["files"]["confusion_png"] = str(png)
    if out_dir is not None:
        report = _free_name(out_dir, "eval", ".json", overwrite)
        result["files"]["json"] = str(report)
        write_json(report, result)
    return result


def _eval_bar(total: int, progress: str):
    import sys

    if progress == "off" or (progress == "auto" and not sys.stderr.isatty()) or progress == "log":
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="eval", unit="img", dynamic_ncols=True, leave=False)


def format_eval(result: Dict[str, Any], classes: Optional[Sequence[str]] = None) -> str:
    """A short human-readable report of :func:`run_eval`'s result (per-class lines up to 100 classes)."""
    lines = [
        f"{result['model']} on {result['dataset']} ({result['split']}, {result['n']} images): "
        f"top-1 {result['top1']:.2f}%  top-{result['top5_k']} {result['top5']:.2f}%  loss {result['loss']:.4f}  "
        f"{result['images_per_second']:.0f} images/s",
    ]
    pre = result.get("preprocessing")
    if pre:
        crop = f"crop_pct {pre['crop_pct']:g}" + (" (squash)" if pre.get("crop_mode") == "squash" else "")
        lines.append(f"preprocessing: {pre['img_size']} px, {crop}, {pre['interpolation']}, "
                     f"mean {tuple(round(v, 4) for v in pre['mean'])}, std {tuple(round(v, 4) for v in pre['std'])}")
    skipped = result.get("skipped_images") or []
    if skipped:
        lines.append(f"skipped {len(skipped)} unreadable image file(s) (the next image was used instead): "
                     + ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    if len(result["classes"]) > _PICTURE_MAX_CLASSES:
        present = sum(a is not None for a in result["per_class"].values())
        lines.append(f"per-class accuracy: {present} of {len(result['classes'])} classes have images "
                     "(listed in eval.json / --json)")
    else:
        lines.append("per-class accuracy:")
        width = max(len(c) for c in result["classes"])
        for name, acc in result["per_class"].items():
            lines.append(f"  {name:<{width}}  {'-' if acc is None else f'{acc:6.2f}%'}")
    for kind, path in result["files"].items():
        lines.append(f"wrote {kind}: {path}")
    return "\n".join(lines)


def dumps(result: Dict[str, Any]) -> str:
    return json.dumps(result, indent=2)
