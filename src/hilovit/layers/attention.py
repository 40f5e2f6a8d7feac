"""Token mixers: HiLo, multi-head self-attention, spatial-reduction attention, window attention.

Every mixer takes and returns a channels-last token grid ``(B, H, W, C)``; attention math goes
through :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels on CPU and GPU).
Each has ``flops(H, W)``: multiply-adds of its linear layers and attention products, softmax,
pooling and normalisation left out, as the official counts do.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.layers.windows import (
    IntOrPair,
    pad_to_multiple,
    relative_position_index,
    shifted_window_mask,
    to_2tuple,
)

__all__ = ["HiLo", "Attention", "SpatialReductionAttention", "WindowAttention"]


def _check_dim_heads(dim: int, num_heads: int) -> None:
    if not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if dim % num_heads:
        raise ValueError(f"dim {dim} should be divisible by num_heads {num_heads}")


def _check_grid(module: nn.Module, x: torch.Tensor, dim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{type(module).__name__}: expected a tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{type(module).__name__}: expected x of shape (B, H, W, C={dim}), got {tuple(x.shape)}"
        )
    if x.shape[-1] != dim:
        raise ValueError(
            f"{type(module).__name__}: expected {dim} channels in the last dim, got x of shape {tuple(x.shape)}"
        )


def _tokens_to_grid(
    module: nn.Module, x: torch.Tensor, H: Optional[int], W: Optional[int], dim: int
) -> Tuple[torch.Tensor, bool]:
    """Accept ``(B, N, C)`` with H, W (the official call) or ``(B, H, W, C)``; return the grid."""
    name = type(module).__name__
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(x).__name__}")
    if x.dim() == 3:
        if H is None or W is None:
            raise ValueError(f"{name}: x of shape {tuple(x.shape)} is (B, N, C); pass H and W as well")
        if x.shape[1] != H * W:
            raise ValueError(f"{name}: x has N={x.shape[1]} tokens but H*W = {H}*{W} = {H * W}")
        if x.shape[2] != dim:
            raise ValueError(f"{name}: expected C={dim} channels, got x of shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], H, W, dim), True
    if x.dim() == 4:
        if (H is not None and H != x.shape[1]) or (W is not None and W != x.shape[2]):
            raise ValueError(f"{name}: H, W = {H}, {W} do not match x of shape {tuple(x.shape)}")
        _check_grid(module, x, dim)
        return x, False
    raise ValueError(f"{name}: expected x of shape (B, N, C) or (B, H, W, C), got {tuple(x.shape)}")


def _dropout_p(module: nn.Module, p: float) -> float:
    return p if module.training else 0.0


class HiLo(nn.Module):
    r"""HiLo attention (Pan et al., NeurIPS 2022): Hi-Fi heads in local windows, Lo-Fi heads global.

    ``int(num_heads * alpha)`` heads (Lo-Fi) attend from every position to keys and values
    average-pooled over ``window_size x window_size`` cells; the other heads (Hi-Fi) attend
    within non-overlapping ``window_size x window_size`` windows. ``window_size == 1`` makes every
    head plain global attention. Each branch has its own output projection; the output channels
    are ``cat([hifi (h_dim), lofi (l_dim)])``. Parameter names follow the official code, so its
    state dicts load with ``strict=True``.

    Any H, W works: maps not divisible by ``window_size`` are zero-padded on the bottom/right
    before both branches and cropped back (the official detection backbone's semantics). The
    official classification HiLo instead assumes a square map and, without Hi-Fi heads, lets
    ``AvgPool2d`` drop the last ``H mod window_size`` rows/columns from the keys; for sizes
    divisible by the window both agree.

    Args:
        dim: channels C.
        num_heads: total heads; ``dim`` must be divisible by it.
        qkv_bias: bias in ``l_q``, ``l_kv``, ``h_qkv``.
        qk_scale: attention scale; default ``head_dim ** -0.5``.
        attn_drop: dropout on the attention weights during training (the official module
            accepts this argument but never applies it; here it is applied).
        proj_drop: dropout after the output projections.
        window_size: the window / pooling size ``s``.
        alpha: share of heads in the Lo-Fi branch, in [0, 1].

    Shape:
        ``forward(x)``: ``(B, H, W, C) -> (B, H, W, C)``;
        ``forward(x, H, W)``: ``(B, N = H * W, C) -> (B, N, C)`` (the official call).

    Example::

        >>> attn = HiLo(dim=64, num_heads=4, window_size=2, alpha=0.5)
        >>> attn(torch.randn(2, 14, 14, 64)).shape
        torch.Size([2, 14, 14, 64])
        >>> attn.flops(14, 14)
        2408448
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        window_size: int = 2,
        alpha: float = 0.5,
    ):
        super().__init__()
        _check_dim_heads(dim, num_heads)
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size must be an int >= 1, got {window_size!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        head_dim = dim // num_heads
        self.dim = dim
        self.num_heads = num_heads
        self.ws = window_size
        self.alpha = alpha
        self.l_heads = int(num_heads * alpha)
        self.h_heads = num_heads - self.l_heads
        if window_size == 1:  # plain global attention: no windows, no pooling
            self.l_heads, self.h_heads = num_heads, 0
        self.head_dim = head_dim
        self.l_dim = self.l_heads * head_dim
        self.h_dim = self.h_heads * head_dim
        self.scale = qk_scale or head_dim**-0.5
        self.attn_drop = attn_drop
        if self.l_heads > 0:
            self.l_q = nn.Linear(dim, self.l_dim, bias=qkv_bias)
            self.l_kv = nn.Linear(dim, self.l_dim * 2, bias=qkv_bias)
            self.l_proj = nn.Linear(self.l_dim, self.l_dim)
        if self.h_heads > 0:
            self.h_qkv = nn.Linear(dim, self.h_dim * 3, bias=qkv_bias)
            self.h_proj = nn.Linear(self.h_dim, self.h_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.ws}, alpha={self.alpha}, "
            f"l_heads={self.l_heads}, h_heads={self.h_heads}"
        )

    def hifi(self, x: torch.Tensor) -> torch.Tensor:
        """Hi-Fi branch on a padded map ``(B, Hp, Wp, C)`` -> ``(B, Hp, Wp, h_dim)``."""
        B, Hp, Wp, _ = x.shape
        s, nh, hd = self.ws, self.h_heads, self.head_dim
        hg, wg = Hp // s, Wp // s
        qkv = self.h_qkv(x).view(B, hg, s, wg, s, 3, nh, hd)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B * hg * wg, nh, s * s, hd)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], dropout_p=_dropout_p(self, self.attn_drop), scale=self.scale
        )  # (B*hg*wg, nh, s*s, hd)
        out = out.view(B, hg, wg, nh, s, s, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, self.h_dim)
        return self.h_proj(out)

    def lofi(self, x: torch.Tensor, x_pad: torch.Tensor) -> torch.Tensor:
        """Lo-Fi branch: queries from ``x (B, H, W, C)``, keys/values from the pooled padded map."""
        B, H, W, C = x.shape
        nh, hd, s = self.l_heads, self.head_dim, self.ws
        q = self.l_q(x).view(B, H * W, nh, hd).transpose(1, 2)  # (B, nh, N, hd)
        if s > 1:
            Hp, Wp = x_pad.shape[1], x_pad.shape[2]
            pooled = x_pad.view(B, Hp // s, s, Wp // s, s, C).mean(dim=(2, 4))  # average pool, (B, h, w, C)
            kv = self.l_kv(pooled.view(B, -1, C))
        else:
            kv = self.l_kv(x.view(B, H * W, C))
        kv = kv.view(B, -1, 2, nh, hd).permute(2, 0, 3, 1, 4)  # (2, B, nh, M, hd)
        out = F.scaled_dot_product_attention(
            q, kv[0], kv[1], dropout_p=_dropout_p(self, self.attn_drop), scale=self.scale
        )  # (B, nh, N, hd)
        out = out.transpose(1, 2).reshape(B, H, W, self.l_dim)
        return self.l_proj(out)

    def forward(self, x: torch.Tensor, H: Optional[int] = None, W: Optional[int] = None) -> torch.Tensor:
        grid, flat = _tokens_to_grid(self, x, H, W, self.dim)
        B, H, W, _ = grid.shape
        x_pad, pad_h, pad_w = pad_to_multiple(grid, self.ws) if self.ws > 1 else (grid, 0, 0)
        outs = []
        if self.h_heads > 0:
            hi = self.hifi(x_pad)
            if pad_h or pad_w:
                hi = hi[:, :H, :W]
            outs.append(hi)
        if self.l_heads > 0:
            outs.append(self.lofi(grid, x_pad))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        out = self.proj_drop(out)
        return out.reshape(B, H * W, self.dim) if flat else out

    def flops(self, H: int, W: Optional[int] = None) -> int:
        """Multiply-adds for one ``H x W`` map, the official formula at the padded size.

        Counts the q/k/v and output projections and both attention products of each branch;
        leaves out softmax and pooling. ``W`` defaults to ``H``.
        """
        W = H if W is None else W
        s = self.ws
        Hp, Wp = s * math.ceil(H / s), s * math.ceil(W / s)
        Np = Hp * Wp
        hifi = Np * self.dim * self.h_dim * 3
        hifi += (Np // (s * s)) * (s * s) ** 2 * self.h_dim * 2
        hifi += Np * self.h_dim * self.h_dim
        kv_len = (Hp // s) * (Wp // s)
        lofi = Np * self.dim * self.l_dim
        lofi += kv_len * self.dim * self.l_dim * 2
        lofi += Np * self.l_dim * kv_len * 2
        lofi += Np * self.l_dim * self.l_dim
        return int(hifi + lofi)


class Attention(nn.Module):
    r"""Multi-head self-attention over all tokens (ViT's MSA).

    Args:
        dim: channels C; num_heads: heads (``dim % num_heads == 0``); qkv_bias, qk_scale,
        attn_drop (on the attention weights in training), proj_drop: as in ViT.

    Shape:
        ``(B, H, W, C) -> (B, H, W, C)``.

    Parameters are ``qkv`` (C -> 3C) and ``proj`` (C -> C).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        _check_dim_heads(dim, num_heads)
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_grid(self, x, self.dim)
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H * W, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], dropout_p=_dropout_p(self, self.attn_drop), scale=self.scale
        )
        out = out.transpose(1, 2).reshape(B, H, W, C)
        return self.proj_drop(self.proj(out))

    def flops(self, H: int, W: Optional[int] = None) -> int:
        """Multiply-adds: qkv + ``q @ k^T`` + ``attn @ v`` + proj (softmax left out)."""
        N = H * (H if W is None else W)
        C = self.dim
        return int(N * C * 3 * C + 2 * N * N * C + N * C * C)


class SpatialReductionAttention(nn.Module):
    r"""PVT's spatial-reduction attention (SRA).

    Queries come from every token; keys and values from the map reduced by a
    ``sr_ratio x sr_ratio`` stride-``sr_ratio`` convolution followed by LayerNorm (sizes not
    divisible by ``sr_ratio`` are floored by the convolution, as in PVT). ``sr_ratio == 1`` is
    plain multi-head attention with separate ``q`` and ``kv`` projections.

    Parameters: ``q`` (C -> C), ``kv`` (C -> 2C), ``proj``, and for ``sr_ratio > 1`` ``sr``
    (Conv2d) and ``norm`` (LayerNorm), named as in PVT.

    Shape:
        ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        sr_ratio: int = 1,
    ):
        super().__init__()
        _check_dim_heads(dim, num_heads)
        if isinstance(sr_ratio, bool) or not isinstance(sr_ratio, int) or sr_ratio < 1:
            raise ValueError(f"sr_ratio must be an int >= 1, got {sr_ratio!r}")
        self.dim, self.num_heads, self.sr_ratio = dim, num_heads, sr_ratio
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_grid(self, x, self.dim)
        B, H, W, C = x.shape
        nh, hd = self.num_heads, self.head_dim
        if self.sr_ratio > 1 and (H < self.sr_ratio or W < self.sr_ratio):
            raise ValueError(f"SpatialReductionAttention: map {H}x{W} is smaller than sr_ratio {self.sr_ratio}")
        q = self.q(x).view(B, H * W, nh, hd).transpose(1, 2)
        if self.sr_ratio > 1:
            red = self.sr(x.permute(0, 3, 1, 2)).flatten(2).transpose(1, 2)  # (B, M, C)
            red = self.norm(red)
        else:
            red = x.reshape(B, H * W, C)
        kv = self.kv(red).view(B, -1, 2, nh, hd).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, kv[0], kv[1], dropout_p=_dropout_p(self, self.attn_drop), scale=self.scale
        )
        out = out.transpose(1, 2).reshape(B, H, W, C)
        return self.proj_drop(self.proj(out))

    def flops(self, H: int, W: Optional[int] = None) -> int:
        """Multiply-adds: q, reduction conv, kv, both attention products, proj (LayerNorm left out)."""
        W = H if W is None else W
        r, C, N = self.sr_ratio, self.dim, H * W
        M = (H // r) * (W // r)
        total = N * C * C + M * C * 2 * C + 2 * N * M * C + N * C * C
        if r > 1:
            total += M * C * C * r * r
        return int(total)


class WindowAttention(nn.Module):
    r"""Swin's window attention (W-MSA) with relative position bias; SW-MSA when ``shift_size > 0``.

    The map is zero-padded on the bottom/right to a multiple of the window, cyclically shifted by
    ``-shift_size`` (SW-MSA), split into windows, attended with the relative position bias plus,
    when shifted, the mask that keeps tokens from non-adjacent regions apart (-100), then shifted
    back and cropped. Parameter and buffer names follow the official Swin code (``qkv``, ``proj``,
    ``relative_position_bias_table``, ``relative_position_index``).

    Masks are built once per padded size; in inference (no autograd) the bias and the mask are
    folded into one additive mask that is cached until the bias table changes.

    Args:
        dim: channels C; num_heads: heads; window_size: int or (wh, ww);
        shift_size: int or pair, 0 for W-MSA, each less than the window;
        qkv_bias, qk_scale, attn_drop, proj_drop: as in Swin.

    Shape:
        ``forward(x)``: ``(B, H, W, C) -> (B, H, W, C)``, any H, W.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: IntOrPair = 7,
        shift_size: IntOrPair = 0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__()
        _check_dim_heads(dim, num_heads)
        self.window_size = to_2tuple(window_size, "window_size")
        self.shift_size = to_2tuple(shift_size, "shift_size")
        wh, ww = self.window_size
        if wh < 1 or ww < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size!r}")
        if not all(0 <= s < w for s, w in zip(self.shift_size, self.window_size)):
            raise ValueError(f"shift_size must be in [0, window_size), got {shift_size!r} for window {window_size!r}")
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._mask_cache: Dict[tuple, torch.Tensor] = {}
        self._bias_cache: Dict[tuple, torch.Tensor] = {}

    @property
    def shifted(self) -> bool:
        return any(self.shift_size)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
            f"shift_size={self.shift_size}"
        )

    def relative_position_bias(self) -> torch.Tensor:
        """The bias ``(heads, N, N)`` for one window, gathered from the table (differentiable)."""
        N = self.window_size[0] * self.window_size[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(N, N, self.num_heads).permute(2, 0, 1)

    def shift_mask(self, Hp: int, Wp: int, device: torch.device) -> torch.Tensor:
        """The cached shifted-window mask ``(nW, N, N)`` for a padded ``Hp x Wp`` map."""
        key = (Hp, Wp, str(device))
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = shifted_window_mask(Hp, Wp, self.window_size, self.shift_size, device=device)
            self._mask_cache[key] = mask
        return mask

    def attn_bias(self, Hp: int, Wp: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Additive mask for SDPA: ``(heads, N, N)`` (W-MSA) or ``(nW * heads, N, N)`` (SW-MSA)."""
        table = self.relative_position_bias_table
        cacheable = not (torch.is_grad_enabled() and table.requires_grad) and not torch.compiler.is_compiling()
        if cacheable:
            key = (Hp, Wp, dtype, str(device), table._version, table.data_ptr())
            hit = self._bias_cache.get(key)
            if hit is not None:
                return hit
        bias = self.relative_position_bias()
        if self.shifted:
            mask = self.shift_mask(Hp, Wp, device)
            bias = (mask.unsqueeze(1) + bias.unsqueeze(0)).flatten(0, 1)  # (nW*heads, N, N)
        bias = bias.to(dtype)
        if cacheable:
            self._bias_cache.clear()
            self._bias_cache[key] = bias
        return bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_grid(self, x, self.dim)
        B, H, W, C = x.shape
        wh, ww = self.window_size
        x, pad_h, pad_w = pad_to_multiple(x, self.window_size)
        Hp, Wp = H + pad_h, W + pad_w
        if self.shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        nh, hd = self.num_heads, self.head_dim
        hg, wg = Hp // wh, Wp // ww
        qkv = self.qkv(x).view(B, hg, wh, wg, ww, 3, nh, hd)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7)  # (3, B, hg, wg, nh, wh, ww, hd)
        if self.shifted:  # the mask differs per window: heads of all windows side by side
            qkv = qkv.reshape(3, B, hg * wg * nh, wh * ww, hd)
        else:
            qkv = qkv.reshape(3, B * hg * wg, nh, wh * ww, hd)
        bias = self.attn_bias(Hp, Wp, qkv.dtype, qkv.device)
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=bias, dropout_p=_dropout_p(self, self.attn_drop), scale=self.scale
        )
        out = out.view(B, hg, wg, nh, wh, ww, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)
        if self.shifted:
            out = torch.roll(out, shifts=self.shift_size, dims=(1, 2))
        if pad_h or pad_w:
            out = out[:, :H, :W]
        return self.proj_drop(self.proj(out))

    def flops(self, H: int, W: Optional[int] = None) -> int:
        """Multiply-adds over the padded map: qkv, both attention products, proj (official formula)."""
        W = H if W is None else W
        wh, ww = self.window_size
        Hp, Wp = wh * math.ceil(H / wh), ww * math.ceil(W / ww)
        N = wh * ww
        nW = (Hp // wh) * (Wp // ww)
        C = self.dim
        per_window = N * C * 3 * C + 2 * self.num_heads * N * N * self.head_dim + N * C * C
        return int(nW * per_window)
