"""The blocks and stages of the Swin Transformer (:class:`~hilovit.models.swin.SwinTransformer`).

:class:`SwinTransformerBlock` ((shifted-)window attention and MLP, each with a residual) and
:class:`BasicLayer` (the blocks of one stage, then patch merging), channels last ``(B, H, W, C)``,
with the keys, shapes and ``attn_mask`` buffers of microsoft/Swin-Transformer. Any map size runs:
each block pads its map to a multiple of its window and crops back.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint

from hilovit.layers import fast
from hilovit.layers.drop import DropPath
from hilovit.layers.mlp import Mlp
from hilovit.layers.window_attention import WindowAttention
from hilovit.layers.windows import shifted_window_mask

__all__ = ["SwinTransformerBlock", "BasicLayer"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _effective_window(resolution: Tuple[int, int], window_size: int, shift_size: int) -> Tuple[int, int]:
    """The official rule: a map not larger than the window is one window, without shift."""
    if min(resolution) <= window_size:
        return min(resolution), 0
    return window_size, shift_size


class SwinTransformerBlock(nn.Module):
    r"""One Swin block: ``x + drop_path(W-MSA(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``.

    W-MSA when ``shift_size == 0``, SW-MSA (cyclic shift by ``-shift_size`` plus a mask) otherwise.
    The window and shift given are clamped for ``input_resolution`` by the official rule; blocks
    that shift keep the official ``attn_mask`` buffer ``(nW, w*w, w*w)`` for that resolution (so
    the state dict is the official one). The attention builds and caches its own mask for each
    padded size it meets; the buffer is the same function of the size (checked on load).

    Shape:
        ``(B, H, W, dim) -> (B, H, W, dim)``, any H, W.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: Tuple[int, int],
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Type[nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.window_size, self.shift_size = _effective_window(self.input_resolution, window_size, shift_size)
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim,
            num_heads,
            window_size=self.window_size,
            shift_size=self.shift_size,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            attn_drop=attn_drop,
            proj_drop=drop,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        if self.shift_size > 0:
            self.register_buffer("attn_mask", self.build_attn_mask())
        else:
            self.attn_mask = None

    def build_attn_mask(self, device: Optional[torch.device] = None) -> torch.Tensor:
        """The official ``attn_mask`` for ``input_resolution`` (padded to the window), -100 / 0."""
        w = self.window_size
        Hp, Wp = (w * _ceil_div(s, w) for s in self.input_resolution)
        return shifted_window_mask(Hp, Wp, w, self.shift_size, device=device)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
            f"window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = fast.inference_dtype(x, self)
        if cd is not None:  # CPU inference: the residual stream in the compute dtype, the MLP adds it itself
            x = x.to(cd)
            x = x + self.attn(fast.norm(self.norm1, x, cd))
            return self.mlp(fast.norm(self.norm2, x, cd), shortcut=x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def flops(self, H: int, W: int) -> int:
        """Multiply-adds: norms ``H W C`` each, attention at the padded size, the MLP."""
        C = self.dim
        hidden = int(C * self.mlp_ratio)
        return int(2 * H * W * C + self.attn.flops(H, W) + 2 * H * W * C * hidden)


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating W-MSA and SW-MSA, then (optionally) patch merging.

    The official layout (``layers.{i}.blocks.{j}``, ``layers.{i}.downsample``): the merging that
    leads into stage ``i + 1`` belongs to stage ``i``.

    Shape:
        ``(B, H, W, dim) -> (B, H, W, dim)`` without downsample, ``(B, ceil(H/2), ceil(W/2), 2 dim)`` with.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: Tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Union[float, Sequence[float]] = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        downsample: Optional[Type[nn.Module]] = None,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.depth = depth
        self.grad_checkpointing = use_checkpoint
        dpr = list(drop_path) if isinstance(drop_path, (list, tuple)) else [drop_path] * depth
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim,
                self.input_resolution,
                num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=dpr[i],
                norm_layer=norm_layer,
            )
            for i in range(depth)
        )
        self.downsample = downsample(dim, norm_layer=norm_layer) if downsample is not None else None

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks only (the stage's feature map, before merging)."""
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return self.downsample(x) if self.downsample is not None else x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, input_resolution={self.input_resolution}, depth={self.depth}"

    def flops(self, H: int, W: int) -> int:
        """Blocks at ``H x W``; merging: its LayerNorm as ``H W C`` (official) plus the reduction."""
        total = sum(blk.flops(H, W) for blk in self.blocks)
        if self.downsample is not None:
            total += H * W * self.dim + self.downsample.flops(H, W)
        return int(total)
