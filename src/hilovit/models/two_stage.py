"""Mask R-CNN (He et al., 2017) on LITv2 and Swin backbones, exact to the official COCO models.

:class:`MaskRCNN` is mmdet 3.2's two-stage detector as the official LITv2 detection code builds it: a
:class:`~hilovit.models.det_preprocessor.DetDataPreprocessor`, a backbone giving four maps at strides
4-32, an :class:`~hilovit.models.heads.fpn.FPN` neck (five levels, the fifth a stride-2 max-pool), a
:class:`~hilovit.models.heads.rpn_head.RPNHead` proposing boxes, and a
:class:`~hilovit.models.heads.roi_heads.RoIHead` (``StandardRoIHead``: RoIAlign, the two-fc box head,
the FCN mask head). Its state dict is an mmdet checkpoint's (``backbone.*``, ``neck.*``, ``rpn_head.*``,
``roi_head.bbox_head.*``, ``roi_head.mask_head.*``), so the official ``.pth`` files load strictly.

Prediction, per image: RPN proposals (per level top 1000, NMS 0.7 within each level, 1000 kept), the
box head on every proposal (softmax, class-specific decoding, NMS 0.5 per class, 100 kept) in the
network input's pixels, the mask head on the detections, masks pasted into the original image and
boxes divided by the test-time scale factor. Training: the RPN's sampled sigmoid cross-entropy + L1,
proposals from the training ``rpn_proposal`` settings, RoIs assigned and sampled (ground truths added),
softmax cross-entropy + L1 on them and per-class mask BCE on the positives.

:func:`build_mask_rcnn` takes the ``model`` dict of an official config (``type='MaskRCNN'``;
:func:`hilovit.models.detector.build_detector` dispatches to it); registry entries at the bottom.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.models._api import update_pretrained_cfg
from hilovit.models.det_preprocessor import DetDataPreprocessor
from hilovit.models.detection_base import (
    BaseDetector,
    Result,
    build_body,
    build_part,
    check_targets,
    coco_weights,
    create_detector,
    litv2_backbone,
    load_backbone_init,
)
from hilovit.models.heads.anchor_head import check_test_cfg
from hilovit.models.heads.fpn import FPN
from hilovit.models.heads.roi_heads import RoIHead
from hilovit.models.heads.rpn_head import RPNHead
from hilovit.models.pretrained import register_weights
from hilovit.models.registry import register_model
from hilovit.models.segmentation import _split_type

__all__ = ["MaskRCNN", "build_mask_rcnn"]


def _check_masks(targets: Sequence[Mapping[str, Any]], batch_hw: Tuple[int, int], device) -> List[torch.Tensor]:
    """Per image the ground-truth masks ``(N, Hp, Wp)`` uint8, zero-padded to the batch (mmdet's
    ``pad_mask=True``); an image without boxes may leave ``masks`` out."""
    H, W = batch_hw
    out = []
    for i, t in enumerate(targets):
        n, m = t["boxes"].shape[0], t.get("masks")
        if m is None:
            if n:
                raise ValueError(f"targets[{i}] has {n} boxes but no 'masks'; Mask R-CNN needs a (N, H, W) "
                                 f"bool/uint8 mask per box")
            m = torch.zeros((0, H, W), dtype=torch.uint8)
        if not isinstance(m, torch.Tensor) or m.dim() != 3 or m.shape[0] != n or m.dtype not in (torch.bool,
                                                                                                  torch.uint8):
            raise ValueError(f"targets[{i}]['masks'] must be a bool/uint8 ({n}, H, W) tensor (one per box), got "
                             f"{getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}")
        if m.shape[1] > H or m.shape[2] > W:
            raise ValueError(f"targets[{i}]['masks'] are {tuple(m.shape[1:])}, larger than the padded batch {(H, W)}")
        out.append(F.pad(m.to(device=device, dtype=torch.uint8), (0, W - m.shape[2], 0, H - m.shape[1])))
    return out


class MaskRCNN(BaseDetector):
    r"""Mask R-CNN: preprocessor -> backbone -> FPN -> RPN -> RoI heads (mmdet 3.2 ``MaskRCNN``).

    Args:
        data_preprocessor: a :class:`DetDataPreprocessor`; backbone: a module returning NCHW maps;
        neck: an :class:`FPN`; rpn_head: an :class:`RPNHead` (its ``train_cfg`` = ``train_cfg.rpn``,
        ``test_cfg`` = ``test_cfg.rpn``); roi_head: a :class:`RoIHead` (``rcnn`` settings).
        proposal_cfg: the RPN's proposal settings during training (``train_cfg.rpn_proposal``; default
            the RPN's test settings).
        test_scale: the default test-time resize of :meth:`predict` (official ``(1333, 800)``) or None.

    Entry points:
        ``forward(inputs)``: a preprocessed ``(B, C, H, W)`` batch -> ``(rpn_cls_scores, rpn_bbox_preds)``,
        per FPN level ``(B, A, h, w)`` objectness logits and ``(B, A * 4, h, w)`` deltas (traceable).
        ``hilovit export`` writes two graphs (:mod:`hilovit.tasks.detection_export`): the network (these
        maps and the FPN maps the RoI extractors read) and the box and mask heads on RoI features; the
        proposal selection, NMS, RoIAlign and the mask paste depend on the data and stay in PyTorch
        (``mask_rcnn_from_onnx``: ``roi_head.predict`` with the heads graph as its ``heads``).
        :meth:`predict`: uint8 images -> detections with masks; :meth:`predict_batch`: a preprocessed
        batch + metainfo -> detections; :meth:`loss`.

    Example::

        >>> model = hilovit.create_model("mask_rcnn_litv2_nano").eval()
        >>> out = model.predict([torch.randint(0, 256, (1, 128, 128), dtype=torch.uint8)])
        >>> sorted(out[0])
        ['boxes', 'labels', 'masks', 'scores']
    """

    def __init__(self, data_preprocessor: DetDataPreprocessor, backbone: nn.Module, neck: FPN, rpn_head: RPNHead,
                 roi_head: RoIHead, proposal_cfg: Optional[Mapping[str, Any]] = None,
                 test_scale: Optional[Tuple[int, int]] = (1333, 800)):
        super().__init__(data_preprocessor, backbone, neck, roi_head.bbox_head.num_classes, test_scale)
        self.rpn_head = rpn_head
        self.roi_head = roi_head
        self.proposal_cfg = check_test_cfg(proposal_cfg, "train_cfg rpn_proposal")
        update_pretrained_cfg(self, classifier="roi_head.bbox_head.fc_cls")

    # ------------------------------------------------------------------ dense outputs
    def forward_dense(self, inputs: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        return self.rpn_head(self.extract_feat(inputs))

    def forward_dummy(self, inputs: torch.Tensor, num_rois: int = 1000, num_mask_rois: int = 100,
                      seed: int = 0) -> Tuple[List[torch.Tensor], List[torch.Tensor], torch.Tensor, torch.Tensor,
                                              torch.Tensor]:
        """The whole network at a fixed amount of RoI work, for timing (mmdet's ``forward_dummy``): the RPN maps,
        then ``num_rois`` boxes through the box head and the first ``num_mask_rois`` through the mask head, on
        the first image. The boxes are drawn (seeded) over the image with sides of 8 to half the image, so the
        RoIAlign work resembles real proposals'; no NMS. Returns ``(rpn_cls_scores, rpn_bbox_preds, cls_score,
        bbox_pred, mask_logits)`` (``mask_logits`` empty without a mask head)."""
        feats = self.extract_feat(inputs)
        cls_scores, bbox_preds = self.rpn_head(feats)
        H, W = inputs.shape[-2:]
        gen = torch.Generator().manual_seed(seed)
        side = torch.rand(num_rois, 2, generator=gen) * (torch.tensor([W, H]) / 2 - 8) + 8
        corner = torch.rand(num_rois, 2, generator=gen) * (torch.tensor([W, H]) - side)
        rois = torch.cat([torch.zeros(num_rois, 1), corner, corner + side], 1).to(inputs.device, inputs.dtype)
        box = self.roi_head.bbox_forward(feats, rois)
        masks = inputs.new_zeros(0)
        if self.roi_head.with_mask:
            masks = self.roi_head.mask_forward(feats, rois[:num_mask_rois])["mask_preds"]
        return cls_scores, bbox_preds, box["cls_score"], box["bbox_pred"], masks

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_batch(self, inputs: torch.Tensor, metainfo: Sequence[Mapping[str, Any]],
                      rescale: bool = True) -> List[Result]:
        """Detections of a preprocessed batch (mmdet's ``TwoStageDetector.predict``): ``metainfo`` one dict
        per image with ``img_shape`` (its unpadded size in the batch), ``scale_factor`` ``(w, h)`` and
        ``ori_shape``. Per image ``{'boxes' (N, 4), 'scores' (N,), 'labels' (N,) int64, 'masks' (N, H, W)
        bool}``: with ``rescale`` boxes in ``ori_shape`` pixels (``/ scale_factor``, not clipped) and masks
        of ``ori_shape``; otherwise boxes in ``img_shape`` pixels and masks of ``ori_shape * scale_factor``
        (rounded)."""
        if len(metainfo) != inputs.shape[0]:
            raise ValueError(f"metainfo has {len(metainfo)} entries for a batch of {inputs.shape[0]}")
        feats = self.extract_feat(inputs)
        cls_scores, bbox_preds = self.rpn_head(feats)
        proposals = self.rpn_head.predict_by_feat(cls_scores, bbox_preds, metainfo)
        return self.roi_head.predict(feats, [p["boxes"] for p in proposals], metainfo, rescale=rescale)

    # ------------------------------------------------------------------ training
    def loss(self, inputs: torch.Tensor, targets: Sequence[Mapping[str, Any]],
             generator: Optional[torch.Generator] = None,
             proposals: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Training losses of a preprocessed batch (mmdet 3.2 ``TwoStageDetector.loss``): ``loss_rpn_cls``,
        ``loss_rpn_bbox`` (the RPN on its sampled anchors), ``loss_cls``, ``loss_bbox`` (the box head on the
        sampled RoIs) and ``loss_mask`` (with a mask head).

        ``targets``: per image ``boxes`` ``(N, 4)`` in the batch's pixels, ``labels`` ``(N,)`` in
        ``[0, num_classes)``, ``img_shape``, and ``masks`` bool/uint8 ``(N, h, w)`` in the same pixels (the
        image's own or the padded size; zero-padded to the batch). ``N = 0`` is fine.
        ``generator``: the samplers' random source; by default a ``torch.Generator`` seeded from the
        global torch generator, so that ``torch.manual_seed`` makes a run reproducible.
        ``proposals``: per image ``(N_i, 4)`` boxes for the R-CNN stage instead of the RPN's (precomputed
        proposals, as mmdet takes them from the data; the RPN losses are computed all the same).
        """
        self._check_inputs(inputs)
        targets = check_targets(targets, inputs.shape[0], self.num_classes)
        if self.rpn_head.train_cfg is None or self.roi_head.train_cfg is None:
            raise ValueError("this MaskRCNN has no train_cfg (rpn and rcnn); build it with one to compute losses")
        masks = _check_masks(targets, tuple(inputs.shape[-2:]), inputs.device) if self.roi_head.with_mask else None
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        feats = self.extract_feat(inputs)
        cls_scores, bbox_preds = self.rpn_head(feats)
        losses = self.rpn_head.loss_by_feat(cls_scores, bbox_preds, targets, self.data_preprocessor.pad_size_divisor,
                                            generator)
        if proposals is None:
            metas = [{"img_shape": t["img_shape"]} for t in targets]
            found = self.rpn_head.predict_by_feat(cls_scores, bbox_preds, metas, cfg=self.proposal_cfg)
            proposals = [p["boxes"] for p in found]
        elif len(proposals) != len(targets) or any(not isinstance(p, torch.Tensor) or p.dim() != 2 or p.shape[1] != 4
                                                   for p in proposals):
            raise ValueError(f"proposals must be one (N, 4) tensor per image ({len(targets)}), got "
                             f"{[tuple(getattr(p, 'shape', ())) for p in proposals]}")
        samples = self.roi_head.sample(list(proposals), targets, generator)
        roi_losses = self.roi_head.loss(feats, samples, masks)
        losses.update({k: v for k, v in roi_losses.items() if k.startswith("loss")})
        return losses

    # ------------------------------------------------------------------ bookkeeping
    def flops(self, img_size: Union[int, Tuple[int, int], None] = None, breakdown: bool = False):
        """FLOPs for one ``(C, H, W)`` input (default ``pretrained_cfg['input_size']``, the COCO models'
        ``(1280, 800)``), LITv2 backbones: the official ``get_flops`` rules (mmcv hooks + the script's
        attention terms) on the backbone, FPN and RPN head, plus the RoI heads as the mmdet 2.x count behind
        the README ran them (1000 RoIs through the box head, 100 through the mask head; RoIAlign, proposal
        selection, NMS and the mask paste are not counted). The official script itself cannot run Mask
        R-CNN at the official commit. ``mask_rcnn_litv2_s``: 261,357,811,700 (README 261 G), of which
        67,378,713,600 are the RoI heads (``breakdown=True`` lists the parts; the real cost of the RoI
        heads depends on the proposals and detections). See :mod:`hilovit.models.detection_flops`."""
        from hilovit.models.detection_flops import official_flops
        from hilovit.models.segmentation import _pair

        if img_size is None:
            img_size = tuple(self.pretrained_cfg.get("input_size", (3, 1280, 800))[1:])
        counts = official_flops(self, _pair(img_size, "img_size"))
        return counts if breakdown else counts["total"]

    def param_count_by_part(self) -> Dict[str, int]:
        """Parameters of ``backbone``, ``neck``, ``rpn_head`` and ``roi_head``."""
        return {name: sum(p.numel() for p in getattr(self, name).parameters())
                for name in ("backbone", "neck", "rpn_head", "roi_head")}


# ---------------------------------------------------------------------------- config dicts
_TOP_KEYS = ["data_preprocessor", "backbone", "neck", "rpn_head", "roi_head", "train_cfg", "test_cfg", "init_cfg",
             "pretrained"]


def _stage_cfgs(cfg: Any, what: str, keys: Sequence[str]) -> Dict[str, Any]:
    if cfg is None:
        return {}
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{what} must be a dict with {list(keys)}, got {type(cfg).__name__}")
    unknown = sorted(set(cfg) - set(keys))
    if unknown:
        raise ValueError(f"{what} has unknown keys {unknown}; expected {list(keys)}")
    return dict(cfg)


def _check_fit(neck: FPN, rpn: RPNHead, roi: RoIHead) -> None:
    if rpn.in_channels != neck.out_channels or rpn.prior_generator.num_levels != neck.num_outs:
        raise ValueError(f"rpn_head (in_channels {rpn.in_channels}, {rpn.prior_generator.num_levels} anchor strides) "
                         f"does not fit the neck ({neck.num_outs} outputs of {neck.out_channels} channels)")
    extractors = [("bbox_roi_extractor", roi.bbox_roi_extractor)]
    if roi.with_mask and not roi.share_roi_extractor:
        extractors.append(("mask_roi_extractor", roi.mask_roi_extractor))
    anchor_strides = [s[0] for s in rpn.prior_generator.strides]
    for name, ext in extractors:
        if ext.out_channels != neck.out_channels or ext.featmap_strides != anchor_strides[: ext.num_inputs]:
            raise ValueError(f"roi_head {name} (out_channels {ext.out_channels}, featmap_strides "
                             f"{ext.featmap_strides}) does not fit the neck ({neck.out_channels} channels at strides "
                             f"{anchor_strides})")
    if roi.bbox_head.in_channels != roi.bbox_roi_extractor.out_channels:
        raise ValueError(f"roi_head bbox_head in_channels {roi.bbox_head.in_channels} != bbox_roi_extractor "
                         f"out_channels {roi.bbox_roi_extractor.out_channels}")
    if roi.with_mask and (roi.mask_head.in_channels != roi.mask_roi_extractor.out_channels
                          or roi.mask_head.num_classes != roi.bbox_head.num_classes):
        raise ValueError(f"roi_head mask_head (in_channels {roi.mask_head.in_channels}, num_classes "
                         f"{roi.mask_head.num_classes}) does not fit its extractor "
                         f"({roi.mask_roi_extractor.out_channels} channels) or the bbox_head "
                         f"({roi.bbox_head.num_classes} classes)")


def _build_from_top(top: Dict[str, Any]) -> MaskRCNN:
    pre, backbone, neck, bb_init = build_body(top, "MaskRCNN", _TOP_KEYS)
    for key in ("rpn_head", "roi_head"):
        if top.get(key) is None:
            raise ValueError(f"model (type='MaskRCNN') needs a {key!r} dict")
    train = _stage_cfgs(top.get("train_cfg"), "train_cfg", ["rpn", "rpn_proposal", "rcnn"])
    test = _stage_cfgs(top.get("test_cfg"), "test_cfg", ["rpn", "rcnn"])
    rpn_cfg = dict(top["rpn_head"], train_cfg=train.get("rpn"), test_cfg=test.get("rpn"))
    _, rpn, _ = build_part(rpn_cfg, "rpn_head", {"RPNHead": RPNHead})
    roi_cfg = dict(top["roi_head"], train_cfg=train.get("rcnn"), test_cfg=test.get("rcnn"))
    _, roi, _ = build_part(roi_cfg, "roi_head", {"StandardRoIHead": RoIHead})
    _check_fit(neck, rpn, roi)
    model = MaskRCNN(pre, backbone, neck, rpn, roi, proposal_cfg=train.get("rpn_proposal", test.get("rpn")))
    load_backbone_init(model, top, bb_init)
    return model


def build_mask_rcnn(cfg: Mapping[str, Any]) -> MaskRCNN:
    """A :class:`MaskRCNN` from the ``model`` dict of an official mmdet config (``type='MaskRCNN'`` given or
    left out): ``data_preprocessor``, ``backbone`` (``LITv2`` / ``SwinTransformer``), ``neck`` (``FPN``),
    ``rpn_head`` (``RPNHead``), ``roi_head`` (``StandardRoIHead`` with ``bbox_roi_extractor``,
    ``bbox_head``, ``mask_roi_extractor``, ``mask_head``), ``train_cfg`` (``rpn``, ``rpn_proposal``,
    ``rcnn``), ``test_cfg`` (``rpn``, ``rcnn``), ``init_cfg`` / ``backbone.init_cfg`` (checkpoints loaded
    non-strictly). Unknown keys, unsupported types and parts that do not fit each other raise errors
    naming them. The config is kept as ``model.config``."""
    if isinstance(cfg, Mapping) and "type" not in cfg:
        cfg = dict(cfg, type="MaskRCNN")
    _, top = _split_type(cfg, "model", ["MaskRCNN"])
    model = _build_from_top(copy.deepcopy(top))
    model.config = copy.deepcopy(dict(cfg))
    return model


# ---------------------------------------------------------------------------- registry
_PREPROCESS = dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                   bgr_to_rgb=True, pad_mask=True, pad_size_divisor=32)


def _rpn_train(num: int = 256) -> Dict[str, Any]:
    return dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                              match_low_quality=True, ignore_iof_thr=-1),
                sampler=dict(type="RandomSampler", num=num, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
                allowed_border=-1, pos_weight=-1, debug=False)


def _proposals(nms_pre: int, max_per_img: int) -> Dict[str, Any]:
    return dict(nms_pre=nms_pre, max_per_img=max_per_img, nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0)


def _mask_rcnn_config(backbone: Dict[str, Any], in_channels: List[int], out_channels: int = 256, num_outs: int = 5,
                      num_classes: int = 80, fc_channels: int = 1024, mask_channels: int = 256,
                      anchors: Optional[Dict[str, Any]] = None, preprocess: Optional[Dict[str, Any]] = None,
                      rcnn_num: int = 512, proposals: Tuple[int, int, int, int] = (2000, 1000, 1000, 1000)):
    """The official (resolved) ``mask_rcnn_fpn.py`` model dict (mmdet 3.x) around ``backbone``;
    ``proposals``: the RPN's ``nms_pre`` / ``max_per_img`` in training, then in testing."""
    anchors = anchors or dict(scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])
    strides = anchors["strides"][:4]
    extractor = dict(type="SingleRoIExtractor", out_channels=out_channels, featmap_strides=strides)
    return dict(
        type="MaskRCNN",
        data_preprocessor=copy.deepcopy(preprocess or _PREPROCESS),
        backbone=backbone,
        neck=dict(type="FPN", in_channels=in_channels, out_channels=out_channels, num_outs=num_outs),
        rpn_head=dict(type="RPNHead", in_channels=out_channels, feat_channels=out_channels,
                      anchor_generator=dict(type="AnchorGenerator", **anchors),
                      bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                      loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
                      loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        roi_head=dict(
            type="StandardRoIHead",
            bbox_roi_extractor=dict(extractor, roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0)),
            bbox_head=dict(type="Shared2FCBBoxHead", in_channels=out_channels, fc_out_channels=fc_channels,
                           roi_feat_size=7, num_classes=num_classes,
                           bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                                           target_stds=[0.1, 0.1, 0.2, 0.2]),
                           reg_class_agnostic=False,
                           loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                           loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
            mask_roi_extractor=dict(extractor, roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0)),
            mask_head=dict(type="FCNMaskHead", num_convs=4, in_channels=out_channels, conv_out_channels=mask_channels,
                           num_classes=num_classes,
                           loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0))),
        train_cfg=dict(
            rpn=_rpn_train(),
            rpn_proposal=_proposals(proposals[0], proposals[1]),
            rcnn=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                    match_low_quality=True, ignore_iof_thr=-1),
                      sampler=dict(type="RandomSampler", num=rcnn_num, pos_fraction=0.25, neg_pos_ub=-1,
                                   add_gt_as_proposals=True),
                      mask_size=28, pos_weight=-1, debug=False)),
        test_cfg=dict(rpn=_proposals(proposals[2], proposals[3]),
                      rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100,
                                mask_thr_binary=0.5)),
    )


def _create(config: Dict[str, Any], cfg_overrides: Dict[str, Any], **kwargs) -> MaskRCNN:
    cfg_overrides = dict(dict(classifier="roi_head.bbox_head.fc_cls", task="detection", mask_ap=None), **cfg_overrides)
    return create_detector(config, cfg_overrides, build_mask_rcnn, ["rpn_head", "roi_head"],
                           [["roi_head", "bbox_head"], ["roi_head", "mask_head"]], **kwargs)


def _litv2(size: str, ws4: bool = False) -> Dict[str, Any]:
    backbone = litv2_backbone(size, ws4)
    return _mask_rcnn_config(backbone, [backbone["embed_dim"] * 2**i for i in range(4)])


@register_model(task="detection")
def mask_rcnn_litv2_s(**kwargs) -> MaskRCNN:
    """LITv2-S Mask R-CNN, COCO 1x (official ``mask_rcnn_litv2_s_fpn_1x_coco``): 47,350,056 parameters,
    44.9 box AP, 40.8 mask AP (official README: 261 GFLOPs)."""
    return _create(_litv2("s"), {}, **kwargs)


@register_model(task="detection")
def mask_rcnn_litv2_m(**kwargs) -> MaskRCNN:
    """LITv2-M Mask R-CNN, COCO 1x: 68,336,424 parameters, 46.8 box AP, 42.3 mask AP (README: 367 GFLOPs)."""
    return _create(_litv2("m"), {}, **kwargs)


@register_model(task="detection")
def mask_rcnn_litv2_b(**kwargs) -> MaskRCNN:
    """LITv2-B Mask R-CNN, COCO 1x: 105,894,024 parameters, 47.3 box AP, 42.6 mask AP (README: 500 GFLOPs;
    the official config trains with activation checkpointing, ``use_checkpoint=True``)."""
    return _create(_litv2("b"), {}, **kwargs)


@register_model(task="detection")
def mask_rcnn_litv2_s_ws4(**kwargs) -> MaskRCNN:
    """LITv2-S Mask R-CNN with HiLo window 4 in stage 3 (``mask_rcnn_litv2_s_fpn_1x_coco_ws_4``): 44.7 box AP,
    40.7 mask AP (README: 249 GFLOPs)."""
    return _create(_litv2("s", ws4=True), {}, **kwargs)


@register_model(task="detection")
def mask_rcnn_litv2_m_ws4(**kwargs) -> MaskRCNN:
    """LITv2-M Mask R-CNN, HiLo window 4: 46.5 box AP, 42.0 mask AP (README: 315 GFLOPs)."""
    return _create(_litv2("m", ws4=True), {}, **kwargs)


@register_model(task="detection")
def mask_rcnn_litv2_b_ws4(**kwargs) -> MaskRCNN:
    """LITv2-B Mask R-CNN, HiLo window 4: 46.8 box AP, 42.3 mask AP (README: 449 GFLOPs)."""
    return _create(_litv2("b", ws4=True), {}, **kwargs)


@register_model(task="detection")
def mask_rcnn_swin_t(**kwargs) -> MaskRCNN:
    """Swin-T Mask R-CNN with the LITv2 recipe (for comparison; no published checkpoint): the Swin
    dense-prediction backbone (norms on its four outputs, strides 4-32) under the same FPN, RPN and RoI
    heads as ``mask_rcnn_litv2_s``."""
    backbone = dict(type="SwinTransformer", embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                    window_size=7, mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                    drop_path_rate=0.2, ape=False, patch_norm=True, out_indices=[0, 1, 2, 3], use_checkpoint=False)
    return _create(_mask_rcnn_config(backbone, [96, 192, 384, 768]), {}, **kwargs)


@register_model(task="detection")
def mask_rcnn_litv2_nano(**kwargs) -> MaskRCNN:
    """A small LITv2 Mask R-CNN for 128 x 128 grey scenes of garments 20-60 pixels wide (``fashion-scenes``).

    Backbone as ``retinanet_litv2_nano`` (``embed_dim=32``, ``depths=[1, 1, 2, 1]``, ``num_heads=[1, 2, 4,
    8]``, alpha 0.9, ``local_ws=[0, 0, 2, 1]``, drop path 0.1, ``in_chans=1``, mean and std 127.5 on the
    0-255 scale). FPN 64 channels on all four stages, no extra level: strides 4, 8, 16, 32 (maps of 32, 16,
    8 and 4 cells on a 128 scene; a fifth level would be 2 x 2 and hold no anchor that fits a garment).
    RPN 64 channels, anchors ``scales=[4]`` with ratios 0.5 / 1 / 2 at those strides: square sides 16, 32,
    64 and 128 pixels, so that every 20-60 pixel garment has an anchor of IoU >= 0.5 on a nearby level
    (the official scale 8 would start at 32 pixels). RoIs: the official mapping (``finest_scale`` 56) sends
    every box below 112 pixels to the stride-4 map, where a 20-pixel garment still spans 5 cells of the 7 x 7
    RoIAlign grid. Box head fc 256, mask head 4 convs of 64. Two to five garments per scene need far fewer
    RoIs than COCO: 200 training proposals (from the top 300 per level), 64 sampled RoIs per image, 100 test
    proposals (from the top 300 per level); a training step of 16 scenes took 2.2 s against 7.0 s with 500 /
    256 / 300 (one thread, on a loaded machine). 10 classes, no test-time resize, no pretrained weights.
    """
    from hilovit.data.idx import FASHION_MNIST_CLASSES

    backbone = dict(type="LITv2", in_chans=1, embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                    drop_path_rate=0.1, alpha=0.9, local_ws=[0, 0, 2, 1], out_indices=[0, 1, 2, 3])
    preprocess = dict(type="DetDataPreprocessor", mean=[127.5], std=[127.5], bgr_to_rgb=False, pad_mask=True,
                      pad_size_divisor=32)
    config = _mask_rcnn_config(backbone, [32, 64, 128, 256], out_channels=64, num_outs=4, num_classes=10,
                               fc_channels=256, mask_channels=64, preprocess=preprocess,
                               anchors=dict(scales=[4], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32]),
                               rcnn_num=64, proposals=(300, 200, 300, 100))
    return _create(config, dict(input_size=(1, 128, 128), test_scale=None, dataset="fashion-scenes",
                                class_names=tuple(FASHION_MNIST_CLASSES)), **kwargs)


# --------------------------------------------------------------------------- published weights
# The official COCO 1x models (ziplab/LITv2 detection/README.md, release v1.0): box and mask AP on COCO val2017.
register_weights(*(coco_weights("mask_rcnn", size, ws4, box_ap=box, mask_ap=mask) for size, ws4, box, mask in (
    ("s", False, 44.9, 40.8),
    ("m", False, 46.8, 42.3),
    ("b", False, 47.3, 42.6),
    ("s", True, 44.7, 40.7),
    ("m", True, 46.5, 42.0),
    ("b", True, 46.8, 42.3),
)))
