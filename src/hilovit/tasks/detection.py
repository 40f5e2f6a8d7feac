"""Object detection (and instance segmentation): the task of the ``retinanet_*`` and ``mask_rcnn_*`` models.

Samples are ``(uint8 image, target)`` with the target's ``boxes`` (x1 y1 x2 y2 pixels), ``labels``
and, for instance data, ``masks``; images of different sizes are batched by the model's
preprocessor (normalised, padded bottom/right to a multiple of 32). Training augmentation is
the official one (a keep-ratio resize into the training scale and a horizontal flip, boxes and
masks transformed with the image; :mod:`hilovit.data.det_transforms`), each sample from a
generator seeded by ``(seed, epoch, index)``. The loss is the model's own (RetinaNet: focal loss
and L1 on the deltas of the assigned anchors; Mask R-CNN: the RPN, box and mask losses).
Evaluation is COCO box AP (and mask AP) through ``pycocotools.COCOeval``
(:mod:`hilovit.tasks.detection_eval`). The defaults are the official LITv2 COCO 1x recipe: AdamW,
lr 1e-4, weight decay 1e-4 (none on norms and biases), a linear warm-up of 500 steps from 0.001 of
the rate, then the rate divided by 10 after 8 and 11 of 12 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.options import OptionError, check_ints
from hilovit.tasks.base import ExportSpec, MicroBatch, Run, Task
from hilovit.train.config import (
    TrainConfig,
    fraction,
    image_size,
    non_negative_int,
    number,
    option,
    pair,
    positive_int,
    text,
)

__all__ = ["DetectionConfig", "DetectionTask", "TASK"]

FASHION_SCENES_NAMES = ("fashion-scenes", "fashion_scenes", "fashionscenes")


def _epochs(value: Any, name: str) -> Optional[Tuple[int, ...]]:
    if value is None:
        return None
    return tuple(sorted(check_ints(value, name, minimum=1, allow_empty=True)))  # epochs


@dataclass
class DetectionConfig(TrainConfig):
    """A detection run: the shared options (:class:`~hilovit.train.config.TrainConfig`) and these.

    Attributes:
        train_scale: (long, short) edge bound of the training resize (keep-ratio; the official
            (1333, 800)); ratio_range: a random factor on it per sample (None: fixed).
        flip_prob: probability of a horizontal flip.
        eval_scale: (long, short) test-time resize (None: the model's ``test_scale``).
        warmup_iters, warmup_ratio: linear warm-up steps from ``lr * warmup_ratio``.
        step_epochs: the epochs after which the rate is multiplied by ``gamma`` (None: after 8/12
            and 11/12 of the run, the 1x schedule's proportions).
        predictions: evaluation images drawn in ``predictions.png`` (0: none).
    """

    task = "detection"

    model: str = option("retinanet_litv2_nano", text("a detection model name"))
    data: str = option("fashion-scenes", text("'fashion-scenes' or a COCO folder"))
    output: str = option("runs/det", text("a folder"))
    batch_size: int = option(16, positive_int())
    lr: float = option(1e-4, number(0.0, min_open=True))
    weight_decay: float = option(1e-4, number())
    log_interval: int = option(20, positive_int())
    train_scale: Optional[Tuple[int, int]] = option((1333, 800), image_size(allow_none=True, as_pair=True))
    ratio_range: Optional[Tuple[float, float]] = option(None, pair(float, 0.0, allow_none=True))
    flip_prob: float = option(0.5, fraction(include_one=True))
    eval_scale: Optional[Tuple[int, int]] = option(None, image_size(allow_none=True, as_pair=True))
    warmup_iters: int = option(500, non_negative_int())
    warmup_ratio: float = option(0.001, number())
    step_epochs: Optional[Tuple[int, ...]] = option(None, _epochs)
    gamma: float = option(0.1, number(0.0, min_open=True))
    predictions: int = option(4, non_negative_int())

    def resolved_steps(self) -> Tuple[int, ...]:
        if self.step_epochs is not None:
            return self.step_epochs
        return tuple(sorted({max(1, round(self.epochs * 8 / 12)), max(1, round(self.epochs * 11 / 12))}))


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


class DetectionTask(Task):
    name = "detection"
    config_class = DetectionConfig
    metric_columns = ["epoch", "step", "lr", "train_loss", "train_loss_cls", "train_loss_bbox", "train_loss_mask",
                      "eval_ap", "eval_ap50", "eval_ap75", "eval_mask_ap", "eval_mask_ap50", "eval_ap_ema",
                      "images_per_second", "train_seconds", "eval_seconds", "wall_seconds"]
    entry_points = {"run_eval": "hilovit.tasks.detection_eval:run_det_eval",
                    "format_eval": "hilovit.tasks.detection_eval:format_det_eval",
                    "predict_files": "hilovit.tasks.detection_predict:predict_files"}

    def default_recipe(self, options: Mapping[str, Any]) -> Optional[str]:
        data = str(options.get("data") or DetectionConfig.data).strip().lower()
        return "fashion-scenes-det" if data in FASHION_SCENES_NAMES else None

    # ---- data and model
    def build_data(self, cfg: DetectionConfig):
        from hilovit.data.det_transforms import DetAugmentConfig, DetAugmentedDataset, DetTrainTransform
        from hilovit.data.detection import build_det_datasets

        train_ds, eval_ds, info = build_det_datasets(cfg.data, seed=cfg.seed, val_split=cfg.val_split,
                                                     data_dir=cfg.data_dir, num_train=cfg.train_subset,
                                                     num_test=cfg.eval_subset)
        aug = DetTrainTransform(DetAugmentConfig(scale=cfg.train_scale, ratio_range=cfg.ratio_range,
                                                 flip_prob=cfg.flip_prob))
        return DetAugmentedDataset(train_ds, aug, seed=cfg.seed), eval_ds, info

    def build_model(self, cfg: DetectionConfig, info, weights, log) -> nn.Module:
        from hilovit.models._builder import create_model
        from hilovit.train.finetune import load_weights

        kwargs = dict(cfg.model_kwargs)
        kwargs.update(num_classes=info.num_classes, in_chans=info.in_chans)
        if cfg.drop_path is not None:
            kwargs["drop_path_rate"] = cfg.drop_path
        try:
            model = create_model(cfg.model, **kwargs)
        except TypeError as e:
            raise ValueError(f"model {cfg.model!r} does not accept these options {sorted(kwargs)}: {e}") from e
        load_weights(model, weights, log)
        return model

    def describe(self, run: Run) -> str:
        n_params = sum(p.numel() for p in run.model.parameters())
        cfg, info = run.cfg, run.info
        scale = "x".join(map(str, cfg.train_scale)) if cfg.train_scale else "the images' own size"
        return (f"{cfg.model}: {n_params / 1e6:.2f}M parameters, {info.num_classes} classes | {info.name}: "
                f"{len(run.train_ds)} training, {len(run.eval_ds)} {info.eval_split} images, resized into {scale}")

    def metadata(self, run: Run) -> Dict[str, str]:
        scale = run.cfg.eval_scale or getattr(run.model, "test_scale", None)
        return {"eval_scale": ",".join(map(str, scale)) if scale else "",
                "category_ids": ",".join(map(str, run.info.category_ids))}

    # ---- optimisation: AdamW, no decay on norms and biases, warm-up then steps
    def build_optimizer(self, cfg: DetectionConfig, model: nn.Module):
        from hilovit.train.optim import build_param_groups, fused_adamw_supported

        groups = build_param_groups(model, cfg.lr, cfg.weight_decay)
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused_adamw_supported(model))

    def build_schedule(self, cfg: DetectionConfig, optimizer, epochs: int, steps_per_epoch: int):
        from hilovit.train.optim import StepSchedule

        steps = [e * steps_per_epoch for e in cfg.resolved_steps() if e < epochs]
        return StepSchedule(optimizer, cfg.lr, epochs * steps_per_epoch, steps, cfg.gamma, cfg.warmup_iters,
                            cfg.warmup_ratio)

    def describe_rate(self, cfg: DetectionConfig, schedule) -> str:
        return (f"AdamW lr {cfg.lr:.3g}, warm-up {cfg.warmup_iters} steps, x{cfg.gamma:g} after epochs "
                f"{', '.join(map(str, cfg.resolved_steps()))}")

    # ---- the loop
    def train_batches(self, run: Run):
        from hilovit.data.detection import detection_collate
        from hilovit.train.loaders import IndexedBatches

        env = run.env
        return IndexedBatches(run.train_ds, run.cfg.batch_size, detection_collate, run.cfg.seed, env.rank,
                              env.world_size, run.cfg.workers, env.device.type == "cuda")

    def prepare(self, run: Run) -> None:
        run.state["eval_batch"] = run.cfg.eval_batch_size or max(1, run.cfg.batch_size // run.env.world_size)

    def micro_batches(self, run: Run, batch, count: int) -> List[MicroBatch]:
        images, targets = batch
        micro = max(1, min(count, len(images)))
        size = -(-len(images) // micro)
        parts = []
        for start in range(0, len(images), size):
            imgs, tgts = images[start:start + size], targets[start:start + size]
            inputs, metas = run.model.data_preprocessor([im.to(run.device) for im in imgs], "rgb")
            parts.append(MicroBatch(inputs, [self._target(t, m, run.device) for t, m in zip(tgts, metas)],
                                    len(imgs) / len(images)))
        return parts

    @staticmethod
    def _target(target: Mapping[str, Any], meta: Mapping[str, Any], device) -> Dict[str, Any]:
        out = {"boxes": target["boxes"].to(device).float(), "labels": target["labels"].to(device).long(),
               "img_shape": meta["img_shape"], "pad_shape": meta["pad_shape"]}
        masks = target.get("masks")
        if masks is not None:  # in the padded batch's frame, as the boxes
            H, W = meta["batch_input_shape"]
            m = masks.to(device)
            out["masks"] = F.pad(m, (0, W - m.shape[-1], 0, H - m.shape[-2])) if m.shape[-2:] != (H, W) else m
        return out

    def forward_loss(self, run: Run, forward: nn.Module, micro: MicroBatch):
        losses = forward(micro.inputs, micro.targets)
        total = sum(v for v in losses.values())
        parts = {"cls": 0.0, "bbox": 0.0, "mask": 0.0}
        for key, value in losses.items():
            part = "mask" if "mask" in key else ("cls" if "cls" in key else "bbox")
            parts[part] += float(value.detach())
        n = float(micro.inputs.shape[0])
        stats = torch.tensor([float(total.detach()) * n, n, parts["cls"] * n, parts["bbox"] * n, parts["mask"] * n],
                             dtype=torch.float64)
        return total, stats

    def stats_size(self) -> int:
        return 5  # loss * images, images, and the classification, box and mask parts

    def progress(self, sums: torch.Tensor) -> Dict[str, float]:
        return {"loss": float(sums[0] / max(float(sums[1]), 1.0))}

    def epoch_stats(self, sums: torch.Tensor) -> Dict[str, Any]:
        n = max(float(sums[1]), 1.0)
        out = {"train_loss": float(sums[0]) / n, "train_loss_cls": float(sums[2]) / n,
               "train_loss_bbox": float(sums[3]) / n}
        if float(sums[4]):
            out["train_loss_mask"] = float(sums[4]) / n
        return out

    def samples_in(self, sums: torch.Tensor) -> int:
        return int(sums[1])

    def eval_batch_size(self, run: Run) -> int:
        return run.state["eval_batch"]

    def evaluate(self, run: Run, model: nn.Module) -> Dict[str, Any]:
        from hilovit.tasks.detection_eval import evaluate_detection

        env = run.env
        return evaluate_detection(model, run.eval_ds, run.state["eval_batch"], env.device, run.eval_dtype, env.rank,
                                  env.world_size, run.cfg.eval_scale)

    def eval_row(self, result: Mapping[str, Any]) -> Dict[str, Any]:
        row = {"eval_ap": result["ap"], "eval_ap50": result["ap50"], "eval_ap75": result["ap75"]}
        if "mask_ap" in result:
            row.update(eval_mask_ap=result["mask_ap"], eval_mask_ap50=result["mask_ap50"])
        return row

    def describe_epoch(self, run: Run, row: Mapping[str, Any]) -> str:
        msg = (f"epoch {row['epoch']}/{run.cfg.epochs}: train loss {row['train_loss']:.4f} "
               f"({row['train_seconds']:.0f} s)")
        if "eval_ap" in row:
            msg += f" | {run.info.eval_split} box AP {_pct(row['eval_ap'])} AP50 {_pct(row['eval_ap50'])}"
        if "eval_mask_ap" in row:
            msg += f" | mask AP {_pct(row['eval_mask_ap'])} AP50 {_pct(row['eval_mask_ap50'])}"
        if "eval_ap_ema" in row:
            msg += f" | EMA box AP {_pct(row['eval_ap_ema'])}"
        return msg

    def summary(self, run: Run, result: Mapping[str, Any], ema_result: Mapping[str, Any]) -> Dict[str, Any]:
        from hilovit.tasks.detection_eval import METRIC_NAMES

        classes = run.info.classes
        out: Dict[str, Any] = {f"test_{k}": result[k] for k in METRIC_NAMES}
        out["per_class_ap"] = dict(zip(classes, result["per_class_ap"]))
        if "mask_ap" in result:
            out.update({f"test_mask_{k}": result[f"mask_{k}"] for k in METRIC_NAMES})
            out["per_class_mask_ap"] = dict(zip(classes, result["per_class_mask_ap"]))
        out["eval_images_per_second"] = result["images_per_second"]
        if ema_result:
            out["test_ap_ema"] = ema_result["ap"]
        return out

    def final_files(self, run: Run, out, result: Mapping[str, Any]) -> Dict[str, str]:
        if not run.cfg.predictions or not len(run.eval_ds):
            return {}
        from hilovit.tasks.detection_eval import predict_images
        from hilovit.viz.detection import save_detection_grid

        rows = []
        for i in range(min(run.cfg.predictions, len(run.eval_ds))):
            image, target = run.eval_ds[i]
            res = predict_images(run.model.eval(), [image], run.device, None, run.cfg.eval_scale)[0]
            rows.append((image, target, res))
        path = save_detection_grid(rows, out / "predictions.png", run.info.classes,
                                   title=f"{run.cfg.model} on {run.info.name} ({run.info.eval_split})")
        return {"predictions": str(path)}

    def format_summary(self, summary: Mapping[str, Any]) -> List[str]:
        if "test_ap" not in summary:
            return []
        lines = [f"{summary['model']} on {summary['dataset']} ({summary['eval_split']}, {summary['eval_images']} "
                 f"images): box AP {_pct(summary['test_ap'])}  AP50 {_pct(summary['test_ap50'])}  "
                 f"AP75 {_pct(summary['test_ap75'])}"]
        if "test_mask_ap" in summary:
            lines.append(f"mask AP {_pct(summary['test_mask_ap'])}  AP50 {_pct(summary['test_mask_ap50'])}")
        return lines

    # ---- inference
    eval_options = ("checkpoint", "data", "model", "pretrained", "data_dir", "val_split", "seed", "eval_subset",
                    "batch_size", "eval_scale", "amp", "device", "threads", "workers", "output", "overwrite",
                    "progress")
    predict_options = ("model", "checkpoint", "pretrained", "output", "eval_scale", "device", "score_thr")
    # traced at the first size, verified at each: multiples of neither 32 nor any window among them
    export_sizes = ((128, 128), (100, 70), (77, 129))

    def head_prefixes(self, model: nn.Module) -> List[str]:
        return [name for name in ("neck", "bbox_head", "rpn_head", "roi_head") if hasattr(model, name)]

    def format_predictions(self, results, as_json: bool = False) -> str:
        import json

        if as_json:
            return json.dumps(results, indent=2)
        lines = []
        for r in results:
            if r.get("error"):
                continue
            found = ", ".join(f"{d['label']} {d['score']:.2f}" for d in r["detections"][:8])
            lines.append(f"{r['image']}: {len(r['detections'])} detection(s) -> {r['picture']}, {r['json']}"
                         + (f" ({found})" if found else ""))
        return "\n".join(lines)

    def export_spec(self, model: nn.Module, sizes, dynamic_batch: bool, in_chans: int) -> ExportSpec:
        from hilovit.tasks.detection_export import detector_export_spec

        sizes = tuple(sizes) if sizes is not None else self.export_sizes
        if len(sizes) < 2 or len(set(sizes)) < 2:
            raise OptionError(f"{{sizes}}={list(sizes)}: a detector is verified at two different sizes at least "
                              "(the first is traced)")
        return detector_export_spec(model, in_chans, sizes)


TASK = DetectionTask()
