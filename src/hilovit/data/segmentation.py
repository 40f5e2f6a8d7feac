"""Segmentation datasets: folders of images and label masks, decoded lazily.

Every dataset returns ``(image, label)`` samples: ``image`` a uint8 tensor (C, H, W), ``label`` an
int64 tensor (H, W) holding class indices in ``[0, num_classes)`` or the ignore index (255).
Augmentation (:mod:`hilovit.data.seg_transforms`) and normalisation come later.

Two folder layouts are read:

* ADE20K (as released, and as the official mmseg config reads it)::

      ROOT/images/training/*.jpg        ROOT/annotations/training/*.png
      ROOT/images/validation/*.jpg      ROOT/annotations/validation/*.png

  The annotation PNGs hold 0 for "other" and 1..150 for the classes. With ``reduce_zero_label=True``
  (the official setting) 0 becomes the ignore index and every other value is lowered by one,
  giving 150 classes 0..149 (mmseg's ``LoadAnnotations(reduce_zero_label=True)``).
* the generic layout: ``ROOT/images/*`` and ``ROOT/masks/*`` whose files match by stem
  (``images/cat_01.jpg`` <-> ``masks/cat_01.png``), optionally split as ``ROOT/images/{train,val}/``
  + ``ROOT/masks/{train,val}/`` or ``ROOT/{train,val}/images/`` + ``ROOT/{train,val}/masks/``.
  Masks are palette PNGs (the palette index is the label) or grey images (the value is the label);
  255 is ignored.

Listing a folder opens no file; a mask of another size than its image, or holding labels outside
``[0, num_classes)`` other than the ignore index, is reported when the sample is loaded.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from hilovit.data.datasets import IMAGENET_MEAN, IMAGENET_STD, IMG_EXTENSIONS
from hilovit.data.images import _to_rgb, apply_orientation, open_image_file
from hilovit.options import check_fraction, check_int

PathLike = Union[str, "os.PathLike[str]"]

IGNORE_INDEX = 255

# The 150 classes of ADE20K (SceneParsing) in label order, after reduce_zero_label.
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair",
    "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field",
    "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion",
    "base", "box", "column", "signboard", "chest of drawers", "counter", "sand", "sink", "skyscraper",
    "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table", "pillow",
    "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair",
    "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track", "apparel", "pole",
    "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship",
    "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool", "barrel",
    "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket",
    "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen",
    "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)

ADE20K_SPLITS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}
GENERIC_SPLITS = ("train", "val")


# ----------------------------------------------------------------------------- files
def _list_images(folder: Path) -> List[Path]:
    """Image files directly inside ``folder`` (not recursive), hidden ones left out, sorted by name."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMG_EXTENSIONS
    )


def pair_images_and_masks(image_dir: PathLike, mask_dir: PathLike) -> List[Tuple[Path, Path]]:
    """Match the image files of ``image_dir`` with the mask files of ``mask_dir`` by stem.

    No file is opened. Masks without an image are left out.

    Returns:
        ``[(image_path, mask_path), ...]`` sorted by image name.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: no images; an image without a mask (the message names it, and the first few
            others); two masks (or two images) with the same stem.
    """
    image_dir, mask_dir = Path(image_dir).expanduser(), Path(mask_dir).expanduser()
    for what, folder in (("image", image_dir), ("mask", mask_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {str(folder)!r} does not exist or is not a directory")
    images = _list_images(image_dir)
    if not images:
        raise ValueError(f"image folder {str(image_dir)!r} has no image files (.jpg, .png, ...)")
    masks: Dict[str, Path] = {}
    for p in _list_images(mask_dir):
        if p.stem in masks:
            raise ValueError(f"mask folder {str(mask_dir)!r} has two masks for stem {p.stem!r}: "
                             f"{masks[p.stem].name} and {p.name}")
        masks[p.stem] = p
    seen: Dict[str, Path] = {}
    pairs, missing = [], []
    for img in images:
        if img.stem in seen:
            raise ValueError(f"image folder {str(image_dir)!r} has two images with stem {img.stem!r}: "
                             f"{seen[img.stem].name} and {img.name}")
        seen[img.stem] = img
        mask = masks.get(img.stem)
        if mask is None:
            missing.append(img)
        else:
            pairs.append((img, mask))
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(p.name for p in missing[1:4])}" \
               f"{', ...' if len(missing) > 4 else ''})" if len(missing) > 1 else ""
        raise ValueError(
            f"image {str(missing[0])!r} has no mask: expected {str(mask_dir / missing[0].stem)}.png "
            f"(any image extension, same stem){more}"
        )
    return pairs


def load_image_full(path: PathLike, channels: int = 3) -> torch.Tensor:
    """Decode an image at its own size to a uint8 tensor (channels, H, W); channels 3 (RGB) or 1 (grey).
    The EXIF orientation is applied; an image above Pillow's pixel limit is a ValueError naming the file
    (:func:`hilovit.data.images.open_image_file`)."""
    with open_image_file(path) as im:
        im.load()
        im = _to_rgb(apply_orientation(im))
        if channels == 1:
            im = im.convert("L")
    arr = np.array(im, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def load_mask(path: PathLike) -> np.ndarray:
    """Decode a label mask to an int64 array (H, W) of its raw values.

    Palette images give their palette indices, grey images (8 or 16 bit) their values; an RGB
    image is accepted only when it is grey (three equal channels). An EXIF orientation is applied, as
    to the images (:func:`load_image_full`).

    Raises:
        ValueError: a colour RGB mask or a mode that holds no labels; the message names the file.
    """
    with open_image_file(path) as stored:
        stored.load()
        im = apply_orientation(stored)
        mode = im.mode
        if mode in ("P", "L", "1", "I", "I;16", "I;16L", "I;16B", "I;16N"):
            arr = np.array(im)
        elif mode in ("RGB", "RGBA", "LA"):
            arr = np.array(im)
            if mode == "LA":
                arr = arr[..., 0]
            else:
                rgb = arr[..., :3]
                if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                    raise ValueError(
                        f"mask {str(path)!r} is a colour {mode} image; expected a palette (P) PNG whose "
                        "indices are the labels, or a grey image whose values are the labels"
                    )
                arr = rgb[..., 0]
        else:
            raise ValueError(f"mask {str(path)!r} has image mode {mode!r}; expected a palette (P) or grey (L, I;16) "
                             "image holding one label per pixel")
    return arr.astype(np.int64)


def reduce_zero_label(label: np.ndarray, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """mmseg's ``reduce_zero_label``: 0 -> ``ignore_index``, v -> v - 1, ``ignore_index`` stays ignored."""
    out = label - 1
    out[(label == 0) | (label == ignore_index)] = ignore_index
    return out


# ----------------------------------------------------------------------------- datasets
class SegmentationFolder(Dataset):
    """Pairs of image and mask files, decoded in ``__getitem__``.

    Args:
        pairs: ``[(image_path, mask_path), ...]`` (see :func:`pair_images_and_masks`).
        num_classes: labels must lie in ``[0, num_classes)`` (after ``reduce_zero_label``) or equal
            ``ignore_index``.
        classes: class names (``num_classes`` of them); None gives ``'0'``, ``'1'``, ...
        reduce_zero_label: mmseg's ADE20K setting (see :func:`reduce_zero_label`).
        ignore_index: the label that marks pixels left out of the loss and the metrics.
        channels: 3 decodes images as RGB (grey, palette, RGBA ... converted), 1 as grey.
        root: the folder, for messages.

    Sample ``ds[i]``: ``(uint8 tensor (channels, H, W), int64 tensor (H, W))``.

    Raises (at loading): ValueError naming the files when a mask's size differs from its image's
    (both sizes given) or it holds a label outside ``[0, num_classes)`` that is not ``ignore_index``
    (the value given, as read from the file).
    """

    def __init__(
        self,
        pairs: Sequence[Tuple[PathLike, PathLike]],
        num_classes: int,
        classes: Optional[Sequence[str]] = None,
        reduce_zero_label: bool = False,
        ignore_index: int = IGNORE_INDEX,
        channels: int = 3,
        root: Optional[PathLike] = None,
    ) -> None:
        check_int(num_classes, f"{type(self).__name__}: num_classes", minimum=1)
        if not isinstance(ignore_index, (int, np.integer)) or 0 <= ignore_index < num_classes:
            raise ValueError(f"{type(self).__name__}: ignore_index={ignore_index!r} must be an int outside "
                             f"[0, num_classes={num_classes})")
        if channels not in (1, 3):
            raise ValueError(f"{type(self).__name__}: channels={channels!r}, expected 1 or 3")
        if classes is None:
            classes = [str(i) for i in range(num_classes)]
        if len(classes) != num_classes:
            raise ValueError(f"{type(self).__name__}: {len(classes)} class names for num_classes={num_classes}")
        if not pairs:
            raise ValueError(f"{type(self).__name__}: no (image, mask) pairs under {str(root)!r}")
        self.pairs = [(Path(i), Path(m)) for i, m in pairs]
        self.num_classes = int(num_classes)
        self.classes = [str(c) for c in classes]
        self.reduce_zero_label = bool(reduce_zero_label)
        self.ignore_index = int(ignore_index)
        self.channels = channels
        self.root = Path(root) if root is not None else self.pairs[0][0].parent

    def __len__(self) -> int:
        return len(self.pairs)

    def load_label(self, index: int) -> torch.Tensor:
        """The label map of sample ``index`` alone (int64 (H, W)), checked against ``num_classes``."""
        _, mask_path = self.pairs[index]
        raw = load_mask(mask_path)
        label = reduce_zero_label(raw, self.ignore_index) if self.reduce_zero_label else raw
        bad = (label != self.ignore_index) & ((label < 0) | (label >= self.num_classes))
        if bad.any():
            values = np.unique(raw[bad])
            shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
            extra = " (before reduce_zero_label)" if self.reduce_zero_label else ""
            raise ValueError(
                f"mask {str(mask_path)!r} holds label value(s) {shown}{extra} outside [0, {self.num_classes}) "
                f"for num_classes={self.num_classes}, and not the ignore index {self.ignore_index}"
            )
        return torch.from_numpy(label)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        n = len(self.pairs)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} samples")
        index %= n
        image_path, mask_path = self.pairs[index]
        image = load_image_full(image_path, self.channels)
        label = self.load_label(index)
        if tuple(image.shape[1:]) != tuple(label.shape):
            raise ValueError(
                f"mask {str(mask_path)!r} is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
                f"{str(image_path)!r} is {image.shape[2]}x{image.shape[1]}; a mask must have its image's size"
            )
        return image, label

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, n={len(self)}, num_classes={self.num_classes}, "
                f"reduce_zero_label={self.reduce_zero_label})")


class ADE20KDataset(SegmentationFolder):
    """ADE20K (SceneParsing, ``ADEChallengeData2016``) as the official config reads it.

    Args:
        root: the folder holding ``images/`` and ``annotations/``.
        split: ``'training'`` (or ``'train'``) or ``'validation'`` (or ``'val'``).
        reduce_zero_label: True (the official setting) maps 0 ("other") to 255 and the classes
            1..150 to 0..149; False keeps the raw values, then ``num_classes`` counts 0 too.
        num_classes: None gives 150 with ``reduce_zero_label`` and 151 without.
        classes: None gives :data:`ADE20K_CLASSES` (with ``'other'`` first without ``reduce_zero_label``).

    Example::

        >>> ds = ADE20KDataset("data/ADEChallengeData2016", "validation")
        >>> image, label = ds[0]   # uint8 (3, H, W), int64 (H, W) in 0..149 or 255
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "training",
        reduce_zero_label: bool = True,
        num_classes: Optional[int] = None,
        classes: Optional[Sequence[str]] = None,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if split not in ADE20K_SPLITS:
            raise ValueError(f"ADE20KDataset: split={split!r}, expected 'training' ('train') or 'validation' ('val')")
        root = Path(root).expanduser()
        sub = ADE20K_SPLITS[split]
        self.split = sub
        pairs = pair_images_and_masks(root / "images" / sub, root / "annotations" / sub)
        if num_classes is None:
            num_classes = len(ADE20K_CLASSES) + (0 if reduce_zero_label else 1)
        if classes is None:
            names = list(ADE20K_CLASSES) if reduce_zero_label else ["other", *ADE20K_CLASSES]
            classes = names if len(names) == num_classes else None
        super().__init__(pairs, num_classes, classes, reduce_zero_label, ignore_index, 3, root)


def is_ade20k_dir(root: PathLike) -> bool:
    """True when ``root`` has the ADE20K layout (``images/training`` and ``annotations/training``)."""
    root = Path(root).expanduser()
    return (root / "images" / "training").is_dir() and (root / "annotations" / "training").is_dir()


def generic_split_dirs(root: PathLike, split: Optional[str]) -> Optional[Tuple[Path, Path]]:
    """The (images, masks) folders of ``split`` in the generic layout, or None when absent.

    ``split=None`` is ``ROOT/images`` + ``ROOT/masks``; ``'train'``/``'val'`` try
    ``ROOT/images/<split>`` + ``ROOT/masks/<split>``, then ``ROOT/<split>/images`` + ``ROOT/<split>/masks``.
    """
    root = Path(root).expanduser()
    if split is None:
        candidates = [(root / "images", root / "masks")]
    else:
        candidates = [(root / "images" / split, root / "masks" / split),
                      (root / split / "images", root / split / "masks")]
    for image_dir, mask_dir in candidates:
        if image_dir.is_dir() and mask_dir.is_dir():
            return image_dir, mask_dir
    return None


class MaskFolderDataset(SegmentationFolder):
    """The generic layout: ``images/`` + ``masks/`` with matching stems (see the module docstring).

    Args:
        root: the dataset folder.
        split: None for ``ROOT/images`` + ``ROOT/masks``; ``'train'`` or ``'val'`` for the split layouts.
        num_classes: the number of classes (labels ``0..num_classes-1``; 255 ignored). Needed up
            front because listing opens no mask; give ``classes`` instead to name them.
        classes: class names; their count is ``num_classes`` when that is None.
        channels: 3 (RGB) or 1 (grey) images.
    """

    def __init__(
        self,
        root: PathLike,
        split: Optional[str] = None,
        num_classes: Optional[int] = None,
        classes: Optional[Sequence[str]] = None,
        ignore_index: int = IGNORE_INDEX,
        channels: int = 3,
        reduce_zero_label: bool = False,
    ) -> None:
        if split is not None and split not in GENERIC_SPLITS:
            raise ValueError(f"MaskFolderDataset: split={split!r}, expected None, 'train' or 'val'")
        if num_classes is None:
            if classes is None:
                raise ValueError("MaskFolderDataset: give num_classes (or classes): the masks are not read up front")
            num_classes = len(classes)
        root = Path(root).expanduser()
        dirs = generic_split_dirs(root, split)
        if dirs is None:
            where = ("images/ and masks/" if split is None
                     else f"images/{split}/ + masks/{split}/ or {split}/images/ + {split}/masks/")
            raise FileNotFoundError(f"MaskFolderDataset: {str(root)!r} has no {where} folders")
        self.split = split
        pairs = pair_images_and_masks(*dirs)
        super().__init__(pairs, num_classes, classes, reduce_zero_label, ignore_index, channels, root)


# ----------------------------------------------------------------------------- building
@dataclass(frozen=True)
class SegDatasetInfo:
    """What a segmentation model and engine need to know about a dataset.

    Attributes:
        name: ``'fashion-scenes'``, ``'ade20k:<path>'`` or ``'masks:<path>'``.
        classes: names in label order; ``num_classes == len(classes)``.
        in_chans: channels of the images (1 for fashion-scenes, 3 for folders).
        mean, std: per-channel statistics on the [0, 1] scale.
        ignore_index: the label left out of the loss and the metrics.
        eval_split: ``'test'``, ``'validation'``, ``'val'`` or ``'holdout'``.
    """

    name: str
    classes: Tuple[str, ...]
    num_classes: int
    in_chans: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    ignore_index: int = IGNORE_INDEX
    eval_split: str = "test"


SEG_DATASET_NAMES = ("fashion-scenes",)


def build_seg_datasets(
    data: PathLike,
    num_classes: Optional[int] = None,
    classes: Optional[Sequence[str]] = None,
    seed: int = 0,
    val_split: float = 0.0,
    data_dir: Optional[PathLike] = None,
    num_train: Optional[int] = None,
    num_test: Optional[int] = None,
) -> Tuple[Dataset, Dataset, SegDatasetInfo]:
    """Build the training and evaluation segmentation datasets named by ``data``.

    ``data`` is one of:

    * ``'fashion-scenes'``: :class:`~hilovit.data.fashion_scenes.FashionScenes` from the
      Fashion-MNIST IDX files (``data_dir``, ``HILOVIT_DATA_DIR``, then the Debian path), training
      scenes from the 60,000 training images, test scenes from the 10,000 test images; ``seed``
      picks the scenes, ``num_train``/``num_test`` their counts.
    * an ADE20K folder (``images/training`` + ``annotations/training``): training and validation,
      ``reduce_zero_label`` on, 150 classes.
    * a generic folder: ``train``/``val`` split folders when present; else ``images/`` + ``masks/``
      held out by ``val_split`` in (0, 1) (a seeded random choice of files). ``num_classes`` or
      ``classes`` is required.

    Returns:
        ``(train_ds, eval_ds, info)`` with ``info`` a :class:`SegDatasetInfo`.
    """
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"build_seg_datasets: data must be a dataset name or a folder, got {type(data).__name__}")
    check_fraction(val_split, "build_seg_datasets: val_split")
    key = str(data).strip().lower()
    path = Path(data).expanduser()
    if key in ("fashion-scenes", "fashion_scenes", "fashionscenes"):
        from hilovit.data.fashion_scenes import FashionScenes

        if val_split > 0:
            raise ValueError(f"build_seg_datasets: fashion-scenes has its own test scenes; val_split={val_split} "
                             "must be 0")
        train_ds = FashionScenes("train", num_scenes=num_train, seed=seed, root=data_dir)
        eval_ds = FashionScenes("test", num_scenes=num_test, seed=seed, root=data_dir)
        mean, std = train_ds.mean_std()
        info = SegDatasetInfo("fashion-scenes", tuple(train_ds.classes), len(train_ds.classes), 1, mean, std)
        return train_ds, eval_ds, info
    if not path.is_dir():
        raise ValueError(
            f"build_seg_datasets: data={str(data)!r} is neither a known dataset nor an existing folder; expected "
            f"one of {list(SEG_DATASET_NAMES)}, an ADE20K folder (images/training + annotations/training) or a "
            "folder of images/ + masks/"
        )
    if is_ade20k_dir(path):
        kw = dict(num_classes=num_classes, classes=classes)
        train_ds = ADE20KDataset(path, "training", **kw)
        eval_ds = ADE20KDataset(path, "validation", **kw)
        name, eval_split = f"ade20k:{path}", "validation"
    else:
        if generic_split_dirs(path, "train") is not None:
            if val_split > 0:
                raise ValueError(f"build_seg_datasets: {str(path)!r} already has train and val folders; "
                                 f"val_split={val_split} must be 0")
            train_ds = MaskFolderDataset(path, "train", num_classes, classes)
            eval_ds = MaskFolderDataset(path, "val", num_classes, classes)
            eval_split = "val"
        else:
            full = MaskFolderDataset(path, None, num_classes, classes)
            if val_split <= 0:
                raise ValueError(f"build_seg_datasets: {str(path)!r} has one images/ + masks/ folder (no train/val); "
                                 f"val_split={val_split} must be in (0, 1) to hold out an evaluation set")
            n = len(full)
            n_val = min(max(int(round(n * val_split)), 1), n - 1)
            if n < 2:
                raise ValueError(f"build_seg_datasets: {str(path)!r} has {n} sample; a hold-out needs at least 2")
            order = np.random.default_rng(seed).permutation(n)
            train_ds, eval_ds = _subset(full, np.sort(order[n_val:])), _subset(full, np.sort(order[:n_val]))
            eval_split = "holdout"
        name = f"masks:{path}"
    info = SegDatasetInfo(name, tuple(train_ds.classes), train_ds.num_classes, 3, IMAGENET_MEAN, IMAGENET_STD,
                          train_ds.ignore_index, eval_split)
    return train_ds, eval_ds, info


def _subset(ds: SegmentationFolder, indices: np.ndarray) -> SegmentationFolder:
    out = copy.copy(ds)
    out.pairs = [ds.pairs[i] for i in indices.tolist()]
    return out
