"""Token mixers: multi-head self-attention (MSA) and spatial-reduction attention (SRA), and the
input checks every mixer shares. HiLo lives in :mod:`hilovit.layers.hilo`, Swin's window attention
in :mod:`hilovit.layers.window_attention` (both importable from here too).

Every mixer takes and returns a channels-last token grid ``(B, H, W, C)``; attention math goes
through :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels on CPU and GPU).
Each has ``flops(H, W)``: multiply-adds of its linear layers and attention products, softmax,
pooling and normalisation left out, as the official counts do.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.options import check_int

__all__ = ["Attention", "SpatialReductionAttention", "check_dim_heads", "check_grid", "tokens_to_grid"]


def check_dim_heads(dim: int, num_heads: int) -> None:
    """``dim`` and ``num_heads`` positive ints with ``dim % num_heads == 0``, else a ValueError."""
    check_int(dim, "dim", minimum=1)
    check_int(num_heads, "num_heads", minimum=1)
    if dim % num_heads:
        raise ValueError(f"dim {dim} should be divisible by num_heads {num_heads}")


def check_grid(module: nn.Module, x: torch.Tensor, dim: int) -> None:
    """``x`` is a ``(B, H, W, dim)`` tensor, else a TypeError / ValueError naming ``module``."""
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


def tokens_to_grid(
    module: nn.Module, x: torch.Tensor, H: Optional[int], W: Optional[int], dim: int
) -> Tuple[torch.Tensor, bool]:
    """Accept ``(B, N, C)`` with H, W (the official call) or ``(B, H, W, C)``; return the grid and
    whether the input was flat."""
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
        check_grid(module, x, dim)
        return x, False
    raise ValueError(f"{name}: expected x of shape (B, N, C) or (B, H, W, C), got {tuple(x.shape)}")


def _dropout_p(module: nn.Module, p: float) -> float:
    return p if module.training else 0.0


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
        check_dim_heads(dim, num_heads)
        self.dim, self.num_heads = dim, num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_grid(self, x, self.dim)
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
        check_dim_heads(dim, num_heads)
        check_int(sr_ratio, "sr_ratio", minimum=1)
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
        check_grid(self, x, self.dim)
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
        kv = self.kv(red).view(B, red.shape[1], 2, nh, hd).permute(2, 0, 3, 1, 4)  # no -1: B may be 0
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
