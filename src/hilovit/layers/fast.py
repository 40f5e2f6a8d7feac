"""The inference fast path, decided in one place.

The modules of :mod:`hilovit.layers` read as the plain math. In CPU inference (no autograd, eval
mode, float32 or bfloat16) they hand their projections, attention and norms to the helpers here,
which run oneDNN kernels with the bias, the GELU and a residual addition fused in, keep cast and
pre-packed weights until the parameters change, and, in bfloat16, attend short key sequences with
two batched products. Everything else (training, tracing, ONNX export, ``torch.compile``, FLOP
counting, other devices and dtypes, or the switch turned off) runs the plain modules, except two
choices that hold under autograd too: short-key attention as products (:func:`attention`) and, in
float32 CPU training, linear layers on oneDNN's kernel (:func:`dense`).

:func:`why_not_fast` is the one predicate (like ``torch.nn.MultiheadAttention``'s
``why_not_fast_path``): it returns the reason the fast path stands aside, ``''`` when it runs.

The switch: :func:`set_fast_inference`, the context manager :func:`fast_inference`, and the
environment variable ``HILOVIT_FAST_INFERENCE=0`` read at import. Turned off, every module
computes the same function through the plain ops (float32 results agree to about 1e-6).

A oneDNN kernel is checked once against the plain ops on a small problem before its first use
(:func:`kernel_ok`); one that fails is turned off for the process with one warning saying why,
and the helpers then run the plain ops.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
import weakref
from collections import OrderedDict
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules import module as _module_globals  # the global module hooks

__all__ = [
    "set_fast_inference",
    "fast_inference",
    "fast_inference_enabled",
    "why_not_fast",
    "inference_dtype",
    "compute_dtype",
    "tracing",
    "kernel_ok",
    "cached",
    "inference_weights",
    "cast_weights",
    "linear",
    "linear_with",
    "dense",
    "conv2d",
    "norm",
    "attention",
    "hifi_band_windows",
]

ENV_VAR = "HILOVIT_FAST_INFERENCE"
Weights = Tuple[torch.Tensor, Optional[torch.Tensor]]


# ---- the switch ------------------------------------------------------------------------------
def _from_env() -> bool:
    value = os.environ.get(ENV_VAR, "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value not in ("", "1", "true", "yes", "on"):
        warnings.warn(f"{ENV_VAR}={value!r} is not one of 0, 1, true, false, on, off; fast inference stays on",
                      stacklevel=2)
    return True


_enabled = _from_env()


def _check_bool(enabled) -> bool:
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {enabled!r} ({type(enabled).__name__})")
    return enabled


def set_fast_inference(enabled: bool) -> None:
    """Turn the CPU inference fast path on or off for the process (on unless ``HILOVIT_FAST_INFERENCE=0``)."""
    global _enabled
    _enabled = _check_bool(enabled)


def fast_inference_enabled() -> bool:
    """Whether the fast path is switched on (it still stands aside where :func:`why_not_fast` says)."""
    return _enabled


@contextlib.contextmanager
def fast_inference(enabled: bool = True) -> Iterator[None]:
    """Within the block the fast path is switched on or off; the previous setting returns on exit.

    Example::

        >>> with hilovit.fast_inference(False), torch.inference_mode():
        ...     reference = model(x)  # the plain modules
    """
    global _enabled
    previous = _enabled
    _enabled = _check_bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


# ---- the predicate ---------------------------------------------------------------------------
def tracing() -> bool:
    """True while TorchScript scripts or traces the code, or ``torch.onnx.export`` runs: shapes are
    then recorded, so modules take the formulation that keeps the batch size symbolic."""
    return torch.jit.is_scripting() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _compiling() -> bool:
    return torch.compiler.is_compiling() or getattr(torch.compiler, "is_exporting", bool)()


def _under_dispatch_mode() -> bool:
    """A Python dispatch mode (``FlopCounterMode``, memory or op trackers) sees every aten op: it
    must see the plain ones, so that it counts what the plain math does."""
    return torch._C._len_torch_dispatch_stack() > 0


def compute_dtype(x: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.dtype:
    """The dtype products of ``x`` (with ``weight``) come out in: the autocast dtype inside autocast."""
    device = x.device.type
    try:
        if torch.is_autocast_enabled(device):
            return torch.get_autocast_dtype(device)
    except TypeError:  # torch < 2.4: per-device functions
        if device == "cpu" and torch.is_autocast_cpu_enabled():
            return torch.get_autocast_cpu_dtype()
        if device == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
    return x.dtype if weight is None else torch.promote_types(x.dtype, weight.dtype)


def why_not_fast(x: torch.Tensor, module: Optional[nn.Module] = None, *, training: bool = False) -> str:
    """Why the fast path stands aside for input ``x`` of ``module``; ``''`` when it runs.

    ``training=True`` asks about a choice that is valid under autograd and on any device (a layout,
    not a kernel): then only the switch, FLOP counting, tracing and compilation are reasons.
    """
    if not _enabled:
        return f"switched off (hilovit.set_fast_inference(False), fast_inference(False) or {ENV_VAR}=0)"
    if not training:
        if torch.is_grad_enabled():
            return "autograd is on (the fast path runs under torch.no_grad or torch.inference_mode)"
        if module is not None and module.training:
            return f"{type(module).__name__} is in training mode"
    if _compiling():  # first: the checks below are not traceable by dynamo
        return "torch.compile or torch.export"
    if tracing():
        return "TorchScript tracing or ONNX export"
    if _under_dispatch_mode():
        return "a dispatch mode is active (FLOP counting or op tracking sees the plain ops)"
    if training:
        return ""
    if x.numel() == 0:
        return "empty input (nothing to compute; the plain ops return the empty result)"
    if x.device.type != "cpu":
        return f"device {x.device.type!r} (the fast path is for CPU)"
    dtype = compute_dtype(x)
    if dtype not in (torch.float32, torch.bfloat16):
        return f"dtype {dtype} (the fast path runs float32 and bfloat16)"
    return ""


def inference_dtype(x: torch.Tensor, module: Optional[nn.Module] = None) -> Optional[torch.dtype]:
    """The compute dtype of the fast path for ``x`` (float32 or bfloat16), or ``None`` where it stands aside."""
    return None if why_not_fast(x, module) else compute_dtype(x)


# ---- kernel self-tests -------------------------------------------------------------------------
def _onednn(name: str):
    try:
        return getattr(torch.ops.mkldnn, name)
    except (AttributeError, RuntimeError):
        return None


_LINEAR_PW = _onednn("_linear_pointwise")
_CONV_PW = _onednn("_convolution_pointwise")
_PACK_ROWS = 1024  # oneDNN's layout hint; any number of rows runs with the packed weight


def _test_inputs(dtype: torch.dtype, *shapes):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=g).to(dtype) for s in shapes]


def _close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> bool:
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    return bool(torch.allclose(got.float(), want.float(), atol=10 * tol, rtol=tol))


def _test_linear(dtype: torch.dtype) -> str:
    if _LINEAR_PW is None or not torch.backends.mkldnn.is_available():
        return "torch.ops.mkldnn._linear_pointwise is not available in this build"
    x, w, b, r = _test_inputs(dtype, (37, 24), (40, 24), (40,), (37, 40))
    ref = F.linear(x.float(), w.float(), b.float())
    got = (_LINEAR_PW(x, w, b, "none", [], ""), _LINEAR_PW(x, w, b, "gelu", [], "none"),
           _LINEAR_PW.binary(x, r, w, b, "add"))
    for out, want in zip(got, (ref, F.gelu(ref), ref + r.float())):
        if not _close(out, want, dtype):
            return "it disagrees with F.linear"
    return ""


def _test_conv(dtype: torch.dtype) -> str:
    if _CONV_PW is None or not torch.backends.mkldnn.is_available():
        return "torch.ops.mkldnn._convolution_pointwise is not available in this build"
    x, w, b = _test_inputs(dtype, (2, 8, 5, 6), (8, 1, 3, 3), (8,))
    x = x.contiguous(memory_format=torch.channels_last)
    got = _CONV_PW(x, w, b, [1, 1], [1, 1], [1, 1], 8, "gelu", [], "none")
    want = F.gelu(F.conv2d(x.float(), w.float(), b.float(), padding=1, groups=8))
    if not _close(got, want, dtype):
        return "the depth-wise convolution with GELU disagrees with F.conv2d"
    return ""


def _test_packing(dtype: torch.dtype) -> str:
    x, w, b = _test_inputs(dtype, (64, 32), (48, 32), (48,))
    packed = torch.ops.mkldnn._reorder_linear_weight(w, _PACK_ROWS)
    if not _close(_LINEAR_PW(x, packed, b, "none", [], ""), _LINEAR_PW(x, w, b, "none", [], ""), dtype):
        return "a pre-packed weight gives other results than the plain one"
    return ""


_SELF_TESTS: Dict[str, Callable[[torch.dtype], str]] = {
    "linear": _test_linear, "conv": _test_conv, "packing": _test_packing,
}
_KERNELS: Dict[Tuple[str, torch.dtype], str] = {}  # (kernel, dtype) -> '' (passed) or why it is off


def kernel_ok(name: str, dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's kernel ``name`` (``'linear'``: linear with fused bias / GELU / addition;
    ``'conv'``: depth-wise convolution with GELU; ``'packing'``: pre-packed linear weights) passed
    its self-test in ``dtype``. The test runs once, on first use; a failure warns once and turns the
    kernel off for the process (e.g. bfloat16 on a CPU without bfloat16 instructions)."""
    if name not in _SELF_TESTS:
        raise ValueError(f"kernel must be one of {sorted(_SELF_TESTS)}, got {name!r}")
    key = (name, dtype)
    if key not in _KERNELS:
        try:
            with torch.inference_mode(False), torch.no_grad(), torch.autocast("cpu", enabled=False):
                reason = _SELF_TESTS[name](dtype)
        except Exception as e:  # noqa: BLE001 - a kernel that raises on the test inputs is off
            reason = f"it raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        _KERNELS[key] = reason
        if reason:
            warnings.warn(f"hilovit: oneDNN's {name} kernel is off in {str(dtype).replace('torch.', '')} ({reason}); "
                          f"the plain ops run instead", RuntimeWarning, stacklevel=3)
    return not _KERNELS[key]


def kernel_status() -> Dict[str, str]:
    """``{'kernel dtype': ''}`` for kernels that passed their self-test, else why they are off (runs the tests)."""
    out = {}
    for name in _SELF_TESTS:
        for dtype in (torch.float32, torch.bfloat16):
            if name == "packing" and (dtype != torch.bfloat16 or not kernel_ok("linear", dtype)):
                continue
            label = f"{name} {str(dtype).replace('torch.', '')}"
            out[label] = "" if kernel_ok(name, dtype) else _KERNELS[(name, dtype)]
    return out


# ---- the cache ----------------------------------------------------------------------------------
# Per module: derived tensors (cast and packed weights, folded masks, index plans), each kept until
# the tensors it was made from change (version counter or storage: in-place updates and reloads),
# the least recently used dropped beyond _SLOTS; the entries go with the module.
_CACHE: weakref.WeakKeyDictionary[nn.Module, OrderedDict] = weakref.WeakKeyDictionary()
_SLOTS = 32


@contextlib.contextmanager
def _outside_inference_mode():
    """Cached tensors must also serve later calls under autograd, so under ``torch.inference_mode``
    they are built as normal tensors (without grad)."""
    if _compiling() or not torch.is_inference_mode_enabled():
        yield
        return
    with torch.inference_mode(False), torch.no_grad():
        yield


def cached(owner: nn.Module, slot: tuple, tensors: Sequence[Optional[torch.Tensor]], build: Callable[[], object],
           grad: bool = False):
    """``build()`` kept per ``(owner, slot)`` until any of ``tensors`` changes.

    ``build`` runs without autograd unless ``grad``; while tracing or compiling nothing is stored
    (the values would be the trace's). Entries are dropped with ``owner``.
    """
    stamp = tuple((t._version, t.data_ptr()) for t in tensors if t is not None)
    store = not (_compiling() or tracing())
    slots = _CACHE.get(owner) if store else None
    if slots is not None:
        hit = slots.get(slot)
        if hit is not None and hit[0] == stamp:
            slots.move_to_end(slot)
            return hit[1]
    with _outside_inference_mode(), (contextlib.nullcontext() if grad else torch.no_grad()):
        value = build()
    if store:
        if slots is None:
            slots = _CACHE.setdefault(owner, OrderedDict())
        slots[slot] = (stamp, value)
        while len(slots) > _SLOTS:
            slots.popitem(last=False)
    return value


def cache_entries(owner: nn.Module) -> Dict[tuple, object]:
    """What the cache holds for ``owner``: ``{slot: value}`` (for inspection and tests)."""
    return {slot: value for slot, (_, value) in _CACHE.get(owner, {}).items()}


def cast_weights(weight: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype, pack: bool = False) -> Weights:
    """``weight, bias`` detached and in ``dtype``; ``pack``: a bfloat16 linear weight pre-packed in
    oneDNN's blocked layout for the fused linear kernel (where that passed its self-test)."""
    w = weight.detach().to(dtype)
    b = None if bias is None else bias.detach().to(dtype)
    if pack and dtype == torch.bfloat16 and w.dim() == 2 and kernel_ok("linear", dtype) and kernel_ok("packing", dtype):
        w = torch.ops.mkldnn._reorder_linear_weight(w, _PACK_ROWS)
    return w, b


def _cast_layers(layers: Tuple[nn.Module, ...], dtype: torch.dtype, pack: bool) -> Weights:
    has_bias = [m.bias is not None for m in layers]
    if any(has_bias) and not all(has_bias):
        raise ValueError("inference_weights: either all layers have a bias or none")
    if len(layers) == 1:
        return cast_weights(layers[0].weight, layers[0].bias, dtype, pack)
    bias = torch.cat([m.bias for m in layers]) if all(has_bias) else None
    return cast_weights(torch.cat([m.weight for m in layers]), bias, dtype, pack)


def inference_weights(layers: Sequence[nn.Module], dtype: torch.dtype, pack: bool = False,
                      owner: Optional[nn.Module] = None) -> Weights:
    """Weight and bias of ``layers`` (linear or conv; several are concatenated along the output
    channels) in ``dtype``, cached (one entry per ``owner``, default the first layer, and dtype).
    ``pack``: bfloat16 linear weights pre-packed in oneDNN's blocked layout for the fused linear
    kernel. float32 weights of one layer are the parameters themselves (no copy)."""
    layers = tuple(layers)
    owner = layers[0] if owner is None else owner
    params = [p for m in layers for p in (m.weight, m.bias)]
    return cached(owner, ("weights", dtype, pack, tuple(map(id, layers))), params,
                  lambda: _cast_layers(layers, dtype, pack))


# ---- the kernels --------------------------------------------------------------------------------
def _exact_gelu(act: Optional[nn.Module]) -> bool:
    return type(act) is nn.GELU and act.approximate == "none"


def linear(x: torch.Tensor, *layers: nn.Linear, act: Optional[nn.Module] = None,
           residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``act(x @ W^T + b) (+ residual)`` in the fast path's dtype for ``x`` (the compute dtype:
    autocast's or ``x``'s), with ``W, b`` of ``layers`` (concatenated when several) cast and packed
    once. Call only where :func:`why_not_fast` is ``''``."""
    weights = inference_weights(layers, compute_dtype(x), pack=True)  # a concatenation is kept by the first layer
    return linear_with(x, weights, act=act, residual=residual)


def linear_with(x: torch.Tensor, weights: Weights, act: Optional[nn.Module] = None,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """:func:`linear` with given ``(weight, bias)`` (from :func:`cast_weights`), in their dtype. On
    oneDNN's fused kernel when it passed its self-test: the bias, an exact GELU and the residual
    addition inside the product; else the plain ops."""
    w, b = weights
    x = x.to(w.dtype)
    if residual is not None:
        residual = residual.to(w.dtype)
    if kernel_ok("linear", w.dtype):
        if act is None and residual is not None:
            return _LINEAR_PW.binary(x, residual, w, b, "add")
        if _exact_gelu(act):
            out = _LINEAR_PW(x, w, b, "gelu", [], "none")
        else:
            out = _LINEAR_PW(x, w, b, "none", [], "")
            out = out if act is None else act(out)
    else:
        with torch.autocast(x.device.type, enabled=False):
            out = F.linear(x, w, b)
        out = out if act is None else act(out)
    return out if residual is None else out.add_(residual)


class _OneDnnLinear(torch.autograd.Function):
    """``x @ w^T + b`` for 2-D ``x`` on oneDNN's linear kernel, forward and input gradient; the weight
    gradient ``g^T @ x`` and the bias gradient ``g.sum(0)`` are torch's. Under ``create_graph`` the input
    gradient is ``g @ w`` (differentiable), so double backward works."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return _LINEAR_PW(x, w, b, "none", [], "")

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        x, w = ctx.saved_tensors
        g = g.contiguous()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.mm(g, w) if torch.is_grad_enabled() else _LINEAR_PW(g, w.t(), None, "none", [], "")
        if ctx.needs_input_grad[1]:
            dw = torch.mm(g.t(), x)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g.sum(0)
        return dx, dw, db


def _has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` would run hooks (its own or global ones): weight pruning, spectral
    and weight norm, adapters and feature taps recompute or read around the call, so it must run."""
    g = _module_globals
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None)
                or g._global_forward_hooks or g._global_forward_pre_hooks or g._global_backward_hooks
                or getattr(g, "_global_backward_pre_hooks", None))


def dense(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` under autograd (training) in float32 on the CPU, with the products of the forward
    and of the input gradient on oneDNN's linear kernel instead of torch's ``addmm`` / ``mm``: at
    LITv2-S and Swin-T layer sizes (batch 16, 224) forward plus backward took 1.06-1.18x less time,
    and whole training steps 1.12x (LITv2-S) and 1.26x (Swin-T) less in the committed run
    (``benchmarks/train_linear.md``, made by ``python benchmarks/train_linear.py``). Under bfloat16
    autocast the kernel was no faster (0.94-1.10x per layer, 0.99-1.01x per step), so there, and
    elsewhere (no autograd, other devices or dtypes, a layer with hooks or a subclass, FLOP counting,
    tracing, ``torch.compile``, the switch off): ``layer(x)``."""
    w, b = layer.weight, layer.bias
    if (not torch.is_grad_enabled() or x.device.type != "cpu" or x.numel() == 0 or type(layer) is not nn.Linear
            or x.dim() == 0 or x.shape[-1] != w.shape[-1] or w.device != x.device
            or not x.dtype == w.dtype == compute_dtype(x, w) == torch.float32
            or (b is not None and b.dtype != torch.float32)
            or not (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad))
            or _has_hooks(layer) or why_not_fast(x, training=True) or not kernel_ok("linear", torch.float32)):
        return layer(x)
    out = _OneDnnLinear.apply(x.reshape(-1, x.shape[-1]), w, b)
    return out.view(*x.shape[:-1], out.shape[-1])


def conv2d(x: torch.Tensor, conv: nn.Conv2d, act: Optional[nn.Module] = None) -> torch.Tensor:
    """``act(conv(x))`` for a ``(B, C, H, W)`` input in the compute dtype, with the weight cast once;
    a depth-wise convolution with an exact GELU runs as oneDNN's fused kernel."""
    dtype = compute_dtype(x)
    w, b = inference_weights((conv,), dtype)
    x = x.to(dtype)
    if (_exact_gelu(act) and conv.groups == conv.in_channels and b is not None and conv.padding_mode == "zeros"
            and isinstance(conv.padding, tuple) and kernel_ok("conv", dtype)):
        return _CONV_PW(x, w, b, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                        "gelu", [], "none")
    with torch.autocast(x.device.type, enabled=False):
        out = F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)
    return out if act is None else act(out)


def norm(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``layer(x)`` in ``dtype``: a LayerNorm of bfloat16 rows runs straight to bfloat16 (statistics in
    float32 inside the kernel) instead of autocast's float32 copy in and cast out."""
    if type(layer) is nn.LayerNorm and x.dtype == dtype == torch.bfloat16:
        with torch.autocast(x.device.type, enabled=False):
            return F.layer_norm(x, layer.normalized_shape, layer.weight, layer.bias, layer.eps)
    return layer(x).to(dtype)


# Key sequences up to this long take the bfloat16 path of :func:`attention`.
SHORT_KEYS = 256
_TINY = 1e-30


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor], scale: float,
              dropout_p: float = 0.0, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` for ``(..., heads, L, hd)`` inputs -> ``(..., heads, L, hd)``
    (stored as ``(..., L, heads, hd)`` by the fused kernel and the bfloat16 inference path, contiguous
    from the float32 / training products; callers reshape, which copies only where needed).

    ``out``: a ``(..., heads, L, hd)`` tensor (a transposed view of ``(..., L, heads, hd)`` storage)
    that the bfloat16 inference path writes the result into, sparing the caller a copy. The result
    is returned either way: ``out`` itself where it was written, else a new tensor (the caller copies).

    In bfloat16 CPU inference with short key sequences (windows, pooled keys) the fused CPU kernel
    spends most of its time on per-row softmax bookkeeping and many tiny products, and is no
    faster than in float32. There the attention runs as two batched products around an
    element-wise ``exp`` with the normalisation applied to the output: the logits come out of the
    first product in bfloat16 (as the official ``q @ k.transpose(-2, -1)`` does under autocast)
    and the row maximum is not subtracted; a guard on every row's sum (finite and not vanishing)
    hands any row set that overflows or underflows back to the fused kernel, so the result is the
    softmax's up to bfloat16 rounding.

    Float32 inference and training under autograd (either dtype) with short key sequences on the
    CPU run as plain products around a float32 softmax (:func:`_product_attention`): at window and
    pooled-key sizes the fused kernel is no faster in any case timed, and far slower forward and
    backward in bfloat16 (``benchmarks/short_key_attention.md``, made by
    ``python benchmarks/short_key_attention.py``); the probabilities it would recompute in backward
    are small enough to keep. Everywhere else: ``scaled_dot_product_attention``.
    """
    if dropout_p == 0.0 and k.shape[-2] <= SHORT_KEYS and q.device.type == "cpu":
        if not why_not_fast(q):  # inference
            if q.dtype == torch.float32:
                return _product_attention(q, k, v, mask, scale)
            res = _bfloat16_exp_attention(q, k, v, mask, scale, out) if q.dtype == torch.bfloat16 else None
            if res is not None:
                return res
        # plain ops, so also under torch.compile (the compiled step keeps eager's formulation) and
        # dispatch modes (FLOP counters and memory trackers see what runs); only the switch stops it
        elif (_enabled and torch.is_grad_enabled() and q.dtype in (torch.float32, torch.bfloat16)
              and any(t is not None and t.requires_grad for t in (q, k, v, mask))):
            return _product_attention(q, k, v, mask, scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


def _bfloat16_exp_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                            scale: float, out: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """The bfloat16 inference path of :func:`attention`, or ``None`` where a row sum overflows or vanishes;
    written into ``out`` when that has the result's shape and dtype."""
    # keys gathered as rows (contiguous 64-byte runs) and handed over transposed: the product
    # reads them as B^T, which is ~20% faster than letting matmul gather the 2-byte columns of k^T
    s = torch.matmul(q, k.contiguous().transpose(-1, -2))
    e = (s.mul_(scale) if mask is None else torch.add(mask, s, alpha=scale)).exp_()
    den = e.sum(-1, keepdim=True)  # accumulated in float32 inside, rounded like the output
    lo, hi = torch.aminmax(den) if den.numel() else (torch.ones(()), torch.ones(()))
    if not (bool(lo > _TINY) and bool(hi < math.inf)):  # NaN fails both tests
        return None
    o = torch.matmul(e, v)
    if out is None or out.shape != o.shape or out.dtype != o.dtype:
        shape = q.shape[:-3] + (q.shape[-2], q.shape[-3], v.shape[-1])
        out = torch.empty(shape, dtype=o.dtype, device=o.device).transpose(-2, -3)
    return torch.div(o, den, out=out)


def _product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor],
                       scale: float) -> torch.Tensor:
    """``softmax(q k^T * scale + mask) v`` as two products around a softmax: the logits in the input
    dtype (as the official ``q @ k.transpose(-2, -1)`` gives them under autocast), the softmax in
    float32 and its probabilities back in the input dtype for the second product. Under autograd the
    float32 probabilities are kept (``(..., L, S)``, a few MB per block at window and pooled-key sizes)."""
    s = torch.matmul(q, k.contiguous().transpose(-2, -1))  # keys as rows: see :func:`attention`
    s = s * scale if mask is None else torch.add(mask, s, alpha=scale)
    return torch.matmul(torch.softmax(s, -1, dtype=torch.float32).to(q.dtype), v)


# HiLo's Hi-Fi windows are attended as bands of ``ws`` rows (a block-diagonal mask keeping the
# windows of a band apart) when a band holds at most this many windows: q, k, v are then strided
# views of the projection with no copy, and the attention runs on sequences long enough to be
# efficient. The masked products it also computes are few at these sizes; wider maps, FLOP
# counting, tracing and the switched-off path cut the windows out as the plain math does.
HIFI_BAND_WINDOWS = 16


def hifi_band_windows(x: torch.Tensor, windows_per_band: int) -> bool:
    """Whether HiLo's Hi-Fi branch attends ``x`` in bands (see :data:`HIFI_BAND_WINDOWS`); in training too."""
    return windows_per_band <= HIFI_BAND_WINDOWS and not why_not_fast(x, training=True)
