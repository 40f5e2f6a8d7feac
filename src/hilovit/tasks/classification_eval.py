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

from hilovit.options import check_int, check_number
from hilovit.runtime import resolve_amp
from hilovit.tasks.eval_checks import class_order, recorded_data, reorder_classifier

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
    model: Optional[str] = None, checkpoint=None, data: Optional[str] = None, data_dir: Optional[str] = None,
    batch_size: int = 256, img_size: Optional[int] = None, in_chans: Optional[int] = None,
    eval_subset: Optional[int] = None, val_split: Optional[float] = None, seed: Optional[int] = None,
    amp: str = "off", device: str = "auto", workers: int = 2, threads: Optional[int] = None,
    output: Optional[str] = None, confusion_png: Optional[str] = None, use_ema: bool = False,
    progress: str = "auto", default_output: Optional[str] = None, overwrite: bool = False, pretrained=None,
    crop_pct: Optional[float] = None, interpolation: Optional[str] = None,
) -> Dict[str, Any]:
    """Evaluate a checkpoint or published weights on a dataset (``hilovit eval``).

    Args:
        model: registered model name; must match the checkpoint (None: the one it records; required with
            ``pretrained``).
        checkpoint: ``model.safetensors``, a ``last.pt``, any state-dict file, or a training output folder (its
            ``model.safetensors``), loaded by :func:`hilovit.load_model`: the classes, ``in_chans`` and
            ``img_size`` follow the checkpoint (its shapes and metadata) unless given here.
        pretrained: instead of a checkpoint, published weights (:func:`hilovit.models._builder.pretrained_model`):
            True (the model's default), a tag (``'alpha_0_5'``), a file, a URL or ``'hf-hub:org/name'``. Their
            ``pretrained_cfg`` gives the input size, ``crop_pct``, ``crop_mode``, interpolation and mean/std (the
            official evaluation protocol); ``data`` must be named.
        data, data_dir, val_split, seed: the dataset (:func:`hilovit.data.build_datasets`), its evaluation split;
            a folder of class folders alone (the ImageNet ``val/`` layout) is evaluated whole
            (:func:`folder_eval_dataset`). None: what the checkpoint records (the run's ``config.yaml`` beside
            it, else its metadata's ``dataset``; ``val_split`` and ``seed`` as recorded for that data, else 0);
            a ValueError when no data is given or recorded.
        batch_size, amp, device, workers, threads: how to run. eval_subset: evaluate the first N images only.
        crop_pct, interpolation: the centre-crop protocol for image folders (resize the shorter side to
            ``int(img_size / crop_pct)``, centre-crop ``img_size``). Defaults: the weights' for ``pretrained``;
            1.0 and bilinear for training checkpoints (as their training-run validation).
        output: folder for ``eval.json`` and ``confusion.png`` (None: nothing written unless ``confusion_png``).
        confusion_png: path of the confusion-matrix picture (overrides ``output``'s). Not drawn, and the matrix
            left out of ``eval.json``, above 100 classes.
        use_ema: load the EMA weights of a ``last.pt`` instead of the raw ones.
        default_output: when neither ``output`` nor ``confusion_png`` is given, write into this folder beside
            the checkpoint (``hilovit eval`` uses ``'eval'``); None writes nothing.
        overwrite: replace an earlier ``eval.json``/``confusion.png`` in the output folder; by default an
            earlier report is kept and the new one gets the first free name (``eval-2.json``,
            ``confusion-2.png``, ...), named in ``files``. Folders are created only once every check has passed.

    The class names a checkpoint records are compared with the data's
    (:func:`hilovit.tasks.eval_checks.class_order`): other names are refused, naming both lists; the same
    names in another order are scored by name (the classifier's rows permuted to the data's order), and
    ``class_order`` in the result says so.

    Returns:
        The metrics of :func:`evaluate` plus ``model``, ``checkpoint`` (or the weights' source), ``dataset``,
        ``classes``, ``class_order``, ``per_class`` (name -> accuracy), ``preprocessing`` and ``files``.
    """
    from hilovit.train.distributed import resolve_device

    use_pretrained = _check_eval_options(model, checkpoint, pretrained, data, batch_size, eval_subset, crop_pct,
                                         interpolation, img_size)
    ckpt_path, out_dir, confusion_png = _eval_outputs(checkpoint, output, confusion_png, default_output)
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    overrides = {k: int(v) for k, v in (("in_chans", in_chans), ("img_size", img_size)) if v}
    if use_pretrained:
        net, prep, recorded, source, names = _pretrained_for_eval(model, pretrained, dev, overrides)
    else:
        net, prep, recorded, source, names = _checkpoint_for_eval(ckpt_path, model, dev, use_ema, overrides)
        model = prep.pop("model")  # the checkpoint's model, checked against a given name
        data, data_dir, recorded = _data_to_evaluate(data, data_dir, recorded, source)
    prep.update(crop_pct=float(crop_pct if crop_pct is not None else prep["crop_pct"]),
                interpolation=interpolation or prep["interpolation"], img_size=int(img_size or prep["img_size"]))
    eval_ds, info, order = _eval_data(data, data_dir, val_split, seed, recorded, net, prep, use_pretrained, source,
                                      names, eval_subset)
    _create_eval_folders(out_dir, confusion_png)  # only now, when everything else has been checked
    result, skipped = _evaluate_dataset(net, eval_ds, info, prep, dev, batch_size, workers, amp, progress)
    _describe_result(result, model, source, info, order, prep, skipped)
    _write_eval_files(result, out_dir, confusion_png, overwrite, f"{model} on {info.name} ({info.eval_split})")
    return result


def _data_to_evaluate(data, data_dir, recorded: Dict[str, Any], source: str):
    """``(data, data_dir, recorded)`` for a checkpoint: the data given, else the one it records; ``recorded``
    (the run's hold-out) emptied when the data is another one."""
    if data is None:
        data = recorded.get("data")
        if data is None:
            raise ValueError(f"checkpoint {source!r} records no dataset (its metadata has no 'dataset' entry "
                             "and no config.yaml lies beside it): name the data to evaluate on")
        data_dir = data_dir if data_dir is not None else recorded.get("data_dir")
    if not _same_data(data, recorded.get("data")):
        recorded = {}  # another dataset: the recorded hold-out does not apply to it
    return data, data_dir, recorded


def _eval_data(data, data_dir, val_split, seed, recorded, net: nn.Module, prep: Dict[str, Any], use_pretrained: bool,
               source: str, names, eval_subset: Optional[int]):
    """``(dataset, info, class order)``: the evaluation data checked against the classifier (its size, and the
    recorded class ``names`` by name), cut to ``eval_subset``; ``prep``'s missing mean/std become the data's."""
    from hilovit.models.checkpoint import CheckpointError

    eval_ds, info = _eval_dataset(data, data_dir, val_split, seed, recorded, net.num_classes, prep)
    if net.num_classes != info.num_classes:
        raise CheckpointError(
            f"{'weights' if use_pretrained else 'checkpoint'} {source!r} have a classifier for {net.num_classes} "
            f"classes, but the data ({info.name}) has {info.num_classes} classes"
        )
    order = None if use_pretrained else class_order(names, info.classes, source, info.name)
    if order is not None:
        reorder_classifier(net, order)  # the same classes in the data's order: scored by name, not by index
    if eval_subset is not None:
        if not hasattr(eval_ds, "select"):
            raise ValueError("eval_subset is not supported for this dataset")
        eval_ds = eval_ds.select(range(min(int(eval_subset), len(eval_ds))))
    prep["mean"] = prep["mean"] if prep["mean"] is not None else info.mean
    prep["std"] = prep["std"] if prep["std"] is not None else info.std
    return eval_ds, info, order


def _create_eval_folders(out_dir: Optional[Path], confusion_png: Optional[Path]) -> None:
    from hilovit.io import check_writable_dir

    if out_dir is not None:
        check_writable_dir(out_dir)
    if confusion_png is not None:
        check_writable_dir(confusion_png.parent, "folder of the confusion picture")


def _evaluate_dataset(net: nn.Module, eval_ds, info, prep: Dict[str, Any], dev: torch.device, batch_size: int,
                      workers: int, amp: str, progress: str):
    """:func:`evaluate` over ``eval_ds`` with ``prep``'s size and mean/std; ``(metrics, unreadable files skipped)``."""
    from hilovit.train.loaders import BatchPipeline, EvalBatches

    pipeline = BatchPipeline(net.in_chans, prep["img_size"], prep["mean"], prep["std"], augment=None).to(dev)
    batches = EvalBatches(eval_ds, batch_size, workers=workers, pin_memory=dev.type == "cuda")
    bar = _eval_bar(len(eval_ds), progress)
    try:
        result = evaluate(net, batches, pipeline, info.num_classes, dev, resolve_amp(amp, dev),
                          progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return result, batches.pop_skipped()


def _describe_result(result: Dict[str, Any], model, source: str, info, order, prep: Dict[str, Any],
                     skipped: List[str]) -> None:
    """Add to :func:`evaluate`'s metrics what was evaluated and how (the keys :func:`run_eval` documents)."""
    classes = list(info.classes)
    result.update({
        "model": model,
        "checkpoint": source,
        "dataset": info.name,
        "split": info.eval_split,
        "classes": classes,
        "class_order": "by name: the checkpoint's classes in another order, mapped to the data's" if order
        else "as recorded",
        "per_class": dict(zip(_unique(classes), result["per_class_accuracy"])),
        "preprocessing": {**prep, "mean": [float(v) for v in prep["mean"]], "std": [float(v) for v in prep["std"]]},
        "skipped_images": skipped,
        "files": {},
    })


def _check_eval_options(model, checkpoint, pretrained, data, batch_size, eval_subset, crop_pct, interpolation,
                        img_size) -> bool:
    """The checks of :func:`run_eval` that need nothing read; returns whether published weights are used."""
    from hilovit.models.registry import model_entrypoint
    from hilovit.options import check_image_size

    if model is not None:
        model_entrypoint(model.partition(".")[0])  # unknown name: ValueError listing the choices
    check_int(batch_size, "batch_size", minimum=1)
    check_int(eval_subset, "eval_subset", minimum=1, allow_none=True)
    check_image_size(img_size, "img_size", allow_none=True)
    use_pretrained = pretrained is not None and pretrained is not False
    if use_pretrained == (checkpoint is not None):
        raise ValueError("give either a checkpoint or pretrained weights (pretrained=True, a tag, a file or a URL)")
    if use_pretrained and model is None:
        raise ValueError("pretrained weights need a model name")
    if use_pretrained and data is None:
        raise ValueError("pretrained weights record no evaluation data: name the data (e.g. an ImageNet val/ folder)")
    check_number(crop_pct, "crop_pct", minimum=0, maximum=1, min_open=True, allow_none=True)
    if interpolation is not None:
        from hilovit.data import pil_interpolation

        pil_interpolation(interpolation)
    return use_pretrained


def _eval_outputs(checkpoint, output, confusion_png, default_output):
    """``(checkpoint file, report folder or None, confusion picture or None)``; nothing is created here."""
    from hilovit.io import check_creatable_dir
    from hilovit.models.checkpoint import resolve_checkpoint

    ckpt_path = resolve_checkpoint(checkpoint) if checkpoint is not None else None
    if output is None and confusion_png is None and default_output and ckpt_path is not None:
        output = str(ckpt_path.parent / default_output)
    out_dir = check_creatable_dir(output) if output else None
    png = Path(confusion_png).expanduser() if confusion_png else None
    if png is not None:
        check_creatable_dir(png.parent, "folder of the confusion picture")
    return ckpt_path, out_dir, png


def _pretrained_for_eval(model, pretrained, dev, overrides):
    from hilovit.models._builder import pretrained_model

    net = pretrained_model(model, pretrained, device=dev, **overrides)
    cfg = dict(net.pretrained_cfg)
    prep = {"img_size": int(cfg["input_size"][-1]), "crop_pct": float(cfg.get("crop_pct") or 1.0),
            "crop_mode": cfg.get("crop_mode") or "center", "interpolation": cfg.get("interpolation") or "bilinear",
            "mean": cfg.get("mean"), "std": cfg.get("std")}
    return net, prep, {}, str((cfg.get("weights") or {}).get("source", pretrained)), None


def _checkpoint_for_eval(ckpt_path: Path, model, dev, use_ema: bool, overrides):
    """Load the checkpoint (an unreadable file says so, and why, before anything else is asked of it)."""
    from hilovit.models._builder import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the data's statistics stand in for a missing normalisation
        net, meta = load_model(ckpt_path, model, device=dev, ema=use_ema, **overrides)
    name = model or meta.get("model")
    size = int(net.pretrained_cfg["input_size"][-1]) if getattr(net, "pretrained_cfg", None) else None
    img_size = (meta["img_size"][-1] if meta["img_size"] else None) or size or default_img_size(name)
    prep = {"img_size": int(img_size), "crop_pct": 1.0, "crop_mode": "center", "interpolation": "bilinear",
            "mean": meta["mean"], "std": meta["std"], "model": name}
    return net, prep, recorded_data(ckpt_path, meta), str(ckpt_path), meta.get("classes")


def _eval_dataset(data, data_dir, val_split, seed, recorded, num_classes: int, prep):
    from hilovit.data import ImageFolderDataset, build_datasets

    val_split = float(recorded.get("val_split", 0.0) if val_split is None else val_split)
    seed = int(recorded.get("seed", 0) if seed is None else seed)
    path = Path(str(data)).expanduser()
    if val_split == 0 and _is_class_folder(path):
        return folder_eval_dataset(path, num_classes, prep["img_size"], prep["crop_pct"], prep["interpolation"],
                                   crop_mode=prep["crop_mode"])
    _, eval_ds, info = build_datasets(data, prep["img_size"], data_dir=data_dir, val_split=val_split, seed=seed)
    if isinstance(eval_ds, ImageFolderDataset):
        eval_ds.set_eval_crop(prep["crop_pct"], prep["interpolation"], prep["crop_mode"])
    return eval_ds, info


def _write_eval_files(result: Dict[str, Any], out_dir: Optional[Path], confusion_png: Optional[Path],
                      overwrite: bool, title: str) -> None:
    from hilovit.train.state import write_json
    from hilovit.viz.plots import plot_confusion_matrix

    classes = result["classes"]
    if len(classes) > _PICTURE_MAX_CLASSES:
        result["confusion"] = None  # 1000 x 1000 counts: neither drawn nor stored
    if result["confusion"] is None:
        png = None
    elif confusion_png is not None:
        png = confusion_png
    else:
        png = _free_name(out_dir, "confusion", ".png", overwrite) if out_dir is not None else None
    if png is not None:
        plot_confusion_matrix(result["confusion"], classes, png, title=f"{title}: top-1 {result['top1']:.2f}%")
        result["files"]["confusion_png"] = str(png)
    if out_dir is not None:
        report = _free_name(out_dir, "eval", ".json", overwrite)
        result["files"]["json"] = str(report)
        write_json(report, result)


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
    if str(result.get("class_order", "")).startswith("by name"):
        lines.append("classes matched by name: the checkpoint records the data's classes in another order")
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
