"""The official LITv2 segmentation FLOP count (``segmentation/tools/get_flops.py``), computed from shapes.

The official number is mmcv 1.x's ``get_model_complexity_info`` on ``forward_dummy`` (hooks count
one multiply-add as one FLOP on ``nn.Conv2d`` (with bias), ``nn.Linear`` (without), ``nn.LayerNorm``
and ``nn.BatchNorm2d`` (2 per element when affine), ``nn.ReLU``, ``nn.AvgPool2d`` and
``nn.Upsample`` (1 per element); nothing for GELU, softmax, attention products, the deformable
convolution itself, ``F.interpolate`` and the head's ``SyncBN``), plus the script's hand-added
attention terms for stage 2 (HiLo) and stage 3 (MSA), which assume a head size of 32 and
``H // 16``, ``H // 32`` maps. :func:`official_flops` reproduces it from the configuration, so it
costs nothing and reads no activations.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, Mapping, Tuple

__all__ = ["official_flops"]


def _backbone_args(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    from hilovit.models.litv2_backbone import LITv2Backbone

    args = {n: p.default for n, p in inspect.signature(LITv2Backbone.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}
    args.update({k: v for k, v in cfg.items() if k != "type"})
    return args


def _hilo_hooks(C: int, heads: int, alpha: float, ws: int, h: int, w: int) -> int:
    """Linear layers and the Lo-Fi average pool of the official (padding) HiLo on an h x w map."""
    head_dim = C // heads
    l_heads = int(heads * alpha)
    if ws == 1:
        l_heads = heads
    h_heads = heads - l_heads
    l_dim, h_dim = l_heads * head_dim, h_heads * head_dim
    Np = (ws * math.ceil(h / ws)) * (ws * math.ceil(w / ws))
    total = 0
    if l_heads > 0:
        total += Np * C * l_dim + Np * l_dim * l_dim  # l_q, l_proj
        if ws > 1:
            kv = (Np // (ws * ws))
            total += Np * C + kv * C * 2 * l_dim  # sr (AvgPool2d input), l_kv on the pooled map
        else:
            total += Np * C * 2 * l_dim
    if h_heads > 0:
        total += Np * C * 3 * h_dim + Np * h_dim * h_dim  # h_qkv, h_proj
    return total


def _backbone(args: Mapping[str, Any], H: int, W: int) -> int:
    p, C0, cin = args["patch_size"], args["embed_dim"], args["in_chans"]
    h, w = math.ceil(H / p), math.ceil(W / p)
    total = (p * p * cin * C0 + C0) * h * w  # patch projection with bias
    if args["patch_norm"]:
        total += 2 * h * w * C0
    n = len(args["depths"])
    local_ws = list(args["local_ws"])
    for i in range(n):
        C, N = C0 * 2**i, h * w
        hid = int(C * args["mlp_ratio"])
        per_block = 2 * N * C + N * C * hid + (9 * hid + hid) * N + N * hid * C  # norm2, fc1, dwconv, fc2
        if args["has_msa"][i]:
            per_block += 2 * N * C + _hilo_hooks(C, args["num_heads"][i], args["alpha"], local_ws[i], h, w)
        total += args["depths"][i] * per_block
        if i in args["out_indices"]:
            total += 2 * N * C  # the output LayerNorm norm{i}
        if i < n - 1:  # DTM: offset conv (8 channels, 2x2, stride 2, bias) and BatchNorm2d(2C)
            h, w = h // 2, w // 2
            total += (4 * C * 8 + 8) * h * w + 2 * (2 * C) * h * w
    return total


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
    args = _backbone_args(cfg["backbone"])
    if len(args["depths"]) != 4 or list(args["out_indices"]) != [0, 1, 2, 3]:
        raise ValueError("official_flops: the official formula assumes four stages, all returned")
    sizes, h, w = [], math.ceil(H / args["patch_size"]), math.ceil(W / args["patch_size"])
    for _ in range(4):
        sizes.append((h, w))
        h, w = h // 2, w // 2
    hooks = _backbone(args, H, W) + _neck_head(model, sizes)

    heads2, heads3 = args["num_heads"][2], args["num_heads"][3]
    ws = args["local_ws"][2]
    l_dim = int(args["alpha"] * heads2) * 32
    h_dim = (heads2 - int(args["alpha"] * heads2)) * 32
    h2, w2 = H // 16, W // 16
    Hp, Wp = ws * math.ceil(h2 / ws), ws * math.ceil(w2 / ws)
    hilo = (Hp // ws) * (Wp // ws) * (ws * ws) ** 2 * h_dim * 2 + Hp * Wp * l_dim * (Hp // ws) * (Wp // ws) * 2
    n3 = (H // 32) * (W // 32)
    msa = n3 * heads3 * 32 * n3 * 2
    out = {
        "mmcv_get_model_complexity_info": int(hooks),
        "get_flops_hilo_stage3_added": int(hilo * args["depths"][2]),
        "get_flops_msa_stage4_added": int(msa * args["depths"][3]),
    }
    out["total"] = sum(out.values())
    return out
