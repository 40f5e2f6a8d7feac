"""RetinaNet's head (Lin et al., "Focal Loss for Dense Object Detection", 2017), as mmdet 3.x's ``RetinaHead``.

On every FPN level (shared weights): two towers of ``stacked_convs`` 3x3 ``ConvModule`` + ReLU
(``cls_convs``, ``reg_convs``), then 3x3 convolutions to ``A * num_classes`` logits
(``retina_cls``) and ``A * 4`` box deltas (``retina_reg``), ``A`` anchors per position. Anchors,
decoding, post-processing and the focal / L1 losses are :class:`~hilovit.models.heads.anchor_head.AnchorHead`'s.
"""

from __future__ import annotations

import math
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from hilovit.models.heads.anchor_head import AnchorHead
from hilovit.models.heads.fpn import ConvModule
from hilovit.options import check_int

__all__ = ["RetinaHead"]

_ANCHORS = dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                strides=[8, 16, 32, 64, 128])
_CODER = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4)
_FOCAL = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)


class RetinaHead(AnchorHead):
    r"""RetinaNet head: classification and box towers over every FPN level.

    Args (mmdet's names):
        num_classes: foreground classes; in_channels: of the FPN maps.
        stacked_convs: 3x3 conv + ReLU layers in each tower; feat_channels: their width.
        anchor_generator, bbox_coder, loss_cls, loss_bbox: mmdet config dicts (defaults: RetinaNet's
            9 anchors at strides 8-128, deltas with means 0 and stds 1, focal loss, L1 loss).
        conv_cfg, norm_cfg: only ``None``.
        train_cfg, test_cfg: see :mod:`hilovit.models.heads.anchor_head`.
        init_cfg: accepted (the official initialisation is always applied: normal std 0.01, zero
            biases, classification bias ``-log((1 - 0.01) / 0.01)``).

    Keys: ``cls_convs.{k}.conv.*``, ``reg_convs.{k}.conv.*``, ``retina_cls.*``, ``retina_reg.*``.

    Shape: ``forward([(B, in_channels, h_l, w_l)] * L) -> (cls_scores, bbox_preds)``, lists of
    ``(B, A * num_classes, h_l, w_l)`` and ``(B, A * 4, h_l, w_l)``.
    """

    def __init__(self, num_classes: int, in_channels: int, stacked_convs: int = 4, feat_channels: int = 256,
                 anchor_generator: Optional[Mapping[str, Any]] = None, bbox_coder: Optional[Mapping[str, Any]] = None,
                 loss_cls: Optional[Mapping[str, Any]] = None, loss_bbox: Optional[Mapping[str, Any]] = None,
                 conv_cfg: Optional[Mapping[str, Any]] = None, norm_cfg: Optional[Mapping[str, Any]] = None,
                 reg_decoded_bbox: bool = False, train_cfg: Optional[Mapping[str, Any]] = None,
                 test_cfg: Optional[Mapping[str, Any]] = None, init_cfg: Any = None):
        super().__init__(num_classes, anchor_generator or _ANCHORS, bbox_coder or _CODER, loss_cls or _FOCAL,
                         loss_bbox or dict(type="L1Loss", loss_weight=1.0), train_cfg, test_cfg, reg_decoded_bbox)
        self.in_channels = check_int(in_channels, "RetinaHead in_channels", 1)
        self.stacked_convs = check_int(stacked_convs, "RetinaHead stacked_convs", 0)
        self.feat_channels = check_int(feat_channels, "RetinaHead feat_channels", 1)
        for name, cfg in (("conv_cfg", conv_cfg), ("norm_cfg", norm_cfg)):
            if cfg is not None:
                raise ValueError(f"RetinaHead {name}={cfg!r} is not supported; the official configs use None")
        relu = dict(type="ReLU")
        chans = [in_channels] + [feat_channels] * stacked_convs
        self.cls_convs = nn.ModuleList(ConvModule(chans[k], feat_channels, 3, padding=1, act_cfg=relu)
                                       for k in range(stacked_convs))
        self.reg_convs = nn.ModuleList(ConvModule(chans[k], feat_channels, 3, padding=1, act_cfg=relu)
                                       for k in range(stacked_convs))
        A = self.num_base_priors
        self.retina_cls = nn.Conv2d(chans[-1], A * self.cls_out_channels, 3, padding=1)
        self.retina_reg = nn.Conv2d(chans[-1], A * self.bbox_coder.encode_size, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        """The official init: every conv normal(0, 0.01) with zero bias; the classification bias set
        so that each sigmoid starts at 0.01 (``-log(99)``)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.retina_cls.bias, -math.log((1 - 0.01) / 0.01))

    def forward_single(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One level: ``(B, C, h, w) -> ((B, A * num_classes, h, w), (B, A * 4, h, w))``."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)

    def forward(self, feats: Sequence[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        if len(feats) != self.prior_generator.num_levels:
            raise ValueError(f"RetinaHead expected {self.prior_generator.num_levels} maps (one per anchor stride), "
                             f"got {len(feats)}")
        outs = [self.forward_single(x) for x in feats]
        return [o[0] for o in outs], [o[1] for o in outs]
