"""Checkpoints -> models: the one reader and the one loader that every command uses.

* :func:`read_checkpoint` returns ``(state_dict, metadata)`` from a ``.safetensors`` file, a
  ``torch.save`` file (``.pth``/``.pt``/``.bin``: official releases, ``last.pt`` of a training
  run) or an in-memory dict. ``metadata`` is what the training engine stores beside the weights
  (model name, classes, input size, mean/std; :func:`parse_metadata` types it).
* :func:`load_checkpoint` loads a state dict into a model, checking every key and shape. A family
  adapts foreign layouts with ``model.checkpoint_filter_fn(state_dict)`` (see
  :mod:`hilovit.models.convert`) and declares what its checkpoints look like with
  :func:`register_family` (the keys that name it in errors, its stem). A classifier of another
  size is left newly initialised with a warning (fine-tuning), unless ``allow_new_classifier=False``;
  anything else that does not fit raises :class:`CheckpointError` listing the shape mismatches,
  missing and unexpected keys.
Building the registered model a checkpoint was trained as is :func:`hilovit.models._builder.load_model`
(``hilovit.load_model``), sized through :func:`sizes_from_checkpoint`.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from hilovit.models._prefix import backbone_key, has_backbone_keys

__all__ = [
    "CheckpointError",
    "LoadResult",
    "read_checkpoint",
    "read_metadata",
    "parse_metadata",
    "resolve_checkpoint",
    "load_checkpoint",
    "register_family",
    "save_safetensors",
    "unregister_family",
]

StateDict = Dict[str, torch.Tensor]
Source = Union[str, os.PathLike, Mapping[str, torch.Tensor]]

# Containers that training scripts wrap a state dict in, in the order they are tried.
_WRAPPER_KEYS = ("model", "state_dict", "model_ema", "module")


class CheckpointError(ValueError):
    """A checkpoint does not fit the model; the message lists the offending keys."""


@dataclass
class LoadResult:
    """What :func:`load_checkpoint` did: keys it re-initialised (a classifier of another size)."""

    reinitialised: List[str] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)


def _unwrap(obj) -> StateDict:
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        else:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if not tensors:
                raise CheckpointError(
                    f"no state dict found in the checkpoint; top-level keys: {sorted(map(str, obj))[:20]}"
                )
            obj = tensors
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"a checkpoint must hold a dict of tensors, got {type(obj).__name__}")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


class _Placeholder:
    """Stands in for an object of a class that ``weights_only`` loading does not allow (a training
    config, a logger's history, numpy values in a run's metadata): it takes any arguments and
    state and is never called; the tensors beside it load as usual."""

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


def _torch_load_tensors(path: Path):
    """``torch.load(weights_only=True)``, with the checkpoint's non-tensor extras replaced by data.

    Official training scripts save more than weights: LITv2/Swin put the yacs ``config`` in the
    file, mmdet/mmengine a ``message_hub`` with its own classes and numpy arrays. Those globals
    are bound to inert placeholders (dict subclasses such as yacs' ``CfgNode`` to ``OrderedDict``)
    so the safe unpickler still runs no code from the file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        find = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
        if find is None or not hasattr(torch.serialization, "safe_globals"):  # torch < 2.5
            raise
        names = find(path)
        if not names:
            raise
    import collections
    import re

    as_dict: set = set()
    while True:
        bound = []
        for full in names:
            module, _, name = full.rpartition(".")
            cls = collections.OrderedDict if full in as_dict else type(
                name, (_Placeholder,), {"__module__": module, "__qualname__": name}
            )
            bound.append((cls, full))
        try:
            with torch.serialization.safe_globals(bound):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            # items set on a placeholder: the class is a dict subclass, load it as an OrderedDict
            m = re.search(r"but got <class '([\w.]+)'>", str(e))
            if m is None or m.group(1) not in names or m.group(1) in as_dict:
                raise
            as_dict.add(m.group(1))


def resolve_checkpoint(path: Union[str, os.PathLike]) -> Path:
    """A checkpoint file, or a training output folder (its ``model.safetensors``, else ``last.pt``)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path, got {type(path).__name__}")
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("model.safetensors", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise FileNotFoundError(f"checkpoint folder {str(p)!r} holds neither model.safetensors nor last.pt")
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    return p


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(16)
    return path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{")


def _metadata_of(obj: Any) -> Dict[str, Any]:
    """The ``metadata`` dict and ``classes`` entry of a ``torch.save`` dict (a ``last.pt``)."""
    if not isinstance(obj, Mapping):
        return {}
    meta = dict(obj["metadata"]) if isinstance(obj.get("metadata"), Mapping) else {}
    for key in ("classes", "class_names"):
        if key in obj and "classes" not in meta and not isinstance(obj[key], torch.Tensor):
            meta["classes"] = obj[key]
    return meta


def _select(obj: Any, ema: bool, where: str) -> Any:
    if not ema:
        return obj
    if isinstance(obj, Mapping):
        for key in ("ema", "model_ema", "state_dict_ema"):
            value = obj.get(key)
            if isinstance(value, Mapping) and value:
                return value.get("module", value) if isinstance(value.get("module"), Mapping) else value
    raise CheckpointError(f"{where} holds no EMA weights (only the last.pt of a run with an EMA of the weights does)")


def read_checkpoint(source: Source, ema: bool = False) -> Tuple[StateDict, Dict[str, Any]]:
    """Return ``(state_dict, metadata)`` held by ``source``.

    Args:
        source: a state dict (or a dict wrapping one), a training output folder, or a path to a
            ``.safetensors`` file or a ``torch.save`` file (loaded with ``weights_only=True``, so no
            code from the file runs) holding a state dict or ``{'model': state_dict, ...}``
            (``state_dict``, ``model_ema``, ``module`` wrappers and a DDP ``module.`` prefix are
            understood too).
        ema: take the EMA weights of a training checkpoint (``last.pt``'s ``ema``) instead.

    Returns:
        The state dict, and the metadata stored with it: the safetensors header's
        ``__metadata__`` (strings), or a ``torch.save`` dict's ``metadata`` entry and its
        ``classes``; ``{}`` when there is none. :func:`parse_metadata` gives typed values.

    Raises:
        FileNotFoundError: no such file. CheckpointError: unreadable, or no state dict inside.
    """
    if isinstance(source, Mapping):
        return _unwrap(_select(source, ema, "the checkpoint")), _metadata_of(source)
    path = resolve_checkpoint(source)
    if _is_safetensors(path):
        if ema:
            raise CheckpointError(f"{str(path)!r} holds no EMA weights (a safetensors file holds one set)")
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # noqa: BLE001 - reported with the path
            raise CheckpointError(f"cannot read safetensors file {str(path)!r}: {e}") from e
        return _unwrap(sd), meta
    try:
        obj = _torch_load_tensors(path)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {e}") from e
    return _unwrap(_select(obj, ema, repr(str(path)))), _metadata_of(obj)


def read_metadata(source: Source) -> Dict[str, Any]:
    """Only the metadata of :func:`read_checkpoint` (a safetensors header is read without the tensors);
    ``{}`` when there is none or the file cannot be read (loading it reports why)."""
    if isinstance(source, Mapping):
        return _metadata_of(source)
    try:
        path = resolve_checkpoint(source)
        if _is_safetensors(path):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return dict(f.metadata() or {})
        return _metadata_of(_torch_load_tensors(path))
    except Exception:  # noqa: BLE001
        return {}


# --------------------------------------------------------------------------- metadata
def _parse_classes(value: Any) -> Optional[List[str]]:
    """Class names: a list, a JSON list, ``{index: name}``, or newline/comma separated text."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                pass
        if isinstance(value, str):
            value = text.split("\n") if "\n" in text else text.split(",")
    if isinstance(value, Mapping):
        try:
            value = [value[k] for k in sorted(value, key=int)]
        except (TypeError, ValueError):
            return None
    if isinstance(value, (list, tuple)) and value:
        return [str(v).strip() for v in value]
    return None


def _floats(value: Any) -> Optional[Tuple[float, ...]]:
    if value is None:
        return None
    if isinstance(value, str):
        value = [v for v in value.strip().strip("[]()").replace(" ", ",").split(",") if v]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out or None


def _int(value: Any) -> Optional[int]:
    try:
        return int(str(value).strip()) if value is not None and str(value).strip() else None
    except ValueError:
        return None


def _size(value: Any) -> Optional[Tuple[int, int]]:
    sizes = _floats(value)
    if not sizes:
        return None
    return (int(sizes[0]), int(sizes[0])) if len(sizes) == 1 else (int(sizes[-2]), int(sizes[-1]))


def parse_metadata(meta: Mapping[str, Any]) -> Dict[str, Any]:
    """Typed view of checkpoint metadata: ``model`` (str or None), ``classes`` (list or None),
    ``num_classes``, ``in_chans`` (int or None), ``img_size`` ((H, W) or None), ``mean``, ``std``
    (tuples or None), ``dataset`` (str or None); the other entries as stored."""
    out = {k: v for k, v in meta.items()}
    model = meta.get("model")
    out["model"] = model if isinstance(model, str) and model else None
    out["classes"] = _parse_classes(meta.get("classes"))
    out["num_classes"] = _int(meta.get("num_classes"))
    out["in_chans"] = _int(meta.get("in_chans"))
    out["img_size"] = _size(meta.get("img_size"))
    out["mean"], out["std"] = _floats(meta.get("mean")), _floats(meta.get("std"))
    dataset = meta.get("dataset")
    out["dataset"] = str(dataset) if dataset else None
    return out


# --------------------------------------------------------------------------- loading
def _classifier_prefixes(model: nn.Module) -> List[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", "head")
    return [names] if isinstance(names, str) else list(names)


def _fmt(keys: List[str], limit: int = 30) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


# What each family declares about its checkpoints (register_family, called in the family's own file).
_FAMILIES: Dict[str, Tuple[Tuple[str, ...], Optional[str]]] = {}  # name -> (marker key parts, stem weight key)


def register_family(name: str, markers: Sequence[str] = (), stem: Optional[str] = None) -> None:
    """Declare what a model family's checkpoints look like, for :func:`load_checkpoint`'s messages and
    :func:`sizes_from_checkpoint`.

    Args:
        name: how an error names the architecture a foreign checkpoint was made for (``'a LITv2'``:
            "it looks like a LITv2 checkpoint").
        markers: parts of state dict keys that only this family's checkpoints have
            (``'relative_position_bias_table'``); families are tried in the order they register.
        stem: the key of the stem convolution's weight (``'patch_embed.proj.weight'``), whose input
            channels give ``in_chans``; the same key under ``backbone.`` (a detector's or segmentor's
            checkpoint) is read too.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_family: name must be a non-empty str, got {name!r}")
    if isinstance(markers, str) or not all(isinstance(m, str) and m for m in markers):
        raise ValueError(f"register_family: markers must be a sequence of non-empty str, got {markers!r}")
    if stem is not None and (not isinstance(stem, str) or not stem):
        raise ValueError(f"register_family: stem must be None or a non-empty str, got {stem!r}")
    if name in _FAMILIES:
        raise ValueError(f"model family {name!r} is registered twice")
    _FAMILIES[name] = (tuple(markers), stem)


def unregister_family(name: str) -> None:
    """Remove a family declared with :func:`register_family` (``KeyError`` if there is none)."""
    del _FAMILIES[name]


def _family_of(keys) -> Optional[str]:
    keys = list(keys)
    for family, (markers, _) in _FAMILIES.items():
        if any(marker in k for marker in markers for k in keys):
            return family
    return None


def _stem_keys() -> List[str]:
    """The stem weight keys the families declare, then the same under ``backbone.``."""
    stems = list(dict.fromkeys(stem for _, stem in _FAMILIES.values() if stem))
    return stems + [backbone_key(s) for s in stems]


def _source_name(source: Any) -> str:
    return repr(str(source)) if isinstance(source, (str, os.PathLike)) else "the state dict"


def load_checkpoint(
    model: nn.Module, source: Source, strict: bool = True, *, allow_new_classifier: bool = True
) -> LoadResult:
    """Load ``source`` into ``model``, checking every key and shape.

    Args:
        model: a hilovit model (or any module; families define ``checkpoint_filter_fn``).
        source: see :func:`read_checkpoint`.
        strict: raise :class:`CheckpointError` on missing or unexpected keys. Shape
            mismatches always raise, except for the classifier (``pretrained_cfg['classifier']``),
            which keeps its fresh initialisation with a warning when ``allow_new_classifier``.
        allow_new_classifier: False makes a classifier of another size an error too (a model
            that must predict with the checkpoint's head).

    Returns:
        :class:`LoadResult` naming the re-initialised and ignored keys.
    """
    sd, _ = read_checkpoint(source)
    return _load_into(model, sd, strict, allow_new_classifier, _source_name(source), type(model).__name__)


def _load_into(model: nn.Module, sd: StateDict, strict: bool, allow_new_classifier: bool, where: str,
               model_name: str) -> LoadResult:
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        family = _family_of(sd)
        try:
            sd = filter_fn(sd)
        except CheckpointError:
            raise
        except (ValueError, RuntimeError, KeyError, IndexError) as e:  # a foreign layout
            made = f" (it looks like {family} checkpoint)" if family else ""
            raise CheckpointError(f"checkpoint {where} does not fit {model_name}{made}: {e}") from e
    own = model.state_dict()
    result = LoadResult()
    heads = _classifier_prefixes(model)
    mismatched = []
    for key, value in list(sd.items()):
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            if allow_new_classifier and any(key == h or key.startswith(h + ".") for h in heads):
                result.reinitialised.append(key)
                del sd[key]
            else:
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
    missing = [k for k in own if k not in sd and k not in result.reinitialised]
    unexpected = [k for k in sd if k not in own]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch ({len(mismatched)}): " + "; ".join(mismatched[:30]))
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
    if problems:
        family, own_family = _family_of(sd), _family_of(own)
        made = f" (it looks like {family} checkpoint)" if family and family != own_family else ""
        raise CheckpointError(
            f"checkpoint {where} does not fit {model_name}{made}:\n  " + "\n  ".join(problems)
        )
    if not strict:
        result.ignored = unexpected
        for k in unexpected:
            del sd[k]
    if result.reinitialised:
        warnings.warn(
            f"classifier of another size left newly initialised: {_fmt(result.reinitialised)}", stacklevel=2
        )
    model.load_state_dict(sd, strict=False)
    return result


_CLASSIFIER_KEYS = ("head.weight", "head.fc.weight", "decode_head.conv_seg.weight")


def _sizes_from_state_dict(sd: StateDict) -> Dict[str, int]:
    """``num_classes`` from the classifier's rows (a classifier's ``head``, a segmenter's ``conv_seg``),
    ``in_chans`` from the stem convolution."""
    out: Dict[str, int] = {}
    for key in _CLASSIFIER_KEYS:
        w = sd.get(key)
        if w is not None and w.dim() in (2, 4):
            out["num_classes"] = int(w.shape[0])
            break
    else:
        if not any(k.startswith("head.") for k in sd) and not has_backbone_keys(sd):
            out["num_classes"] = 0
    for key in _stem_keys():
        w = sd.get(key)
        if w is not None and w.dim() == 4:
            out["in_chans"] = int(w.shape[1])
            break
    return out


def _sizes(sd: StateDict, info: Mapping[str, Any]) -> Dict[str, Any]:
    """Constructor arguments a checkpoint implies: what a training run recorded (classes, channels, its
    constructor arguments), else what the shapes say."""
    kwargs: Dict[str, Any] = dict(_sizes_from_state_dict(sd))
    for key in ("num_classes", "in_chans"):
        if info.get(key) is not None:
            kwargs[key] = info[key]
    recorded = info.get("model_kwargs")
    if isinstance(recorded, str) and recorded.strip():
        try:
            recorded = json.loads(recorded)
        except json.JSONDecodeError:
            recorded = None
    if isinstance(recorded, Mapping):
        kwargs.update({k: v for k, v in recorded.items() if k not in ("num_classes", "in_chans")})
    return kwargs


def sizes_from_checkpoint(source: Source) -> Dict[str, Any]:
    """The constructor arguments ``source`` implies (``num_classes``, ``in_chans``, recorded ``model_kwargs``)."""
    sd, raw = read_checkpoint(source)
    return _sizes(sd, parse_metadata(raw))


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: Union[str, os.PathLike], metadata=None) -> None:
    """Write ``state_dict`` (and string ``metadata``) to ``path`` atomically (see :func:`hilovit.io.atomic_write`)."""
    from safetensors.torch import save

    from hilovit.io import atomic_write

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    data = save(tensors, metadata=metadata)
    with atomic_write(path, "wb") as f:
        f.write(data)
