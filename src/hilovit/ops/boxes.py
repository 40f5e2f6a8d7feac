"""Box arithmetic for detection: mmdet's ``DeltaXYWHBBoxCoder``, pairwise IoU, rescaling, RoI lists.

Boxes are ``(N, 4)`` tensors ``x1, y1, x2, y2`` in pixels (the box spans ``[x1, x2] x [y1, y2]``;
width ``x2 - x1``, no ``+ 1``). Every function is a pure function of its tensors and keeps their
dtype; the arithmetic follows mmdet 3.x operation for operation, so float32 results are the
official ones bit for bit.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

from hilovit.options import check_number

__all__ = [
    "DeltaXYWHBBoxCoder",
    "bbox2roi",
    "bbox_overlaps",
    "box_area",
    "decode_deltas",
    "encode_deltas",
    "scale_boxes",
]

#: The largest ``|dw|``, ``|dh|`` the decoder applies: ``|log(16 / 1000)|`` (boxes at most 62.5x their anchor).
MAX_RATIO = abs(math.log(16 / 1000))


def _check_boxes(boxes, name: str) -> torch.Tensor:
    if not isinstance(boxes, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (N, 4), got {type(boxes).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {boxes.dtype}")
    return boxes


def _check_four(values, name: str) -> Tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != 4 or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) for v in values
    ):
        raise ValueError(f"{name} must be four numbers (x, y, w, h), got {values!r}")
    return tuple(float(v) for v in values)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """``(x2 - x1) * (y2 - y1)`` of ``(N, 4)`` boxes -> ``(N,)`` (negative extents are not clipped)."""
    _check_boxes(boxes, "boxes")
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def bbox_overlaps(boxes1: torch.Tensor, boxes2: torch.Tensor, mode: str = "iou", eps: float = 1e-6) -> torch.Tensor:
    """Pairwise overlaps ``(N, M)`` of ``boxes1`` ``(N, 4)`` and ``boxes2`` ``(M, 4)`` (mmdet's
    ``bbox_overlaps``, ``is_aligned=False``).

    ``mode='iou'``: intersection / union; ``'iof'``: intersection / area of ``boxes1``. The
    denominator is at least ``eps``, so degenerate boxes give 0 instead of NaN.
    """
    _check_boxes(boxes1, "boxes1")
    _check_boxes(boxes2, "boxes2")
    if mode not in ("iou", "iof"):
        raise ValueError(f"mode must be 'iou' or 'iof', got {mode!r}")
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    denom = area1[:, None] + area2[None, :] - overlap if mode == "iou" else area1[:, None].expand_as(overlap)
    return overlap / torch.max(denom, denom.new_tensor(eps))


def encode_deltas(anchors: torch.Tensor, gt: torch.Tensor, means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                  stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0)) -> torch.Tensor:
    """Regression targets ``(N, 4)`` = ``((dx, dy, dw, dh) - means) / stds`` of ``gt`` relative to
    ``anchors`` (both ``(N, 4)``): ``dx = (gx - px) / pw``, ``dw = log(gw / pw)`` (mmdet's
    ``bbox2delta``, computed in float32)."""
    _check_boxes(anchors, "anchors")
    _check_boxes(gt, "gt")
    if anchors.shape != gt.shape:
        raise ValueError(f"anchors {tuple(anchors.shape)} and gt {tuple(gt.shape)} must have the same shape")
    p, g = anchors.float(), gt.float()
    px, py = (p[:, 0] + p[:, 2]) * 0.5, (p[:, 1] + p[:, 3]) * 0.5
    pw, ph = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1]
    gx, gy = (g[:, 0] + g[:, 2]) * 0.5, (g[:, 1] + g[:, 3]) * 0.5
    gw, gh = g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
    return (deltas - deltas.new_tensor(_check_four(means, "means"))) / deltas.new_tensor(_check_four(stds, "stds"))


def decode_deltas(anchors: torch.Tensor, deltas: torch.Tensor, means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                  stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0), max_shape: Optional[Sequence[int]] = None,
                  max_ratio: float = MAX_RATIO) -> torch.Tensor:
    """Boxes ``(N, 4)`` from ``anchors`` ``(N, 4)`` and ``deltas`` ``(N, 4)`` (mmdet's ``delta2bbox``).

    ``d = deltas * stds + means``; ``dw, dh`` clamped to ``[-max_ratio, max_ratio]`` (``dx, dy``
    are not); centre ``p_xy + p_wh * d_xy``, size ``p_wh * exp(d_wh)``; then, with ``max_shape =
    (h, w)`` (the image's unpadded size), x clamped to ``[0, w]`` and y to ``[0, h]``.
    """
    _check_boxes(anchors, "anchors")
    _check_boxes(deltas, "deltas")
    if anchors.shape[0] != deltas.shape[0]:
        raise ValueError(f"anchors ({anchors.shape[0]}) and deltas ({deltas.shape[0]}) must have the same length")
    if deltas.shape[0] == 0:
        return deltas.clone()
    d = deltas * deltas.new_tensor(_check_four(stds, "stds")) + deltas.new_tensor(_check_four(means, "means"))
    pxy = (anchors[:, :2] + anchors[:, 2:]) * 0.5
    pwh = anchors[:, 2:] - anchors[:, :2]
    dwh = d[:, 2:].clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + pwh * d[:, :2]
    gwh = pwh * dwh.exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    if max_shape is not None:
        h, w = _shape_hw(max_shape, "max_shape")
        boxes[:, 0::2] = boxes[:, 0::2].clamp(min=0, max=w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(min=0, max=h)
    return boxes


def _shape_hw(shape, name: str) -> Tuple[int, int]:
    if isinstance(shape, torch.Tensor):
        shape = shape.tolist()
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or len(shape) < 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 for v in shape[:2]
    ):
        raise ValueError(f"{name} must be an (h, w) pair of sizes, got {shape!r}")
    return int(shape[0]), int(shape[1])


class DeltaXYWHBBoxCoder:
    """mmdet's ``DeltaXYWHBBoxCoder``: anchors + ``(dx, dy, dw, dh)`` deltas <-> boxes.

    Args:
        target_means, target_stds: the deltas' normalisation (RetinaNet/RPN: 0 and 1; R-CNN stds
            ``[0.1, 0.1, 0.2, 0.2]``).
        clip_border: clamp decoded boxes to the image (``max_shape``).
        wh_ratio_clip: ``dw, dh`` are clamped to ``|log(wh_ratio_clip)|``.

    ``encode(anchors (N, 4), gt (N, 4)) -> (N, 4)`` deltas; ``decode(anchors (N, 4), deltas (N, 4),
    max_shape=(h, w)) -> (N, 4)`` boxes. ``encode_size`` is 4.
    """

    encode_size = 4

    def __init__(self, target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
                 target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0), clip_border: bool = True,
                 add_ctr_clamp: bool = False, ctr_clamp: int = 32, wh_ratio_clip: float = 16 / 1000):
        self.means = _check_four(target_means, "target_means")
        self.stds = _check_four(target_stds, "target_stds")
        if any(s <= 0 for s in self.stds):
            raise ValueError(f"target_stds must be positive, got {target_stds!r}")
        if add_ctr_clamp:
            raise ValueError("DeltaXYWHBBoxCoder add_ctr_clamp=True (YOLOF) is not supported")
        if not isinstance(clip_border, bool):
            raise ValueError(f"clip_border must be a bool, got {clip_border!r}")
        check_number(wh_ratio_clip, "wh_ratio_clip", minimum=0, maximum=1, min_open=True, max_open=True)
        self.clip_border = clip_border
        self.max_ratio = abs(math.log(wh_ratio_clip))

    def encode(self, anchors: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return encode_deltas(anchors, gt, self.means, self.stds)

    def decode(self, anchors: torch.Tensor, deltas: torch.Tensor,
               max_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        return decode_deltas(anchors, deltas, self.means, self.stds, max_shape if self.clip_border else None,
                             self.max_ratio)

    def __repr__(self) -> str:
        return f"DeltaXYWHBBoxCoder(target_means={list(self.means)}, target_stds={list(self.stds)})"


def scale_boxes(boxes: torch.Tensor, scale_factor: Union[float, Sequence[float]]) -> torch.Tensor:
    """``boxes * [sx, sy, sx, sy]`` for ``scale_factor = (sx, sy)`` (or one number), the factor made
    a tensor of the boxes' dtype first (mmdet's ``scale_boxes``). To map boxes of a resized image
    back to the original, pass ``(1 / w_scale, 1 / h_scale)``."""
    _check_boxes(boxes, "boxes")
    if isinstance(scale_factor, (int, float)) and not isinstance(scale_factor, bool):
        scale_factor = (scale_factor, scale_factor)
    if isinstance(scale_factor, (str, bytes)) or not isinstance(scale_factor, Sequence) or len(scale_factor) != 2:
        raise ValueError(f"scale_factor must be a number or an (x, y) pair, got {scale_factor!r}")
    return boxes * boxes.new_tensor(list(scale_factor)).repeat(2)


def bbox2roi(boxes_list: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(sum N_i, 5)`` RoIs ``[image_index, x1, y1, x2, y2]`` from per-image ``(N_i, 4)`` boxes
    (mmdet's ``bbox2roi``: image 0's boxes first)."""
    if isinstance(boxes_list, torch.Tensor) or not isinstance(boxes_list, Sequence):
        raise TypeError(f"boxes_list must be a list of (N_i, 4) tensors, got {type(boxes_list).__name__}")
    rois = []
    for i, b in enumerate(boxes_list):
        _check_boxes(b, f"boxes_list[{i}]")
        rois.append(torch.cat([b.new_full((b.shape[0], 1), float(i)), b], dim=1))
    if not rois:
        return torch.zeros(0, 5)
    return torch.cat(rois, dim=0)
