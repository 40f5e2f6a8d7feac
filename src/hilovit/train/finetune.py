"""Starting a training run from pretrained weights, and training the head alone for a while.

``pretrained`` (``hilovit train --pretrained``) may be:

* a registered model name with published weights, optionally tagged (``litv2_s``,
  ``litv2_s.alpha_0_5``, ``swin_tiny_patch4_window7_224.ms_in1k``): the model is built as that
  name and its published file is fetched (once, into the torch hub cache);
* ``True``: the published weights of ``model``;
* a file path (or a training output folder: its ``model.safetensors``, else ``last.pt``), an
  ``http(s)://`` URL or ``'hf-hub:org/name'``: that file, loaded into ``model``;
* a state dict (from Python).

An existing file wins over a model of the same name. The model is always built for the data (its
classes and input channels) and the weights are adapted as :func:`hilovit.create_model` adapts
them: a classifier of another size keeps its fresh initialisation, the stem is summed (one
channel) or repeated (more), Swin's position tables are resized. Each adaptation is announced.

The weights are located (and downloaded) by :func:`resolve_weights` before any data is read, so a
source that cannot be found stops the run with one line. :func:`build_model` is the one function
the engine builds its model with.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch.nn as nn

from hilovit.train.config import IN_MEMORY, OptionError, TrainConfig

__all__ = ["WeightsPlan", "model_of_weights", "resolve_weights", "build_model", "head_prefixes", "set_backbone_frozen",
           "hold_backbone_norms", "weights_record"]


def _is_remote(text: str) -> bool:
    from hilovit.models.hub import HF_HUB_PREFIX, is_url

    return text.startswith(HF_HUB_PREFIX) or is_url(text)


def model_of_weights(pretrained: Any) -> Optional[str]:
    """The model name ``pretrained`` stands for when it names published weights (``'litv2_s'``,
    ``'litv2_s.alpha_0_5'``), else None (a file, a URL, True, a state dict, or an unknown name)."""
    if not isinstance(pretrained, str) or not pretrained or _is_remote(pretrained):
        return None
    if Path(pretrained).expanduser().exists():
        return None
    from hilovit.models.registry import resolve_name

    try:
        resolve_name(pretrained)
    except (ValueError, TypeError):
        return None
    return pretrained


@dataclass
class WeightsPlan:
    """Where a run's starting weights come from.

    Attributes:
        given: what the user gave (``'litv2_s'``, a path, a URL, ``True``, ``'state dict (in memory)'``).
        model: the name to build the model as (a tag included: it decides the variant).
        source: the published URL, the URL or ``hf-hub:`` source, or the path, as given.
        path: the local file (after download); None for a state dict.
        state_dict: the weights given in memory, else None.
    """

    given: Any
    model: str
    source: Optional[str]
    path: Optional[Path]
    state_dict: Optional[Mapping[str, Any]] = None


def resolve_weights(cfg: TrainConfig) -> Optional[WeightsPlan]:
    """Locate (and download, once) the weights ``cfg.pretrained`` names; None when it names none.

    Raises:
        OptionError: one line naming the source that cannot be used (no such file or model, no
            published weights, download impossible, a name for another model than ``cfg.model``).
    """
    given = cfg.pretrained
    if given is None or given is False:
        return None
    if isinstance(given, Mapping):
        return WeightsPlan(IN_MEMORY, cfg.model, None, None, dict(given))
    from hilovit.models import hub
    from hilovit.models.checkpoint import same_model
    from hilovit.models.pretrained import get_pretrained
    from hilovit.models.registry import resolve_name

    model, source, sha256, file_name = cfg.model, None, None, None
    named = True if given is True else model_of_weights(given)
    if named is not None:
        if named is not True:
            base, _ = resolve_name(named)
            own, _ = resolve_name(cfg.model)
            if not same_model(base, own):
                raise OptionError(f"{{pretrained}}={given!r} names weights of {base}, but {{model}}={cfg.model!r}; "
                                  "leave {model} out (the name sets it) or give a file of that model")
            model = named if "." in named else (cfg.model if "." in cfg.model else named)
        base, tag = resolve_name(model)
        try:
            entry = get_pretrained(base, tag, cfg.model_kwargs, required=True)
        except ValueError as e:
            raise OptionError(f"{{pretrained}}={given!r}: {e}") from None
        source, sha256, file_name = entry.url, entry.sha256, entry.file_name
    else:
        source = str(given)
        if not _is_remote(source) and not Path(source).expanduser().exists():
            raise OptionError(f"{{pretrained}}={given!r}: no such file, and not a model with published weights "
                              "(see `hilovit models --pretrained`), a URL or 'hf-hub:org/name'")
        if not _is_remote(source) and Path(source).expanduser().is_dir():  # a training run's output folder
            from hilovit.models.checkpoint import resolve_checkpoint

            try:
                source = str(resolve_checkpoint(source))
            except FileNotFoundError as e:
                raise OptionError(f"{{pretrained}}={given!r}: {e}") from None
    try:
        path = hub.fetch(source, sha256=sha256, file_name=file_name)
    except (hub.DownloadError, ValueError, OSError) as e:
        raise OptionError(f"{{pretrained}}={given!r}: {e}") from None
    return WeightsPlan(given, model, source, Path(path))


def build_model(cfg: TrainConfig, num_classes: int, in_chans: int, weights: Optional[WeightsPlan] = None,
                log=None) -> Tuple[nn.Module, int]:
    """The model of a run: ``cfg.model`` (or the weights' tagged name) for ``num_classes`` and ``in_chans``,
    with ``weights`` loaded and adapted. ``log(message)`` receives one line per adaptation (a classifier
    re-initialised, the stem fitted to the channels). Returns ``(model, img_size)``; the record of the
    weights (:func:`weights_record`) is on ``model.pretrained_cfg['weights']``."""
    from hilovit.models import create_model
    from hilovit.models.checkpoint import CheckpointError
    from hilovit.models.pretrained import load_file, load_pretrained

    kwargs = dict(cfg.model_kwargs)
    kwargs.update(num_classes=num_classes, in_chans=in_chans)
    if cfg.img_size is not None:
        kwargs["img_size"] = cfg.img_size
    if cfg.drop_path is not None:
        kwargs["drop_path_rate"] = cfg.drop_path
    name = weights.model if weights is not None else cfg.model
    try:
        model = create_model(name, **kwargs)
    except TypeError as e:
        raise ValueError(f"model {name!r} does not accept these options {sorted(kwargs)}: {e}") from e
    if weights is not None:
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always")
            try:
                if weights.state_dict is not None:
                    load_pretrained(model, weights.state_dict)
                else:
                    load_file(model, weights.path, origin=weights.source)
            except CheckpointError as e:
                raise OptionError(f"{{pretrained}}={_short(weights.given)}: {e}") from None
        for note in notes:
            if log is not None:
                log(f"pretrained weights: {note.message}")
            else:
                warnings.warn(note.message, stacklevel=2)
    img_size = cfg.img_size or int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (0, 224))[-1])
    return model, img_size


def _short(given: Any) -> str:
    return repr(given) if not isinstance(given, Mapping) else IN_MEMORY


def weights_record(model: nn.Module, weights: Optional[WeightsPlan]) -> Optional[Dict[str, Any]]:
    """What ``summary.json`` records of the starting weights: ``given`` (as the user wrote it),
    ``source`` (the URL or path), ``file`` (the local file), ``sha256`` (of that file; None for a state
    dict in memory). None for a run from scratch."""
    if weights is None:
        return None
    loaded = ((getattr(model, "pretrained_cfg", None) or {}).get("weights") or {})
    given = weights.given if isinstance(weights.given, (str, bool)) else str(weights.given)
    return {
        "given": given,
        "source": weights.source,
        "file": os.fspath(weights.path) if weights.path is not None else None,
        "sha256": loaded.get("sha256"),
    }


def head_prefixes(model: nn.Module) -> List[str]:
    """Names of the classifier modules (``pretrained_cfg['classifier']``, default ``'head'``)."""
    heads = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "head")
    heads = [heads] if isinstance(heads, str) else list(heads)
    own = [n for n, _ in model.named_parameters()]
    found = [h for h in heads if any(n == h or n.startswith(h + ".") for n in own)]
    if not found:
        raise OptionError(f"{{freeze_backbone_epochs}} needs a classifier head to train, and "
                          f"{type(model).__name__} has none ({', '.join(heads)})")
    return found


def set_backbone_frozen(model: nn.Module, frozen: bool) -> int:
    """``requires_grad = not frozen`` on every parameter outside the classifier head; the number of
    parameters (elements) that changed state.

    A frozen parameter gets no gradient, so the optimiser neither moves it nor keeps state for it
    (AdamW skips parameters without a gradient, weight decay included): when it thaws, its moments
    start afresh, exactly as after a resume at that epoch. BatchNorm statistics are held by
    :func:`hold_backbone_norms`.
    """
    heads = head_prefixes(model)
    changed = 0
    for name, p in model.named_parameters():
        if any(name == h or name.startswith(h + ".") for h in heads):
            continue
        if p.requires_grad == frozen:
            p.requires_grad_(not frozen)
            changed += p.numel()
    return changed


def hold_backbone_norms(model: nn.Module) -> None:
    """Put the backbone's BatchNorm layers in eval mode (call after ``model.train()``): a frozen backbone
    keeps its running statistics too (LITv2's token merging normalises with BatchNorm)."""
    heads = head_prefixes(model)
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(name == h or name.startswith(h + ".")
                                                                      for h in heads):
            m.eval()
