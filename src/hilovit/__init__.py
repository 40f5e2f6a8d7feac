"""hilovit: fast hierarchical vision transformers (HiLo attention, LITv2, Swin Transformer)."""

from hilovit.layers.attention import Attention, HiLo, SpatialReductionAttention, WindowAttention
from hilovit.models import CheckpointError, create_model, list_models, load_checkpoint, register_model

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "CheckpointError",
    "create_model",
    "list_models",
    "load_checkpoint",
    "register_model",
    "HiLo",
    "SpatialReductionAttention",
    "WindowAttention",
    "__version__",
]
