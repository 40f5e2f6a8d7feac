"""Swin checkpoints -> hilovit's Swin: timm's layout, derived buffers, resized tables (the Swin family's filter).

:func:`swin_filter` is what :meth:`hilovit.models.swin.SwinTransformer.checkpoint_filter_fn` runs:
timm's layout renamed to the official one, derived buffers (``relative_position_index``,
``attn_mask``) verified and rebuilt, the relative position bias table and the absolute position
embedding resized bicubically for another window or size. The generic steps (the ``backbone.``
prefix, a classifier's norm and head for a feature extractor) are :mod:`hilovit.models.convert`'s.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.models._prefix import only_backbone_keys, split_backbone
from hilovit.models.checkpoint import CheckpointError
from hilovit.models.convert import StateDict, drop_classifier

__all__ = ["swin_filter"]


def swin_filter(model: nn.Module, state_dict: StateDict) -> StateDict:
    """Adapt an official or timm Swin state dict to ``model`` (a :class:`~hilovit.models.swin.SwinTransformer`).

    - timm's layout (merging at the start of stage ``i + 1``, ``head.fc``) is renamed to the
      official one; a ``backbone.`` prefix (detection checkpoints) is dropped.
    - ``relative_position_index`` is checked against the rebuilt index (an error if it holds
      other values at the same shape) and rebuilt when absent or of another window size.
    - ``attn_mask`` is checked against the rebuilt mask (a warning if it differs) and rebuilt
      when absent or made for another size.
    - ``relative_position_bias_table`` of another window size is resized by bicubic
      interpolation, and ``absolute_pos_embed`` of another size likewise, as the official
      fine-tuning does.
    - a ``features_only`` model drops ``norm.*`` and ``head.*``.
    """
    sd = dict(state_dict)
    if only_backbone_keys(sd):
        sd, _ = split_backbone(sd)
    if _is_timm_layout(sd, model.num_layers):
        sd = {_timm_to_official(k): v for k, v in sd.items()}
    own = model.state_dict()
    for key in list(sd):
        if key.endswith("attn_mask") or key.endswith("relative_position_index"):
            value = sd.pop(key)
            if key in own:
                _verify_buffer(key, value, own[key])
        elif key.endswith("relative_position_bias_table") and key in own:
            sd[key] = _resize_bias_table(key, sd[key], own[key])
        elif key == "absolute_pos_embed" and key in own:
            sd[key] = _resize_pos_embed(sd[key], own[key], model.patches_resolution)
    for key, value in own.items():  # derived buffers: always the model's own
        if key.endswith("attn_mask") or key.endswith("relative_position_index"):
            sd[key] = value
    if model.features_only:
        sd = drop_classifier(model, sd, keep_fresh_norms=False)
    return sd


_TIMM_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def _is_timm_layout(sd: Dict[str, torch.Tensor], num_layers: int) -> bool:
    if "head.fc.weight" in sd or "head.fc.bias" in sd:
        return True
    stages = {int(m.group(1)) for k in sd if (m := _TIMM_DOWNSAMPLE.match(k))}
    return bool(stages) and 0 not in stages and max(stages) == num_layers - 1 and num_layers > 1


def _timm_to_official(key: str) -> str:
    key = _TIMM_DOWNSAMPLE.sub(lambda m: f"layers.{int(m.group(1)) - 1}.downsample.", key)
    if key.startswith("head.fc."):
        key = "head." + key[len("head.fc.") :]
    return key


def _verify_buffer(key: str, value: torch.Tensor, own: torch.Tensor) -> None:
    if tuple(value.shape) != tuple(own.shape):
        return  # made for another window or size: rebuilt
    if key.endswith("relative_position_index"):
        if not torch.equal(value.to(own.device, own.dtype), own):
            raise CheckpointError(f"{key}: the checkpoint's relative position index differs from the official one")
    elif not torch.allclose(value.to(own.device, own.dtype), own):
        warnings.warn(f"{key}: the checkpoint's shifted-window mask differs from the rebuilt one; rebuilt",
                      stacklevel=3)


def _resize_bias_table(key: str, table: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    if table.shape == own.shape or table.dim() != 2 or own.dim() != 2 or table.shape[1] != own.shape[1]:
        return table  # equal, or heads differ: reported as a shape mismatch
    L1, heads = table.shape
    s1 = math.isqrt(L1)
    s2 = math.isqrt(own.shape[0])
    if s1 * s1 != L1 or s2 * s2 != own.shape[0]:
        raise CheckpointError(f"{key}: cannot resize a non-square table {tuple(table.shape)} to {tuple(own.shape)}")
    grid = table.float().t().reshape(1, heads, s1, s1)
    grid = F.interpolate(grid, size=(s2, s2), mode="bicubic", align_corners=False)
    return grid.reshape(heads, s2 * s2).t().to(table.dtype)


def _resize_pos_embed(pos: torch.Tensor, own: torch.Tensor, resolution: List[int]) -> torch.Tensor:
    if pos.dim() == 4:  # timm keeps (1, H, W, C)
        h, w = pos.shape[1:3]
        if [h, w] != list(resolution) and pos.shape[-1] == own.shape[-1]:
            grid = F.interpolate(pos.float().permute(0, 3, 1, 2), size=tuple(resolution), mode="bicubic",
                                 align_corners=False)
            pos = grid.permute(0, 2, 3, 1).to(pos.dtype)
        return pos.flatten(1, 2)
    if pos.shape == own.shape or pos.dim() != 3 or pos.shape[-1] != own.shape[-1]:
        return pos
    s1 = math.isqrt(pos.shape[1])
    if s1 * s1 != pos.shape[1]:
        raise CheckpointError(
            f"absolute_pos_embed: cannot resize a non-square {tuple(pos.shape)} to {tuple(own.shape)}"
        )
    grid = pos.float().reshape(1, s1, s1, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(resolution), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(1, -1, pos.shape[-1]).to(pos.dtype)
