"""Swin's window attention (W-MSA / SW-MSA): the one window-attention path.

:class:`WindowAttention` owns the computation. Training and inference share one formulation (a
cached :class:`WindowPlan` gathers the padded, shifted, partitioned map in one step); in CPU
inference (:mod:`hilovit.layers.fast`) the windows run a few hundred at a time through oneDNN's
kernels, inside the module, so hooks on it see every call. While tracing (ONNX export) the module
runs the official formulation by reshapes, which keeps the batch size symbolic
(:meth:`WindowAttention.forward_windows`); :meth:`WindowAttention.attention_weights` gives one
query's weights for pictures.
"""

from __future__ import annotations

import functools
import math
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.layers import fast
from hilovit.layers.attention import check_dim_heads, check_grid
from hilovit.layers.windows import (
    IntOrPair,
    pad_to_multiple,
    relative_position_index,
    shifted_window_mask,
    to_2tuple,
    window_partition,
    window_reverse,
)

__all__ = ["WindowAttention", "WindowPlan"]


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
    :class:`WindowPlan`), the projections run on the gathered rows, and attention is one call per
    mask shape (one for W-MSA, at most four for SW-MSA) on strided views of the qkv projection, with
    the relative position bias and the shifted-window mask folded into one additive
    ``(1, heads, N, N)`` mask; the output is gathered back to the map's order. Plans and masks are
    built once per size; without autograd the folded masks are kept until the bias table changes.
    In CPU inference (:func:`hilovit.layers.fast.why_not_fast`) the windows go through the
    projections and the attention ``chunk_rows`` rows at a time (whole windows, so the temporaries
    stay in cache), on oneDNN's kernels. While tracing (ONNX export) :meth:`forward_windows` runs
    instead: the same function by reshapes, with the batch size left symbolic.

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
        check_dim_heads(dim, num_heads)
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
        # rows per piece in inference: about 12 MB of float32 qkv activations
        self.chunk_rows = max(1024, (12 << 20) // (4 * 3 * dim))

    @property
    def shifted(self) -> bool:
        return any(self.shift_size)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, num_heads={self.num_heads}, window_size={self.window_size}, "
            f"shift_size={self.shift_size}"
        )

    # ---- sizes -> plans and masks (kept by the fast path's cache) ---------------------------
    def padded_size(self, H: int, W: int) -> Tuple[int, int]:
        wh, ww = self.window_size
        return wh * math.ceil(H / wh), ww * math.ceil(W / ww)

    def window_plan(self, B: int, H: int, W: int, device: torch.device) -> WindowPlan:
        """The :class:`WindowPlan` for a ``(B, H, W)`` map (built once per size)."""
        return fast.cached(self, ("plan", B, H, W, str(device)), (),
                           lambda: self._build_plan(B, H, W, torch.device(device)))

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

        def build():
            N = self.window_tokens
            masks = torch.zeros(4, N, N, device=device)
            if self.shifted:
                full = self.shift_mask(Hp, Wp, device)  # (nW, N, N), windows row-major
                types = self._window_types(Hp // self.window_size[0], Wp // self.window_size[1])
                for t in range(4):
                    if t in types:
                        masks[t] = full[types.index(t)]
            return masks

        return fast.cached(self, ("type masks", Hp, Wp, str(device)), (), build)

    def group_masks(self, Hp: int, Wp: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The additive attention masks ``(4, heads, N, N)``: bias + type mask (``[t : t + 1]`` is 4-D).

        Built from the table at every call when autograd needs it; otherwise cached until the
        table changes (in-place updates included).
        """

        def build():
            bias = self.relative_position_bias()
            masks = bias.unsqueeze(0) + self.type_masks(Hp, Wp, device).unsqueeze(1) if self.shifted else bias[None]
            return masks.to(dtype, memory_format=torch.contiguous_format)  # the gather leaves heads innermost

        table = self.relative_position_bias_table
        if torch.is_grad_enabled() and table.requires_grad:
            return build()
        return fast.cached(self, ("masks", Hp, Wp, dtype, str(device)), (table,), build)

    # ---- compute ------------------------------------------------------------------------------
    def window_attention(self, qkv: torch.Tensor, mask: torch.Tensor,
                         out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Attention within windows: ``qkv (n * N, 3C)`` rows of whole windows sharing one mask
        ``(1, heads, N, N)`` -> ``(n * N, C)``, before the output projection; written into ``out``
        (contiguous, ``(n * N, C)``) when given."""
        N, nh, hd = self.window_tokens, self.num_heads, self.head_dim
        n = qkv.shape[0] // N
        q, k, v = qkv.view(n, N, 3, nh, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (n, nh, N, hd) views, no copy
        drop = self.attn_drop if self.training else 0.0
        into = None if out is None else out.view(n, N, nh, hd).transpose(1, 2)
        att = fast.attention(q, k, v, mask.to(q.dtype), self.scale, drop, out=into)  # (n, nh, N, hd)
        if out is None:
            return att.transpose(1, 2).reshape(n * N, self.dim)
        if att is not into:
            into.copy_(att)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_grid(self, x, self.dim)
        if fast.tracing():
            return self.forward_windows(x)
        B, H, W, C = x.shape
        plan = self.window_plan(B, H, W, x.device)
        inference = not fast.why_not_fast(x, self)
        cd = fast.compute_dtype(x, self.qkv.weight)
        rows = x.reshape(B * H * W, C)
        if inference:
            rows = rows.to(cd)
        if plan.src is not None:
            rows = rows.index_select(0, plan.src)  # pad + shift + window partition in one gather
        if plan.keep is not None:
            rows = rows * plan.keep.to(rows.dtype)  # zero padding, as the official code pads
        masks = self.group_masks(plan.Hp, plan.Wp, cd, x.device)
        if inference:  # pieces of whole windows, written in place
            out = rows.new_empty(rows.shape)
            for s, e, t in plan.chunks(self.window_tokens, self.chunk_rows):
                self.window_attention(fast.linear(rows[s:e], self.qkv), masks[t : t + 1], out=out[s:e])
        else:
            outs = [self.window_attention(fast.dense(rows[s:e], self.qkv), masks[t : t + 1]) for s, e, t in plan.groups]
            out = outs[0] if len(outs) == 1 else torch.cat(outs)
        if plan.inv is not None:
            out = out.index_select(0, plan.inv)  # back to the map's order; drops the padding
        out = fast.linear(out, self.proj) if inference else fast.dense(out, self.proj)
        return self.proj_drop(out).view(B, H, W, C)

    def forward_windows(self, x: torch.Tensor) -> torch.Tensor:
        """The official formulation by reshapes (pad, cyclic shift, window partition, attention with
        bias and mask, reverse, crop): the same function as :meth:`forward`, with no index plan, so a
        trace keeps the batch size symbolic. ``forward`` runs it while tracing (ONNX export)."""
        check_grid(self, x, self.dim)
        H, W, C = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        Hp, Wp = self.padded_size(H, W)
        nW, N, nh, hd = (Hp // wh) * (Wp // ww), self.window_tokens, self.num_heads, self.head_dim
        x, _, _ = pad_to_multiple(x, self.window_size)
        if self.shifted:
            x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
        win = window_partition(x, self.window_size).reshape(-1, nW, N, C)  # (B, nW, N, C)
        qkv = self.qkv(win).reshape(-1, nW, N, 3, nh, hd).permute(3, 0, 1, 4, 2, 5)  # (3, B, nW, nh, N, hd)
        q, k, v = (t.reshape(-1, nW * nh, N, hd) for t in qkv.unbind(0))
        mask = self.relative_position_bias().unsqueeze(0)  # (1, nh, N, N)
        if self.shifted:
            mask = mask + _region_mask(Hp, Wp, self.window_size, self.shift_size, x.device).unsqueeze(1)
        mask = mask.expand(nW, nh, N, N).reshape(1, nW * nh, N, N).to(q.dtype)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, scale=self.scale)
        out = out.reshape(-1, nW, nh, N, hd).transpose(2, 3).reshape(-1, wh, ww, C)
        x = window_reverse(out, self.window_size, Hp, Wp)
        if self.shifted:
            x = torch.roll(x, shifts=(sh, sw), dims=(1, 2))
        if Hp != H or Wp != W:
            x = x[:, :H, :W]
        return self.proj_drop(self.proj(x))

    def attention_weights(self, x: torch.Tensor, position: Tuple[int, int]) -> torch.Tensor:
        """The attention weights of one query on the token map: ``(heads, H, W)``, 0 outside its window.

        ``x``: the module's input ``(B, H, W, C)`` (first image used); ``position``: the query's
        ``(row, col)``. The weights are the module's own (relative position bias and, for shifted
        windows, the region mask), computed in float32 by :meth:`forward_windows`'s steps.
        """
        check_grid(self, x, self.dim)
        H, W = int(x.shape[1]), int(x.shape[2])
        y, c = position
        if not (0 <= y < H and 0 <= c < W):
            raise ValueError(f"position {position} lies outside the {H}x{W} map")
        (wh, ww), (sh, sw) = self.window_size, self.shift_size
        Hp, Wp = self.padded_size(H, W)
        ys, xs = (y - sh) % Hp, (c - sw) % Wp  # the query after the cyclic shift by -shift
        r0, c0 = ys // wh * wh, xs // ww * ww
        rows = (torch.arange(r0, r0 + wh) + sh) % Hp  # map rows / cols of the window's tokens
        cols = (torch.arange(c0, c0 + ww) + sw) % Wp
        xp, _, _ = pad_to_multiple(x[:1].float(), self.window_size)
        tokens = xp[0][rows][:, cols].reshape(wh * ww, -1)
        nh, hd = self.num_heads, self.head_dim
        with torch.no_grad(), fast.fast_inference(False):
            q, k, _ = F.linear(tokens, self.qkv.weight.float(), None if self.qkv.bias is None
                               else self.qkv.bias.float()).view(wh * ww, 3, nh, hd).unbind(1)
            logits = torch.einsum("nhd,mhd->hnm", q, k) * self.scale + self.relative_position_bias().float()
            if self.shifted:
                window = (r0 // wh) * (Wp // ww) + c0 // ww
                logits = logits + self.shift_mask(Hp, Wp, logits.device)[window]
        n = (ys - r0) * ww + (xs - c0)
        weights = logits[:, n].softmax(dim=-1).view(nh, wh, ww)
        out = torch.zeros(nh, Hp, Wp)
        out[:, rows[:, None], cols[None, :]] = weights.cpu()
        return out[:, :H, :W]

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


def _region_mask(Hp: int, Wp: int, window_size: Tuple[int, int], shift_size: Tuple[int, int],
                 device: torch.device) -> torch.Tensor:
    """The shifted-window mask ``(nW, N, N)`` (0 / -100) by arithmetic on positions, without the
    slice assignments of :func:`~hilovit.layers.windows.shifted_window_mask` (the same values), so
    that a trace records only constant-foldable ops."""
    (wh, ww), (sh, sw) = window_size, shift_size

    def region(n: int, w: int, s: int) -> torch.Tensor:  # 0, 1, 2: the three bands of one axis
        i = torch.arange(n, device=device)
        return (i >= n - w).long() + ((i >= n - s).long() if s else 0)

    ids = (region(Hp, wh, sh)[:, None] * 3 + region(Wp, ww, sw)[None, :]).view(1, Hp, Wp, 1)
    ids = window_partition(ids, window_size).flatten(1)  # (nW, N)
    return (ids[:, None, :] != ids[:, :, None]).float() * -100.0
