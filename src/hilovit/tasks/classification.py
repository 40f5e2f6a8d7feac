"""Image classification: the task of every ``litv2_*`` and ``swin_*`` classifier.

Samples are ``(uint8 image, int64 class)``; a step moves the uint8 batch to the device, augments it
there (:class:`~hilovit.train.loaders.BatchPipeline`: kornia crops, flips, RandAugment, erasing),
mixes it (Mixup/CutMix into soft targets with label smoothing) and trains with the soft-target
cross-entropy. Evaluation gives top-1, top-5, loss, per-class accuracy and the confusion matrix.
The defaults are the official LITv2/Swin recipe (AdamW, base rate 5e-4 per 512 images, weight decay
0.05 except on norms, biases and position tables, cosine with warm-up, clipping at 5, label
smoothing 0.1) with the augmentation and length scaled down for small images.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from hilovit.data import AugmentConfig
from hilovit.options import OptionError
from hilovit.tasks.base import MicroBatch, Run, Task, image_export_spec
from hilovit.train.config import (
    TrainConfig,
    choice,
    fraction,
    image_size,
    number,
    option,
    positive_int,
    text,
)

__all__ = ["ClassificationConfig", "ClassificationTask", "TASK", "default_augment"]

_OPTIMIZERS = ("adamw", "sgd")


def default_augment() -> AugmentConfig:
    """The default training augmentation: random resized crop of 60-100% of the area, horizontal flip."""
    return AugmentConfig(scale=(0.6, 1.0))


def _augment(value: Any, name: str) -> Optional[AugmentConfig]:
    if value is None or value is False or value == "none":
        return None
    if isinstance(value, AugmentConfig):
        return value
    if value is True:
        return AugmentConfig()
    if isinstance(value, Mapping):
        known = {f.name for f in fields(AugmentConfig)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise OptionError(f"{{{name}}} has unknown option(s) {unknown}; known: {', '.join(sorted(known))}")
        vals = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return dataclasses.replace(default_augment(), **vals)  # fields not given keep the defaults
    raise OptionError(f"{{{name}}}={value!r}: expected a mapping of AugmentConfig fields, 'none' or null")


def _betas(value: Any, name: str) -> Tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise OptionError(f"{{{name}}}={value!r}: expected two numbers") from None
    return a, b


@dataclass
class ClassificationConfig(TrainConfig):
    """A classification run: the shared options (:class:`~hilovit.train.config.TrainConfig`) and these.

    Attributes:
        lr: the learning rate itself; None derives it as ``base_lr * batch_size / 512``.
        base_lr, min_lr, warmup_lr: rates for a batch of 512, scaled linearly to ``batch_size``.
        warmup_epochs: linear warm-up length (may be fractional).
        optimizer: ``'adamw'`` or ``'sgd'``; betas, eps, momentum: their settings.
        offset_lr_scale: LITv2's rate multiplier for the deformable offsets (official 0.01).
        label_smoothing, mixup, cutmix, mixup_prob, mixup_switch_prob: targets and mixing.
        augment: an :class:`~hilovit.data.AugmentConfig` (or a mapping of its fields); None = none.
        img_size: model input side (None: the model's default, e.g. 28 for ``litv2_nano``).
        in_chans: model input channels (None: the data's, 1 for Fashion-MNIST).
        layer_decay: layer-wise learning-rate decay in (0, 1] (BEiT/timm); None = off.
    """

    task = "classification"

    model: str = option("litv2_nano", text("a model name"))
    data: str = option("fashion-mnist", text("'fashion-mnist' or a folder"))
    batch_size: int = option(128, positive_int())
    min_lr: float = option(5e-6, number())
    clip_grad: Optional[float] = option(5.0, number(allow_none=True))
    base_lr: float = option(5e-4, number(0.0, min_open=True))
    warmup_lr: float = option(5e-7, number())
    warmup_epochs: float = option(1.0, number())
    optimizer: str = option("adamw", choice(*_OPTIMIZERS))
    betas: Tuple[float, float] = option((0.9, 0.999), _betas)
    eps: float = option(1e-8, number())
    momentum: float = option(0.9, number())
    offset_lr_scale: float = option(0.01, number())
    label_smoothing: float = option(0.1, fraction())
    mixup: float = option(0.0, number())
    cutmix: float = option(0.0, number())
    mixup_prob: float = option(1.0, fraction(include_one=True))
    mixup_switch_prob: float = option(0.5, fraction(include_one=True))
    augment: Optional[AugmentConfig] = option(check=_augment, default_factory=default_augment)
    img_size: Optional[int] = option(None, image_size(allow_none=True))
    in_chans: Optional[int] = option(None, positive_int(allow_none=True))
    layer_decay: Optional[float] = option(None, number(0.0, min_open=True, maximum=1.0, allow_none=True))

    @classmethod
    def normalize(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        """timm's ``initial_checkpoint`` as ``pretrained``; a published-weights name sets ``model``;
        ``augment: default`` is the default augmentation."""
        values = dict(values)
        if "initial_checkpoint" in values:
            alias = values.pop("initial_checkpoint")
            if alias is not None and values.get("pretrained") not in (None, alias):
                raise OptionError(f"{{pretrained}}={values['pretrained']!r} and initial_checkpoint={alias!r} name "
                                  "two different sources of weights; give one")
            if alias is not None:
                values["pretrained"] = alias
        if "model" not in values:
            from hilovit.train.finetune import model_of_weights

            named = model_of_weights(values.get("pretrained"))
            if named is not None:
                values["model"] = named
        if values.get("augment", None) == "default":
            values.pop("augment")
        return values

    def validate(self) -> None:
        super().validate()
        if self.warmup_epochs > self.epochs:
            raise OptionError(f"{{warmup_epochs}}={self.warmup_epochs} is longer than {{epochs}}={self.epochs}")

    def scaled_lr(self) -> Tuple[float, float, float]:
        """``(lr, min_lr, warmup_lr)`` for this batch size (``lr`` as given when set explicitly)."""
        from hilovit.train.optim import scale_lr

        lr = self.lr if self.lr is not None else scale_lr(self.base_lr, self.batch_size)
        ratio = lr / self.base_lr  # min_lr and warmup_lr keep their proportion to base_lr
        return lr, self.min_lr * ratio, self.warmup_lr * ratio


# --------------------------------------------------------------------------- the task
class ClassificationTask(Task):
    name = "classification"
    config_class = ClassificationConfig
    metric_columns = ["epoch", "step", "lr", "train_loss", "train_top1", "eval_loss", "eval_top1", "eval_top5",
                      "eval_top1_ema", "eval_top5_ema", "images_per_second", "train_seconds", "eval_seconds",
                      "wall_seconds"]
    entry_points = {"run_eval": "hilovit.tasks.classification_eval:run_eval",
                    "format_eval": "hilovit.tasks.classification_eval:format_eval",
                    "predict_files": "hilovit.tasks.classification_predict:predict_files"}

    # ---- data and model
    def build_data(self, cfg: ClassificationConfig):
        from hilovit.data import build_datasets
        from hilovit.tasks.classification_eval import default_img_size

        img_size = cfg.img_size if cfg.img_size is not None else default_img_size(cfg.model)
        train_ds, eval_ds, info = build_datasets(cfg.data, img_size, data_dir=cfg.data_dir, val_split=cfg.val_split,
                                                 seed=cfg.seed, train_subset=cfg.train_subset)
        if cfg.eval_subset is not None:
            eval_ds = eval_ds.select(range(min(cfg.eval_subset, len(eval_ds))))
        return train_ds, eval_ds, info

    def build_model(self, cfg: ClassificationConfig, info, weights, log) -> nn.Module:
        from hilovit.models import create_model
        from hilovit.train.finetune import load_weights

        kwargs = dict(cfg.model_kwargs)
        kwargs.update(num_classes=info.num_classes, in_chans=cfg.in_chans or info.in_chans)
        if cfg.img_size is not None:
            kwargs["img_size"] = cfg.img_size
        if cfg.drop_path is not None:
            kwargs["drop_path_rate"] = cfg.drop_path
        name = weights.model if weights is not None else cfg.model
        try:
            model = create_model(name, **kwargs)
        except TypeError as e:
            raise ValueError(f"model {name!r} does not accept these options {sorted(kwargs)}: {e}") from e
        load_weights(model, weights, log)
        return model

    def _img_size(self, run: Run) -> int:
        cfg = (getattr(run.model, "pretrained_cfg", None) or {})
        return run.cfg.img_size or int(cfg.get("input_size", (0, 224))[-1])

    def describe(self, run: Run) -> str:
        n_params = sum(p.numel() for p in run.model.parameters())
        size, chans, info = run.state["img_size"], run.state["in_chans"], run.info
        return (f"{run.cfg.model}: {n_params / 1e6:.2f}M parameters, input {chans}x{size}x{size}, "
                f"{info.num_classes} classes | {info.name}: {len(run.train_ds)} training, {len(run.eval_ds)} "
                f"{info.eval_split} images")

    def metadata(self, run: Run) -> Dict[str, str]:
        return {"img_size": str(run.state["img_size"])}

    # ---- optimisation
    def build_optimizer(self, cfg: ClassificationConfig, model: nn.Module):
        from hilovit.train.optim import build_optimizer

        lr, _, _ = cfg.scaled_lr()
        return build_optimizer(model, cfg.optimizer, lr, cfg.weight_decay, cfg.betas, cfg.eps, cfg.momentum,
                               cfg.offset_lr_scale, cfg.layer_decay)

    def build_schedule(self, cfg: ClassificationConfig, optimizer, epochs: int, steps_per_epoch: int):
        from hilovit.train.optim import CosineWarmupSchedule

        lr, min_lr, warmup_lr = cfg.scaled_lr()
        total = epochs * steps_per_epoch
        warmup = min(total, int(round(cfg.warmup_epochs * steps_per_epoch)))
        return CosineWarmupSchedule(optimizer, lr, total, warmup, min_lr, warmup_lr)

    def describe_rate(self, cfg: ClassificationConfig, schedule) -> str:
        return f"lr {schedule.base_lr:.3g} (warm-up {schedule.warmup_steps} step{'s' * (schedule.warmup_steps != 1)})"

    # ---- the loop
    def train_batches(self, run: Run):
        from hilovit.train.loaders import TrainBatches

        env = run.env
        return TrainBatches(run.train_ds, run.cfg.batch_size, run.cfg.seed, env.rank, env.world_size,
                            run.cfg.workers, env.device.type == "cuda")

    def prepare(self, run: Run) -> None:
        from hilovit.data import Mixup
        from hilovit.train.loaders import BatchPipeline, EvalBatches, crop_in_workers

        cfg, info, env = run.cfg, run.info, run.env
        in_chans, img_size = cfg.in_chans or info.in_chans, self._img_size(run)
        pipeline = BatchPipeline(in_chans, img_size, info.mean, info.std, cfg.augment).to(env.device)
        crop_in_workers(run.train_ds, pipeline)  # image folders: the random-resized crop of the full image
        eval_batch = cfg.eval_batch_size or max(1, 2 * cfg.batch_size // env.world_size)
        run.state.update(
            img_size=img_size, in_chans=in_chans, pipeline=pipeline, eval_batch=eval_batch,
            mean=pipeline.normalize.mean.flatten().tolist(), std=pipeline.normalize.std.flatten().tolist(),
            eval_pipeline=BatchPipeline(in_chans, img_size, info.mean, info.std, None).to(env.device),
            mixup=Mixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, cfg.label_smoothing,
                        num_classes=info.num_classes),
            eval_batches=EvalBatches(run.eval_ds, eval_batch, env.rank, env.world_size, cfg.workers,
                                     env.device.type == "cuda"),
        )

    def set_epoch(self, run: Run, epoch: int) -> None:
        run.state["pipeline"].train()

    def micro_batches(self, run: Run, batch, count: int) -> List[MicroBatch]:
        images, targets = batch
        images = images.to(run.device, non_blocking=True)
        targets = targets.to(run.device, non_blocking=True)
        with torch.no_grad():
            x = run.state["pipeline"](images)
            x, soft = run.state["mixup"](x, targets)
        micro = max(1, min(count, x.shape[0]))
        return [MicroBatch(xc, (sc, tc), xc.shape[0] / x.shape[0])
                for xc, sc, tc in zip(x.chunk(micro), soft.chunk(micro), targets.chunk(micro))]

    def forward_loss(self, run: Run, forward: nn.Module, micro: MicroBatch):
        from hilovit.data import soft_target_cross_entropy

        soft, targets = micro.targets
        logits = forward(micro.inputs)
        loss = soft_target_cross_entropy(logits.float(), soft)
        n = micro.inputs.shape[0]
        correct = (logits.detach().argmax(1) == targets).sum()
        return loss, torch.stack([loss.detach().double().cpu() * n, correct.double().cpu(),
                                  torch.tensor(float(n), dtype=torch.float64)])

    def stats_size(self) -> int:
        return 3  # loss * n, correct, n

    def progress(self, sums: torch.Tensor) -> Dict[str, float]:
        n = max(float(sums[2]), 1.0)
        return {"loss": float(sums[0]) / n, "acc": 100.0 * float(sums[1]) / n}

    def epoch_stats(self, sums: torch.Tensor) -> Dict[str, Any]:
        n = float(sums[2])
        return {"train_loss": float(sums[0]) / n, "train_top1": 100.0 * float(sums[1]) / n}

    def samples_in(self, sums: torch.Tensor) -> int:
        return int(sums[2])

    def eval_batch_size(self, run: Run) -> int:
        return run.state["eval_batch"]

    def evaluate(self, run: Run, model: nn.Module) -> Dict[str, Any]:
        from hilovit.tasks.classification_eval import evaluate

        return evaluate(model, run.state["eval_batches"], run.state["eval_pipeline"], run.info.num_classes,
                        run.device, run.eval_dtype)

    def eval_row(self, result: Mapping[str, Any]) -> Dict[str, Any]:
        return {"eval_loss": result["loss"], "eval_top1": result["top1"], "eval_top5": result["top5"]}

    def describe_epoch(self, run: Run, row: Mapping[str, Any]) -> str:
        msg = (f"epoch {row['epoch']}/{run.cfg.epochs}: train loss {row['train_loss']:.4f} acc "
               f"{row['train_top1']:.2f}% ({row['images_per_second'] or 0:.0f} img/s, {row['train_seconds']:.0f} s)")
        if "eval_top1" in row:
            k = min(5, run.info.num_classes)
            msg += (f" | {run.info.eval_split} loss {row['eval_loss']:.4f} top-1 {row['eval_top1']:.2f}% "
                    f"top-{k} {row['eval_top5']:.2f}%")
        if "eval_top1_ema" in row:
            msg += f" | EMA top-1 {row['eval_top1_ema']:.2f}%"
        return msg

    def after_epoch(self, run: Run, print_fn, train_batches) -> None:
        from hilovit.train.loaders import report_skipped_images

        report_skipped_images(print_fn, train_batches, run.state["eval_batches"])

    def summary(self, run: Run, result: Mapping[str, Any], ema_result: Mapping[str, Any]) -> Dict[str, Any]:
        out = {
            "test_top1": result["top1"], "test_top5": result["top5"], "test_topk": result.get("top5_k", 5),
            "test_loss": result["loss"], "eval_images_per_second": result["images_per_second"],
            "per_class_accuracy": dict(zip(run.info.classes, result["per_class_accuracy"])),
        }
        if ema_result:
            out.update({"test_top1_ema": ema_result["top1"], "test_top5_ema": ema_result["top5"],
                        "test_loss_ema": ema_result["loss"]})
        return out

    def final_files(self, run: Run, out, result: Mapping[str, Any]) -> Dict[str, str]:
        from hilovit.viz.plots import plot_confusion_matrix

        plot_confusion_matrix(result["confusion"], list(run.info.classes), out / "confusion.png",
                              title=f"{run.cfg.model} on {run.info.name} ({run.info.eval_split}): "
                                    f"top-1 {result['top1']:.2f}%")
        return {"confusion": str(out / "confusion.png")}

    def format_summary(self, summary: Mapping[str, Any]) -> List[str]:
        if "test_top1" not in summary:
            return []
        k = summary.get("test_topk", 5)
        lines = [f"{summary['model']} on {summary['dataset']} ({summary['eval_split']}, {summary['eval_images']} "
                 f"images): top-1 {summary['test_top1']:.2f}%  top-{k} {summary['test_top5']:.2f}%  "
                 f"loss {summary['test_loss']:.4f}"]
        if "test_top1_ema" in summary:
            lines.append(f"EMA weights: top-1 {summary['test_top1_ema']:.2f}%  top-{k} {summary['test_top5_ema']:.2f}%")
        return lines

    # ---- inference
    eval_options = ("model", "checkpoint", "pretrained", "data", "data_dir", "batch_size", "img_size", "in_chans",
                    "eval_subset", "val_split", "seed", "amp", "device", "workers", "threads", "output",
                    "confusion_png", "use_ema", "progress", "default_output", "overwrite", "crop_pct",
                    "interpolation")
    predict_options = ("model", "checkpoint", "pretrained", "topk", "batch_size", "device", "mean", "std")

    def format_predictions(self, results, as_json: bool = False) -> str:
        import json

        from hilovit.tasks.classification_predict import format_predictions

        if as_json:
            return json.dumps([r.to_dict() for r in results], indent=2)
        return format_predictions(results)

    def export_spec(self, model: nn.Module, sizes, dynamic_batch: bool, in_chans: int):
        if sizes is None:
            cfg = getattr(model, "pretrained_cfg", None) or {}
            sizes = [tuple(int(v) for v in cfg.get("input_size", (in_chans, 224, 224))[1:])]
        if len(sizes) != 1:
            raise OptionError(f"a classifier is exported at one input size, fixed in the graph; got {len(sizes)} "
                              "sizes (give {img_size} H W)")
        name = "logits" if getattr(model, "num_classes", 1) else "features"
        spec = image_export_spec(model, in_chans, sizes, dynamic_batch, False, name)
        spec.notes.append(f"input {in_chans}x{sizes[0][0]}x{sizes[0][1]} fixed in the graph, normalised with the "
                          "model's mean/std; output: class logits (softmax is left to the caller)")
        return spec


TASK = ClassificationTask()
