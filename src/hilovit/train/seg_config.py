"""The configuration of a segmentation training run and the poly learning-rate schedule."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

import torch

__all__ = ["SegTrainConfig", "PolySchedule"]


def _pair(value, name: str) -> Optional[Tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"--{name.replace('_', '-')}={value!r}: expected one or two positive integers") from None
    if a < 1 or b < 1:
        raise ValueError(f"--{name.replace('_', '-')}={value!r}: expected positive integers")
    return a, b


@dataclass
class SegTrainConfig:
    """One segmentation training run. Defaults are the official LITv2 + Semantic FPN ADE20K recipe.

    Attributes:
        model: a registered segmentation model (``semfpn_litv2_s``, ``semfpn_litv2_nano``, ...).
        data: ``'fashion-scenes'``, an ADE20K folder or an ``images/`` + ``masks/`` folder.
        num_classes, classes: for mask folders (required there, one of the two).
        output: folder of ``last.pt``, ``model.safetensors``, ``metrics.csv``, ``summary.json``.
        epochs, batch_size: passes over the training set; samples per step, all processes together.
        lr, min_lr, weight_decay, poly_power: AdamW and the poly schedule
            ``lr_t = (lr - min_lr) * (1 - t / T) ** poly_power + min_lr`` per iteration.
        warmup_iters, warmup_ratio: linear warm-up from ``lr * warmup_ratio`` (mmcv's; 0 = none).
        clip_grad: maximum gradient norm (None: no clipping, as the official config).
        crop_size: (height, width) of the training crops; img_scale: (long, short) edge bound of the
            random rescale (None: ``(4 * crop, crop)``, the official 2048x512 for 512 crops);
            ratio_range, cat_max_ratio, flip_prob, photometric: the rest of the official pipeline.
        eval_scale: (long, short) rescale before whole-image inference (None: ``img_scale``).
        ignore_index: the label left out of the loss and the metrics.
        train_subset, eval_subset: the first N samples (for fashion-scenes, the number of scenes).
        amp, device, threads, workers, seed, eval_interval, eval_batch_size, log_interval, progress,
        resume, overwrite, stop_at_epoch, data_dir, val_split, model_kwargs: as :class:`TrainConfig`.
        predictions: test scenes drawn in ``predictions.png`` (0: none).

    :func:`train_segmentation` called on ``fashion-scenes`` without a configuration or recipe starts
    from the packaged ``fashion-scenes`` recipe (128x128 crops, the demo's schedule), not these
    ADE20K defaults.
    """

    model: str = "semfpn_litv2_s"
    data: str = "fashion-scenes"
    num_classes: Optional[int] = None
    classes: Optional[List[str]] = None
    output: str = "runs/seg"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-4
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_ratio: float = 1e-6
    clip_grad: Optional[float] = None
    crop_size: Tuple[int, int] = (512, 512)
    img_scale: Optional[Tuple[int, int]] = None
    ratio_range: Optional[Tuple[float, float]] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    eval_scale: Optional[Tuple[int, int]] = None
    ignore_index: int = 255
    train_subset: Optional[int] = None
    eval_subset: Optional[int] = None
    data_dir: Optional[str] = None
    val_split: float = 0.0
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    amp: str = "auto"
    device: str = "auto"
    seed: int = 0
    workers: int = 2
    threads: Optional[int] = None
    eval_interval: int = 1
    eval_batch_size: Optional[int] = None
    log_interval: int = 20
    progress: str = "auto"
    resume: bool = False
    overwrite: bool = False
    stop_at_epoch: Optional[int] = None
    predictions: int = 4

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> SegTrainConfig:
        known = {f.name for f in fields(cls)}
        values = {str(k).replace("-", "_"): v for k, v in values.items() if k != "task"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown segmentation training option(s) {unknown}; known: {', '.join(sorted(known))}")
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"task": "segmentation"}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else (dict(v) if isinstance(v, dict) else v)
        return out

    def validate(self) -> None:
        def positive_int(name: str, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"--{name.replace('_', '-')}={v!r}: expected a positive integer")

        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"--model={self.model!r}: expected a registered segmentation model name")
        if not isinstance(self.data, (str, os.PathLike)) or not str(self.data):
            raise ValueError(f"--data={self.data!r}: expected 'fashion-scenes' or a folder")
        self.data, self.output = str(self.data), str(self.output)
        for name in ("epochs", "batch_size", "eval_interval", "log_interval"):
            positive_int(name)
        for name in ("num_classes", "train_subset", "eval_subset", "threads", "eval_batch_size", "stop_at_epoch"):
            positive_int(name, allow_none=True)
        for name in ("lr", "poly_power"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"--{name.replace('_', '-')}={v!r}: expected a positive number")
        for name in ("min_lr", "weight_decay", "warmup_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"--{name.replace('_', '-')}={v!r}: expected a number >= 0")
        if self.min_lr > self.lr:
            raise ValueError(f"--min-lr={self.min_lr} is above --lr={self.lr}")
        if isinstance(self.warmup_iters, bool) or not isinstance(self.warmup_iters, int) or self.warmup_iters < 0:
            raise ValueError(f"--warmup-iters={self.warmup_iters!r}: expected an integer >= 0")
        if self.clip_grad is not None and not self.clip_grad >= 0:
            raise ValueError(f"--clip-grad={self.clip_grad!r}: expected a number >= 0")
        self.crop_size = _pair(self.crop_size, "crop_size")
        self.img_scale = _pair(self.img_scale, "img_scale")
        self.eval_scale = _pair(self.eval_scale, "eval_scale")
        if self.ratio_range is not None:
            self.ratio_range = tuple(float(v) for v in self.ratio_range)
        if self.classes is not None:
            self.classes = [str(c) for c in self.classes]
        if not isinstance(self.ignore_index, int) or self.ignore_index < 0:
            raise ValueError(f"--ignore-index={self.ignore_index!r}: expected a non-negative integer")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"--amp={self.amp!r}: choose one of auto, bf16, fp16, off")
        if self.progress not in ("auto", "bar", "log", "off"):
            raise ValueError(f"--progress={self.progress!r}: choose one of auto, bar, log, off")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed={self.seed!r}: expected an integer >= 0")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise ValueError(f"--workers={self.workers!r}: expected an integer >= 0")
        if isinstance(self.predictions, bool) or not isinstance(self.predictions, int) or self.predictions < 0:
            raise ValueError(f"--predictions={self.predictions!r}: expected an integer >= 0")
        if not isinstance(self.model_kwargs, dict):
            raise ValueError(f"model_kwargs={self.model_kwargs!r}: expected a mapping of constructor arguments")
        if self.stop_at_epoch is not None and self.stop_at_epoch > self.epochs:
            raise ValueError(f"--stop-at-epoch={self.stop_at_epoch} is beyond --epochs={self.epochs}")
        if self.resume and self.overwrite:
            raise ValueError("--resume and --overwrite contradict each other; choose one")

    def augment_config(self):
        from hilovit.data.seg_transforms import SegAugmentConfig

        h, w = self.crop_size
        scale = self.img_scale or (4 * max(h, w), min(h, w))
        return SegAugmentConfig(crop_size=self.crop_size, img_scale=scale, ratio_range=self.ratio_range,
                                cat_max_ratio=self.cat_max_ratio, flip_prob=self.flip_prob,
                                photometric=self.photometric, ignore_index=self.ignore_index)

    def resolved_eval_scale(self) -> Tuple[int, int]:
        return self.eval_scale or self.augment_config().img_scale


class PolySchedule:
    """mmcv's per-iteration ``poly`` policy with an optional linear warm-up.

    ``lr(t) = (base_lr - min_lr) * (1 - t / total) ** power + min_lr``; during the first
    ``warmup_iters`` steps it is multiplied by ``1 - (1 - t / warmup_iters) * (1 - warmup_ratio)``.
    The state is the step count alone, so a resumed run follows the same rates.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, base_lr: float, total_steps: int, power: float = 0.9,
                 min_lr: float = 0.0, warmup_iters: int = 0, warmup_ratio: float = 1e-6) -> None:
        if total_steps < 1:
            raise ValueError(f"PolySchedule: total_steps={total_steps}, expected >= 1")
        self.optimizer = optimizer
        self.base_lr, self.min_lr, self.power = float(base_lr), float(min_lr), float(power)
        self.total_steps, self.warmup_iters, self.warmup_ratio = int(total_steps), int(warmup_iters), warmup_ratio
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int) -> float:
        t = min(max(step, 0), self.total_steps)
        lr = (self.base_lr - self.min_lr) * (1.0 - t / self.total_steps) ** self.power + self.min_lr
        if step < self.warmup_iters:
            lr *= 1.0 - (1.0 - step / self.warmup_iters) * (1.0 - self.warmup_ratio)
        return lr

    def _apply(self) -> None:
        lr = self.lr_at(self.last_step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def step(self, step: Optional[int] = None) -> None:
        self.last_step = self.last_step + 1 if step is None else int(step)
        self._apply()

    def get_last_lr(self) -> float:
        return self.lr_at(self.last_step)

    def state_dict(self) -> Dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.step(int(state["last_step"]))
