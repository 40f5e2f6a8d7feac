"""COCO-format detection data: an annotation file plus an image folder, read lazily.

:class:`CocoDetection` reads one ``instances_*.json`` (or any file in COCO's object-detection format)
and the folder of its images. Each sample is ``(image, target)``: ``image`` a uint8 tensor
``(3, H, W)`` (grey and palette images expanded to RGB, the EXIF orientation applied) and
``target`` a dict

* ``boxes``: float32 ``(N, 4)`` ``x1, y1, x2, y2`` in pixels, from COCO's ``bbox = [x, y, w, h]``
  as ``[x, y, x + w, y + h]``: the right and bottom edges are exclusive (a box covering pixel
  columns 2..5 runs from x1 = 2 to x2 = 6), as for mmdet;
* ``labels``: int64 ``(N,)``, the contiguous index of the category (categories sorted by id);
* ``masks``: bool ``(N, H, W)`` from polygons or RLE (:mod:`pycocotools.mask`), when masks are read;
* ``image_id``: the COCO ``id`` of the image, so that results written as COCO JSON are scored by
  ``COCOeval`` against the same file;
* ``ignore_boxes`` (and ``ignore_masks``): the ``iscrowd`` regions, kept apart from the positives
  (mmdet's ``ignore_flag``), with the annotations whose segmentation holds no usable polygon when
  masks are read (mmdet ignores those too).

Rules at reading, as mmdet's ``CocoDataset`` where it is silent: annotations whose box is under one
pixel wide or high, does not overlap its image, or whose ``area`` is not positive, are skipped (counted
in ``num_skipped``);
images without any positive annotation are kept as negatives (counted in ``num_empty``). Errors are
``ValueError`` naming the file and the annotation (or image) id: a malformed JSON, an annotation of
an unknown image or category, a box leaving its image by more than one pixel (boxes within that
tolerance are clipped to the image), a missing image file, an image whose decoded size differs from
the one the file records.

The ground truth in COCO form for the evaluation (:class:`CocoGroundTruth`) is shared with the
generated data sets (``fashion-scenes``), so one ``COCOeval`` code scores both.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from hilovit.data.images import _to_tensor, decode_image
from hilovit.options import check_int

PathLike = Union[str, "os.PathLike[str]"]

BOX_TOLERANCE = 1.0  # pixels a box may pass its image's border by (clipped back)


def _mask_util():
    from pycocotools import mask as mask_util

    return mask_util


def make_coco(dataset: Dict[str, Any]):
    """A ``pycocotools.coco.COCO`` holding ``dataset`` (a COCO-format dict), indexed without its prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def write_json_atomic(obj: Any, path: PathLike) -> Path:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder, then a rename."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


class CocoGroundTruth:
    """The COCO-format ground truth of an evaluation dataset, for ``COCOeval``.

    A dataset provides :meth:`coco_ground_truth` (the dict: ``images``, ``annotations``,
    ``categories``); this mixin adds the ``COCO`` object and the file.
    """

    def coco_ground_truth(self) -> Dict[str, Any]:  # pragma: no cover - provided by the datasets
        raise NotImplementedError

    def coco_gt(self):
        """A ``pycocotools.coco.COCO`` of exactly this dataset's images and their annotations."""
        return make_coco(self.coco_ground_truth())

    def write_coco_gt(self, path: PathLike) -> Path:
        """Write :meth:`coco_ground_truth` as a COCO annotation file (atomically); returns the path."""
        return write_json_atomic(self.coco_ground_truth(), path)


# ----------------------------------------------------------------------------- reading the file
def load_coco_json(path: PathLike) -> Dict[str, Any]:
    """Read a COCO annotation file: a JSON object with ``images`` and ``categories`` lists
    (``annotations`` may be absent: no object then).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not valid JSON, or not of that shape (the message names the file).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {str(path)!r} does not exist")
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"COCO annotation file {str(path)!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"COCO annotation file {str(path)!r} holds a {type(data).__name__}; expected a JSON "
                         "object with 'images', 'annotations' and 'categories'")
    data.setdefault("annotations", [])
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"COCO annotation file {str(path)!r}: {key!r} must be a list, got "
                             f"{type(data.get(key)).__name__}")
    return data


def _int_field(entry: Any, key: str, where: str) -> int:
    value = entry.get(key) if isinstance(entry, dict) else None
    return check_int(value, f"{where}: {key}")


def _parse_categories(data: Dict[str, Any], name: str) -> Tuple[Tuple[int, ...], Tuple[str, ...]]:
    """(ids sorted, names in that order); duplicates refused."""
    cats = {}
    for k, c in enumerate(data["categories"]):
        cid = _int_field(c, "id", f"{name}: categories[{k}]")
        if cid in cats:
            raise ValueError(f"{name}: category id {cid} appears twice")
        cats[cid] = str(c.get("name", cid))
    if not cats:
        raise ValueError(f"{name}: 'categories' is empty; a detection file names its classes there")
    ids = tuple(sorted(cats))
    return ids, tuple(cats[i] for i in ids)


def _parse_images(data: Dict[str, Any], name: str) -> Tuple[List[int], List[str], np.ndarray]:
    """Image ids, file names and (height, width) in file order; duplicates and bad sizes refused."""
    ids, files, sizes, seen = [], [], [], set()
    for k, im in enumerate(data["images"]):
        where = f"{name}: images[{k}]"
        iid = _int_field(im, "id", where)
        where = f"{name}: image id {iid}"
        if iid in seen:
            raise ValueError(f"{where} appears twice")
        h, w = _int_field(im, "height", where), _int_field(im, "width", where)
        if h < 1 or w < 1:
            raise ValueError(f"{where}: size {w}x{h} (WxH), expected positive sides")
        file_name = im.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f"{where}: 'file_name' must be a non-empty string, got {file_name!r}")
        seen.add(iid)
        ids.append(iid)
        files.append(file_name)
        sizes.append((h, w))
    return ids, files, np.asarray(sizes, dtype=np.int64).reshape(-1, 2)


def _has_mask(segm: Any) -> bool:
    """mmdet's rule: RLE, or at least one polygon with an even count of >= 6 coordinates."""
    if isinstance(segm, dict):
        return "counts" in segm and "size" in segm
    if isinstance(segm, list):
        return any(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in segm)
    return False


def _parse_annotations(data: Dict[str, Any], name: str, image_index: Dict[int, int],
                       label_of: Dict[int, int]) -> Dict[str, Any]:
    """Per annotation (file order): ids, image index, label, raw bbox, area, crowd, segmentation."""
    anns = data["annotations"]
    ids = np.empty(len(anns), dtype=np.int64)
    image = np.empty(len(anns), dtype=np.int64)
    label = np.empty(len(anns), dtype=np.int64)
    bbox = np.empty((len(anns), 4), dtype=np.float64)
    area = np.full(len(anns), np.inf)
    crowd = np.zeros(len(anns), dtype=bool)
    segms: List[Any] = []
    seen = set()
    for k, a in enumerate(anns):
        aid = _int_field(a, "id", f"{name}: annotations[{k}]")
        where = f"{name}: annotation id {aid}"
        if aid in seen:
            raise ValueError(f"{where} appears twice")
        seen.add(aid)
        iid, cid = _int_field(a, "image_id", where), _int_field(a, "category_id", where)
        if iid not in image_index:
            raise ValueError(f"{where} refers to image id {iid}, which is not in 'images'")
        if cid not in label_of:
            raise ValueError(f"{where} has category_id {cid}, which is not in 'categories' "
                             f"(ids {sorted(label_of)})")
        box = a.get("bbox")
        if (not isinstance(box, (list, tuple)) or len(box) != 4
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in box)):
            raise ValueError(f"{where}: 'bbox' must be [x, y, w, h] (4 finite numbers), got {box!r}")
        if isinstance(a.get("area"), (int, float)) and not isinstance(a.get("area"), bool):
            area[k] = a["area"]
        ids[k], image[k], label[k], bbox[k] = aid, image_index[iid], label_of[cid], box
        crowd[k] = bool(a.get("iscrowd", 0))
        segm = a.get("segmentation")
        if segm is not None and not isinstance(segm, (list, dict)):
            raise ValueError(f"{where}: 'segmentation' must be a list of polygons or an RLE dict, "
                             f"got {type(segm).__name__}")
        segms.append(segm)
    return dict(ids=ids, image=image, label=label, bbox=bbox, area=area, crowd=crowd, segms=segms)


def _check_boxes(ann: Dict[str, Any], sizes: np.ndarray, name: str) -> None:
    """Refuse negative sides and boxes leaving their image by more than :data:`BOX_TOLERANCE`."""
    x, y, w, h = ann["bbox"].T
    height, width = sizes[ann["image"]].T
    tol = BOX_TOLERANCE
    bad = (w < 0) | (h < 0) | (x < -tol) | (y < -tol) | (x + w > width + tol) | (y + h > height + tol)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name}: annotation id {int(ann['ids'][k])} has bbox {ann['bbox'][k].tolist()} ([x, y, w, h]) outside "
            f"its image ({int(width[k])}x{int(height[k])}, WxH) by more than {tol:g} pixel"
            + (f" ({int(bad.sum()) - 1} more such annotations)" if bad.sum() > 1 else "")
        )


def _check_files(image_dir: Path, files: Sequence[str], ids: Sequence[int], name: str) -> None:
    """Every image file exists (one folder listing; file names with folders are checked one by one)."""
    try:
        present = set(os.listdir(image_dir))
    except OSError as e:
        raise FileNotFoundError(f"image folder {str(image_dir)!r} of {name} cannot be listed: {e}") from None
    missing = [k for k, f in enumerate(files)
               if not (f in present if "/" not in f and os.sep not in f else (image_dir / f).is_file())]
    if missing:
        k = missing[0]
        more = f" ({len(missing) - 1} more image files are missing)" if len(missing) > 1 else ""
        raise ValueError(f"{name}: image id {ids[k]}: image file {str(image_dir / files[k])!r} does not exist{more}")


# ----------------------------------------------------------------------------- the dataset
class CocoDetection(CocoGroundTruth, Dataset):
    """A COCO-format annotation file and its image folder (see the module docstring for the samples).

    Args:
        ann_file: the annotation JSON (``annotations/instances_val2017.json``, or any file in the format).
        image_dir: the folder the images' ``file_name`` are relative to (``val2017/``).
        with_masks: read instance masks (``masks``, ``ignore_masks`` in the targets); None reads them
            when some annotation of the file has a segmentation.

    Attributes:
        classes: category names in label order (categories sorted by id); ``num_classes``.
        category_ids: the COCO id of each label (``category_ids[label]``), to write results.
        image_ids: COCO ids of the images in sample order (the file's order).
        num_empty: images without a positive annotation; ``num_skipped``: degenerate annotations left out;
        num_ignored: crowd annotations (and, with masks, annotations without a usable segmentation).

    Example::

        >>> ds = CocoDetection("coco/annotations/instances_val2017.json", "coco/val2017")  # doctest: +SKIP
        >>> image, target = ds[0]   # uint8 (3, H, W); target['boxes'] (N, 4), target['labels'] (N,)
    """

    in_chans = 3

    def __init__(self, ann_file: PathLike, image_dir: PathLike, with_masks: Optional[bool] = None) -> None:
        if with_masks not in (None, True, False):
            raise ValueError(f"CocoDetection: with_masks={with_masks!r}, expected None, True or False")
        self.ann_file = Path(ann_file).expanduser()
        self.image_dir = Path(image_dir).expanduser()
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"CocoDetection: image folder {str(self.image_dir)!r} does not exist")
        data = load_coco_json(self.ann_file)
        name = f"COCO annotation file {str(self.ann_file)!r}"
        self.category_ids, names = _parse_categories(data, name)
        self.classes = list(names)
        self.num_classes = len(self.classes)
        image_ids, self._files, self._sizes = _parse_images(data, name)
        index = {iid: k for k, iid in enumerate(image_ids)}
        ann = _parse_annotations(data, name, index, {c: k for k, c in enumerate(self.category_ids)})
        _check_boxes(ann, self._sizes, name)
        _check_files(self.image_dir, self._files, image_ids, name)
        if with_masks is None:
            with_masks = any(s is not None for s in ann["segms"])
        self.with_masks = bool(with_masks)
        self._arrange(ann, np.asarray(image_ids, dtype=np.int64))

    def _arrange(self, ann: Dict[str, Any], image_ids: np.ndarray) -> None:
        """Keep the usable annotations, grouped by image (file order kept), as flat arrays + offsets."""
        x, y, w, h = ann["bbox"].T
        height, width = self._sizes[ann["image"]].T
        boxes = np.stack([np.clip(x, 0, width), np.clip(y, 0, height), np.clip(x + w, 0, width),
                          np.clip(y + h, 0, height)], 1)
        # mmdet's CocoDataset skips the others: no overlap with the image, under a pixel, no area
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) & (w >= 1) & (h >= 1) & (ann["area"] > 0)
        self.num_skipped = int((~keep).sum())
        ignore = ann["crowd"].copy()
        if self.with_masks:
            ignore |= ~np.fromiter((_has_mask(s) for s in ann["segms"]), dtype=bool, count=len(ignore))
        order = np.flatnonzero(keep)
        order = order[np.argsort(ann["image"][order], kind="stable")]
        self._boxes = boxes[order].astype(np.float32)
        self._labels = ann["label"][order]
        self._ann_ids = ann["ids"][order]
        self._ignore = ignore[order]
        self._segms = [ann["segms"][k] for k in order.tolist()] if self.with_masks else None
        image = ann["image"][order]
        self._starts = np.searchsorted(image, np.arange(len(image_ids) + 1))
        self._image_ids = image_ids
        self._rows = np.arange(len(image_ids))  # this dataset's images (select() narrows them)
        self.num_ignored = int(self._ignore.sum())
        positives = np.bincount(image[~self._ignore], minlength=len(image_ids))
        self._positives = positives

    # ------------------------------------------------------------------ views
    @property
    def image_ids(self) -> List[int]:
        return self._image_ids[self._rows].tolist()

    @property
    def num_empty(self) -> int:
        return int((self._positives[self._rows] == 0).sum())

    def select(self, indices: Sequence[int]) -> CocoDetection:
        """A dataset of the samples at ``indices`` (in that order), sharing the parsed annotations."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"CocoDetection.select: indices out of range for {len(self)} samples")
        out = copy.copy(self)
        out._rows = self._rows[idx]
        return out

    def __len__(self) -> int:
        return len(self._rows)

    # ------------------------------------------------------------------ samples
    def image_path(self, index: int) -> Path:
        return self.image_dir / self._files[self._rows[index]]

    def _masks(self, lo: int, hi: int, height: int, width: int) -> torch.Tensor:
        """Decode the segmentations of annotations ``lo:hi`` to bool (n, H, W) in one pycocotools call."""
        mask_util = _mask_util()
        rles = []
        for k in range(lo, hi):
            segm = self._segms[k]
            where = f"COCO annotation file {str(self.ann_file)!r}: annotation id {int(self._ann_ids[k])}"
            if not _has_mask(segm):
                rles.append(mask_util.encode(np.zeros((height, width, 1), dtype=np.uint8, order="F"))[0])
                continue
            if isinstance(segm, list):
                polygons = [p for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]
                rles.append(mask_util.merge(mask_util.frPyObjects(polygons, height, width)))
                continue
            size = [int(v) for v in segm["size"]]
            if size != [height, width]:
                raise ValueError(f"{where}: RLE size {size} (H, W) differs from its image's [{height}, {width}]")
            counts = segm["counts"]
            if isinstance(counts, list):
                rles.append(mask_util.frPyObjects(segm, height, width))
            else:
                rles.append({"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
        if not rles:
            return torch.zeros((0, height, width), dtype=torch.bool)
        masks = mask_util.decode(rles)  # (H, W, n) uint8, column-major
        return torch.from_numpy(np.ascontiguousarray(masks.transpose(2, 0, 1)).astype(bool))

    def load_target(self, index: int) -> Dict[str, Any]:
        """The target dict of sample ``index`` (no image decoded)."""
        row = int(self._rows[index])
        lo, hi = int(self._starts[row]), int(self._starts[row + 1])
        height, width = (int(v) for v in self._sizes[row])
        ignore = torch.from_numpy(self._ignore[lo:hi])
        boxes = torch.from_numpy(self._boxes[lo:hi])
        target: Dict[str, Any] = {
            "boxes": boxes[~ignore],
            "labels": torch.from_numpy(self._labels[lo:hi])[~ignore],
            "image_id": int(self._image_ids[row]),
            "ignore_boxes": boxes[ignore],
        }
        if self.with_masks:
            masks = self._masks(lo, hi, height, width)
            target["masks"], target["ignore_masks"] = masks[~ignore], masks[ignore]
        return target

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Dict[str, Any]]:
        n = len(self)
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"CocoDetection: index {index} out of range for {n} images")
        index %= n
        path = self.image_path(index)
        row = int(self._rows[index])
        height, width = (int(v) for v in self._sizes[row])
        try:
            image = _to_tensor(decode_image(path))
        except Exception as e:  # noqa: BLE001 - Pillow raises many types
            raise ValueError(f"cannot read image {str(path)!r}: {type(e).__name__}: {e}") from e
        if tuple(image.shape[1:]) != (height, width):
            raise ValueError(
                f"image {str(path)!r} is {image.shape[2]}x{image.shape[1]} (WxH, after its EXIF orientation) but "
                f"{str(self.ann_file)!r} records {width}x{height} for image id {int(self._image_ids[row])}"
            )
        return image, self.load_target(index)

    # ------------------------------------------------------------------ evaluation
    def coco_ground_truth(self) -> Dict[str, Any]:
        """The annotation file's content restricted to this dataset's images (all of it when not narrowed)."""
        data = load_coco_json(self.ann_file)
        if len(self._rows) == len(self._image_ids) and np.array_equal(self._rows, np.arange(len(self._rows))):
            return data
        wanted = set(self.image_ids)
        data["images"] = [im for im in data["images"] if im["id"] in wanted]
        data["annotations"] = [a for a in data["annotations"] if a["image_id"] in wanted]
        return data

    def __repr__(self) -> str:
        return (f"CocoDetection(ann_file={str(self.ann_file)!r}, image_dir={str(self.image_dir)!r}, n={len(self)}, "
                f"num_classes={self.num_classes}, with_masks={self.with_masks}, empty={self.num_empty})")
