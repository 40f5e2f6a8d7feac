"""Token mixers: HiLo, multi-head self-attention, spatial-reduction attention, window attention.

Every mixer takes and returns a channels-last token grid ``(B, H, W, C)``; attention math goes
through :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels on CPU and GPU).
Each has ``flops(H, W)``: multiply-adds of its linear layers and attention products, softmax,
pooling and normalisation left out, as the official counts do.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.layers.mlp import fused_inference_dtype, inference_weights, linear_pointwise
from hilovit.layers.windows import (
    IntOrPair,
    pad_to_multiple,
    relative_position_index,
    shifted_window_mask,
    to_2tuple,
)

__all__ = ["HiLo", "Attention", "SpatialReductionAttention", "WindowAttention", "WindowPlan"]


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


@contextlib.contextmanager
def _outside_inference_mode():
    """Cached tensors (index plans, masks, fused weights) must also serve later calls under
    autograd, so under ``torch.inference_mode`` they are built as normal tensors (without grad)."""
    if torch.compiler.is_compiling() or not torch.is_inference_mode_enabled():
        yield
        return
    with torch.inference_mode(False), torch.no_grad():
        yield


def _dropout_p(module: nn.Module, p: float) -> float:
    return p if module.training else 0.0


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the projections of ``x`` come out in (the autocast dtype inside autocast)."""
    device = x.device.type
    try:
        if torch.is_autocast_enabled(device):
            return torch.get_autocast_dtype(device)
    except TypeError:  # torch < 2.4: per-device functions
        if device == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        if device == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
    return torch.promote_types(x.dtype, weight.dtype)


# Key sequences up to this long take the bfloat16 CPU inference path of :func:`_attention` below.
_SHORT_KEYS = 256
_TINY = 1e-30


def _lowp_cpu_inference(q: torch.Tensor) -> bool:
    """bfloat16 on the fused CPU inference path (see :func:`~hilovit.layers.mlp.fused_inference_dtype`)."""
    return q.dtype == torch.bfloat16 and fused_inference_dtype(q) == torch.bfloat16


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], scale: float, dropout_p: float
) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` for ``(..., heads, L, hd)`` inputs, as
    :func:`~torch.nn.functional.scaled_dot_product_attention` returns it: ``(..., heads, L, hd)``
    stored as ``(..., L, heads, hd)``.

    In bfloat16 CPU inference with short key sequences (windows, pooled keys) the fused CPU kernel
    spends most of its time on per-row softmax bookkeeping and many tiny products, and is no
    faster than in float32. There the attention runs as two batched products around an
    element-wise ``exp`` with the normalisation applied to the output: the logits come out of the
    first product in bfloat16 (as the official implementations' ``q @ k.transpose(-2, -1)`` does
    under autocast) and the row maximum is not subtracted; a guard on every row's sum (finite and
    not vanishing) hands any row set that overflows or underflows back to the fused kernel, so
    the result is the softmax's up to bfloat16 rounding.
    """
    if dropout_p == 0.0 and k.shape[-2] <= _SHORT_KEYS and _lowp_cpu_inference(q):
        # keys gathered as rows (contiguous 64-byte runs) and handed over transposed: the product
        # reads them as B^T, which is ~20% faster than letting matmul gather the 2-byte columns of k^T
        s = torch.matmul(q, k.contiguous().transpose(-1, -2))
        e = (s.mul_(scale) if mask is None else torch.add(mask, s, alpha=scale)).exp_()
        den = e.sum(-1, keepdim=True)  # accumulated in float32 inside, rounded like the output
        lo, hi = torch.aminmax(den)  # NaN in either fails both tests
        if bool(lo > _TINY) and bool(hi < math.inf):
            o = torch.matmul(e, v)
            shape = q.shape[:-3] + (q.shape[-2], q.shape[-3], v.shape[-1])
            out = torch.empty(shape, dtype=o.dtype, device=o.device).transpose(-2, -3)
            return torch.div(o, den, out=out)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


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

    In bfloat16 CPU inference (autocast or bfloat16 input, no autograd) the projections run on
    oneDNN with bfloat16 weights cast and pre-packed once (until the parameters change), and both
    branches attend through the short-key path of :func:`_attention`.

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
        self._band_masks: Dict[tuple, torch.Tensor] = {}
        self._fused: Tuple[torch.Tensor, Optional[torch.Tensor]] = (torch.empty(0), None)
        self._fused_key: Optional[tuple] = None

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.ws}, alpha={self.alpha}, "
            f"l_heads={self.l_heads}, h_heads={self.h_heads}"
        )

    # Hi-Fi windows are attended as bands of ``ws`` rows (``ws * Wp`` tokens, a block-diagonal
    # mask keeping windows apart) when a band holds at most this many windows: q, k, v are then
    # strided views of the projection with no copy, and SDPA runs on sequences long enough to be
    # efficient. The masked products it also computes are few at these sizes; wider maps cut the
    # windows out instead.
    band_max_windows: int = 16

    def _project(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """``layer(x)``; in bfloat16 CPU inference with a cached, oneDNN-packed bfloat16 weight."""
        if fused_inference_dtype(x) == torch.bfloat16:
            return linear_pointwise(x, inference_weights((layer,), torch.bfloat16, pack=True))
        return layer(x)

    def _input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """``h_qkv`` and ``l_q`` as one matrix product: ``(..., C) -> (..., 3 h_dim + l_dim)``."""
        if fused_inference_dtype(x) == torch.bfloat16:
            layers = (self.h_qkv,) if self.h_heads > 0 else ()
            layers += (self.l_q,) if self.l_heads > 0 else ()
            return linear_pointwise(x, inference_weights(layers, torch.bfloat16, pack=True, owner=self))
        if self.h_heads == 0:
            return self.l_q(x)
        if self.l_heads == 0:
            return self.h_qkv(x)
        params = [self.h_qkv.weight, self.l_q.weight]
        if self.h_qkv.bias is not None:
            params += [self.h_qkv.bias, self.l_q.bias]
        frozen = not (torch.is_grad_enabled() and any(p.requires_grad for p in params))
        key = tuple((p._version, p.data_ptr()) for p in params) if frozen else None
        if key is None or torch.compiler.is_compiling():
            fused = (torch.cat(params[:2]), torch.cat(params[2:]) if len(params) == 4 else None)
            return F.linear(x, *fused)
        if self._fused_key != key:
            with _outside_inference_mode():
                fused = (torch.cat(params[:2]), torch.cat(params[2:]) if len(params) == 4 else None)
            self._fused, self._fused_key = fused, key  # frozen: concatenated once, until the weights change
        return F.linear(x, *self._fused)

    def _band_mask(self, Wp: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (Wp, dtype, str(device))
        mask = self._band_masks.get(key)
        if mask is None:
            with _outside_inference_mode():  # the cache serves training too
                col = (torch.arange(Wp, device=device) // self.ws).repeat(self.ws)  # window column of each token
                blocked = col[:, None] != col[None, :]
                mask = torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill_(blocked, float("-inf"))
                mask = mask.view(1, 1, *blocked.shape)
            if not torch.compiler.is_compiling():
                self._band_masks[key] = mask
        return mask

    def hifi(self, qkv: torch.Tensor) -> torch.Tensor:
        """Hi-Fi attention: ``qkv (B, Hp, Wp, 3 * h_dim)`` (may be a strided view) -> ``(B, Hp, Wp, h_dim)``."""
        B, Hp, Wp, _ = qkv.shape
        s, nh, hd = self.ws, self.h_heads, self.head_dim
        drop = _dropout_p(self, self.attn_drop)
        if Wp // s <= self.band_max_windows:
            bands = qkv.reshape(B * (Hp // s), s * Wp, 3, nh, hd)
            q, k, v = (bands[:, :, i].transpose(1, 2) for i in range(3))  # (B*Hp/s, nh, s*Wp, hd) views
            mask = self._band_mask(Wp, q.dtype, q.device)
            out = _attention(q, k, v, mask, self.scale, drop)
            out = out.transpose(1, 2).reshape(B, Hp, Wp, self.h_dim)
        else:
            hg, wg = Hp // s, Wp // s
            win = qkv.reshape(B, hg, s, wg, s, 3, nh, hd).permute(5, 0, 1, 3, 6, 2, 4, 7)
            win = win.reshape(3, B * hg * wg, nh, s * s, hd)
            out = F.scaled_dot_product_attention(win[0], win[1], win[2], dropout_p=drop, scale=self.scale)
            out = out.view(B, hg, wg, nh, s, s, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, self.h_dim)
        return self._project(self.h_proj, out)

    def lofi(self, q: torch.Tensor, x_pad: torch.Tensor) -> torch.Tensor:
        """Lo-Fi attention: queries ``q (B, H, W, l_dim)`` (may be strided) against keys/values of the
        ``ws x ws`` average-pooled padded map ``x_pad (B, Hp, Wp, C)`` -> ``(B, H, W, l_dim)``."""
        B, H, W, _ = q.shape
        nh, hd, s = self.l_heads, self.head_dim, self.ws
        q = q.reshape(B, H * W, nh, hd).transpose(1, 2)  # (B, nh, N, hd)
        src = x_pad
        if s > 1:  # average pool, channels last in and out
            src = F.avg_pool2d(x_pad.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)
        kv = self._project(self.l_kv, src.reshape(B, -1, self.dim)).view(B, -1, 2, nh, hd)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)  # (B, nh, M, hd)
        out = _attention(q, k, v, None, self.scale, _dropout_p(self, self.attn_drop))
        return self._project(self.l_proj, out.transpose(1, 2).reshape(B, H, W, self.l_dim))

    def forward(self, x: torch.Tensor, H: Optional[int] = None, W: Optional[int] = None) -> torch.Tensor:
        grid, flat = _tokens_to_grid(self, x, H, W, self.dim)
        B, H, W, _ = grid.shape
        x_pad, pad_h, pad_w = pad_to_multiple(grid, self.ws) if self.ws > 1 else (grid, 0, 0)
        proj = self._input_projection(x_pad)  # (B, Hp, Wp, 3 h_dim + l_dim)
        outs = []
        if self.h_heads > 0:
            hi = self.hifi(proj[..., : 3 * self.h_dim])
            outs.append(hi[:, :H, :W] if pad_h or pad_w else hi)
        if self.l_heads > 0:
            q = proj[..., 3 * self.h_dim :]
            outs.append(self.lofi(q[:, :H, :W] if pad_h or pad_w else q, x_pad))
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


class WindowPlan(NamedTuple):
    """The order in which :class:`WindowAttention` visits the tokens of a ``(B, H, W)`` map.

    The map is padded to ``Hp x Wp`` (multiples of the window), cyclically shifted by
    ``-shift_size`` and cut into windows. Windows are grouped by the shape of their shifted-window
    mask (``type``: 0 inside, 1 last window column, 2 last window row, 3 the corner window; W-MSA
    has only type 0), and the rows ``T = B * nW * N`` of the window order run over
    ``[type][image][window][token in window]``, so that every group is one contiguous block of rows
    that shares one ``(heads, N, N)`` mask.

    Attributes:
        src: ``(T,)`` rows of the flattened ``(B * H * W, C)`` map in window order (padding points
            at row 0 and is zeroed with ``keep``); ``None`` when the window order is the
            map's own order (one window, no shift, no padding).
        inv: ``(B * H * W,)`` the window-order row of every token of the map; ``None`` likewise.
        keep: ``(T, 1)`` float, 0 on padding rows and 1 elsewhere; ``None`` without padding.
        groups: ``((first_row, end_row, type), ...)``.
    """

    B: int
    H: int
    W: int
    Hp: int
    Wp: int
    src: Optional[torch.Tensor]
    inv: Optional[torch.Tensor]
    keep: Optional[torch.Tensor]
    groups: Tuple[Tuple[int, int, int], ...]

    def chunks(self, window_tokens: int, max_rows: int) -> List[Tuple[int, int, int]]:
        """``(first_row, end_row, type)`` pieces of at most ``max_rows`` rows (whole windows, one type;
        a group is cut into pieces of equal size, so that no small remainder runs on its own)."""
        most = max(1, max_rows // window_tokens)
        pieces = []
        for first, end, t in self.groups:
            windows = (end - first) // window_tokens
            n = -(-windows // most)
            bounds = [first + (windows * i // n) * window_tokens for i in range(n + 1)]
            pieces += [(a, b, t) for a, b in zip(bounds[:-1], bounds[1:])]
        return pieces


class WindowAttention(nn.Module):
    r"""Swin's window attention (W-MSA) with relative position bias; SW-MSA when ``shift_size > 0``.

    The map is zero-padded on the bottom/right to a multiple of the window, cyclically shifted by
    ``-shift_size`` (SW-MSA), split into windows, attended with the relative position bias plus,
    when shifted, the mask that keeps tokens from non-adjacent regions apart (-100), then shifted
    back and cropped. Parameter and buffer names follow the official Swin code (``qkv``, ``proj``,
    ``relative_position_bias_table``, ``relative_position_index``).

    How it runs: padding, shift and window partition are one row gather of the input (a cached
    :class:`WindowPlan`), the projections run on the gathered rows, and attention is one
    :func:`~torch.nn.functional.scaled_dot_product_attention` call per mask shape (one for W-MSA,
    at most four for SW-MSA) on strided views of the qkv projection, with the relative position
    bias and the shifted-window mask folded into one additive ``(1, heads, N, N)`` mask; the output
    is gathered back to the map's order. Plans and masks are built once per size; in inference
    (no autograd) the folded masks are cached until the bias table changes. In bfloat16 CPU
    inference the windows are attended by the short-key path of :func:`_attention` instead of
    the fused kernel (about 1.3x faster there).

    Args:
        dim: channels C; num_heads: heads; window_size: int or (wh, ww);
        shift_size: int or pair, 0 for W-MSA, each less than the window;
        qkv_bias, qk_scale, attn_drop, proj_drop: as in Swin.

    Shape:
        ``forward(x)``: ``(B, H, W, C) -> (B, H, W, C)``, any H, W.
    """

    _PLAN_CACHE_SIZE = 8

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
        self.window_tokens = wh * ww
        self.scale = qk_scale or self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self._plan_cache: OrderedDict[tuple, WindowPlan] = OrderedDict()
        self._type_mask_cache: Dict[tuple, torch.Tensor] = {}
        self._mask_cache: Dict[tuple, torch.Tensor] = {}

    @property
    def shifted(self) -> bool:
        return any(self.shift_size)

    def __getstate__(self):  # copies and pickles leave the size caches behind
        state = self.__dict__.copy()
        state.update(_plan_cache=OrderedDict(), _type_mask_cache={}, _mask_cache={})
        return state

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
            f"shift_size={self.shift_size}"
        )

    # ---- sizes -> plans and masks (cached) -------------------------------------------------
    def padded_size(self, H: int, W: int) -> Tuple[int, int]:
        wh, ww = self.window_size
        return wh * math.ceil(H / wh), ww * math.ceil(W / ww)

    def window_plan(self, B: int, H: int, W: int, device: torch.device) -> WindowPlan:
        """The cached :class:`WindowPlan` for a ``(B, H, W)`` map (built once per size)."""
        key = (B, H, W, str(device))
        plan = self._plan_cache.get(key)
        if plan is None:
            with _outside_inference_mode():  # the cache serves training too
                plan = self._build_plan(B, H, W, torch.device(device))
            self._plan_cache[key] = plan
            while len(self._plan_cache) > self._PLAN_CACHE_SIZE:
                self._plan_cache.popitem(last=False)
        else:
            self._plan_cache.move_to_end(key)
        return plan

    def _window_types(self, hg: int, wg: int) -> List[int]:
        """Mask type of each window, row-major: 2 * (last window row) + (last window column)."""
        sh, sw = self.shift_size
        return [2 * int(sh > 0 and a == hg - 1) + int(sw > 0 and c == wg - 1) for a in range(hg) for c in range(wg)]

    def _build_plan(self, B: int, H: int, W: int, device: torch.device) -> WindowPlan:
        # Index arithmetic only (no data-dependent ops), so that tracing and compiling see constants.
        wh, ww = self.window_size
        sh, sw = self.shift_size
        Hp, Wp = self.padded_size(H, W)
        hg, wg, N = Hp // wh, Wp // ww, self.window_tokens
        if hg == 1 and wg == 1 and Hp == H and Wp == W and not self.shifted:
            return WindowPlan(B, H, W, Hp, Wp, None, None, None, ((0, B * H * W, 0),))
        ar = functools.partial(torch.arange, device=device)
        # map position of every (window row, window col, row in window, col in window) after the shift
        h = (ar(hg).view(hg, 1, 1, 1) * wh + ar(wh).view(1, 1, wh, 1) + sh) % Hp
        w = (ar(wg).view(1, wg, 1, 1) * ww + ar(ww).view(1, 1, 1, ww) + sw) % Wp
        h, w = torch.broadcast_tensors(h, w)
        real = ((h < H) & (w < W)).reshape(hg * wg, N)
        pos = torch.where(real, (h * W + w).reshape(hg * wg, N), 0)
        types = self._window_types(hg, wg)
        members: List[List[int]] = [[], [], [], []]
        rank = []
        for k, t in enumerate(types):  # windows of each type in row-major order, and each one's rank there
            rank.append(len(members[t]))
            members[t].append(k)
        base = ar(B).view(B, 1, 1) * (H * W)
        src, is_real, groups, starts, row = [], [], [], [0] * 4, 0
        for t in range(4):
            if not members[t]:
                continue
            sel = torch.tensor(members[t], device=device)
            src.append((base + pos[sel]).flatten())
            is_real.append(real[sel].expand(B, -1, -1).flatten())
            starts[t] = row
            groups.append((row, row + B * len(members[t]) * N, t))
            row += B * len(members[t]) * N
        # the window-order row of every map token: its type's rows, then image, window rank, place in window
        hs = (ar(H).view(H, 1) - sh) % Hp
        ws = (ar(W).view(1, W) - sw) % Wp
        win = (hs // wh) * wg + ws // ww  # (H, W)
        tw = torch.tensor(types, device=device)[win]
        per_image = torch.tensor([len(m) * N for m in members], device=device)[tw]
        inv = (
            torch.tensor(starts, device=device)[tw]
            + torch.tensor(rank, device=device)[win] * N
            + (hs % wh) * ww
            + ws % ww
        )
        inv = (inv + ar(B).view(B, 1, 1) * per_image).flatten()
        keep = None
        if Hp != H or Wp != W:
            keep = torch.cat(is_real).to(torch.float32).unsqueeze(1)
        return WindowPlan(B, H, W, Hp, Wp, torch.cat(src), inv, keep, tuple(groups))

    def relative_position_bias(self) -> torch.Tensor:
        """The bias ``(heads, N, N)`` for one window, gathered from the table (differentiable)."""
        N = self.window_tokens
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(N, N, self.num_heads).permute(2, 0, 1)

    def shift_mask(self, Hp: int, Wp: int, device: torch.device) -> torch.Tensor:
        """The official shifted-window mask ``(nW, N, N)`` (0 / -100) for a padded ``Hp x Wp`` map."""
        return shifted_window_mask(Hp, Wp, self.window_size, self.shift_size, device=device)

    def type_masks(self, Hp: int, Wp: int, device: torch.device) -> torch.Tensor:
        """``(4, N, N)``: the shifted-window mask of each window type (zeros for W-MSA); cached."""
        key = (Hp, Wp, str(device))
        masks = self._type_mask_cache.get(key)
        if masks is None:
            N = self.window_tokens
            with _outside_inference_mode():  # the cache serves training too
                masks = torch.zeros(4, N, N, device=device)
                if self.shifted:
                    full = self.shift_mask(Hp, Wp, device)  # (nW, N, N), windows row-major
                    types = self._window_types(Hp // self.window_size[0], Wp // self.window_size[1])
                    for t in range(4):
                        if t in types:
                            masks[t] = full[types.index(t)]
            self._type_mask_cache[key] = masks
        return masks

    def group_masks(self, Hp: int, Wp: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The additive SDPA masks ``(4, heads, N, N)``: bias + type mask (``[t : t + 1]`` is 4-D).

        Built from the table at every call when autograd needs it; otherwise cached until the
        table changes (in-place updates included).
        """
        table = self.relative_position_bias_table
        cacheable = not (torch.is_grad_enabled() and table.requires_grad) and not torch.compiler.is_compiling()
        if cacheable:  # the latest size per dtype and device (float32 and bfloat16 runs do not evict each other)
            slot, key = (dtype, str(device)), (Hp, Wp, table._version, table.data_ptr())
            hit = self._mask_cache.get(slot)
            if hit is not None and hit[0] == key:
                return hit[1]
        with _outside_inference_mode() if cacheable else contextlib.nullcontext():
            bias = self.relative_position_bias()
            if self.shifted:
                masks = bias.unsqueeze(0) + self.type_masks(Hp, Wp, device).unsqueeze(1)
            else:
                masks = bias.unsqueeze(0)
            masks = masks.to(dtype, memory_format=torch.contiguous_format)  # the gather leaves heads innermost
        if cacheable:
            self._mask_cache[slot] = (key, masks)
        return masks

    # ---- compute ------------------------------------------------------------------------------
    def window_attention(self, qkv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attention within windows: ``qkv (n * N, 3C)`` rows of whole windows sharing one mask
        ``(1, heads, N, N)`` -> ``(n * N, C)``, before the output projection."""
        N, nh, hd = self.window_tokens, self.num_heads, self.head_dim
        n = qkv.shape[0] // N
        q, k, v = qkv.view(n, N, 3, nh, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (n, nh, N, hd) views, no copy
        out = _attention(
            q, k, v, mask.to(q.dtype), self.scale, _dropout_p(self, self.attn_drop)
        )  # (n, nh, N, hd), stored as (n, N, nh, hd)
        return out.transpose(1, 2).reshape(n * N, self.dim)

    def attend_rows(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """qkv projection and attention for rows ``(n * N, C)`` of whole windows sharing one
        ``(1, heads, N, N)`` mask; returns ``(n * N, C)`` before the output projection."""
        return self.window_attention(self.qkv(x), mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_grid(self, x, self.dim)
        B, H, W, C = x.shape
        plan = self.window_plan(B, H, W, x.device)
        rows = x.reshape(B * H * W, C)
        if plan.src is not None:
            rows = rows.index_select(0, plan.src)  # pad + shift + window partition in one gather
        if plan.keep is not None:
            rows = rows * plan.keep.to(rows.dtype)  # zero padding, as the official code pads
        masks = self.group_masks(plan.Hp, plan.Wp, _compute_dtype(x, self.qkv.weight), x.device)
        outs = [self.attend_rows(rows[s:e], masks[t : t + 1]) for s, e, t in plan.groups]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        if plan.inv is not None:
            out = out.index_select(0, plan.inv)  # back to the map's order; drops the padding
        return self.proj_drop(self.proj(out)).view(B, H, W, C)

    def flops(self, H: int, W: Optional[int] = None) -> int:
        """Multiply-adds over the padded map: qkv, both attention products, proj (official formula).

        What runs projects only the real tokens in ``proj``, so with padding the executed count
        is a little smaller.
        """
        W = H if W is None else W
        Hp, Wp = self.padded_size(H, W)
        N = self.window_tokens
        nW = (Hp // self.window_size[0]) * (Wp // self.window_size[1])
        C = self.dim
        per_window = N * C * 3 * C + 2 * self.num_heads * N * N * self.head_dim + N * C * C
        return int(nW * per_window)
