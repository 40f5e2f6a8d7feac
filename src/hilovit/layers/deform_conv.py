"""Deformable 2-D convolution (DCNv1) in plain PyTorch.

LITv2 merges tokens between stages with a deformable convolution (its "deformable token
merging", DTM: kernel 2, stride 2, padding 0). The official code depends on a compiled CUDA
extension; this module gives the same result with ordinary tensor operations, so it runs on
CPU, under autograd, ``torch.compile``, autocast and ``torch.onnx.export``.

Semantics (DCNv1: no modulation mask, one deformable group, bias added). For output position
``(ho, wo)`` and kernel tap ``k = r * kw + c`` the input is sampled at::

    y = ho * stride - padding + r * dilation + offset[:, 2 * k,     ho, wo]
    x = wo * stride - padding + c * dilation + offset[:, 2 * k + 1, ho, wo]

The sample is 0 unless ``-1 < y < H`` and ``-1 < x < W``; otherwise it is the bilinear
interpolation of the four neighbouring pixels, a neighbour outside the image counting as 0.
The output is ``weight.view(Cout, Cin * kh * kw)`` times the sampled columns, plus ``bias``.

When ``torchvision`` can be imported its ``torchvision.ops.deform_conv2d`` (same semantics) is
used instead, except while exporting to ONNX; :data:`BACKEND` says which one is active.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hilovit.layers import fast

try:  # optional compiled kernel with identical semantics
    from torchvision.ops import deform_conv2d as _tv_deform_conv2d
except Exception:  # ImportError, or a torchvision built for another torch
    _tv_deform_conv2d = None

#: ``"torchvision"`` when ``torchvision.ops.deform_conv2d`` is used, ``"pytorch"`` otherwise.
BACKEND = "torchvision" if _tv_deform_conv2d is not None else "pytorch"

__all__ = ["BACKEND", "DeformConv2d", "DeformConv2dPack", "deform_conv2d"]

_IntPair = Union[int, Tuple[int, int]]


def _pair(value: _IntPair, name: str) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return int(value[0]), int(value[1])
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _check_geometry(stride: Tuple[int, int], padding: Tuple[int, int], dilation: Tuple[int, int]) -> None:
    if min(stride) <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if min(dilation) <= 0:
        raise ValueError(f"dilation must be positive, got {dilation}")
    if min(padding) < 0:
        raise ValueError(f"padding must be non-negative, got {padding}")


def _check_input(input: Tensor, weight: Tensor) -> None:
    if input.dim() != 4:
        raise ValueError(f"input must be 4-D (B, Cin, H, W), got shape {tuple(input.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D (Cout, Cin, kh, kw), got shape {tuple(weight.shape)}")
    if input.shape[1] != weight.shape[1]:
        raise ValueError(
            f"input has {input.shape[1]} channels but weight expects Cin={weight.shape[1]} "
            f"(input shape {tuple(input.shape)}, weight shape {tuple(weight.shape)})"
        )


def _check_args(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
) -> Tuple[int, int]:
    """Validates the arguments of :func:`deform_conv2d`; returns the output size ``(Ho, Wo)``.

    While ``torch.jit.trace`` (the TorchScript ONNX exporter) records, sizes are traced values
    and comparing them would bake the example's shapes into the trace; the checks are skipped
    then (the same call has already passed them in eager mode)."""
    _check_geometry(stride, padding, dilation)
    if fast.tracing():
        kh, kw = weight.shape[-2:]
        H, W = input.shape[-2:]
        return (
            _out_size(H, kh, stride[0], padding[0], dilation[0]),
            _out_size(W, kw, stride[1], padding[1], dilation[1]),
        )
    _check_input(input, weight)
    B, C, H, W = input.shape
    Cout, Cin, kh, kw = weight.shape
    Ho = _out_size(H, kh, stride[0], padding[0], dilation[0])
    Wo = _out_size(W, kw, stride[1], padding[1], dilation[1])
    if Ho <= 0 or Wo <= 0:
        raise ValueError(
            f"input of size {H}x{W} is too small for kernel ({kh}, {kw}) with stride {stride}, "
            f"padding {padding}, dilation {dilation} (output would be {Ho}x{Wo})"
        )
    expected = (B, 2 * kh * kw, Ho, Wo)
    if tuple(offset.shape) != expected:
        raise ValueError(
            f"offset must have shape (B, 2*kh*kw, Ho, Wo) = {expected} for input {tuple(input.shape)}, "
            f"kernel ({kh}, {kw}), stride {stride}, padding {padding}, dilation {dilation}; "
            f"got {tuple(offset.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (Cout,):
        raise ValueError(f"bias must have shape ({Cout},), got {tuple(bias.shape)}")
    return Ho, Wo


def _deform_conv2d_pytorch(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
    out_hw: Tuple[int, int],
) -> Tensor:
    """The pure-PyTorch kernel: channels-last row gathers, bilinear mix, one matmul."""
    Cout, _, kh, kw = weight.shape
    B, Ho, Wo = input.shape[0], out_hw[0], out_hw[1]
    cols = deform_columns(input, offset, (kh, kw), stride, padding, dilation, out_hw)
    w2d = weight.permute(0, 2, 3, 1).reshape(Cout, -1)  # (Cout, K*Cin), the columns' order
    out = F.linear(cols, w2d, bias)  # (B, Ho*Wo, Cout); may run in the autocast dtype
    # (B, Cout, Ho, Wo) as a view in channels_last memory format.
    return out.reshape(B, Ho, Wo, Cout).permute(0, 3, 1, 2)


def deform_columns(
    input: Tensor,
    offset: Tensor,
    kernel_size: Tuple[int, int],
    stride: Tuple[int, int],
    padding: Tuple[int, int],
    dilation: Tuple[int, int],
    out_hw: Tuple[int, int],
) -> Tensor:
    """The deformable samples as columns ``(B, Ho * Wo, kh * kw * Cin)`` (tap-major, then channel),
    in ``input``'s dtype: :func:`deform_conv2d` is ``F.linear`` of them with the weight permuted to
    ``(Cout, kh, kw, Cin)`` and flattened. Arguments as :func:`deform_conv2d`, as pairs, already checked."""
    B, C, H, W = input.shape
    kh, kw = kernel_size
    Ho, Wo = out_hw
    K = kh * kw
    # Sampling positions and bilinear weights in float32 at least (float64 stays float64).
    cdtype = torch.promote_types(torch.promote_types(input.dtype, offset.dtype), torch.float32)
    device = input.device
    # Row and column are handled together in a trailing dimension of 2 (fewer, larger ops). Sizes
    # enter only through arithmetic (no torch.tensor([...])), so traced ONNX graphs keep them dynamic.

    # Regular grid without offsets, (Ho, Wo, K, 2) = (row, column) of tap k = r * kw + c.
    tap = torch.arange(K, device=device)
    r = torch.div(tap, kw, rounding_mode="floor")  # (K,) kernel row of each tap
    c = tap % kw  # (K,) kernel column
    ho = torch.arange(Ho, device=device)
    wo = torch.arange(Wo, device=device)
    base_y = (ho * stride[0] - padding[0]).view(Ho, 1, 1) + (r * dilation[0]).view(1, 1, K)  # (Ho, 1, K)
    base_x = (wo * stride[1] - padding[1]).view(1, Wo, 1) + (c * dilation[1]).view(1, 1, K)  # (1, Wo, K)
    base = torch.stack(torch.broadcast_tensors(base_y, base_x), -1).to(cdtype)  # (Ho, Wo, K, 2)
    size = torch.stack(torch.broadcast_tensors(base_y * 0 + H, base_x * 0 + W), -1).to(cdtype)  # (H, W)

    # (B, 2K, Ho, Wo) -> (B, Ho, Wo, K, 2): [..., 0] = row (y) offset, [..., 1] = column (x) offset.
    off = offset.to(cdtype).reshape(B, K, 2, Ho, Wo).permute(0, 3, 4, 1, 2)
    pos = off + base  # (B, Ho, Wo, K, 2) sample positions (y, x)

    # Samples outside (-1, H) x (-1, W) (and NaN) read 0 and pass no gradient to the offsets.
    valid = ((pos > -1) & (pos < size)).all(-1, keepdim=True)  # (B, Ho, Wo, K, 1)
    p0 = torch.floor(pos)  # top-left neighbour (y0, x0)
    zero = torch.zeros((), device=device, dtype=cdtype)
    frac = torch.where(valid, pos - p0, zero)  # (ly, lx); 0 for invalid samples

    # The image gets a border of one zero pixel, so the four neighbours (y0 + {0, 1}, x0 + {0, 1})
    # of a valid sample (y0 in [-1, H-1], x0 in [-1, W-1]) are always inside it; a neighbour
    # outside the image reads the border, i.e. 0. Invalid samples point at the border corner (0, 0)
    # with all their weight there (ly = lx = 0), so they read exactly 0 as well.
    Hp, Wp = H + 2, W + 2
    idx = torch.where(valid, p0 + 1, zero).long()  # (B, Ho, Wo, K, 2) in the padded image
    batch = torch.arange(B, device=device).view(B, 1, 1, 1) * (Hp * Wp)
    top_left = idx[..., 0] * Wp + idx[..., 1] + batch  # (B, Ho, Wo, K) rows of the flat padded image
    two = torch.arange(2, device=device)
    corners = (two.view(2, 1) * Wp + two.view(1, 2)).reshape(4)  # 0, 1, Wp, Wp + 1
    # Neighbours (y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1) and their bilinear weights.
    rows = (top_left.unsqueeze(-1) + corners).reshape(B * Ho * Wo * K, 4)
    lo_hi = torch.stack([1 - frac, frac], -1)  # (B, Ho, Wo, K, 2 (y, x), 2 (lo, hi))
    wts = (lo_hi[..., 0, :, None] * lo_hi[..., 1, None, :]).reshape(B * Ho * Wo * K, 4)

    img = F.pad(input.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # (B, Hp, Wp, C), channels last
    # bfloat16 images are gathered and mixed in bfloat16 (about 3x faster than a float32 copy on CPU;
    # positions and weights are computed in float32 above, the weights rounded once here)
    sdtype = input.dtype if input.dtype == torch.bfloat16 else cdtype
    img = img.reshape(B * Hp * Wp, C).to(sdtype)  # one row per pixel

    if fast.tracing():
        # Plain gathers (ONNX Gather) and a weighted sum.
        cols = torch.index_select(img, 0, rows.reshape(-1)).reshape(-1, 4, C)  # (B*Ho*Wo*K, 4, C)
        cols = (cols * wts.unsqueeze(-1)).sum(1)  # (B*Ho*Wo*K, C)
    else:
        # The same weighted sum of 4 gathered rows, fused (several times faster on CPU).
        cols = F.embedding_bag(rows, img, per_sample_weights=wts.to(sdtype), mode="sum")  # (B*Ho*Wo*K, C)

    # Columns (B, Ho*Wo, K*C), tap-major then channel.
    return cols.reshape(B, Ho * Wo, K * C).to(input.dtype)


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    stride: _IntPair = 1,
    padding: _IntPair = 0,
    dilation: _IntPair = 1,
) -> Tensor:
    r"""Deformable 2-D convolution (DCNv1, one deformable group, no modulation mask).

    Every kernel tap ``k = r * kw + c`` of every output position ``(ho, wo)`` samples the
    input at its regular position moved by the learned offset
    ``(offset[:, 2k], offset[:, 2k + 1])`` = (rows, columns), with bilinear interpolation;
    samples outside the image (``y <= -1``, ``y >= H``, ``x <= -1`` or ``x >= W``) are 0,
    and a neighbour pixel outside the image counts as 0. Equivalent to the official DCN
    CUDA kernel and to ``torchvision.ops.deform_conv2d``.

    Args:
        input: ``(B, Cin, H, W)``.
        offset: ``(B, 2 * kh * kw, Ho, Wo)``; channel ``2k`` is the row (y) offset and
            ``2k + 1`` the column (x) offset of tap ``k``, in pixels.
        weight: ``(Cout, Cin, kh, kw)``.
        bias: ``(Cout,)`` or ``None``.
        stride, padding, dilation: int or ``(h, w)`` pair, as in :func:`torch.nn.functional.conv2d`.

    Returns:
        ``(B, Cout, Ho, Wo)`` with ``Ho = (H + 2 * pad - dil * (kh - 1) - 1) // stride + 1``
        (same for ``Wo``). The pure-PyTorch backend returns it in ``channels_last`` memory
        format.

    Raises:
        ValueError: wrong input/weight rank, channel mismatch, offset of the wrong shape,
            non-positive stride or dilation, negative padding, an input smaller than the kernel.

    Example::

        >>> x = torch.randn(2, 16, 8, 8)
        >>> w = torch.randn(32, 16, 2, 2)
        >>> off = torch.randn(2, 8, 4, 4)
        >>> deform_conv2d(x, off, w, stride=2).shape
        torch.Size([2, 32, 4, 4])
    """
    stride = _pair(stride, "stride")
    padding = _pair(padding, "padding")
    dilation = _pair(dilation, "dilation")
    out_hw = _check_args(input, offset, weight, bias, stride, padding, dilation)
    if _tv_deform_conv2d is not None and not fast.tracing():
        return _tv_deform_conv2d(input, offset, weight, bias, stride, padding, dilation)
    return _deform_conv2d_pytorch(input, offset, weight, bias, stride, padding, dilation, out_hw)


class DeformConv2d(nn.Module):
    r"""Deformable 2-D convolution whose offsets are given at call time.

    Args:
        in_channels: ``Cin``.
        out_channels: ``Cout``.
        kernel_size: int or ``(kh, kw)``.
        stride, padding, dilation: int or pair, as in :class:`torch.nn.Conv2d`.
        bias: whether to add a learnable bias.

    Parameters: ``weight`` ``(Cout, Cin, kh, kw)``, ``bias`` ``(Cout,)`` (or ``None``),
    initialised as in :class:`torch.nn.Conv2d`.

    Shape:
        - x: ``(B, Cin, H, W)``
        - offset: ``(B, 2 * kh * kw, Ho, Wo)`` (see :func:`deform_conv2d`)
        - output: ``(B, Cout, Ho, Wo)``

    Example::

        >>> m = DeformConv2d(16, 32, kernel_size=2, stride=2)
        >>> m(torch.randn(2, 16, 8, 8), torch.zeros(2, 8, 4, 4)).shape
        torch.Size([2, 32, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntPair,
        stride: _IntPair = 1,
        padding: _IntPair = 0,
        dilation: _IntPair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(
                f"in_channels and out_channels must be positive, got {in_channels} and {out_channels}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size, "kernel_size")
        if min(self.kernel_size) <= 0:
            raise ValueError(f"kernel_size must be positive, got {self.kernel_size}")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        self.dilation = _pair(dilation, "dilation")
        _check_geometry(self.stride, self.padding, self.dilation)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform weight and uniform(+-1/sqrt(fan_in)) bias, as :class:`torch.nn.Conv2d`."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def output_size(self, H: int, W: int) -> Tuple[int, int]:
        """``(Ho, Wo)`` for an ``H x W`` input."""
        kh, kw = self.kernel_size
        return (
            _out_size(H, kh, self.stride[0], self.padding[0], self.dilation[0]),
            _out_size(W, kw, self.stride[1], self.padding[1], self.dilation[1]),
        )

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def flops(self, H: int, W: int) -> int:
        """Multiply-adds of the convolution proper for an ``H x W`` input:
        ``Ho * Wo * Cout * Cin * kh * kw``. The bilinear sampling (4 multiply-adds per sampled
        value, ``Ho * Wo * Cin * kh * kw`` values) and the bias are not counted, as for a conv."""
        Ho, Wo = self.output_size(H, W)
        kh, kw = self.kernel_size
        return Ho * Wo * self.out_channels * self.in_channels * kh * kw

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias is not None}"
        )


class DeformConv2dPack(DeformConv2d):
    r"""Deformable convolution that predicts its own offsets (as the official ``DeformConv2dPack``).

    An ordinary convolution ``conv_offset`` with the same kernel, stride, padding and dilation
    maps the input to ``2 * kh * kw`` offset channels; it starts at zero weight and bias, so a
    fresh module is an ordinary strided convolution. State dict keys: ``weight``, ``bias``,
    ``conv_offset.weight``, ``conv_offset.bias``, as the official checkpoints.

    Args: as :class:`DeformConv2d`.

    Shape:
        - x: ``(B, Cin, H, W)``
        - output: ``(B, Cout, Ho, Wo)``

    Example::

        >>> m = DeformConv2dPack(64, 128, kernel_size=2, stride=2)  # LITv2 token merging
        >>> m(torch.randn(2, 64, 56, 56)).shape
        torch.Size([2, 128, 28, 28])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: _IntPair,
        stride: _IntPair = 1,
        padding: _IntPair = 0,
        dilation: _IntPair = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias)
        kh, kw = self.kernel_size
        self.conv_offset = nn.Conv2d(
            in_channels,
            2 * kh * kw,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        self.init_offset()

    def init_offset(self) -> None:
        """Zero offset predictor: all offsets are 0 until it is trained."""
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        # Check here: nn.Conv2d would accept an unbatched (C, H, W) input or fail less clearly.
        if not fast.tracing():
            _check_input(x, self.weight)
        offset = self.conv_offset(x)  # (B, 2*kh*kw, Ho, Wo)
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def flops(self, H: int, W: int, include_offset: bool = True) -> int:
        """Multiply-adds for an ``H x W`` input: the deformable convolution
        (``Ho * Wo * Cout * Cin * kh * kw``, see :meth:`DeformConv2d.flops`) plus, when
        ``include_offset``, the offset convolution (``Ho * Wo * 2 * kh * kw * Cin * kh * kw``)."""
        total = super().flops(H, W)
        if include_offset:
            Ho, Wo = self.output_size(H, W)
            kh, kw = self.kernel_size
            total += Ho * Wo * (2 * kh * kw) * self.in_channels * kh * kw
        return total
