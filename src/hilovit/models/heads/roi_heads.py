"""Mask R-CNN RoI heads, as mmdet 3.2's ``StandardRoIHead`` with its official parts.

- :func:`map_roi_levels` and :class:`SingleRoIExtractor`: RoIs to FPN levels, RoIAlign per level.
- :class:`Shared2FCBBoxHead`: two shared fully connected layers, then ``fc_cls`` (``num_classes + 1``,
  the last = background) and ``fc_reg`` (class-specific deltas); its losses.
- :class:`FCNMaskHead`: four 3x3 convolutions, a 2x2 transposed convolution, 1x1 ``conv_logits``;
  its loss and the paste of its predictions into the image.
- :class:`RoIHead`: the container whose attribute names give the official ``roi_head.*`` keys; it predicts
  (``StandardRoIHead.predict``: boxes, then masks) and samples the training RoIs.

Names, arguments, initialisation and state-dict keys follow mmdet 3.2 (``bbox_head.shared_fcs.{0,1}``,
``bbox_head.fc_cls``, ``bbox_head.fc_reg``, ``mask_head.convs.{i}.conv``, ``mask_head.upsample``,
``mask_head.conv_logits``). RoIs are ``(K, 5)`` rows ``[image_index, x1, y1, x2, y2]``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ...ops.boxes import DeltaXYWHBBoxCoder, scale_boxes
from ...ops.masks import mask_targets, paste_masks
from ...ops.nms import multiclass_nms
from ...ops.roi_align import RoIAlign, bbox2roi
from ...options import check_int, check_number
from .fpn import ConvModule, _cfg_type
from .roi_targets import SamplingResult, assign_and_sample, bbox_targets, check_rcnn_train_cfg

__all__ = ["FCNMaskHead", "RoIHead", "Shared2FCBBoxHead", "SingleRoIExtractor", "map_roi_levels"]

_EPS = torch.finfo(torch.float32).eps  # mmdet's weight_reduce_loss: sum / (avg_factor + eps)
# a stand-in for bbox_head + mask_head in RoIHead.predict: (bbox_roi_feats | None, mask_roi_feats | None) ->
# (cls_score, bbox_pred, mask_logits), the outputs of the input given
Heads = Callable[[Optional[Tensor], Optional[Tensor]], Sequence[Any]]
_RCNN_CODER = dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2])


def _size_pair(value, name: str) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return check_int(pair[0], name, 1), check_int(pair[1], name, 1)


def _check_keys(cfg: Mapping[str, Any], allowed: Sequence[str], what: str) -> Dict[str, Any]:
    extra = set(cfg) - set(allowed) - {"type"}
    if extra:
        raise ValueError(f"{what} has unsupported keys {sorted(extra)}: {dict(cfg)!r}")
    return dict(cfg)


def map_roi_levels(rois: Tensor, num_levels: int, finest_scale: float = 56) -> Tensor:
    """FPN level of each RoI, as mmdet: ``floor(log2(sqrt(w * h) / finest_scale + 1e-6))`` clamped to
    ``[0, num_levels - 1]`` (``w = x2 - x1``, ``h = y2 - y1``). ``rois`` ``(K, 5)`` -> int64 ``(K,)``."""
    if not isinstance(rois, Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be a (K, 5) tensor, got {getattr(rois, 'shape', rois)!r}")
    check_int(num_levels, "num_levels", 1)
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


class SingleRoIExtractor(nn.Module):
    """RoI features from one FPN level per RoI (mmdet's ``SingleRoIExtractor``).

    Args:
        roi_layer: mmdet's layer config, ``dict(type='RoIAlign', output_size=7, sampling_ratio=0)``
            (also ``pool_mode``, ``aligned``; ``spatial_scale`` is ``1 / stride`` per level).
        out_channels: channels of the maps (and of the output).
        featmap_strides: stride of each level used, finest first.
        finest_scale: RoI scale of level 0 (:func:`map_roi_levels`).

    Shape: ``feats`` (at least ``len(featmap_strides)`` maps ``(B, C, H_l, W_l)``), ``rois (K, 5)`` ->
    ``(K, out_channels, out_h, out_w)`` in RoI order. No parameters.
    """

    def __init__(self, roi_layer: Mapping[str, Any], out_channels: int, featmap_strides: Sequence[int],
                 finest_scale: float = 56, init_cfg: Optional[Mapping[str, Any]] = None):
        super().__init__()
        _cfg_type(roi_layer, "roi_layer", ["RoIAlign"])
        layer = _check_keys(roi_layer, ["output_size", "sampling_ratio", "pool_mode", "aligned", "use_torchvision"],
                            "roi_layer")
        layer.pop("use_torchvision", None)
        layer.pop("type")
        if "output_size" not in layer:
            raise ValueError(f"roi_layer needs output_size, got {dict(roi_layer)!r}")
        self.out_channels = check_int(out_channels, "out_channels", 1)
        if isinstance(featmap_strides, (str, bytes)) or not isinstance(featmap_strides, Sequence) \
                or not featmap_strides:
            raise ValueError(f"featmap_strides must be a non-empty list of strides, got {featmap_strides!r}")
        self.featmap_strides = [check_int(s, "featmap_strides entries", 1) for s in featmap_strides]
        self.finest_scale = finest_scale
        self.roi_layers = nn.ModuleList(RoIAlign(spatial_scale=1 / s, **layer) for s in self.featmap_strides)

    @property
    def num_inputs(self) -> int:
        """Number of feature levels read (``len(featmap_strides)``)."""
        return len(self.featmap_strides)

    def forward(self, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
        n = self.num_inputs
        if len(feats) < n:
            raise ValueError(f"expected at least {n} feature maps (featmap_strides={self.featmap_strides}), "
                             f"got {len(feats)}")
        if any(f.shape[1] != self.out_channels for f in feats[:n]):
            raise ValueError(f"feature maps must have out_channels={self.out_channels} channels, got "
                             f"{[tuple(f.shape) for f in feats[:n]]}")
        if n == 1:
            return self.roi_layers[0](feats[0], rois)
        levels = map_roi_levels(rois, n, self.finest_scale)
        out = feats[0].new_zeros((rois.shape[0], self.out_channels, *self.roi_layers[0].output_size))
        unused = None
        for i in range(n):
            inds = torch.nonzero(levels == i).squeeze(1)
            if inds.numel() > 0:
                out.index_copy_(0, inds, self.roi_layers[i](feats[i], rois[inds]).to(out.dtype))
            else:  # as mmdet: keep the unused level in the graph (zero gradient)
                unused = feats[i].sum() * 0.0 if unused is None else unused + feats[i].sum() * 0.0
        if unused is not None and out.shape[0]:
            out[:1] += unused  # one RoI carries the zero (mmdet adds it to all: the same values, a full pass)
        return out


def _check_ce(cfg: Optional[Mapping[str, Any]], what: str, use_mask: bool) -> float:
    """Validates a ``CrossEntropyLoss`` config; returns its ``loss_weight``."""
    default = dict(type="CrossEntropyLoss", use_sigmoid=False, use_mask=use_mask, loss_weight=1.0)
    cfg = default if cfg is None else cfg
    _cfg_type(cfg, what, ["CrossEntropyLoss"])
    _check_keys(cfg, ["use_sigmoid", "use_mask", "loss_weight", "reduction", "avg_non_ignore"], what)
    if bool(cfg.get("use_sigmoid", False)) or bool(cfg.get("use_mask", False)) != use_mask \
            or cfg.get("reduction", "mean") != "mean":
        raise ValueError(f"{what} must be CrossEntropyLoss with use_mask={use_mask}, no sigmoid and mean "
                         f"reduction, got {dict(cfg)!r}")
    return float(cfg.get("loss_weight", 1.0))


class Shared2FCBBoxHead(nn.Module):
    """R-CNN box head: ``flatten -> fc+ReLU -> fc+ReLU -> (fc_cls, fc_reg)`` (mmdet's ``Shared2FCBBoxHead``).

    Args (mmdet's names):
        in_channels: RoI feature channels; roi_feat_size: RoI feature side (7).
        fc_out_channels: width of the two shared layers.
        num_classes: foreground classes; ``fc_cls`` has ``num_classes + 1`` outputs (the last is background).
        bbox_coder: ``dict(type='DeltaXYWHBBoxCoder', target_means, target_stds)`` of the regression targets
            (default: means 0, stds ``[0.1, 0.1, 0.2, 0.2]``), kept as ``self.bbox_coder``.
        reg_class_agnostic: 4 deltas instead of ``4 * num_classes``.
        loss_cls: ``CrossEntropyLoss`` (softmax); loss_bbox: ``L1Loss`` or ``SmoothL1Loss`` (``beta``).

    Init as mmdet 3: shared fcs Xavier-uniform, ``fc_cls`` N(0, 0.01²), ``fc_reg`` N(0, 0.001²), zero biases.

    Shape: ``(K, in_channels, s, s)`` -> ``cls_score (K, num_classes + 1)``, ``bbox_pred (K, 4 * num_classes)``.
    """

    def __init__(self, in_channels: int = 256, fc_out_channels: int = 1024, roi_feat_size: int = 7,
                 num_classes: int = 80, bbox_coder: Optional[Mapping[str, Any]] = None,
                 reg_class_agnostic: bool = False, reg_decoded_bbox: bool = False,
                 loss_cls: Optional[Mapping[str, Any]] = None, loss_bbox: Optional[Mapping[str, Any]] = None,
                 init_cfg: Optional[Mapping[str, Any]] = None):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self.roi_feat_size = _size_pair(roi_feat_size, "roi_feat_size")
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.reg_class_agnostic = bool(reg_class_agnostic)
        if reg_decoded_bbox:
            raise ValueError("reg_decoded_bbox=True (losses on decoded boxes) is not supported")
        coder = _RCNN_CODER if bbox_coder is None else bbox_coder
        _cfg_type(coder, "bbox_coder", ["DeltaXYWHBBoxCoder"])
        _check_keys(coder, ["target_means", "target_stds", "clip_border", "add_ctr_clamp", "ctr_clamp",
                            "wh_ratio_clip"], "bbox_coder")
        self.bbox_coder = DeltaXYWHBBoxCoder(**{k: v for k, v in coder.items() if k != "type"})
        self.loss_cls_weight = _check_ce(loss_cls, "loss_cls", use_mask=False)
        bbox_loss = dict(type="L1Loss", loss_weight=1.0) if loss_bbox is None else dict(loss_bbox)
        _cfg_type(bbox_loss, "loss_bbox", ["L1Loss", "SmoothL1Loss"])
        _check_keys(bbox_loss, ["loss_weight", "beta", "reduction"], "loss_bbox")
        self.loss_bbox_cfg = bbox_loss
        flat = self.in_channels * self.roi_feat_size[0] * self.roi_feat_size[1]
        self.fc_out_channels = check_int(fc_out_channels, "fc_out_channels", 1)
        self.shared_fcs = nn.ModuleList([nn.Linear(flat, fc_out_channels), nn.Linear(fc_out_channels, fc_out_channels)])
        self.fc_cls = nn.Linear(fc_out_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_out_channels, 4 if self.reg_class_agnostic else 4 * num_classes)
        self.relu = nn.ReLU(inplace=True)
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, 0.0, 0.01)
        nn.init.normal_(self.fc_reg.weight, 0.0, 0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = self.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)

    def get_targets(self, sampling_results: Sequence[SamplingResult], pos_weight: float = -1.0):
        """``(labels, label_weights, bbox_targets, bbox_weights)`` of the sampled RoIs, images concatenated
        (see :func:`~hilovit.models.heads.roi_targets.bbox_targets`; deltas from ``self.bbox_coder``)."""
        return bbox_targets(sampling_results, self.num_classes, pos_weight, self.bbox_coder.encode)

    def predict_single(self, rois: Tensor, cls_score: Tensor, bbox_pred: Tensor, img_shape: Sequence[int],
                       cfg: Mapping[str, Any], scale_factor: Optional[Sequence[float]] = None) -> Dict[str, Tensor]:
        """One image's detections (mmdet's ``BBoxHead._predict_by_feat_single``): ``softmax`` scores, each
        RoI's class-specific deltas decoded on it with clamp to ``img_shape`` ``(h, w)``, boxes times
        ``1 / scale_factor`` when one is given (``rescale``), then :func:`~hilovit.ops.nms.multiclass_nms`
        with ``cfg`` (``score_thr``, ``nms.iou_threshold``, ``max_per_img``).

        Shapes: ``rois (K, 5)``, ``cls_score (K, num_classes + 1)``, ``bbox_pred (K, 4 * num_classes)`` ->
        ``{'boxes' (N, 4), 'scores' (N,), 'labels' (N,) int64}``.
        """
        scores = F.softmax(cls_score, dim=-1)
        K = rois.shape[0]
        reps = 1 if self.reg_class_agnostic else self.num_classes
        boxes = self.bbox_coder.decode(rois[:, 1:].repeat_interleave(reps, dim=0), bbox_pred.reshape(-1, 4),
                                       max_shape=img_shape)
        if scale_factor is not None and boxes.shape[0] > 0:
            boxes = scale_boxes(boxes, [1 / float(scale_factor[0]), 1 / float(scale_factor[1])])
        boxes, scores, labels = multiclass_nms(boxes.reshape(K, 4 * reps), scores, cfg["score_thr"],
                                               cfg["nms"]["iou_threshold"], cfg["max_per_img"])
        return {"boxes": boxes, "scores": scores, "labels": labels}

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, labels: Tensor, label_weights: Tensor,
             bbox_targets: Tensor, bbox_weights: Tensor) -> Dict[str, Tensor]:
        """mmdet 3.2's ``BBoxHead.loss``:

        - ``loss_cls = sum_i w_i * CE(cls_score_i, labels_i) / (max(#(w > 0), 1) + eps)`` (softmax over
          ``num_classes + 1``), times its ``loss_weight``;
        - ``loss_bbox = sum |bbox_pred[pos, label] - target| * weight / (R + eps)`` over the positives
          (``0 <= label < num_classes``), ``R`` = all sampled RoIs (``SmoothL1Loss`` likewise with its
          ``beta``), times its ``loss_weight``; ``bbox_pred[pos].sum()`` (zero) without positives;
        - ``acc``: top-1 accuracy in percent (not differentiable).
        """
        R = cls_score.shape[0]
        if labels.shape != (R,) or label_weights.shape != (R,) or bbox_targets.shape != (R, 4) \
                or bbox_weights.shape != (R, 4) or bbox_pred.shape[0] != R:
            raise ValueError(f"targets must be labels/label_weights ({R},) and bbox_targets/bbox_weights ({R}, 4) "
                             f"for {R} RoIs, got {tuple(labels.shape)}, {tuple(label_weights.shape)}, "
                             f"{tuple(bbox_targets.shape)}, {tuple(bbox_weights.shape)}")
        losses: Dict[str, Tensor] = {}
        avg = max(float((label_weights > 0).sum()), 1.0)
        ce = F.cross_entropy(cls_score.float(), labels, reduction="none")
        losses["loss_cls"] = self.loss_cls_weight * (ce * label_weights.float()).sum() / (avg + _EPS)
        with torch.no_grad():
            acc = (cls_score.argmax(1) == labels).float().sum() * (100.0 / max(R, 1))
        losses["acc"] = acc
        pos = (labels >= 0) & (labels < self.num_classes)
        if bool(pos.any()):
            preds = bbox_pred.float().view(R, -1, 4)
            preds = preds[pos, 0] if self.reg_class_agnostic else preds[pos, labels[pos]]
            diff = (preds - bbox_targets[pos].float()).abs()
            if self.loss_bbox_cfg["type"] == "SmoothL1Loss":
                beta = float(self.loss_bbox_cfg.get("beta", 1.0))
                diff = torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta) if beta > 0 else diff
            weight = float(self.loss_bbox_cfg.get("loss_weight", 1.0))
            losses["loss_bbox"] = weight * (diff * bbox_weights[pos].float()).sum() / (R + _EPS)
        else:
            losses["loss_bbox"] = bbox_pred[pos].sum()
        return losses


class FCNMaskHead(nn.Module):
    """Mask head: ``num_convs`` 3x3 ``ConvModule`` (+ReLU), ``upsample`` (2x2 transposed conv, stride 2)
    + ReLU, ``conv_logits`` 1x1 (mmdet's ``FCNMaskHead`` with ``upsample_cfg=dict(type='deconv')``).

    Args (mmdet's names):
        num_convs, in_channels, conv_kernel_size, conv_out_channels: the convolution stack.
        roi_feat_size: RoI feature side (kept for the config; the head is fully convolutional).
        num_classes: logit channels (one per class; 1 with ``class_agnostic``).
        upsample_cfg: ``dict(type='deconv', scale_factor=2)``.
        conv_cfg, norm_cfg: of the ``ConvModule``s (``conv_cfg`` only None).
        loss_mask: ``CrossEntropyLoss`` with ``use_mask=True``.

    Init as mmdet 3: convolutions Kaiming-normal (fan_out, ReLU) with zero biases.

    Shape: ``(K, in_channels, s, s)`` -> logits ``(K, num_classes, 2s, 2s)``.
    """

    def __init__(self, num_convs: int = 4, roi_feat_size: int = 14, in_channels: int = 256,
                 conv_kernel_size: int = 3, conv_out_channels: int = 256, num_classes: int = 80,
                 class_agnostic: bool = False, upsample_cfg: Optional[Mapping[str, Any]] = None,
                 conv_cfg: Optional[Mapping[str, Any]] = None, norm_cfg: Optional[Mapping[str, Any]] = None,
                 predictor_cfg: Optional[Mapping[str, Any]] = None, loss_mask: Optional[Mapping[str, Any]] = None,
                 init_cfg: Optional[Mapping[str, Any]] = None):
        super().__init__()
        check_int(num_convs, "num_convs", 0)
        self.in_channels = check_int(in_channels, "in_channels", 1)
        self.conv_out_channels = check_int(conv_out_channels, "conv_out_channels", 1)
        self.num_classes = check_int(num_classes, "num_classes", 1)
        self.roi_feat_size = _size_pair(roi_feat_size, "roi_feat_size")
        self.class_agnostic = bool(class_agnostic)
        k = check_int(conv_kernel_size, "conv_kernel_size", 1)
        up = dict(type="deconv", scale_factor=2) if upsample_cfg is None else dict(upsample_cfg)
        _cfg_type(up, "upsample_cfg", ["deconv"])
        _check_keys(up, ["scale_factor"], "upsample_cfg")
        self.scale_factor = check_int(up.get("scale_factor", 2), "upsample_cfg scale_factor", 1)
        if conv_cfg is not None:
            raise ValueError(f"conv_cfg={conv_cfg!r} is not supported; use None")
        if predictor_cfg is not None:
            _cfg_type(predictor_cfg, "predictor_cfg", ["Conv"])
        self.loss_mask_weight = _check_ce(loss_mask, "loss_mask", use_mask=True)
        self.convs = nn.ModuleList(
            ConvModule(in_channels if i == 0 else conv_out_channels, conv_out_channels, k, padding=(k - 1) // 2,
                       norm_cfg=norm_cfg, act_cfg=dict(type="ReLU"))
            for i in range(num_convs)
        )
        up_in = conv_out_channels if num_convs > 0 else in_channels
        self.upsample = nn.ConvTranspose2d(up_in, conv_out_channels, self.scale_factor, stride=self.scale_factor)
        self.conv_logits = nn.Conv2d(conv_out_channels, 1 if self.class_agnostic else num_classes, 1)
        self.relu = nn.ReLU(inplace=True)
        for m in (self.upsample, self.conv_logits):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(self.relu(self.upsample(x)))

    def loss(self, mask_preds: Tensor, mask_targets: Tensor, labels: Tensor) -> Dict[str, Tensor]:
        """mmdet's ``mask_cross_entropy``: binary cross-entropy with logits between each positive RoI's
        channel ``labels[i]`` (channel 0 when class-agnostic) and its ``(h, w)`` target, averaged over all
        ``P * h * w`` pixels, times ``loss_weight``; ``mask_preds.sum()`` (zero) without positives.

        Shapes: ``mask_preds (P, num_classes, h, w)``, ``mask_targets (P, h, w)``, ``labels (P,)``."""
        P = mask_preds.shape[0]
        if P == 0:
            return {"loss_mask": mask_preds.sum()}
        if mask_targets.shape != (P, *mask_preds.shape[2:]) or labels.shape != (P,):
            raise ValueError(f"mask_targets must be {(P, *mask_preds.shape[2:])} and labels ({P},) for mask_preds "
                             f"{tuple(mask_preds.shape)}, got {tuple(mask_targets.shape)} and {tuple(labels.shape)}")
        channel = torch.zeros_like(labels) if self.class_agnostic else labels
        logits = mask_preds[torch.arange(P, device=mask_preds.device), channel.long()]
        loss = F.binary_cross_entropy_with_logits(logits.float(), mask_targets.float(), reduction="mean")
        return {"loss_mask": self.loss_mask_weight * loss}

    def predict_masks(self, mask_preds: Tensor, bboxes: Tensor, labels: Tensor, ori_shape: Sequence[int],
                      scale_factor: Sequence[float] = (1.0, 1.0), threshold: Optional[float] = 0.5,
                      rescale: bool = True) -> Tensor:
        """Masks of one image's detections (mmdet's ``FCNMaskHead._predict_by_feat_single``, CPU path):
        ``sigmoid``, the detected label's channel, boxes divided by ``scale_factor`` ``(w, h)`` when
        ``rescale`` (else the output size is ``round(ori_shape * scale_factor)``), then :func:`paste_masks`.

        Shapes: ``mask_preds (N, num_classes, h, w)`` logits, ``bboxes (N, 4)`` in the network input's
        pixels (``img_shape``), ``labels (N,)`` -> bool ``(N, H, W)`` (float with ``threshold=None``).
        The boxes are not modified; the rescaled boxes are ``bboxes / [w, h, w, h]``."""
        N = mask_preds.shape[0]
        if bboxes.shape != (N, 4) or labels.shape != (N,):
            raise ValueError(f"bboxes must be ({N}, 4) and labels ({N},), got {tuple(bboxes.shape)} and "
                             f"{tuple(labels.shape)}")
        if len(scale_factor) != 2 or not all(float(v) > 0 for v in scale_factor):
            raise ValueError(f"scale_factor must be (w_scale, h_scale) > 0, got {scale_factor!r}")
        sf = bboxes.new_tensor([float(v) for v in scale_factor]).repeat(2)
        if rescale:
            H, W = int(ori_shape[0]), int(ori_shape[1])
            boxes = bboxes / sf
        else:
            H, W = round(ori_shape[0] * float(scale_factor[1])), round(ori_shape[1] * float(scale_factor[0]))
            boxes = bboxes
        probs = mask_preds.sigmoid()
        channel = torch.zeros_like(labels) if self.class_agnostic else labels
        probs = probs[torch.arange(N, device=probs.device), channel.long()]
        return paste_masks(probs, boxes, (H, W), threshold)


def _check_rcnn_test_cfg(cfg: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    if cfg is None:
        return None
    if not isinstance(cfg, Mapping):
        raise TypeError(f"test_cfg rcnn must be a dict, got {type(cfg).__name__}")
    extra = set(cfg) - {"score_thr", "nms", "max_per_img", "mask_thr_binary"}
    if extra:
        raise ValueError(f"test_cfg rcnn has unknown keys {sorted(extra)}; expected score_thr, nms, max_per_img, "
                         f"mask_thr_binary")
    out = dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5), max_per_img=100, mask_thr_binary=0.5)
    out.update(cfg)
    nms = out["nms"]
    if not isinstance(nms, Mapping) or nms.get("type") != "nms" or set(nms) != {"type", "iou_threshold"} \
            or isinstance(nms["iou_threshold"], bool) or not isinstance(nms["iou_threshold"], (int, float)):
        raise ValueError(f"test_cfg rcnn nms must be dict(type='nms', iou_threshold=<number>), got {nms!r}")
    for key in ("score_thr", "mask_thr_binary"):
        check_number(out[key], f"test_cfg rcnn {key}")
    check_int(out["max_per_img"], "test_cfg rcnn max_per_img")
    out["nms"] = dict(nms)
    return out


def _build(cfg: Optional[Mapping[str, Any]], kinds: Mapping[str, type], what: str) -> Optional[nn.Module]:
    if cfg is None or isinstance(cfg, nn.Module):
        return cfg
    kind = _cfg_type(cfg, what, list(kinds))
    return kinds[kind](**{k: v for k, v in cfg.items() if k != "type"})


class RoIHead(nn.Module):
    """The R-CNN stage of Mask R-CNN (mmdet's ``StandardRoIHead``), built from its official config dicts.

    Args:
        bbox_roi_extractor, bbox_head: configs (``SingleRoIExtractor``, ``Shared2FCBBoxHead``) or modules.
        mask_roi_extractor, mask_head: likewise (``FCNMaskHead``); no mask head -> a box-only head; a mask
            head without its own extractor shares the box one.
        train_cfg: the ``rcnn`` training settings (:func:`~hilovit.models.heads.roi_targets.check_rcnn_train_cfg`).
        test_cfg: the ``rcnn`` test settings: ``score_thr``, ``nms=dict(type='nms', iou_threshold)``,
            ``max_per_img``, ``mask_thr_binary`` (mmdet's defaults when left out: 0.05 / 0.5 / 100 / 0.5).

    Keys: ``bbox_head.*``, ``mask_head.*`` (the extractors have no parameters); inside a detector under
    ``roi_head.`` these are the official checkpoint keys.

    Entry points: :meth:`predict` (proposals -> detections and masks, as ``StandardRoIHead.predict``),
    :meth:`sample` (proposals + ground truth -> sampled RoIs) and :meth:`loss` (sampled RoIs -> losses).
    """

    def __init__(self, bbox_roi_extractor: Any, bbox_head: Any, mask_roi_extractor: Any = None,
                 mask_head: Any = None, shared_head: Any = None, train_cfg: Optional[Mapping[str, Any]] = None,
                 test_cfg: Optional[Mapping[str, Any]] = None, init_cfg: Optional[Mapping[str, Any]] = None):
        super().__init__()
        if shared_head is not None:
            raise ValueError(f"shared_head={shared_head!r} is not supported; use None")
        self.bbox_roi_extractor = _build(bbox_roi_extractor, {"SingleRoIExtractor": SingleRoIExtractor},
                                         "bbox_roi_extractor")
        self.bbox_head = _build(bbox_head, {"Shared2FCBBoxHead": Shared2FCBBoxHead}, "bbox_head")
        if self.bbox_roi_extractor is None or self.bbox_head is None:
            raise ValueError("RoIHead needs bbox_roi_extractor and bbox_head")
        self.mask_head = _build(mask_head, {"FCNMaskHead": FCNMaskHead}, "mask_head")
        self.share_roi_extractor = self.mask_head is not None and mask_roi_extractor is None
        self.mask_roi_extractor = None if self.mask_head is None else (
            self.bbox_roi_extractor if self.share_roi_extractor
            else _build(mask_roi_extractor, {"SingleRoIExtractor": SingleRoIExtractor}, "mask_roi_extractor"))
        self.train_cfg = check_rcnn_train_cfg(train_cfg)
        self.test_cfg = _check_rcnn_test_cfg(test_cfg)

    @property
    def with_mask(self) -> bool:
        return self.mask_head is not None

    def bbox_forward(self, feats: Sequence[Tensor], rois: Tensor) -> Dict[str, Tensor]:
        """``dict(cls_score (K, num_classes + 1), bbox_pred (K, 4 * num_classes), bbox_feats (K, C, 7, 7))``
        for RoIs ``(K, 5)`` on the FPN maps ``feats`` (the first ``len(featmap_strides)`` are read)."""
        bbox_feats = self.bbox_roi_extractor(feats[: self.bbox_roi_extractor.num_inputs], rois)
        cls_score, bbox_pred = self.bbox_head(bbox_feats)
        return dict(cls_score=cls_score, bbox_pred=bbox_pred, bbox_feats=bbox_feats)

    def mask_forward(self, feats: Sequence[Tensor], rois: Tensor) -> Dict[str, Tensor]:
        """``dict(mask_preds (K, num_classes, 28, 28) logits, mask_feats (K, C, 14, 14))`` for RoIs ``(K, 5)``."""
        if self.mask_head is None:
            raise ValueError("this RoIHead has no mask head")
        mask_feats = self.mask_roi_extractor(feats[: self.mask_roi_extractor.num_inputs], rois)
        return dict(mask_preds=self.mask_head(mask_feats), mask_feats=mask_feats)

    def loss(self, feats: Sequence[Tensor], sampling_results: Sequence[SamplingResult],
             gt_masks: Optional[Sequence[Tensor]] = None, mask_size: int = 28) -> Dict[str, Tensor]:
        """Training losses from the sampled RoIs of each image (mmdet's ``StandardRoIHead.loss`` after
        assignment and sampling): ``loss_cls``, ``acc``, ``loss_bbox`` on ``bbox2roi(priors)``, and with a
        mask head ``loss_mask`` on ``bbox2roi(pos_priors)`` against :func:`~hilovit.ops.masks.mask_targets`
        of ``gt_masks[i]`` ``(G_i, H, W)`` (the batch-padded masks of image ``i``)."""
        pos_weight = float((self.train_cfg or {}).get("pos_weight", -1.0))
        rois = bbox2roi([res.priors for res in sampling_results])
        out = self.bbox_forward(feats, rois)
        losses = self.bbox_head.loss(out["cls_score"], out["bbox_pred"],
                                     *self.bbox_head.get_targets(sampling_results, pos_weight))
        if self.mask_head is None:
            return losses
        if gt_masks is None or len(gt_masks) != len(sampling_results):
            raise ValueError(f"gt_masks must give one (G, H, W) tensor per image ({len(sampling_results)})")
        mask_size = int((self.train_cfg or {}).get("mask_size", mask_size))
        preds = self.mask_forward(feats, bbox2roi([res.pos_priors for res in sampling_results]))["mask_preds"]
        targets: List[Tensor] = [mask_targets(m, res.pos_priors, res.pos_assigned_gt_inds, mask_size)
                                 for m, res in zip(gt_masks, sampling_results)]
        labels = torch.cat([res.pos_gt_labels for res in sampling_results])
        losses.update(self.mask_head.loss(preds, torch.cat(targets).to(preds.device), labels))
        return losses

    def sample(self, proposals: Sequence[Tensor], targets: Sequence[Mapping[str, Any]],
               generator: Optional[torch.Generator] = None) -> List[SamplingResult]:
        """The sampled RoIs of each image (mmdet's ``StandardRoIHead.loss`` before the heads): the
        ``train_cfg`` assigner on ``proposals[i]`` ``(N_i, 4)`` against ``targets[i]['boxes']`` /
        ``['labels']``, then its ``RandomSampler`` drawing from ``generator``."""
        if self.train_cfg is None:
            raise ValueError("this RoIHead has no train_cfg; build it with one to sample RoIs")
        return [assign_and_sample(p, t["boxes"], t["labels"], self.train_cfg, generator)
                for p, t in zip(proposals, targets)]

    def _require_test_cfg(self) -> Dict[str, Any]:
        if self.test_cfg is None:
            raise ValueError("this RoIHead has no test_cfg; build it with one to predict")
        return self.test_cfg

    def _external_heads(self, heads: Heads, bbox_feats: Optional[Tensor], mask_feats: Optional[Tensor]
                        ) -> Tuple[Tensor, ...]:
        """``heads(bbox_feats, mask_feats)``'s outputs for the one input given, their shapes checked."""
        if not callable(heads):
            raise TypeError(f"heads must be a callable (bbox_roi_feats, mask_roi_feats) -> (cls_score, bbox_pred, "
                            f"mask_logits), got {type(heads).__name__}")
        out = heads(bbox_feats, mask_feats)
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise ValueError(f"heads must return (cls_score, bbox_pred, mask_logits), got {type(out).__name__}"
                             + (f" of {len(out)}" if isinstance(out, (tuple, list)) else ""))
        C = self.bbox_head.num_classes
        if bbox_feats is not None:
            K, reg = bbox_feats.shape[0], 4 if self.bbox_head.reg_class_agnostic else 4 * C
            got = [tuple(getattr(t, "shape", ())) for t in out[:2]]
            if not all(isinstance(t, Tensor) for t in out[:2]) or got != [(K, C + 1), (K, reg)]:
                raise ValueError(f"heads returned cls_score, bbox_pred of shapes {got} for {K} RoIs; expected "
                                 f"tensors {(K, C + 1)} and {(K, reg)}")
            return out[0], out[1]
        M, ch = mask_feats.shape[0], self.mask_head.conv_logits.out_channels
        m = out[2]
        if not isinstance(m, Tensor) or m.dim() != 4 or tuple(m.shape[:2]) != (M, ch):
            raise ValueError(f"heads returned mask_logits of shape {tuple(getattr(m, 'shape', ()))} for {M} RoIs; "
                             f"expected a tensor ({M}, {ch}, h, w)")
        return (m,)

    def predict_bbox(self, feats: Sequence[Tensor], proposals: Sequence[Tensor], metainfo: Sequence[Mapping[str, Any]],
                     rescale: bool = False, heads: Optional[Heads] = None) -> List[Dict[str, Tensor]]:
        """Per image ``{'boxes', 'scores', 'labels'}`` from its proposals ``(N_i, 4)`` (mmdet's ``predict_bbox``:
        ``bbox2roi``, the box branch on all RoIs at once, then :meth:`Shared2FCBBoxHead.predict_single` per
        image); boxes in ``img_shape`` pixels, or in ``ori_shape`` pixels (times ``1 / scale_factor``, before
        NMS) when ``rescale``. ``heads``: see :meth:`predict`."""
        cfg = self._require_test_cfg()
        rois = bbox2roi([p[:, :4] for p in proposals])
        if heads is None:
            out = self.bbox_forward(feats, rois)
        else:
            bbox_feats = self.bbox_roi_extractor(feats[: self.bbox_roi_extractor.num_inputs], rois)
            out = dict(zip(("cls_score", "bbox_pred"), self._external_heads(heads, bbox_feats, None)))
        counts = [int(p.shape[0]) for p in proposals]
        results = []
        for r, c, b, meta in zip(rois.split(counts), out["cls_score"].split(counts), out["bbox_pred"].split(counts),
                                 metainfo):
            sf = meta.get("scale_factor", (1.0, 1.0)) if rescale else None
            results.append(self.bbox_head.predict_single(r, c, b, meta["img_shape"], cfg, sf))
        return results

    def predict_mask(self, feats: Sequence[Tensor], results: Sequence[Dict[str, Tensor]],
                     metainfo: Sequence[Mapping[str, Any]], rescale: bool = True,
                     heads: Optional[Heads] = None) -> List[Dict[str, Tensor]]:
        """Adds ``masks`` to each image's detections (mmdet's ``predict_mask``): RoIAlign on the detected
        boxes (``img_shape`` pixels), the mask head, then :meth:`FCNMaskHead.predict_masks` at ``mask_thr_binary``.
        With ``rescale`` the masks are ``ori_shape`` bool ``(N, H, W)`` and the boxes become ``boxes /
        scale_factor`` (as mmdet's in-place division); otherwise both stay at the network's scale.
        ``heads``: see :meth:`predict`."""
        cfg = self._require_test_cfg()
        boxes = [r["boxes"] for r in results]
        counts = [int(b.shape[0]) for b in boxes]
        if sum(counts) > 0 and heads is not None:
            rois = bbox2roi(boxes)
            mask_feats = self.mask_roi_extractor(feats[: self.mask_roi_extractor.num_inputs], rois)
            preds = self._external_heads(heads, None, mask_feats)[0].split(counts)
        elif sum(counts) > 0:
            preds = self.mask_forward(feats, bbox2roi(boxes))["mask_preds"].split(counts)
        else:
            preds = [feats[0].new_zeros((0, self.mask_head.num_classes, 1, 1))] * len(boxes)
        out = []
        for res, pred, meta in zip(results, preds, metainfo):
            sf = tuple(float(v) for v in meta.get("scale_factor", (1.0, 1.0)))
            ori = meta.get("ori_shape", meta["img_shape"])
            masks = self.mask_head.predict_masks(pred, res["boxes"], res["labels"], ori, sf,
                                                 cfg["mask_thr_binary"], rescale)
            new = dict(res, masks=masks)
            if rescale:
                new["boxes"] = res["boxes"] / res["boxes"].new_tensor(sf).repeat(2)
            out.append(new)
        return out

    def predict(self, feats: Sequence[Tensor], proposals: Sequence[Tensor], metainfo: Sequence[Mapping[str, Any]],
                rescale: bool = True, heads: Optional[Heads] = None) -> List[Dict[str, Tensor]]:
        """Detections (and masks) of each image from its proposals, as mmdet's ``StandardRoIHead.predict``:
        with a mask head the boxes go through NMS in ``img_shape`` pixels and are rescaled by the mask step
        (see :meth:`predict_mask`); without one they are rescaled before NMS (:meth:`predict_bbox`).

        ``heads``: None runs ``bbox_head`` and ``mask_head``; otherwise a callable standing in for them
        (e.g. their ONNX graph, :func:`hilovit.tasks.detection_export.onnx_roi_heads`), called
        ``heads(bbox_roi_feats, None)`` -> ``(cls_score (K, C + 1), bbox_pred (K, 4C or 4), _)`` for the
        box step and ``heads(None, mask_roi_feats)`` -> ``(_, _, mask_logits (M, C, 28, 28))`` for the
        mask step (``_``: anything, ignored). RoIAlign, decoding, NMS and the mask paste are the same."""
        if len(proposals) != len(metainfo):
            raise ValueError(f"proposals has {len(proposals)} entries for {len(metainfo)} metainfo dicts")
        results = self.predict_bbox(feats, proposals, metainfo, rescale=rescale and not self.with_mask, heads=heads)
        return self.predict_mask(feats, results, metainfo, rescale, heads=heads) if self.with_mask else results
