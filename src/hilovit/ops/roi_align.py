"""RoIAlign (He et al., Mask R-CNN, 2017) in plain PyTorch, exact to mmcv's CPU kernel.

For RoI ``k = [b, x1, y1, x2, y2]`` and output bin ``(ph, pw)`` the kernel (mmcv 2.1,
``ops/csrc/pytorch/cpu/roi_align.cpp``, ``ROIAlignForward``) computes, in the features' dtype::

    offset = 0.5 if aligned else 0
    start_w = x1 * spatial_scale - offset            (same for h with y1; end with x2, y2)
    roi_w = end_w - start_w                          (aligned=False: at least 1)
    bin_w = roi_w / pooled_w
    grid_w = sampling_ratio if sampling_ratio > 0 else ceil(roi_w / pooled_w)   (per RoI)
    x = (start_w + pw * bin_w) + ((ix + 0.5) * bin_w) / grid_w                 (ix < grid_w)

A sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` reads 0. Otherwise ``y <= 0`` becomes 0,
``y_low = floor(y)``; at ``y_low >= H - 1`` both neighbours are row ``H - 1`` (and ``y = H - 1``),
else ``y_high = y_low + 1``; ``ly = y - y_low``, ``hy = 1 - ly`` (same for x), and the value is
``((hy*hx * v11 + hy*lx * v12) + ly*hx * v21) + ly*lx * v22``. ``'avg'`` adds the samples of a bin
in row-major ``(iy, ix)`` order and divides by ``max(grid_h * grid_w, 1)``; ``'max'`` keeps the first
strict maximum above -10000 (so an empty grid gives -10000). ``spatial_scale`` reaches the kernel
as a C ``float`` and is rounded to float32 first, whatever the features' dtype.

The implementation below evaluates those operations in the same order, vectorised over RoIs, bins,
samples and channels: RoIs are grouped by their sample grid ``(grid_h, grid_w)`` (RoIs of one group
share one sample layout), the four neighbours are gathered from a channels-last copy of the
features, and only the reduction over a bin's samples runs as a sequence of tensor additions (the
kernel's summation order, so float32 results agree bit for bit). Gradients reach ``features``
through autograd. When ``torchvision`` imports, its ``torchvision.ops.roi_align`` (the same
Detectron2 arithmetic) serves ``pool_mode='avg'`` outside tracing and ONNX export
(:func:`hilovit.layers.fast.tracing`); :data:`BACKEND` says which is active.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from hilovit.layers import fast
from hilovit.options import check_int, check_number

try:  # optional compiled kernel with the same arithmetic ('avg' only)
    from torchvision.ops import roi_align as _tv_roi_align
except Exception:  # ImportError, or a torchvision built for another torch
    _tv_roi_align = None

#: ``"torchvision"`` when ``torchvision.ops.roi_align`` serves ``pool_mode='avg'``, ``"pytorch"`` otherwise.
BACKEND = "torchvision" if _tv_roi_align is not None else "pytorch"

__all__ = ["BACKEND", "RoIAlign", "bbox2roi", "roi_align"]

# Elements per gathered neighbour tensor (RoIs x bins x samples x channels) before RoIs are chunked.
_CHUNK_ELEMENTS = 1 << 22
_MAX_INIT = -10000.0  # the kernel's starting value for 'max' pooling


def _pair(value: Union[int, Sequence[int]], name: str) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")


def _check_options(spatial_scale, sampling_ratio, aligned, pool_mode) -> None:
    check_number(spatial_scale, "spatial_scale", minimum=0, min_open=True)
    check_int(sampling_ratio, "sampling_ratio", minimum=0)  # 0: adaptive
    if not isinstance(aligned, bool):
        raise ValueError(f"aligned must be a bool, got {aligned!r}")
    if pool_mode not in ("avg", "max"):
        raise ValueError(f"pool_mode must be 'avg' or 'max', got {pool_mode!r}")


def _check_tensors(features, rois) -> None:
    if not isinstance(features, Tensor) or not isinstance(rois, Tensor):
        raise TypeError(f"features and rois must be tensors, got {type(features).__name__} and {type(rois).__name__}")
    if features.dim() != 4 or not features.is_floating_point():
        raise ValueError(
            f"features must be a floating (B, C, H, W) tensor, got {features.dtype} {tuple(features.shape)}"
        )
    if rois.dim() != 2 or rois.shape[1] != 5 or not rois.is_floating_point():
        raise ValueError(
            "rois must be a floating (K, 5) tensor of [batch_index, x1, y1, x2, y2], "
            f"got {rois.dtype} {tuple(rois.shape)}"
        )
    if rois.device != features.device:
        raise ValueError(f"rois are on {rois.device} but features on {features.device}")


def _check_rois(rois: Tensor, batch: int, scale: float, aligned: bool) -> None:
    """Data checks (one host sync): finite coordinates, batch indices in range, no negative size when aligned."""
    if rois.shape[0] == 0:
        return
    b = rois[:, 0].trunc()  # the kernel's (int) conversion
    bad_batch = ((b < 0) | (b >= batch)).any()
    finite = torch.isfinite(rois).all()
    negative = torch.zeros((), dtype=torch.bool, device=rois.device)
    if aligned:
        start = rois[:, 1:3] * scale - 0.5
        negative = ((rois[:, 3:5] * scale - 0.5) - start < 0).any()
    bad_batch, finite, negative = torch.stack([bad_batch, finite, negative]).tolist()
    if not finite:
        raise ValueError("rois must be finite; got NaN or infinite coordinates")
    if bad_batch:
        raise ValueError(f"rois[:, 0] (batch indices) must lie in [0, {batch}) for features of batch {batch}")
    if negative:
        raise ValueError("rois must have x2 >= x1 and y2 >= y1 with aligned=True (RoIs of negative size)")


def roi_align(
    features: Tensor,
    rois: Tensor,
    output_size: Union[int, Sequence[int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 0,
    aligned: bool = True,
    pool_mode: str = "avg",
) -> Tensor:
    """Bilinear RoI pooling with mmcv's ``RoIAlign`` arithmetic (see the module docstring).

    Args:
        features: ``(B, C, H, W)`` floating maps (float16/bfloat16 are computed in float32 and cast back).
        rois: ``(K, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in input-image pixels; cast to the features' dtype.
        output_size: ``int`` or ``(pooled_h, pooled_w)``.
        spatial_scale: feature pixels per input pixel (``1 / stride``).
        sampling_ratio: samples per bin side; 0 picks ``ceil(roi_size / pooled_size)`` per RoI.
        aligned: shift by half a pixel (Detectron2's ``aligned=True``); False keeps RoIs at least 1 pixel.
        pool_mode: ``'avg'`` or ``'max'`` over a bin's samples.

    Returns:
        ``(K, C, pooled_h, pooled_w)`` in the features' dtype, differentiable with respect to ``features``.
    """
    _check_tensors(features, rois)
    _check_options(spatial_scale, sampling_ratio, aligned, pool_mode)
    ph, pw = _pair(output_size, "output_size")
    scale = float(np.float32(spatial_scale))  # the kernel's `float spatial_scale`
    in_dtype = features.dtype
    cdtype = torch.float64 if in_dtype == torch.float64 else torch.float32
    feats = features.to(cdtype)
    rois = rois.detach().to(cdtype)  # as mmcv: no gradient to the RoI coordinates
    _check_rois(rois, features.shape[0], scale, aligned)
    if rois.shape[0] == 0:
        return features.new_zeros((0, features.shape[1], ph, pw))
    if pool_mode == "avg" and _tv_roi_align is not None and not fast.tracing():
        out = _tv_roi_align(feats, rois, (ph, pw), scale, sampling_ratio, aligned)
    else:
        out = _roi_align_pytorch(feats, rois, (ph, pw), scale, sampling_ratio, aligned, pool_mode == "max")
    return out.to(in_dtype)


def _roi_geometry(rois: Tensor, pooled: Tuple[int, int], scale: float, sampling_ratio: int, aligned: bool):
    """Per-RoI start, bin size and sample grid, in the kernel's order: ``(start_w, start_h)``,
    ``(bin_w, bin_h)`` (each ``(K,)``) and the int64 grid sides ``(grid_w, grid_h)``."""
    offset = 0.5 if aligned else 0.0
    start_w, start_h = rois[:, 1] * scale - offset, rois[:, 2] * scale - offset
    roi_w = (rois[:, 3] * scale - offset) - start_w
    roi_h = (rois[:, 4] * scale - offset) - start_h
    if not aligned:
        roi_w, roi_h = roi_w.clamp_min(1.0), roi_h.clamp_min(1.0)
    bin_h, bin_w = roi_h / pooled[0], roi_w / pooled[1]
    if sampling_ratio > 0:
        grid_w = grid_h = torch.full_like(rois[:, 0], sampling_ratio, dtype=torch.int64)
    else:  # ceilf(roi_h / pooled_h): the quotient rounded to float32, then ceil
        grid_h = torch.ceil(bin_h.float()).long()
        grid_w = torch.ceil(bin_w.float()).long()
    return (start_w, start_h), (bin_w, bin_h), (grid_w, grid_h)


def _axis_samples(start: Tensor, bin_size: Tensor, pooled: int, grid: int, size: int):
    """Sample coordinates along one axis, ``(Kg, pooled, grid)``, and their bilinear terms:
    in-range flag, low/high neighbour indices, ``l`` (weight of high) and ``h = 1 - l``."""
    dt = start.dtype
    p = torch.arange(pooled, dtype=dt, device=start.device).view(1, pooled, 1)
    i = (torch.arange(grid, dtype=dt, device=start.device) + 0.5).view(1, 1, grid)
    s, b = start.view(-1, 1, 1), bin_size.view(-1, 1, 1)
    pos = (s + p * b) + i * b / grid
    inside = ~((pos < -1.0) | (pos > size))
    pos = torch.where(pos <= 0, torch.zeros_like(pos), pos)
    low = pos.floor()
    edge = low >= size - 1
    low = torch.where(edge, torch.full_like(low, size - 1), low)
    pos = torch.where(edge, low, pos)
    high = torch.where(edge, low, low + 1)
    frac = pos - low
    return inside, low.long(), high.long(), frac, 1.0 - frac


def _pool_group(flat: Tensor, batch: Tensor, start, bins, grid: Tuple[int, int], hw: Tuple[int, int],
                pooled: Tuple[int, int], max_mode: bool) -> Tensor:
    """RoIs sharing the sample grid ``grid = (grid_h, grid_w)``: ``(Kg, pooled_h, pooled_w, C)``."""
    (gh, gw), (H, W), (ph, pw) = grid, hw, pooled
    kg, C = batch.shape[0], flat.shape[1]
    if gh * gw == 0:  # empty grid: the kernel's initial value
        return flat.new_full((kg, ph, pw, C), _MAX_INIT if max_mode else 0.0)
    vy, yl, yh, ly, hy = (t.view(kg, ph, 1, gh, 1) for t in _axis_samples(start[1], bins[1], ph, gh, H))
    vx, xl, xh, lx, hx = (t.view(kg, 1, pw, 1, gw) for t in _axis_samples(start[0], bins[0], pw, gw, W))
    inside = vy & vx  # (Kg, ph, pw, gh, gw)
    zero = flat.new_zeros(())
    weights = [torch.where(inside, a * b, zero) for a, b in ((hy, hx), (hy, lx), (ly, hx), (ly, lx))]
    base = (batch * (H * W)).view(kg, 1, 1, 1, 1)
    izero = torch.zeros((), dtype=torch.int64, device=flat.device)
    rows = [torch.where(inside, r * W + c, izero) + base for r, c in ((yl, xl), (yl, xh), (yh, xl), (yh, xh))]
    val = None
    for w, r in zip(weights, rows):  # ((w1 v1 + w2 v2) + w3 v3) + w4 v4
        term = w.unsqueeze(-1) * flat.index_select(0, r.reshape(-1)).view(*r.shape, C)
        val = term if val is None else val + term
    val = val.view(kg, ph, pw, gh * gw, C)
    if max_mode:  # first strict maximum above the initial value, in sample order
        acc = flat.new_full((kg, ph, pw, C), _MAX_INIT)
        for s in range(gh * gw):
            acc = torch.where(val[:, :, :, s] > acc, val[:, :, :, s], acc)
        return acc
    acc = val[:, :, :, 0]
    for s in range(1, gh * gw):  # the kernel's running sum, sample by sample
        acc = acc + val[:, :, :, s]
    return acc / float(gh * gw)


def _roi_align_pytorch(features: Tensor, rois: Tensor, pooled: Tuple[int, int], scale: float,
                       sampling_ratio: int, aligned: bool, max_mode: bool) -> Tensor:
    B, C, H, W = features.shape
    K = rois.shape[0]
    start, bins, (grid_w, grid_h) = _roi_geometry(rois, pooled, scale, sampling_ratio, aligned)
    batch = rois[:, 0].long()  # the kernel's (int) truncation
    flat = features.permute(0, 2, 3, 1).reshape(B * H * W, C)  # channels last: one row per pixel
    key = grid_h * (int(grid_w.max()) + 1) + grid_w
    keys, group = torch.unique(key, return_inverse=True)
    order = torch.argsort(group, stable=True)
    counts = torch.bincount(group, minlength=len(keys)).tolist()
    parts: List[Tensor] = []
    for ids in torch.split(order, counts):
        gh, gw = int(grid_h[ids[0]]), int(grid_w[ids[0]])
        per_roi = pooled[0] * pooled[1] * max(gh * gw, 1) * C
        for chunk in torch.split(ids, max(1, _CHUNK_ELEMENTS // per_roi)):
            parts.append(_pool_group(flat, batch[chunk], (start[0][chunk], start[1][chunk]),
                                     (bins[0][chunk], bins[1][chunk]), (gh, gw), (H, W), pooled, max_mode))
    out = torch.cat(parts, 0)  # RoIs in `order`
    out = out.new_zeros((K,) + out.shape[1:]).index_copy(0, order, out)
    return out.permute(0, 3, 1, 2).contiguous()


class RoIAlign(nn.Module):
    """:func:`roi_align` as a module, with mmcv's ``RoIAlign`` arguments.

    Args:
        output_size: ``int`` or ``(pooled_h, pooled_w)``.
        spatial_scale: ``1 / stride`` of the feature map.
        sampling_ratio: samples per bin side (0: adaptive).
        pool_mode: ``'avg'`` or ``'max'``.
        aligned: half-pixel shift (the Mask R-CNN configs use True).

    Shape: ``features (B, C, H, W)``, ``rois (K, 5)`` -> ``(K, C, pooled_h, pooled_w)``.

    Example:
        >>> layer = RoIAlign(7, spatial_scale=0.25)
        >>> layer(torch.randn(1, 8, 20, 20), torch.tensor([[0.0, 4.0, 4.0, 40.0, 60.0]])).shape
        torch.Size([1, 8, 7, 7])
    """

    def __init__(self, output_size: Union[int, Sequence[int]], spatial_scale: float = 1.0, sampling_ratio: int = 0,
                 pool_mode: str = "avg", aligned: bool = True):
        super().__init__()
        self.output_size = _pair(output_size, "output_size")
        _check_options(spatial_scale, sampling_ratio, aligned, pool_mode)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = sampling_ratio
        self.pool_mode = pool_mode
        self.aligned = aligned

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        return roi_align(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                         self.aligned, self.pool_mode)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, pool_mode={self.pool_mode!r}, aligned={self.aligned}")


def bbox2roi(bbox_list: Sequence[Tensor]) -> Tensor:
    """Per-image boxes ``[(N_i, 4+), ...]`` -> RoIs ``(sum N_i, 5)`` ``[image_index, x1, y1, x2, y2]``,
    image 0's boxes first (mmdet's ``bbox2roi``; columns past the fourth are dropped)."""
    if isinstance(bbox_list, Tensor) or not isinstance(bbox_list, (list, tuple)) or not bbox_list:
        raise ValueError(f"bbox_list must be a non-empty list of (N_i, 4) tensors, got {type(bbox_list).__name__}")
    rois = []
    for i, boxes in enumerate(bbox_list):
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] < 4:
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise ValueError(f"bbox_list[{i}] must be an (N, 4) tensor of x1, y1, x2, y2, got {shape}")
        rois.append(torch.cat([boxes.new_full((boxes.shape[0], 1), i), boxes[:, :4]], 1))
    return torch.cat(rois, 0)
