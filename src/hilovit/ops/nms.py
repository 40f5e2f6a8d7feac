"""Non-maximum suppression with mmcv 2.1's CPU semantics, vectorised.

mmcv's ``nms_cpu`` sorts the boxes by score (descending, stable: equal scores keep their index
order), then walks them greedily: a box is dropped when its IoU with an earlier *kept* box is
strictly greater than the threshold (``offset = 0``; the threshold is a C++ ``float``, so it is
rounded to float32 first). :func:`nms` computes the same set without a Python loop over boxes:
the IoU matrix of a block of sorted boxes, and a fixed-point iteration of the greedy rule
``keep[i] = not any(keep[k] and iou[k, i] > t for k < i)``, whose only fixed point is the greedy
result (entry ``i`` depends on earlier entries only). Large inputs go block by block, each block
first pruned by the boxes already kept. :func:`batched_nms` is mmcv's class-aware version:
``boxes + idxs * (boxes.max() + 1)`` in the boxes' dtype, one NMS, kept indices by descending score;
:func:`multiclass_nms` is mmdet's R-CNN post-processing on top of it (per-class candidates above a score
threshold, class-aware NMS, a cap).

When ``torchvision`` imports, ``torchvision.ops.nms`` (same greedy rule, IoU compared with the
float32-rounded threshold) runs instead; :data:`BACKEND` says which is active and
``use_torchvision(False)`` turns it off.
"""

from __future__ import annotations

import torch

try:  # pragma: no cover - torchvision is optional
    from torchvision.ops import nms as _tv_nms
except Exception:  # ImportError, or a torchvision built for another torch
    _tv_nms = None

__all__ = ["BACKEND", "batched_nms", "multiclass_nms", "nms", "use_torchvision"]

#: ``"torchvision"`` when ``torchvision.ops.nms`` is used, ``"pytorch"`` otherwise.
BACKEND = "torchvision" if _tv_nms is not None else "pytorch"
_BLOCK = 128  # boxes per block: the fixed point on 128 x 128 (3.4x faster than 1024 for 2,000 RPN-like boxes)


def use_torchvision(enabled: bool) -> None:
    """Use ``torchvision.ops.nms`` when it imports (``True``, the default) or the plain-PyTorch
    version (``False``); both give the same result."""
    global BACKEND
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}")
    BACKEND = "torchvision" if enabled and _tv_nms is not None else "pytorch"


def _check(boxes, scores, iou_threshold) -> float:
    if not isinstance(boxes, torch.Tensor) or not isinstance(scores, torch.Tensor):
        raise TypeError(f"boxes and scores must be tensors, got {type(boxes).__name__}, {type(scores).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.dim() != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(f"scores must have shape ({boxes.shape[0]},) to match boxes, got {tuple(scores.shape)}")
    if not boxes.is_floating_point() or not scores.is_floating_point():
        raise TypeError(f"boxes and scores must be floating point, got {boxes.dtype} and {scores.dtype}")
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)):
        raise TypeError(f"iou_threshold must be a number, got {iou_threshold!r}")
    # mmcv passes the threshold to its kernel as a C++ float
    return float(torch.tensor(float(iou_threshold), dtype=torch.float32))


def _iou_over(boxes_a: torch.Tensor, area_a: torch.Tensor, boxes_b: torch.Tensor, area_b: torch.Tensor,
              thr: float) -> torch.Tensor:
    """``(Na, Nb)`` bool: IoU > thr, with mmcv's kernel arithmetic (offset 0; 0/0 counts as no overlap)."""
    w = (torch.min(boxes_a[:, None, 2], boxes_b[None, :, 2]) - torch.max(boxes_a[:, None, 0], boxes_b[None, :, 0]))
    h = (torch.min(boxes_a[:, None, 3], boxes_b[None, :, 3]) - torch.max(boxes_a[:, None, 1], boxes_b[None, :, 1]))
    inter = w.clamp(min=0) * h.clamp(min=0)
    return inter / (area_a[:, None] + area_b[None, :] - inter) > thr


def _greedy_block(over: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """The greedy keep mask of one block of sorted boxes: ``over`` ``(n, n)`` the IoU test, ``alive``
    the boxes not already suppressed by earlier blocks."""
    n = over.shape[0]
    later = torch.ones(n, n, dtype=torch.bool, device=over.device).triu(1)
    sup = (over & later).to(torch.float32)  # sup[k, i]: k (earlier) would suppress i
    keep = alive.clone()
    for _ in range(n + 1):  # converges in (longest suppression chain + 1) rounds
        new = alive & ~((keep.to(torch.float32) @ sup) > 0)
        if torch.equal(new, keep):
            return keep
        keep = new
    return keep


def _nms_pytorch(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> torch.Tensor:
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    kept = []  # sorted positions kept so far
    for start in range(0, b.shape[0], _BLOCK):
        stop = min(start + _BLOCK, b.shape[0])
        alive = torch.ones(stop - start, dtype=torch.bool, device=b.device)
        if kept:
            prev = torch.cat(kept)
            alive = ~_iou_over(b[prev], area[prev], b[start:stop], area[start:stop], thr).any(0)
        over = _iou_over(b[start:stop], area[start:stop], b[start:stop], area[start:stop], thr)
        keep = _greedy_block(over, alive)
        kept.append(torch.nonzero(keep).flatten() + start)
    pos = torch.cat(kept) if kept else order.new_zeros(0)
    return order[pos]


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices (int64) of the boxes kept by greedy NMS, highest score first.

    Args:
        boxes: ``(N, 4)`` x1 y1 x2 y2; scores: ``(N,)``; iou_threshold: a box is suppressed when
            its IoU with a kept, higher-scored box is ``> iou_threshold`` (float32-rounded).

    Ties in score keep index order (stable sort), as mmcv's CPU kernel.
    """
    thr = _check(boxes, scores, iou_threshold)
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    if BACKEND == "torchvision" and _tv_nms is not None:  # pragma: no cover - needs torchvision
        return _tv_nms(boxes, scores, thr)
    return _nms_pytorch(boxes, scores, thr)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-aware NMS (mmcv's ``batched_nms``): boxes of different ``idxs`` never suppress each
    other. Each box is moved by ``idxs * (boxes.max() + 1)`` (in the boxes' dtype) and one
    :func:`nms` runs on the moved boxes.

    Args:
        boxes: ``(N, 4)``; scores: ``(N,)``; idxs: ``(N,)`` integer class (or level) of each box.

    Returns:
        int64 indices into ``boxes`` of the kept boxes, by descending score.
    """
    thr = _check(boxes, scores, iou_threshold)
    if not isinstance(idxs, torch.Tensor) or idxs.shape != scores.shape or idxs.is_floating_point():
        raise ValueError(f"idxs must be an integer tensor of shape {tuple(scores.shape)}, got "
                         f"{getattr(idxs, 'dtype', type(idxs).__name__)} {tuple(getattr(idxs, 'shape', ()))}")
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, thr)


def multiclass_nms(multi_bboxes: torch.Tensor, multi_scores: torch.Tensor, score_thr: float, iou_threshold: float,
                   max_num: int = -1):
    """mmdet's ``multiclass_nms`` (R-CNN post-processing): every (box, class) pair whose class score is
    ``> score_thr`` becomes a candidate, taken box-major then class-minor; class-aware :func:`batched_nms`;
    the first ``max_num`` (all when ``max_num <= 0``) by descending score.

    Args:
        multi_bboxes: ``(N, 4 * C)`` class-specific boxes (or ``(N, 4)`` shared by every class).
        multi_scores: ``(N, C + 1)`` class probabilities, the last column the background (ignored).
        score_thr, iou_threshold, max_num: the thresholds and the cap.

    Returns:
        ``(boxes (K, 4), scores (K,), labels (K,) int64)``.
    """
    if not isinstance(multi_scores, torch.Tensor) or multi_scores.dim() != 2 or multi_scores.shape[1] < 2:
        raise ValueError(f"multi_scores must be an (N, C + 1) tensor, got {getattr(multi_scores, 'shape', None)}")
    N, C = multi_scores.shape[0], multi_scores.shape[1] - 1
    if not isinstance(multi_bboxes, torch.Tensor) or multi_bboxes.shape not in ((N, 4), (N, 4 * C)):
        raise ValueError(f"multi_bboxes must be ({N}, 4) or ({N}, {4 * C}) to match multi_scores "
                         f"{tuple(multi_scores.shape)}, got {getattr(multi_bboxes, 'shape', None)}")
    if multi_bboxes.shape[1] == 4 * C:
        boxes = multi_bboxes.reshape(N, C, 4)
    else:
        boxes = multi_bboxes[:, None].expand(N, C, 4)
    scores = multi_scores[:, :-1]
    labels = torch.arange(C, device=scores.device).view(1, -1).expand_as(scores)
    boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    keep = torch.nonzero(scores > score_thr).squeeze(1)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if boxes.shape[0] == 0:
        return boxes, scores, labels
    keep = batched_nms(boxes, scores, labels, iou_threshold)
    if max_num > 0:
        keep = keep[:max_num]
    return boxes[keep], scores[keep], labels[keep]
