"""hilovit: fast hierarchical vision transformers (HiLo attention, LITv2, Swin Transformer)."""

from hilovit.layers.attention import Attention, SpatialReductionAttention
from hilovit.layers.fast import fast_inference, set_fast_inference, why_not_fast
from hilovit.layers.hilo import HiLo
from hilovit.layers.window_attention import WindowAttention
from hilovit.models import CheckpointError, create_model, list_models, load_checkpoint, register_model
from hilovit.models.detector import RetinaNet, build_detector
from hilovit.models.hub import DownloadError
from hilovit.models.litv2 import LITv2, LITv2Backbone
from hilovit.models.pretrained import list_pretrained, load_pretrained
from hilovit.models.segmentation import EncoderDecoder, build_segmentor
from hilovit.models.swin import SwinTransformer
from hilovit.predict import Predictor

__version__ = "0.1.0"

__all__ = [
    "Attention",
    "build_segmentor", "EncoderDecoder",
    "build_detector", "RetinaNet",
    "CheckpointError",
    "DownloadError",
    "create_model",
    "fast_inference",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "load_pretrained",
    "register_model",
    "set_fast_inference",
    "HiLo",
    "LITv2",
    "LITv2Backbone",
    "Predictor",
    "SpatialReductionAttention",
    "SwinTransformer",
    "WindowAttention",
    "why_not_fast",
    "__version__",
]
