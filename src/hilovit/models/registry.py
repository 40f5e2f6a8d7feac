"""Named model configs: ``register_model``, ``create_model``, ``list_models``.

Each model family registers its entry points at the bottom of its own file
(``@register_model`` on a function ``name(**kwargs) -> nn.Module``); importing
:mod:`hilovit.models` imports every family.
"""

from __future__ import annotations

import fnmatch
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
import torch.nn as nn

__all__ = ["register_model", "create_model", "list_models", "model_entrypoint", "is_model", "resolve_name",
           "model_task", "split_tag"]

_ENTRYPOINTS: Dict[str, Callable[..., nn.Module]] = {}
_ALIASES: Dict[str, str] = {}
_TASKS: Dict[str, str] = {}


def register_model(fn: Optional[Callable] = None, *, aliases: Iterable[str] = (), task: str = "classification"):
    """Decorator registering ``fn`` under its ``__name__`` (and any ``aliases``) as a model of ``task``."""

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
    One of timm's names without a tag gets timm's default tag (``'swin_small_patch4_window7_224'``
    -> ``('swin_s', 'ms_in22k_ft_in1k')``); other names without one give None.
    """
    from hilovit.models.pretrained import timm_default_tag

    base, tag = split_tag(name)
    model_entrypoint(base)  # an unknown name: ValueError listing the registered ones
    return _ALIASES.get(base, base), (tag if tag is not None else timm_default_tag(base))


_SOURCE_KEYS = ("file", "url", "hf_hub_id")


def _pretrained_source(pretrained, entry, overlay: Dict[str, Any], name: str):
    """``(source, sha256, file_name)`` for ``pretrained`` (True, a path, a URL or 'hf-hub:...')."""
    if pretrained is True:
        if overlay.get("file"):
            return overlay["file"], overlay.get("sha256"), None
        if overlay.get("url"):
            return overlay["url"], overlay.get("sha256"), overlay.get("file_name")
        if overlay.get("hf_hub_id"):
            return "hf-hub:" + overlay["hf_hub_id"], overlay.get("sha256"), None
        if entry is None:
            raise ValueError(f"no pretrained weights are published for {name!r}; pass a file: pretrained='path.pth', "
                             "a URL, or 'hf-hub:org/name'")
        return entry.url, overlay.get("sha256", entry.sha256), entry.file_name
    if isinstance(pretrained, os.PathLike):
        pretrained = os.fspath(pretrained)
    if not pretrained:
        raise ValueError("pretrained is an empty string; expected False, True, a file path, a URL or 'hf-hub:org/name'")
    return pretrained, overlay.get("sha256"), overlay.get("file_name")


def _own_url(base: str, kwargs: Dict[str, Any]) -> str:
    """The ``url`` of the ``pretrained_cfg`` a model sets itself (dense-prediction models, whose
    official files are not in the weights table), read from a copy built on the meta device."""
    try:
        with torch.device("meta"):
            model = model_entrypoint(base)(**kwargs)
    except (TypeError, ValueError):
        return ""  # bad arguments: the real build below reports them
    return str((getattr(model, "pretrained_cfg", None) or {}).get("url") or "")


def create_model(
    name: str,
    pretrained: Union[bool, str, os.PathLike, None] = False,
    pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, with timm's meaning of ``pretrained``.

    Args:
        name: a registered name or alias (see :func:`list_models`), optionally with a weights tag:
            ``'litv2_s.alpha_0_5'``, ``'swin_tiny_patch4_window7_224.ms_in22k_ft_in1k'`` (see
            ``hilovit models --pretrained``). A tag sets the model's ``pretrained_cfg`` and the
            arguments the weights need (``alpha``, ``num_classes=21841`` for ImageNet-22k).
        pretrained: ``False`` (or None): random initialisation. ``True``: the official weights of
            the tag (default: the model's first published weights; for ``litv2_s`` the file matching
            an ``alpha=`` argument), downloaded once into the torch hub cache
            (``$TORCH_HOME/hub/checkpoints``). A path, an ``http(s)://`` URL or
            ``'hf-hub:org/name'``: that file. ``HILOVIT_OFFLINE=1`` never downloads.
        pretrained_cfg_overlay: entries that replace the weights' config, as timm's: ``url``,
            ``file`` (a local path), ``hf_hub_id``, ``sha256``, or preprocessing keys (``crop_pct``,
            ``mean``, ...).
        **kwargs: constructor arguments (``num_classes=10``, ``in_chans=1``, ``img_size=384``,
            ``window_size=12``, ``drop_path_rate=0.1``, ...). Weights are adapted as timm does: a
            classifier of another size is re-initialised (a warning names it), the stem is summed
            for one input channel, Swin's relative-position tables are resized bicubically.

    Raises:
        ValueError: an unknown name or tag, or no published weights fit the arguments.
        hilovit.models.hub.DownloadError: the weights cannot be fetched (the message says how to
            fetch them by hand).

    Example::

        >>> model = create_model("litv2_s", pretrained=True)              # official ImageNet-1k weights
        >>> model = create_model("litv2_s", alpha=0.5, pretrained=True)   # the alpha = 0.5 checkpoint
        >>> model = create_model("swin_t", pretrained=True, num_classes=10, in_chans=1)
    """
    from hilovit.models import hub
    from hilovit.models import pretrained as weights

    if pretrained_cfg_overlay is not None and not isinstance(pretrained_cfg_overlay, dict):
        raise TypeError(f"pretrained_cfg_overlay must be a dict, got {type(pretrained_cfg_overlay).__name__}")
    overlay = dict(pretrained_cfg_overlay or {})
    if pretrained is not None and not isinstance(pretrained, (bool, str, os.PathLike)):
        raise TypeError(
            "pretrained must be False, True, a file path, an http(s):// URL or 'hf-hub:org/name', "
            f"got {type(pretrained).__name__}"
        )
    base, tag = resolve_name(name)
    wants_official = pretrained is True and not any(overlay.get(k) for k in _SOURCE_KEYS)
    # a model outside the weights table may name its official file in its own pretrained_cfg
    own_url = _own_url(base, kwargs) if wants_official and tag is None and not weights.list_pretrained(base) else ""
    entry = weights.get_pretrained(base, tag, kwargs, required=wants_official and not own_url)
    if own_url:
        overlay["url"] = own_url
    path = source = None
    if pretrained is not None and pretrained is not False:
        source, sha256, file_name = _pretrained_source(pretrained, entry, overlay, name)
        path = hub.fetch(source, sha256=sha256, file_name=file_name)  # before building: fail fast
    args = dict(entry.model_args) if entry is not None else {}
    if entry is not None:
        args.update(entry.variant_args)
    args.update(kwargs)
    model = model_entrypoint(base)(**args)
    if entry is not None:
        weights.apply_cfg(model, entry)
    if overlay:
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        cfg.update(overlay)
        model.pretrained_cfg = cfg
    if path is not None:
        weights.load_file(model, path, origin=source)
    return model
