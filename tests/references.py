"""Reference implementations shared by the tests, written in the official (B, N, C) style with
explicit NCHW tensors, padding and ``grid_sample``; run them in float64 to compare.

The attention references (:func:`ref_hilo`, :func:`ref_window_attention`) read the module's weights only and
compute in float64 whatever the module's dtype, leaving the module untouched: they serve as the reference for
the float32 paths and for the bfloat16 ones. :data:`BF16_EPS` is bfloat16's unit roundoff, the unit of the
bfloat16 tolerances."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.layers.embed import DeformableTokenMerging
from hilovit.layers.hilo import HiLo
from hilovit.layers.mlp import ConvFFN
from hilovit.layers.window_attention import WindowAttention

# bfloat16 keeps 8 significant bits: a rounding moves a value by at most 2**-8 of itself. A result computed
# through n bfloat16 roundings in series (inputs, weights, products, softmax, output) is expected within a
# few n * BF16_EPS of its scale; the tests state n for each path.
BF16_EPS = 2.0**-8


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


def linear_term_scale(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``max_i (sum_j |w_ij x_j| + |b_i|)`` over a batch ``x`` (float64): the size of the terms a linear layer
    adds up. Rounding errors of its inputs and weights are relative to these terms, not to the output, which
    cancellation can make far smaller (a classifier's logits)."""
    w = layer.weight.detach().double().abs()
    b = 0.0 if layer.bias is None else layer.bias.detach().double().abs()
    return (x.detach().double().abs() @ w.T + b).max()


# --------------------------------------------------------------------------- attention, float64
def ref_attention(q, k, v, scale, bias=None):
    """softmax(q k^T * scale + bias) v with explicit products (in the dtype given: pass float64)."""
    attn = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        attn = attn + bias
    return attn.softmax(dim=-1) @ v


def heads(x, n):
    """``(..., L, n*d) -> (..., n, L, d)``."""
    return x.unflatten(-1, (n, -1)).transpose(-3, -2)


def merge(x):
    """``(..., n, L, d) -> (..., L, n*d)``."""
    return x.transpose(-3, -2).flatten(-2)


def linear64(layer: nn.Linear, t: torch.Tensor) -> torch.Tensor:
    """``layer`` applied in float64 (its weight and bias cast; the layer itself untouched)."""
    bias = None if layer.bias is None else layer.bias.detach().double()
    return F.linear(t.double(), layer.weight.detach().double(), bias)


def ref_hilo(m: HiLo, x: torch.Tensor, pool_floor: bool = False) -> torch.Tensor:
    """HiLo on ``(B, H, W, C)`` from its definition, in float64: the map zero-padded to the window, Hi-Fi
    windows cut out one by one, Lo-Fi keys pooled by a loop over the cells, cropped back. ``pool_floor``:
    no padding, the pooled keys of whole cells only (the official classification code). Returns float64."""
    x = x.detach().double()
    B, H, W, C = x.shape
    s = m.ws
    outs = []
    if s > 1 and not pool_floor:
        Hp, Wp = s * math.ceil(H / s), s * math.ceil(W / s)
        xp = torch.zeros(B, Hp, Wp, C, dtype=torch.float64)
        xp[:, :H, :W] = x
    else:
        Hp, Wp, xp = H, W, x
    if m.h_heads:
        hi = torch.zeros(B, Hp, Wp, m.h_dim, dtype=torch.float64)
        for i in range(0, Hp, s):
            for j in range(0, Wp, s):
                win = xp[:, i : i + s, j : j + s].reshape(B, s * s, C)
                q, k, v = linear64(m.h_qkv, win).chunk(3, dim=-1)
                o = merge(ref_attention(heads(q, m.h_heads), heads(k, m.h_heads), heads(v, m.h_heads), m.scale))
                hi[:, i : i + s, j : j + s] = o.reshape(B, s, s, m.h_dim)
        outs.append(linear64(m.h_proj, hi)[:, :H, :W])
    if m.l_heads:
        if s > 1:
            cells = [xp[:, i : i + s, j : j + s].mean(dim=(1, 2))
                     for i in range(0, Hp - s + 1, s) for j in range(0, Wp - s + 1, s)]
            src = torch.stack(cells, dim=1)
        else:
            src = x.reshape(B, H * W, C)
        q = linear64(m.l_q, x.reshape(B, H * W, C))
        k, v = linear64(m.l_kv, src).chunk(2, dim=-1)
        o = merge(ref_attention(heads(q, m.l_heads), heads(k, m.l_heads), heads(v, m.l_heads), m.scale))
        outs.append(linear64(m.l_proj, o).reshape(B, H, W, m.l_dim))
    return torch.cat(outs, dim=-1)


def ref_window_attention(m: WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Swin (S)W-MSA on ``(B, H, W, C)`` by hand, in float64: zero-pad to the window, roll by the shift, loop
    over the windows, add the relative-position bias offset by offset and -100 between tokens of different
    regions, roll back, crop. Square windows. Returns float64."""
    B, H, W, C = x.shape
    ws, shift = m.window_size[0], m.shift_size[0]
    Hp, Wp = ws * math.ceil(H / ws), ws * math.ceil(W / ws)
    xp = torch.zeros(B, Hp, Wp, C, dtype=torch.float64)
    xp[:, :H, :W] = x.detach().double()
    if shift:
        xp = torch.roll(xp, (-shift, -shift), (1, 2))
        region = region_ids(Hp, Wp, ws, shift)
    table = m.relative_position_bias_table.detach().double()  # ((2ws-1)^2, heads)
    coords = [(a, b) for a in range(ws) for b in range(ws)]

    def offset(qa, qb, ka, kb):
        return (qa - ka + ws - 1) * (2 * ws - 1) + (qb - kb + ws - 1)

    bias = torch.stack(
        [torch.stack([table[offset(qa, qb, ka, kb)] for (ka, kb) in coords]) for (qa, qb) in coords]
    ).permute(2, 0, 1)  # (heads, N, N)
    out = torch.zeros(B, Hp, Wp, C, dtype=torch.float64)
    n = m.num_heads
    for i in range(0, Hp, ws):
        for j in range(0, Wp, ws):
            win = xp[:, i : i + ws, j : j + ws].reshape(B, ws * ws, C)
            q, k, v = linear64(m.qkv, win).chunk(3, dim=-1)
            b = bias
            if shift:
                r = region[i : i + ws, j : j + ws].reshape(-1)
                b = b + torch.where(r[:, None] == r[None, :], 0.0, -100.0).double()
            o = merge(ref_attention(heads(q, n), heads(k, n), heads(v, n), m.scale, b))
            out[:, i : i + ws, j : j + ws] = linear64(m.proj, o).reshape(B, ws, ws, C)
    if shift:
        out = torch.roll(out, (shift, shift), (1, 2))
    return out[:, :H, :W]

def ref_roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=0, aligned=True,
                  pool_mode="avg", dtype=None):
    """Scalar transcription of mmcv 2.1's CPU ``ROIAlignForward<T>`` (``pre_calc_for_bilinear_interpolate``
    and the per-channel accumulation), with NumPy scalars of ``dtype`` (default: the features' dtype) so
    every operation rounds as the C++ ``T`` arithmetic does. ``features`` (B, C, H, W), ``rois`` (K, 5);
    returns a float64 tensor (K, C, pooled_h, pooled_w) holding the ``T`` results."""
    import math

    import numpy as np

    T = np.dtype(dtype or np.dtype(str(features.dtype).replace("torch.", ""))).type
    X = features.detach().cpu().numpy().astype(T)
    R = rois.detach().cpu().numpy().astype(T)
    B, C, H, W = X.shape
    PH, PW = (output_size, output_size) if isinstance(output_size, int) else output_size
    scale = T(np.float32(spatial_scale))  # the launcher's `float spatial_scale`
    out = np.zeros((R.shape[0], C, PH, PW), dtype=np.float64)
    for n in range(R.shape[0]):
        b = int(R[n, 0])
        offset = T(0.5) if aligned else T(0.0)
        start_w, start_h = R[n, 1] * scale - offset, R[n, 2] * scale - offset
        end_w, end_h = R[n, 3] * scale - offset, R[n, 4] * scale - offset
        roi_w, roi_h = end_w - start_w, end_h - start_h
        if aligned:
            assert roi_w >= 0 and roi_h >= 0
        else:
            roi_w, roi_h = max(roi_w, T(1.0)), max(roi_h, T(1.0))
        bin_h, bin_w = roi_h / T(PH), roi_w / T(PW)
        gh = sampling_ratio if sampling_ratio > 0 else int(math.ceil(np.float32(roi_h / PH)))  # ceilf
        gw = sampling_ratio if sampling_ratio > 0 else int(math.ceil(np.float32(roi_w / PW)))
        count = T(max(gh * gw, 1))
        pre = []  # (pos1..pos4, w1..w4) per (ph, pw, iy, ix), as pre_calc
        for ph in range(PH):
            for pw in range(PW):
                for iy in range(gh):
                    yy = start_h + T(ph) * bin_h + T(iy + 0.5) * bin_h / T(gh)
                    for ix in range(gw):
                        xx = start_w + T(pw) * bin_w + T(ix + 0.5) * bin_w / T(gw)
                        y, x = yy, xx
                        if y < -1.0 or y > H or x < -1.0 or x > W:
                            pre.append((0, 0, 0, 0, T(0), T(0), T(0), T(0)))
                            continue
                        y = T(0) if y <= 0 else y
                        x = T(0) if x <= 0 else x
                        y_low, x_low = int(y), int(x)
                        if y_low >= H - 1:
                            y_high = y_low = H - 1
                            y = T(y_low)
                        else:
                            y_high = y_low + 1
                        if x_low >= W - 1:
                            x_high = x_low = W - 1
                            x = T(x_low)
                        else:
                            x_high = x_low + 1
                        ly, lx = y - T(y_low), x - T(x_low)
                        hy, hx = T(1.0 - float(ly)), T(1.0 - float(lx))  # `1. - ly`: double, then T
                        pre.append((y_low * W + x_low, y_low * W + x_high, y_high * W + x_low, y_high * W + x_high,
                                    hy * hx, hy * lx, ly * hx, ly * lx))
        for c in range(C):
            img = X[b, c].reshape(-1)
            k = 0
            for ph in range(PH):
                for pw in range(PW):
                    acc, maxval = T(0.0), T(-10000.0)
                    for _ in range(gh * gw):
                        p1, p2, p3, p4, w1, w2, w3, w4 = pre[k]
                        val = w1 * img[p1] + w2 * img[p2] + w3 * img[p3] + w4 * img[p4]
                        if val > maxval:
                            maxval = val
                        acc = acc + val
                        k += 1
                    out[n, c, ph, pw] = maxval if pool_mode == "max" else acc / count
    return torch.from_numpy(out)
