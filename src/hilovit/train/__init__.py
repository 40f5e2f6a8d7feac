"""Training and evaluation: the engine behind ``hilovit train`` and ``hilovit eval``.

Example::

    >>> from hilovit.train import train
    >>> summary = train(model="litv2_nano", data="fashion-mnist", epochs=1, train_subset=2000,
    ...                 batch_size=64, output="runs/quick")
    >>> summary["test_top1"]  # doctest: +SKIP
"""

from hilovit.train.config import TrainConfig, list_recipes, load_recipe
from hilovit.train.distributed import DistEnv, SyncBatchNormCPU, convert_sync_batchnorm, init_distributed
from hilovit.train.ema import ModelEma
from hilovit.train.engine import format_summary, print_summary, train
from hilovit.train.evaluate import evaluate, format_eval, run_eval
from hilovit.train.loaders import BatchPipeline, EvalBatches, TrainBatches, epoch_order
from hilovit.train.optim import CosineWarmupSchedule, build_optimizer, build_param_groups, scale_lr
from hilovit.train.seg_config import PolySchedule, SegTrainConfig
from hilovit.train.seg_eval import evaluate_segmentation, format_seg_eval, run_seg_eval
from hilovit.train.seg_task import format_seg_summary, train_segmentation
from hilovit.train.state import atomic_torch_save, get_rng_state, load_training_state, set_rng_state

__all__ = [
    "BatchPipeline",
    "CosineWarmupSchedule",
    "DistEnv",
    "EvalBatches",
    "ModelEma",
    "PolySchedule",
    "SegTrainConfig",
    "SyncBatchNormCPU",
    "TrainBatches",
    "TrainConfig",
    "atomic_torch_save",
    "build_optimizer",
    "build_param_groups",
    "convert_sync_batchnorm",
    "epoch_order",
    "evaluate",
    "evaluate_segmentation",
    "format_eval",
    "format_seg_eval",
    "format_seg_summary",
    "format_summary",
    "get_rng_state",
    "init_distributed",
    "list_recipes",
    "load_recipe",
    "load_training_state",
    "print_summary",
    "run_eval",
    "run_seg_eval",
    "scale_lr",
    "set_rng_state",
    "train",
    "train_segmentation",
]
