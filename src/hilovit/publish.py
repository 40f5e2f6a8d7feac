"""Writing a model repository: :func:`save_pretrained` (a folder) and :func:`push_to_hub` (the Hugging Face hub).

The folder is what ``create_model('local-dir:PATH')`` and ``create_model('hf-hub:org/name')`` read
back (:mod:`hilovit.models.repo`), timm's layout:

* ``config.json``: ``architecture`` (the registered name), ``num_classes``, ``task``, ``label_names``,
  ``model_args`` (constructor arguments: ``in_chans``, a classifier's ``img_size``, a run's
  ``model_kwargs``, a published variant's ``alpha``), ``pretrained_cfg`` (``input_size``, ``mean``,
  ``std``, ``crop_pct``, ``label_names``, a dense model's ``test_scale``, ...);
* ``model.safetensors``: the weights, with the metadata a training run records in its header, so
  ``hilovit predict --checkpoint FOLDER`` reads the folder as it reads a run;
* ``README.md``: the model card (:mod:`hilovit.model_card`); for a run also ``train_config.yaml``
  (its ``config.yaml``).

The folder is written beside its destination under a temporary name and renamed into place: a
failure leaves nothing half-written. Uploading needs the optional ``huggingface_hub`` package
(``pip install 'hilovit[hub]'``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch.nn as nn

__all__ = ["save_pretrained", "push_to_hub", "hub_config", "is_model_folder"]

PathLike = Union[str, "os.PathLike[str]"]
WEIGHTS_NAME = "model.safetensors"
FOLDER_FILES = ("config.json", WEIGHTS_NAME, "README.md", "train_config.yaml")
# pretrained_cfg entries that name where weights came from or repeat the class names under older keys
_DROPPED = ("url", "file", "file_name", "hf_hub_id", "hf_hub_filename", "source", "sha256", "weights", "state_dict",
            "classes", "class_names")
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def is_model_folder(path: PathLike) -> bool:
    """Whether ``path`` is a folder :func:`save_pretrained` wrote (``config.json`` naming an architecture,
    ``model.safetensors``, nothing but the repository's files)."""
    p = Path(path)
    if not (p / "config.json").is_file() or not (p / WEIGHTS_NAME).is_file():
        return False
    if any(child.name not in FOLDER_FILES for child in p.iterdir()):
        return False
    try:
        return isinstance(json.loads((p / "config.json").read_text(encoding="utf-8")).get("architecture"), str)
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------- what is written
def _jsonable(value: Any, key: str) -> Any:
    if isinstance(value, tuple):
        value = list(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise ValueError(f"pretrained_cfg[{key!r}] = {value!r:.80} cannot be written to config.json; pass "
                         f"config={{'pretrained_cfg': {{{key!r}: ...}}}} with a JSON value") from None
    return value


def _architecture(model: nn.Module, meta: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    from hilovit.models.registry import is_model, resolve_name

    name = config.get("architecture") or meta.get("model") or (getattr(model, "pretrained_cfg", None) or {}).get(
        "architecture")
    if not isinstance(name, str) or not is_model(name):
        raise ValueError(f"save_pretrained: the architecture of this {type(model).__name__} is unknown ({name!r}); "
                         "build it with hilovit.create_model, or pass config={'architecture': 'registered_name'}")
    return resolve_name(name)[0]


def _model_args(model: nn.Module, arch: str, meta: Mapping[str, Any], pcfg: Mapping[str, Any]) -> Dict[str, Any]:
    """Constructor arguments that rebuild ``model``: a published variant's, a run's ``model_kwargs``,
    ``in_chans`` and a classifier's ``img_size``."""
    from hilovit.models.pretrained import get_pretrained
    from hilovit.models.registry import model_task

    args: Dict[str, Any] = {}
    tag = pcfg.get("tag")
    if isinstance(tag, str):
        try:
            entry = get_pretrained(arch, tag)
        except ValueError:
            entry = None
        if entry is not None:
            args.update(entry.variant_args)
    recorded = meta.get("model_kwargs")
    if isinstance(recorded, str) and recorded.strip():
        recorded = json.loads(recorded)
    if isinstance(recorded, Mapping):
        args.update(recorded)
    args.pop("num_classes", None)
    if getattr(model, "in_chans", None) is not None:
        args["in_chans"] = int(model.in_chans)
    size = getattr(model, "img_size", None)
    if model_task(arch) == "classification" and isinstance(size, (tuple, list)) and len(size) == 2:
        args["img_size"] = int(size[0]) if size[0] == size[1] else [int(v) for v in size]
    return {k: _jsonable(v, k) for k, v in args.items()}


def _labels(model: nn.Module, meta: Mapping[str, Any], config: Mapping[str, Any], pcfg: Mapping[str, Any]):
    from hilovit.models.repo import label_list

    for names in (config.get("label_names"), meta.get("classes"), pcfg.get("label_names"), pcfg.get("classes"),
                  pcfg.get("class_names")):
        if names:
            names = label_list(json.loads(names) if isinstance(names, str) else names, "save_pretrained")
            n = getattr(model, "num_classes", None)
            if n is not None and len(names) != n:
                raise ValueError(f"save_pretrained: {len(names)} label_names for a model with {n} classes")
            return names
    return None


def hub_config(model: nn.Module, metadata: Optional[Mapping[str, Any]] = None,
               config: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """The ``config.json`` of ``model``: timm's fields from its ``pretrained_cfg``, a run's recorded
    ``metadata`` (:func:`hilovit.models.checkpoint.read_checkpoint`'s: classes, data set, evaluation
    scale, category ids) and ``config`` (entries that replace them; ``pretrained_cfg`` merged)."""
    from hilovit.models.registry import model_task

    meta, config = dict(metadata or {}), dict(config or {})
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    arch = _architecture(model, meta, config)
    task = model_task(arch)
    pcfg = {k: v for k, v in cfg.items() if k not in _DROPPED and v is not None}
    if meta.get("dataset"):
        pcfg["dataset"] = meta["dataset"]
    scale = meta.get("eval_scale")
    if isinstance(scale, str) and scale.strip():
        pcfg["test_scale"] = [int(v) for v in scale.split(",")]
    for key in ("ignore_index",):
        if str(meta.get(key, "")).strip():
            pcfg[key] = int(meta[key])
    if str(meta.get("category_ids", "")).strip():
        pcfg["category_ids"] = [int(v) for v in str(meta["category_ids"]).split(",")]
    labels = _labels(model, meta, config, cfg)
    if labels is not None:
        pcfg["label_names"] = labels
    pcfg.update(config.pop("pretrained_cfg", None) or {})
    pcfg["num_classes"] = int(getattr(model, "num_classes", pcfg.get("num_classes", 0)))
    pcfg.pop("architecture", None)
    out: Dict[str, Any] = {"architecture": arch, "num_classes": pcfg["num_classes"], "task": task}
    for key in ("num_features", "global_pool"):
        value = getattr(model, key, None)
        if isinstance(value, (int, str)) and not isinstance(value, bool) and value != "":
            out[key] = value
    if pcfg.get("label_names"):
        out["label_names"] = pcfg["label_names"]
    out["model_args"] = _model_args(model, arch, meta, cfg)
    out["pretrained_cfg"] = {k: _jsonable(v, k) for k, v in pcfg.items()}
    out.update({k: v for k, v in config.items() if k != "architecture"})
    return out


def _weights_metadata(config: Mapping[str, Any]) -> Dict[str, str]:
    """The header a training run writes into ``model.safetensors`` (strings only), from ``config``."""
    from hilovit import __version__

    pcfg, args = config["pretrained_cfg"], dict(config["model_args"])
    meta = {"format": "hilovit-hub", "task": str(config["task"]), "model": config["architecture"],
            "num_classes": str(config["num_classes"]), "hilovit_version": __version__}
    if "in_chans" in args:
        meta["in_chans"] = str(args.pop("in_chans"))
    if "img_size" in args:
        size = args.pop("img_size")
        meta["img_size"] = str(size) if isinstance(size, int) else ",".join(map(str, size))
    meta["model_kwargs"] = json.dumps(args)
    if pcfg.get("label_names"):
        meta["classes"] = json.dumps(list(pcfg["label_names"]))
    for key in ("mean", "std", "test_scale", "category_ids"):
        if pcfg.get(key):
            meta["eval_scale" if key == "test_scale" else key] = ",".join(f"{v:.6g}" if isinstance(v, float)
                                                                         else str(v) for v in pcfg[key])
    for key in ("dataset", "ignore_index"):
        if pcfg.get(key) is not None:
            meta[key] = str(pcfg[key])
    return meta


# --------------------------------------------------------------------------- a model or a run
def _read_summary(summary: Any) -> Optional[Dict[str, Any]]:
    if summary is None or isinstance(summary, Mapping):
        return dict(summary) if summary is not None else None
    path = Path(summary)
    path = path / "summary.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"summary {str(summary)!r}: no such file (a run's summary.json or its folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"summary {str(path)!r} is not JSON: {e}") from None


def _resolve(model_or_run: Any) -> Tuple[nn.Module, Dict[str, Any], Optional[Path]]:
    """``(model, recorded metadata, run folder)`` of a model, a run folder or a checkpoint file."""
    if isinstance(model_or_run, nn.Module):
        return model_or_run, {}, None
    if not isinstance(model_or_run, (str, os.PathLike)):
        raise TypeError(f"model_or_run must be an nn.Module, a training run folder or a checkpoint file, "
                        f"got {type(model_or_run).__name__}")
    from hilovit.models._builder import load_model

    path = Path(model_or_run).expanduser()
    model, meta = load_model(path)
    return model, meta, path if path.is_dir() else path.parent


# --------------------------------------------------------------------------- writing
def _write_files(folder: Path, model: nn.Module, config: Dict[str, Any], summary, recipe, source, run) -> None:
    from hilovit.model_card import model_card
    from hilovit.models.checkpoint import save_safetensors

    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_safetensors(model.state_dict(), folder / WEIGHTS_NAME, metadata=_weights_metadata(config))
    if recipe:
        (folder / "train_config.yaml").write_text(recipe, encoding="utf-8")
    params = sum(p.numel() for p in model.parameters())
    card = model_card(config, params, summary=summary, recipe=recipe, source=source, run=run)
    (folder / "README.md").write_text(card, encoding="utf-8")


def _replace(tmp: Path, dest: Path) -> None:
    """Put the finished folder ``tmp`` at ``dest``: renamed into place, an old one moved aside first."""
    old = None
    if dest.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
        os.rmdir(old)
        os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except OSError:
        if old is not None:
            os.replace(old, dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_pretrained(model_or_run: Union[nn.Module, PathLike], save_directory: PathLike, *,
                    summary: Union[Mapping[str, Any], PathLike, None] = None,
                    config: Optional[Mapping[str, Any]] = None, overwrite: bool = False,
                    _source: Optional[str] = None) -> Path:
    """Write a model repository folder (``config.json``, ``model.safetensors``, ``README.md``) that
    ``hilovit.create_model('local-dir:PATH')`` loads, and that :func:`push_to_hub` uploads.

    Args:
        model_or_run: a hilovit model (built by :func:`hilovit.create_model`, or naming its
            architecture in ``config``), or a training run folder / checkpoint file (loaded with
            :func:`hilovit.load_model`; its ``summary.json`` and ``config.yaml`` fill the card).
        save_directory: the folder to write; made with its parents.
        summary: a run's ``summary.json`` (a dict, the file or the run folder) for the card's data,
            recipe and metrics (default: the run's own, when given a run).
        config: ``config.json`` entries to set (``label_names``, ``pretrained_cfg`` entries merged).
        overwrite: replace a folder that holds other files (default: only an empty folder, or one
            this function wrote, is replaced).

    Returns:
        the folder. Raises ValueError: a non-empty folder that is not a model repository (without
        ``overwrite``), an unknown architecture, label names that do not match the classes.
    """
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict of config.json entries, got {type(config).__name__}")
    dest = Path(save_directory).expanduser()
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"save_directory {str(dest)!r} is a file, not a folder")
    if dest.is_dir() and any(dest.iterdir()) and not is_model_folder(dest) and not overwrite:
        raise ValueError(f"save_directory {str(dest)!r} holds other files (it is no model folder written by "
                         "save_pretrained); choose an empty or new folder, or pass overwrite=True to replace it")
    model, meta, run = _resolve(model_or_run)
    summary = _read_summary(summary if summary is not None or run is None
                            else (run / "summary.json" if (run / "summary.json").is_file() else None))
    recipe = (run / "config.yaml").read_text(encoding="utf-8") if run and (run / "config.yaml").is_file() else None
    cfg = hub_config(model, meta, config)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        _write_files(tmp, model, cfg, summary, recipe, _source or f"local-dir:{dest}", str(run) if run else None)
        _replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def push_to_hub(model_or_run: Union[nn.Module, PathLike], repo_id: str, *, token: Optional[str] = None,
                private: bool = False, summary: Union[Mapping[str, Any], PathLike, None] = None,
                config: Optional[Mapping[str, Any]] = None, commit_message: Optional[str] = None) -> str:
    """:func:`save_pretrained` into a temporary folder, then upload it to the Hugging Face hub
    repository ``repo_id`` (``'org/name'``; created if missing, ``private`` if asked): afterwards
    ``hilovit.create_model('hf-hub:' + repo_id)`` loads it anywhere.

    Args:
        token: a Hugging Face token (default: ``HF_TOKEN`` or the one ``huggingface-cli login`` stored).
        summary, config: as :func:`save_pretrained`.

    Returns:
        the repository's URL. Raises ImportError (naming ``pip install 'hilovit[hub]'``) without
        huggingface_hub; ValueError for a malformed ``repo_id``.
    """
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must read 'org/name' (letters, digits, '-', '_', '.'), got {repo_id!r}")
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ImportError("push_to_hub needs the huggingface_hub package: pip install 'hilovit[hub]' "
                          "(or pip install huggingface_hub)") from None
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hilovit-hub-") as tmp:
        folder = save_pretrained(model_or_run, Path(tmp) / "repo", summary=summary, config=config,
                                 _source=f"hf-hub:{repo_id}")
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                          commit_message=commit_message or "Upload a hilovit model (config.json, weights, card)")
    return str(url)
