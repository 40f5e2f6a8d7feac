"""Datasets: folders of images decoded lazily, and :func:`build_datasets` (IDX files: :mod:`hilovit.data.idx`).

Both kinds return ``(uint8 image tensor (C, H, W), int label)`` samples. Conversion to float,
channel matching, augmentation and normalisation happen later on whole batches
(:mod:`hilovit.data.transforms`), on the device that trains. Both expose ``classes`` (names)
and ``targets`` (an int64 tensor of labels); :class:`IdxDataset` also exposes all its
``images`` as one uint8 tensor, so an engine may index batches directly instead of using
a DataLoader.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from hilovit.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hilovit.data.folders import (  # noqa: F401  (image folders live in folders.py; these names stay importable)
    IMG_EXTENSIONS,
    ImageFolderDataset,
    UnreadableImageError,
    _to_rgb,
    _visible,
    check_image,
    load_image,
    scan_image_folder,
)
from hilovit.data.idx import (  # noqa: F401  (the IDX dataset lives in idx.py; these names stay importable here)
    _FASHION_ALIASES,
    DEFAULT_IDX_DIR,
    ENV_DATA_DIR,
    FASHION_MNIST_CLASSES,
    IDX_FILES,
    IdxDataset,
    _as_index_array,
    _is_idx_dir,
    find_idx_dir,
    read_idx,
)
from hilovit.options import check_fraction, check_int

PathLike = Union[str, "os.PathLike[str]"]

# Per-channel defaults for photographs (the statistics of ImageNet-1k's training set).
IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # one home: data/constants.py

DATASET_NAMES = ("fashion-mnist",)

def compute_mean_std(images: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Exact per-channel mean and standard deviation of uint8 images, on the [0, 1] scale.

    Uses a 256-bin histogram per channel, so 60000 28x28 images take a fraction of a second
    and no float copy of the data is made.

    Args:
        images: uint8 tensor (N, C, H, W).

    Returns:
        ``(mean, std)``, two tuples of C floats (population std).
    """
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images)
        raise TypeError(f"compute_mean_std: images must be a uint8 tensor (N, C, H, W), got {got}")
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    arr = images.numpy()
    for c in range(arr.shape[1]):
        hist = np.bincount(arr[:, c].ravel(), minlength=256).astype(np.float64)
        total = hist.sum()
        mean = float((hist * values).sum() / total)
        var = float((hist * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(var**0.5)
    return tuple(means), tuple(stds)


# ----------------------------------------------------------------------------- building
@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a training engine need to know about a dataset.

    Attributes:
        name: ``'fashion-mnist'``, ``'idx:<folder>'`` or ``'folder:<path>'``.
        classes: class names in label order; ``num_classes == len(classes)``.
        in_chans: channels of the samples (1 for IDX, 3 for image folders).
        mean, std: per-channel statistics on the [0, 1] scale, for :class:`~hilovit.data.Normalize`.
        input_size: (C, H, W) of one sample as the datasets return it.
        eval_split: what the second dataset is: ``'test'`` (t10k), ``'val'`` (a ``val/`` folder)
            or ``'holdout'`` (held out of the training data by ``val_split``).
    """

    name: str
    classes: Tuple[str, ...]
    num_classes: int
    in_chans: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    input_size: Tuple[int, int, int]
    eval_split: str = "test"


def split_indices(targets, val_split: float, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of sample indices into train and validation.

    Each class gives ``round(n_c * val_split)`` samples to validation, at least one and at most
    ``n_c - 1`` when ``n_c >= 2`` (a class with one sample stays in training). The same
    ``(targets, val_split, seed)`` always gives the same split.

    Args:
        targets: labels, shape (N,).
        val_split: fraction in (0, 1).
        seed: seed of the shuffle.

    Returns:
        ``(train_idx, val_idx)``, sorted int64 arrays.
    """
    if not 0.0 < float(val_split) < 1.0:
        raise ValueError(f"val_split={val_split}, expected a fraction in (0, 1)")
    labels = np.asarray(targets).astype(np.int64)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_val = min(max(int(round(len(idx) * val_split)), 1), len(idx) - 1) if len(idx) >= 2 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    train_idx = np.sort(np.concatenate(train)) if train else np.zeros(0, np.int64)
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    if val_idx.size == 0:
        raise ValueError(f"val_split={val_split} leaves no validation samples out of {len(labels)}")
    return train_idx, val_idx


def _check_stats(name: str, value, in_chans: int) -> Optional[Tuple[float, ...]]:
    if value is None:
        return None
    vals = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    if len(vals) not in (1, in_chans):
        raise ValueError(f"build_datasets: {name}={value} has {len(vals)} values, expected 1 or {in_chans}")
    if name == "std" and min(vals) <= 0:
        raise ValueError(f"build_datasets: std={value} must be positive")
    return vals * (in_chans // len(vals)) if len(vals) == 1 else vals


def build_datasets(
    data: PathLike,
    img_size: int,
    data_dir: Optional[PathLike] = None,
    val_split: float = 0.0,
    seed: int = 0,
    train_subset: Optional[int] = None,
    strict: bool = False,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> Tuple[Dataset, Dataset, DatasetInfo]:
    """Build the training and evaluation datasets named by ``data``.

    ``data`` is one of:

    * ``'fashion-mnist'``: the IDX files found by :func:`find_idx_dir` (``data_dir``, then
      ``HILOVIT_DATA_DIR``, then ``/usr/share/datasets/fashion-mnist``); evaluation set = t10k,
      or, with ``0 < val_split < 1``, a stratified hold-out of the training set.
      Samples keep their native 28x28 size (``img_size`` is for the batch transforms).
    * a folder holding the four IDX files: the same, from that folder.
    * a folder with ``train/<class>/`` and ``val/<class>/``: those two (``val_split`` must be 0).
    * a folder of class subfolders (or one with only ``train/``): split into train/val by
      ``val_split`` in (0, 1), stratified per class and seeded (:func:`split_indices`).

    Images of folders are decoded to ``(3, img_size, img_size)`` uint8.

    Args:
        data: dataset name or folder.
        img_size: decode size of folder images.
        data_dir: IDX folder for ``'fashion-mnist'``.
        val_split: fraction of training data held out for evaluation (see above).
        seed: seed of the split and of the folder subset.
        train_subset: keep N training samples: the first N for IDX data (already in random
            order), a seeded random choice for folders (whose files are sorted by class).
        strict: raise on unreadable images instead of skipping them.
        mean, std: override the statistics. Defaults: computed from the whole IDX training file
            (so they do not move with ``train_subset``/``val_split``; Fashion-MNIST gives
            0.2860/0.3530), ImageNet's for folders.

    Returns:
        ``(train_ds, eval_ds, info)`` with ``info`` a :class:`DatasetInfo`.

    Raises:
        ValueError: unknown name that is not a folder (lists the choices), bad ``val_split``
            for the layout, bad ``train_subset``.
        FileNotFoundError: Fashion-MNIST not installed.
    """
    _check_build_args(data, val_split, train_subset, img_size)
    key = str(data).strip().lower()
    path = Path(data).expanduser()
    if key in _FASHION_ALIASES or (path.is_dir() and _is_idx_dir(path)):
        root = find_idx_dir(data_dir) if key in _FASHION_ALIASES else path
        train_ds, eval_ds, info = _idx_datasets(root, val_split, seed, train_subset)
    elif path.is_dir():
        train_ds, eval_ds, info = _folder_datasets(path, img_size, val_split, seed, train_subset, strict)
    else:
        raise ValueError(
            f"build_datasets: data={str(data)!r} is neither a known dataset nor an existing folder; "
            f"expected one of {list(DATASET_NAMES)} or a folder path (DIR/<class>/..., "
            "DIR/train/<class>/ + DIR/val/<class>/, or the four IDX files)"
        )
    mean = _check_stats("mean", mean, info.in_chans) or info.mean
    std = _check_stats("std", std, info.in_chans) or info.std
    return train_ds, eval_ds, replace(info, mean=mean, std=std)


def _check_build_args(data, val_split, train_subset, img_size) -> None:
    """The argument checks of :func:`build_datasets` that need nothing read."""
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"build_datasets: data must be a dataset name or a folder path, got {type(data).__name__}")
    check_fraction(val_split, "build_datasets: val_split")
    check_int(train_subset, "build_datasets: train_subset", minimum=1, allow_none=True)
    check_int(img_size, "build_datasets: img_size", minimum=1)


def _info(name: str, train_ds, in_chans: int, mean, std, input_size, eval_split: str) -> DatasetInfo:
    return DatasetInfo(name=name, classes=tuple(train_ds.classes), num_classes=len(train_ds.classes),
                       in_chans=in_chans, mean=tuple(mean), std=tuple(std), input_size=input_size,
                       eval_split=eval_split)


def _idx_datasets(root: Path, val_split: float, seed: int, train_subset: Optional[int]):
    """IDX files in ``root``: ``(train, eval, info)``, eval = t10k or a stratified hold-out; the statistics of
    the whole training file."""
    full = IdxDataset(root, "train")
    name = "fashion-mnist" if full.is_fashion_mnist else f"idx:{root}"
    if val_split > 0:
        train_idx, val_idx = split_indices(full.targets.numpy(), val_split, seed)
        train_ds, eval_ds, eval_split = full.select(train_idx), full.select(val_idx), "holdout"
    else:
        train_ds, eval_ds, eval_split = full, IdxDataset(root, "test", classes=full.classes), "test"
    if train_subset is not None:
        train_ds = train_ds.select(range(min(int(train_subset), len(train_ds))))
    auto_mean, auto_std = compute_mean_std(full.images)
    return train_ds, eval_ds, _info(name, train_ds, 1, auto_mean, auto_std, (1, *full.images.shape[2:]), eval_split)


def _folder_datasets(path: Path, img_size: int, val_split: float, seed: int, train_subset: Optional[int],
                     strict: bool):
    """A folder of images: ``(train, eval, info)`` from ``train/`` + ``val/`` or a seeded hold-out; a seeded
    random ``train_subset``; ImageNet statistics."""
    train_dir, val_dir = path / "train", path / "val"
    if train_dir.is_dir() and val_dir.is_dir():
        if val_split > 0:
            raise ValueError(
                f"build_datasets: data={str(path)!r} already has train/ and val/ folders; "
                f"val_split={val_split} must be 0 for that layout"
            )
        train_ds, eval_ds = _train_val_folders(train_dir, val_dir, img_size, strict)
        eval_split = "val"
    else:
        if val_dir.is_dir():
            raise ValueError(f"build_datasets: {str(path)!r} has a val/ folder but no train/ folder")
        single = train_dir if train_dir.is_dir() else path
        if val_split <= 0:
            raise ValueError(
                f"build_datasets: data={str(path)!r} is a single folder of classes (no train/ and val/); "
                f"val_split={val_split} must be in (0, 1) to hold out a validation set"
            )
        full = ImageFolderDataset(single, img_size, strict=strict)
        train_idx, val_idx = split_indices(full.targets.numpy(), val_split, seed)
        train_ds, eval_ds, eval_split = full.select(train_idx), full.select(val_idx), "holdout"
    if train_subset is not None and train_subset < len(train_ds):
        rng = np.random.default_rng(seed + 1)
        train_ds = train_ds.select(np.sort(rng.permutation(len(train_ds))[: int(train_subset)]))
    input_size = (3, int(img_size), int(img_size))
    return train_ds, eval_ds, _info(f"folder:{path}", train_ds, 3, IMAGENET_MEAN, IMAGENET_STD, input_size, eval_split)


def _train_val_folders(train_dir: Path, val_dir: Path, img_size: int, strict: bool):
    """``(train, val)`` datasets of ``train/<class>/`` and ``val/<class>/``, which must name the same classes."""
    train_ds = ImageFolderDataset(train_dir, img_size, strict=strict)
    val_classes = sorted(p.name for p in val_dir.iterdir() if p.is_dir() and _visible(p))
    if val_classes != train_ds.classes:
        raise ValueError(
            f"build_datasets: class folders differ between {train_dir} and {val_dir}: "
            f"only in train: {sorted(set(train_ds.classes) - set(val_classes))}, "
            f"only in val: {sorted(set(val_classes) - set(train_ds.classes))}"
        )
    return train_ds, ImageFolderDataset(val_dir, img_size, classes=train_ds.classes, strict=strict)
