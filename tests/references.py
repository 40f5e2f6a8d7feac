"""Reference implementations shared by the tests, written in the official (B, N, C) style with
explicit NCHW tensors, padding and ``grid_sample``; run them in float64 to compare."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.layers.embed import DeformableTokenMerging
from hilovit.layers.mlp import ConvFFN


def ref_deform_conv(x, offset, weight, bias, stride=2):
    """DCNv1 through grid_sample (align_corners=True, zeros): x (B, C, H, W), 2x2 kernel, no padding."""
    B, C, H, W = x.shape
    Cout, _, kh, kw = weight.shape
    Ho, Wo = offset.shape[-2:]
    ho = torch.arange(Ho, dtype=x.dtype).view(Ho, 1) * stride
    wo = torch.arange(Wo, dtype=x.dtype).view(1, Wo) * stride
    cols = []
    for r in range(kh):
        for c in range(kw):
            k = r * kw + c
            y = ho + r + offset[:, 2 * k]  # (B, Ho, Wo)
            xx = wo + c + offset[:, 2 * k + 1]
            grid = torch.stack([2 * xx / (W - 1) - 1, 2 * y / (H - 1) - 1], dim=-1)
            cols.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True))
    cols = torch.stack(cols, 2)  # (B, C, K, Ho, Wo)
    out = torch.einsum("bckhw,ock->bohw", cols, weight.reshape(Cout, C, kh * kw))
    return out + bias.view(1, -1, 1, 1)


def ref_dtm(dtm: DeformableTokenMerging, t: torch.Tensor, H: int, W: int):
    """Official detection DTM on tokens (B, H*W, C): returns (B, H//2 * W//2, 2C), H//2, W//2."""
    B, _, C = t.shape
    x = t.transpose(1, 2).reshape(B, C, H, W)
    off = F.conv2d(x, dtm.dconv.conv_offset.weight, dtm.dconv.conv_offset.bias, stride=2)
    y = ref_deform_conv(x, off, dtm.dconv.weight, dtm.dconv.bias)
    bn = dtm.norm_layer
    y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    y = F.gelu(y)
    return y.flatten(2).transpose(1, 2), y.shape[2], y.shape[3]


def ref_conv_ffn(ffn: ConvFFN, t: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Official DWMlp on tokens (B, N, C) with the true H, W."""
    x = F.linear(t, ffn.fc1.weight, ffn.fc1.bias)
    B, N, C = x.shape
    x = x.transpose(1, 2).reshape(B, C, H, W)
    conv = ffn.dwconv.dwconv
    x = F.conv2d(x, conv.weight, conv.bias, padding=1, groups=C).flatten(2).transpose(1, 2)
    return F.linear(F.gelu(x), ffn.fc2.weight, ffn.fc2.bias)


def randomize(module: nn.Module, seed: int = 0, offset_std: float = 1.0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "conv_offset" in name:
                std = 0.5 if name.endswith("bias") else offset_std / (p[0].numel() ** 0.5)
            else:
                std = 0.05 if p.dim() == 1 else 1.0 / (p[0].numel() ** 0.5)
            p.copy_(torch.randn(p.shape, generator=g) * std + (1.0 if "norm" in name and "weight" in name else 0.0))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module


def region_ids(Hp, Wp, ws, shift):
    """The official shifted-window region ids of a padded ``Hp x Wp`` map, built cell by cell (not
    with slices): 0 / 1 / 2 along each axis, ``3 * row_region + col_region``."""
    ids = torch.zeros(Hp, Wp, dtype=torch.long)
    for i in range(Hp):
        for j in range(Wp):
            ri = 0 if i < Hp - ws else (1 if i < Hp - shift else 2)
            rj = 0 if j < Wp - ws else (1 if j < Wp - shift else 2)
            ids[i, j] = 3 * ri + rj
    return ids
