"""FLOPs: the analytic counts of the modules and a cross-check that counts the executed ops.

Every count here is in **multiply-adds** (one multiply-add = one FLOP), the unit of the
official ``flops()`` methods and of the papers' tables. Analytic counts live on the modules
(``module.flops(H, W)``; models: ``model.flops(img_size)``); :func:`analytic_flops` calls them.

:func:`count_flops` runs the module once under :class:`torch.utils.flop_counter.FlopCounterMode`
and converts what it counted (2 FLOPs per multiply-add) to multiply-adds. It counts matrix
products, linear layers, convolutions and attention (``scaled_dot_product_attention``, including
the fused CPU kernel the stock counter does not know); it does not count element-wise work
(softmax, normalisation, activations, pooling, bias and mask additions), which the official
counts leave out as well.
"""

from __future__ import annotations

from typing import Any, Dict

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

__all__ = ["count_flops", "count_flops_by_op", "analytic_flops"]


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _custom_mapping() -> Dict[Any, Any]:
    mapping: Dict[Any, Any] = {}
    aten = torch.ops.aten
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flop
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = _sdpa_cpu_backward_flop
    return mapping


def _run_counted(module: nn.Module, inputs, kwargs) -> FlopCounterMode:
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with counter, torch.no_grad():
        module(*inputs, **kwargs)
    return counter


def count_flops(module: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Multiply-adds executed by one forward call ``module(*inputs, **kwargs)`` (no grad).

    Example::

        >>> attn = HiLo(64, num_heads=4, window_size=2)
        >>> count_flops(attn, torch.randn(1, 14, 14, 64)) == attn.flops(14, 14)
        True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"count_flops: expected an nn.Module, got {type(module).__name__}")
    return _run_counted(module, inputs, kwargs).get_total_flops() // 2


def count_flops_by_op(module: nn.Module, *inputs: Any, **kwargs: Any) -> Dict[str, int]:
    """Multiply-adds per aten op (e.g. ``{'addmm': ..., 'convolution': ...}``) for one forward call."""
    counts = _run_counted(module, inputs, kwargs).get_flop_counts().get("Global", {})
    return {str(op).split(".")[-1] if "." in str(op) else str(op): int(n) // 2 for op, n in counts.items()}


def analytic_flops(module: nn.Module, *size: int) -> int:
    """The module's own analytic count: ``module.flops(*size)`` with a clear error when it has none."""
    fn = getattr(module, "flops", None)
    if fn is None:
        raise TypeError(f"{type(module).__name__} has no analytic flops() method")
    return int(fn(*size))
