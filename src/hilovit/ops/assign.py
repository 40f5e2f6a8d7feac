"""mmdet's ``MaxIoUAssigner``: which ground-truth box (if any) each anchor learns from.

Given the IoU matrix ``(num_gts, num_anchors)``: an anchor whose best IoU is below ``neg_iou_thr``
is negative (0), one whose best IoU is at least ``pos_iou_thr`` is positive for that box (index
+ 1), the rest are ignored (-1). Then every ground-truth box claims the anchors of its own highest
IoU (all of them with ``gt_max_assign_all``) when that IoU is at least ``min_pos_iou``; boxes
later in the list win over earlier ones (mmdet's loop over boxes, computed here at once).
"""

from __future__ import annotations

from typing import Tuple, Union

import torch

from hilovit.options import check_number

__all__ = ["max_iou_assign"]


def max_iou_assign(
    overlaps: torch.Tensor,
    gt_labels: torch.Tensor,
    pos_iou_thr: float,
    neg_iou_thr: Union[float, Tuple[float, float]],
    min_pos_iou: float = 0.0,
    gt_max_assign_all: bool = True,
    match_low_quality: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Assign anchors to ground-truth boxes from their IoUs.

    Args:
        overlaps: ``(G, N)`` IoU of each of ``G`` boxes with each of ``N`` anchors.
        gt_labels: ``(G,)`` int64 class of each box.
        pos_iou_thr: best IoU ``>=`` this makes an anchor positive.
        neg_iou_thr: best IoU in ``[0, neg_iou_thr)`` (or in ``[lo, hi)`` for a pair) makes it negative.
        min_pos_iou: a box claims its best anchors only when that IoU is ``>=`` this.
        gt_max_assign_all: a box claims every anchor tied at its best IoU (else the first).
        match_low_quality: let boxes claim their best anchors at all.

    Returns:
        ``assigned_gt_inds`` ``(N,)`` int64 (-1 ignored, 0 negative, ``k > 0``: box ``k - 1``),
        ``max_overlaps`` ``(N,)`` each anchor's best IoU, ``assigned_labels`` ``(N,)`` int64 (-1 unless positive).
    """
    if not isinstance(overlaps, torch.Tensor) or overlaps.dim() != 2:
        got = getattr(overlaps, "shape", overlaps)
        raise ValueError(f"overlaps must be a (num_gts, num_anchors) tensor, got {got}")
    if not isinstance(gt_labels, torch.Tensor) or gt_labels.shape != (overlaps.shape[0],):
        got = getattr(gt_labels, "shape", gt_labels)
        raise ValueError(f"gt_labels must be a ({overlaps.shape[0]},) tensor, got {got}")
    pos_iou_thr, min_pos_iou = check_number(pos_iou_thr, "pos_iou_thr"), check_number(min_pos_iou, "min_pos_iou")
    if isinstance(neg_iou_thr, (tuple, list)):
        if len(neg_iou_thr) != 2:
            raise ValueError(f"neg_iou_thr must be a number or a (lo, hi) pair, got {neg_iou_thr!r}")
        neg_lo, neg_hi = (check_number(v, "neg_iou_thr") for v in neg_iou_thr)
    else:
        neg_lo, neg_hi = 0.0, check_number(neg_iou_thr, "neg_iou_thr")
    G, N = overlaps.shape
    assigned = overlaps.new_full((N,), -1, dtype=torch.long)
    if G == 0 or N == 0:
        if G == 0:
            assigned[:] = 0
        return assigned, overlaps.new_zeros((N,)), overlaps.new_full((N,), -1, dtype=torch.long)
    max_overlaps, argmax = overlaps.max(dim=0)
    gt_max, gt_argmax = overlaps.max(dim=1)
    assigned[(max_overlaps >= neg_lo) & (max_overlaps < neg_hi)] = 0
    pos = max_overlaps >= pos_iou_thr
    assigned[pos] = argmax[pos] + 1
    if match_low_quality:
        ok = gt_max >= min_pos_iou
        if gt_max_assign_all:
            claims = (overlaps == gt_max[:, None]) & ok[:, None]
        else:
            claims = torch.zeros_like(overlaps, dtype=torch.bool)
            claims[torch.arange(G, device=overlaps.device), gt_argmax] = ok
        # the last box (in list order) claiming an anchor wins, as in mmdet's sequential loop
        rank = torch.arange(1, G + 1, device=overlaps.device)[:, None] * claims
        last = rank.max(dim=0).values
        assigned = torch.where(last > 0, last, assigned)
    labels = torch.full_like(assigned, -1)
    pos = assigned > 0
    labels[pos] = gt_labels.long()[assigned[pos] - 1]
    return assigned, max_overlaps, labels
