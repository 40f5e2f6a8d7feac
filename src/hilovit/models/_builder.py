"""Building models with their weights: published weights by tag, and files or URLs that size the model.

:func:`pretrained_model` is ``create_model(name, pretrained=...)`` where ``pretrained`` may also be a
tag of the model's published weights, and where a weights file, local or fetched from a URL, sizes
the model (classes, channels, recorded constructor arguments) before the weights are loaded: the
same file gives the same model wherever it comes from.
"""

from __future__ import annotations

import os
from typing import Union

import torch
import torch.nn as nn

__all__ = ["pretrained_model"]

_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")


def _is_remote(text: str) -> bool:
    return "://" in text or text.startswith("hf-hub:")


def pretrained_model(name: str, pretrained: Union[bool, str, os.PathLike] = True,
                     device: Union[str, torch.device] = "cpu", **kwargs) -> nn.Module:
    """``create_model(name, pretrained=...)`` in eval mode, where ``pretrained`` may also be a tag of
    ``name``'s published weights (``'alpha_0_5'``, ``'ms_in22k_ft_in1k'``): True, a tag, a file path,
    an ``http(s)://`` URL or ``'hf-hub:org/name'``. ``model.pretrained_cfg`` carries the weights'
    preprocessing (input size, crop_pct, interpolation, mean/std). A file, local or fetched from a
    URL, sizes the classifier (``num_classes``), the stem (``in_chans``) and the recorded constructor
    arguments from its shapes and metadata unless ``kwargs`` name them.

    Raises:
        ValueError: a string that is neither a file, a URL, ``hf-hub:`` nor a published tag (the
            message lists the tags); FileNotFoundError: a path that does not exist.
    """
    from hilovit.models.registry import create_model, split_tag

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
        return model.eval().to(device)
    return create_model(name, pretrained=pretrained, **kwargs).eval().to(device)
