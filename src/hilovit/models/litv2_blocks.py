"""The blocks and stages of LITv2 (:class:`~hilovit.models.litv2.LITv2`), channels last ``(B, H, W, C)``.

:class:`ConvFFNBlock` (the early stages, no attention), :class:`HiLoBlock` (HiLo + ConvFFN) and
:class:`LITStage` (blocks, then deformable token merging). Keys and shapes are those of the official
``Block`` and ``LITLayer`` (ziplab/LITv2). On the fast CPU inference path (:mod:`hilovit.layers.fast`)
the FFN adds the residual itself and, under bfloat16 autocast, the residual stream stays in bfloat16.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.utils.checkpoint

from hilovit.layers import fast
from hilovit.layers.drop import DropPath
from hilovit.layers.embed import DeformableTokenMerging
from hilovit.layers.hilo import HiLo
from hilovit.layers.mlp import ConvFFN

__all__ = ["ConvFFNBlock", "HiLoBlock", "LITStage"]


def _drop_path(p: float) -> nn.Module:
    return DropPath(p) if p > 0.0 else nn.Identity()


def _ffn_residual(blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x + drop_path(mlp(norm2(x)))``; without active stochastic depth the FFN adds the residual
    itself (fused into ``fc2`` on the fast inference path)."""
    if blk.training and isinstance(blk.drop_path, DropPath):
        return x + blk.drop_path(blk.mlp(blk.norm2(x)))
    if _lowp_inference(blk, x):
        x = x.to(torch.bfloat16)
        return blk.mlp(fast.norm(blk.norm2, x, torch.bfloat16), shortcut=x)
    return blk.mlp(blk.norm2(x), shortcut=x)


def _lowp_inference(blk: nn.Module, x: torch.Tensor) -> bool:
    """bfloat16 on the fast inference path: the block then keeps the residual stream in bfloat16
    and normalises straight to bfloat16, with no float32 round trips."""
    return fast.inference_dtype(x, blk) == torch.bfloat16


class ConvFFNBlock(nn.Module):
    """``x + drop_path(ConvFFN(norm2(x)))``: the block of the stages without attention.

    Args:
        dim: channels C; mlp_ratio: hidden channels ``int(C * mlp_ratio)``; drop: dropout in the FFN;
        drop_path: stochastic depth rate; act_layer, norm_layer: classes.

    Shape:
        ``(B, H, W, C) -> (B, H, W, C)``. Keys ``norm2.*``, ``mlp.{fc1,dwconv.dwconv,fc2}.*``.
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.dim = dim
        self.norm2 = norm_layer(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ffn_residual(self, x)

    def flops(self, H: int, W: int) -> int:
        """Multiply-adds executed (the FFN's linear layers and depth-wise conv; the norm left out)."""
        return self.mlp.flops(H, W)


class HiLoBlock(nn.Module):
    """``x + drop_path(HiLo(norm1(x)))``, then ``x + drop_path(ConvFFN(norm2(x)))``.

    Args:
        dim, num_heads, qkv_bias, qk_scale, attn_drop: as :class:`~hilovit.layers.hilo.HiLo`;
        local_ws: HiLo's window; alpha: share of Lo-Fi heads; mlp_ratio, drop, drop_path,
        act_layer, norm_layer: as :class:`ConvFFNBlock`.

    Shape:
        ``(B, H, W, C) -> (B, H, W, C)``, any H, W (HiLo pads to its window and crops back).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        local_ws: int = 1,
        alpha: float = 0.5,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.dim = dim
        self.norm1 = norm_layer(dim)
        self.attn = HiLo(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
            proj_drop=drop, window_size=local_ws, alpha=alpha,
        )
        self.drop_path = _drop_path(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = ConvFFN(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _lowp_inference(self, x):
            x = x.to(torch.bfloat16)
            x = x + self.attn(fast.norm(self.norm1, x, torch.bfloat16))
        else:
            x = x + self.drop_path(self.attn(self.norm1(x)))
        return _ffn_residual(self, x)

    def flops(self, H: int, W: int) -> int:
        """Multiply-adds: HiLo (``HiLo.flops``: the official formula at the padded size) plus the FFN;
        norms left out."""
        return self.attn.flops(H, W) + self.mlp.flops(H, W)


class LITStage(nn.Module):
    """One stage: ``depth`` blocks, then (except in the last stage) deformable token merging.

    ``forward(x)`` returns ``(out, next)``: the blocks' output ``(B, H, W, C)`` and the input of the
    next stage ``(B, H // 2, W // 2, 2C)`` (``out`` itself in the last stage). Keys
    ``blocks.{b}.*`` and ``downsample.*`` as in the official ``LITLayer``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        has_msa: bool,
        local_ws: int,
        alpha: float,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: Optional[float],
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        norm_layer: Callable[..., nn.Module],
        downsample: bool,
    ):
        super().__init__()
        self.dim, self.depth, self.has_msa, self.local_ws = dim, depth, has_msa, local_ws
        if has_msa:
            blocks = [
                HiLoBlock(dim, num_heads, local_ws, alpha, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop,
                          drop_path[i], norm_layer=norm_layer)
                for i in range(depth)
            ]
        else:
            blocks = [ConvFFNBlock(dim, mlp_ratio, drop, drop_path[i], norm_layer=norm_layer) for i in range(depth)]
        self.blocks = nn.ModuleList(blocks)
        self.downsample = DeformableTokenMerging(dim) if downsample else None
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x, (self.downsample(x) if self.downsample is not None else x)

    def flops(self, H: int, W: int) -> int:
        total = sum(blk.flops(H, W) for blk in self.blocks)
        if self.downsample is not None:
            total += self.downsample.flops(H, W)
        return total

    def extra_repr(self) -> str:
        return f"dim={self.dim}, depth={self.depth}, has_msa={self.has_msa}, local_ws={self.local_ws}"
