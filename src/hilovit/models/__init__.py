"""Model families; importing this package registers every named config.

A family declares everything in its own files (entry points with ``register_model``, published weights with
``register_weights``, its dense-prediction backbone with ``register_dense_backbone``, its checkpoints' marks
with ``register_family``); the one line here imports it.
"""

from hilovit.models import swin_backbone  # noqa: F401  (registers swin_* and the 'SwinTransformer' backbone)
from hilovit.models._builder import create_model, load_model
from hilovit.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from hilovit.models.detector import build_detector  # noqa: F401  (registers retinanet_*)
from hilovit.models.litv2 import LITv2  # registers litv2_*
from hilovit.models.litv2_backbone import LITv2Backbone  # registers the 'LITv2' backbones
from hilovit.models.registry import list_models, register_model
from hilovit.models.segmentation import build_segmentor  # noqa: F401  (registers semfpn_*)
from hilovit.models.swin import SwinTransformer
from hilovit.models.two_stage import MaskRCNN  # noqa: F401  (registers mask_rcnn_*)

__all__ = [
    "create_model",
    "load_model",
    "list_models",
    "register_model",
    "load_checkpoint",
    "read_checkpoint",
    "CheckpointError",
    "LITv2",
    "LITv2Backbone",
    "SwinTransformer",
]
