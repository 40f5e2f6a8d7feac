"""Datasets: folders of images decoded lazily, and :func:`build_datasets` (IDX files: :mod:`hilovit.data.idx`).

Both kinds return ``(uint8 image tensor (C, H, W), int label)`` samples. Conversion to float,
channel matching, augmentation and normalisation happen later on whole batches
(:mod:`hilovit.data.transforms`), on the device that trains. Both expose ``classes`` (names)
and ``targets`` (an int64 tensor of labels); :class:`IdxDataset` also exposes all its
``images`` as one uint8 tensor, so an engine may index batches directly instead of using
a DataLoader.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hilovit.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
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

PathLike = Union[str, "os.PathLike[str]"]

# Per-channel defaults for photographs (the statistics of ImageNet-1k's training set).
IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # one home: data/constants.py

DATASET_NAMES = ("fashion-mnist",)

# Extensions Pillow can open (formats needing external programs or plugins left out).
_NOT_IMAGES = {".eps", ".ps", ".pdf", ".h5", ".hdf", ".bufr", ".grib", ".fit", ".fits", ".mpeg", ".mpg",
               ".emf", ".wmf"}


def _image_extensions() -> frozenset:
    Image.init()
    exts = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return frozenset((exts | {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}) - _NOT_IMAGES)


IMG_EXTENSIONS = _image_extensions()


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


# ----------------------------------------------------------------------------- image folders
class UnreadableImageError(ValueError):
    """An image file that Pillow cannot decode (raised with ``strict=True``)."""


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def scan_image_folder(
    root: PathLike, classes: Optional[Sequence[str]] = None
) -> Tuple[List[str], List[Tuple[Path, int]]]:
    """List ``root/<class>/<image>`` files, without opening them.

    Hidden files and folders (names starting with ``.``) and files whose extension is not an
    image format Pillow reads (``.txt``, ``.json``, ...) are ignored. Files are sorted by
    name inside each class.

    Args:
        root: the folder of class subfolders.
        classes: class names (= subfolder names) in label order; None takes every visible
            subfolder, sorted.

    Returns:
        ``(classes, samples)`` with samples a list of ``(path, label)``.

    Raises:
        FileNotFoundError: ``root`` or a named class folder does not exist.
        ValueError: no class subfolders, or a class folder with no image files.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist or is not a directory")
    if classes is None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
        if not classes:
            raise ValueError(
                f"image folder {str(root)!r} has no class subfolders; expected {root}/<class>/<image files>"
            )
    classes = [str(c) for c in classes]
    samples: List[Tuple[Path, int]] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"class folder {str(folder)!r} (class {name!r}) does not exist")
        files = sorted(
            p for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            raise ValueError(
                f"class folder {str(folder)!r} (class {name!r}) has no image files "
                "(.jpg, .png, .bmp, .gif, .webp, .tiff, ...)"
            )
        samples.extend((p, label) for p in files)
    return classes, samples


def _jpeg_complete(path: Path, tail: int = 65536) -> bool:
    """A cheap truncation test for JPEG: the end-of-image marker FF D9 near the end of the file."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - tail))
        return b"\xff\xd9" in f.read()


def check_image(path: PathLike) -> Optional[str]:
    """Cheaply check that ``path`` is a readable image, without decoding its pixels.

    Pillow's header parse plus ``Image.verify()`` (which checks PNG chunk CRCs), and for JPEG the
    presence of the end-of-image marker. Returns None when fine, else the reason as a string.
    """
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...)
        return f"{type(e).__name__}: {e}"
    if fmt in ("JPEG", "MPO") and not _jpeg_complete(Path(path)):
        return "truncated JPEG (no end-of-image marker)"
    return None


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 16-bit -> 8-bit
        elif im.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0  # float images in [0, 1]
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if "transparency" in im.info and im.mode in ("P", "L", "RGB"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        background.alpha_composite(im)
        im = background
    return im.convert("RGB")


def load_image(path: PathLike, img_size: int) -> torch.Tensor:
    """Decode an image file to a uint8 tensor (3, img_size, img_size).

    Any format and mode Pillow opens (grey, palette, RGBA, CMYK, 16-bit ...) becomes RGB;
    transparent pixels are composited on white; animated files give their first frame.
    The largest centred square is cropped and resized to ``img_size`` (bilinear, anti-aliased),
    which equals "shorter side to img_size, then centre crop" and keeps the aspect ratio.
    JPEGs are decoded at a reduced scale when much larger than needed (``draft``).
    """
    with Image.open(path) as im:
        im.draft("RGB", (img_size, img_size))
        im.load()
        rgb = _to_rgb(im)
    w, h = rgb.size
    side = min(w, h)
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    rgb = rgb.resize((img_size, img_size), Image.BILINEAR, box=box)
    arr = np.array(rgb, dtype=np.uint8)  # (H, W, 3), a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _name_some(paths: Sequence[Path], root: Path, limit: int = 5) -> str:
    def rel(p: Path) -> str:
        try:
            return str(Path(p).relative_to(root))
        except ValueError:
            return str(p)

    shown = ", ".join(rel(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


class ImageFolderDataset(Dataset):
    """A folder of class subfolders, ``root/<class>/<image>``, decoded lazily in ``__getitem__``.

    Decoding happens in DataLoader workers. Files are checked cheaply at construction
    (:func:`check_image`); unreadable ones are skipped with one warning that counts them and
    names the first few, or, with ``strict=True``, raise :class:`UnreadableImageError` (a
    ``ValueError``) naming the path. A file that passes the check but fails to decode later is
    skipped in the same way at load time: the next readable sample is returned instead.

    Args:
        root: folder of class subfolders (hidden entries ignored; classes sorted by name).
        img_size: output side; each image is centre-cropped to a square and resized
            (see :func:`load_image`).
        classes: class names in label order (subfolder names); None takes all subfolders, sorted.
        strict: raise on unreadable images instead of skipping them.
        files: explicit ``[(path, label), ...]`` instead of scanning ``root``;
            ``classes`` then defaults to the subfolders of ``root``.
        verify: check files at construction (the cheap check above); False skips it.

    Attributes:
        samples: list of ``(Path, label)`` kept; ``skipped``: paths left out.
        targets: int64 tensor (N,); ``classes``: list of names.

    Sample ``ds[i]``: ``(uint8 tensor (3, img_size, img_size), int label)``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``img_size`` not positive, no class subfolders, a class folder without
            images (or without readable ones), labels in ``files`` out of range.
    """

    def __init__(
        self,
        root: PathLike,
        img_size: int,
        classes: Optional[Sequence[str]] = None,
        strict: bool = False,
        files: Optional[Sequence[Tuple[PathLike, int]]] = None,
        verify: bool = True,
    ) -> None:
        if not isinstance(img_size, (int, np.integer)) or isinstance(img_size, bool):
            raise TypeError(f"ImageFolderDataset: img_size must be an int, got {type(img_size).__name__}")
        if img_size < 1:
            raise ValueError(f"ImageFolderDataset: img_size={img_size}, expected a positive int")
        self.root = Path(root).expanduser()
        self.img_size = int(img_size)
        self.strict = bool(strict)
        if files is None:
            self.classes, samples = scan_image_folder(self.root, classes)
        else:
            if classes is None:
                if not self.root.is_dir():
                    raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist")
                classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and _visible(p))
            self.classes = [str(c) for c in classes]
            samples = [(Path(p), int(label)) for p, label in files]
            bad = [label for _, label in samples if not 0 <= label < len(self.classes)]
            if bad:
                raise ValueError(
                    f"ImageFolderDataset: files has labels outside [0, {len(self.classes)}) "
                    f"(e.g. {bad[0]}) for classes {self.classes}"
                )
        self.skipped: List[Path] = []
        if verify:
            kept = []
            for path, label in samples:
                reason = check_image(path)
                if reason is None:
                    kept.append((path, label))
                elif self.strict:
                    raise UnreadableImageError(f"unreadable image {str(path)!r}: {reason}")
                else:
                    self.skipped.append(path)
            samples = kept
            if self.skipped:
                warnings.warn(
                    f"ImageFolderDataset: skipped {len(self.skipped)} unreadable image file(s) under "
                    f"{self.root}: {_name_some(self.skipped, self.root)}",
                    stacklevel=2,
                )
            if files is None:
                present = {label for _, label in samples}
                for label, name in enumerate(self.classes):
                    if label not in present:
                        raise ValueError(
                            f"class folder {str(self.root / name)!r} (class {name!r}) has no readable images"
                        )
        if not samples:
            raise ValueError(f"ImageFolderDataset: no images to use under {str(self.root)!r}")
        self.samples = samples
        self.targets = torch.tensor([label for _, label in samples], dtype=torch.int64)
        self._failed: set = set()

    def select(self, indices: Sequence[int]) -> ImageFolderDataset:
        """A new dataset holding the samples at ``indices`` (no re-check of the files)."""
        idx = _as_index_array(indices, len(self), "ImageFolderDataset.select: indices")
        out = copy.copy(self)
        out.samples = [self.samples[i] for i in idx.tolist()]
        out.targets = self.targets[torch.from_numpy(idx)]
        out._failed = set()
        return out

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        n = len(self.samples)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"ImageFolderDataset: index {index} out of range for {n} samples")
        for k in range(n):
            path, label = self.samples[(index + k) % n]
            if path in self._failed:
                continue
            try:
                return load_image(path, self.img_size), label
            except Exception as e:  # decoding errors come in many types
                if self.strict:
                    raise UnreadableImageError(f"unreadable image {str(path)!r}: {type(e).__name__}: {e}") from e
                self._failed.add(path)
                warnings.warn(
                    f"ImageFolderDataset: cannot decode {str(path)!r} ({type(e).__name__}: {e}); "
                    "using the next sample instead",
                    stacklevel=2,
                )
        raise UnreadableImageError(f"ImageFolderDataset: no image under {str(self.root)!r} can be decoded")

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(root={str(self.root)!r}, n={len(self)}, classes={len(self.classes)}, "
                f"img_size={self.img_size}, skipped={len(self.skipped)})")


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
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"build_datasets: data must be a dataset name or a folder path, got {type(data).__name__}")
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)) or not 0.0 <= val_split < 1.0:
        raise ValueError(f"build_datasets: val_split={val_split!r}, expected a fraction in [0, 1)")
    if train_subset is not None and (
        isinstance(train_subset, bool) or not isinstance(train_subset, (int, np.integer)) or train_subset < 1
    ):
        raise ValueError(f"build_datasets: train_subset={train_subset!r}, expected a positive int or None")
    if isinstance(img_size, bool) or not isinstance(img_size, (int, np.integer)) or img_size < 1:
        raise ValueError(f"build_datasets: img_size={img_size!r}, expected a positive int")
    key = str(data).strip().lower()
    path = Path(data).expanduser()
    if key in _FASHION_ALIASES or (path.is_dir() and _is_idx_dir(path)):
        root = find_idx_dir(data_dir) if key in _FASHION_ALIASES else path
        full = IdxDataset(root, "train")
        name = "fashion-mnist" if full.is_fashion_mnist else f"idx:{root}"
        if val_split > 0:
            train_idx, val_idx = split_indices(full.targets.numpy(), val_split, seed)
            train_ds, eval_ds, eval_split = full.select(train_idx), full.select(val_idx), "holdout"
        else:
            train_ds, eval_ds, eval_split = full, IdxDataset(root, "test", classes=full.classes), "test"
        if train_subset is not None:
            train_ds = train_ds.select(range(min(int(train_subset), len(train_ds))))
        in_chans = 1
        auto_mean, auto_std = compute_mean_std(full.images)
        input_size = (1, *full.images.shape[2:])
    elif path.is_dir():
        train_dir, val_dir = path / "train", path / "val"
        name = f"folder:{path}"
        if train_dir.is_dir() and val_dir.is_dir():
            if val_split > 0:
                raise ValueError(
                    f"build_datasets: data={str(path)!r} already has train/ and val/ folders; "
                    f"val_split={val_split} must be 0 for that layout"
                )
            train_ds = ImageFolderDataset(train_dir, img_size, strict=strict)
            val_classes = sorted(p.name for p in val_dir.iterdir() if p.is_dir() and _visible(p))
            if val_classes != train_ds.classes:
                raise ValueError(
                    f"build_datasets: class folders differ between {train_dir} and {val_dir}: "
                    f"only in train: {sorted(set(train_ds.classes) - set(val_classes))}, "
                    f"only in val: {sorted(set(val_classes) - set(train_ds.classes))}"
                )
            eval_ds = ImageFolderDataset(val_dir, img_size, classes=train_ds.classes, strict=strict)
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
        in_chans = 3
        auto_mean, auto_std = IMAGENET_MEAN, IMAGENET_STD
        input_size = (3, int(img_size), int(img_size))
    else:
        raise ValueError(
            f"build_datasets: data={str(data)!r} is neither a known dataset nor an existing folder; "
            f"expected one of {list(DATASET_NAMES)} or a folder path (DIR/<class>/..., "
            "DIR/train/<class>/ + DIR/val/<class>/, or the four IDX files)"
        )
    mean = _check_stats("mean", mean, in_chans) or tuple(auto_mean)
    std = _check_stats("std", std, in_chans) or tuple(auto_std)
    info = DatasetInfo(
        name=name,
        classes=tuple(train_ds.classes),
        num_classes=len(train_ds.classes),
        in_chans=in_chans,
        mean=mean,
        std=std,
        input_size=input_size,
        eval_split=eval_split,
    )
    return train_ds, eval_ds, info
