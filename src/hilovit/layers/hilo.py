"""HiLo attention (Pan et al., "Fast Vision Transformers with HiLo Attention", NeurIPS 2022)."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.layers import fast
from hilovit.layers.attention import check_dim_heads, tokens_to_grid
from hilovit.layers.windows import pad_to_multiple
from hilovit.options import check_int

__all__ = ["HiLo"]


class HiLo(nn.Module):
    r"""HiLo attention: Hi-Fi heads in local windows, Lo-Fi heads global.

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

    The projections and the attention go through :mod:`hilovit.layers.fast`: in CPU inference
    they run on oneDNN with weights cast (bfloat16) and packed once, and narrow maps attend their
    Hi-Fi windows a band of rows at a time; short key sequences (the windows, the pooled keys) attend
    by two batched products on the CPU in inference and in training (:func:`hilovit.layers.fast.attention`);
    everywhere else they are the plain modules and
    :func:`~torch.nn.functional.scaled_dot_product_attention`.

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
        check_dim_heads(dim, num_heads)
        check_int(window_size, "window_size", minimum=1)
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

    def _linear(self, x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        return fast.dense(x, layer) if fast.why_not_fast(x, self) else fast.linear(x, layer)

    def _drop(self) -> float:
        return self.attn_drop if self.training else 0.0

    def hifi(self, x: torch.Tensor) -> torch.Tensor:
        """Hi-Fi: attention within ``ws x ws`` windows of ``x (B, Hp, Wp, C)`` (sides multiples of
        ``ws``) -> ``(B, Hp, Wp, h_dim)`` after ``h_proj``."""
        B, Hp, Wp, _ = x.shape
        s, nh, hd = self.ws, self.h_heads, self.head_dim
        qkv = self._linear(x, self.h_qkv)  # (B, Hp, Wp, 3 h_dim)
        if fast.hifi_band_windows(x, Wp // s):  # a band of s rows at a time, windows kept apart by a mask
            bands = qkv.reshape(B * (Hp // s), s * Wp, 3, nh, hd)
            q, k, v = (bands[:, :, i].transpose(1, 2) for i in range(3))  # (B Hp/s, nh, s Wp, hd) views
            out = fast.attention(q, k, v, self._band_mask(Wp, q.dtype, q.device), self.scale, self._drop())
            out = out.transpose(1, 2).reshape(B, Hp, Wp, self.h_dim)
        else:  # the windows cut out, as the official code does
            hg, wg = Hp // s, Wp // s
            win = qkv.reshape(B, hg, s, wg, s, 3, nh, hd).permute(5, 0, 1, 3, 6, 2, 4, 7)
            win = win.reshape(3, B * hg * wg, nh, s * s, hd)
            out = fast.attention(win[0], win[1], win[2], None, self.scale, self._drop())
            out = out.reshape(B, hg, wg, nh, s, s, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, self.h_dim)
        return self._linear(out, self.h_proj)

    def lofi(self, x: torch.Tensor) -> torch.Tensor:
        """Lo-Fi: every position of ``x (B, Hp, Wp, C)`` attends to keys and values of the map
        average-pooled over ``ws x ws`` cells -> ``(B, Hp, Wp, l_dim)`` after ``l_proj``."""
        B, Hp, Wp, _ = x.shape
        nh, hd = self.l_heads, self.head_dim
        q = self._linear(x, self.l_q).reshape(B, Hp * Wp, nh, hd).transpose(1, 2)  # (B, nh, N, hd)
        k, v = self._lofi_keys(x)
        out = fast.attention(q, k, v, None, self.scale, self._drop())
        return self._linear(out.transpose(1, 2).reshape(B, Hp, Wp, self.l_dim), self.l_proj)

    def _lofi_keys(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``(B, l_heads, M, head_dim)`` of the pooled map (``M = Hp Wp / ws^2``)."""
        if self.ws > 1:  # average pool, channels last in and out
            x = F.avg_pool2d(x.permute(0, 3, 1, 2), self.ws).permute(0, 2, 3, 1)
        B, M = x.shape[0], x.shape[1] * x.shape[2]  # explicit sizes: an empty batch has no -1 to infer
        kv = self._linear(x.reshape(B, M, self.dim), self.l_kv).view(B, M, 2, self.l_heads, self.head_dim)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)

    def forward(self, x: torch.Tensor, H: Optional[int] = None, W: Optional[int] = None) -> torch.Tensor:
        grid, flat = tokens_to_grid(self, x, H, W, self.dim)
        B, H, W, C = grid.shape
        x = pad_to_multiple(grid, self.ws)[0] if self.ws > 1 else grid  # traced: the padding stays symbolic
        if self.h_heads == 0:
            out = self.lofi(x)
        elif self.l_heads == 0:
            out = self.hifi(x)
        else:
            out = torch.cat((self.hifi(x), self.lofi(x)), dim=-1)
        if out.shape[1] != H or out.shape[2] != W or fast.tracing():
            out = out[:, :H, :W]
        out = self.proj_drop(out)
        return out.reshape(B, H * W, C) if flat else out

    def lofi_attention_weights(self, x: torch.Tensor, position: Tuple[int, int]) -> torch.Tensor:
        """The Lo-Fi attention weights of one query over the pooled keys: ``(l_heads, Hp / ws, Wp / ws)``.

        ``x``: the input of :meth:`lofi` ``(B, Hp, Wp, C)`` (first image used); ``position``: the
        query's ``(row, col)``. Computed in float32 from the module's own projections.
        """
        if self.l_heads == 0:
            raise ValueError("HiLo.lofi_attention_weights: this HiLo has no Lo-Fi heads (alpha = 0)")
        y, col = position
        if not (0 <= y < x.shape[1] and 0 <= col < x.shape[2]):
            raise ValueError(f"position {position} lies outside the {x.shape[1]}x{x.shape[2]} map")
        with torch.no_grad(), fast.fast_inference(False):
            x = x[:1].float()
            k, _ = self._lofi_keys(x)  # (1, nh, M, hd)
            q = self.l_q(x[0, y, col]).view(self.l_heads, 1, self.head_dim)
            logits = (q @ k[0].float().transpose(-1, -2)).squeeze(1) * self.scale
        Hk, Wk = x.shape[1] // self.ws, x.shape[2] // self.ws
        return logits.softmax(dim=-1).view(self.l_heads, Hk, Wk)

    def _band_mask(self, Wp: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """``(1, 1, s Wp, s Wp)``: 0 between tokens of one window of a band of ``s`` rows, -inf elsewhere."""

        def build():
            col = (torch.arange(Wp, device=device) // self.ws).repeat(self.ws)  # window column of each token
            blocked = col[:, None] != col[None, :]
            mask = torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill_(blocked, float("-inf"))
            return mask.view(1, 1, *blocked.shape)

        return fast.cached(self, ("band mask", Wp, dtype, str(device)), (), build)

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
