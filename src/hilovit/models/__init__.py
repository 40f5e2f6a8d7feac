"""Model families; importing this package registers every named config."""

from hilovit.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from hilovit.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model", "load_checkpoint", "read_checkpoint", "CheckpointError"]
