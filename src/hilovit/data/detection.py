"""Detection datasets: ``fashion-scenes`` as instances, COCO-format folders, the batch collate.

Every detection dataset returns ``(image, target)`` samples: ``image`` a uint8 tensor ``(C, H, W)``
and ``target`` a dict with ``boxes`` float32 ``(N, 4)`` ``x1, y1, x2, y2`` in pixels (right and bottom
edges exclusive, COCO's ``[x, y, w, h]`` being ``[x1, y1, x2 - x1, y2 - y1]``), ``labels`` int64
``(N,)`` in ``[0, num_classes)`` (no background class), ``masks`` bool ``(N, H, W)`` (when read),
``image_id`` (int, the id in the COCO ground truth) and ``ignore_boxes`` ``(M, 4)`` (crowd regions,
never positives; ``ignore_masks`` with the masks). Both kinds give their evaluation ground truth as
COCO (``eval_ds.coco_gt()``, ``eval_ds.write_coco_gt(path)``), so one ``COCOeval`` code scores both;
the label ``l`` of a result is written as category ``info.category_ids[l]``.

:func:`build_det_datasets` builds the training and evaluation datasets, :func:`detection_collate`
batches samples of any sizes (the model's preprocessor pads), :mod:`hilovit.data.det_transforms`
augments training samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from hilovit.data.coco import CocoDetection, load_coco_json
from hilovit.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hilovit.data.det_transforms import DetAugmentConfig, DetAugmentedDataset, DetTrainTransform
from hilovit.data.fashion_scenes import FashionSceneInstances
from hilovit.options import check_fraction, check_int

PathLike = Union[str, "os.PathLike[str]"]

DET_DATASET_NAMES = ("fashion-scenes",)
_FASHION_KEYS = ("fashion-scenes", "fashion_scenes", "fashionscenes")


@dataclass(frozen=True)
class DetDatasetInfo:
    """What a detector and the engine need to know about a detection dataset.

    Attributes:
        name: ``'fashion-scenes'`` or ``'coco:<path>'``.
        classes: category names in label order; ``num_classes == len(classes)`` (no background).
        in_chans: channels of the images (1 for fashion-scenes, 3 for COCO folders).
        mean, std: per-channel statistics on the [0, 1] scale (fashion-scenes: those of its
            segmentation view, the same images; COCO: ImageNet's).
        eval_split: ``'test'``, ``'val'`` or ``'holdout'``.
        category_ids: the COCO category id of each label, for result files.
        coco_gt: the evaluation annotation file of COCO data (None for fashion-scenes, whose ground
            truth is made in memory). ``eval_ds.coco_gt()`` gives the ``COCO`` object of exactly the
            evaluated images for both kinds (a hold-out or ``num_test`` keeps part of the file).
        empty_images: (training, evaluation) counts of images without any positive instance, kept as
            negatives; None for fashion-scenes, whose scenes are made on demand (each has its top
            garment whole, so practically none is empty).
    """

    name: str
    classes: Tuple[str, ...]
    num_classes: int
    in_chans: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    eval_split: str = "test"
    category_ids: Tuple[int, ...] = ()
    coco_gt: Optional[str] = None
    empty_images: Optional[Tuple[int, int]] = None


def detection_collate(batch: Sequence[Tuple[torch.Tensor, Dict[str, Any]]]) -> Tuple[List[torch.Tensor],
                                                                                      List[Dict[str, Any]]]:
    """Batch detection samples: ``[(image, target), ...] -> ([image, ...], [target, ...])``.

    Images keep their own sizes (they are not stacked or padded: the model's preprocessor pads the
    batch); targets stay one dict per image. Use as ``DataLoader(ds, collate_fn=detection_collate)``.
    """
    if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence) or not batch:
        raise TypeError(f"detection_collate: batch must be a non-empty list of (image, target) samples, "
                        f"got {type(batch).__name__}")
    images, targets = [], []
    for i, sample in enumerate(batch):
        if not isinstance(sample, (tuple, list)) or len(sample) != 2:
            raise TypeError(f"detection_collate: batch[{i}] must be an (image, target) pair, got "
                            f"{type(sample).__name__}")
        image, target = sample
        if not isinstance(image, torch.Tensor) or image.dim() != 3:
            raise TypeError(f"detection_collate: batch[{i}] image must be a (C, H, W) tensor, got "
                            f"{getattr(image, 'shape', type(image).__name__)}")
        if not isinstance(target, dict):
            raise TypeError(f"detection_collate: batch[{i}] target must be a dict, got {type(target).__name__}")
        images.append(image)
        targets.append(target)
    return images, targets


# ----------------------------------------------------------------------------- COCO folder layouts
def _split_key(ann_file: Path) -> str:
    stem = ann_file.stem
    return stem[len("instances_"):] if stem.startswith("instances_") else stem


def _image_dir_for(root: Path, key: str) -> Path:
    for candidate in (root / key, root / "images" / key):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"COCO folder {str(root)!r}: no image folder for annotations/instances_{key}.json; "
                            f"expected {str(root / key)!r} or {str(root / 'images' / key)!r}")


def find_coco_files(root: PathLike) -> Dict[str, Tuple[Path, Path]]:
    """The annotation files and image folders of a COCO-format folder.

    ``root/annotations/instances_{train,val}2017.json`` with ``root/{train,val}2017/`` (COCO as
    released), or any ``root/annotations/*.json`` (``instances_*.json`` preferred when present) whose
    name without ``instances_`` starts with ``train`` / ``val``, each with the image folder of that
    name (``root/<name>/`` or ``root/images/<name>/``). One file alone is returned as ``'all'``.

    Returns:
        ``{'train': (json, images), 'val': (json, images)}`` or ``{'all': (json, images)}``.
    """
    root = Path(root).expanduser()
    ann_dir = root / "annotations"
    files = sorted(p for p in ann_dir.glob("*.json") if not p.name.startswith(".")) if ann_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"COCO folder {str(root)!r} has no annotations/*.json")
    instances = [p for p in files if p.name.startswith("instances_")]
    files = instances or files
    found = {split: [p for p in files if _split_key(p).startswith(split)] for split in ("train", "val")}
    for split, paths in found.items():
        if len(paths) > 1:
            raise ValueError(f"COCO folder {str(root)!r} has {len(paths)} {split} annotation files "
                             f"({', '.join(p.name for p in paths)}); keep one or give the file itself")
    if found["train"] and found["val"]:
        return {s: (found[s][0], _image_dir_for(root, _split_key(found[s][0]))) for s in ("train", "val")}
    if len(files) == 1:
        return {"all": (files[0], _image_dir_for(root, _split_key(files[0])))}
    raise ValueError(f"COCO folder {str(root)!r}: annotation files {', '.join(p.name for p in files)} do not pair "
                     "as train*/val*; give one annotation file with val_split to hold out evaluation images")


def _first(ds: CocoDetection, count: Optional[int], what: str) -> CocoDetection:
    if count is None:
        return ds
    check_int(count, f"build_det_datasets: {what}", minimum=1)
    return ds.select(np.arange(min(int(count), len(ds))))


def _holdout(full: CocoDetection, val_split: float, seed: int, where: str) -> Tuple[CocoDetection, CocoDetection]:
    if val_split <= 0:
        raise ValueError(f"build_det_datasets: {where} has one annotation file (no train/val pair); val_split="
                         f"{val_split} must be in (0, 1) to hold out evaluation images")
    n = len(full)
    if n < 2:
        raise ValueError(f"build_det_datasets: {where} has {n} image; a hold-out needs at least 2")
    n_val = min(max(int(round(n * val_split)), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return full.select(np.sort(order[n_val:])), full.select(np.sort(order[:n_val]))


def _coco_datasets(path: Path, val_split: float, seed: int, image_dir: Optional[PathLike],
                   with_masks: Optional[bool]) -> Tuple[CocoDetection, CocoDetection, str, Path]:
    """(train, eval, eval_split, eval annotation file) of a COCO folder or a single annotation file."""
    if path.is_file():
        if image_dir is None:
            raise ValueError(f"build_det_datasets: data={str(path)!r} is an annotation file; give its image folder "
                             "as data_dir")
        files = {"all": (path, Path(image_dir).expanduser())}
    else:
        files = find_coco_files(path)
    if "all" in files:
        full = CocoDetection(*files["all"], with_masks=with_masks)
        train_ds, eval_ds = _holdout(full, val_split, seed, repr(str(files["all"][0])))
        return train_ds, eval_ds, "holdout", files["all"][0]
    if val_split > 0:
        raise ValueError(f"build_det_datasets: {str(path)!r} already has train and val annotation files; "
                         f"val_split={val_split} must be 0")
    train_ds = CocoDetection(*files["train"], with_masks=with_masks)
    eval_ds = CocoDetection(*files["val"], with_masks=with_masks)
    if train_ds.classes != eval_ds.classes or train_ds.category_ids != eval_ds.category_ids:
        raise ValueError(f"build_det_datasets: {str(files['train'][0])!r} and {str(files['val'][0])!r} list "
                         "different categories; both files must share them")
    return train_ds, eval_ds, "val", files["val"][0]


def build_det_datasets(
    data: PathLike,
    seed: int = 0,
    val_split: float = 0.0,
    data_dir: Optional[PathLike] = None,
    num_train: Optional[int] = None,
    num_test: Optional[int] = None,
    with_masks: Optional[bool] = None,
) -> Tuple[Dataset, Dataset, DetDatasetInfo]:
    """Build the training and evaluation detection datasets named by ``data``.

    ``data`` is one of:

    * ``'fashion-scenes'``: :class:`~hilovit.data.fashion_scenes.FashionSceneInstances` from the
      Fashion-MNIST IDX files (``data_dir``, ``HILOVIT_DATA_DIR``, then the Debian path); ``seed``
      picks the scenes, ``num_train``/``num_test`` their counts (10,000 and 1,000 by default).
    * a COCO-format folder (see :func:`find_coco_files`): ``train*`` and ``val*`` annotation files,
      or one file held out by ``val_split`` in (0, 1) (a seeded random choice of images);
    * a COCO annotation file, its images in the folder ``data_dir``, held out by ``val_split``.

    For COCO data ``num_train``/``num_test`` keep the first images of each set (all by default) and
    ``with_masks`` chooses whether masks are read (None: when the file has segmentations).

    Returns:
        ``(train_ds, eval_ds, info)`` with ``info`` a :class:`DetDatasetInfo`.
    """
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"build_det_datasets: data must be a dataset name, a folder or a file, got "
                        f"{type(data).__name__}")
    check_fraction(val_split, "build_det_datasets: val_split")
    key = str(data).strip().lower()
    if key in _FASHION_KEYS:
        if val_split > 0:
            raise ValueError(f"build_det_datasets: fashion-scenes has its own test scenes; val_split={val_split} "
                             "must be 0")
        train_ds = FashionSceneInstances("train", num_scenes=num_train, seed=seed, root=data_dir)
        eval_ds = FashionSceneInstances("test", num_scenes=num_test, seed=seed, root=data_dir)
        mean, std = train_ds.mean_std()
        info = DetDatasetInfo("fashion-scenes", tuple(train_ds.classes), train_ds.num_classes, 1, mean, std,
                              "test", train_ds.category_ids)
        return train_ds, eval_ds, info
    path = Path(data).expanduser()
    if not path.exists():
        raise ValueError(
            f"build_det_datasets: data={str(data)!r} is neither a known dataset nor an existing folder or file; "
            f"expected one of {list(DET_DATASET_NAMES)}, a COCO folder (annotations/instances_train2017.json + "
            "train2017/, annotations/instances_val2017.json + val2017/) or a COCO annotation file"
        )
    train_ds, eval_ds, eval_split, eval_file = _coco_datasets(path, val_split, seed, data_dir, with_masks)
    train_ds, eval_ds = _first(train_ds, num_train, "num_train"), _first(eval_ds, num_test, "num_test")
    info = DetDatasetInfo(f"coco:{path}", tuple(train_ds.classes), train_ds.num_classes, 3, IMAGENET_DEFAULT_MEAN,
                          IMAGENET_DEFAULT_STD, eval_split, tuple(train_ds.category_ids), str(eval_file),
                          (train_ds.num_empty, eval_ds.num_empty))
    return train_ds, eval_ds, info


__all__ = [
    "DET_DATASET_NAMES",
    "CocoDetection",
    "DetAugmentConfig",
    "DetAugmentedDataset",
    "DetDatasetInfo",
    "DetTrainTransform",
    "FashionSceneInstances",
    "build_det_datasets",
    "detection_collate",
    "find_coco_files",
    "load_coco_json",
]
