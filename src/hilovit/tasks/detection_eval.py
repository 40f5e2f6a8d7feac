"""Detection evaluation: COCO box AP (and mask AP) through ``pycocotools.COCOeval``, and ``hilovit eval`` of a detector.

:func:`evaluate_detection` runs a detector over a dataset (each process its share; the results
gathered on the first), writes the detections as COCO results (``bbox`` ``[x, y, w, h]``,
``score``, ``category_id``, and RLE ``segmentation`` for masks) and scores them with
``COCOeval`` against the dataset's own COCO ground truth (``dataset.coco_gt()``: the annotation
file of a COCO folder, or the ground truth fashion-scenes writes for its scenes). The metrics
are the ones mmdet reports: AP, AP50, AP75 and AP for small, medium and large objects, in
percent, with the AP of each class.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Subset

from hilovit.runtime import autocast_context

__all__ = ["evaluate_detection", "detections_to_coco", "predict_images", "run_det_eval", "format_det_eval",
           "METRIC_NAMES"]

# COCOeval.stats order (the first six of 'bbox' and 'segm')
METRIC_NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")


def _ids(dataset, indices: Sequence[int]) -> List[int]:
    ids = getattr(dataset, "image_ids", None)
    ids = ids() if callable(ids) else ids
    return [int(ids[i]) for i in indices] if ids is not None else [int(i) for i in indices]


def detections_to_coco(results: Sequence[Mapping[str, torch.Tensor]], image_ids: Sequence[int],
                       category_ids: Sequence[int]) -> List[Dict[str, Any]]:
    """COCO result records of detections: per box ``image_id``, ``category_id`` (``category_ids[label]``),
    ``bbox`` ``[x, y, w, h]``, ``score``, and ``segmentation`` (RLE) when the result has ``masks``."""
    records: List[Dict[str, Any]] = []
    for res, image_id in zip(results, image_ids):
        boxes = res["boxes"].detach().float().cpu()
        if not len(boxes):
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        scores, labels = res["scores"].tolist(), res["labels"].tolist()
        rles = None
        if res.get("masks") is not None:
            from hilovit.ops.masks import mask_to_rle

            rles = [mask_to_rle(m) for m in res["masks"].cpu()]
        for k in range(len(xywh)):
            rec = {"image_id": int(image_id), "category_id": int(category_ids[int(labels[k])]),
                   "bbox": [round(float(v), 3) for v in xywh[k]], "score": round(float(scores[k]), 5)}
            if rles is not None:
                rec["segmentation"] = rles[k]
            records.append(rec)
    return records


@torch.no_grad()
def predict_images(model: nn.Module, images: Sequence[torch.Tensor], device: torch.device,
                   amp_dtype: Optional[torch.dtype] = None, test_scale: Any = None) -> List[Dict[str, torch.Tensor]]:
    """Detections of uint8 images (in the dataset's channel order, RGB or grey), boxes in their pixels."""
    with autocast_context(device, amp_dtype):
        return model.predict([im.to(device) for im in images], resize=test_scale)


def _gather(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return records
    parts: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, records)
    return [r for part in parts for r in part]


def _score(coco_gt, records: List[Dict[str, Any]], iou_type: str, num_classes: int) -> Dict[str, Any]:
    """COCOeval of ``records`` against ``coco_gt``: the six headline numbers (percent) and per-class AP."""
    from pycocotools.cocoeval import COCOeval

    if not records:
        return {**{k: 0.0 for k in METRIC_NAMES}, "per_class": [0.0] * num_classes}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and tables
        coco_dt = coco_gt.loadRes(records)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out: Dict[str, Any] = {k: max(0.0, 100.0 * float(v)) for k, v in zip(METRIC_NAMES, ev.stats[:6])}
    precision = ev.eval["precision"]  # (iou, recall, class, area, max dets)
    per_class = []
    for k in range(precision.shape[2]):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class.append(100.0 * float(p.mean()) if p.size else None)
    out["per_class"] = per_class
    return out


@torch.no_grad()
def evaluate_detection(model: nn.Module, dataset, batch_size: int = 8, device: Any = "cpu",
                       amp_dtype: Optional[torch.dtype] = None, rank: int = 0, world_size: int = 1,
                       test_scale: Any = None, workers: int = 0, progress=None,
                       category_ids: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """COCO box AP (and mask AP when the model predicts masks) of ``model`` on ``dataset``.

    ``category_ids[label]`` is the COCO category of the model's label (default: the dataset's
    ``category_ids``, labels in the data's order).

    Each process predicts samples ``rank::world_size``; the detections are gathered and scored once
    (``COCOeval`` against ``dataset.coco_gt()``), the same numbers on every process.

    Returns:
        ``ap``, ``ap50``, ``ap75``, ``ap_small``, ``ap_medium``, ``ap_large`` (percent), ``per_class_ap``
        (per label, None where the class has no ground truth), and with masks ``mask_ap``,
        ``mask_ap50``, ...; ``detections``, ``images``, ``seconds``, ``images_per_second``.
    """
    from hilovit.data.detection import detection_collate
    from hilovit.train.distributed import broadcast_object

    device = torch.device(device)
    was_training = model.training
    model.eval()
    indices = list(range(rank, len(dataset), world_size))
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=detection_collate)
    if category_ids is None:
        category_ids = tuple(getattr(dataset, "category_ids", None) or range(1, model.num_classes + 1))
    records: List[Dict[str, Any]] = []
    t0, done = time.perf_counter(), 0
    for images, _ in loader:
        results = predict_images(model, images, device, amp_dtype, test_scale)
        records += detections_to_coco(results, _ids(dataset, indices[done:done + len(images)]), category_ids)
        done += len(images)
        if progress is not None:
            progress(len(images))
    seconds = time.perf_counter() - t0
    model.train(was_training)
    records = _gather(records)
    metrics = None
    if rank == 0:
        coco_gt = dataset.coco_gt()
        with_masks = bool(records) and "segmentation" in records[0]
        box = _score(coco_gt, records, "bbox", model.num_classes)
        metrics = {**{k: box[k] for k in METRIC_NAMES}, "per_class_ap": box["per_class"]}
        if with_masks:
            segm = _score(coco_gt, records, "segm", model.num_classes)
            metrics.update({f"mask_{k}": segm[k] for k in METRIC_NAMES})
            metrics["per_class_mask_ap"] = segm["per_class"]
        metrics["detections"] = len(records)
    metrics = broadcast_object(metrics)
    images = len(dataset)
    metrics.update(images=images, seconds=seconds, images_per_second=len(indices) / seconds if seconds > 0 else None)
    return metrics


# --------------------------------------------------------------------------- hilovit eval --task detection
def _recorded(checkpoint: Path, meta: Mapping[str, Any]) -> Dict[str, Any]:
    from hilovit.tasks.eval_checks import recorded_data

    return recorded_data(checkpoint, meta)


def run_det_eval(checkpoint=None, data: Optional[str] = None, model: Optional[str] = None, pretrained=None,
                 data_dir: Optional[str] = None, val_split: Optional[float] = None, seed: Optional[int] = None,
                 eval_subset: Optional[int] = None, batch_size: int = 8, eval_scale=None, amp: str = "off",
                 device: str = "auto", threads: Optional[int] = None, workers: int = 0, output: Optional[str] = None,
                 overwrite: bool = False, progress: str = "auto") -> Dict[str, Any]:
    """``hilovit eval --task detection``: box (and mask) AP of a checkpoint, or of published weights, on the
    evaluation split of ``data`` (default: the data the checkpoint records); ``eval.json`` into
    ``output`` (default: ``eval/`` beside the checkpoint; the next free name unless ``overwrite``)."""
    from hilovit.data.detection import build_det_datasets
    from hilovit.io import check_writable_dir
    from hilovit.models._builder import load_model, pretrained_model
    from hilovit.models.checkpoint import read_metadata, resolve_checkpoint
    from hilovit.options import check_image_size
    from hilovit.runtime import resolve_amp
    from hilovit.tasks.classification_eval import _free_name
    from hilovit.tasks.eval_checks import class_order
    from hilovit.train.distributed import resolve_device
    from hilovit.train.state import write_json

    if threads:
        torch.set_num_threads(int(threads))
    check_image_size(list(eval_scale) if eval_scale else None, "eval_scale", allow_none=True)
    use_pretrained = pretrained is not None and pretrained is not False
    if use_pretrained == (checkpoint is not None):
        raise ValueError("give either a checkpoint or pretrained weights")
    dev = resolve_device(device)
    recorded: Dict[str, Any] = {}
    if use_pretrained:
        if model is None or data is None:
            raise ValueError("pretrained weights need --model and --data (they record no data)")
        net, source = pretrained_model(model, pretrained, device=dev), str(pretrained)
        names = list((getattr(net, "pretrained_cfg", None) or {}).get("class_names") or [])
    else:
        path = resolve_checkpoint(checkpoint)
        recorded = _recorded(path, read_metadata(path))
        net, info = load_model(path, model, device=dev)
        source, names = str(path), list(info.get("classes") or [])
        if output is None:
            output = str(path.parent / "eval")
    data = data or recorded.get("data")
    if data is None:
        raise ValueError(f"checkpoint {source!r} records no dataset (its metadata has no 'dataset' entry and no "
                         "config.yaml lies beside it): name the data to evaluate on (--data)")
    _, eval_ds, dinfo = build_det_datasets(
        data, seed=int(recorded.get("seed", 0) if seed is None else seed),
        val_split=float(recorded.get("val_split", 0.0) if val_split is None else val_split),
        data_dir=data_dir if data_dir is not None else recorded.get("data_dir"), num_test=eval_subset)
    order = class_order(names or None, dinfo.classes, source, dinfo.name)  # other names: refused, both named
    if dinfo.num_classes != net.num_classes:
        raise ValueError(f"{source!r} detects {net.num_classes} classes, the data ({dinfo.name}) has "
                         f"{dinfo.num_classes}")
    data_ids = tuple(dinfo.category_ids or range(1, dinfo.num_classes + 1))
    category_ids = None
    if order is not None:  # the same classes in another order: the model's label order[i] is the data's class i
        category_ids = [0] * len(order)
        for i, label in enumerate(order):
            category_ids[label] = data_ids[i]
    res = evaluate_detection(net, eval_ds, batch_size, dev, resolve_amp(amp, dev),
                             test_scale=tuple(eval_scale) if eval_scale else None, workers=workers,
                             category_ids=category_ids)
    out = {"model": getattr(net, "pretrained_cfg", {}).get("architecture", model), "checkpoint": source,
           "dataset": dinfo.name, "eval_split": dinfo.eval_split,
           "class_order": "by name: the checkpoint's classes in another order, mapped to the data's" if order
           else "as recorded",
           **{k: v for k, v in res.items() if not k.startswith("per_class")},
           "per_class_ap": dict(zip(dinfo.classes, res["per_class_ap"]))}
    if "per_class_mask_ap" in res:
        out["per_class_mask_ap"] = dict(zip(dinfo.classes, res["per_class_mask_ap"]))
    if output:
        folder = check_writable_dir(output, "output folder")
        report = _free_name(folder, "eval", ".json", overwrite)
        write_json(report, out)
        out["files"] = {"json": str(report)}
    return out


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def format_det_eval(result: Mapping[str, Any]) -> str:
    """What ``hilovit eval --task detection`` prints: the COCO numbers, then the AP of each class."""
    lines = [f"{result.get('model') or 'model'} on {result['dataset']} ({result['eval_split']}, {result['images']} "
             f"images): box AP {_pct(result['ap'])}  AP50 {_pct(result['ap50'])}  AP75 {_pct(result['ap75'])}  "
             f"(small {_pct(result['ap_small'])}, medium {_pct(result['ap_medium'])}, "
             f"large {_pct(result['ap_large'])})"]
    if "mask_ap" in result:
        lines.append(f"mask AP {_pct(result['mask_ap'])}  AP50 {_pct(result['mask_ap50'])}  "
                     f"AP75 {_pct(result['mask_ap75'])}")
    width = max((len(c) for c in result["per_class_ap"]), default=5)
    lines.append(f"  {'class':<{width}}  {'AP':>6}" + (f"  {'mask AP':>7}" if "per_class_mask_ap" in result else ""))
    for name, ap in result["per_class_ap"].items():
        mask = f"  {_pct(result['per_class_mask_ap'][name]):>7}" if "per_class_mask_ap" in result else ""
        lines.append(f"  {name:<{width}}  {_pct(ap):>6}{mask}")
    for kind, path in result.get("files", {}).items():
        lines.append(f"wrote {kind}: {path}")
    return "\n".join(lines)

