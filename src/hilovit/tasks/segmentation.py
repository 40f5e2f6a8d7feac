"""Semantic segmentation: the task of the ``semfpn_*`` models (Semantic FPN on LITv2 and Swin).

Samples are ``(uint8 image, int64 label map)`` augmented one by one with the official mmseg
pipeline (:class:`~hilovit.data.seg_transforms.SegTrainTransform`: random rescale, crop with a cap
on the largest class, flip, photometric distortion, padding with the ignore label), each from a
generator seeded by ``(seed, epoch, index)``. The loss is the pixel-wise cross-entropy with the
ignore index; under DDP it is normalised by the labelled pixels of the global batch, so the
averaged gradients equal one process's on the whole batch. Evaluation (whole-image or sliding
window, :mod:`hilovit.tasks.segmentation_eval`) gives mIoU, mAcc and aAcc as mmseg computes them.
The defaults are the official ADE20K recipe: AdamW, lr 1e-4, weight decay 1e-4 on every parameter,
the poly schedule (power 0.9, min lr 1e-6) per iteration, no clipping, 512 x 512 crops.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from torch.utils.data import Subset

from hilovit.options import OptionError
from hilovit.tasks.base import MicroBatch, Run, Task, image_export_spec
from hilovit.train.config import (
    TrainConfig,
    flag,
    fraction,
    image_size,
    non_negative_int,
    number,
    option,
    pair,
    positive_int,
    text,
)

__all__ = ["SegmentationConfig", "SegmentationTask", "TASK", "FASHION_SCENES_NAMES"]

FASHION_SCENES_NAMES = ("fashion-scenes", "fashion_scenes", "fashionscenes")


def _classes(value: Any, name: str) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not value:
        raise OptionError(f"{{{name}}}={value!r}: expected a list of class names")
    return [str(c) for c in value]


@dataclass
class SegmentationConfig(TrainConfig):
    """A segmentation run: the shared options (:class:`~hilovit.train.config.TrainConfig`) and these.

    Attributes:
        num_classes, classes: for mask folders (required there, one of the two).
        poly_power: the poly schedule ``lr_t = (lr - min_lr) * (1 - t / T) ** poly_power + min_lr``.
        warmup_iters, warmup_ratio: linear warm-up from ``lr * warmup_ratio`` (mmcv's; 0 = none).
        crop_size: (height, width) of the training crops; img_scale: (long, short) edge bound of the
            random rescale (None: ``(4 * crop, crop)``, the official 2048x512 for 512 crops);
            ratio_range, cat_max_ratio, flip_prob, photometric: the rest of the official pipeline.
        eval_scale: (long, short) rescale before whole-image inference (None: ``img_scale``).
        ignore_index: the label left out of the loss and the metrics.
        predictions: test scenes drawn in ``predictions.png`` (0: none).

    Without a recipe, a run on ``fashion-scenes`` starts from the packaged ``fashion-scenes``
    recipe (128x128 crops, the demo's schedule), not these ADE20K defaults.
    """

    task = "segmentation"

    model: str = option("semfpn_litv2_s", text("a segmentation model name"))
    data: str = option("fashion-scenes", text("'fashion-scenes' or a folder"))
    output: str = option("runs/seg", text("a folder"))
    batch_size: int = option(16, positive_int())
    lr: float = option(1e-4, number(0.0, min_open=True))
    min_lr: float = option(1e-6, number())
    weight_decay: float = option(1e-4, number())
    log_interval: int = option(20, positive_int())
    num_classes: Optional[int] = option(None, positive_int(allow_none=True))
    classes: Optional[List[str]] = option(None, _classes)
    poly_power: float = option(0.9, number(0.0, min_open=True))
    warmup_iters: int = option(0, non_negative_int())
    warmup_ratio: float = option(1e-6, number())
    crop_size: Tuple[int, int] = option((512, 512), image_size(as_pair=True))
    img_scale: Optional[Tuple[int, int]] = option(None, image_size(allow_none=True, as_pair=True))
    ratio_range: Optional[Tuple[float, float]] = option((0.5, 2.0), pair(float, 0.0, allow_none=True))
    cat_max_ratio: float = option(0.75, number(0.0, maximum=1.0))
    flip_prob: float = option(0.5, fraction(include_one=True))
    photometric: bool = option(True, flag())
    eval_scale: Optional[Tuple[int, int]] = option(None, image_size(allow_none=True, as_pair=True))
    ignore_index: int = option(255, non_negative_int())
    predictions: int = option(4, non_negative_int())

    def validate(self) -> None:
        super().validate()
        if self.min_lr > self.lr:
            raise OptionError(f"{{min_lr}}={self.min_lr} is above {{lr}}={self.lr}")

    def augment_config(self):
        from hilovit.data.seg_transforms import SegAugmentConfig

        h, w = self.crop_size
        scale = self.img_scale or (4 * max(h, w), min(h, w))
        return SegAugmentConfig(crop_size=self.crop_size, img_scale=scale, ratio_range=self.ratio_range,
                                cat_max_ratio=self.cat_max_ratio, flip_prob=self.flip_prob,
                                photometric=self.photometric, ignore_index=self.ignore_index)

    def resolved_eval_scale(self) -> Tuple[int, int]:
        return self.eval_scale or self.augment_config().img_scale


def _collate(samples):
    return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]).long()


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


class SegmentationTask(Task):
    name = "segmentation"
    config_class = SegmentationConfig
    metric_columns = ["epoch", "step", "lr", "train_loss", "train_pixel_acc", "eval_loss", "eval_miou", "eval_macc",
                      "eval_aacc", "eval_miou_ema", "images_per_second", "train_seconds", "eval_seconds",
                      "wall_seconds"]
    entry_points = {"run_eval": "hilovit.tasks.segmentation_eval:run_seg_eval",
                    "format_eval": "hilovit.tasks.segmentation_eval:format_seg_eval",
                    "predict_files": "hilovit.tasks.segmentation_predict:predict_files"}

    def default_recipe(self, options: Mapping[str, Any]) -> Optional[str]:
        data = str(options.get("data") or SegmentationConfig.data).strip().lower()
        return "fashion-scenes" if data in FASHION_SCENES_NAMES else None

    # ---- data and model
    def build_data(self, cfg: SegmentationConfig):
        from hilovit.data.seg_transforms import SegAugmentedDataset, SegTrainTransform
        from hilovit.data.segmentation import build_seg_datasets, is_ade20k_dir

        folder = Path(cfg.data).expanduser()
        if str(cfg.data).strip().lower() not in FASHION_SCENES_NAMES:
            if not folder.is_dir():
                build_seg_datasets(cfg.data)  # the ValueError naming the known data sets
            if not is_ade20k_dir(folder) and cfg.num_classes is None and cfg.classes is None:
                raise OptionError(f"{{data}}={cfg.data!r} is a folder of images and masks: give {{num_classes}} "
                                  "(labels 0..N-1, 255 ignored); the masks are not read up front")
        train_ds, eval_ds, info = build_seg_datasets(cfg.data, num_classes=cfg.num_classes, classes=cfg.classes,
                                                     seed=cfg.seed, val_split=cfg.val_split, data_dir=cfg.data_dir,
                                                     num_train=cfg.train_subset, num_test=cfg.eval_subset)
        if cfg.train_subset is not None and len(train_ds) > cfg.train_subset:
            train_ds = Subset(train_ds, range(cfg.train_subset))
        if cfg.eval_subset is not None and len(eval_ds) > cfg.eval_subset:
            eval_ds = Subset(eval_ds, range(cfg.eval_subset))
        aug = cfg.augment_config()
        if info.in_chans == 3 and info.mean:
            aug = dataclasses.replace(aug, pad_value=[int(round(255 * m)) for m in info.mean])
        return SegAugmentedDataset(train_ds, SegTrainTransform(aug), seed=cfg.seed), eval_ds, info

    def build_model(self, cfg: SegmentationConfig, info, weights, log) -> nn.Module:
        from hilovit.tasks.segmentation_eval import build_segmenter
        from hilovit.train.finetune import load_weights

        kwargs = dict(cfg.model_kwargs)
        if cfg.drop_path is not None:
            kwargs["drop_path_rate"] = cfg.drop_path
        model, _ = build_segmenter(cfg.model, info.num_classes, info.in_chans, kwargs)
        load_weights(model, weights, log)
        return model

    def describe(self, run: Run) -> str:
        n_params = sum(p.numel() for p in run.model.parameters())
        cfg, info = run.cfg, run.info
        return (f"{cfg.model}: {n_params / 1e6:.2f}M parameters, {info.num_classes} classes | {info.name}: "
                f"{len(run.train_ds)} training, {len(run.eval_ds)} {info.eval_split} samples, crops "
                f"{cfg.crop_size[0]}x{cfg.crop_size[1]}")

    def metadata(self, run: Run) -> Dict[str, str]:
        cfg = run.cfg
        return {"ignore_index": str(run.info.ignore_index), "crop_size": ",".join(map(str, cfg.crop_size)),
                "eval_scale": ",".join(map(str, cfg.resolved_eval_scale()))}

    # ---- optimisation: the official one, AdamW with weight decay on every parameter
    def build_optimizer(self, cfg: SegmentationConfig, model: nn.Module):
        from hilovit.train.optim import fused_adamw_supported

        params = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 fused=fused_adamw_supported(model))

    def build_schedule(self, cfg: SegmentationConfig, optimizer, epochs: int, steps_per_epoch: int):
        from hilovit.train.optim import PolySchedule

        return PolySchedule(optimizer, cfg.lr, epochs * steps_per_epoch, cfg.poly_power, cfg.min_lr,
                            cfg.warmup_iters, cfg.warmup_ratio)

    def describe_rate(self, cfg: SegmentationConfig, schedule) -> str:
        return f"AdamW lr {cfg.lr:.3g} poly {cfg.poly_power:g}"

    # ---- the loop
    def train_batches(self, run: Run):
        from hilovit.train.loaders import IndexedBatches

        env = run.env
        return IndexedBatches(run.train_ds, run.cfg.batch_size, _collate, run.cfg.seed, env.rank, env.world_size,
                              run.cfg.workers, env.device.type == "cuda")

    def prepare(self, run: Run) -> None:
        run.state["eval_batch"] = run.cfg.eval_batch_size or max(1, run.cfg.batch_size // run.env.world_size)

    def micro_batches(self, run: Run, batch, count: int) -> List[MicroBatch]:
        from hilovit.tasks.segmentation_eval import normalize_images
        from hilovit.train.distributed import all_reduce_sum

        images, labels = batch
        images, labels = images.to(run.device, non_blocking=True), labels.to(run.device, non_blocking=True)
        x = normalize_images(images, run.info.mean, run.info.std)
        # The loss of every part is a sum over its labelled pixels divided by those of the global batch (over
        # the processes, divided by their number: DDP averages), so the parts add up to the batch's mean.
        count_px = (labels != run.info.ignore_index).sum().double().cpu()
        all_reduce_sum(count_px)
        normalizer = max(float(count_px), 1.0) / run.env.world_size
        micro = max(1, min(count, x.shape[0]))
        return [MicroBatch(xc, lc, 1.0, {"normalizer": normalizer}) for xc, lc in zip(x.chunk(micro),
                                                                                        labels.chunk(micro))]

    def forward_loss(self, run: Run, forward: nn.Module, micro: MicroBatch):
        from hilovit.tasks.segmentation_eval import seg_cross_entropy

        labels, ignore = micro.targets, run.info.ignore_index
        logits = forward(micro.inputs)
        loss = seg_cross_entropy(logits.float(), labels, ignore, micro.extra["normalizer"])
        with torch.no_grad():
            valid = labels != ignore
            correct = ((logits.argmax(1) == labels) & valid).sum() if logits.shape[-2:] == labels.shape[-2:] else 0
            n = labels.shape[0]
            labelled = valid.sum()
            # the mean loss of the part's images, for the epoch's average
            shown = loss.detach() * micro.extra["normalizer"] / max(float(labelled), 1.0)
        return loss, torch.tensor([float(shown) * n, float(n), float(correct), float(labelled)], dtype=torch.float64)

    def stats_size(self) -> int:
        return 4  # loss * images, images, correct pixels, labelled pixels

    def progress(self, sums: torch.Tensor) -> Dict[str, float]:
        return {"loss": float(sums[0] / max(float(sums[1]), 1.0)),
                "pixel acc": float(100 * sums[2] / sums[3]) if sums[3] > 0 else 0.0}

    def epoch_stats(self, sums: torch.Tensor) -> Dict[str, Any]:
        return {"train_loss": float(sums[0] / sums[1]) if sums[1] > 0 else float("nan"),
                "train_pixel_acc": float(100 * sums[2] / sums[3]) if sums[3] > 0 else None}

    def samples_in(self, sums: torch.Tensor) -> int:
        return int(sums[1])

    def eval_batch_size(self, run: Run) -> int:
        return run.state["eval_batch"]

    def evaluate(self, run: Run, model: nn.Module) -> Dict[str, Any]:
        from hilovit.tasks.segmentation_eval import evaluate_segmentation

        info, env = run.info, run.env
        return evaluate_segmentation(model, run.eval_ds, info.num_classes, info.mean, info.std, info.ignore_index,
                                     info.classes, run.state["eval_batch"], run.cfg.resolved_eval_scale(),
                                     env.device, run.eval_dtype, env.rank, env.world_size)

    def eval_row(self, result: Mapping[str, Any]) -> Dict[str, Any]:
        return {"eval_loss": result["loss"], "eval_miou": result["miou"], "eval_macc": result["macc"],
                "eval_aacc": result["aacc"]}

    def describe_epoch(self, run: Run, row: Mapping[str, Any]) -> str:
        msg = (f"epoch {row['epoch']}/{run.cfg.epochs}: train loss {row['train_loss']:.4f} "
               f"({row['train_seconds']:.0f} s)")
        if "eval_miou" in row:
            msg += (f" | {run.info.eval_split} mIoU {_pct(row['eval_miou'])}% mAcc {_pct(row['eval_macc'])}% "
                    f"aAcc {_pct(row['eval_aacc'])}%")
        if "eval_miou_ema" in row:
            msg += f" | EMA mIoU {_pct(row['eval_miou_ema'])}%"
        return msg

    def summary(self, run: Run, result: Mapping[str, Any], ema_result: Mapping[str, Any]) -> Dict[str, Any]:
        classes = run.info.classes
        out = {"crop_size": list(run.cfg.crop_size), "test_miou": result["miou"], "test_macc": result["macc"],
               "test_aacc": result["aacc"], "test_loss": result["loss"],
               "eval_images_per_second": result["images_per_second"],
               "per_class_iou": dict(zip(classes, result["iou"])), "per_class_acc": dict(zip(classes, result["acc"]))}
        if ema_result:
            out["test_miou_ema"] = ema_result["miou"]
        return out

    def final_files(self, run: Run, out, result: Mapping[str, Any]) -> Dict[str, str]:
        if not run.cfg.predictions or not len(run.eval_ds):
            return {}
        from hilovit.tasks.segmentation_eval import infer_logits
        from hilovit.viz.segmentation import save_segmentation_grid

        model, info = run.model, run.info
        model.eval()
        rows = []
        for i in range(min(run.cfg.predictions, len(run.eval_ds))):
            image, label = run.eval_ds[i]
            logits = infer_logits(model, image.unsqueeze(0).to(run.device), info.mean, info.std, label.shape[-2:],
                                  run.cfg.resolved_eval_scale())
            rows.append((image, label, logits.argmax(1)[0].cpu()))
        path = save_segmentation_grid(rows, out / "predictions.png", info.classes, ignore_index=info.ignore_index,
                                      title=f"{run.cfg.model} on {info.name} ({info.eval_split})")
        return {"predictions": str(path)} if path is not None else {}

    def format_summary(self, summary: Mapping[str, Any]) -> List[str]:
        if "test_miou" not in summary:
            return []
        return [f"{summary['model']} on {summary['dataset']} ({summary['eval_split']}, {summary['eval_images']} "
                f"images): mIoU {_pct(summary['test_miou'])}%  mAcc {_pct(summary['test_macc'])}%  "
                f"aAcc {_pct(summary['test_aacc'])}%"]

    # ---- inference
    eval_options = ("checkpoint", "data", "model", "num_classes", "data_dir", "val_split", "seed", "eval_subset",
                    "batch_size", "eval_scale", "amp", "device", "threads", "workers", "output", "mode", "crop_size",
                    "stride", "overwrite", "progress")
    predict_options = ("model", "checkpoint", "pretrained", "output", "eval_scale", "device", "max_pixels")
    # traced at the first size, verified at each: multiples of neither 32 nor any window among them
    export_sizes = ((128, 128), (100, 70), (77, 129), (33, 33))

    def format_predictions(self, results, as_json: bool = False) -> str:
        import json

        ok = [r for r in results if not r.get("error")]
        if as_json:
            return json.dumps(results, indent=2)
        lines = []
        for r in ok:
            shares = ", ".join(f"{k} {v:.1f}%" for k, v in list(r["class_shares"].items())[:5])
            lines.append(f"{r['image']}: {r['height']}x{r['width']} -> {r['labels']}, {r['overlay']} ({shares})")
        return "\n".join(lines)

    def export_spec(self, model: nn.Module, sizes, dynamic_batch: bool, in_chans: int):
        sizes = tuple(sizes) if sizes is not None else self.export_sizes
        if len(sizes) < 2 or len(set(sizes)) < 2:
            raise OptionError(f"{{sizes}}={list(sizes)}: a segmenter is verified at two different sizes at least "
                              "(the first is traced)")
        spec = image_export_spec(model, in_chans, sizes, True, True, "logits")  # batch, height and width symbolic
        spec.notes.append("input (batch, C, height, width) of any size, normalised with the model's mean/std; "
                          "output: logits at the input size (argmax over classes gives the label map)")
        return spec


TASK = SegmentationTask()
