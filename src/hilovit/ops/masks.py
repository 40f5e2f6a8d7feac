"""Instance masks for Mask R-CNN: pasting 28x28 predictions into the image, training targets, COCO RLE.

- :func:`paste_masks`: mmdet's ``FCNMaskHead`` paste on CPU (``_do_paste_mask(skip_empty=True)``, one
  instance at a time there), computed for all instances in one ``grid_sample`` call.
- :func:`mask_targets`: mmdet's ``mask_target`` (``BitmapMasks.crop_and_resize`` through RoIAlign).
- :func:`mask_to_rle`, :func:`rle_to_mask`: COCO run-length encoding through ``pycocotools.mask``
  (imported only when called).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hilovit.options import check_number

from .roi_align import roi_align

__all__ = ["mask_targets", "mask_to_rle", "paste_masks", "rle_to_mask"]


def _image_shape(image_shape) -> tuple:
    if (
        not isinstance(image_shape, (tuple, list, torch.Size))
        or len(image_shape) < 2
        or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in image_shape[:2])
    ):
        raise ValueError(f"image_shape must be (H, W) with positive ints, got {image_shape!r}")
    return int(image_shape[0]), int(image_shape[1])


def paste_masks(mask_probs: Tensor, boxes: Tensor, image_shape: Sequence[int],
                threshold: Optional[float] = 0.5) -> Tensor:
    """Paste per-instance mask probabilities into an image, as mmdet's CPU path does.

    For instance ``i`` with box ``(x1, y1, x2, y2)`` the window is columns ``[max(floor(x1) - 1, 0),
    min(ceil(x2) + 1, W))`` (rows likewise); a pixel ``c`` inside it samples the mask at
    ``(c + 0.5 - x1) / (x2 - x1) * 2 - 1`` (an infinite value, from a zero-width box, becomes 0) with
    ``grid_sample`` (bilinear, zero padding, ``align_corners=False``), all in float32. Pixels outside
    the window are False (0). All instances share one ``grid_sample`` over the largest window, each at
    its own offset, so the values equal the per-instance computation.

    Args:
        mask_probs: ``(N, h, w)`` probabilities (already ``sigmoid``-ed, the detected class's channel).
        boxes: ``(N, 4)`` ``x1, y1, x2, y2`` in the output image's pixels (``bboxes / scale_factor``).
        image_shape: ``(H, W)`` of the output image (``ori_shape``).
        threshold: masks are ``prob >= threshold``; ``None`` returns the pasted float32 probabilities.

    Returns:
        ``(N, H, W)`` bool (float32 when ``threshold`` is None).
    """
    H, W = _image_shape(image_shape)
    if not isinstance(mask_probs, Tensor) or mask_probs.dim() != 3:
        raise ValueError(f"mask_probs must be an (N, h, w) tensor, got {getattr(mask_probs, 'shape', mask_probs)!r}")
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape != (mask_probs.shape[0], 4):
        raise ValueError(f"boxes must be ({mask_probs.shape[0]}, 4) to match mask_probs, "
                         f"got {tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__}")
    check_number(threshold, "threshold", allow_none=True)
    N, device = mask_probs.shape[0], mask_probs.device
    out_dtype = torch.float32 if threshold is None else torch.bool
    out = torch.zeros((N, H, W), dtype=out_dtype, device=device)
    if N == 0:
        return out
    boxes = boxes.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError("boxes must be finite; got NaN or infinite coordinates")
    x1, y1, x2, y2 = boxes.unbind(1)
    x0i = (x1.floor() - 1).clamp(min=0).long()  # the window, as _do_paste_mask with one box
    y0i = (y1.floor() - 1).clamp(min=0).long()
    x1i = (x2.ceil() + 1).clamp(max=W).long()
    y1i = (y2.ceil() + 1).clamp(max=H).long()
    wmax, hmax = (int(v) for v in torch.stack([(x1i - x0i).max(), (y1i - y0i).max()]).tolist())
    if wmax <= 0 or hmax <= 0:
        return out
    cols = x0i[:, None] + torch.arange(wmax, device=device)  # (N, wmax) image columns
    rows = y0i[:, None] + torch.arange(hmax, device=device)  # (N, hmax)
    gx = (cols.float() + 0.5 - x1[:, None]) / (x2 - x1)[:, None] * 2 - 1
    gy = (rows.float() + 0.5 - y1[:, None]) / (y2 - y1)[:, None] * 2 - 1
    gx = torch.where(torch.isinf(gx), torch.zeros_like(gx), gx)
    gy = torch.where(torch.isinf(gy), torch.zeros_like(gy), gy)
    grid = torch.stack([gx[:, None, :].expand(N, hmax, wmax), gy[:, :, None].expand(N, hmax, wmax)], dim=3)
    probs = F.grid_sample(mask_probs[:, None].to(torch.float32), grid, align_corners=False)[:, 0]
    inside = (rows < y1i[:, None])[:, :, None] & (cols < x1i[:, None])[:, None, :]  # own window only
    n = torch.arange(N, device=device)[:, None, None].expand(N, hmax, wmax)
    r = rows[:, :, None].expand(N, hmax, wmax)
    c = cols[:, None, :].expand(N, hmax, wmax)
    values = probs if threshold is None else probs >= threshold
    out[n[inside], r[inside], c[inside]] = values[inside]
    return out


def mask_targets(gt_masks: Tensor, pos_rois: Tensor, pos_assigned_gt_inds: Tensor,
                 mask_size: Union[int, Sequence[int]] = 28, binarize: bool = True) -> Tensor:
    """Mask R-CNN mask targets, as mmdet's ``mask_target`` for one image.

    Each positive RoI, clipped to ``[0, W] x [0, H]`` of ``gt_masks``, is cut from the mask of its
    assigned ground truth with :func:`roi_align` (``mask_size``, ``spatial_scale=1``,
    ``sampling_ratio=0``, ``aligned=True``, ``'avg'``) in the RoIs' dtype; with ``binarize`` the result
    is ``>= 0.5`` as 0/1.

    Args:
        gt_masks: ``(M, H, W)`` bool/uint8/float ground-truth masks of the image (padded as the batch is).
        pos_rois: ``(P, 4)`` positive RoIs ``x1, y1, x2, y2`` (float).
        pos_assigned_gt_inds: ``(P,)`` int64 index of each RoI's ground truth in ``gt_masks`` (0-based).
        mask_size: ``int`` or ``(h, w)`` of the targets.
        binarize: threshold at 0.5 (mmdet's default; False gives the soft targets).

    Returns:
        ``(P, h, w)`` float targets in ``pos_rois``' dtype.
    """
    mh, mw = (mask_size, mask_size) if isinstance(mask_size, int) and not isinstance(mask_size, bool) else (
        tuple(mask_size) if isinstance(mask_size, (tuple, list)) and len(mask_size) == 2 else (None, None))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (mh, mw)):
        raise ValueError(f"mask_size must be a positive int or a pair of them, got {mask_size!r}")
    if not isinstance(gt_masks, Tensor) or gt_masks.dim() != 3:
        raise ValueError(f"gt_masks must be an (M, H, W) tensor, got {getattr(gt_masks, 'shape', gt_masks)!r}")
    if not isinstance(pos_rois, Tensor) or pos_rois.dim() != 2 or pos_rois.shape[1] != 4 \
            or not pos_rois.is_floating_point():
        raise ValueError(f"pos_rois must be a floating (P, 4) tensor, got {getattr(pos_rois, 'shape', pos_rois)!r}")
    P = pos_rois.shape[0]
    inds = pos_assigned_gt_inds
    if not isinstance(inds, Tensor) or inds.shape != (P,) or inds.is_floating_point() or inds.dtype == torch.bool:
        raise ValueError(f"pos_assigned_gt_inds must be an integer ({P},) tensor, got {getattr(inds, 'shape', inds)!r}")
    if P == 0:
        return pos_rois.new_zeros((0, mh, mw))
    M, H, W = gt_masks.shape
    if int(inds.min()) < 0 or int(inds.max()) >= M:
        raise ValueError(f"pos_assigned_gt_inds must lie in [0, {M}) for {M} gt_masks, got "
                         f"[{int(inds.min())}, {int(inds.max())}]")
    boxes = torch.stack([pos_rois[:, 0].clamp(0, W), pos_rois[:, 1].clamp(0, H),
                         pos_rois[:, 2].clamp(0, W), pos_rois[:, 3].clamp(0, H)], 1)
    # RoI k reads mask inds[k]: the gt masks are the batch, so none is copied per RoI.
    rois = torch.cat([inds.to(device=boxes.device, dtype=boxes.dtype)[:, None], boxes], 1)
    masks = gt_masks.to(device=boxes.device, dtype=boxes.dtype)[:, None]
    targets = roi_align(masks, rois, (mh, mw), 1.0, 0, True, "avg")[:, 0]
    return (targets >= 0.5).to(targets.dtype) if binarize else targets


def _mask_util():
    try:
        from pycocotools import mask as mask_util
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("COCO run-length encoding needs pycocotools: pip install pycocotools") from e
    return mask_util


def mask_to_rle(masks: Union[Tensor, np.ndarray]) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
    """COCO RLE of a binary mask ``(H, W)`` -> ``{'size': [H, W], 'counts': str}``, or of ``(N, H, W)``
    masks -> a list of such dicts (JSON-serialisable: ``counts`` decoded to ASCII, as COCO result files
    hold them). Nonzero pixels are foreground."""
    arr = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
    if arr.ndim not in (2, 3):
        raise ValueError(f"masks must be (H, W) or (N, H, W), got shape {arr.shape}")
    single = arr.ndim == 2
    stack = arr[None] if single else arr
    fortran = np.asfortranarray((stack != 0).astype(np.uint8).transpose(1, 2, 0))  # (H, W, N) column-major
    rles = _mask_util().encode(fortran) if stack.shape[0] else []
    out = [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in rles]
    return out[0] if single else out


def rle_to_mask(rle: Union[Dict[str, Any], Sequence[Dict[str, Any]]]) -> np.ndarray:
    """Inverse of :func:`mask_to_rle`: one RLE dict -> bool ``(H, W)``; a list -> bool ``(N, H, W)``."""
    single = isinstance(rle, dict)
    items = [rle] if single else list(rle)
    if not all(isinstance(r, dict) and "size" in r and "counts" in r for r in items):
        raise ValueError("rle must be a dict with 'size' and 'counts' or a list of them")
    coded = [{"size": [int(v) for v in r["size"]],
              "counts": r["counts"].encode("ascii") if isinstance(r["counts"], str) else r["counts"]} for r in items]
    if not coded:
        return np.zeros((0, 0, 0), dtype=bool)
    masks = _mask_util().decode(coded).astype(bool).transpose(2, 0, 1)  # (H, W, N) -> (N, H, W)
    return masks[0] if single else np.ascontiguousarray(masks)
