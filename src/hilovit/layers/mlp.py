"""Feed-forward blocks."""

from __future__ import annotations

from typing import Optional, Type

import torch
import torch.nn as nn

from hilovit.layers import fast

__all__ = ["Mlp", "ConvFFN", "DWConv"]


class Mlp(nn.Module):
    """Two linear layers with an activation between: ``fc1 -> act -> drop -> fc2 -> drop``.

    Args:
        in_features: input channels C; hidden_features: default C; out_features: default C;
        act_layer: activation class (GELU); drop: dropout probability.

    Shape:
        ``(..., C) -> (..., out_features)`` (any leading dims, e.g. ``(B, H, W, C)``).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: Type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, shortcut: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``shortcut``: a tensor of the output's shape added to the result (a block's residual)."""
        if not fast.why_not_fast(x, self):
            return self._forward_fast(x, shortcut)
        out = self.drop(fast.dense(self.drop(self.act(fast.dense(x, self.fc1))), self.fc2))
        return out if shortcut is None else shortcut + out

    def _forward_fast(self, x: torch.Tensor, shortcut: Optional[torch.Tensor]) -> torch.Tensor:
        # rows in pieces of about 16 MB of float32 hidden activations, which stay in cache; the
        # bias, GELU and residual inside the products (see hilovit.layers.fast.linear)
        rows = x.reshape(-1, x.shape[-1])
        res = None if shortcut is None else shortcut.reshape(-1, shortcut.shape[-1])
        step = max(1024, (16 << 20) // (4 * self.fc1.out_features))
        if rows.shape[0] <= step:
            out = fast.linear(fast.linear(rows, self.fc1, act=self.act), self.fc2, residual=res)
        else:
            out = torch.empty(rows.shape[0], self.fc2.out_features, dtype=fast.compute_dtype(x), device=x.device)
            for s in range(0, rows.shape[0], step):
                r = None if res is None else res[s:s + step]
                out[s:s + step] = fast.linear(fast.linear(rows[s:s + step], self.fc1, act=self.act), self.fc2,
                                              residual=r)
        return out.view(*x.shape[:-1], self.fc2.out_features)


class DWConv(nn.Module):
    """Depth-wise 3x3 convolution (stride 1, padding 1, bias) on a channels-last map.

    The convolution runs on the ``(B, C, H, W)`` permuted *view* of the ``(B, H, W, C)`` input,
    which is in ``channels_last`` memory format, so no copy is made in either direction.
    The parameters are ``dwconv.{weight,bias}`` as in the official LITv2 ``DWConv``.

    Shape:
        ``(B, H, W, C) -> (B, H, W, C)``.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class ConvFFN(Mlp):
    """LITv2's feed-forward network: ``fc1 -> depth-wise 3x3 conv -> act -> drop -> fc2 -> drop``.

    The depth-wise convolution between the two linear layers (on the hidden channels) gives the
    FFN the local positional information that LITv2 uses instead of position embeddings.
    Parameter names follow the official ``DWMlp`` (``fc1``, ``dwconv.dwconv``, ``fc2``), so official
    state dicts load unchanged.

    ``shortcut``: a tensor of the output's shape added to the result (the block's residual), which
    the fast inference path adds inside ``fc2``. On that path (:mod:`hilovit.layers.fast`: CPU,
    eval mode, no autograd) the FFN runs as three fused oneDNN kernels: ``fc1`` with its bias, the
    depth-wise conv with its bias and GELU, ``fc2`` with its bias and the shortcut; under CPU
    autocast they run in bfloat16 (the result is bfloat16, as autocast's would be).

    Args:
        in_features: input channels C; hidden_features: default C; out_features: default C;
        act_layer: activation class (GELU); drop: dropout probability.

    Shape:
        ``forward(x)``: ``(B, H, W, C) -> (B, H, W, out_features)``;
        ``forward(x, H, W)``: ``(B, N = H * W, C) -> (B, N, out_features)`` (the official call).

    Example::

        >>> ffn = ConvFFN(64, 256)
        >>> ffn(torch.randn(2, 7, 9, 64)).shape
        torch.Size([2, 7, 9, 64])
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Optional[int] = None,
        out_features: Optional[int] = None,
        act_layer: Type[nn.Module] = nn.GELU,
        drop: float = 0.0,
    ):
        super().__init__(in_features, hidden_features, out_features, act_layer, drop)
        self.in_features, self.hidden_features, self.out_features = (
            in_features, self.fc1.out_features, self.fc2.out_features
        )
        self.dwconv = DWConv(self.hidden_features)

    def forward(
        self,
        x: torch.Tensor,
        H: Optional[int] = None,
        W: Optional[int] = None,
        shortcut: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        flat = x.dim() == 3
        if flat:  # the official (B, N, C) call with H, W
            if H is None or W is None or x.shape[1] != H * W:
                raise ValueError(
                    f"ConvFFN: x of shape {tuple(x.shape)} is (B, N, C); pass H and W with H * W == N "
                    f"(got H={H}, W={W})"
                )
            x = x.reshape(x.shape[0], H, W, x.shape[2])
        elif x.dim() != 4:
            raise ValueError(f"ConvFFN: expected x of shape (B, H, W, C) or (B, N, C), got {tuple(x.shape)}")
        if x.shape[-1] != self.in_features:
            raise ValueError(f"ConvFFN: expected {self.in_features} channels in the last dim, got {tuple(x.shape)}")
        if shortcut is not None and flat:
            shortcut = shortcut.reshape(x.shape[:3] + (shortcut.shape[-1],))
        if not fast.why_not_fast(x, self):
            out = self._forward_fast(x, shortcut)
        else:
            out = fast.dense(x, self.fc1)
            out = self.drop(self.act(self.dwconv(out)))
            out = self.drop(fast.dense(out, self.fc2))
            if shortcut is not None:
                out = shortcut + out
        return out.flatten(1, 2) if flat else out

    def _forward_fast(self, x: torch.Tensor, shortcut: Optional[torch.Tensor]) -> torch.Tensor:
        h = fast.linear(x, self.fc1)
        h = fast.conv2d(h.permute(0, 3, 1, 2), self.dwconv.dwconv, act=self.act).permute(0, 2, 3, 1)
        out = fast.linear(h, self.fc2, residual=shortcut)
        if shortcut is not None:
            out = out.to(torch.promote_types(shortcut.dtype, out.dtype))  # as ``shortcut + out`` would be
        return out

    def flops(self, H: int, W: Optional[int] = None) -> int:
        """Multiply-adds for an ``H x W`` map: ``fc1`` + ``fc2`` + the depth-wise conv (9 per output)."""
        W = H if W is None else W
        n = H * W
        return int(n * self.in_features * self.hidden_features + n * self.hidden_features * self.out_features
                   + n * self.hidden_features * 9)
