"""The ``backbone.`` prefix of dense-prediction checkpoints, known in this one place.

mmdet and mmseg store a detector's or segmentor's backbone under ``backbone.`` (``backbone.patch_embed.proj.weight``);
a classifier or a bare backbone stores the same tensors without it. Loading one into the other adds or
removes the prefix through these helpers. This module imports no other part of hilovit.

Example::

    >>> part, rest = split_backbone({"backbone.norm0.weight": w, "neck.conv.weight": v})
    >>> part, rest
    ({'norm0.weight': w}, {'neck.conv.weight': v})
    >>> add_backbone_prefix(part)
    {'backbone.norm0.weight': w}
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping, Tuple, TypeVar

__all__ = ["BACKBONE_PREFIX", "add_backbone_prefix", "backbone_key", "has_backbone_keys", "is_backbone_key",
           "only_backbone_keys", "split_backbone", "strip_backbone_prefix"]

BACKBONE_PREFIX = "backbone."
V = TypeVar("V")


def is_backbone_key(key: str) -> bool:
    """Whether ``key`` lies under ``backbone.``."""
    return key.startswith(BACKBONE_PREFIX)


def backbone_key(key: str) -> str:
    """``key`` under ``backbone.`` (``'patch_embed.proj'`` -> ``'backbone.patch_embed.proj'``)."""
    return BACKBONE_PREFIX + key


def strip_backbone_prefix(key: str) -> str:
    """``key`` without its ``backbone.`` prefix (a key without one is returned as it is)."""
    return key[len(BACKBONE_PREFIX):] if is_backbone_key(key) else key


def has_backbone_keys(keys: Iterable[str]) -> bool:
    """Whether any of ``keys`` (a state dict's) lies under ``backbone.``: a detector's or segmentor's."""
    return any(is_backbone_key(k) for k in keys)


def only_backbone_keys(keys: Iterable[str]) -> bool:
    """Whether ``keys`` are not empty and every one lies under ``backbone.`` (a backbone saved on its own
    with the prefix)."""
    keys = list(keys)
    return bool(keys) and all(is_backbone_key(k) for k in keys)


def split_backbone(state_dict: Mapping[str, V]) -> Tuple[Dict[str, V], Dict[str, V]]:
    """``(backbone part with the prefix removed, everything else as it is)`` of a state dict."""
    part = {strip_backbone_prefix(k): v for k, v in state_dict.items() if is_backbone_key(k)}
    rest = {k: v for k, v in state_dict.items() if not is_backbone_key(k)}
    return part, rest


def add_backbone_prefix(state_dict: Mapping[str, V]) -> Dict[str, V]:
    """Every key of ``state_dict`` put under ``backbone.``."""
    return {backbone_key(k): v for k, v in state_dict.items()}
