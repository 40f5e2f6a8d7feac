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

A model of another task names its backbone: ``hilovit train --task segmentation --model
semfpn_litv2_s --pretrained litv2_s`` fetches the official ImageNet classifier and loads its backbone
into the segmenter (:func:`hilovit.models.pretrained.adapt_state_dict` says what is left fresh).

The weights are located (and downloaded) by :func:`resolve_weights` before any data is read, so a
source that cannot be found stops the run with one line; each task builds its model and calls
:func:`load_weights`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch.nn as nn

from hilovit.options import OptionError
from hilovit.train.config import IN_MEMORY, TrainConfig

__all__ = ["WeightsPlan", "model_of_weights", "resolve_weights", "load_weights", "check_heads", "set_backbone_frozen",
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
    from hilovit.models.pretrained import get_pretrained
    from hilovit.models.registry import model_task, resolve_name, same_model

    model, source, sha256, file_name = cfg.model, None, None, None
    named = True if given is True else model_of_weights(given)
    if named is not None:
        weights_of, kwargs = model, cfg.model_kwargs
        if named is not True:
            base, _ = resolve_name(named)
            own, _ = resolve_name(cfg.model)
            if model_task(base) != model_task(own):  # another task's model: its backbone is what is wanted
                weights_of, kwargs = named, {}
            elif not same_model(base, own):
                raise OptionError(f"{{pretrained}}={given!r} names weights of {base}, but {{model}}={cfg.model!r}; "
                                  "leave {model} out (the name sets it) or give a file of that model")
            else:
                model = weights_of = named if "." in named else (cfg.model if "." in cfg.model else named)
        base, tag = resolve_name(weights_of)
        try:
            entry = get_pretrained(base, tag, kwargs, required=True)
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


def load_weights(model: nn.Module, weights: Optional[WeightsPlan], log=None) -> None:
    """Load a run's starting ``weights`` into ``model``, adapted as :func:`hilovit.create_model` adapts
    them (a classifier's backbone into a segmenter or detector included). ``log(message)`` receives one
    line per adaptation; without ``log`` they are warnings. The record of the weights
    (:func:`weights_record`) is on ``model.pretrained_cfg['weights']``."""
    if weights is None:
        return
    from hilovit.models.checkpoint import CheckpointError
    from hilovit.models.pretrained import load_file, load_pretrained

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


def check_heads(model: nn.Module, heads: List[str]) -> List[str]:
    """The ``heads`` (module names) that ``model`` has; an error when it has none of them."""
    own = [n for n, _ in model.named_parameters()]
    found = [h for h in heads if any(n == h or n.startswith(h + ".") for n in own)]
    if not found:
        raise OptionError(f"{{freeze_backbone_epochs}} needs a head to train, and {type(model).__name__} has "
                          f"none ({', '.join(heads)})")
    return found


def set_backbone_frozen(model: nn.Module, frozen: bool, heads: List[str]) -> int:
    """``requires_grad = not frozen`` on every parameter outside the ``heads`` (module names); the
    number of parameters (elements) that changed state.

    A frozen parameter gets no gradient, so the optimiser neither moves it nor keeps state for it
    (AdamW skips parameters without a gradient, weight decay included): when it thaws, its moments
    start afresh, exactly as after a resume at that epoch. BatchNorm statistics are held by
    :func:`hold_backbone_norms`.
    """
    heads = check_heads(model, heads)
    changed = 0
    for name, p in model.named_parameters():
        if any(name == h or name.startswith(h + ".") for h in heads):
            continue
        if p.requires_grad == frozen:
            p.requires_grad_(not frozen)
            changed += p.numel()
    return changed


def hold_backbone_norms(model: nn.Module, heads: List[str]) -> None:
    """Put the BatchNorm layers outside the ``heads`` in eval mode (call after ``model.train()``): a frozen
    backbone keeps its running statistics too (LITv2's token merging normalises with BatchNorm)."""
    heads = check_heads(model, heads)
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(name == h or name.startswith(h + ".")
                                                                      for h in heads):
            m.eval()
