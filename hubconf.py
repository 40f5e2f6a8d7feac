"""torch.hub entry points: every registered hilovit model, by name.

    >>> import torch
    >>> model = torch.hub.load("path/to/hilovit", "litv2_s", source="local", pretrained=True)
    >>> torch.hub.list("path/to/hilovit", source="local")

Each entry point is ``hilovit.create_model(name, pretrained=..., **kwargs)``: ``pretrained`` is
False, True (the official weights, downloaded once into ``$TORCH_HOME/hub/checkpoints``), a
path, a URL or ``'hf-hub:org/name'``; keyword arguments are the model's (``num_classes=10``,
``alpha=0.5``, ...). From a checkout the package is imported from its ``src/`` folder.
"""

import os as _os
import sys as _sys

# The modules of every runtime dependency in pyproject.toml (torch.hub checks that each imports).
dependencies = ["torch", "safetensors", "numpy", "PIL", "kornia", "tqdm", "yaml", "matplotlib", "pycocotools"]

_SRC = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src")
if _os.path.isdir(_os.path.join(_SRC, "hilovit")) and _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

import hilovit as _hilovit  # noqa: E402


def _entry(name):
    def entry(pretrained=False, **kwargs):
        return _hilovit.create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    doc = _hilovit.models.registry.model_entrypoint(name).__doc__ or ""
    entry.__doc__ = (doc.strip() + "\n\n" if doc else "") + (
        f"torch.hub entry point: hilovit.create_model({name!r}, pretrained=pretrained, **kwargs)."
    )
    return entry


for _name in _hilovit.list_models(include_aliases=True):
    globals()[_name] = _entry(_name)
del _name
