"""Named model configs: ``register_model``, ``create_model``, ``list_models``.

Each model family registers its entry points at the bottom of its own file
(``@register_model`` on a function ``name(**kwargs) -> nn.Module``); importing
:mod:`hilovit.models` imports every family.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Dict, Iterable, List, Optional

import torch.nn as nn

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint", "is_model"]

_ENTRYPOINTS: Dict[str, Callable[..., nn.Module]] = {}
_ALIASES: Dict[str, str] = {}


def register_model(fn: Optional[Callable] = None, *, aliases: Iterable[str] = ()):
    """Decorator registering ``fn`` under its ``__name__`` (and any ``aliases``)."""

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _ENTRYPOINTS or name in _ALIASES:
            raise ValueError(f"model name {name!r} is registered twice")
        _ENTRYPOINTS[name] = f
        for alias in aliases:
            if alias in _ENTRYPOINTS or alias in _ALIASES:
                raise ValueError(f"model alias {alias!r} is registered twice")
            _ALIASES[alias] = name
        return f

    return wrap(fn) if fn is not None else wrap


def _load_families() -> None:
    import hilovit.models  # noqa: F401  (registers every family)


def list_models(pattern: str = "*", include_aliases: bool = False) -> List[str]:
    """Sorted registered names matching a shell-style ``pattern`` (e.g. ``'litv2*'``)."""
    _load_families()
    names = list(_ENTRYPOINTS) + (list(_ALIASES) if include_aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    _load_families()
    return name in _ENTRYPOINTS or name in _ALIASES


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The function registered as ``name`` (or an alias); ``ValueError`` listing the choices."""
    _load_families()
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    key = _ALIASES.get(name, name)
    if key not in _ENTRYPOINTS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _ENTRYPOINTS[key]


def create_model(name: str, pretrained: Optional[str] = None, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` replace the named config's constructor arguments.

    Args:
        name: a registered name or alias (see :func:`list_models`).
        pretrained: a checkpoint path (``.pth``/``.pt``/``.safetensors``), loaded with
            :func:`hilovit.load_checkpoint` after construction. Weights are never downloaded:
            ``model.pretrained_cfg['url']`` says where the official ones are published.
        **overrides: constructor arguments (``num_classes=10``, ``drop_path_rate=0.1``, ...).
    """
    model = model_entrypoint(name)(**overrides)
    if pretrained is not None:
        from hilovit.models.checkpoint import load_checkpoint

        load_checkpoint(model, pretrained)
    return model
