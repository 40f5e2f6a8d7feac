"""Data: IDX files (Fashion-MNIST) and image folders as uint8 samples, batch transforms, Mixup/CutMix,
the ImageNet-1k class names, detection datasets (fashion-scenes instances, COCO folders), and timm's
``resolve_data_config`` / ``create_transform`` for inference on PIL images."""

from hilovit.data.config import resolve_data_config, resolve_model_data_config
from hilovit.data.datasets import (
    DEFAULT_IDX_DIR,
    ENV_DATA_DIR,
    FASHION_MNIST_CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IMG_EXTENSIONS,
    DatasetInfo,
    IdxDataset,
    ImageFolderDataset,
    UnreadableImageError,
    build_datasets,
    check_image,
    compute_mean_std,
    find_idx_dir,
    load_image,
    scan_image_folder,
    split_indices,
)
from hilovit.data.detection import DetDatasetInfo, build_det_datasets, detection_collate
from hilovit.data.folders import decode_image, pil_interpolation, random_resized_crop_box, resize_center_crop
from hilovit.data.idx import read_idx, write_idx
from hilovit.data.image_transforms import ImageTransform, create_transform
from hilovit.data.imagenet import imagenet_class_names, imagenet_label_indices, imagenet_wnids
from hilovit.data.mixup import MixParams, Mixup, smooth_one_hot, soft_target_cross_entropy
from hilovit.data.transforms import AugmentConfig, BatchAugment, Normalize, match_channels, to_float_batch

__all__ = [
    "DEFAULT_IDX_DIR",
    "ENV_DATA_DIR",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMG_EXTENSIONS",
    "ImageTransform",
    "AugmentConfig",
    "BatchAugment",
    "DatasetInfo",
    "DetDatasetInfo",
    "IdxDataset",
    "ImageFolderDataset",
    "MixParams",
    "Mixup",
    "Normalize",
    "UnreadableImageError",
    "build_datasets",
    "build_det_datasets",
    "check_image",
    "compute_mean_std",
    "create_transform",
    "decode_image",
    "detection_collate",
    "find_idx_dir",
    "imagenet_class_names",
    "imagenet_label_indices",
    "imagenet_wnids",
    "load_image",
    "match_channels",
    "pil_interpolation",
    "random_resized_crop_box",
    "read_idx",
    "resolve_data_config",
    "resolve_model_data_config",
    "resize_center_crop",
    "scan_image_folder",
    "smooth_one_hot",
    "soft_target_cross_entropy",
    "split_indices",
    "to_float_batch",
    "write_idx",
]
