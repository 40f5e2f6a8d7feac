"""Window helpers shared by window attention (Swin) and HiLo's Hi-Fi branch.

Token grids are channels-last ``(B, H, W, C)``. Windows are ordered row-major over the grid
(window row, then window column) exactly as in the official Swin code, so masks and
relative position indices computed here line up with official checkpoints.
"""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F

from hilovit.layers import fast

__all__ = [
    "to_2tuple",
    "pad_to_multiple",
    "window_partition",
    "window_reverse",
    "shifted_window_mask",
    "relative_position_index",
]

IntOrPair = Union[int, Tuple[int, int]]


def to_2tuple(value: IntOrPair, name: str = "value") -> Tuple[int, int]:
    """Return ``(value, value)`` for an int, or the pair itself, checking both are ints."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def pad_to_multiple(x: torch.Tensor, multiple: IntOrPair) -> Tuple[torch.Tensor, int, int]:
    """Zero-pad a ``(B, H, W, C)`` map on the bottom and right to multiples of ``multiple``.

    Returns the padded map and the padding added to H and to W (both 0 when already divisible,
    in which case ``x`` itself is returned).
    """
    mh, mw = to_2tuple(multiple, "multiple")
    H, W = x.shape[1], x.shape[2]
    pad_h = (mh - H % mh) % mh
    pad_w = (mw - W % mw) % mw
    if pad_h or pad_w or fast.tracing():  # a trace keeps the padding symbolic, even when 0 at trace time
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x, pad_h, pad_w


def window_partition(x: torch.Tensor, window_size: IntOrPair) -> torch.Tensor:
    """Split ``(B, H, W, C)`` into windows ``(B * nW, wh, ww, C)``; H, W must be multiples."""
    wh, ww = to_2tuple(window_size, "window_size")
    B, H, W, C = x.shape
    if H % wh or W % ww:
        raise ValueError(f"window_partition: map {H}x{W} is not a multiple of the window {wh}x{ww}")
    x = x.view(B, H // wh, wh, W // ww, ww, C).transpose(2, 3)
    return x.reshape(B * (H // wh) * (W // ww), wh, ww, C)  # sizes spelt out: B may be 0


def window_reverse(windows: torch.Tensor, window_size: IntOrPair, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, wh, ww, C)`` -> ``(B, H, W, C)``."""
    wh, ww = to_2tuple(window_size, "window_size")
    C = windows.shape[-1]
    B = windows.shape[0] // ((H // wh) * (W // ww))  # spelt out: a -1 cannot be inferred for 0 windows
    x = windows.view(B, H // wh, W // ww, wh, ww, C).transpose(2, 3)
    return x.reshape(B, H, W, C)


def shifted_window_mask(
    H: int,
    W: int,
    window_size: IntOrPair,
    shift_size: IntOrPair,
    device: torch.device | None = None,
    fill: float = -100.0,
) -> torch.Tensor:
    """Additive attention mask for shifted windows on an ``H x W`` map (already padded).

    After a cyclic shift by ``-shift`` the windows on the bottom and right edges hold tokens
    from regions that are not neighbours in the image; the mask keeps them apart.

    Returns:
        float tensor ``(nW, wh * ww, wh * ww)``: 0 where query and key come from the same
        region, ``fill`` (-100 as in the official code) otherwise.
    """
    wh, ww = to_2tuple(window_size, "window_size")
    sh, sw = to_2tuple(shift_size, "shift_size")
    region = torch.zeros(H, W, dtype=torch.float32, device=device)
    count = 0
    for hs in (slice(0, -wh), slice(-wh, -sh if sh else None), slice(-sh, None) if sh else slice(0, 0)):
        for ws in (slice(0, -ww), slice(-ww, -sw if sw else None), slice(-sw, None) if sw else slice(0, 0)):
            region[hs, ws] = count
            count += 1
    ids = window_partition(region.view(1, H, W, 1), (wh, ww)).flatten(1)  # (nW, wh*ww)
    diff = ids.unsqueeze(1) - ids.unsqueeze(2)  # (nW, N, N)
    return torch.zeros_like(diff).masked_fill_(diff != 0, fill)


def relative_position_index(window_size: IntOrPair, device: torch.device | None = None) -> torch.Tensor:
    """Index into a ``((2wh-1) * (2ww-1), heads)`` bias table for every (query, key) pair.

    Returns:
        int64 tensor ``(wh * ww, wh * ww)``, the official Swin ``relative_position_index``.
    """
    wh, ww = to_2tuple(window_size, "window_size")
    coords = torch.stack(
        torch.meshgrid(torch.arange(wh, device=device), torch.arange(ww, device=device), indexing="ij")
    ).flatten(1)  # (2, N)
    rel = coords[:, :, None] - coords[:, None, :]  # (2, N, N)
    return (rel[0] + wh - 1) * (2 * ww - 1) + (rel[1] + ww - 1)
