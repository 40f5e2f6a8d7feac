"""Exponential moving average of a model's weights (as timm's ``ModelEmaV2``)."""

from __future__ import annotations

import copy
from typing import Any, Dict

import torch
import torch.nn as nn

__all__ = ["ModelEma"]


class ModelEma:
    """A copy of ``model`` whose floating-point parameters and buffers follow
    ``ema = d * ema + (1 - d) * weights`` after every optimiser step.

    The decay warms up as ``d = min(decay, (1 + n) / (10 + n))`` for the ``n``-th update, so a
    short run is not dominated by the random initial weights. Integer buffers (BatchNorm's
    ``num_batches_tracked``) are copied.

    Args:
        model: the model being trained (unwrapped from DDP).
        decay: the final decay, e.g. 0.9998 for long runs, 0.999 for a few thousand steps.
        warmup: use the warm-up rule above.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ModelEma: decay={decay}, expected a value in [0, 1)")
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        self.updates += 1
        src = model.state_dict()
        for name, ema_v in self.module.state_dict().items():
            v = src[name].detach()
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.to(ema_v.dtype), 1.0 - d)
            else:
                ema_v.copy_(v)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def state_dict(self) -> Dict[str, Any]:
        """The EMA weights, the update counter and the decay."""
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state.get("updates", 0))
