"""hilovit: fast hierarchical vision transformers (HiLo attention, LITv2, Swin Transformer).

The public names below are imported on first use, so ``import hilovit`` (and the ``hilovit``
command's ``--help``) costs nothing until a model, layer or task is asked for.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Attention": "hilovit.layers.attention",
    "SpatialReductionAttention": "hilovit.layers.attention",
    "HiLo": "hilovit.layers.hilo",
    "WindowAttention": "hilovit.layers.window_attention",
    "fast_inference": "hilovit.layers.fast",
    "set_fast_inference": "hilovit.layers.fast",
    "why_not_fast": "hilovit.layers.fast",
    "CheckpointError": "hilovit.models.checkpoint",
    "load_checkpoint": "hilovit.models.checkpoint",
    "load_model": "hilovit.models._builder",
    "create_model": "hilovit.models._builder",
    "list_models": "hilovit.models.registry",
    "register_model": "hilovit.models.registry",
    "DownloadError": "hilovit.models.hub",
    "LITv2": "hilovit.models.litv2",
    "LITv2Backbone": "hilovit.models.litv2_backbone",
    "SwinTransformer": "hilovit.models.swin",
    "list_pretrained": "hilovit.models.pretrained",
    "load_pretrained": "hilovit.models.pretrained",
    "EncoderDecoder": "hilovit.models.segmentation",
    "build_segmentor": "hilovit.models.segmentation",
    "RetinaNet": "hilovit.models.detector",
    "build_detector": "hilovit.models.detector",
    "MaskRCNN": "hilovit.models.two_stage",
    "Predictor": "hilovit.tasks.classification_predict",
    "train": "hilovit.train.engine",
    "save_pretrained": "hilovit.publish",
    "push_to_hub": "hilovit.publish",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hilovit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
