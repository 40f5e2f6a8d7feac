"""The official LITv2 detection FLOP count (``detection/tools/analysis_tools/get_flops.py``), from shapes.

The official number is mmcv's ``get_model_complexity_info`` on ``model(batch)`` (mmdet's
``mode='tensor'``: backbone, FPN, head; no preprocessing, no post-processing) for a
``(1, 3, H, W)`` input (default ``(1280, 800)``), plus the script's hand-added HiLo and MSA terms
(see :mod:`hilovit.models.litv2_flops`). Counted here: the backbone hooks (stage 0 returned
without a norm), the FPN's 1x1 lateral and 3x3 output convolutions and its stride-2 extra
convolutions (with bias; ``F.max_pool2d`` and ``F.relu`` are functional and not counted), and per
pyramid level each head convolution (with bias) and each tower ReLU. For RetinaNet LITv2-S this
is 242,391,433,320, the official printout "242.39 GFLOPs".
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

from hilovit.models.litv2_flops import attention_terms, backbone_args, backbone_hooks, stage_sizes

__all__ = ["official_flops"]


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


def official_flops(model, img_size: Tuple[int, int] = (1280, 800)) -> Dict[str, int]:
    """The official ``get_flops`` count of a LITv2 RetinaNet for one ``(3, H, W)`` input.

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
    hooks = backbone_hooks(args, H, W, normed) + neck + _retina_head(model.bbox_head, out_sizes)
    out = {"mmcv_get_model_complexity_info": int(hooks), **attention_terms(args, H, W)}
    out["total"] = sum(out.values())
    return out
