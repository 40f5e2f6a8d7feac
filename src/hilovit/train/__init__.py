"""The training engine behind ``hilovit train`` (every task), and its parts.

The names below are imported on first use (the tasks import the engine's parts, and the engine
imports the tasks: importing this package pulls in neither).

Example::

    >>> from hilovit.train import train
    >>> summary = train(model="litv2_nano", data="fashion-mnist", epochs=1, train_subset=2000,
    ...                 batch_size=64, output="runs/quick")
    >>> summary["test_top1"]  # doctest: +SKIP
    >>> summary = train(model="semfpn_litv2_nano", epochs=1, train_subset=200, output="runs/seg")  # segmentation
"""

import importlib

_EXPORTS = {
    "TrainConfig": "hilovit.train.config",
    "list_recipes": "hilovit.train.config",
    "load_recipe": "hilovit.train.config",
    "DistEnv": "hilovit.train.distributed",
    "SyncBatchNormCPU": "hilovit.train.distributed",
    "convert_sync_batchnorm": "hilovit.train.distributed",
    "init_distributed": "hilovit.train.distributed",
    "ModelEma": "hilovit.train.ema",
    "train": "hilovit.train.engine",
    "format_summary": "hilovit.train.report",
    "print_summary": "hilovit.train.report",
    "BatchPipeline": "hilovit.train.loaders",
    "EvalBatches": "hilovit.train.loaders",
    "TrainBatches": "hilovit.train.loaders",
    "epoch_order": "hilovit.train.loaders",
    "CosineWarmupSchedule": "hilovit.train.optim",
    "PolySchedule": "hilovit.train.optim",
    "build_optimizer": "hilovit.train.optim",
    "build_param_groups": "hilovit.train.optim",
    "scale_lr": "hilovit.train.optim",
    "atomic_torch_save": "hilovit.train.state",
    "get_rng_state": "hilovit.train.state",
    "load_training_state": "hilovit.train.state",
    "set_rng_state": "hilovit.train.state",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hilovit.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
