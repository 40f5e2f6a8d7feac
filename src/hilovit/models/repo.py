"""Model repositories: ``hf-hub:org/name`` and ``local-dir:PATH`` as timm reads them.

A repository (on the Hugging Face hub, or the same layout in a folder) holds ``config.json`` and
the weights (``model.safetensors``, else ``pytorch_model.bin``). ``config.json`` is timm's::

    {"architecture": "litv2_nano", "num_classes": 7, "label_names": [...], "model_args": {"in_chans": 3},
     "pretrained_cfg": {"input_size": [3, 28, 28], "mean": [...], "std": [...], "crop_pct": 1.0, ...}}

(timm's older single-dict form, with ``architecture`` beside the preprocessing, is read too). The
top-level ``num_classes`` and ``label_names`` win over those inside ``pretrained_cfg``, as in timm.
hilovit adds ``task`` (``classification``, ``segmentation`` or ``detection``), informational: the
architecture decides. :func:`read_repo_config` fetches and checks it; :func:`load_repo_weights`
loads the weights into the model built from it (the model builder,
:func:`hilovit.create_model`, does the building). Writing such a repository is
:func:`hilovit.save_pretrained`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch.nn as nn

from hilovit.models import hub
from hilovit.options import check_int

__all__ = ["CONFIG_NAME", "REPO_PREFIXES", "RepoConfig", "is_repo_source", "parse_repo_config",
           "read_repo_config", "repo_weights_file", "load_repo_weights", "label_list"]

CONFIG_NAME = "config.json"
REPO_PREFIXES = (hub.HF_HUB_PREFIX, hub.LOCAL_DIR_PREFIX)
# Entries of a pretrained_cfg that say where weights came from: they describe the source, not the
# weights, so a repository's own place replaces them (timm's filter_pretrained_cfg(remove_source=True)).
SOURCE_KEYS = ("url", "file", "file_name", "hf_hub_id", "hf_hub_filename", "source", "sha256", "weights", "state_dict")


def is_repo_source(text: Any) -> bool:
    """Whether ``text`` names a model repository: ``'hf-hub:org/name'`` or ``'local-dir:PATH'``."""
    return isinstance(text, str) and text.startswith(REPO_PREFIXES)


@dataclass
class RepoConfig:
    """A parsed ``config.json``: the architecture to build, its ``num_classes`` (None: the
    architecture's default), constructor arguments, the ``pretrained_cfg`` to set and the task."""

    source: str
    architecture: str
    num_classes: Optional[int]
    model_args: Dict[str, Any] = field(default_factory=dict)
    pretrained_cfg: Dict[str, Any] = field(default_factory=dict)
    task: Optional[str] = None


def label_list(names: Any, where: str) -> List[str]:
    """``label_names`` as a list in class order: a list, or timm's ``{index: name}`` dict without gaps."""
    if isinstance(names, Mapping):
        try:
            keyed = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label_names keys must be class indices, got {sorted(names)[:5]!r}") from None
        if sorted(keyed) != list(range(len(keyed))):
            raise ValueError(f"{where}: label_names has gaps in its class indices ({sorted(keyed)[:10]} ...)")
        names = [keyed[i] for i in range(len(keyed))]
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, int)) for n in names):
        raise ValueError(f"{where}: label_names must be a list of names (or {{index: name}}), got {names!r:.120}")
    return [str(n) for n in names]


def parse_repo_config(cfg: Any, source: str) -> RepoConfig:
    """Check and split a ``config.json`` (already decoded) of ``source`` (named in every message).

    Raises:
        ValueError: not an object, no ``architecture``, an architecture hilovit does not register
            (the message lists the registered ones), a ``num_classes`` that is not an int >= 0,
            ``model_args``/``pretrained_cfg`` that are not objects, or label names that do not
            match ``num_classes``.
    """
    from hilovit.models.registry import list_models, model_task, resolve_name

    where = f"{CONFIG_NAME} of {source}"
    if not isinstance(cfg, Mapping):
        raise ValueError(f"{where} must hold a JSON object, got {type(cfg).__name__}")
    cfg = dict(cfg)
    if "pretrained_cfg" not in cfg:  # timm's older single-dict form
        pcfg = {k: v for k, v in cfg.items() if k not in ("architecture", "num_features", "model_args")}
        if "labels" in pcfg:
            pcfg["label_names"] = pcfg.pop("labels")
        cfg = {"architecture": cfg.get("architecture"), "model_args": cfg.get("model_args", {}), "pretrained_cfg": pcfg,
               **{k: cfg[k] for k in ("num_classes", "task") if k in cfg}}
    arch = cfg.get("architecture")
    if not isinstance(arch, str) or not arch:
        raise ValueError(f"{where} names no architecture (expected \"architecture\": a registered model name)")
    try:
        base, _ = resolve_name(arch)
    except ValueError:
        known = ", ".join(list_models())
        raise ValueError(f"{where}: unknown architecture {arch!r}; hilovit builds: {known}") from None
    pcfg, args = cfg.get("pretrained_cfg"), cfg.get("model_args", {}) or {}
    for key, value in (("pretrained_cfg", pcfg), ("model_args", args)):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: {key} must be an object, got {value!r:.120}")
    pcfg = {k: v for k, v in pcfg.items() if k not in SOURCE_KEYS}
    num_classes = cfg.get("num_classes", pcfg.get("num_classes"))
    check_int(num_classes, f"{where}: num_classes", minimum=0, allow_none=True)
    for key in ("label_names", "label_descriptions"):
        if key in cfg:
            pcfg[key] = cfg[key]
    if pcfg.get("label_names") is not None:
        pcfg["label_names"] = label_list(pcfg["label_names"], where)
        if num_classes is not None and len(pcfg["label_names"]) != num_classes:
            raise ValueError(f"{where}: {len(pcfg['label_names'])} label_names for num_classes={num_classes}")
    if num_classes is not None:
        pcfg["num_classes"] = num_classes
    task = cfg.get("task") or pcfg.get("task") or model_task(base)
    if task != model_task(base):
        raise ValueError(f"{where}: task {task!r} contradicts the architecture {arch!r}, a {model_task(base)} model")
    return RepoConfig(source, arch, num_classes, dict(args), pcfg, task)


def read_repo_config(source: str) -> RepoConfig:
    """Fetch (``hf-hub:``) or find (``local-dir:``) the repository's ``config.json`` and parse it.

    Raises:
        FileNotFoundError / hilovit.DownloadError: no such folder or repository, or it holds no
            ``config.json`` (the message says to name the model instead). ValueError: a
            ``config.json`` that is not JSON or not a model configuration (see :func:`parse_repo_config`).
    """
    if not is_repo_source(source):
        raise ValueError(f"a model repository reads 'hf-hub:org/name[@revision]' or 'local-dir:PATH', got {source!r}")
    hint = (f" (the file that names the architecture); with the model name given instead, only the weights are "
            f"read: create_model('NAME', pretrained={source!r})")
    try:
        if source.startswith(hub.LOCAL_DIR_PREFIX):
            path = hub.local_dir_file(source, (CONFIG_NAME,))
        else:
            path = hub.hf_hub_file(source, (CONFIG_NAME,))
    except FileNotFoundError as e:
        raise FileNotFoundError(str(e) + hint) from None
    except hub.DownloadError as e:
        if "holds no" not in str(e):
            raise
        raise hub.DownloadError(str(e) + hint) from None
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{CONFIG_NAME} of {source} is not JSON: {e}") from None
    return parse_repo_config(cfg, source)


def repo_weights_file(source: str) -> Path:
    """The weights of a repository (``model.safetensors``, else ``pytorch_model.bin``), fetched once."""
    return hub.fetch(source)


def load_repo_weights(model: nn.Module, path: Union[str, os.PathLike], source: str,
                      allow_new_classifier: bool = False) -> None:
    """Load a repository's weights into the model built from its ``config.json``: every key and
    shape must fit (:class:`hilovit.CheckpointError` lists what does not); a classifier of another
    size only when ``allow_new_classifier`` (the caller asked for another ``num_classes``). The
    stem is adapted to another ``in_chans`` as for any pretrained weights."""
    from hilovit.models._api import update_pretrained_cfg
    from hilovit.models.checkpoint import _load_into, read_checkpoint
    from hilovit.models.pretrained import adapt_state_dict

    sd, _ = read_checkpoint(path)
    _load_into(model, adapt_state_dict(model, sd), True, allow_new_classifier, repr(source), type(model).__name__)
    update_pretrained_cfg(model, weights={"source": source, "file": os.fspath(path), "sha256": hub.file_sha256(path)})
