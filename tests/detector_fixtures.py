"""Shared by the RetinaNet and Mask R-CNN fixture tests: the official detector fixtures and the dense
stages of a forward pass."""

import json

import torch
from safetensors.torch import load_file

from hilovit import build_detector, load_checkpoint


def load_detector_fixture(fixtures_dir, name):
    """``(model, io tensors, meta)`` of fixture ``name``: the official constructor, its weights loaded strictly."""
    meta = json.loads((fixtures_dir / f"{name}.json").read_text())
    model = build_detector(meta["constructor"]).eval()
    load_checkpoint(model, fixtures_dir / f"{name}.state_dict.safetensors")  # strict
    return model, load_file(str(fixtures_dir / f"{name}.io.safetensors")), meta


def dense_outputs(model, inputs, head=""):
    """``(stages, cls, reg)``: the backbone's and neck's outputs (``backbone.outK``, ``neck.outK``) and the
    head's maps (``{head}cls_score.K``, ``{head}bbox_pred.K``) of ``model(inputs)``."""
    got = {}

    def keep(name):
        def hook(module, args, out):
            got.update({f"{name}.out{k}": t for k, t in enumerate(out)})
        return hook
    hooks = [model.backbone.register_forward_hook(keep("backbone")), model.neck.register_forward_hook(keep("neck"))]
    with torch.no_grad():
        cls, reg = model(inputs)
    for h in hooks:
        h.remove()
    got.update({f"{head}cls_score.{k}": t for k, t in enumerate(cls)})
    got.update({f"{head}bbox_pred.{k}": t for k, t in enumerate(reg)})
    return got, cls, reg
