"""``resolve_data_config``: the preprocessing a model wants, with timm's names and meanings.

    >>> from hilovit.data import resolve_data_config, create_transform
    >>> config = resolve_data_config(model=model)
    >>> config
    {'input_size': (3, 224, 224), 'interpolation': 'bicubic', 'mean': (0.485, 0.456, 0.406),
     'std': (0.229, 0.224, 0.225), 'crop_pct': 0.875, 'crop_mode': 'center'}
    >>> transform = create_transform(**config)

The same keys and precedence as timm's ``timm.data.resolve_data_config``: ``args`` first, then the
``pretrained_cfg`` given, else the model's, else timm's defaults (3x224x224, bicubic, ImageNet mean/std,
crop_pct 0.875, centre crop).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Mapping, Optional, Tuple

from hilovit.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hilovit.data.image_transforms import DEFAULT_CROP_MODE, DEFAULT_CROP_PCT

__all__ = ["resolve_data_config", "resolve_model_data_config"]

_logger = logging.getLogger(__name__)


def _as_mapping(args: Any) -> Mapping[str, Any]:
    if args is None:
        return {}
    if isinstance(args, Mapping):
        return args
    if hasattr(args, "__dict__"):  # an argparse.Namespace, as timm's scripts pass
        return vars(args)
    raise TypeError(f"args must be a dict, an argparse.Namespace or None, got {type(args).__name__}")


def _stats(args: Mapping[str, Any], cfg: Mapping[str, Any], key: str, default: Tuple[float, ...],
           in_chans: int) -> Tuple[float, ...]:
    if args.get(key) is not None:
        values = tuple(args[key])
        if len(values) == 1:
            return values * in_chans
        if len(values) != in_chans:
            raise ValueError(f"{key}={values!r}: expected 1 or {in_chans} values for {in_chans} input channels")
        return values
    return tuple(cfg[key]) if cfg.get(key) else default


def _input_size(args: Mapping[str, Any], cfg: Mapping[str, Any], use_test_size: bool) -> Tuple[int, int, int]:
    in_chans = 3
    for key in ("in_chans", "chans"):
        if args.get(key) is not None:
            in_chans = args[key]
            break
    if args.get("input_size") is not None:
        size = args["input_size"]
        if not isinstance(size, (tuple, list)) or len(size) != 3:
            raise ValueError(f"input_size={size!r}: expected (C, H, W)")
        return tuple(size)
    if args.get("img_size") is not None:
        size = args["img_size"]
        if isinstance(size, bool) or not isinstance(size, int):
            raise ValueError(f"img_size={size!r}: expected an int (use input_size for (C, H, W))")
        return (in_chans, size, size)
    if use_test_size and cfg.get("test_input_size") is not None:
        return tuple(cfg["test_input_size"])
    if cfg.get("input_size") is not None:
        return tuple(cfg["input_size"])
    return (in_chans, 224, 224)


def resolve_data_config(
    args: Any = None,
    pretrained_cfg: Optional[Mapping[str, Any]] = None,
    model: Any = None,
    use_test_size: bool = False,
    verbose: bool = False,
) -> Dict[str, Any]:
    """The evaluation preprocessing for a model, as timm resolves it.

    Args:
        args: a dict or ``argparse.Namespace`` whose set entries win: ``input_size`` (C, H, W),
            ``img_size`` (int), ``in_chans``/``chans``, ``interpolation``, ``mean``, ``std`` (1 value is
            repeated per channel), ``crop_pct``, ``crop_mode``.
        pretrained_cfg: a ``pretrained_cfg`` dict (default: ``model.pretrained_cfg``).
        model: a model carrying ``pretrained_cfg``.
        use_test_size: take ``test_input_size`` (and ``test_crop_pct``) when the config has them.
        verbose: log the result.

    Returns:
        ``{'input_size', 'interpolation', 'mean', 'std', 'crop_pct', 'crop_mode'}``, the keyword
        arguments of :func:`hilovit.data.create_transform`.

    Raises:
        ValueError: none of ``args``, ``pretrained_cfg`` and ``model`` given, or a bad ``input_size``,
            ``img_size``, ``mean`` or ``std``. TypeError: ``args`` of another type.
    """
    if args is None and pretrained_cfg is None and model is None:
        raise ValueError("resolve_data_config needs at least one of args, pretrained_cfg or model")
    args = _as_mapping(args)
    if pretrained_cfg is not None and not isinstance(pretrained_cfg, Mapping):
        raise TypeError(f"pretrained_cfg must be a dict, got {type(pretrained_cfg).__name__}")
    cfg = pretrained_cfg or (getattr(model, "pretrained_cfg", None) if model is not None else None) or {}
    input_size = _input_size(args, cfg, use_test_size)
    config: Dict[str, Any] = {"input_size": input_size}
    config["interpolation"] = args.get("interpolation") or cfg.get("interpolation") or "bicubic"
    config["mean"] = _stats(args, cfg, "mean", IMAGENET_DEFAULT_MEAN, input_size[0])
    config["std"] = _stats(args, cfg, "std", IMAGENET_DEFAULT_STD, input_size[0])
    if args.get("crop_pct"):
        crop_pct = args["crop_pct"]
    elif use_test_size and cfg.get("test_crop_pct"):
        crop_pct = cfg["test_crop_pct"]
    else:
        crop_pct = cfg.get("crop_pct") or DEFAULT_CROP_PCT
    config["crop_pct"] = crop_pct
    config["crop_mode"] = args.get("crop_mode") or cfg.get("crop_mode") or DEFAULT_CROP_MODE
    if verbose:
        _logger.info("Data processing configuration: %s", config)
    return config


def resolve_model_data_config(model: Any, args: Any = None, pretrained_cfg: Optional[Mapping[str, Any]] = None,
                              use_test_size: bool = False, verbose: bool = False) -> Dict[str, Any]:
    """:func:`resolve_data_config` with the model first (timm's ``resolve_model_data_config``)."""
    return resolve_data_config(args, pretrained_cfg=pretrained_cfg, model=model, use_test_size=use_test_size,
                               verbose=verbose)
