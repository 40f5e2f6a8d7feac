"""Image folders at any scale: listing without opening, decoding in workers, crops on the decoded image.

* :func:`scan_image_folder` lists ``root/<class>/<image>`` files by name only: building a dataset of
  the 1.28 million ImageNet training files reads no file.
* :class:`ImageFolderDataset` decodes in ``__getitem__`` (in DataLoader workers). A file that fails
  to decode is skipped when it is met: the next sample is used, and the skipped path is handed
  back through :meth:`ImageFolderDataset.load_with_skips` so the training loop can report it at the
  end of the epoch (:func:`hilovit.train.loaders.report_skipped_images`), workers included.
* Two ways to make a sample, both on the full decoded image (Pillow, uint8 out; the geometry lives in
  :mod:`hilovit.data.image_transforms`):
  training, :func:`random_resized_crop_box` + a resize to ``img_size`` (the random-resized crop of
  the whole picture); evaluation, :func:`resize_center_crop`, the official protocol: the shorter
  side to ``int(img_size / crop_pct)`` with the configured interpolation, then the centre
  ``img_size`` square (``crop_mode='squash'``: both sides to that size, then the centre; the whole
  image for ``crop_pct=1``, as the official 384 models are evaluated).
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hilovit.data.image_transforms import (  # noqa: F401  (the per-image transforms live in image_transforms.py)
    CROP_MODES,
    PIL_INTERPOLATION,
    _check_crop_mode,
    _check_crop_pct,
    _check_range,
    normalization_problem,
    pil_interpolation,
    preprocess_image,
    random_resized_crop_box,
    resize_center_crop,
)
from hilovit.data.images import (  # noqa: F401  (decoding lives in images.py; these names stay importable here)
    LargeImageWarning,
    _jpeg_complete,
    _to_rgb,
    _to_tensor,
    apply_orientation,
    check_image,
    decode_image,
    exif_orientation,
    open_image,
    open_image_file,
    reduce_jpeg_decode,
)

PathLike = Union[str, "os.PathLike[str]"]

# Extensions Pillow can open (formats needing external programs or plugins left out).
_NOT_IMAGES = {".eps", ".ps", ".pdf", ".h5", ".hdf", ".bufr", ".grib", ".fit", ".fits", ".mpeg", ".mpg",
               ".emf", ".wmf"}


def _image_extensions() -> frozenset:
    Image.init()
    exts = {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    return frozenset((exts | {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}) - _NOT_IMAGES)


IMG_EXTENSIONS = _image_extensions()

# ----------------------------------------------------------------------------- files
class UnreadableImageError(ValueError):
    """An image file that Pillow cannot decode (raised with ``strict=True``)."""


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def scan_image_folder(
    root: PathLike, classes: Optional[Sequence[str]] = None
) -> Tuple[List[str], List[Tuple[Path, int]]]:
    """List ``root/<class>/<image>`` files by name, without opening any of them.

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
        files = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # hidden folders: not entered
            files.extend(Path(dirpath) / f for f in filenames
                         if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMG_EXTENSIONS)
        if not files:
            raise ValueError(
                f"class folder {str(folder)!r} (class {name!r}) has no image files "
                "(.jpg, .png, .bmp, .gif, .webp, .tiff, ...)"
            )
        samples.extend((p, label) for p in sorted(files))
    return classes, samples


def check_normalization(mean: Any, std: Any, channels: int) -> None:
    """Refuse a normalisation that would make the model's input NaN or of the wrong width: ``mean`` and
    ``std`` (None: not given) must each hold 1 or ``channels`` finite numbers, ``std`` above 0.

    Raises:
        OptionError: naming ``{mean}`` or ``{std}``, the value and what is expected.
    """
    from hilovit.options import OptionError

    for kind, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        problem = normalization_problem(values, kind, channels)
        if problem is not None:
            shown = tuple(values) if isinstance(values, (list, tuple)) else values
            raise OptionError(f"{{{kind}}}={shown!r}: {problem}")


def load_image(path: PathLike, img_size: int, crop_pct: float = 1.0, interpolation: str = "bilinear",
               crop_mode: str = "center") -> torch.Tensor:
    """Decode an image file to a uint8 tensor (3, img_size, img_size) by :func:`resize_center_crop`.

    The default (``crop_pct=1``, bilinear, centre) keeps the largest centred square, resized to
    ``img_size``; the official models' evaluation uses their ``pretrained_cfg`` values (e.g.
    0.875, bicubic; ``'squash'`` for the 384 models). The file is decoded at full resolution, as
    the official evaluation does.
    """
    return _to_tensor(resize_center_crop(decode_image(path), img_size, crop_pct, interpolation, crop_mode))


def _name_some(paths: Sequence[Path], root: Path, limit: int = 5) -> str:
    def rel(p: Path) -> str:
        try:
            return str(Path(p).relative_to(root))
        except ValueError:
            return str(p)

    shown = ", ".join(rel(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


DRAFT_MODES = ("train", "all", "off")


class ImageFolderDataset(Dataset):
    """A folder of class subfolders, ``root/<class>/<image>``, decoded lazily in ``__getitem__``.

    Construction lists file names only (no file is opened, unless ``verify=True``). Decoding
    happens in DataLoader workers: a file that fails is skipped when met, the next readable sample
    is returned instead, and the path is remembered (``ds.load_with_skips(i)`` returns it, so a
    loader can collect it from its workers) or, with ``strict=True``, :class:`UnreadableImageError`
    (a ``ValueError``) names it.

    Each sample is made from the full decoded image:

    * evaluation (the default): :func:`resize_center_crop` with ``crop_pct`` and ``interpolation``;
    * training, after :meth:`set_train_crop`: a :func:`random_resized_crop_box` of the whole image,
      resized to ``img_size`` with ``interpolation``.

    Args:
        root: folder of class subfolders (hidden entries ignored; classes sorted by name).
        img_size: output side (square).
        classes: class names in label order (subfolder names); None takes all subfolders, sorted.
        strict: raise on unreadable images instead of skipping them.
        files: explicit ``[(path, label), ...]`` instead of scanning ``root``;
            ``classes`` then defaults to the subfolders of ``root``.
        verify: check every file at construction (:func:`check_image`, a header parse: slow at
            ImageNet scale) and leave out the unreadable ones with one warning.
        crop_pct, interpolation, crop_mode: the evaluation crop (see :func:`resize_center_crop`);
            the interpolation ('bilinear', 'bicubic', 'nearest', ...) also resizes training crops.
        draft: when a JPEG may decode at 1/2, 1/4 or 1/8 scale (:func:`reduce_jpeg_decode`), which
            it does only where the crop still has ``img_size`` pixels per side: ``'train'`` (the
            default) for training crops, whose box is drawn before decoding; ``'all'`` for
            evaluation too; ``'off'`` never. Evaluation decodes the full image by default, as the
            reference protocols do, so its numbers match theirs.

    Attributes:
        samples: list of ``(Path, label)`` kept; ``skipped``: paths left out by ``verify``.
        targets: int64 tensor (N,); ``classes``: list of names; ``failed``: paths found unreadable
            when loading (in this process).

    Sample ``ds[i]``: ``(uint8 tensor (3, img_size, img_size), int label)``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``img_size`` not positive, no class subfolders, a class folder without
            images (or, with ``verify``, without readable ones), labels in ``files`` out of range.
    """

    def __init__(
        self,
        root: PathLike,
        img_size: int,
        classes: Optional[Sequence[str]] = None,
        strict: bool = False,
        files: Optional[Sequence[Tuple[PathLike, int]]] = None,
        verify: bool = False,
        crop_pct: float = 1.0,
        interpolation: str = "bilinear",
        draft: str = "train",
        crop_mode: str = "center",
    ) -> None:
        if draft not in DRAFT_MODES:
            raise ValueError(f"ImageFolderDataset: draft={draft!r}; choose one of {', '.join(DRAFT_MODES)}")
        self.draft = draft
        if not isinstance(img_size, (int, np.integer)) or isinstance(img_size, bool):
            raise TypeError(f"ImageFolderDataset: img_size must be an int, got {type(img_size).__name__}")
        if img_size < 1:
            raise ValueError(f"ImageFolderDataset: img_size={img_size}, expected a positive int")
        self.root = Path(root).expanduser()
        self.img_size = int(img_size)
        self.strict = bool(strict)
        self.crop_pct = _check_crop_pct(crop_pct)
        self.crop_mode = _check_crop_mode(crop_mode)
        pil_interpolation(interpolation)
        self.interpolation = interpolation.lower()
        self.train_crop: Optional[Tuple[Tuple[float, float], Tuple[float, float]]] = None
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
                    f"(e.g. {bad[0]}) for classes {self.classes[:10]}{' ...' if len(self.classes) > 10 else ''}"
                )
        self.skipped: List[Path] = []
        if verify:
            samples = self._verify(samples, files is None)
        if not samples:
            raise ValueError(f"ImageFolderDataset: no images to use under {str(self.root)!r}")
        self.samples = samples
        self.targets = torch.tensor([label for _, label in samples], dtype=torch.int64)
        self.failed: set = set()

    def _verify(self, samples, check_classes: bool):
        kept = []
        for path, label in samples:
            reason = check_image(path)
            if reason is None:
                kept.append((path, label))
            elif self.strict:
                raise UnreadableImageError(f"unreadable image {str(path)!r}: {reason}")
            else:
                self.skipped.append(path)
        if self.skipped:
            warnings.warn(
                f"ImageFolderDataset: skipped {len(self.skipped)} unreadable image file(s) under "
                f"{self.root}: {_name_some(self.skipped, self.root)}",
                stacklevel=3,
            )
        if check_classes:
            present = {label for _, label in kept}
            for label, name in enumerate(self.classes):
                if label not in present:
                    raise ValueError(f"class folder {str(self.root / name)!r} (class {name!r}) has no readable images")
        return kept

    # ---- how samples are made
    def set_train_crop(self, scale: Tuple[float, float] = (0.08, 1.0),
                       ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> ImageFolderDataset:
        """Make training samples: a random-resized crop (area fraction ``scale``, aspect ``ratio``)
        of the full decoded image, resized to ``img_size``. Returns the dataset itself."""
        self.train_crop = (_check_range("scale", scale), _check_range("ratio", ratio))
        return self

    def set_eval_crop(self, crop_pct: float = 1.0, interpolation: Optional[str] = None,
                      crop_mode: Optional[str] = None) -> ImageFolderDataset:
        """Make evaluation samples (:func:`resize_center_crop`; the default). Returns the dataset itself."""
        self.crop_pct = _check_crop_pct(crop_pct)
        if crop_mode is not None:
            self.crop_mode = _check_crop_mode(crop_mode)
        if interpolation is not None:
            pil_interpolation(interpolation)
            self.interpolation = interpolation.lower()
        self.train_crop = None
        return self

    def make_sample(self, image: Image.Image) -> torch.Tensor:
        """A decoded RGB image -> the uint8 sample (3, img_size, img_size), as this dataset makes them."""
        if self.train_crop is None:
            return _to_tensor(resize_center_crop(image, self.img_size, self.crop_pct, self.interpolation,
                                                 self.crop_mode))
        left, top, w, h = random_resized_crop_box(image.width, image.height, *self.train_crop)
        out = image.resize((self.img_size, self.img_size), pil_interpolation(self.interpolation),
                           box=(left, top, left + w, top + h))
        return _to_tensor(out)

    def _read(self, path: Path) -> torch.Tensor:
        with open_image_file(path) as im:
            orientation = exif_orientation(im)
            width, height = im.size if orientation < 5 else im.size[::-1]  # upright, as the crop is drawn
            if self.train_crop is None:
                box = None
                room = min(width, height) / math.ceil(self.img_size / self.crop_pct) if self.draft == "all" else 1.0
            else:  # the crop is drawn before decoding, so the decoder knows how much of the detail it keeps
                box = random_resized_crop_box(width, height, *self.train_crop)
                room = min(box[2], box[3]) / self.img_size if self.draft != "off" else 1.0
            factor = reduce_jpeg_decode(im, room)
            im.load()
            image = _to_rgb(apply_orientation(im, orientation))
        if box is None:
            return _to_tensor(resize_center_crop(image, self.img_size, self.crop_pct, self.interpolation,
                                                 self.crop_mode))
        left, top, w, h = (v / factor for v in box)
        out = image.resize((self.img_size, self.img_size), pil_interpolation(self.interpolation),
                           box=(left, top, min(left + w, image.width), min(top + h, image.height)))
        return _to_tensor(out)

    def select(self, indices: Sequence[int]) -> ImageFolderDataset:
        """A new dataset holding the samples at ``indices`` (no re-check of the files)."""
        from hilovit.data.idx import _as_index_array

        idx = _as_index_array(indices, len(self), "ImageFolderDataset.select: indices")
        out = copy.copy(self)
        out.samples = [self.samples[i] for i in idx.tolist()]
        out.targets = self.targets[torch.from_numpy(idx)]
        out.failed = set(self.failed)
        return out

    def __len__(self) -> int:
        return len(self.samples)

    def load_with_skips(self, index: int) -> Tuple[torch.Tensor, int, Tuple[str, ...]]:
        """``(image, label, skipped)``: the sample at ``index``, or the next readable one, and the
        paths passed over because they cannot be decoded (known ones included)."""
        n = len(self.samples)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"ImageFolderDataset: index {index} out of range for {n} samples")
        skipped: List[str] = []
        for k in range(n):
            path, label = self.samples[(index + k) % n]
            if path in self.failed:
                skipped.append(str(path))
                continue
            try:
                return self._read(path), label, tuple(skipped)
            except Exception as e:  # decoding errors come in many types
                if self.strict:
                    raise UnreadableImageError(f"unreadable image {str(path)!r}: {type(e).__name__}: {e}") from e
                self.failed.add(path)
                skipped.append(str(path))
                warnings.warn(
                    f"ImageFolderDataset: cannot decode {str(path)!r} ({type(e).__name__}: {e}); "
                    "using the next sample instead",
                    stacklevel=2,
                )
        raise UnreadableImageError(f"ImageFolderDataset: no image under {str(self.root)!r} can be decoded")

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        image, label, _ = self.load_with_skips(index)
        return image, label

    def __repr__(self) -> str:
        crop = (f"train_crop(scale={self.train_crop[0]}, ratio={self.train_crop[1]})" if self.train_crop
                else f"crop_pct={self.crop_pct}, crop_mode={self.crop_mode!r}")
        return (f"ImageFolderDataset(root={str(self.root)!r}, n={len(self)}, classes={len(self.classes)}, "
                f"img_size={self.img_size}, {crop}, interpolation={self.interpolation!r}, "
                f"skipped={len(self.skipped)})")
