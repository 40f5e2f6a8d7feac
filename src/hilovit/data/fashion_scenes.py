"""``fashion-scenes``: a segmentation data set made on the fly from real Fashion-MNIST garments.

Each scene is a black canvas (default 128x128) on which two to five garments are drawn at random
positions and sizes, one after the other, so a later garment hides the earlier ones where it is lit.
The label of a pixel is ``1 + class`` of the garment that drew it (Fashion-MNIST's ten classes),
and 0 (``'background'``) where no garment is lit: 11 classes in all.

A garment's pixel counts as lit when its value, after resizing, exceeds ``threshold`` (default 25
of 255, about 10%). Below that lie the faint anti-aliased rims and the near-black speckle of the
scans (about 5% of Fashion-MNIST's non-zero pixels); they are neither drawn nor labelled, so the
label is non-zero exactly where the image is above ``threshold``.

A scene depends only on ``(seed, split, index)``: its random numbers come from a generator seeded
with those three values, so the same scene comes out in any process, in any order, with no state
shared between samples (safe in DataLoader workers). Training scenes draw garments from the
60,000 training images only, test scenes from the 10,000 test images only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from hilovit.data.coco import CocoGroundTruth
from hilovit.data.datasets import FASHION_MNIST_CLASSES, IdxDataset, compute_mean_std
from hilovit.ops.masks import mask_to_rle
from hilovit.options import check_int

PathLike = Union[str, "os.PathLike[str]"]

FASHION_SCENES_CLASSES = ("background", *FASHION_MNIST_CLASSES)
_SPLIT_CODE = {"train": 0, "test": 1}
DEFAULT_NUM_SCENES = {"train": 10000, "test": 1000}


@dataclass(frozen=True)
class Placement:
    """One garment of a scene: its source image, class and square box on the canvas.

    ``source`` indexes the split's IDX images; ``label`` is the Fashion-MNIST class (0..9, the
    scene label being ``label + 1``); ``top``, ``left``, ``size`` give the box (rows, columns, side).
    """

    source: int
    label: int
    top: int
    left: int
    size: int


class FashionScenes(Dataset):
    """Scenes of Fashion-MNIST garments with per-pixel labels, generated from ``(seed, index)``.

    Args:
        split: ``'train'`` (garments from the training file) or ``'test'`` (from t10k).
        num_scenes: the dataset length; None gives 10,000 for train and 1,000 for test.
        seed: picks the scenes; the same seed gives the same scenes.
        root: the IDX folder (see :func:`~hilovit.data.datasets.find_idx_dir`); None finds it.
        canvas: the scene side in pixels (square canvas).
        items: (least, most) garments per scene, inclusive.
        item_scale: (least, most) garment side as a fraction of ``canvas`` (0.25-0.5 gives
            32-64 px garments on 128 px).
        threshold: a resized garment pixel above this value (0..255) is lit (drawn and labelled).
        source: an :class:`~hilovit.data.datasets.IdxDataset` of the split to draw from, instead
            of reading the files (lets several datasets share one copy).

    Attributes:
        classes: ``('background', 'T-shirt/top', ...)``, 11 names.
        images, targets: the source garments (uint8 (N, 1, 28, 28)) and their classes.

    Sample ``ds[i]``: ``(uint8 tensor (1, canvas, canvas), int64 tensor (canvas, canvas))``.

    Example::

        >>> ds = FashionScenes("train", num_scenes=1000, seed=0)
        >>> image, label = ds[3]
        >>> image.shape, label.shape, ds.classes[int(label.max())]  # doctest: +SKIP
    """

    def __init__(
        self,
        split: str = "train",
        num_scenes: Optional[int] = None,
        seed: int = 0,
        root: Optional[PathLike] = None,
        canvas: int = 128,
        items: Tuple[int, int] = (2, 5),
        item_scale: Tuple[float, float] = (0.25, 0.5),
        threshold: int = 25,
        source: Optional[IdxDataset] = None,
    ) -> None:
        if split not in _SPLIT_CODE:
            raise ValueError(f"FashionScenes: split={split!r}, expected 'train' or 'test'")
        if num_scenes is None:
            num_scenes = DEFAULT_NUM_SCENES[split]
        check_int(num_scenes, "FashionScenes: num_scenes", minimum=1)
        check_int(seed, "FashionScenes: seed", minimum=0)
        check_int(canvas, "FashionScenes: canvas", minimum=8)
        lo, hi = items
        if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer)) and 1 <= lo <= hi):
            raise ValueError(f"FashionScenes: items={items!r}, expected (least, most) with 1 <= least <= most")
        s_lo, s_hi = (float(v) for v in item_scale)
        if not 0 < s_lo <= s_hi <= 1:
            raise ValueError(f"FashionScenes: item_scale={item_scale!r}, expected 0 < least <= most <= 1")
        if int(round(s_lo * canvas)) < 2:
            raise ValueError(f"FashionScenes: item_scale={item_scale!r} makes garments under 2 px "
                             f"on a {canvas} px canvas")
        if not 0 <= threshold < 255:
            raise ValueError(f"FashionScenes: threshold={threshold!r}, expected a value in [0, 255)")
        if source is None:
            source = IdxDataset(root, split)
        elif not isinstance(source, IdxDataset) or source.split != split:
            got = getattr(source, "split", type(source).__name__)
            raise ValueError(f"FashionScenes: source must be an IdxDataset of split {split!r}, got {got!r}")
        self.split = split
        self.num_scenes = int(num_scenes)
        self.seed = int(seed)
        self.canvas = int(canvas)
        self.items = (int(lo), int(hi))
        self.item_scale = (s_lo, s_hi)
        self.threshold = float(threshold)
        self.images = source.images  # uint8 (N, 1, h, w)
        self._matrices: dict = {}
        self.targets = source.targets
        self._classes_of = source.targets.tolist()  # plain ints: indexing a tensor per garment is slow
        self.root = source.root
        base = FASHION_MNIST_CLASSES if source.is_fashion_mnist else source.classes
        self.classes = ["background", *base]
        self.num_classes = len(self.classes)
        self.ignore_index = 255

    def __len__(self) -> int:
        return self.num_scenes

    @property
    def _pixels(self) -> np.ndarray:
        return self.images[:, 0].numpy()  # uint8 (N, h, w), a view (not stored: pickling would copy it)

    def _generator(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_CODE[self.split], index])

    def layout(self, index: int) -> List[Placement]:
        """The garments of scene ``index`` in drawing order (cheap: no pixel is touched)."""
        index = self._check_index(index)
        rng = self._generator(index)
        count = int(rng.integers(self.items[0], self.items[1] + 1))
        sources = rng.integers(0, len(self.images), size=count)
        lo = int(round(self.item_scale[0] * self.canvas))
        hi = int(round(self.item_scale[1] * self.canvas))
        sizes = rng.integers(lo, hi + 1, size=count)
        corners = rng.random((count, 2))
        out = []
        for src, side, (u, v) in zip(sources.tolist(), sizes.tolist(), corners.tolist()):
            room = self.canvas - side
            top, left = int(u * (room + 1)), int(v * (room + 1))
            out.append(Placement(src, self._classes_of[src], top, left, side))
        return out

    def _check_index(self, index: int) -> int:
        n = self.num_scenes
        index = int(index)
        if not -n <= index < n:
            raise IndexError(f"FashionScenes: index {index} out of range for {n} scenes")
        return index % n

    def _resize_matrix(self, length: int, size: int) -> np.ndarray:
        """(size, length) float32 matrix that resizes one axis as torch's anti-aliased bilinear does.

        Bilinear resizing is separable, so resizing a garment g is ``R_h @ g @ R_w.T``; R is made
        once per size by resizing the identity matrix along one axis.
        """
        key = (length, size)
        mat = self._matrices.get(key)
        if mat is None:
            eye = torch.eye(length, dtype=torch.float64).view(1, 1, length, length)
            mat = F.interpolate(eye, size=(size, length), mode="bilinear", align_corners=False, antialias=True)
            mat = mat[0, 0].numpy().astype(np.float32)
            self._matrices[key] = mat
        return mat

    def draw(self, placements: List[Placement]) -> Tuple[np.ndarray, np.ndarray]:
        """Draw ``placements`` in order onto a black canvas.

        Returns:
            ``(image, owner)``: uint8 (canvas, canvas) pixels and int64 (canvas, canvas) holding, per
            pixel, the position in ``placements`` of the garment that drew it last, -1 where none did.
            Both the segmentation and the instance views are read off these two arrays.
        """
        image = np.zeros((self.canvas, self.canvas), dtype=np.uint8)
        owner = np.full((self.canvas, self.canvas), -1, dtype=np.int64)
        h, w = self._pixels.shape[1:]
        for k, p in enumerate(placements):
            garment = self._pixels[p.source].astype(np.float32)
            if (h, w) != (p.size, p.size):
                garment = self._resize_matrix(h, p.size) @ garment @ self._resize_matrix(w, p.size).T
            garment = np.clip(np.rint(garment), 0, 255)
            lit = garment > self.threshold
            rows, cols = slice(p.top, p.top + p.size), slice(p.left, p.left + p.size)
            image[rows, cols][lit] = garment[lit].astype(np.uint8)
            owner[rows, cols][lit] = k
        return image, owner

    def render(self, placements: List[Placement]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Draw ``placements`` in order onto a black canvas; returns (image, label) as a sample."""
        image, owner = self.draw(placements)
        scene_labels = np.array([0] + [p.label + 1 for p in placements], dtype=np.int64)
        label = scene_labels[owner + 1]  # owner -1 (no garment) -> 0, background
        return torch.from_numpy(image).unsqueeze(0), torch.from_numpy(label)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.render(self.layout(index))

    def mean_std(self, count: int = 256) -> Tuple[Tuple[float], Tuple[float]]:
        """Mean and standard deviation (on the [0, 1] scale) of the first ``count`` scenes, exactly."""
        count = min(int(count), len(self))
        batch = torch.stack([self[i][0] for i in range(count)])
        return compute_mean_std(batch)

    def __repr__(self) -> str:
        return (f"FashionScenes(split={self.split!r}, n={len(self)}, seed={self.seed}, canvas={self.canvas}, "
                f"items={self.items}, item_scale={self.item_scale}, threshold={self.threshold:g})")


class FashionSceneInstances(CocoGroundTruth, FashionScenes):
    """The instance view of :class:`FashionScenes`: the same scenes, one box and mask per visible garment.

    Takes the arguments of :class:`FashionScenes` (the same ``(seed, split, index)`` give the same
    image) and ``min_visible``: a garment is an instance when at least that many of its pixels stay
    lit and uncovered (default 8). Garments hidden by later ones, or showing fewer pixels, are left
    out (their pixels stay in the image and in the segmentation view). 8 pixels is half of one 4x4
    patch, the finest grid the backbones see; smaller remnants are slivers along the border of a
    covering garment, with no shape left to recognise, that a detector should not be asked to find.

    Sample ``ds[i]``: ``(image, target)`` with ``image`` uint8 ``(1, canvas, canvas)`` (the
    segmentation view's image) and ``target``:

    * ``boxes``: float32 ``(N, 4)`` ``x1, y1, x2, y2``, the tight box of the garment's visible pixels
      with exclusive right/bottom edges (columns ``x1 .. x2 - 1``, rows ``y1 .. y2 - 1``), so that
      ``[x1, y1, x2 - x1, y2 - y1]`` is COCO's ``bbox`` of the mask;
    * ``labels``: int64 ``(N,)`` Fashion-MNIST classes 0..9 (no background class);
    * ``masks``: bool ``(N, canvas, canvas)``, the garment's visible pixels (disjoint);
    * ``image_id``: the scene index; ``ignore_boxes`` ``(0, 4)`` and ``ignore_masks`` ``(0, canvas,
      canvas)``: no crowd regions here (the keys match :class:`~hilovit.data.coco.CocoDetection`).

    Instances come in drawing order (back to front). ``labels + 1`` painted by the masks is the
    segmentation label map, up to the pixels of the garments left out.

    Attributes:
        classes: the ten Fashion-MNIST names (``num_classes == 10``); category_ids: ``1..10``, the
            COCO ids of the labels in :meth:`coco_ground_truth`.
    """

    def __init__(self, split: str = "train", num_scenes: Optional[int] = None, seed: int = 0,
                 root: Optional[PathLike] = None, canvas: int = 128, items: Tuple[int, int] = (2, 5),
                 item_scale: Tuple[float, float] = (0.25, 0.5), threshold: int = 25,
                 source: Optional[IdxDataset] = None, min_visible: int = 8) -> None:
        check_int(min_visible, "FashionSceneInstances: min_visible", minimum=1)
        super().__init__(split, num_scenes, seed, root, canvas, items, item_scale, threshold, source)
        self.min_visible = int(min_visible)
        self.classes = self.classes[1:]  # no background class
        self.num_classes = len(self.classes)
        self.category_ids = tuple(range(1, self.num_classes + 1))
        del self.ignore_index

    def instances(self, index: int) -> Tuple[torch.Tensor, Dict[str, Any]]:
        """``(image, target)`` of scene ``index`` (what ``ds[index]`` returns)."""
        index = self._check_index(index)
        placements = self.layout(index)
        image, owner = self.draw(placements)
        masks = owner[None] == np.arange(len(placements))[:, None, None]  # (K, H, W): one per garment
        keep = masks.sum((1, 2)) >= self.min_visible
        masks = masks[keep]
        labels = np.array([p.label for p in placements], dtype=np.int64)[keep]
        rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W): which rows / columns each mask touches
        h, w = owner.shape
        boxes = np.stack([cols.argmax(1), rows.argmax(1), w - cols[:, ::-1].argmax(1), h - rows[:, ::-1].argmax(1)],
                         1).astype(np.float32).reshape(-1, 4)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "masks": torch.from_numpy(masks),
            "image_id": index,
            "ignore_boxes": torch.zeros((0, 4), dtype=torch.float32),
            "ignore_masks": torch.zeros((0, h, w), dtype=torch.bool),
        }
        return torch.from_numpy(image).unsqueeze(0), target

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Dict[str, Any]]:
        return self.instances(index)

    def coco_ground_truth(self) -> Dict[str, Any]:
        """The scenes as a COCO annotation dict: ``images`` (id = scene index), ``annotations`` (``bbox``
        ``[x, y, w, h]``, ``area`` = visible pixels, ``segmentation`` as RLE, ``iscrowd`` 0, ids from 1)
        and ``categories`` (ids 1..10 for labels 0..9)."""
        images, annotations = [], []
        for index in range(len(self)):
            _, target = self.instances(index)
            images.append({"id": index, "width": self.canvas, "height": self.canvas,
                           "file_name": f"fashion-scenes/{self.split}/{index:06d}.png"})
            boxes = target["boxes"].tolist()
            areas = target["masks"].sum((1, 2)).tolist()
            rles = mask_to_rle(target["masks"])
            for (x1, y1, x2, y2), label, area, rle in zip(boxes, target["labels"].tolist(), areas, rles):
                annotations.append({"id": len(annotations) + 1, "image_id": index, "category_id": label + 1,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(area), "segmentation": rle,
                                    "iscrowd": 0})
        categories = [{"id": cid, "name": name, "supercategory": "garment"}
                      for cid, name in zip(self.category_ids, self.classes)]
        return {"info": {"description": repr(self)}, "images": images, "annotations": annotations,
                "categories": categories}

    def __repr__(self) -> str:
        return (f"FashionSceneInstances(split={self.split!r}, n={len(self)}, seed={self.seed}, canvas={self.canvas}, "
                f"items={self.items}, item_scale={self.item_scale}, threshold={self.threshold:g}, "
                f"min_visible={self.min_visible})")
