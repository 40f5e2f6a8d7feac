"""Training targets of the Mask R-CNN RoI heads: RoI sampling and box-regression targets.

As mmdet 3.2: ``RandomSampler`` (``num``, ``pos_fraction``, ``neg_pos_ub``, ``add_gt_as_proposals``)
on an assignment in mmdet's convention (``assigned_gt_inds``: 0 negative, -1 ignored, ``k > 0`` the
``k``-th ground truth, 1-based), ``BBoxHead.get_targets`` (positives first, background label
``num_classes``) with the :class:`~hilovit.ops.boxes.DeltaXYWHBBoxCoder` encoding, and the R-CNN
``train_cfg`` (:func:`check_rcnn_train_cfg`, :func:`assign_and_sample`). The assigner itself
(``MaxIoUAssigner``) belongs with the box operators. Sampling is vectorised and draws from an optional
``torch.Generator``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

from hilovit.ops.assign import max_iou_assign
from hilovit.ops.boxes import DeltaXYWHBBoxCoder, bbox_overlaps
from hilovit.options import check_fraction, check_int

__all__ = ["SamplingResult", "assign_and_sample", "bbox_targets", "check_rcnn_train_cfg", "random_sample",
           "sample_rois"]

#: the R-CNN box coder of the official configs (means 0, stds [0.1, 0.1, 0.2, 0.2])
RCNN_CODER = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))


class SamplingResult(NamedTuple):
    """The RoIs sampled for one image (mmdet's ``SamplingResult`` fields).

    ``pos_inds``/``neg_inds``: indices into the priors (ground truths first when they were added),
    ascending; ``pos_priors`` ``(P, 4)``, ``neg_priors`` ``(Q, 4)``; ``pos_assigned_gt_inds`` ``(P,)``
    0-based; ``pos_gt_bboxes`` ``(P, 4)``, ``pos_gt_labels`` ``(P,)``; ``pos_is_gt`` ``(P,)`` bool.
    """

    pos_inds: Tensor
    neg_inds: Tensor
    pos_priors: Tensor
    neg_priors: Tensor
    pos_assigned_gt_inds: Tensor
    pos_gt_bboxes: Tensor
    pos_gt_labels: Tensor
    pos_is_gt: Tensor

    @property
    def priors(self) -> Tensor:
        """``(P + Q, 4)``: positives then negatives, the order of the bbox head's RoIs and targets."""
        return torch.cat([self.pos_priors, self.neg_priors], 0)


def _random_subset(gallery: Tensor, num: int, generator: Optional[torch.Generator]) -> Tensor:
    """``num`` entries of ``gallery`` drawn without replacement (all of them when there are fewer), sorted."""
    if gallery.numel() > num:
        device = generator.device if generator is not None else torch.device("cpu")
        perm = torch.randperm(gallery.numel(), generator=generator, device=device)[:num]
        gallery = gallery[perm.to(gallery.device)]
    return gallery.unique()  # mmdet's `.unique()`: sorted and distinct


def random_sample(assigned_gt_inds: Tensor, num: int, pos_fraction: float, neg_pos_ub: float = -1,
                  generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """mmdet's ``RandomSampler``: up to ``int(num * pos_fraction)`` positives (``assigned_gt_inds > 0``)
    at random, then ``num - #positives`` negatives (``== 0``; at most ``neg_pos_ub * max(1, #pos)`` when
    ``neg_pos_ub >= 0``). Returns ``(pos_inds, neg_inds)``, each int64 and ascending."""
    if not isinstance(assigned_gt_inds, Tensor) or assigned_gt_inds.dim() != 1 or assigned_gt_inds.is_floating_point():
        shape = getattr(assigned_gt_inds, "shape", None)
        raise ValueError(f"assigned_gt_inds must be a 1-D integer tensor, got {shape}")
    check_int(num, "num", minimum=1)
    check_fraction(pos_fraction, "pos_fraction", include_one=True)
    pos = _random_subset(torch.nonzero(assigned_gt_inds > 0).squeeze(1), int(num * pos_fraction), generator)
    num_neg = num - pos.numel()
    if neg_pos_ub >= 0:
        num_neg = min(num_neg, int(neg_pos_ub * max(1, pos.numel())))
    neg = _random_subset(torch.nonzero(assigned_gt_inds == 0).squeeze(1), num_neg, generator)
    return pos, neg


def sample_rois(proposals: Tensor, assigned_gt_inds: Tensor, gt_bboxes: Tensor, gt_labels: Tensor, num: int = 512,
                pos_fraction: float = 0.25, neg_pos_ub: float = -1, add_gt_as_proposals: bool = True,
                generator: Optional[torch.Generator] = None) -> SamplingResult:
    """Sample the R-CNN RoIs of one image (mmdet's ``BaseSampler.sample`` with ``RandomSampler``).

    Args:
        proposals: ``(N, 4)`` proposal boxes (the priors); assigned_gt_inds: ``(N,)`` their assignment.
        gt_bboxes: ``(G, 4)``; gt_labels: ``(G,)`` int64 in ``[0, num_classes)``.
        num, pos_fraction, neg_pos_ub: the sampler's settings (Mask R-CNN: 512, 0.25, -1).
        add_gt_as_proposals: prepend the ground truths as priors assigned to themselves.
        generator: the random source of the draws.
    """
    if proposals.dim() != 2 or proposals.shape[1] < 4 or assigned_gt_inds.shape != (proposals.shape[0],):
        raise ValueError(f"proposals must be (N, 4) with assigned_gt_inds (N,), got {tuple(proposals.shape)} "
                         f"and {tuple(assigned_gt_inds.shape)}")
    if gt_bboxes.dim() != 2 or gt_bboxes.shape[1] != 4 or gt_labels.shape != (gt_bboxes.shape[0],):
        raise ValueError(f"gt_bboxes must be (G, 4) with gt_labels (G,), got {tuple(gt_bboxes.shape)} "
                         f"and {tuple(gt_labels.shape)}")
    priors, gt_inds = proposals[:, :4], assigned_gt_inds.long()
    is_gt = torch.zeros(priors.shape[0], dtype=torch.bool, device=priors.device)
    G = gt_bboxes.shape[0]
    if add_gt_as_proposals and G > 0:
        priors = torch.cat([gt_bboxes.to(priors.dtype), priors], 0)
        gt_inds = torch.cat([torch.arange(1, G + 1, device=gt_inds.device), gt_inds], 0)
        is_gt = torch.cat([torch.ones(G, dtype=torch.bool, device=priors.device), is_gt], 0)
    if G > 0 and int(gt_inds.max()) > G:
        raise ValueError(f"assigned_gt_inds refers to ground truth {int(gt_inds.max())} but there are {G}")
    pos, neg = random_sample(gt_inds, num, pos_fraction, neg_pos_ub, generator)
    pos_assigned = gt_inds[pos] - 1
    pos_gt_bboxes = gt_bboxes[pos_assigned] if G > 0 else gt_bboxes.new_zeros((0, 4))
    pos_gt_labels = gt_labels[pos_assigned] if G > 0 else gt_labels.new_zeros((0,))
    return SamplingResult(pos, neg, priors[pos], priors[neg], pos_assigned, pos_gt_bboxes, pos_gt_labels, is_gt[pos])


def bbox_targets(sampling_results: Sequence[SamplingResult], num_classes: int, pos_weight: float = -1.0,
                 encode: Optional[Callable[[Tensor, Tensor], Tensor]] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """R-CNN classification and regression targets of the sampled RoIs (mmdet's ``BBoxHead.get_targets``,
    images concatenated, each image's positives then negatives as in :attr:`SamplingResult.priors`).

    Returns ``labels`` ``(R,)`` (``num_classes`` = background), ``label_weights`` ``(R,)`` (positives
    ``pos_weight`` when > 0, else 1; negatives 1), ``bbox_targets`` ``(R, 4)`` (``encode(pos_priors,
    pos_gt_bboxes)``, default the R-CNN coder's ``encode``; 0 for negatives) and ``bbox_weights`` ``(R, 4)``
    (1 for positives)."""
    encode = encode or RCNN_CODER.encode
    parts: List[Tuple[Tensor, ...]] = []
    for res in sampling_results:
        P, Q = res.pos_priors.shape[0], res.neg_priors.shape[0]
        ref = res.pos_priors
        labels = torch.full((P + Q,), num_classes, dtype=torch.long, device=ref.device)
        label_weights = ref.new_zeros(P + Q)
        targets = ref.new_zeros((P + Q, 4))
        weights = ref.new_zeros((P + Q, 4))
        if P > 0:
            labels[:P] = res.pos_gt_labels
            label_weights[:P] = 1.0 if pos_weight <= 0 else pos_weight
            targets[:P] = encode(res.pos_priors, res.pos_gt_bboxes).to(targets.dtype)
            weights[:P] = 1.0
        label_weights[P:] = 1.0
        parts.append((labels, label_weights, targets, weights))
    return tuple(torch.cat(t, 0) for t in zip(*parts))


_RCNN_ASSIGNER = {"pos_iou_thr", "neg_iou_thr", "min_pos_iou", "match_low_quality", "ignore_iof_thr",
                  "gt_max_assign_all", "iou_calculator", "gpu_assign_thr", "ignore_wrt_candidates"}
_RCNN_SAMPLER = {"num", "pos_fraction", "neg_pos_ub", "add_gt_as_proposals"}


def _typed(cfg: Any, what: str, kind: str, allowed: set, required: Sequence[str]) -> Dict[str, Any]:
    if not isinstance(cfg, Mapping) or cfg.get("type") != kind:
        raise ValueError(f"{what} must be a dict with type {kind!r}, got {cfg!r}")
    extra = set(cfg) - allowed - {"type"}
    missing = [k for k in required if k not in cfg]
    if extra or missing:
        raise ValueError(f"{what} (type={kind!r}) has unsupported keys {sorted(extra)} or lacks {missing}; "
                         f"it takes {sorted(allowed)}")
    return dict(cfg)


def check_rcnn_train_cfg(cfg: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """Validate mmdet's ``train_cfg.rcnn``: ``assigner=dict(type='MaxIoUAssigner', pos_iou_thr, neg_iou_thr,
    min_pos_iou, match_low_quality, ignore_iof_thr=-1)``, ``sampler=dict(type='RandomSampler', num,
    pos_fraction, neg_pos_ub, add_gt_as_proposals)``, ``mask_size``, ``pos_weight``, ``debug``. Returns a
    plain dict with mmdet's defaults filled in (``min_pos_iou`` 0, ``match_low_quality`` True,
    ``neg_pos_ub`` -1, ``add_gt_as_proposals`` True, ``mask_size`` 28, ``pos_weight`` -1). The assigner and
    the sampler may be left out by code that samples RoIs itself (:func:`assign_and_sample` needs them)."""
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        raise TypeError(f"train_cfg rcnn must be a dict, got {type(cfg).__name__}")
    extra = set(cfg) - {"assigner", "sampler", "mask_size", "pos_weight", "debug"}
    if extra:
        raise ValueError(f"train_cfg rcnn has unknown keys {sorted(extra)}")
    out = dict(mask_size=28, pos_weight=-1, debug=False)
    out.update(cfg)
    if cfg.get("assigner") is not None:
        assigner = _typed(cfg["assigner"], "train_cfg rcnn assigner", "MaxIoUAssigner", _RCNN_ASSIGNER,
                          ["pos_iou_thr", "neg_iou_thr"])
        if assigner.get("ignore_iof_thr", -1) > 0:
            raise ValueError("train_cfg rcnn assigner ignore_iof_thr > 0 (ignored boxes) is not supported; use -1")
        if assigner.get("iou_calculator", {"type": "BboxOverlaps2D"}).get("type") != "BboxOverlaps2D":
            raise ValueError(f"train_cfg rcnn assigner iou_calculator must be BboxOverlaps2D, got {assigner!r}")
        out["assigner"] = dict(dict(min_pos_iou=0.0, match_low_quality=True, gt_max_assign_all=True), **assigner)
    if cfg.get("sampler") is not None:
        sampler = _typed(cfg["sampler"], "train_cfg rcnn sampler", "RandomSampler", _RCNN_SAMPLER,
                         ["num", "pos_fraction"])
        out["sampler"] = dict(dict(neg_pos_ub=-1, add_gt_as_proposals=True), **sampler)
    return out


def assign_and_sample(proposals: Tensor, gt_bboxes: Tensor, gt_labels: Tensor, cfg: Mapping[str, Any],
                      generator: Optional[torch.Generator] = None) -> SamplingResult:
    """The R-CNN RoIs of one image for training (mmdet's ``StandardRoIHead.loss`` up to the sampler):
    :func:`~hilovit.ops.assign.max_iou_assign` of the proposals to the ground truths (IoU of each box
    with each proposal), then :func:`sample_rois` with the ``sampler`` settings.

    Args:
        proposals: ``(N, 4)`` the RPN's boxes (no gradient); gt_bboxes ``(G, 4)``; gt_labels ``(G,)``.
        cfg: a :func:`check_rcnn_train_cfg` dict; generator: the sampler's random source.
    """
    if cfg.get("assigner") is None or cfg.get("sampler") is None:
        raise ValueError("assign_and_sample needs a train_cfg rcnn with an assigner and a sampler")
    a, s = cfg["assigner"], cfg["sampler"]
    proposals = proposals.detach()
    gt_bboxes = gt_bboxes.to(proposals)
    gt_labels = gt_labels.to(device=proposals.device, dtype=torch.long)
    assigned, _, _ = max_iou_assign(bbox_overlaps(gt_bboxes, proposals), gt_labels, a["pos_iou_thr"],
                                    a["neg_iou_thr"], a["min_pos_iou"], a["gt_max_assign_all"],
                                    a["match_low_quality"])
    return sample_rois(proposals, assigned, gt_bboxes, gt_labels, int(s["num"]), float(s["pos_fraction"]),
                       float(s["neg_pos_ub"]), bool(s["add_gt_as_proposals"]), generator)
