"""The official LITv2 detection FLOP count (``detection/tools/analysis_tools/get_flops.py``), from shapes.

The official number is mmcv's ``get_model_complexity_info`` on ``model(batch)`` (mmdet's
``mode='tensor'``: backbone, FPN, head; no preprocessing, no post-processing) for a
``(1, 3, H, W)`` input (default ``(1280, 800)``), plus the script's hand-added HiLo and MSA terms
(see :mod:`hilovit.models.litv2_flops`). Counted here: the backbone hooks (stage 0 returned
without a norm), the FPN's 1x1 lateral and 3x3 output convolutions and its stride-2 extra
convolutions (with bias; ``F.max_pool2d`` and ``F.relu`` are functional and not counted), and per
pyramid level each head convolution (with bias) and each tower ReLU. For RetinaNet LITv2-S this
is 242,391,433,320, the official printout "242.39 GFLOPs".

The official script cannot count Mask R-CNN at the official commit (``mode='tensor'`` passes no data
samples to the RPN and fails). For a two-stage model this counts by the same rules the backbone, the
FPN and the RPN head (``rpn_conv``, ``rpn_cls``, ``rpn_reg`` on every level; its ReLU is functional,
so not counted), and adds the RoI heads the way the mmdet 2.x ``get_flops`` behind the README's Mask
R-CNN column ran them (``forward_dummy``: 1000 RoIs through the box head, the first 100 through the
mask head; RoIAlign has no hook): mmcv's ``nn.Linear`` (no bias), ``nn.ReLU``, ``nn.Conv2d`` and
``nn.ConvTranspose2d`` hooks (the latter counts its bias over ``out_h * out_h``). That RoI term is
67,378,713,600 for the COCO heads, and the totals round to the README's 261 / 367 / 500 GFLOPs for
LITv2-S / M / B (and 249 / 449 for S / B with window 4; the README's 315 for M with window 4 is not
reproduced: 331.15). The RoI term is listed apart in the breakdown.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

import torch.nn as nn

from hilovit.models.litv2_flops import attention_terms, backbone_args, backbone_hooks, stage_sizes

__all__ = ["official_flops", "roi_heads_dummy"]


def _conv_out(size: Tuple[int, int], stride: int) -> Tuple[int, int]:
    """3x3 convolution with padding 1: ``ceil(size / stride)``."""
    return (math.ceil(size[0] / stride), math.ceil(size[1] / stride))


def _conv(m, hw: Tuple[int, int]) -> int:
    conv = getattr(m, "conv", m)
    k = conv.kernel_size[0] * conv.kernel_size[1]
    per_pos = k * conv.in_channels * (conv.out_channels // conv.groups)
    total = per_pos * hw[0] * hw[1]
    if conv.bias is not None:
        total += conv.out_channels * hw[0] * hw[1]
    if getattr(m, "activate", None) is not None:  # nn.ReLU: one per output element
        total += conv.out_channels * hw[0] * hw[1]
    return total


def _neck(neck, sizes: List[Tuple[int, int]]) -> Tuple[int, List[Tuple[int, int]]]:
    """The FPN's hook count and its output sizes, from the backbone's stage sizes."""
    used = list(range(neck.start_level, neck.backbone_end_level))
    total, outs = 0, []
    for k, i in enumerate(used):
        total += _conv(neck.lateral_convs[k], sizes[i]) + _conv(neck.fpn_convs[k], sizes[i])
        outs.append(sizes[i])
    while len(outs) < neck.num_outs:
        if neck.add_extra_convs:
            src = sizes[used[-1]] if len(outs) == len(used) and neck.add_extra_convs == "on_input" else outs[-1]
            hw = _conv_out(src, 2)
            total += _conv(neck.fpn_convs[len(outs)], hw)
        else:
            hw = _conv_out(outs[-1], 2)  # F.max_pool2d(1, stride=2): not counted
        outs.append(hw)
    return total, outs


def _retina_head(head, sizes: List[Tuple[int, int]]) -> int:
    total = 0
    for hw in sizes:
        for m in list(head.cls_convs) + list(head.reg_convs):
            total += _conv(m, hw)
        total += _conv(head.retina_cls, hw) + _conv(head.retina_reg, hw)
    return total


def _rpn_head(head, sizes: List[Tuple[int, int]]) -> int:
    convs = list(head.rpn_conv) if isinstance(head.rpn_conv, nn.Sequential) else [head.rpn_conv]
    return sum(sum(_conv(m, hw) for m in convs) + _conv(head.rpn_cls, hw) + _conv(head.rpn_reg, hw) for hw in sizes)


def roi_heads_dummy(roi_head, num_rois: int = 1000, num_mask_rois: int = 100) -> int:
    """mmcv's hook count of the RoI heads in mmdet 2.x's ``forward_dummy``: ``num_rois`` RoIs through the
    box head (two shared fcs + ReLU, ``fc_cls``, ``fc_reg``), the first ``num_mask_rois`` through the mask
    head (convs + ReLU, deconv + ReLU, ``conv_logits``)."""
    head = roi_head.bbox_head
    total = num_rois * sum(fc.in_features * fc.out_features for fc in (*head.shared_fcs, head.fc_cls, head.fc_reg))
    total += num_rois * sum(fc.out_features for fc in head.shared_fcs)  # one ReLU call per shared fc
    if roi_head.mask_head is None:
        return total
    mask, n = roi_head.mask_head, min(num_mask_rois, num_rois)
    hw = roi_head.mask_roi_extractor.roi_layers[0].output_size
    total += n * sum(_conv(m, hw) for m in mask.convs)
    up = mask.upsample
    k = up.kernel_size[0] * up.kernel_size[1]
    oh, ow = hw[0] * up.stride[0], hw[1] * up.stride[1]
    total += n * (k * up.in_channels * up.out_channels * hw[0] * hw[1] + up.out_channels * oh * oh)  # mmcv: h * h
    total += n * up.out_channels * oh * ow  # the ReLU after the deconvolution
    return total + n * _conv(mask.conv_logits, (oh, ow))


def official_flops(model, img_size: Tuple[int, int] = (1280, 800)) -> Dict[str, int]:
    """The official ``get_flops`` count of a LITv2 RetinaNet for one ``(3, H, W)`` input (for a
    two-stage model see the module's notes: ``'mmcv_get_model_complexity_info'`` is then backbone, FPN
    and RPN, and ``'roi_heads_1000_rois_100_masks'`` the RoI heads).

    Returns ``{'mmcv_get_model_complexity_info', 'get_flops_hilo_stage3_added',
    'get_flops_msa_stage4_added', 'total'}``; for ``retinanet_litv2_s`` at (1280, 800) the total is
    242,391,433,320.
    """
    cfg = getattr(model, "config", None)
    if not cfg or cfg.get("backbone", {}).get("type") != "LITv2":
        raise ValueError("official_flops: the official get_flops formula is defined for LITv2 backbones built by "
                         "build_detector; this model has none")
    H, W = img_size
    args = backbone_args(cfg["backbone"])
    if len(args["depths"]) != 4:
        raise ValueError("official_flops: the official formula assumes four stages")
    sizes = stage_sizes(args, H, W)
    normed = [i for i in args["out_indices"] if i > 0]
    neck, out_sizes = _neck(model.neck, sizes)
    head = _rpn_head(model.rpn_head, out_sizes) if hasattr(model, "rpn_head") else _retina_head(model.bbox_head,
                                                                                                  out_sizes)
    hooks = backbone_hooks(args, H, W, normed) + neck + head
    out = {"mmcv_get_model_complexity_info": int(hooks), **attention_terms(args, H, W)}
    if hasattr(model, "roi_head"):
        out["roi_heads_1000_rois_100_masks"] = roi_heads_dummy(model.roi_head)
    out["total"] = sum(out.values())
    return out
