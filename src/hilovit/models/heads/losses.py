"""Detection losses with mmdet's reductions: sigmoid focal loss, sigmoid cross-entropy and L1, averaged by
``avg_factor``.

mmdet's ``weight_reduce_loss`` with ``reduction='mean'`` and an ``avg_factor`` divides the sum of
the weighted element losses by ``avg_factor + eps`` (``eps`` = float32's machine epsilon), not by
the element count; the anchor heads pass the number of positive anchors (at least 1 per image), or
with a sampler the number of sampled anchors.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
import torch.nn.functional as F

from hilovit.options import check_number

__all__ = ["check_loss_cfg", "l1_loss", "sigmoid_bce_loss", "sigmoid_focal_loss"]

_EPS = torch.finfo(torch.float32).eps


def sigmoid_focal_loss(logits: torch.Tensor, labels: torch.Tensor, weight: Optional[torch.Tensor] = None,
                       gamma: float = 2.0, alpha: float = 0.25, avg_factor: Optional[float] = None) -> torch.Tensor:
    """Focal loss (Lin et al., 2017) on per-class sigmoids, as mmdet's ``py_sigmoid_focal_loss``.

    Args:
        logits: ``(N, C)``; labels: ``(N,)`` int64 in ``[0, C]`` (``C`` = background: all-zero target).
        weight: ``(N,)`` per-row weight (0 drops a row).
        gamma, alpha: ``loss = BCE(logit, t) * (alpha t + (1 - alpha)(1 - t)) * pt ** gamma`` with
            ``pt = 1 - p`` for ``t = 1`` and ``p`` for ``t = 0``.
        avg_factor: the sum is divided by ``avg_factor + eps``; ``None``: the mean over elements.

    Returns: a scalar.
    """
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, C) and labels (N,), got {tuple(logits.shape)}, {tuple(labels.shape)}")
    C = logits.shape[1]
    target = F.one_hot(labels.long(), num_classes=C + 1)[:, :C].type_as(logits)
    p = logits.sigmoid()
    pt = (1 - p) * target + p * (1 - target)
    focal_weight = (alpha * target + (1 - alpha) * (1 - target)) * pt.pow(gamma)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * focal_weight
    if weight is not None:
        loss = loss * weight.reshape(-1, 1)
    return loss.mean() if avg_factor is None else loss.sum() / (avg_factor + _EPS)


def sigmoid_bce_loss(logits: torch.Tensor, labels: torch.Tensor, weight: Optional[torch.Tensor] = None,
                     avg_factor: Optional[float] = None) -> torch.Tensor:
    """Per-class sigmoid cross-entropy on one-hot targets, as mmdet's ``CrossEntropyLoss(use_sigmoid=True)``
    (``binary_cross_entropy`` with labels expanded to one-hot; the RPN's objectness loss).

    Args:
        logits: ``(N, C)``; labels: ``(N,)`` int64 in ``[0, C]`` (``C`` = background: all-zero target).
        weight: ``(N,)`` per-row weight (0 drops a row).
        avg_factor: the sum is divided by ``avg_factor + eps``; ``None``: the mean over elements.

    Returns: a scalar.
    """
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, C) and labels (N,), got {tuple(logits.shape)}, {tuple(labels.shape)}")
    C = logits.shape[1]
    target = F.one_hot(labels.long(), num_classes=C + 1)[:, :C].type_as(logits)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if weight is not None:
        loss = loss * weight.reshape(-1, 1).type_as(loss)
    return loss.mean() if avg_factor is None else loss.sum() / (avg_factor + _EPS)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
            avg_factor: Optional[float] = None) -> torch.Tensor:
    """``sum(|pred - target| * weight) / (avg_factor + eps)`` (mmdet's ``L1Loss``; the mean over
    elements without ``avg_factor``). ``pred``, ``target``, ``weight``: the same shape."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    if target.numel() == 0:
        return pred.sum() * 0
    loss = (pred - target).abs()
    if weight is not None:
        loss = loss * weight
    return loss.mean() if avg_factor is None else loss.sum() / (avg_factor + _EPS)


_LOSSES = {
    "FocalLoss": {"use_sigmoid", "gamma", "alpha", "loss_weight", "reduction", "activated"},
    "CrossEntropyLoss": {"use_sigmoid", "use_mask", "loss_weight", "reduction", "avg_non_ignore", "class_weight"},
    "L1Loss": {"loss_weight", "reduction"},
}


def check_loss_cfg(cfg: Optional[Mapping[str, Any]], what: str, allowed: tuple) -> Dict[str, Any]:
    """Validate an mmdet loss config (``type`` among ``allowed``; mean reduction; focal loss and
    cross-entropy on sigmoids, no class weights) and return it as a plain dict with the defaults filled in."""
    if not isinstance(cfg, Mapping) or cfg.get("type") not in allowed:
        raise ValueError(f"{what} must be a dict with type in {list(allowed)}, got {cfg!r}")
    extra = set(cfg) - {"type"} - _LOSSES[cfg["type"]]
    if extra:
        raise ValueError(f"{what} (type={cfg['type']!r}) has unsupported keys {sorted(extra)}")
    out = dict(cfg)
    out.setdefault("loss_weight", 1.0)
    if out.get("reduction", "mean") != "mean":
        raise ValueError(f"{what}: only reduction='mean' is supported, got {out['reduction']!r}")
    if out["type"] == "FocalLoss":
        if not out.get("use_sigmoid", True) or out.get("activated", False):
            raise ValueError(f"{what}: FocalLoss needs use_sigmoid=True and activated=False, got {dict(cfg)!r}")
        out.setdefault("gamma", 2.0)
        out.setdefault("alpha", 0.25)
    if out["type"] == "CrossEntropyLoss" and (not out.get("use_sigmoid", False) or out.get("use_mask", False)
                                              or out.get("class_weight") is not None):
        raise ValueError(f"{what}: CrossEntropyLoss needs use_sigmoid=True, no use_mask and no class_weight here, "
                         f"got {dict(cfg)!r}")
    for key in ("loss_weight", "gamma", "alpha"):
        if key in out:
            check_number(out[key], f"{what} {key}", minimum=0)  # a config key, not a flag: no ": "
    return out
