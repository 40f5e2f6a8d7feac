"""Named model configs: ``register_model``, ``list_models``, names, aliases, tags and tasks.

Each model family registers its entry points at the bottom of its own file
(``@register_model`` on a function ``name(**kwargs) -> nn.Module``) beside its published weights
(:func:`hilovit.models.pretrained.register_weights`); importing :mod:`hilovit.models` imports every
family. A family's dense-prediction backbone is registered under its official config ``type``
(:func:`register_dense_backbone`), which :func:`hilovit.build_segmentor` and :func:`hilovit.build_detector`
read. Building a model with its weights is :func:`hilovit.models._builder.create_model`. This
module imports no other part of hilovit.
"""

from __future__ import annotations

import fnmatch
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch.nn as nn

__all__ = ["register_model", "unregister_model", "list_models", "model_entrypoint", "is_model", "resolve_name",
           "model_task", "split_tag", "same_model", "DENSE_TASKS", "register_dense_backbone",
           "unregister_dense_backbone", "dense_backbones"]

_ENTRYPOINTS: Dict[str, Callable[..., nn.Module]] = {}
_ALIASES: Dict[str, str] = {}
_ALIAS_TAGS: Dict[str, str] = {}  # alias -> the weights tag it loads without one (timm's default)
_TASKS: Dict[str, str] = {}
#: The tasks whose models take a dense-prediction backbone by its official config ``type``.
DENSE_TASKS = ("segmentation", "detection")
_DENSE: Dict[str, Dict[str, type]] = {task: {} for task in DENSE_TASKS}  # task -> type name -> class


def register_model(fn: Optional[Callable] = None, *, aliases: Union[Iterable[str], Mapping[str, str]] = (),
                   task: str = "classification"):
    """Decorator registering ``fn`` under its ``__name__`` (and any ``aliases``) as a model of ``task``.

    ``aliases`` may map each alias to the weights tag it stands for when given without one (timm's
    names default to timm's first tag: ``{'swin_small_patch4_window7_224': 'ms_in22k_ft_in1k'}``).
    """

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = f.__name__
        if name in _ENTRYPOINTS or name in _ALIASES:
            raise ValueError(f"model name {name!r} is registered twice")
        _ENTRYPOINTS[name] = f
        _TASKS[name] = task
        for alias in aliases:
            if alias in _ENTRYPOINTS or alias in _ALIASES:
                raise ValueError(f"model alias {alias!r} is registered twice")
            _ALIASES[alias] = name
            if isinstance(aliases, Mapping) and aliases[alias]:
                _ALIAS_TAGS[alias] = aliases[alias]
        return f

    return wrap(fn) if fn is not None else wrap


def unregister_model(name: str) -> None:
    """Remove the model registered as ``name`` and its aliases (``ValueError`` if there is none)."""
    if name not in _ENTRYPOINTS:
        raise ValueError(f"unregister_model: no model registered as {name!r}")
    del _ENTRYPOINTS[name]
    _TASKS.pop(name, None)
    for alias in [a for a, target in _ALIASES.items() if target == name]:
        del _ALIASES[alias]
        _ALIAS_TAGS.pop(alias, None)


def _dense_tasks(task: Optional[str]) -> Tuple[str, ...]:
    if task is None:
        return DENSE_TASKS
    if task not in DENSE_TASKS:
        raise ValueError(f"task must be None (every dense task) or one of {list(DENSE_TASKS)}, got {task!r}")
    return (task,)


def register_dense_backbone(type_name: str, cls: Optional[type] = None, *, task: Optional[str] = None):
    """Register ``cls`` as the dense-prediction backbone built for ``backbone=dict(type=type_name, ...)``
    in the official mmseg/mmdet config dicts (:func:`hilovit.build_segmentor`, :func:`hilovit.build_detector`).

    Args:
        type_name: the official config ``type`` (``'LITv2'``, ``'SwinTransformer'``).
        cls: an ``nn.Module`` class built from the config's other keys, whose ``forward`` returns a
            tuple of NCHW maps and which has ``out_indices`` and ``out_channels`` (one channel count
            per returned map). Without it, a class decorator.
        task: ``'segmentation'`` or ``'detection'`` when the official code uses another class per task
            (LITv2's segmentation backbone normalises stage 0, its detection backbone does not);
            None registers ``cls`` for both.
    """
    tasks = _dense_tasks(task)
    if not isinstance(type_name, str) or not type_name:
        raise ValueError(f"register_dense_backbone: type_name must be a non-empty str, got {type_name!r}")

    def wrap(klass: type) -> type:
        if not isinstance(klass, type) or not issubclass(klass, nn.Module):
            raise TypeError(f"register_dense_backbone: cls must be an nn.Module class, got {klass!r}")
        for t in tasks:
            if type_name in _DENSE[t]:
                raise ValueError(f"dense backbone type {type_name!r} is registered twice for {t}")
        for t in tasks:
            _DENSE[t][type_name] = klass
        return klass

    return wrap(cls) if cls is not None else wrap


def unregister_dense_backbone(type_name: str, task: Optional[str] = None) -> None:
    """Remove the backbone registered as ``type_name`` for ``task`` (None: every task it is registered for)."""
    tasks = [t for t in _dense_tasks(task) if type_name in _DENSE[t]]
    if not tasks:
        raise ValueError(f"unregister_dense_backbone: no backbone type {type_name!r} registered"
                         + (f" for {task}" if task else ""))
    for t in tasks:
        del _DENSE[t][type_name]


def dense_backbones(task: str) -> Dict[str, type]:
    """The backbones ``task`` (``'segmentation'`` or ``'detection'``) builds, by official config ``type``
    (a copy, in registration order)."""
    if task not in DENSE_TASKS:
        raise ValueError(f"task must be one of {list(DENSE_TASKS)}, got {task!r}")
    _load_families()
    return dict(_DENSE[task])


def _load_families() -> None:
    import hilovit.models  # noqa: F401  (registers every family)


def list_models(pattern: str = "*", include_aliases: bool = False) -> List[str]:
    """Sorted registered names matching a shell-style ``pattern`` (e.g. ``'litv2*'``)."""
    _load_families()
    names = list(_ENTRYPOINTS) + (list(_ALIASES) if include_aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    """Whether ``name`` (a name or alias, optionally with a ``.tag``) is registered."""
    _load_families()
    base = name.partition(".")[0] if isinstance(name, str) else name
    return base in _ENTRYPOINTS or base in _ALIASES


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The function registered as ``name`` (or an alias, either with a ``.tag``); ``ValueError``
    listing the choices."""
    _load_families()
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    base = name.partition(".")[0]
    key = _ALIASES.get(base, base)
    if key not in _ENTRYPOINTS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _ENTRYPOINTS[key]


def split_tag(name: str) -> Tuple[str, Optional[str]]:
    """``'litv2_s.alpha_0_5'`` -> ``('litv2_s', 'alpha_0_5')``; ``'litv2_s'`` -> ``('litv2_s', None)``."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    base, dot, tag = name.partition(".")
    if dot and not tag:
        raise ValueError(f"model name {name!r} ends with '.': expected 'name' or 'name.tag'")
    return base, (tag or None)


def model_task(name: str) -> Optional[str]:
    """The task of a registered model (a name or alias, with or without a tag); None for a function
    placed in the registry without :func:`register_model`."""
    model_entrypoint(name)
    base = name.partition(".")[0]
    return _TASKS.get(_ALIASES.get(base, base))


def resolve_name(name: str) -> Tuple[str, Optional[str]]:
    """``(registered name, tag)`` for a name, an alias or either with a tag.

    ``'swin_base_patch4_window12_384.ms_in22k_ft_in1k'`` -> ``('swin_b_384', 'ms_in22k_ft_in1k')``.
    An alias registered with a default tag gets it when given without one (timm's
    ``'swin_small_patch4_window7_224'`` -> ``('swin_s', 'ms_in22k_ft_in1k')``); other names
    without one give None.
    """
    base, tag = split_tag(name)
    model_entrypoint(base)  # an unknown name: ValueError listing the registered ones
    return _ALIASES.get(base, base), (tag if tag is not None else _ALIAS_TAGS.get(base))


def same_model(a: str, b: str) -> bool:
    """Whether two registered names are the same model (a name and its alias)."""
    if a == b:
        return True
    try:
        return model_entrypoint(a) is model_entrypoint(b)
    except ValueError:
        return False
