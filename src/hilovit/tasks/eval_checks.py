"""What every task's ``eval`` checks of a checkpoint against its data: the data it records, and its class names.

* :func:`recorded_data`: the data a run was trained on (its ``config.yaml``, else the ``dataset``
  entry of the weights' metadata), the default of ``hilovit eval`` without ``--data``.
* :func:`class_order`: the checkpoint's class names against the data's. The same names in the
  same order pass; the same names in another order give the reordering (the model is then evaluated
  with its classifier's rows permuted to the data's order, :func:`reorder_classifier`); other names
  are refused, naming both lists. Names that carry no information (``'0'``, ``'1'``, ... as given
  to data without names) on either side are not compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["recorded_data", "class_order", "reorder_classifier", "DATASET_PREFIXES"]

# the ``dataset`` entry of the metadata is KIND:PATH for data read from a folder
DATASET_PREFIXES = ("idx", "folder", "masks", "ade20k", "coco")


def recorded_data(checkpoint: Path, meta: Dict[str, Any]) -> Dict[str, Any]:
    """The data a checkpoint was trained on, as far as it is recorded: ``data``, ``data_dir``,
    ``val_split``, ``seed`` from the run's ``config.yaml`` beside it (when it was written for the same
    model), else ``data`` from the ``dataset`` entry of its metadata (``'fashion-mnist'``,
    ``'fashion-scenes'``, ``'idx:<folder>'``, ``'folder:<path>'``, ``'masks:<path>'``, ``'ade20k:<path>'``,
    ``'coco:<path>'``).
    Entries that are not recorded are absent."""
    out: Dict[str, Any] = {}
    config = Path(checkpoint).parent / "config.yaml"
    if config.is_file():
        try:
            import yaml

            values = yaml.safe_load(config.read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - an unreadable config records nothing
            values = None
        if isinstance(values, dict) and (not meta.get("model") or values.get("model") in (None, meta["model"])):
            out.update({k: values[k] for k in ("data", "data_dir", "val_split", "seed") if values.get(k) is not None})
    dataset = meta.get("dataset")
    if "data" not in out and isinstance(dataset, str) and dataset:
        kind, sep, where = dataset.partition(":")
        out["data"] = where if sep and kind in DATASET_PREFIXES else dataset
    return out


def _placeholders(names: Sequence[str]) -> bool:
    """Names given to classes nobody named: their indices."""
    return [str(n) for n in names] == [str(i) for i in range(len(names))]


def _shown(names: Sequence[str], limit: int = 12) -> str:
    listed = ", ".join(repr(str(n)) for n in names[:limit])
    return f"[{listed}{', ...' if len(names) > limit else ''}]"


def class_order(checkpoint_classes: Optional[Sequence[str]], data_classes: Sequence[str], checkpoint: str,
                data: str) -> Optional[List[int]]:
    """How the checkpoint's classes map onto the data's, by name.

    Returns:
        None when the labels mean the same class on both sides (same names in the same order, or no
        names to compare); else ``order`` with ``order[i]`` the checkpoint's index of the data's class
        ``i`` (the same names in another order).

    Raises:
        ValueError: the names differ (both lists named), or a name is repeated so no order can be told.
    """
    if checkpoint_classes is None:
        return None
    ours, theirs = [str(c) for c in checkpoint_classes], [str(c) for c in data_classes]
    if ours == theirs or _placeholders(ours) or _placeholders(theirs):
        return None
    if len(ours) == len(theirs) and sorted(ours) == sorted(theirs) and len(set(ours)) == len(ours):
        index = {name: i for i, name in enumerate(ours)}
        return [index[name] for name in theirs]
    missing, extra = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    detail = f"only in the checkpoint: {_shown(missing)}; only in the data: {_shown(extra)}" if missing or extra \
        else "a name is repeated, so the classes cannot be matched by name"
    raise ValueError(f"checkpoint {checkpoint!r} was trained on the classes {_shown(ours)}, but the data {data} has "
                     f"the classes {_shown(theirs)} ({detail}); evaluate it on data with its classes")


def reorder_classifier(model: nn.Module, order: Sequence[int]) -> None:
    """Permute the rows of ``model``'s classifier (named by ``pretrained_cfg['classifier']``, ``'head'`` by
    default; a linear layer or a 1x1 convolution) so that output ``i`` is the old output ``order[i]``."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "head")
    name = names if isinstance(names, str) else names[0]
    layer = model.get_submodule(name)
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape[0] != len(order):
        raise ValueError(f"cannot reorder the classes of {type(model).__name__}: {name!r} is not a classifier of "
                         f"{len(order)} outputs")
    index = torch.as_tensor(list(order), dtype=torch.long, device=weight.device)
    with torch.no_grad():
        layer.weight.copy_(weight.index_select(0, index))
        if getattr(layer, "bias", None) is not None:
            layer.bias.copy_(layer.bias.index_select(0, index))
