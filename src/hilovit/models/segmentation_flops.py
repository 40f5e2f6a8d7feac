"""The official LITv2 segmentation FLOP count (``segmentation/tools/get_flops.py``), computed from shapes.

The official number is mmcv 1.x's ``get_model_complexity_info`` on ``forward_dummy`` (hooks count
one multiply-add as one FLOP on ``nn.Conv2d`` (with bias), ``nn.Linear`` (without), ``nn.LayerNorm``
and ``nn.BatchNorm2d`` (2 per element when affine), ``nn.ReLU``, ``nn.AvgPool2d`` and
``nn.Upsample`` (1 per element); nothing for GELU, softmax, attention products, the deformable
convolution itself, ``F.interpolate`` and the head's ``SyncBN``), plus the script's hand-added
attention terms for stage 2 (HiLo) and stage 3 (MSA), which assume a head size of 32 and
``H // 16``, ``H // 32`` maps. :func:`official_flops` reproduces it from the configuration, so it
costs nothing and reads no activations. The backbone part is shared with the detection count
(:mod:`hilovit.models.litv2_flops`).
"""

from __future__ import annotations

from typing import Dict, Tuple

from hilovit.models.litv2_flops import attention_terms, backbone_args, backbone_hooks, stage_sizes

__all__ = ["official_flops"]


def _neck_head(model, sizes) -> int:
    neck, head = model.neck, model.decode_head
    total = 0
    for (h, w), cin in zip(sizes, neck.in_channels):
        co = neck.out_channels
        total += (cin * co + co) * h * w + (9 * co * co + co) * h * w  # lateral 1x1, fpn 3x3
    for level, (h, w) in enumerate(sizes):
        for j, m in enumerate(head.scale_heads[level]):
            if j % 2 == 0:  # ConvModule: conv (no bias with a norm), BN unless SyncBN, ReLU
                conv = m.conv
                total += 9 * conv.in_channels * conv.out_channels * h * w
                if conv.bias is not None:
                    total += conv.out_channels * h * w
                if m.norm_name is not None and getattr(m, "norm_type", "") != "SyncBN":
                    total += 2 * conv.out_channels * h * w
                if m.activate is not None:
                    total += conv.out_channels * h * w
            else:
                h, w = 2 * h, 2 * w
                total += head.channels * h * w  # nn.Upsample output
    h0, w0 = sizes[0]
    total += (head.channels * head.num_classes + head.num_classes) * h0 * w0
    return total


def official_flops(model, img_size: Tuple[int, int] = (512, 512)) -> Dict[str, int]:
    """The official ``get_flops`` count of a LITv2 Semantic FPN for one ``(in_chans, H, W)`` image.

    Returns ``{'mmcv_get_model_complexity_info', 'get_flops_hilo_stage3_added',
    'get_flops_msa_stage4_added', 'total'}``. For ``semfpn_litv2_s`` at 512 x 512 the total is
    41,292,310,528 (the official printout: "41.29 GFLOPs").
    """
    cfg = getattr(model, "config", None)
    if not cfg or cfg.get("backbone", {}).get("type") != "LITv2":
        raise ValueError("official_flops: the official get_flops formula is defined for LITv2 backbones built by "
                         "build_segmentor; this model has none")
    H, W = img_size
    args = backbone_args(cfg["backbone"])
    if len(args["depths"]) != 4 or list(args["out_indices"]) != [0, 1, 2, 3]:
        raise ValueError("official_flops: the official formula assumes four stages, all returned")
    sizes = stage_sizes(args, H, W)
    hooks = backbone_hooks(args, H, W, normed=(0, 1, 2, 3)) + _neck_head(model, sizes)
    out = {"mmcv_get_model_complexity_info": int(hooks), **attention_terms(args, H, W)}
    out["total"] = sum(out.values())
    return out
