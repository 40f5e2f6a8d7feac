"""Feed-forward blocks."""

from __future__ import annotations

import weakref
from typing import List, Optional, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _onednn_op(name: str):
    try:
        return getattr(torch.ops.mkldnn, name)
    except (AttributeError, RuntimeError):
        return None


# oneDNN kernels that fuse a bias / activation / residual add into a linear layer or convolution
# (the ones torch.compile's CPU backend emits). Used only for inference, with a fallback.
_LINEAR_PW = _onednn_op("_linear_pointwise")
_CONV_PW = _onednn_op("_convolution_pointwise")
_fused_ok = _LINEAR_PW is not None and _CONV_PW is not None and torch.backends.mkldnn.is_available()


def _autocast_dtype() -> Optional[torch.dtype]:
    try:
        on = torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        on = torch.is_autocast_cpu_enabled()
    if not on:
        return None
    try:
        return torch.get_autocast_dtype("cpu")
    except (AttributeError, TypeError):
        return torch.get_autocast_cpu_dtype()


def _counting_flops() -> bool:
    """True inside a FLOP counter (it must see the plain aten ops to count them)."""
    if torch._C._len_torch_dispatch_stack() == 0:
        return False
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return any("FlopCounter" in type(m).__name__ for m in _get_current_dispatch_mode_stack())


def fused_inference_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The compute dtype of the fused CPU inference kernels for ``x``, or ``None`` to run the plain ops.

    Fused kernels run only without autograd (``torch.no_grad`` / ``inference_mode``), on CPU tensors,
    outside tracing, scripting, ONNX export, ``torch.compile`` and FLOP counting, in float32 or
    (input or CPU autocast) bfloat16.
    """
    if torch.compiler.is_compiling() or getattr(torch.compiler, "is_exporting", bool)():
        return None
    if not _fused_ok or torch.is_grad_enabled() or x.device.type != "cpu":
        return None
    if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or _counting_flops():
        return None
    dtype = _autocast_dtype() or x.dtype
    return dtype if dtype in (torch.float32, torch.bfloat16) else None


_PACKING: List[bool] = []


def packing_ok() -> bool:
    """Whether bfloat16 weights pre-packed by oneDNN give the same results as plain ones (checked once)."""
    if not _PACKING:
        try:
            g = torch.Generator().manual_seed(1)
            x, w, b = (torch.randn(*s, generator=g).to(torch.bfloat16) for s in ((64, 32), (48, 32), (48,)))
            with torch.no_grad(), torch.autocast("cpu", enabled=False):
                packed = torch.ops.mkldnn._reorder_linear_weight(w, 64)
                same = torch.allclose(
                    _LINEAR_PW(x, packed, b, "none", [], "").float(),
                    _LINEAR_PW(x, w, b, "none", [], "").float(),
                    atol=1e-2,
                    rtol=1e-2,
                )
            _PACKING.append(bool(same))
        except Exception:  # noqa: BLE001 - no packing then
            _PACKING.append(False)
    return _PACKING[0]


# inference copies of weights in a lower precision, per module, dropped with the module
_LOWP_WEIGHTS: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()
_PACK_ROWS = 1024  # oneDNN's layout hint; any number of rows runs with the packed weight


def inference_weights(
    layers: Tuple[nn.Module, ...], dtype: torch.dtype, pack: bool = False, owner: Optional[nn.Module] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The weights and biases of ``layers`` (linear or conv, concatenated along the output channels
    when several) in ``dtype`` for fused inference, kept (one entry per ``owner``, default the first
    layer) until any of them changes, in-place updates and reloads included. ``pack``: bfloat16
    linear weights pre-packed into oneDNN's blocked layout for
    :func:`torch.ops.mkldnn._linear_pointwise`, where that works here. float32 weights of a single
    layer are the parameters themselves (no copy)."""
    owner = layers[0] if owner is None else owner
    params = [p for m in layers for p in (m.weight, m.bias) if p is not None]
    # one entry per (dtype, pack): runs in both dtypes keep theirs
    return cached_for_inference(owner, (dtype, pack, tuple(map(id, layers))), params,
                                lambda: _cast_weights(layers, dtype, pack))


def cached_for_inference(owner: nn.Module, slot: tuple, tensors, build):
    """``build()`` (run without autograd), kept per ``(owner, slot)`` until any of ``tensors``
    changes (version counter or storage: in-place updates and reloads); dropped with ``owner``."""
    stamp = tuple((t._version, t.data_ptr()) for t in tensors if t is not None)
    slots = _LOWP_WEIGHTS.setdefault(owner, {})
    hit = slots.get(slot)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    with torch.no_grad():
        value = build()
    if not torch.compiler.is_compiling():
        slots[slot] = (stamp, value)
    return value


def pack_linear_weight(w: torch.Tensor) -> torch.Tensor:
    """A bfloat16 linear weight pre-packed for oneDNN where that works here (else ``w``)."""
    if w.dtype == torch.bfloat16 and packing_ok():
        return torch.ops.mkldnn._reorder_linear_weight(w, _PACK_ROWS)
    return w


def _cast_weights(layers: Tuple[nn.Module, ...], dtype: torch.dtype, pack: bool):
    w = torch.cat([m.weight for m in layers]) if len(layers) > 1 else layers[0].weight
    w = w.detach().to(dtype)
    has_bias = [m.bias is not None for m in layers]
    b = None
    if all(has_bias):
        b = (torch.cat([m.bias for m in layers]) if len(layers) > 1 else layers[0].bias).detach().to(dtype)
    elif any(has_bias):
        raise ValueError("inference_weights: either all layers have a bias or none")
    return (pack_linear_weight(w) if pack else w), b


def linear_pointwise(x: torch.Tensor, weights: Tuple[torch.Tensor, Optional[torch.Tensor]]) -> torch.Tensor:
    """``F.linear`` through oneDNN's linear kernel (which takes pre-packed weights), in the weights' dtype."""
    w, b = weights
    return _LINEAR_PW(x.to(w.dtype), w, b, "none", [], "")


def norm_to(norm: nn.Module, x: torch.Tensor, cd: torch.dtype) -> torch.Tensor:
    """``norm(x)`` in dtype ``cd``. A LayerNorm of bfloat16 rows runs straight to bfloat16 (statistics
    in float32 inside the kernel) instead of autocast's float32 copy in and cast out."""
    if type(norm) is nn.LayerNorm and x.dtype == cd == torch.bfloat16:
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return norm(x).to(cd)


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
    the fused inference path adds inside ``fc2``. On CPU without autograd (GELU activation, no
    active dropout) the FFN runs as three fused oneDNN kernels: ``fc1`` with its bias, the
    depth-wise conv with its bias and GELU, ``fc2`` with its bias and the shortcut; under CPU
    autocast they run in bfloat16 (the result is bfloat16, as autocast's would be). Training and
    every other case use the plain modules.

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
        out = None
        dtype = fused_inference_dtype(x)
        if dtype is not None and (not self.training or self.drop.p == 0.0) and self._fusable():
            out = self._forward_fused(x, shortcut, dtype)
        if out is None:
            out = self.fc1(x)
            out = self.drop(self.act(self.dwconv(out)))
            out = self.drop(self.fc2(out))
            if shortcut is not None:
                out = shortcut + out
        return out.flatten(1, 2) if flat else out

    def _fusable(self) -> bool:
        act = self.act
        return type(act) is nn.GELU and act.approximate == "none" and self.fc1.bias is not None

    def _forward_fused(self, x: torch.Tensor, shortcut: Optional[torch.Tensor], dtype: torch.dtype):
        global _fused_ok
        conv = self.dwconv.dwconv
        try:
            h = _LINEAR_PW(x.to(dtype), *inference_weights((self.fc1,), dtype, pack=True), "none", [], "")
            h = _CONV_PW(
                h.permute(0, 3, 1, 2), *inference_weights((conv,), dtype), [1, 1], [1, 1], [1, 1],
                conv.groups, "gelu", [], "none",
            ).permute(0, 2, 3, 1)
            w2, b2 = inference_weights((self.fc2,), dtype, pack=True)
            if shortcut is None:
                return _LINEAR_PW(h, w2, b2, "none", [], "")
            out = _LINEAR_PW.binary(h, shortcut.to(dtype), w2, b2, "add")
            return out.to(torch.promote_types(shortcut.dtype, dtype))  # as ``shortcut + out`` would be
        except RuntimeError:  # a build whose oneDNN kernels refuse these arguments: plain ops from now on
            _fused_ok = False
            return None

    def flops(self, H: int, W: Optional[int] = None) -> int:
        """Multiply-adds for an ``H x W`` map: ``fc1`` + ``fc2`` + the depth-wise conv (9 per output)."""
        W = H if W is None else W
        n = H * W
        return int(n * self.in_features * self.hidden_features + n * self.hidden_features * self.out_features
                   + n * self.hidden_features * 9)
