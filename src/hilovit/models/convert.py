"""The generic steps of adapting an official checkpoint, shared by the families' filters.

Each family's ``model.checkpoint_filter_fn(state_dict)`` (called by :func:`hilovit.load_checkpoint`)
is declared in the family's own files (LITv2: :meth:`hilovit.models.litv2.LITv2.checkpoint_filter_fn`;
Swin: :func:`hilovit.models.swin_convert.swin_filter`) and composes its own renames with these:

* the ``backbone.*`` part of an mmdet/mmseg checkpoint: :func:`hilovit.models._prefix.split_backbone`;
* :func:`drop_classifier`: a classification checkpoint loaded into a ``features_only`` model loses
  its final ``norm`` and ``head``; the stage output norms ``norm{i}`` it lacks may keep the model's
  fresh initialisation, with a warning, as the official detection training starts.
"""

from __future__ import annotations

import re
import warnings
from typing import Dict

import torch
import torch.nn as nn

__all__ = ["StateDict", "drop_classifier"]

StateDict = Dict[str, torch.Tensor]
_CLASSIFIER = ("head.", "norm.")
_STAGE_NORM = re.compile(r"norm\d+\.")


def drop_classifier(model: nn.Module, state_dict: StateDict, keep_fresh_norms: bool = True) -> StateDict:
    """``state_dict`` without the classifier's ``norm.*`` and ``head.*`` (for a ``features_only`` model).

    With ``keep_fresh_norms``, when a classifier part was dropped, the model's stage output norms
    (``norm{i}.*``) absent from the checkpoint are filled with the model's own initialisation and named
    in a warning, so that a strict load passes.
    """
    sd = dict(state_dict)
    dropped = [k for k in sd if k.startswith(_CLASSIFIER)]
    for k in dropped:
        del sd[k]
    if keep_fresh_norms and dropped:
        own = model.state_dict()
        fresh = [k for k in own if _STAGE_NORM.match(k) and k not in sd]
        if fresh:
            warnings.warn(
                "classification checkpoint loaded into a feature extractor: its norm/head are dropped and "
                f"the output norms keep their initialisation ({', '.join(sorted(fresh))})",
                stacklevel=4,
            )
            sd.update({k: own[k] for k in fresh})
    return sd
