"""Detection augmentation: mmdet's COCO training pipeline on uint8 tensors, the targets moved with the image.

The official configs train with::

    Resize(scale=(1333, 800), keep_ratio=True)    # RandomResize(..., ratio_range=...) for multi-scale
    RandomFlip(prob=0.5)                          # horizontal

:class:`DetTrainTransform` does both on one sample ``(image, target)``: ``image`` uint8 ``(C, H, W)``,
``target`` a dict as the detection datasets give it (``boxes`` float ``(N, 4)`` x1 y1 x2 y2 with
exclusive right/bottom edges, ``labels`` ``(N,)``, optionally ``masks`` bool ``(N, H, W)``,
``ignore_boxes`` ``(M, 4)`` and ``ignore_masks`` ``(M, H, W)``; other keys pass through).

* Resize: the size is mmcv's ``imrescale``, :func:`~hilovit.data.seg_transforms.rescale_size`: the
  factor ``f = min(long / max(H, W), short / min(H, W))``, sides ``int(H * f + 0.5)`` and
  ``int(W * f + 0.5)`` (rounded half up). The image is resized bilinearly (half-pixel, no
  anti-aliasing, rounded back to uint8: OpenCV's ``INTER_LINEAR``), masks with nearest neighbours
  (pixel ``j`` reads ``floor(j * in / out)``, OpenCV's ``INTER_NEAREST``), boxes are multiplied by
  mmdet's ``scale_factor`` ``(new_W / W, new_H / H)`` and clipped to the new image. With
  ``ratio_range`` the bound is ``(int(long * r), int(short * r))`` for ``r`` uniform in the range
  (mmdet's ``RandomResize``).
* Flip: ``x1, x2 -> W - x2, W - x1``, masks mirrored.

Boxes left without area (``x2 <= x1`` or ``y2 <= y1``, after clipping) are dropped with their label
and mask. Every random number comes from the ``torch.Generator`` given; :class:`DetAugmentedDataset`
seeds one per sample from ``(seed, epoch, index)`` (:func:`~hilovit.data.seg_transforms.sample_seed`).
No padding here: the model's preprocessor pads the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from hilovit.data.seg_transforms import SegAugmentedDataset, _pair, rescale_for_eval

# target keys holding instances: (boxes key, the keys that follow its rows)
_INSTANCE_GROUPS = (("boxes", ("labels", "masks")), ("ignore_boxes", ("ignore_masks", "ignore_labels")))


@dataclass
class DetAugmentConfig:
    """The detection training augmentation; defaults are the official COCO 1x recipe.

    Attributes:
        scale: (long edge, short edge) bound of the keep-ratio resize; None keeps the image's size.
        ratio_range: (low, high) of a uniform ratio multiplying ``scale`` per sample; None uses ``scale``.
        flip_prob: probability of a horizontal flip.
    """

    scale: Optional[Tuple[int, int]] = (1333, 800)
    ratio_range: Optional[Tuple[float, float]] = None
    flip_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.scale is not None:
            self.scale = _pair(self.scale, "DetAugmentConfig: scale")
            if min(self.scale) < 1:
                raise ValueError(f"DetAugmentConfig: scale={self.scale}, expected positive edges")
        if self.ratio_range is not None:
            lo, hi = _pair(self.ratio_range, "DetAugmentConfig: ratio_range", float)
            if not 0 < lo <= hi:
                raise ValueError(f"DetAugmentConfig: ratio_range=({lo}, {hi}), expected 0 < low <= high")
            self.ratio_range = (lo, hi)
        if isinstance(self.flip_prob, bool) or not 0 <= self.flip_prob <= 1:
            raise ValueError(f"DetAugmentConfig: flip_prob={self.flip_prob!r}, expected a probability in [0, 1]")


def check_detection_sample(image: Any, target: Any, name: str = "sample") -> None:
    """Raise TypeError/ValueError unless ``image`` is uint8 ``(C, H, W)`` and ``target`` a dict whose
    ``boxes`` ``(N, 4)``, ``labels`` ``(N,)`` and ``masks`` ``(N, H, W)`` (and the ``ignore_`` ones) agree."""
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 3:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise TypeError(f"{name}: image must be a uint8 tensor (C, H, W), got {got}")
    if not isinstance(target, dict):
        raise TypeError(f"{name}: target must be a dict, got {type(target).__name__}")
    h, w = image.shape[1:]
    for box_key, row_keys in _INSTANCE_GROUPS:
        if box_key not in target:
            if box_key == "boxes":
                raise ValueError(f"{name}: target has no 'boxes' (keys {sorted(target)})")
            continue
        boxes = target[box_key]
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4 \
                or not boxes.is_floating_point():
            raise ValueError(f"{name}: target[{box_key!r}] must be a float (N, 4) tensor, got "
                             f"{getattr(boxes, 'shape', type(boxes).__name__)}")
        n = boxes.shape[0]
        for key in row_keys:
            value = target.get(key)
            if value is None:
                continue
            want = (n, h, w) if key.endswith("masks") else (n,)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != want:
                raise ValueError(f"{name}: target[{key!r}] must have shape {want} to match {box_key!r} and the "
                                 f"image, got {tuple(getattr(value, 'shape', ()))}")


def _apply_rows(target: Dict[str, Any], box_key: str, row_keys, keep: torch.Tensor) -> None:
    target[box_key] = target[box_key][keep]
    for key in row_keys:
        if target.get(key) is not None:
            target[key] = target[key][keep]


def drop_empty_boxes(target: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of ``target`` without the boxes of no area (``x2 <= x1`` or ``y2 <= y1``), their labels
    and masks removed with them (``ignore_boxes`` likewise)."""
    out = dict(target)
    for box_key, row_keys in _INSTANCE_GROUPS:
        boxes = out.get(box_key)
        if boxes is not None:
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not bool(keep.all()):
                _apply_rows(out, box_key, row_keys, keep)
    return out


def _resize_masks(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    out = F.interpolate(masks[None].to(torch.uint8), size=size, mode="nearest")[0]
    return out.bool() if masks.dtype == torch.bool else out.to(masks.dtype)


def rescale_detection(image: torch.Tensor, target: Dict[str, Any],
                      scale: Tuple[int, int]) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """mmdet's ``Resize(scale, keep_ratio=True)`` of an image and its target (see the module docstring);
    empty boxes are then dropped. The target is copied, not changed."""
    h, w = image.shape[1:]
    image = rescale_for_eval(image, scale)  # mmcv's imrescale size, bilinear, rounded to uint8
    new_h, new_w = image.shape[1:]
    out = dict(target)
    if (new_h, new_w) == (h, w):
        return image, out
    factor = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h], dtype=torch.float32)
    bound = torch.tensor([new_w, new_h, new_w, new_h], dtype=torch.float32)
    for box_key, _ in _INSTANCE_GROUPS:
        if out.get(box_key) is not None:
            boxes = out[box_key] * factor.to(out[box_key].dtype)
            out[box_key] = torch.minimum(boxes.clamp(min=0), bound.to(boxes.dtype))
    for key in ("masks", "ignore_masks"):
        if out.get(key) is not None:
            out[key] = _resize_masks(out[key], (new_h, new_w))
    return image, drop_empty_boxes(out)


def hflip_detection(image: torch.Tensor, target: Dict[str, Any]) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Mirror an image ``(C, H, W)`` and its target left-right (boxes ``x -> W - x``, masks mirrored)."""
    w = image.shape[-1]
    out = dict(target)
    for box_key, _ in _INSTANCE_GROUPS:
        boxes = out.get(box_key)
        if boxes is not None:
            out[box_key] = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    for key in ("masks", "ignore_masks"):
        if out.get(key) is not None:
            out[key] = out[key].flip(-1)
    return image.flip(-1), out


class DetTrainTransform:
    """Resize (keeping the aspect ratio) then flip one detection sample, as mmdet's COCO training pipeline.

    Args:
        config: a :class:`DetAugmentConfig`; None gives the official ``(1333, 800)`` recipe.
        **overrides: fields of the config to change, e.g. ``DetTrainTransform(scale=(256, 128))``.

    Call: ``transform(image, target, generator=None) -> (image, target)``; ``image`` uint8 ``(C, H, W)``,
    ``target`` as the detection datasets give it (copied, not changed). ``generator`` (a
    ``torch.Generator``) makes the result repeatable; None uses torch's global generator.

    Example::

        >>> t = DetTrainTransform(scale=(200, 100), flip_prob=1.0)
        >>> image = torch.zeros(3, 50, 80, dtype=torch.uint8)
        >>> target = {"boxes": torch.tensor([[10.0, 5.0, 30.0, 25.0]]), "labels": torch.tensor([1])}
        >>> x, y = t(image, target)
        >>> tuple(x.shape), y["boxes"].tolist()
        ((3, 100, 160), [[100.0, 10.0, 140.0, 50.0]])
    """

    def __init__(self, config: Optional[DetAugmentConfig] = None, **overrides) -> None:
        config = config if config is not None else DetAugmentConfig()
        if not isinstance(config, DetAugmentConfig):
            raise TypeError(f"DetTrainTransform: config must be a DetAugmentConfig, got {type(config).__name__}")
        self.config = replace(config, **overrides) if overrides else config

    def sample_scale(self, generator: Optional[torch.Generator] = None) -> Optional[Tuple[int, int]]:
        """The (long, short) bound for one sample: ``scale`` times a ratio drawn from ``ratio_range``."""
        cfg = self.config
        if cfg.scale is None or cfg.ratio_range is None:
            return cfg.scale
        lo, hi = cfg.ratio_range
        ratio = lo + (hi - lo) * float(torch.rand((), generator=generator))
        return int(cfg.scale[0] * ratio), int(cfg.scale[1] * ratio)

    def __call__(self, image: torch.Tensor, target: Dict[str, Any],
                 generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, Dict[str, Any]]:
        check_detection_sample(image, target, "DetTrainTransform")
        scale = self.sample_scale(generator)
        if scale is not None:
            image, target = rescale_detection(image, target, scale)
        else:
            target = drop_empty_boxes(target)
        if float(torch.rand((), generator=generator)) < self.config.flip_prob:
            image, target = hflip_detection(image, target)
        return image.contiguous(), target

    def __repr__(self) -> str:
        return f"DetTrainTransform({self.config!r})"


class DetAugmentedDataset(SegAugmentedDataset):
    """A detection dataset seen through a :class:`DetTrainTransform`, repeatable per ``(seed, epoch, index)``.

    Sample ``i`` is ``transform(image, target, generator)`` with a ``torch.Generator`` seeded from
    ``(seed, epoch, index)`` (:func:`~hilovit.data.seg_transforms.sample_seed`), so it does not depend
    on the worker, the process or the order; call :meth:`set_epoch` at each epoch for fresh draws.
    Attributes of the wrapped dataset (``classes``, ``category_ids``, ...) are read through.
    """
