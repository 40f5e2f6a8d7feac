"""Feed-forward blocks."""

from __future__ import annotations

from typing import Optional, Type

import torch
import torch.nn as nn

__all__ = ["Mlp"]


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
