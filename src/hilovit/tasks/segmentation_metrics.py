"""Segmentation metrics as mmseg computes them: areas summed over a data set, then IoU per class.

For every image, pixels whose label is the ignore index are dropped; the rest add to four areas
per class: the intersection (predicted and labelled that class), the prediction area, the label
area and the union (prediction + label - intersection). Summed over the whole data set they give

    IoU_c  = intersection_c / union_c          (nan when the class is in neither)
    Acc_c  = intersection_c / label_c          (nan when the class is never labelled)
    mIoU   = mean of IoU_c over classes whose IoU is not nan (numpy's nanmean, as mmseg)
    mAcc   = mean of Acc_c likewise
    aAcc   = sum intersection / sum label      (pixel accuracy)

:class:`SegMetric` keeps a (num_classes x num_classes) confusion matrix (rows: label, columns:
prediction) from which the four areas follow (intersection = diagonal, label area = row sums,
prediction area = column sums). Matrices of several processes merge by summing them.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence

import torch

from hilovit.options import check_int
from hilovit.train.distributed import all_reduce_sum

__all__ = ["SegMetric", "intersect_and_union", "metrics_from_areas"]


def _check_pair(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int):
    if not isinstance(label, torch.Tensor) or label.dtype.is_floating_point or label.dtype == torch.bool:
        got = label.dtype if isinstance(label, torch.Tensor) else type(label).__name__
        raise TypeError(f"label must be an integer tensor (..., H, W), got {got}")
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"pred must be a tensor, got {type(pred).__name__}")
    if pred.dtype.is_floating_point:
        # logits or scores (B, num_classes, H, W) or (num_classes, H, W)
        if pred.dim() != label.dim() + 1 or pred.shape[-3] != num_classes:
            raise ValueError(f"pred holds scores of shape {tuple(pred.shape)}; expected (..., {num_classes}, H, W) "
                             f"beside label {tuple(label.shape)}")
        pred = pred.argmax(dim=-3)
    if tuple(pred.shape) != tuple(label.shape):
        raise ValueError(f"pred {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape")
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long()
    keep = label != ignore_index
    if bool(((label < 0) | (label >= num_classes)).logical_and_(keep).any()):
        bad = label[keep & ((label < 0) | (label >= num_classes))]
        raise ValueError(f"label holds value {int(bad[0])} outside [0, {num_classes}) and not the "
                         f"ignore index {ignore_index}")
    if bool(((pred < 0) | (pred >= num_classes)).logical_and_(keep).any()):
        bad = pred[keep & ((pred < 0) | (pred >= num_classes))]
        raise ValueError(f"pred holds class {int(bad[0])} outside [0, {num_classes})")
    return pred, label, keep


def _pair_counts(pred: torch.Tensor, label: torch.Tensor, keep: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The (label, pred) confusion counts of the kept pixels, (num_classes, num_classes) int64.

    Ignored pixels go to one extra bin that is dropped (no boolean indexing of whole maps, which is
    slow on CPUs with many threads).
    """
    k = num_classes
    index = torch.where(keep, label * k + pred, torch.full_like(label, k * k))
    return torch.bincount(index, minlength=k * k + 1)[: k * k].view(k, k)


def intersect_and_union(pred: torch.Tensor, label: torch.Tensor, num_classes: int,
                        ignore_index: int = 255) -> Dict[str, torch.Tensor]:
    """The four per-class areas of one prediction (mmseg's ``intersect_and_union``).

    Args:
        pred: predicted classes, an integer tensor of the label's shape, or float scores with a class
            axis before H, W (``(B, num_classes, H, W)``), reduced by argmax.
        label: integer labels; ``ignore_index`` pixels are left out.
        num_classes: the number of classes.

    Returns:
        dict of int64 tensors (num_classes,): ``intersect``, ``union``, ``pred``, ``label``.
    """
    pred, label, keep = _check_pair(pred, label, num_classes, ignore_index)
    counts = _pair_counts(pred, label, keep, num_classes)
    intersect, area_label, area_pred = counts.diagonal().clone(), counts.sum(1), counts.sum(0)
    return {"intersect": intersect, "union": area_pred + area_label - intersect, "pred": area_pred,
            "label": area_label}


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else math.nan


def metrics_from_areas(intersect: torch.Tensor, union: torch.Tensor, area_label: torch.Tensor,
                       class_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """mIoU, mAcc, aAcc and per-class IoU/Acc from summed areas (see the module docstring).

    Returns:
        ``{'miou', 'macc', 'aacc'}`` floats in [0, 1] (nan when nothing was counted), ``'iou'`` and
        ``'acc'`` lists of per-class floats (nan for a class absent as explained above), and
        ``'classes'`` when ``class_names`` is given.
    """
    inter, uni, lab = (torch.as_tensor(t).double() for t in (intersect, union, area_label))
    iou = inter / uni  # 0 / 0 -> nan
    acc = inter / lab
    total = float(lab.sum())
    out: Dict[str, object] = {
        "miou": _nanmean(iou),
        "macc": _nanmean(acc),
        "aacc": float(inter.sum()) / total if total > 0 else math.nan,
        "iou": iou.tolist(),
        "acc": acc.tolist(),
    }
    if class_names is not None:
        if len(class_names) != len(iou):
            raise ValueError(f"class_names has {len(class_names)} names for {len(iou)} classes")
        out["classes"] = [str(c) for c in class_names]
    return out


class SegMetric:
    """A running confusion matrix over a data set, giving mmseg's mIoU, mAcc and aAcc.

    Args:
        num_classes: the number of classes.
        ignore_index: the label left out of every area.
        class_names: names for the per-class results (optional).
        device: where the matrix lives (that of the predictions, to avoid copies).

    Example::

        >>> m = SegMetric(3)
        >>> m.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [1, 255]]))
        >>> round(m.compute()["miou"], 4)   # IoU 1, 0.5, 0 over the three classes
        0.5
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: Optional[Sequence[str]] = None,
                 device: Optional[torch.device] = None) -> None:
        check_int(num_classes, "SegMetric: num_classes", minimum=1)
        if not isinstance(ignore_index, int) or 0 <= ignore_index < num_classes:
            raise ValueError(f"SegMetric: ignore_index={ignore_index!r} must be an int outside [0, {num_classes})")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"SegMetric: class_names has {len(class_names)} names for num_classes={num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names: Optional[List[str]] = [str(c) for c in class_names] if class_names is not None else None
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def reset(self) -> None:
        self.confusion.zero_()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch: ``pred`` classes (B, H, W) or scores (B, num_classes, H, W), ``label`` (B, H, W)."""
        pred, label, keep = _check_pair(pred, label.to(pred.device), self.num_classes, self.ignore_index)
        self.confusion += _pair_counts(pred, label, keep, self.num_classes).to(self.confusion.device)

    def merge(self, other: SegMetric) -> SegMetric:
        """Add another accumulator's counts (same classes and ignore index) to this one; returns self."""
        if not isinstance(other, SegMetric) or other.num_classes != self.num_classes \
                or other.ignore_index != self.ignore_index:
            raise ValueError("SegMetric.merge: other must be a SegMetric with the same num_classes and ignore_index")
        self.confusion += other.confusion.to(self.confusion.device)
        return self

    def all_reduce(self) -> SegMetric:
        """Sum the matrix over all processes (identity outside torch.distributed); returns self."""
        all_reduce_sum(self.confusion)
        return self

    def areas(self) -> Dict[str, torch.Tensor]:
        """The summed int64 areas per class: ``intersect``, ``union``, ``pred``, ``label``."""
        c = self.confusion.cpu()
        inter = c.diagonal().clone()
        area_label, area_pred = c.sum(1), c.sum(0)
        return {"intersect": inter, "union": area_pred + area_label - inter, "pred": area_pred, "label": area_label}

    def compute(self) -> Dict[str, object]:
        """mIoU, mAcc, aAcc and per-class IoU/Acc (see :func:`metrics_from_areas`)."""
        a = self.areas()
        return metrics_from_areas(a["intersect"], a["union"], a["label"], self.class_names)

    def __repr__(self) -> str:
        return f"SegMetric(num_classes={self.num_classes}, ignore_index={self.ignore_index}, " \
               f"pixels={int(self.confusion.sum())})"
