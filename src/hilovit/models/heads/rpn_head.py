"""The region proposal network head of Faster / Mask R-CNN (Ren et al., 2015), as mmdet 3.x's ``RPNHead``.

On every FPN level (shared weights): ``rpn_conv`` (3x3, then ReLU), ``rpn_cls`` (1x1, one sigmoid
objectness logit per anchor) and ``rpn_reg`` (1x1, four deltas per anchor). Anchors, box coding and the
training targets are :class:`~hilovit.models.heads.anchor_head.AnchorHead`'s; the RPN trains with a
``RandomSampler`` and sigmoid cross-entropy, and its proposals are its own post-processing:

per image and level, the sigmoid scores (no threshold), the top ``nms_pre`` when the level has more
anchors (stable descending sort), their deltas decoded on their anchors and clamped to ``img_shape``;
levels concatenated; boxes of width or height ``<= min_bbox_size`` dropped; NMS *within each level*
(``batched_nms`` with the level as the class) at ``nms.iou_threshold``; the first ``max_per_img`` by
score. Ground-truth labels are ignored (every box is "object").
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.models.heads.anchor_head import AnchorHead, check_test_cfg
from hilovit.models.heads.fpn import ConvModule
from hilovit.ops.nms import batched_nms
from hilovit.options import check_int

__all__ = ["RPNHead"]

_ANCHORS = dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])
_CODER = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4)
_BCE = dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0)


class RPNHead(AnchorHead):
    r"""Region proposals from every FPN level (mmdet 3.x ``RPNHead``).

    Args (mmdet's names):
        in_channels: channels of the FPN maps; feat_channels: width of ``rpn_conv``.
        num_classes: 1 (class-agnostic objectness; any other value is an error, as in mmdet).
        num_convs: 3x3 convolutions before the predictors (1: a plain ``nn.Conv2d`` ``rpn_conv``, then
            ReLU; more: ``rpn_conv.{i}.conv`` ``ConvModule`` + ReLU each, and one more ReLU).
        anchor_generator, bbox_coder: mmdet config dicts (default: the official RPN's 3 anchors of scale
            8 at strides 4-64; deltas with means 0, stds 1).
        loss_cls: ``dict(type='CrossEntropyLoss', use_sigmoid=True)``; loss_bbox: ``dict(type='L1Loss')``.
        train_cfg: MaxIoUAssigner + ``RandomSampler`` (or PseudoSampler), ``allowed_border``,
            ``pos_weight`` (see :func:`~hilovit.models.heads.anchor_head.check_train_cfg`).
        test_cfg: ``nms_pre``, ``max_per_img``, ``nms=dict(type='nms', iou_threshold)``, ``min_bbox_size``.
        init_cfg: accepted (the official initialisation is always applied: every conv normal(0, 0.01),
            zero biases).

    Keys: ``rpn_conv.*``, ``rpn_cls.*``, ``rpn_reg.*``.

    Shape: ``forward([(B, in_channels, h_l, w_l)] * L) -> (cls_scores, bbox_preds)``, lists of
    ``(B, A, h_l, w_l)`` objectness logits and ``(B, A * 4, h_l, w_l)`` deltas (channel ``a * 4 + k``).
    """

    cls_losses = ("CrossEntropyLoss",)
    samplers = ("PseudoSampler", "RandomSampler")

    def __init__(self, in_channels: int, num_classes: int = 1, feat_channels: int = 256, num_convs: int = 1,
                 anchor_generator: Optional[Mapping[str, Any]] = None, bbox_coder: Optional[Mapping[str, Any]] = None,
                 loss_cls: Optional[Mapping[str, Any]] = None, loss_bbox: Optional[Mapping[str, Any]] = None,
                 reg_decoded_bbox: bool = False, train_cfg: Optional[Mapping[str, Any]] = None,
                 test_cfg: Optional[Mapping[str, Any]] = None, init_cfg: Any = None):
        if num_classes != 1:
            raise ValueError(f"RPNHead num_classes must be 1 (objectness), got {num_classes!r}")
        super().__init__(1, anchor_generator or _ANCHORS, bbox_coder or _CODER, loss_cls or _BCE,
                         loss_bbox or dict(type="L1Loss", loss_weight=1.0), train_cfg, test_cfg, reg_decoded_bbox)
        self.in_channels = check_int(in_channels, "RPNHead in_channels", 1)
        self.feat_channels = check_int(feat_channels, "RPNHead feat_channels", 1)
        self.num_convs = check_int(num_convs, "RPNHead num_convs", 1)
        if num_convs == 1:
            self.rpn_conv: nn.Module = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        else:
            self.rpn_conv = nn.Sequential(*(
                ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1,
                           act_cfg=dict(type="ReLU")) for i in range(num_convs)))
        A = self.num_base_priors
        self.rpn_cls = nn.Conv2d(feat_channels, A * self.cls_out_channels, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, A * self.bbox_coder.encode_size, 1)
        self.init_weights()

    def init_weights(self) -> None:
        """The official init (mmdet's ``Normal(layer='Conv2d', std=0.01)``): weights N(0, 0.01²), zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_single(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One level: ``(B, C, h, w) -> ((B, A, h, w), (B, A * 4, h, w))``."""
        x = F.relu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        if len(feats) != self.prior_generator.num_levels:
            raise ValueError(f"RPNHead expected {self.prior_generator.num_levels} maps (one per anchor stride), "
                             f"got {len(feats)}")
        outs = [self.forward_single(x) for x in feats]
        return [o[0] for o in outs], [o[1] for o in outs]

    # ------------------------------------------------------------------ proposals
    def candidates(self, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
                   anchors: Sequence[torch.Tensor], img_shape: Sequence[int],
                   cfg: Optional[Mapping[str, Any]] = None) -> Dict[str, torch.Tensor]:
        """One image's boxes before NMS (mmdet's ``RPNHead._predict_by_feat_single`` up to
        ``_bbox_post_process``): per level the sigmoid scores, the top ``nms_pre`` of the levels that
        have more (stable descending sort), decoded on their anchors and clamped to ``img_shape``.

        Args: per level ``(A, h, w)`` logits, ``(A * 4, h, w)`` deltas, ``(h * w * A, 4)`` anchors;
        ``cfg``: a test_cfg-like dict (default ``self.test_cfg``).
        Returns: ``{'boxes' (K, 4), 'scores' (K,), 'level_ids' (K,) int64}``.
        """
        cfg = self._cfg(cfg)
        nms_pre = cfg["nms_pre"]
        boxes, scores, levels = [], [], []
        for lvl, (cls, reg, anc) in enumerate(zip(cls_scores, bbox_preds, anchors)):
            s = cls.permute(1, 2, 0).reshape(-1).sigmoid()
            d = reg.permute(1, 2, 0).reshape(-1, self.bbox_coder.encode_size)
            if 0 < nms_pre < s.shape[0]:
                s, order = torch.sort(s, descending=True, stable=True)
                s, order = s[:nms_pre], order[:nms_pre]
                d, anc = d[order], anc[order]
            boxes.append(self.bbox_coder.decode(anc, d, max_shape=img_shape))
            scores.append(s)
            levels.append(torch.full((s.shape[0],), lvl, dtype=torch.long, device=s.device))
        return {"boxes": torch.cat(boxes), "scores": torch.cat(scores), "level_ids": torch.cat(levels)}

    def post_process(self, cand: Mapping[str, torch.Tensor], meta: Optional[Mapping[str, Any]] = None,
                     rescale: bool = False, cfg: Optional[Mapping[str, Any]] = None) -> Dict[str, torch.Tensor]:
        """mmdet's ``_bbox_post_process`` for the RPN (always ``rescale=False``): boxes of width or height
        ``<= min_bbox_size`` dropped, NMS within each level, the first ``max_per_img`` by descending score.
        Returns ``{'boxes' (N, 4), 'scores' (N,)}`` in ``img_shape`` pixels."""
        if rescale:
            raise ValueError("RPN proposals stay in the network input's pixels: rescale must be False")
        cfg = self._cfg(cfg)
        boxes, scores, levels = cand["boxes"], cand["scores"], cand["level_ids"]
        if cfg["min_bbox_size"] >= 0:
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            keep = (w > cfg["min_bbox_size"]) & (h > cfg["min_bbox_size"])
            boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        if boxes.shape[0] > 0:
            keep = batched_nms(boxes, scores, levels, cfg["nms"]["iou_threshold"])[: cfg["max_per_img"]]
            boxes, scores = boxes[keep], scores[keep]
        return {"boxes": boxes, "scores": scores}

    def predict_by_feat(self, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
                        metainfo: Sequence[Mapping[str, Any]], rescale: bool = False,
                        cfg: Optional[Mapping[str, Any]] = None) -> List[Dict[str, torch.Tensor]]:
        """Proposals per image from the raw outputs (``(B, A, h, w)``, ``(B, A * 4, h, w)`` per level):
        a list of ``{'boxes' (N, 4), 'scores' (N,)}`` in ``img_shape`` pixels, without gradient.
        ``cfg``: the test settings to use (the training ``rpn_proposal`` ones; default ``self.test_cfg``)."""
        if len(metainfo) != cls_scores[0].shape[0]:
            raise ValueError(f"metainfo has {len(metainfo)} entries for a batch of {cls_scores[0].shape[0]}")
        cfg = self._cfg(cfg)
        dtype = self._work_dtype(cls_scores[0])
        anchors = self.anchors([c.shape[-2:] for c in cls_scores], cls_scores[0].device, dtype)
        results = []
        for i, meta in enumerate(metainfo):
            cand = self.candidates([c[i].detach().to(dtype) for c in cls_scores],
                                   [b[i].detach().to(dtype) for b in bbox_preds], anchors, meta["img_shape"], cfg)
            results.append(self.post_process(cand, meta, rescale, cfg))
        return results

    def _cfg(self, cfg: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
        return self._require_test_cfg() if cfg is None else check_test_cfg(cfg, "cfg")

    # ------------------------------------------------------------------ training
    def loss_by_feat(self, cls_scores: Sequence[torch.Tensor], bbox_preds: Sequence[torch.Tensor],
                     targets: Sequence[Mapping[str, Any]], pad_size_divisor: int = 1,
                     generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
        """``{'loss_rpn_cls', 'loss_rpn_bbox'}``: :meth:`AnchorHead.loss_by_feat` with every ground-truth
        box labelled "object" (class 0), as mmdet's two-stage detectors do before the RPN loss. With the
        official ``RandomSampler`` (256 anchors per image, half positive at most) both terms are divided by
        the number of sampled anchors."""
        rpn_targets = [dict(t, labels=torch.zeros_like(t["labels"])) for t in targets]
        losses = super().loss_by_feat(cls_scores, bbox_preds, rpn_targets, pad_size_divisor, generator)
        return {"loss_rpn_cls": losses["loss_cls"], "loss_rpn_bbox": losses["loss_bbox"]}
