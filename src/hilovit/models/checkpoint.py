"""Reading checkpoints (official ``.pth``, plain state dicts, safetensors) into hilovit models.

:func:`load_checkpoint` is strict: every parameter of the model must be found with the right
shape. A family adapts foreign layouts by defining ``checkpoint_filter_fn(state_dict)`` on the
model (renaming timm keys, taking ``backbone.*`` out of a detector checkpoint, resizing a relative
position table, verifying or rebuilding derived buffers). A classifier of another size is left
newly initialised with a warning; anything else that does not fit raises
:class:`CheckpointError` listing the keys.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Union

import torch
import torch.nn as nn

__all__ = ["CheckpointError", "LoadResult", "read_checkpoint", "load_checkpoint", "save_safetensors"]

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


def read_checkpoint(source: Source) -> StateDict:
    """Return the state dict held by ``source``.

    ``source`` is a state dict, or a path to a ``.safetensors`` file or a ``torch.save`` file
    (``.pth``/``.pt``/``.bin``, loaded with ``weights_only=True``) holding a state dict or
    ``{'model': state_dict, ...}`` (``state_dict``, ``model_ema`` and a DDP ``module.``
    prefix are understood too).
    """
    if isinstance(source, Mapping):
        return _unwrap(source)
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"checkpoint source must be a path or a state dict, got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{"):
        from safetensors.torch import load_file

        try:
            return _unwrap(load_file(str(path)))
        except Exception as e:  # noqa: BLE001 - reported with the path
            raise CheckpointError(f"cannot read safetensors file {path}: {e}") from e
    try:
        obj = _torch_load_tensors(path)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    return _unwrap(obj)


def _classifier_prefixes(model: nn.Module) -> List[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", "head")
    return [names] if isinstance(names, str) else list(names)


def _fmt(keys: List[str], limit: int = 30) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_checkpoint(model: nn.Module, source: Source, strict: bool = True) -> LoadResult:
    """Load ``source`` into ``model``, checking every key and shape.

    Args:
        model: a hilovit model (or any module; families may define ``checkpoint_filter_fn``).
        source: see :func:`read_checkpoint`.
        strict: raise :class:`CheckpointError` on missing or unexpected keys. Shape
            mismatches always raise, except for the classifier (``pretrained_cfg['classifier']``),
            which keeps its fresh initialisation with a warning.

    Returns:
        :class:`LoadResult` naming the re-initialised and ignored keys.
    """
    sd = read_checkpoint(source)
    filter_fn = getattr(model, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sd = filter_fn(sd)
    own = model.state_dict()
    result = LoadResult()
    heads = _classifier_prefixes(model)
    mismatched = []
    for key, value in list(sd.items()):
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            if any(key == h or key.startswith(h + ".") for h in heads):
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
        raise CheckpointError(f"checkpoint does not fit {type(model).__name__}:\n  " + "\n  ".join(problems))
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


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: Union[str, os.PathLike], metadata=None) -> None:
    """Write ``state_dict`` to ``path`` atomically (a temporary file in the same folder, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
