"""The model builder: a registered model with its weights and its ``pretrained_cfg``, set in one place.

* :func:`create_model` (``hilovit.create_model``): timm's meaning of ``pretrained``: the published
  weights of a tag (the table each family fills, :mod:`hilovit.models.pretrained`), a file, a URL or
  ``hf-hub:``; the weights are fetched before the model is built (fail fast), the entry's
  ``pretrained_cfg`` applied (:func:`apply_cfg`) and the weights adapted and loaded
  (:func:`hilovit.models.pretrained.load_file`: input channels, a new classifier, an mmdet/mmseg
  checkpoint's backbone, a classifier's backbone into a segmenter or detector).
* A model repository as the name (``hf-hub:org/name``, ``local-dir:PATH``): its ``config.json``
  names the architecture, classes and preprocessing (:mod:`hilovit.models.repo`), as in timm.
* :func:`pretrained_model`: ``create_model`` where ``pretrained`` may also be a tag, and where a file,
  local or fetched from a URL, sizes the model first.
* :func:`load_model` (``hilovit.load_model``): the model a checkpoint or a training run was made as,
  sized from it (recorded task, classes, channels, constructor arguments), loaded strictly.
* :func:`model_rows`: what ``hilovit models`` lists.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from hilovit.models._api import update_pretrained_cfg
from hilovit.models.checkpoint import CheckpointError, Source, _load_into
from hilovit.models.registry import model_entrypoint, resolve_name, same_model, split_tag

__all__ = ["create_model", "pretrained_model", "load_model", "apply_cfg", "model_rows"]

_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")


def _cfg_stats(values: Tuple[float, ...], in_chans: int) -> Tuple[float, ...]:
    if len(values) == in_chans:
        return tuple(values)
    if in_chans == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(in_chans))


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


def create_model(
    name: str,
    pretrained: Union[bool, str, os.PathLike, None] = None,
    pretrained_cfg: Union[str, Dict[str, Any], None] = None,
    pretrained_cfg_overlay: Optional[Dict[str, Any]] = None,
    checkpoint_path: Union[str, os.PathLike, None] = None,
    scriptable: Optional[bool] = None,
    exportable: Optional[bool] = None,
    no_jit: Optional[bool] = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model, with timm's meaning of ``pretrained`` and timm's keywords.

    (Over 80 lines only for this docstring: the public entry point documents every keyword; the body is 20.)

    Args:
        name: a registered name or alias (see :func:`list_models`), optionally with a weights tag:
            ``'litv2_s.alpha_0_5'``, ``'swin_tiny_patch4_window7_224.ms_in22k_ft_in1k'`` (see
            ``hilovit models --pretrained``). A tag sets the model's ``pretrained_cfg`` and the
            arguments the weights need (``alpha``, ``num_classes=21841`` for ImageNet-22k). Or a
            model repository, ``'hf-hub:org/name[@revision]'`` or ``'local-dir:PATH'``: its
            ``config.json`` names the architecture, ``num_classes``, constructor arguments
            (``model_args``) and ``pretrained_cfg`` (``label_names``, mean/std, input size), and its
            weights are loaded unless ``pretrained=False``; ``kwargs`` override the arguments (another
            ``num_classes`` re-initialises the classifier).
        pretrained: ``None`` (the default) or ``False``: random initialisation (a repository name:
            its weights, unless ``False``). ``True``: the official weights of
            the tag (default: the model's first published weights; for ``litv2_s`` the file matching
            an ``alpha=`` argument), downloaded once into the torch hub cache
            (``$TORCH_HOME/hub/checkpoints``). A path, an ``http(s)://`` URL or
            ``'hf-hub:org/name'``: that file. ``HILOVIT_OFFLINE=1`` never downloads.
        pretrained_cfg: a tag (``'ms_in22k_ft_in1k'``): that tag's weights and configuration, taking
            priority over a tag in ``name`` as in timm; or a dict laid over the model's default
            ``pretrained_cfg`` (timm builds a whole config from such a dict; here the keys it does not
            name keep the model's values). Source keys in it (``url``, ``file``, ``hf_hub_id``) are
            where ``pretrained=True`` loads from.
        pretrained_cfg_overlay: entries that replace the weights' config, as timm's: ``url``,
            ``file`` (a local path), ``hf_hub_id``, ``sha256``, or preprocessing keys (``crop_pct``,
            ``mean``, ...); applied after ``pretrained_cfg``.
        checkpoint_path: a checkpoint loaded after the model is built (and after ``pretrained``), as
            timm's: strictly, through :func:`hilovit.load_checkpoint` (every key must fit, a classifier of
            another size included).
        scriptable, exportable, no_jit: accepted for timm's signature and ignored: hilovit has no
            layer variants to switch (no scripted layers; every model traces and exports to ONNX as
            built).
        **kwargs: constructor arguments (``num_classes=10``, ``in_chans=1``, ``img_size=384``,
            ``window_size=12``, ``drop_path_rate=0.1``, ...). Weights are adapted as timm does: a
            classifier of another size is re-initialised (a warning names it), the stem is summed
            for one input channel, Swin's relative-position tables are resized bicubically. timm's
            keywords keep timm's meaning for the classifiers: ``global_pool`` (``'avg'``, ``'max'``,
            ``'avgmax'``, ``''``), ``drop_rate`` (dropout before the classifier; the constructors'
            ``head_drop_rate``), ``proj_drop_rate`` (the official models' ``drop_rate``: dropout in
            the blocks). As in timm, these keywords given as None are dropped (the model's default).

    Raises:
        ValueError: an unknown name or tag, no published weights fit the arguments, or a bad
            ``global_pool``/``drop_rate``/``pretrained_cfg`` value; a repository without ``config.json``
            or naming an unknown architecture. TypeError: an argument of the wrong type.
        hilovit.CheckpointError: a ``checkpoint_path`` that does not fit; a repository's weights do not fit
            its ``config.json``.
        hilovit.models.hub.DownloadError: the weights cannot be fetched (the message says how to
            fetch them by hand).

    Example::

        >>> model = create_model("litv2_s", pretrained=True)              # official ImageNet-1k weights
        >>> model = create_model("litv2_s", alpha=0.5, pretrained=True)   # the alpha = 0.5 checkpoint
        >>> model = create_model("swin_t", pretrained=True, num_classes=10, in_chans=1)
        >>> model = create_model("swin_t", pretrained_cfg="ms_in22k_ft_in1k", global_pool="avgmax", drop_rate=0.1)
        >>> model = create_model("litv2_s", num_classes=10, checkpoint_path="runs/fashion/best.safetensors")
        >>> model = create_model("hf-hub:org/litv2-fashion")                # architecture from config.json
    """
    from hilovit.models import hub

    _check_no_ops(scriptable=scriptable, exportable=exportable, no_jit=no_jit)
    cfg_tag, overlay = _cfg_arguments(pretrained_cfg, pretrained_cfg_overlay)
    if pretrained is not None and not isinstance(pretrained, (bool, str, os.PathLike)):
        raise TypeError(
            "pretrained must be False, True, a file path, an http(s):// URL or 'hf-hub:org/name', "
            f"got {type(pretrained).__name__}"
        )
    checkpoint_path = _check_checkpoint_path(checkpoint_path)
    if isinstance(name, str) and name.startswith((hub.HF_HUB_PREFIX, hub.LOCAL_DIR_PREFIX)):
        model = _create_from_repo(name, pretrained, overlay, kwargs)
    else:
        base, tag = resolve_name(name)
        model = _build(name, base, cfg_tag if cfg_tag is not None else tag, pretrained, overlay,
                       _timm_kwargs(base, kwargs))
    if checkpoint_path is not None:
        from hilovit.models.checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint_path, strict=True, allow_new_classifier=False)
    return model


def _build(name: str, base: str, tag: Optional[str], pretrained, overlay: Dict[str, Any],
           kwargs: Dict[str, Any]) -> nn.Module:
    """:func:`create_model` once its arguments are checked: the weights fetched (before building: fail
    fast), the model built, its ``pretrained_cfg`` set and the weights loaded."""
    from hilovit.models import hub
    from hilovit.models import pretrained as weights

    wants_official = pretrained is True and not any(overlay.get(k) for k in _SOURCE_KEYS)
    entry = weights.get_pretrained(base, tag, kwargs, required=wants_official)
    path = source = None
    if pretrained is not None and pretrained is not False:
        source, sha256, file_name = _pretrained_source(pretrained, entry, overlay, name)
        path = hub.fetch(source, sha256=sha256, file_name=file_name)
    args = dict(entry.model_args) if entry is not None else {}
    if entry is not None:
        args.update(entry.variant_args)
    args.update(kwargs)
    model = model_entrypoint(base)(**args)
    if entry is not None:
        apply_cfg(model, entry)
    _complete_cfg(model, base)
    if overlay:
        update_pretrained_cfg(model, **overlay)
    if path is not None:
        weights.load_file(model, path, origin=source)
    return model


# timm's create_model drops keywords given as None so that the model's default applies; these are the ones
# a timm script passes that way (its argparse defaults).
_NONE_MEANS_DEFAULT = ("global_pool", "drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate",
                       "num_classes", "in_chans", "img_size")


def _timm_kwargs(base: str, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """The constructor arguments for timm's keywords: None dropped; for a classifier, timm's ``drop_rate``
    (before the head) becomes ``head_drop_rate`` and ``proj_drop_rate`` the official ``drop_rate``."""
    from hilovit.models.registry import model_task

    kwargs = {k: v for k, v in kwargs.items() if not (v is None and k in _NONE_MEANS_DEFAULT)}
    if model_task(base) != "classification":
        return kwargs
    if "drop_rate" in kwargs and "head_drop_rate" in kwargs:
        raise ValueError(f"drop_rate={kwargs['drop_rate']!r} and head_drop_rate={kwargs['head_drop_rate']!r} name "
                         "the same dropout before the classifier; give one")
    if "drop_rate" in kwargs:
        from hilovit.options import check_fraction

        kwargs["head_drop_rate"] = check_fraction(kwargs.pop("drop_rate"), "drop_rate (dropout before the classifier)")
    if "proj_drop_rate" in kwargs:
        kwargs["drop_rate"] = kwargs.pop("proj_drop_rate")
    return kwargs


def _check_no_ops(**flags: Any) -> None:
    for key, value in flags.items():
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"{key} must be None, True or False (accepted for timm's signature, no effect), "
                            f"got {value!r}")


def _cfg_arguments(pretrained_cfg: Any, overlay: Any) -> Tuple[Optional[str], Dict[str, Any]]:
    """``(tag, entries)`` from ``pretrained_cfg`` (a tag or a dict) and ``pretrained_cfg_overlay`` (a dict,
    laid over the first)."""
    tag, entries = None, {}
    if isinstance(pretrained_cfg, str):
        if not pretrained_cfg or "." in pretrained_cfg:
            raise ValueError(f"pretrained_cfg={pretrained_cfg!r}: expected a weights tag such as 'in1k' "
                             "(see hilovit models --pretrained) or a dict")
        tag = pretrained_cfg
    elif isinstance(pretrained_cfg, Mapping):
        entries = dict(pretrained_cfg)
    elif pretrained_cfg is not None:
        raise TypeError(f"pretrained_cfg must be a tag (str), a dict or None, got {type(pretrained_cfg).__name__}")
    if overlay is not None and not isinstance(overlay, Mapping):
        raise TypeError(f"pretrained_cfg_overlay must be a dict, got {type(overlay).__name__}")
    entries.update(overlay or {})
    bad = [k for k in entries if not isinstance(k, str)]
    if bad:
        raise TypeError(f"pretrained_cfg keys must be str, got {bad!r}")
    mode = entries.get("crop_mode")
    if mode is not None and mode not in _CROP_MODES:
        raise ValueError(f"pretrained_cfg['crop_mode'] = {mode!r}; expected one of {_CROP_MODES}")
    return tag, entries


_CROP_MODES = ("center", "squash")


def _check_checkpoint_path(path: Any) -> Optional[str]:
    if path is None or (isinstance(path, str) and not path):  # timm's default is ''
        return None
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint_path must be a file path, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint_path={path!r} does not exist")
    return path


def _complete_cfg(model: nn.Module, base: str) -> None:
    """``architecture`` (the registered name), a dense model's ``license`` from its backbone and its
    ``label_names`` from its class names."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    changes: Dict[str, Any] = {"architecture": base}
    backbone_cfg = getattr(getattr(model, "backbone", None), "pretrained_cfg", None) or {}
    if cfg.get("license") is None and backbone_cfg.get("license") is not None:
        changes["license"] = backbone_cfg["license"]
    if cfg.get("label_names") is None and cfg.get("class_names"):
        changes["label_names"] = tuple(cfg["class_names"])
    update_pretrained_cfg(model, **changes)


def _create_from_repo(source: str, pretrained, overlay: Dict[str, Any], kwargs: Dict[str, Any]) -> nn.Module:
    """:func:`create_model` of ``'hf-hub:org/name'`` / ``'local-dir:PATH'``: the architecture, arguments and
    ``pretrained_cfg`` of its ``config.json``, then (unless ``pretrained`` is False) its weights, strictly."""
    from hilovit.models import hub, repo

    if pretrained is not None and not isinstance(pretrained, bool):
        raise ValueError(f"pretrained={pretrained!r} with the model repository {source!r}: the repository holds its "
                         "own weights; pass pretrained=True (the default for a repository) or False")
    cfg = repo.read_repo_config(source)
    path = repo.repo_weights_file(source) if pretrained is not False else None  # before building: fail fast
    args = dict(cfg.model_args)
    if cfg.num_classes is not None:
        args["num_classes"] = cfg.num_classes
    args.update(kwargs)
    model = create_model(cfg.architecture, **args)
    pcfg = dict(cfg.pretrained_cfg, architecture=cfg.architecture)
    if source.startswith(hub.HF_HUB_PREFIX):
        pcfg["hf_hub_id"] = source[len(hub.HF_HUB_PREFIX):]
    if "num_classes" in kwargs and kwargs["num_classes"] != cfg.num_classes:  # a new classifier: names no longer fit
        pcfg.pop("label_names", None)
        pcfg.pop("label_descriptions", None)
        pcfg["num_classes"] = kwargs["num_classes"]
    in_chans = getattr(model, "in_chans", None)
    if "in_chans" in kwargs and in_chans is not None:
        for key in ("mean", "std"):
            if pcfg.get(key):
                pcfg[key] = _cfg_stats(tuple(pcfg[key]), int(in_chans))
        if pcfg.get("input_size"):
            pcfg["input_size"] = (int(in_chans), *pcfg["input_size"][1:])
    for key in ("input_size", "mean", "std", "test_scale"):
        if isinstance(pcfg.get(key), list):
            pcfg[key] = tuple(pcfg[key])
    update_pretrained_cfg(model, **{**pcfg, **overlay})
    if path is not None:
        repo.load_repo_weights(model, path, source, allow_new_classifier="num_classes" in kwargs)
    return model


def apply_cfg(model: nn.Module, entry) -> None:
    """Set ``model.pretrained_cfg`` from ``entry``, keeping what the model's own arguments decide
    (``num_classes``, ``input_size``; ``mean``/``std`` fitted to its input channels)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    own_input = cfg.get("input_size")
    own_classes = cfg.get("num_classes", getattr(model, "num_classes", None))
    cfg.update(entry.cfg())
    in_chans = int(getattr(model, "in_chans", entry.input_size[0]))
    if own_input is not None:
        cfg["input_size"] = tuple(own_input)
    if own_classes is not None:
        cfg["num_classes"] = own_classes
    cfg["mean"] = _cfg_stats(entry.mean, in_chans)
    cfg["std"] = _cfg_stats(entry.std, in_chans)
    update_pretrained_cfg(model, base=cfg)



def _is_remote(text: str) -> bool:
    return "://" in text or text.startswith(("hf-hub:", "local-dir:"))


def pretrained_model(name: Optional[str], pretrained: Union[bool, str, os.PathLike] = True,
                     device: Union[str, torch.device] = "cpu", **kwargs) -> nn.Module:
    """``create_model(name, pretrained=...)`` in eval mode, where ``pretrained`` may also be a tag of
    ``name``'s published weights (``'alpha_0_5'``, ``'ms_in22k_ft_in1k'``): True, a tag, a file path,
    an ``http(s)://`` URL, ``'hf-hub:org/name'`` or ``'local-dir:PATH'``. ``model.pretrained_cfg``
    carries the weights' preprocessing (input size, crop_pct, interpolation, mean/std). A file, local
    or fetched from a URL, sizes the classifier (``num_classes``), the stem (``in_chans``) and the
    recorded constructor arguments from its shapes and metadata unless ``kwargs`` name them. With
    ``name`` None, ``pretrained`` must be a model repository: its ``config.json`` names the model
    (see :func:`create_model`); with a name, only a repository's weights are read.

    Raises:
        ValueError: a string that is neither a file, a URL, ``hf-hub:`` nor a published tag (the
            message lists the tags); no name, with weights that are no model repository.
        FileNotFoundError: a path that does not exist.
    """
    if name is None:
        if not (isinstance(pretrained, str) and pretrained.startswith(("hf-hub:", "local-dir:"))):
            raise ValueError(f"pretrained={pretrained!r} needs a model name (--model); only a model repository "
                             "('hf-hub:org/name', 'local-dir:PATH') names its own architecture")
        return create_model(pretrained, pretrained=True, **kwargs).eval().to(device)
    if isinstance(pretrained, str) and pretrained and not _is_remote(pretrained):
        looks_like_path = (os.sep in pretrained or "/" in pretrained or pretrained.lower().endswith(_WEIGHT_SUFFIXES)
                           or os.path.exists(pretrained))
        if not looks_like_path:
            if split_tag(name)[1] is not None:
                raise ValueError(f"pretrained={pretrained!r} is a tag, but the model name {name!r} already names one")
            try:
                return create_model(f"{name}.{pretrained}", pretrained=True, **kwargs).eval().to(device)
            except ValueError as e:
                if "tag" not in str(e):
                    raise
                raise ValueError(f"pretrained={pretrained!r} is neither a weights file nor a published tag: "
                                 f"{e}") from None
    if isinstance(pretrained, (str, os.PathLike)) and not isinstance(pretrained, bool):
        from hilovit.models import hub
        from hilovit.models.checkpoint import sizes_from_checkpoint
        from hilovit.models.pretrained import load_file

        source = os.fspath(pretrained)
        path = hub.fetch(source)  # a URL is downloaded (once) before the model is built, so it sizes it too
        kwargs = {**sizes_from_checkpoint(path), **kwargs}
        model = create_model(name, **kwargs)
        load_file(model, path, origin=source)
        _label_names_from(model, path)
        return model.eval().to(device)
    return create_model(name, pretrained=pretrained, **kwargs).eval().to(device)


def _label_names_from(model: nn.Module, path) -> None:
    """The class names a weights file records become ``pretrained_cfg['label_names']`` when they fit the
    classifier (a path and a URL of the same file name the classes alike)."""
    from hilovit.models.checkpoint import parse_metadata, read_metadata

    classes = parse_metadata(read_metadata(path))["classes"]
    if classes and getattr(model, "num_classes", None) == len(classes):
        update_pretrained_cfg(model, label_names=tuple(classes))


def load_model(
    checkpoint: Source,
    model: Union[str, nn.Module, None] = None,
    *,
    device: Union[str, torch.device] = "cpu",
    strict: bool = True,
    ema: bool = False,
    mean: Optional[Tuple[float, ...]] = None,
    std: Optional[Tuple[float, ...]] = None,
    **overrides,
) -> Tuple[nn.Module, Dict[str, Any]]:
    """Build the model ``checkpoint`` was trained as, sized from it, load it and put it in eval mode.

    Args:
        checkpoint: a file, a training output folder or a state dict (see :func:`read_checkpoint`).
        model: a registered name (checked against the name the checkpoint records, aliases
            accepted), a model instance to load into as it is, or None for the recorded name.
        device: where to put the model.
        strict: every key must be found (a classifier of another size is always an error here).
        ema: load the EMA weights of a training checkpoint.
        mean, std: the normalisation to record in ``model.pretrained_cfg`` when the checkpoint
            records none (they override a recorded one too).
        **overrides: constructor arguments; by default ``num_classes`` comes from the classifier,
            ``in_chans`` from the stem convolution and ``img_size`` from the metadata.

    Returns:
        ``(model, metadata)``: :func:`parse_metadata` of the stored metadata, plus ``source`` (the
        file read) and ``normalization``: ``'checkpoint'``, ``'given'`` or ``'default'`` (the
        model's own ``pretrained_cfg`` values, with a warning saying which).

    Raises:
        FileNotFoundError: no such file or folder. ValueError: an unknown model name.
        CheckpointError: trained as another model, or keys/shapes that do not fit.
    """
    from hilovit.models.checkpoint import _sizes

    if isinstance(model, str):
        model_entrypoint(model)  # an unknown name: ValueError listing the registered ones
    elif model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a registered name, an nn.Module or None, got {type(model).__name__}")
    sd, info, where = _read_for_load(checkpoint, ema)
    model = _model_to_build(model, info["model"], where)
    if isinstance(model, str):
        kwargs = {**_sizes(sd, info), **overrides}
        if info["img_size"] is not None:
            kwargs.setdefault("img_size", info["img_size"])
        net = create_model(model, **kwargs)
    else:
        net = model
    name = model if isinstance(model, str) else type(net).__name__
    _load_into(net, sd, strict, False, where, name)
    _set_normalization(net, info, mean, std, where, name)
    if info["classes"] is not None and getattr(net, "num_classes", len(info["classes"])) != len(info["classes"]):
        info["classes"] = None  # names that do not match the classifier are not trusted
    return net.eval().to(device), info


def _read_for_load(checkpoint: Source, ema: bool) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any], str]:
    """``(state_dict, metadata, where)`` for :func:`load_model`: the metadata parsed, with ``source``; ``where``
    names the checkpoint in messages."""
    from hilovit.models.checkpoint import parse_metadata, read_checkpoint, resolve_checkpoint

    if isinstance(checkpoint, Mapping):
        where, read_from = "the state dict", checkpoint
    else:
        read_from = resolve_checkpoint(checkpoint)
        where = repr(str(read_from))
    sd, raw = read_checkpoint(read_from, ema=ema)
    info = parse_metadata(raw)
    info["source"] = None if isinstance(read_from, Mapping) else str(read_from)
    return sd, info, where


def _model_to_build(model: Union[str, nn.Module, None], trained_as: Optional[str], where: str) -> Union[str, nn.Module]:
    """The name (or instance) :func:`load_model` loads into: ``model`` checked against the recorded name
    ``trained_as``, or that name when ``model`` is None."""
    if isinstance(model, str) and trained_as and not same_model(trained_as, model):
        raise CheckpointError(f"checkpoint {where} holds a {trained_as!r} model, not {model!r}")
    if model is None:
        if not trained_as:
            raise CheckpointError(f"checkpoint {where} records no model name: name the model to build")
        model = trained_as
    return model


def _set_normalization(net: nn.Module, info: Dict[str, Any], mean: Optional[Tuple[float, ...]],
                       std: Optional[Tuple[float, ...]], where: str, name: str) -> None:
    """Record in ``net.pretrained_cfg`` the mean/std given, else the checkpoint's; ``info['normalization']``
    says which (``'given'``, ``'checkpoint'``, ``'default'``: the model's own, with a warning)."""
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    given = {k: v for k, v in (("mean", mean), ("std", std)) if v is not None}
    if given:
        info["normalization"] = "given"
    elif info["mean"] is not None and info["std"] is not None:
        given = {"mean": info["mean"], "std": info["std"]}
        info["normalization"] = "checkpoint"
    else:
        info["normalization"] = "default"
        if "mean" in cfg:
            warnings.warn(
                f"checkpoint {where} records no normalisation: using {name}'s default "
                f"mean={tuple(cfg['mean'])} std={tuple(cfg.get('std', ()))}; pass mean= and std= to choose another",
                stacklevel=3,  # the caller of load_model
            )
    if given:
        update_pretrained_cfg(net, **{k: tuple(float(v) for v in value) for k, value in given.items()})



# --------------------------------------------------------------------------- the model list
def _matches(pattern: str, *names: str, exact: bool = False) -> bool:
    """A shell pattern (``'litv2*'``) matches the whole name; a plain word (``'litv2'``) anywhere in it,
    or only as a whole name with ``exact`` (the word is a registered name)."""
    import fnmatch

    if exact:
        return pattern in names
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return any(fnmatch.fnmatch(n, pattern) for n in names if n)


def _gflops(model) -> Any:
    """``model.flops()`` in G multiply-adds, or None where the model has no count for its configuration."""
    flops = getattr(model, "flops", None)
    if not callable(flops):
        return None
    try:
        return round(flops() / 1e9, 2)
    except (ValueError, TypeError, NotImplementedError):
        return None


def model_rows(pattern: str = "*", pretrained: bool = False) -> List[Dict[str, Any]]:
    """One row per registered model (or, with ``pretrained``, per published checkpoint) matching
    ``pattern`` (a shell pattern on our names, timm's names, or ``name.tag``; a plain word matches a
    name exactly when one has it, else anywhere in the names): parameters, FLOPs (multiply-adds at
    the input size, ``model.flops()``), input size, the official result, where the weights are
    published and whether they are in the cache. Models are built on the meta device (no memory, no
    time)."""
    from hilovit.models.pretrained import get_pretrained, list_pretrained, published
    from hilovit.models.registry import _ALIASES, is_model, list_models, model_task

    aliases: Dict[str, List[str]] = {}
    for alias, target in _ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    exact = not any(c in pattern for c in "*?[") and ((is_model(pattern) and "." not in pattern)
                                                     or pattern in list_pretrained())
    rows = []
    for name in list_models():
        names = [name, *aliases.get(name, [])]
        if pretrained:
            todo = [(w.name, w) for w in published(name)
                    if _matches(pattern, *names, *(f"{n}.{w.tag}" for n in names), exact=exact)]
        elif _matches(pattern, *names, exact=exact):
            todo = [(name, get_pretrained(name))]
        else:
            todo = []
        for label, entry in todo:
            with torch.device("meta"):
                model = create_model(label if pretrained else name)
            cfg = model.pretrained_cfg
            gflops = _gflops(model)
            rows.append({
                "model": label,
                "task": model_task(name),
                "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                "GFLOPs": gflops if gflops is not None else "-",
                "input": "x".join(str(s) for s in cfg.get("input_size", ())),
                "crop_pct": cfg.get("crop_pct"),
                "result": entry.result if entry is not None else "-",
                "dataset": entry.dataset if entry is not None else "-",
                "weights": entry.url if entry is not None else "-",
                "hf_hub_id": (entry.hf_hub_id or "-") if entry is not None else "-",
                "cached": ("yes" if entry.is_cached() else "no") if entry is not None else "-",
                "cache_path": entry.cache_path if entry is not None else "",
            })
    return rows
