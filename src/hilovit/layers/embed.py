"""Patch embedding and token merging between stages."""

from __future__ import annotations

from typing import Optional, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.layers import fast
from hilovit.layers.deform_conv import DeformConv2dPack, deform_columns, deform_conv2d
from hilovit.layers.windows import IntOrPair, pad_to_multiple, to_2tuple

__all__ = ["PatchEmbed", "PatchMerging", "DeformableTokenMerging"]


class PatchEmbed(nn.Module):
    """Image to patch tokens: a ``patch x patch`` stride-``patch`` convolution, then LayerNorm.

    An image whose sides are not multiples of the patch size is zero-padded on the bottom/right
    first (as the official detection backbones do).

    Args:
        patch_size: int or pair; in_chans: image channels; embed_dim: token channels C;
        norm_layer: applied to the tokens (``None`` for none).

    Shape:
        ``(B, in_chans, H, W) -> (B, ceil(H / p), ceil(W / p), C)`` (channels last).
    """

    def __init__(
        self,
        patch_size: IntOrPair = 4,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Optional[Type[nn.Module]] = nn.LayerNorm,
    ):
        super().__init__()
        self.patch_size = to_2tuple(patch_size, "patch_size")
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"PatchEmbed: expected an image batch (B, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        ph, pw = self.patch_size
        H, W = x.shape[2], x.shape[3]
        if H % ph or W % pw or fast.tracing():  # a trace keeps the padding symbolic, even when 0 at trace time
            x = F.pad(x, (0, (pw - W % pw) % pw, 0, (ph - H % ph) % ph))
        cd = fast.inference_dtype(x, self)
        if cd is not None:
            # a channels-last image makes the convolution write (B, H', W', C) rows, so the permute
            # below is free and the norm reads contiguous rows (16x224: 8.2 -> 5.8 ms in float32)
            x = fast.conv2d(x.to(cd, memory_format=torch.channels_last), self.proj)
        else:
            x = self.proj(x)
        x = x.permute(0, 2, 3, 1)  # (B, H', W', C)
        if self.norm is None:
            return x
        return self.norm(x) if cd is None else fast.norm(self.norm, x, cd)

    def flops(self, H: int, W: Optional[int] = None) -> int:
        """Multiply-adds of the projection for an ``H x W`` image (the norm is counted by the models)."""
        W = H if W is None else W
        ph, pw = self.patch_size
        n = -(-H // ph) * -(-W // pw)
        return int(n * self.embed_dim * self.in_chans * ph * pw)


class PatchMerging(nn.Module):
    """Swin's patch merging: each 2x2 neighbourhood concatenated to 4C, LayerNorm, linear to 2C.

    Odd sizes are zero-padded on the bottom/right first. The channel order of the 4C vector is
    ``[x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]]`` as in the official code, so
    official ``reduction`` weights apply unchanged.

    Args:
        dim: input channels C; out_dim: default 2C; norm_layer: over 4C.

    Shape:
        ``(B, H, W, C) -> (B, ceil(H / 2), ceil(W / 2), out_dim)``.
    """

    def __init__(self, dim: int, out_dim: Optional[int] = None, norm_layer: Type[nn.Module] = nn.LayerNorm):
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"PatchMerging: expected (B, H, W, {self.dim}), got {tuple(x.shape)}")
        x, _, _ = pad_to_multiple(x, 2)
        B, H, W, C = x.shape
        # (B, H/2, 2[row], W/2, 2[col], C) -> (B, H/2, W/2, col, row, C): [r0c0, r1c0, r0c1, r1c1]
        x = x.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        if fast.inference_dtype(x, self) == torch.bfloat16:  # no float32 round trip, packed weight
            return fast.linear(fast.norm(self.norm, x.to(torch.bfloat16), torch.bfloat16), self.reduction)
        return fast.dense(self.norm(x), self.reduction)

    def flops(self, H: int, W: Optional[int] = None) -> int:
        """Multiply-adds of the reduction (official count: ``(H/2)(W/2) 4C 2C``)."""
        W = H if W is None else W
        return int(-(-H // 2) * -(-W // 2) * 4 * self.dim * self.out_dim)


class DeformableTokenMerging(nn.Module):
    """LITv2's deformable token merging (DTM): 2x2 stride-2 deformable conv, BatchNorm2d, GELU.

    The offsets of the four kernel taps of every output position come from an ordinary 2x2
    stride-2 convolution of the input (``dconv.conv_offset``, zero-initialised, so a fresh DTM is
    a plain strided convolution); the deformable convolution (DCNv1, see
    :mod:`hilovit.layers.deform_conv`) samples the input bilinearly at the shifted positions.
    Names follow the official module: ``dconv.{weight,bias}``, ``dconv.conv_offset.{weight,bias}``,
    ``norm_layer.*`` (BatchNorm2d with running statistics), ``act_layer``.

    Any H, W >= 2: as in the official detection backbone there is no padding, so an odd side is
    floored (its last row/column is reached only through the offsets).

    Args:
        dim: input channels C; out_dim: output channels (default 2C);
        norm_layer: accepted for the official signature and ignored (the official DTM always
        uses BatchNorm2d).

    Shape:
        ``(B, H, W, C) -> (B, H // 2, W // 2, out_dim)`` (channels last).

    Example::

        >>> dtm = DeformableTokenMerging(32)
        >>> dtm(torch.randn(2, 9, 14, 32)).shape
        torch.Size([2, 4, 7, 64])
    """

    def __init__(self, dim: int, out_dim: Optional[int] = None, norm_layer: Optional[Type[nn.Module]] = None):
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.dconv = DeformConv2dPack(dim, self.out_dim, kernel_size=2, stride=2, padding=0)
        self.norm_layer = nn.BatchNorm2d(self.out_dim)
        self.act_layer = nn.GELU()

    def _folded(self):
        """The deformable conv's weight and bias with the eval-mode BatchNorm folded in."""
        bn = self.norm_layer
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.dconv.weight * scale.view(-1, 1, 1, 1)
        bias = (self.dconv.bias - bn.running_mean) * scale + bn.bias
        return weight, bias

    def _folded_2d(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The folded weight as a ``(Cout, kh * kw * Cin)`` matrix and the bias: the deformable conv
        as one linear layer over the sampled columns."""
        weight, bias = self._folded()
        return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1), bias

    def forward(self, x: torch.Tensor, return_offset: bool = False):
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"DeformableTokenMerging: expected x of shape (B, H, W, {self.dim}), got {tuple(x.shape)}")
        if x.shape[1] < 2 or x.shape[2] < 2:
            raise ValueError(
                f"DeformableTokenMerging: the map is {x.shape[1]}x{x.shape[2]}, the 2x2 stride-2 merge needs at "
                f"least 2x2 (give the model a larger image)"
            )
        xc = x.permute(0, 3, 1, 2)  # (B, C, H, W) view, channels_last memory format
        offset = self.dconv.conv_offset(xc)  # (B, 8, H // 2, W // 2)
        bn = self.norm_layer
        folded = not bn.training and bn.track_running_stats and bn.running_mean is not None
        if folded and fast.inference_dtype(x, self) == torch.bfloat16:
            # bfloat16 inference: bfloat16 samples, one product with the folded weight (kept by the
            # fast path's cache until a parameter or a running statistic changes) and the GELU inside
            dc = self.dconv
            B, Ho, Wo = offset.shape[0], offset.shape[2], offset.shape[3]
            cols = deform_columns(xc.to(torch.bfloat16), offset, dc.kernel_size, dc.stride, dc.padding,
                                  dc.dilation, (Ho, Wo))
            bn = self.norm_layer
            sources = (dc.weight, dc.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
            weights = fast.cached(self, ("folded", torch.bfloat16), sources,
                                  lambda: fast.cast_weights(*self._folded_2d(), torch.bfloat16, pack=True))
            out = fast.linear_with(cols, weights, act=self.act_layer).view(B, Ho, Wo, -1)
            return (out, offset) if return_offset else out
        if folded:
            weight, bias = self._folded()  # eval: BatchNorm folded into the convolution
            out = deform_conv2d(xc, offset, weight, bias, stride=2)
        else:
            out = bn(deform_conv2d(xc, offset, self.dconv.weight, self.dconv.bias, stride=2))
        out = self.act_layer(out.permute(0, 2, 3, 1))  # (B, H // 2, W // 2, out_dim)
        return (out, offset) if return_offset else out

    def flops(self, H: int, W: Optional[int] = None, official: bool = False) -> int:
        """Multiply-adds for an ``H x W`` map.

        By default what runs: the offset conv (8 output channels) and the deformable conv, each
        ``(H // 2)(W // 2) Cout C 4``, bilinear sampling and BatchNorm left out. ``official=True``
        gives the official ``DTM.flops()``: it counts 12 offset channels (the module has 8), the
        conv biases and the BatchNorm, all on a square ``H x H`` map.
        """
        W = H if W is None else W
        n = (H // 2) * (W // 2)
        if official:  # conv_flops(k=2, C, 12, stride 2) + conv_flops(2, C, 2C) + norm, square map
            m = (H // 2) ** 2
            return int(m * (4 * self.dim * 12 + 12) + m * (4 * self.dim * self.out_dim + self.out_dim)
                       + n * self.out_dim)
        return int(n * 4 * self.dim * (8 + self.out_dim))
