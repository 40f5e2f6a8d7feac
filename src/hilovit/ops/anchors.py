"""mmdet's ``AnchorGenerator``: per-level anchor grids for a feature pyramid.

Each level has base anchors centred at ``center_offset * base_size`` (0: the top-left corner of a
stride cell): ``h_ratios = sqrt(ratios)``, ``w_ratios = 1 / h_ratios``, widths
``base_size * w_ratios[:, None] * scales[None, :]`` flattened ratio-major (``scale_major=True``:
ratios outer, scales inner), anchor ``[-w/2, -h/2, w/2, h/2]`` around the centre. The grid shifts
them by ``(x * stride, y * stride)`` for every feature position, row-major over ``(y, x)``, then
the base anchors: level ``l`` gives ``(h_l * w_l * A, 4)`` anchors. Computed in float32 as mmdet.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import torch

from hilovit.options import check_fraction

__all__ = ["AnchorGenerator"]

_Size = Union[Tuple[int, int], torch.Size]


def _pos_numbers(values, name: str, integer: bool = False) -> List:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {values!r}")
    kinds = (int,) if integer else (int, float)
    if any(isinstance(v, bool) or not isinstance(v, kinds) or v <= 0 for v in values):
        raise ValueError(f"{name} must hold positive {'ints' if integer else 'numbers'}, got {values!r}")
    return list(values)


class AnchorGenerator:
    """Anchors of every pyramid level (mmdet 3.x ``AnchorGenerator``).

    Args:
        strides: per level, an int or an ``(sx, sy)`` pair (pixels between grid points).
        ratios: height / width ratios of the base anchors.
        scales: anchor sizes in units of ``base_size``; or instead ``octave_base_scale`` and
            ``scales_per_octave`` (scales ``octave_base_scale * 2 ** (k / scales_per_octave)``,
            RetinaNet's 4 and 3).
        base_sizes: per level (default: the smaller stride of each level).
        scale_major: order the base anchors ratio-major (True, mmdet's default) or scale-major.
        center_offset: the anchor centre inside a stride cell, in ``[0, 1)`` (0: its corner).

    ``grid_priors(featmap_sizes)`` -> a list of ``(h_l * w_l * num_base_anchors, 4)`` float32 tensors;
    ``valid_flags(featmap_sizes, pad_shape)`` -> per-level bool masks of the anchors whose cell lies
    inside an image's padded size.

    Example::

        >>> gen = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], octave_base_scale=4,
        ...                       scales_per_octave=3)
        >>> [a.shape for a in gen.grid_priors([(12, 16), (6, 8)])]
        [torch.Size([1728, 4]), torch.Size([432, 4])]
    """

    def __init__(self, strides: Sequence, ratios: Sequence[float], scales: Optional[Sequence[float]] = None,
                 base_sizes: Optional[Sequence[int]] = None, scale_major: bool = True,
                 octave_base_scale: Optional[float] = None, scales_per_octave: Optional[int] = None,
                 centers: Optional[Sequence] = None, center_offset: float = 0.0):
        if isinstance(strides, (str, bytes)) or not isinstance(strides, Sequence) or not strides:
            raise ValueError(f"strides must be a non-empty list of ints or (sx, sy) pairs, got {strides!r}")
        self.strides: List[Tuple[int, int]] = []
        for s in strides:
            pair = (s, s) if isinstance(s, int) else tuple(s) if isinstance(s, Sequence) else None
            if pair is None or len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                                     for v in pair):
                raise ValueError(f"strides must hold positive ints or (sx, sy) pairs, got {strides!r}")
            self.strides.append((int(pair[0]), int(pair[1])))
        if centers is not None:
            raise ValueError("AnchorGenerator centers= is not supported; use center_offset")
        check_fraction(center_offset, "center_offset")
        if base_sizes is None:
            base_sizes = [min(s) for s in self.strides]
        self.base_sizes = _pos_numbers(base_sizes, "base_sizes")
        if len(self.base_sizes) != len(self.strides):
            raise ValueError(f"base_sizes {self.base_sizes} must have one entry per stride ({len(self.strides)})")
        if (octave_base_scale is None) != (scales_per_octave is None):
            raise ValueError("octave_base_scale and scales_per_octave must be given together")
        if scales is not None and octave_base_scale is not None:
            raise ValueError("give either scales or octave_base_scale + scales_per_octave, not both")
        if octave_base_scale is not None:
            _pos_numbers([octave_base_scale], "octave_base_scale")
            _pos_numbers([scales_per_octave], "scales_per_octave", integer=True)
            scales = [2 ** (i / scales_per_octave) * octave_base_scale for i in range(scales_per_octave)]
        elif scales is None:
            raise ValueError("AnchorGenerator needs scales or octave_base_scale + scales_per_octave")
        self.scales = torch.tensor(_pos_numbers(scales, "scales"), dtype=torch.float32)
        self.ratios = torch.tensor(_pos_numbers(ratios, "ratios"), dtype=torch.float32)
        if not isinstance(scale_major, bool):
            raise ValueError(f"scale_major must be a bool, got {scale_major!r}")
        self.scale_major = scale_major
        self.center_offset = float(center_offset)
        self.base_anchors = [self._base_anchors(size) for size in self.base_sizes]

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_anchors(self) -> List[int]:
        return [a.shape[0] for a in self.base_anchors]

    def _base_anchors(self, base_size: float) -> torch.Tensor:
        w = h = base_size
        cx, cy = self.center_offset * w, self.center_offset * h
        h_ratios = torch.sqrt(self.ratios)
        w_ratios = 1 / h_ratios
        if self.scale_major:
            ws = (w * w_ratios[:, None] * self.scales[None, :]).reshape(-1)
            hs = (h * h_ratios[:, None] * self.scales[None, :]).reshape(-1)
        else:
            ws = (w * self.scales[:, None] * w_ratios[None, :]).reshape(-1)
            hs = (h * self.scales[:, None] * h_ratios[None, :]).reshape(-1)
        return torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)

    def _check_sizes(self, featmap_sizes) -> List[Tuple[int, int]]:
        if isinstance(featmap_sizes, (str, bytes)) or not isinstance(featmap_sizes, Sequence) or \
                len(featmap_sizes) != self.num_levels:
            raise ValueError(f"featmap_sizes must list {self.num_levels} (h, w) sizes, got {featmap_sizes!r}")
        out = []
        for size in featmap_sizes:
            if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in size):
                raise ValueError(f"featmap_sizes must hold (h, w) pairs of ints >= 0, got {featmap_sizes!r}")
            out.append((int(size[0]), int(size[1])))
        return out

    def single_level_grid_priors(self, featmap_size: _Size, level: int, dtype: torch.dtype = torch.float32,
                                 device: Union[str, torch.device] = "cpu") -> torch.Tensor:
        """Anchors ``(h * w * A, 4)`` of one level: base anchors shifted to every grid point."""
        h, w = int(featmap_size[0]), int(featmap_size[1])
        sx, sy = self.strides[level]
        base = self.base_anchors[level].to(device=device, dtype=dtype)
        shift_x = torch.arange(0, w, device=device).to(dtype) * sx
        shift_y = torch.arange(0, h, device=device).to(dtype) * sy
        xx = shift_x.repeat(h)
        yy = shift_y.view(-1, 1).repeat(1, w).view(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        return (base[None, :, :] + shifts[:, None, :]).reshape(-1, 4)

    def grid_priors(self, featmap_sizes: Sequence[_Size], dtype: torch.dtype = torch.float32,
                    device: Union[str, torch.device] = "cpu") -> List[torch.Tensor]:
        """The anchors of every level: a list of ``(h_l * w_l * A_l, 4)`` tensors."""
        sizes = self._check_sizes(featmap_sizes)
        return [self.single_level_grid_priors(s, i, dtype, device) for i, s in enumerate(sizes)]

    def valid_flags(self, featmap_sizes: Sequence[_Size], pad_shape: Sequence[int],
                    device: Union[str, torch.device] = "cpu") -> List[torch.Tensor]:
        """Per level, a bool ``(h_l * w_l * A_l,)`` mask: True for the anchors of the grid points
        ``x < ceil(pad_w / sx)`` and ``y < ceil(pad_h / sy)`` (points over the batch padding beyond
        this image's own padded size ``pad_shape = (h, w)`` are False)."""
        sizes = self._check_sizes(featmap_sizes)
        ph, pw = int(pad_shape[0]), int(pad_shape[1])
        flags = []
        for level, (h, w) in enumerate(sizes):
            sx, sy = self.strides[level]
            vh, vw = min(-(-ph // sy), h), min(-(-pw // sx), w)
            valid = (torch.arange(h, device=device)[:, None] < vh) & (torch.arange(w, device=device)[None, :] < vw)
            flags.append(valid.reshape(-1, 1).expand(-1, self.num_base_anchors[level]).reshape(-1))
        return flags

    def __repr__(self) -> str:
        return (f"AnchorGenerator(strides={self.strides}, ratios={self.ratios.tolist()}, "
                f"scales={self.scales.tolist()}, base_sizes={self.base_sizes})")
