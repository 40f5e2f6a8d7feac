"""Object detection: RetinaNet on LITv2 and Swin backbones, exact to the official COCO models.

:class:`RetinaNet` is mmdet 3.x's detector of the same name as the official LITv2 detection code
builds it: a :class:`~hilovit.models.det_preprocessor.DetDataPreprocessor`, a backbone giving four
maps at strides 4-32 (:class:`~hilovit.models.litv2_backbone.LITv2Backbone`, or the Swin dense-prediction
backbone), an :class:`~hilovit.models.heads.fpn.FPN` neck with stride-2 extra convolutions and a
:class:`~hilovit.models.heads.retina_head.RetinaHead`. Its state dict is an mmdet checkpoint's
(``backbone.*``, ``neck.*``, ``bbox_head.*``; the preprocessor's mean/std are not stored), so the
official ``.pth`` files load with every key checked.

:func:`build_detector` takes the ``model`` dict of an official mmdet config as it stands and
dispatches on its ``type``. Results are one dict per image: ``boxes`` ``(N, 4)`` float32 x1 y1 x2
y2 in that image's pixels, ``scores`` ``(N,)``, ``labels`` ``(N,)`` int64 (a detector with masks adds
``masks`` ``(N, H, W)`` bool). Ground truth for :meth:`RetinaNet.loss` is one dict per image:
``boxes``, ``labels`` and the image's ``img_shape`` in the preprocessed batch (``masks`` for
detectors that learn them).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

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
from hilovit.models.heads.fpn import FPN
from hilovit.models.heads.retina_head import RetinaHead
from hilovit.models.pretrained import register_weights
from hilovit.models.registry import register_model
from hilovit.models.segmentation import _split_type
from hilovit.models.two_stage import build_mask_rcnn

__all__ = ["RetinaNet", "build_detector"]


class RetinaNet(BaseDetector):
    r"""RetinaNet (Lin et al., 2017): preprocessor -> backbone -> FPN -> RetinaHead (mmdet 3.x).

    Args:
        data_preprocessor: a :class:`DetDataPreprocessor`; backbone: a module returning NCHW maps;
        neck: an :class:`FPN`; bbox_head: a :class:`RetinaHead` (its ``test_cfg``/``train_cfg`` set).
        test_scale: the default test-time resize of :meth:`predict`, ``(long, short)`` edges
            (the official ``(1333, 800)``), or None (no resize).

    Entry points:
        ``forward(inputs)``: a preprocessed ``(B, C, H, W)`` batch -> ``(cls_scores, bbox_preds)``,
        per level ``(B, A * num_classes, h, w)`` and ``(B, A * 4, h, w)`` (traceable: no
        data-dependent control flow); :meth:`predict`: uint8 images -> detections;
        :meth:`predict_batch`: a preprocessed batch + metainfo -> detections; :meth:`loss`.

    Example::

        >>> model = hilovit.create_model("retinanet_litv2_nano").eval()
        >>> out = model.predict([torch.randint(0, 256, (1, 128, 128), dtype=torch.uint8)])
        >>> sorted(out[0])
        ['boxes', 'labels', 'scores']
    """

    def __init__(self, data_preprocessor: DetDataPreprocessor, backbone: nn.Module, neck: FPN,
                 bbox_head: RetinaHead, test_scale: Optional[Tuple[int, int]] = (1333, 800)):
        super().__init__(data_preprocessor, backbone, neck, bbox_head.num_classes, test_scale)
        self.bbox_head = bbox_head

    # ------------------------------------------------------------------ dense outputs
    def forward_dense(self, inputs: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        return self.bbox_head(self.extract_feat(inputs))

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_batch(self, inputs: torch.Tensor, metainfo: Sequence[Mapping[str, Any]],
                      rescale: bool = True) -> List[Result]:
        """Detections of a preprocessed batch (mmdet's ``predict``): ``metainfo`` one dict per image
        with ``img_shape`` (its unpadded size in the batch), ``scale_factor`` ``(w, h)`` and
        ``ori_shape``; boxes in ``ori_shape`` pixels when ``rescale``, else in ``img_shape``."""
        cls_scores, bbox_preds = self(inputs)
        return self.bbox_head.predict_by_feat(cls_scores, bbox_preds, metainfo, rescale=rescale)

    # ------------------------------------------------------------------ training
    def loss(self, inputs: torch.Tensor, targets: Sequence[Mapping[str, Any]]) -> Dict[str, torch.Tensor]:
        """Training losses ``{'loss_cls', 'loss_bbox'}`` of a preprocessed batch (mmdet 3.x RetinaNet:
        focal loss and L1, averaged over the positive anchors). ``targets``: per image ``boxes``
        ``(N, 4)`` in the batch's pixels, ``labels`` ``(N,)`` in ``[0, num_classes)``, ``img_shape``
        (``N = 0`` is fine)."""
        self._check_inputs(inputs)
        targets = check_targets(targets, inputs.shape[0], self.num_classes)
        cls_scores, bbox_preds = self(inputs)
        return self.bbox_head.loss_by_feat(cls_scores, bbox_preds, targets, self.data_preprocessor.pad_size_divisor)

    # ------------------------------------------------------------------ bookkeeping
    def flops(self, img_size: Union[int, Tuple[int, int], None] = None, breakdown: bool = False):
        """The official ``get_flops`` count (LITv2 backbones) for a ``(C, H, W)`` input, by default
        ``pretrained_cfg['input_size']`` (the COCO models: the script's ``(1280, 800)``):
        242,391,433,320 for ``retinanet_litv2_s``; see
        :func:`hilovit.models.detection_flops.official_flops`. ``breakdown``: the dict of parts."""
        from hilovit.models.detection_flops import official_flops
        from hilovit.models.segmentation import _pair

        if img_size is None:
            img_size = tuple(self.pretrained_cfg.get("input_size", (3, 1280, 800))[1:])
        counts = official_flops(self, _pair(img_size, "img_size"))
        return counts if breakdown else counts["total"]

    def param_count_by_part(self) -> Dict[str, int]:
        """Parameters of ``backbone``, ``neck`` and ``bbox_head``."""
        return {name: sum(p.numel() for p in getattr(self, name).parameters())
                for name in ("backbone", "neck", "bbox_head")}


def _build_retinanet(top: Dict[str, Any]) -> RetinaNet:
    pre, backbone, neck, bb_init = build_body(top, "RetinaNet", ["data_preprocessor", "backbone", "neck", "bbox_head",
                                                                 "train_cfg", "test_cfg", "init_cfg", "pretrained"])
    if top.get("bbox_head") is None:
        raise ValueError("model (type='RetinaNet') needs a 'bbox_head' dict")
    head_cfg = dict(top["bbox_head"], train_cfg=top.get("train_cfg"), test_cfg=top.get("test_cfg"))
    _, head, _ = build_part(head_cfg, "bbox_head", {"RetinaHead": RetinaHead})
    if head.in_channels != neck.out_channels or head.prior_generator.num_levels != neck.num_outs:
        raise ValueError(f"bbox_head (in_channels {head.in_channels}, {head.prior_generator.num_levels} anchor "
                         f"strides) does not fit the neck ({neck.num_outs} outputs of {neck.out_channels} channels)")
    model = RetinaNet(pre, backbone, neck, head)
    load_backbone_init(model, top, bb_init)
    return model


_DETECTORS: Dict[str, Callable[[Dict[str, Any]], nn.Module]] = {"RetinaNet": _build_retinanet,
                                                                  "MaskRCNN": build_mask_rcnn}


def build_detector(cfg: Mapping[str, Any]) -> nn.Module:
    """Build a detector from the ``model`` dict of an official mmdet config, dispatching on ``type``.

    ``type='RetinaNet'`` understands ``data_preprocessor=dict(type='DetDataPreprocessor', ...)``,
    ``backbone`` of a type registered for detection with
    :func:`~hilovit.models.registry.register_dense_backbone` (``'LITv2'``:
    :class:`~hilovit.models.litv2_backbone.LITv2Backbone`; ``'SwinTransformer'``: the Swin
    dense-prediction backbone, norms on every output) with the official argument names,
    ``neck=dict(type='FPN', ...)`` (``start_level``, ``add_extra_convs``, ``num_outs``),
    ``bbox_head=dict(type='RetinaHead', anchor_generator=..., bbox_coder=..., loss_cls=..., loss_bbox=...)``,
    ``train_cfg`` (MaxIoUAssigner, PseudoSampler), ``test_cfg``;
    ``backbone.init_cfg=dict(type='Pretrained', checkpoint=...)`` (or ``pretrained=path``) loads the
    backbone non-strictly (a path or URL; an ImageNet or a detection checkpoint), and so does a
    model-level ``init_cfg`` (into the whole detector when it is an mmdet checkpoint). Unknown keys,
    unsupported types and parts that do not fit each other raise an error naming them.
    ``type='MaskRCNN'`` builds a :class:`~hilovit.models.two_stage.MaskRCNN` (``rpn_head``, ``roi_head``,
    ``train_cfg.rpn/rpn_proposal/rcnn``, ``test_cfg.rpn/rcnn``; see
    :func:`~hilovit.models.two_stage.build_mask_rcnn`).

    Example::

        >>> import json
        >>> cfg = json.load(open("retinanet_litv2_e16_70x102_61x90_a0.9_ws0042.json"))["constructor"]
        >>> model = build_detector(cfg).eval()
    """
    _, top = _split_type(cfg, "model", list(_DETECTORS))
    model = _DETECTORS[cfg["type"]](copy.deepcopy(top))
    model.config = copy.deepcopy(dict(cfg))  # the config it was built from, as given
    return model


# ---------------------------------------------------------------------------- registry
_PREPROCESS = dict(type="DetDataPreprocessor", mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                   bgr_to_rgb=True, pad_size_divisor=32)
_TRAIN = dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
              sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1, debug=False)
_TEST = dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100)


def _retinanet_config(backbone: Dict[str, Any], in_channels: List[int], start_level: int = 1, num_outs: int = 5,
                      out_channels: int = 256, num_classes: int = 80, stacked_convs: int = 4,
                      anchors: Optional[Dict[str, Any]] = None, preprocess: Optional[Dict[str, Any]] = None):
    """The official ``retinanet_litv2_fpn.py`` model dict (mmdet 3.x) around ``backbone``."""
    anchors = anchors or dict(octave_base_scale=4, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                              strides=[8, 16, 32, 64, 128])
    return dict(
        type="RetinaNet",
        data_preprocessor=copy.deepcopy(preprocess or _PREPROCESS),
        backbone=backbone,
        neck=dict(type="FPN", in_channels=in_channels, out_channels=out_channels, start_level=start_level,
                  add_extra_convs="on_input", num_outs=num_outs),
        bbox_head=dict(type="RetinaHead", num_classes=num_classes, in_channels=out_channels,
                       stacked_convs=stacked_convs, feat_channels=out_channels,
                       anchor_generator=dict(type="AnchorGenerator", **anchors),
                       bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[1.0] * 4),
                       loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
                       loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        train_cfg=copy.deepcopy(_TRAIN),
        test_cfg=copy.deepcopy(_TEST),
    )


def _create(config: Dict[str, Any], cfg_overrides: Dict[str, Any], **kwargs) -> RetinaNet:
    return create_detector(config, cfg_overrides, build_detector, ["bbox_head"], [["bbox_head"]], **kwargs)


def _litv2(size: str, ws4: bool = False) -> Dict[str, Any]:
    backbone = litv2_backbone(size, ws4)
    return _retinanet_config(backbone, [backbone["embed_dim"] * 2**i for i in range(4)])


@register_model(task="detection")
def retinanet_litv2_s(**kwargs) -> RetinaNet:
    """LITv2-S RetinaNet, COCO 1x (official ``retinanet_litv2_s_fpn_1x_coco``): 38,014,252 parameters,
    official 242.39 GFLOPs at 1280 x 800, 44.0 box AP."""
    return _create(_litv2("s"), {}, **kwargs)


@register_model(task="detection")
def retinanet_litv2_m(**kwargs) -> RetinaNet:
    """LITv2-M RetinaNet, COCO 1x: 59,000,620 parameters, 348.09 GFLOPs, 46.0 box AP."""
    return _create(_litv2("m"), {}, **kwargs)


@register_model(task="detection")
def retinanet_litv2_b(**kwargs) -> RetinaNet:
    """LITv2-B RetinaNet, COCO 1x: 97,139,852 parameters, 481.09 GFLOPs, 46.7 box AP (the official
    config trains with activation checkpointing, ``use_checkpoint=True``)."""
    return _create(_litv2("b"), {}, **kwargs)


@register_model(task="detection")
def retinanet_litv2_s_ws4(**kwargs) -> RetinaNet:
    """LITv2-S RetinaNet with HiLo window 4 in stage 3 (``retinanet_litv2_s_fpn_1x_coco_ws_4``):
    official 230 GFLOPs, 43.7 box AP."""
    return _create(_litv2("s", ws4=True), {}, **kwargs)


@register_model(task="detection")
def retinanet_litv2_m_ws4(**kwargs) -> RetinaNet:
    """LITv2-M RetinaNet, HiLo window 4: official 312 GFLOPs, 45.8 box AP."""
    return _create(_litv2("m", ws4=True), {}, **kwargs)


@register_model(task="detection")
def retinanet_litv2_b_ws4(**kwargs) -> RetinaNet:
    """LITv2-B RetinaNet, HiLo window 4: official 430 GFLOPs, 46.3 box AP."""
    return _create(_litv2("b", ws4=True), {}, **kwargs)


@register_model(task="detection")
def retinanet_swin_t(**kwargs) -> RetinaNet:
    """Swin-T RetinaNet with the LITv2 recipe (for comparison; no published checkpoint): the Swin
    dense-prediction backbone (norms on its outputs) returning stages 1-3, the FPN on them with two
    stride-2 extra convs (the same pyramid as LITv2's ``start_level=1``, strides 8-128)."""
    backbone = dict(type="SwinTransformer", embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24],
                    window_size=7, mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                    drop_path_rate=0.2, ape=False, patch_norm=True, out_indices=[1, 2, 3], use_checkpoint=False)
    return _create(_retinanet_config(backbone, [192, 384, 768], start_level=0), {}, **kwargs)


@register_model(task="detection")
def retinanet_litv2_nano(**kwargs) -> RetinaNet:
    """A small LITv2 RetinaNet for 128 x 128 grey scenes of garments 20-60 pixels wide (``fashion-scenes``).

    Backbone as ``semfpn_litv2_nano`` (``embed_dim=32``, ``depths=[1, 1, 2, 1]``, ``num_heads=[1, 2,
    4, 8]``, alpha 0.9, ``local_ws=[0, 0, 2, 1]``, drop path 0.1, ``in_chans=1``, mean and std 127.5
    on the 0-255 scale); FPN 64 channels on stages 1-3 plus one stride-2 extra conv: levels at
    strides 8, 16, 32, 64 (16, 8, 4, 2 cells on a 128 scene); head 2 stacked convs of 64; anchors
    ``octave_base_scale=2``, 3 scales per octave, ratios 0.5 / 1 / 2: sides 16-25, 32-50, 64-101 and
    128-203 pixels per level, so a 20-60 pixel garment meets anchors of IoU >= 0.5. 10 classes, no
    test-time resize, no pretrained weights.
    """
    from hilovit.data.idx import FASHION_MNIST_CLASSES

    backbone = dict(type="LITv2", in_chans=1, embed_dim=32, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
                    drop_path_rate=0.1, alpha=0.9, local_ws=[0, 0, 2, 1], out_indices=[0, 1, 2, 3])
    preprocess = dict(type="DetDataPreprocessor", mean=[127.5], std=[127.5], bgr_to_rgb=False, pad_size_divisor=32)
    config = _retinanet_config(backbone, [32, 64, 128, 256], num_outs=4, out_channels=64, num_classes=10,
                               stacked_convs=2, preprocess=preprocess,
                               anchors=dict(octave_base_scale=2, scales_per_octave=3, ratios=[0.5, 1.0, 2.0],
                                            strides=[8, 16, 32, 64]))
    return _create(config, dict(input_size=(1, 128, 128), test_scale=None, dataset="fashion-scenes",
                                class_names=tuple(FASHION_MNIST_CLASSES)), **kwargs)


# --------------------------------------------------------------------------- published weights
# The official COCO 1x models (ziplab/LITv2 detection/README.md, release v1.0): box AP on COCO val2017.
register_weights(*(coco_weights("retinanet", size, ws4, box_ap=ap) for size, ws4, ap in (
    ("s", False, 44.0), ("m", False, 46.0), ("b", False, 46.7),
    ("s", True, 43.7), ("m", True, 45.8), ("b", True, 46.3))))
