"""Constants shared by data preparation and the models' ``pretrained_cfg``."""

__all__ = ["IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "IMAGENET_MEAN", "IMAGENET_STD"]

# Per-channel statistics of ImageNet-1k's training images on the [0, 1] scale: the normalisation
# of the official LITv2 and Swin checkpoints, and the default for photographs.
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
IMAGENET_MEAN = IMAGENET_DEFAULT_MEAN
IMAGENET_STD = IMAGENET_DEFAULT_STD
