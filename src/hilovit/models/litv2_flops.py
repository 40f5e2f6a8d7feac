"""The LITv2 backbone part of the official dense-prediction FLOP counts, computed from shapes.

The official ``get_flops.py`` scripts of LITv2's segmentation and detection code count with mmcv
1.x's ``get_model_complexity_info`` (hooks count one multiply-add as one FLOP on ``nn.Conv2d``
(with bias), ``nn.Linear`` (without), ``nn.LayerNorm`` and ``nn.BatchNorm2d`` (2 per element when
affine), ``nn.ReLU``, ``nn.AvgPool2d``/``MaxPool2d`` and ``nn.Upsample`` (1 per element); nothing for
GELU, softmax, attention products, the deformable convolution itself, ``F.interpolate``), then add
by hand attention terms for stage 2 (HiLo) and stage 3 (MSA) that assume a head size of 32 and
``H // 16``, ``H // 32`` maps. :func:`backbone_hooks` and :func:`attention_terms` give those two
parts for any LITv2 backbone configuration; the segmentation and detection counts add their necks
and heads (:mod:`hilovit.models.segmentation_flops`, :mod:`hilovit.models.detection_flops`).
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, List, Mapping, Sequence, Tuple

__all__ = ["attention_terms", "backbone_args", "backbone_hooks", "stage_sizes"]


def backbone_args(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """The backbone config dict completed with :class:`~hilovit.models.litv2_backbone.LITv2Backbone`'s defaults."""
    from hilovit.models.litv2_backbone import LITv2Backbone

    args = {n: p.default for n, p in inspect.signature(LITv2Backbone.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}
    args.update({k: v for k, v in cfg.items() if k != "type"})
    return args


def stage_sizes(args: Mapping[str, Any], H: int, W: int) -> List[Tuple[int, int]]:
    """The four stage maps' ``(h, w)`` for an ``H x W`` input (padded to the patch, floored by the DTMs)."""
    h, w = math.ceil(H / args["patch_size"]), math.ceil(W / args["patch_size"])
    sizes = []
    for _ in range(len(args["depths"])):
        sizes.append((h, w))
        h, w = h // 2, w // 2
    return sizes


def _hilo_hooks(C: int, heads: int, alpha: float, ws: int, h: int, w: int) -> int:
    """Linear layers and the Lo-Fi average pool of the official (padding) HiLo on an h x w map."""
    head_dim = C // heads
    l_heads = heads if ws == 1 else int(heads * alpha)
    h_heads = heads - l_heads
    l_dim, h_dim = l_heads * head_dim, h_heads * head_dim
    Np = (ws * math.ceil(h / ws)) * (ws * math.ceil(w / ws))
    total = 0
    if l_heads > 0:
        total += Np * C * l_dim + Np * l_dim * l_dim  # l_q, l_proj
        if ws > 1:
            total += Np * C + (Np // (ws * ws)) * C * 2 * l_dim  # sr (AvgPool2d input), l_kv on the pooled map
        else:
            total += Np * C * 2 * l_dim
    if h_heads > 0:
        total += Np * C * 3 * h_dim + Np * h_dim * h_dim  # h_qkv, h_proj
    return total


def backbone_hooks(args: Mapping[str, Any], H: int, W: int, normed: Sequence[int]) -> int:
    """mmcv's hook count of a LITv2 backbone on a ``(1, in_chans, H, W)`` input; ``normed``: the
    stages whose output goes through a LayerNorm (segmentation: all four; detection: 1, 2, 3)."""
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
        if i in normed:
            total += 2 * N * C  # the output LayerNorm norm{i}
        if i < n - 1:  # DTM: offset conv (8 channels, 2x2, stride 2, bias) and BatchNorm2d(2C)
            h, w = h // 2, w // 2
            total += (4 * C * 8 + 8) * h * w + 2 * (2 * C) * h * w
    return total


def attention_terms(args: Mapping[str, Any], H: int, W: int) -> Dict[str, int]:
    """The script's hand-added attention FLOPs: ``get_flops_hilo_stage3_added`` (HiLo on stage 2,
    ``H // 16 x W // 16``) and ``get_flops_msa_stage4_added`` (MSA on stage 3, ``H // 32 x W // 32``),
    with the official head size of 32 whatever the model's."""
    heads2, heads3 = args["num_heads"][2], args["num_heads"][3]
    ws = args["local_ws"][2]
    l_dim = int(args["alpha"] * heads2) * 32
    h_dim = (heads2 - int(args["alpha"] * heads2)) * 32
    h2, w2 = H // 16, W // 16
    Hp, Wp = ws * math.ceil(h2 / ws), ws * math.ceil(w2 / ws)
    hilo = (Hp // ws) * (Wp // ws) * (ws * ws) ** 2 * h_dim * 2 + Hp * Wp * l_dim * (Hp // ws) * (Wp // ws) * 2
    n3 = (H // 32) * (W // 32)
    msa = n3 * heads3 * 32 * n3 * 2
    return {"get_flops_hilo_stage3_added": int(hilo * args["depths"][2]),
            "get_flops_msa_stage4_added": int(msa * args["depths"][3])}
