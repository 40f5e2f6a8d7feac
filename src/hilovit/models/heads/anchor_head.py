"""The anchor-based dense head machinery of mmdet 3.x (``AnchorHead`` + ``BaseDenseHead``), without layers.

:class:`AnchorHead` owns an :class:`~hilovit.ops.anchors.AnchorGenerator`, a
:class:`~hilovit.ops.boxes.DeltaXYWHBBoxCoder`, the test-time post-processing and the training
targets and losses. A subclass adds the convolutions and ``forward(feats) -> (cls_scores,
bbox_preds)``, per level ``(B, A * C, h, w)`` logits and ``(B, A * 4, h, w)`` deltas, channel
``a * C + c`` for anchor ``a`` and class ``c`` (see :class:`~hilovit.models.heads.retina_head.RetinaHead`).

Per-image metainfo dicts (as the data preprocessor makes them) carry ``img_shape`` ``(h, w)``: the
unpadded image in the batch, which clamps decoded boxes; ``ori_shape`` ``(h, w)``: the image before
any test-time resize; ``scale_factor`` ``(w_scale, h_scale)``: ``img_shape / ori_shape``;
``pad_shape``: ``img_shape`` rounded up to the padding divisor (anchors beyond it do not train).
Ground-truth dicts carry ``boxes`` ``(N, 4)`` x1 y1 x2 y2 in the batch's pixels, ``labels`` ``(N,)``
and the same ``img_shape`` (and optionally ``pad_shape``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from hilovit.models.heads.losses import check_loss_cfg, l1_loss, sigmoid_bce_loss, sigmoid_focal_loss
from hilovit.models.heads.roi_targets import random_sample
from hilovit.ops.anchors import AnchorGenerator
from hilovit.ops.assign import max_iou_assign
from hilovit.ops.boxes import DeltaXYWHBBoxCoder, bbox_overlaps, scale_boxes
from hilovit.ops.nms import batched_nms
from hilovit.options import check_int, check_number

__all__ = ["AnchorHead", "check_test_cfg", "check_train_cfg", "filter_scores_and_topk"]

_TEST_KEYS = {"nms_pre", "min_bbox_size", "score_thr", "nms", "max_per_img"}
_ASSIGNER_KEYS = {"type", "pos_iou_thr", "neg_iou_thr", "min_pos_iou", "ignore_iof_thr", "gt_max_assign_all",
                  "match_low_quality", "iou_calculator", "gpu_assign_thr", "ignore_wrt_candidates"}


def _type_args(cfg: Any, what: str, allowed: Sequence[str]) -> Dict[str, Any]:
    if not isinstance(cfg, Mapping) or cfg.get("type") not in allowed:
        raise ValueError(f"{what} must be a dict with type in {list(allowed)}, got {cfg!r}")
    return {k: v for k, v in cfg.items() if k != "type"}


def check_test_cfg(cfg: Optional[Mapping[str, Any]], what: str = "test_cfg") -> Optional[Dict[str, Any]]:
    """Validate mmdet's dense-head ``test_cfg`` (``nms_pre``, ``min_bbox_size``, ``score_thr``,
    ``nms=dict(type='nms', iou_threshold=...)``, ``max_per_img``); defaults as mmdet's. ``what``: its name
    in the error messages."""
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{what} must be a dict, got {type(cfg).__name__}")
    extra = set(cfg) - _TEST_KEYS
    if extra:
        raise ValueError(f"{what} has unknown keys {sorted(extra)}; expected {sorted(_TEST_KEYS)}")
    out = dict(nms_pre=-1, min_bbox_size=-1, score_thr=0.0, max_per_img=100)
    out.update(cfg)
    nms = _type_args(out.get("nms"), f"{what} nms", ["nms"])
    if set(nms) - {"iou_threshold"} or not isinstance(nms.get("iou_threshold"), (int, float)):
        raise ValueError(f"{what} nms must be dict(type='nms', iou_threshold=<number>), got {out.get('nms')!r}")
    for key in ("nms_pre", "max_per_img"):
        check_int(out[key], f"{what} {key}")
    for key in ("score_thr", "min_bbox_size"):
        check_number(out[key], f"{what} {key}")
    out["nms"] = dict(out["nms"])
    return out


def check_train_cfg(cfg: Optional[Mapping[str, Any]], samplers: Sequence[str] = ("PseudoSampler",)
                    ) -> Optional[Dict[str, Any]]:
    """Validate mmdet's anchor-head ``train_cfg``: ``MaxIoUAssigner`` (``ignore_iof_thr`` -1 only), a
    sampler among ``samplers`` (``PseudoSampler``: every assigned anchor; ``RandomSampler`` with ``num``,
    ``pos_fraction``, ``neg_pos_ub`` and ``add_gt_as_proposals=False``), ``allowed_border``, ``pos_weight``,
    ``debug``."""
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        raise TypeError(f"train_cfg must be a dict, got {type(cfg).__name__}")
    extra = set(cfg) - {"assigner", "sampler", "allowed_border", "pos_weight", "debug"}
    if extra:
        raise ValueError(f"train_cfg has unknown keys {sorted(extra)}")
    assigner = _type_args(cfg.get("assigner"), "train_cfg assigner", ["MaxIoUAssigner"])
    if set(assigner) - _ASSIGNER_KEYS or "pos_iou_thr" not in assigner or "neg_iou_thr" not in assigner:
        raise ValueError(f"train_cfg assigner needs pos_iou_thr and neg_iou_thr and takes {sorted(_ASSIGNER_KEYS)}, "
                         f"got {cfg.get('assigner')!r}")
    if assigner.get("ignore_iof_thr", -1) > 0:
        raise ValueError("train_cfg assigner ignore_iof_thr > 0 (ignored boxes) is not supported; use -1")
    if assigner.get("iou_calculator", {"type": "BboxOverlaps2D"}).get("type") != "BboxOverlaps2D":
        raise ValueError(f"train_cfg assigner iou_calculator must be BboxOverlaps2D, got "
                         f"{assigner['iou_calculator']!r}")
    sampler = _type_args(cfg.get("sampler", {"type": "PseudoSampler"}), "train_cfg sampler", list(samplers))
    if cfg.get("sampler", {}).get("type") == "RandomSampler":
        if set(sampler) - {"num", "pos_fraction", "neg_pos_ub", "add_gt_as_proposals"} or \
                not {"num", "pos_fraction"} <= set(sampler) or sampler.get("add_gt_as_proposals", False):
            raise ValueError(f"train_cfg sampler RandomSampler needs num and pos_fraction (optional neg_pos_ub; "
                             f"add_gt_as_proposals must be False for anchors), got {cfg['sampler']!r}")
    out = dict(allowed_border=-1, pos_weight=-1, debug=False)
    out.update(cfg)
    out["assigner"] = dict(cfg["assigner"])
    out["sampler"] = dict(cfg.get("sampler", {"type": "PseudoSampler"}))
    return out


def filter_scores_and_topk(scores: torch.Tensor, score_thr: float, topk: int) -> Tuple[torch.Tensor, ...]:
    """mmdet's ``filter_scores_and_topk``: the entries of ``scores`` ``(n, C)`` above ``score_thr``
    (strict), taken row-major, sorted descending (stable), the first ``topk`` (all when ``topk <= 0``).

    Returns ``(scores (k,), rows (k,), labels (k,))``.
    """
    valid = scores > score_thr
    values = scores[valid]
    idx = torch.nonzero(valid)
    values, order = torch.sort(values, descending=True, stable=True)
    k = values.shape[0] if topk <= 0 else min(topk, values.shape[0])
    idx = idx[order[:k]]
    return values[:k], idx[:, 0], idx[:, 1]


class AnchorHead(nn.Module):
    """Anchors, box coding, post-processing and losses of an anchor-based dense head.

    Args:
        num_classes: foreground classes (sigmoid classification: no background channel).
        anchor_generator, bbox_coder: mmdet config dicts (``type='AnchorGenerator'``,
            ``type='DeltaXYWHBBoxCoder'``).
        loss_cls: ``dict(type='FocalLoss', ...)`` (or, where the subclass allows it,
            ``dict(type='CrossEntropyLoss', use_sigmoid=True)``); loss_bbox: ``dict(type='L1Loss', ...)``.
        train_cfg, test_cfg: mmdet's (see :func:`check_train_cfg`, :func:`check_test_cfg`).
    """

    #: the classification losses and the samplers a subclass accepts
    cls_losses: Tuple[str, ...] = ("FocalLoss",)
    samplers: Tuple[str, ...] = ("PseudoSampler",)

    def __init__(self, num_classes: int, anchor_generator: Mapping[str, Any], bbox_coder: Mapping[str, Any],
                 loss_cls: Mapping[str, Any], loss_bbox: Mapping[str, Any], train_cfg: Optional[Mapping] = None,
                 test_cfg: Optional[Mapping] = None, reg_decoded_bbox: bool = False):
        super().__init__()
        check_int(num_classes, "num_classes", minimum=1)
        if reg_decoded_bbox:
            raise ValueError("reg_decoded_bbox=True (IoU-type box losses) is not supported")
        self.num_classes = num_classes
        self.cls_out_channels = num_classes
        self.prior_generator = AnchorGenerator(**_type_args(anchor_generator, "anchor_generator", ["AnchorGenerator"]))
        if len(set(self.prior_generator.num_base_anchors)) != 1:
            raise ValueError("anchor_generator must give every level the same number of anchors")
        self.num_base_priors = self.prior_generator.num_base_anchors[0]
        self.bbox_coder = DeltaXYWHBBoxCoder(**_type_args(bbox_coder, "bbox_coder", ["DeltaXYWHBBoxCoder"]))
        self.loss_cls_cfg = check_loss_cfg(loss_cls, "loss_cls", self.cls_losses)
        self.loss_bbox_cfg = check_loss_cfg(loss_bbox, "loss_bbox", ("L1Loss",))
        self.train_cfg = check_train_cfg(train_cfg, self.samplers)
        self.test_cfg = check_test_cfg(test_cfg)

    # ------------------------------------------------------------------ anchors
    def anchors(self, featmap_sizes: Sequence[Tuple[int, int]], device=None,
                dtype: torch.dtype = torch.float32) -> List[torch.Tensor]:
        """Per level ``(h * w * A, 4)`` anchors for the maps' sizes."""
        sizes = [(int(s[0]), int(s[1])) for s in featmap_sizes]
        return self.prior_generator.grid_priors(sizes, dtype=dtype, device=device or "cpu")

    @staticmethod
    def _work_dtype(t: torch.Tensor) -> torch.dtype:
        return torch.float64 if t.dtype == torch.float64 else torch.float32

    # ------------------------------------------------------------------ inference
    def candidates(self, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
                   anchors: Sequence[torch.Tensor], img_shape: Sequence[int]) -> Dict[str, torch.Tensor]:
        """One image's boxes before NMS (mmdet's ``_predict_by_feat_single`` up to
        ``_bbox_post_process``): per level sigmoid scores ``> score_thr``, the top ``nms_pre``,
        their deltas decoded on their anchors and clamped to ``img_shape``; levels concatenated.

        Args: per level ``(A * C, h, w)`` logits, ``(A * 4, h, w)`` deltas, ``(h * w * A, 4)`` anchors.
        Returns: ``{'boxes' (K, 4), 'scores' (K,), 'labels' (K,) int64}``.
        """
        cfg = self._require_test_cfg()
        boxes, scores, labels = [], [], []
        for cls, reg, anc in zip(cls_scores, bbox_preds, anchors):
            s = cls.permute(1, 2, 0).reshape(-1, self.cls_out_channels).sigmoid()
            d = reg.permute(1, 2, 0).reshape(-1, self.bbox_coder.encode_size)
            sc, rows, lab = filter_scores_and_topk(s, cfg["score_thr"], cfg["nms_pre"])
            boxes.append(self.bbox_coder.decode(anc[rows], d[rows], max_shape=img_shape))
            scores.append(sc)
            labels.append(lab)
        return {"boxes": torch.cat(boxes), "scores": torch.cat(scores), "labels": torch.cat(labels)}

    def post_process(self, cand: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
                     rescale: bool = True) -> Dict[str, torch.Tensor]:
        """mmdet's ``_bbox_post_process``: boxes times ``1 / scale_factor`` (``rescale``), boxes of
        width or height ``<= min_bbox_size`` dropped, class-aware NMS, the first ``max_per_img``."""
        cfg = self._require_test_cfg()
        boxes, scores, labels = cand["boxes"], cand["scores"], cand["labels"]
        if rescale:
            sf = meta.get("scale_factor", (1.0, 1.0))
            boxes = scale_boxes(boxes, [1 / sf[0], 1 / sf[1]])
        if cfg["min_bbox_size"] >= 0:
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            keep = (w > cfg["min_bbox_size"]) & (h > cfg["min_bbox_size"])
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if boxes.numel() > 0:
            keep = batched_nms(boxes, scores, labels, cfg["nms"]["iou_threshold"])[: cfg["max_per_img"]]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        return {"boxes": boxes, "scores": scores, "labels": labels}

    def predict_by_feat(self, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
                        metainfo: Sequence[Mapping[str, Any]], rescale: bool = True) -> List[Dict[str, torch.Tensor]]:
        """Detections per image from the raw head outputs (``(B, A * C, h, w)``, ``(B, A * 4, h, w)``
        per level): a list of ``{'boxes' (N, 4), 'scores' (N,), 'labels' (N,) int64}``, boxes in
        ``ori_shape`` pixels when ``rescale`` (not clipped to it, as mmdet), else in ``img_shape``."""
        if len(metainfo) != cls_scores[0].shape[0]:
            raise ValueError(f"metainfo has {len(metainfo)} entries for a batch of {cls_scores[0].shape[0]}")
        dtype = self._work_dtype(cls_scores[0])
        anchors = self.anchors([c.shape[-2:] for c in cls_scores], cls_scores[0].device, dtype)
        results = []
        for i, meta in enumerate(metainfo):
            cand = self.candidates([c[i].to(dtype) for c in cls_scores], [b[i].to(dtype) for b in bbox_preds],
                                   anchors, meta["img_shape"])
            results.append(self.post_process(cand, meta, rescale))
        return results

    def _require_test_cfg(self) -> Dict[str, Any]:
        if self.test_cfg is None:
            raise ValueError(f"{type(self).__name__} has no test_cfg; build it with one to predict")
        return self.test_cfg

    # ------------------------------------------------------------------ training
    def targets_single(self, anchors: torch.Tensor, valid: torch.Tensor, target: Mapping[str, Any],
                       generator: Optional[torch.Generator] = None):
        """Training targets of one image over all its anchors (levels concatenated): ``labels``
        (``num_classes`` = background), ``label_weights``, ``bbox_targets`` (encoded deltas),
        ``bbox_weights`` and the image's ``avg_factor`` (mmdet's ``SamplingResult.avg_factor``): with
        ``PseudoSampler`` the number of positive anchors, with ``RandomSampler`` the number of sampled
        positives plus sampled negatives (each counted at least 1). ``generator``: the sampler's draws."""
        cfg = self.train_cfg
        gt_boxes = target["boxes"].to(anchors)
        gt_labels = target["labels"].to(device=anchors.device, dtype=torch.long)
        inside = valid
        if cfg["allowed_border"] >= 0:
            h, w = target["img_shape"][:2]
            b = cfg["allowed_border"]
            inside = valid & (anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) & (anchors[:, 2] < w + b) & \
                (anchors[:, 3] < h + b)
        a = anchors[inside]
        ac = cfg["assigner"]
        assigned, _, assigned_labels = max_iou_assign(
            bbox_overlaps(gt_boxes, a), gt_labels, ac["pos_iou_thr"], ac["neg_iou_thr"], ac.get("min_pos_iou", 0.0),
            ac.get("gt_max_assign_all", True), ac.get("match_low_quality", True))
        sampler = cfg["sampler"]
        if sampler["type"] == "RandomSampler":
            pos_i, neg_i = random_sample(assigned, int(sampler["num"]), float(sampler["pos_fraction"]),
                                         float(sampler.get("neg_pos_ub", -1)), generator)
            pos = torch.zeros_like(assigned, dtype=torch.bool).index_fill_(0, pos_i, True)
            neg = torch.zeros_like(assigned, dtype=torch.bool).index_fill_(0, neg_i, True)
            avg_factor = max(int(pos_i.numel()), 1) + max(int(neg_i.numel()), 1)
        else:
            pos, neg = assigned > 0, assigned == 0
            avg_factor = max(int(pos.sum()), 1)
        n_all = anchors.shape[0]
        labels = torch.full((n_all,), self.num_classes, dtype=torch.long, device=anchors.device)
        label_weights = anchors.new_zeros(n_all)
        bbox_targets = anchors.new_zeros(n_all, 4)
        bbox_weights = anchors.new_zeros(n_all, 4)
        idx = torch.nonzero(inside).flatten()
        pos_idx, neg_idx = idx[pos], idx[neg]
        labels[pos_idx] = assigned_labels[pos]
        label_weights[pos_idx] = 1.0 if cfg["pos_weight"] <= 0 else float(cfg["pos_weight"])
        label_weights[neg_idx] = 1.0
        if pos_idx.numel() > 0:
            bbox_targets[pos_idx] = self.bbox_coder.encode(a[pos], gt_boxes[assigned[pos] - 1])
            bbox_weights[pos_idx] = 1.0
        return labels, label_weights, bbox_targets, bbox_weights, avg_factor

    def loss_by_feat(self, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
                     targets: Sequence[Mapping[str, Any]], pad_size_divisor: int = 1,
                     generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """``{'loss_cls', 'loss_bbox'}`` (each summed over levels) as mmdet 3.x's ``AnchorHead``:
        the classification loss (focal, or sigmoid cross-entropy) over the anchors inside each image's
        ``pad_shape`` that are positive or negative (all of them, or those the ``RandomSampler`` draws
        from ``generator``), L1 on the positives' encoded deltas, both divided by ``avg_factor`` = the
        sum over images of :meth:`targets_single`'s ``avg_factor``. ``targets``: per image ``boxes``,
        ``labels``, ``img_shape`` (and ``pad_shape``; default ``img_shape`` rounded up to
        ``pad_size_divisor``)."""
        if self.train_cfg is None:
            raise ValueError(f"{type(self).__name__} has no train_cfg; build it with one to compute losses")
        B = cls_scores[0].shape[0]
        if len(targets) != B:
            raise ValueError(f"targets has {len(targets)} entries for a batch of {B}")
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        device = cls_scores[0].device
        anchors = self.anchors(sizes, device)
        counts = [a.shape[0] for a in anchors]
        flat = torch.cat(anchors)
        per_image = []
        for t in targets:
            pad = t.get("pad_shape") or [-(-int(s) // pad_size_divisor) * pad_size_divisor for s in t["img_shape"][:2]]
            valid = torch.cat(self.prior_generator.valid_flags(sizes, pad, device))
            per_image.append(self.targets_single(flat, valid, t, generator))
        avg_factor = sum(r[4] for r in per_image)
        labels, lw, bt, bw = (torch.stack([r[k] for r in per_image]).split(counts, dim=1) for k in range(4))
        loss_cls = loss_bbox = None
        for lvl, (cls, reg) in enumerate(zip(cls_scores, bbox_preds)):
            logits = cls.float().permute(0, 2, 3, 1).reshape(-1, self.cls_out_channels)
            deltas = reg.float().permute(0, 2, 3, 1).reshape(-1, self.bbox_coder.encode_size)
            if self.loss_cls_cfg["type"] == "FocalLoss":
                lc = sigmoid_focal_loss(logits, labels[lvl].reshape(-1), lw[lvl].reshape(-1),
                                        self.loss_cls_cfg["gamma"], self.loss_cls_cfg["alpha"], avg_factor)
            else:
                lc = sigmoid_bce_loss(logits, labels[lvl].reshape(-1), lw[lvl].reshape(-1), avg_factor)
            lc = lc * self.loss_cls_cfg["loss_weight"]
            lb = l1_loss(deltas, bt[lvl].reshape(-1, 4), bw[lvl].reshape(-1, 4), avg_factor) \
                * self.loss_bbox_cfg["loss_weight"]
            loss_cls = lc if loss_cls is None else loss_cls + lc
            loss_bbox = lb if loss_bbox is None else loss_bbox + lb
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}
