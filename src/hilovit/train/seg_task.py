"""Training a semantic segmentation model: the engine behind ``hilovit train --task segmentation``.

It shares the classification engine's machinery (:mod:`hilovit.train.engine`): the same checks
before anything runs, the order of each epoch a function of ``(seed, epoch)``
(:func:`~hilovit.train.loaders.epoch_order`) and the global generators reseeded per ``(seed,
epoch, rank)``, so a resumed run replays nothing and gives the weights of an uninterrupted one;
DDP under ``torchrun`` (each process a slice of every global batch); autocast; a progress bar or
log lines; ``last.pt`` written atomically every epoch; ``metrics.csv`` and ``summary.json``.

What differs from classification:

* samples are ``(uint8 image, int64 label map)`` augmented one by one with the official mmseg
  pipeline (:class:`~hilovit.data.seg_transforms.SegTrainTransform`: random rescale 0.5-2.0,
  crop with a cap on the largest class, flip, photometric distortion, padding with the ignore
  label), each from a generator seeded by ``(seed, epoch, index)``;
* the loss is the pixel-wise cross-entropy with the ignore index (255);
* the optimiser is the official ADE20K one: AdamW, lr 1e-4, weight decay 1e-4 on every
  parameter, a poly schedule (power 0.9, min lr 1e-6) stepped every iteration, no clipping;
* evaluation (whole-image inference, :mod:`hilovit.train.seg_eval`) gives mIoU, mAcc, aAcc;
* after the last epoch ``model.safetensors`` carries ``task=segmentation`` with the model name,
  classes, mean/std and input channels in its metadata, and ``predictions.png`` shows a few test
  scenes (input, truth, prediction).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from hilovit.train.distributed import DistEnv, all_reduce_sum, cleanup_distributed, init_distributed
from hilovit.train.engine import TrainingDivergedError, _average_bn_stats, _epoch_seed, _seed_everything
from hilovit.train.evaluate import autocast_context, resolve_amp
from hilovit.train.loaders import epoch_order
from hilovit.train.optim import fused_adamw_supported, optimizer_step
from hilovit.train.report import Reporter as _Reporter
from hilovit.train.report import write_metrics_csv
from hilovit.train.seg_config import PolySchedule, SegTrainConfig
from hilovit.train.seg_eval import ModelSource, build_segmenter, evaluate_segmentation, seg_cross_entropy
from hilovit.train.state import (
    atomic_torch_save,
    atomic_write_text,
    check_writable_dir,
    get_rng_state,
    load_training_state,
    set_rng_state,
    write_json,
)

__all__ = ["SegTrainConfig", "PolySchedule", "train_segmentation", "format_seg_summary", "print_seg_summary",
           "SEG_METRIC_COLUMNS"]

SEG_METRIC_COLUMNS = ["epoch", "step", "lr", "train_loss", "train_pixel_acc", "eval_loss", "eval_miou", "eval_macc",
                      "eval_aacc", "images_per_second", "train_seconds", "eval_seconds", "wall_seconds"]
_OUTPUT_FILES = ("last.pt", "model.safetensors", "summary.json", "metrics.csv", "predictions.png", "config.yaml")
# Options that define a run: a resumed run must keep them.
_IDENTITY = ("model", "data", "batch_size", "seed", "crop_size", "train_subset", "num_classes", "val_split",
             "model_kwargs")


# --------------------------------------------------------------------------- configuration and data
def _resolve_config(config: Optional[SegTrainConfig], recipe, overrides: Dict[str, Any]
                    ) -> Tuple[SegTrainConfig, Dict[str, Any]]:
    from hilovit.train.config import load_recipe

    if config is not None:
        if recipe is not None or overrides:
            raise TypeError("train_segmentation: pass either a SegTrainConfig or recipe/keyword options, not both")
        explicit = config.to_dict()
    else:
        data = str(overrides.get("data") or SegTrainConfig.data).strip().lower()
        if recipe is None and not overrides.get("resume") and data in ("fashion-scenes", "fashion_scenes",
                                                                        "fashionscenes"):
            recipe = "fashion-scenes"  # the demo recipe sizes fashion-scenes runs (128 crops); options still win
        explicit = dict(load_recipe(recipe)) if recipe is not None else {}
        if explicit.get("task", "segmentation") != "segmentation":
            raise ValueError(f"recipe {recipe!r} is a {explicit['task']} recipe, not a segmentation one")
        explicit.update({k: v for k, v in overrides.items() if v is not None})
    explicit.pop("task", None)
    if not explicit.get("resume"):
        return SegTrainConfig.from_dict(explicit), {}
    if explicit.get("overwrite"):
        raise ValueError("--resume and --overwrite contradict each other; choose one")
    output = str(explicit.get("output", SegTrainConfig.output))
    out = Path(output).expanduser()
    state = load_training_state(out / "last.pt")
    saved = {k: v for k, v in dict(state.get("config") or {}).items() if k != "task"}
    saved_cfg = SegTrainConfig.from_dict(saved).to_dict()
    given = SegTrainConfig.from_dict({**saved, **explicit}).to_dict()
    differing = [f"--{k.replace('_', '-')} {given[k]!r} (the run in {str(out)!r} has {saved_cfg[k]!r})"
                 for k in _IDENTITY if k in explicit and given[k] != saved_cfg[k]]
    if differing:
        raise ValueError("cannot resume with other settings than the run being continued: " + "; ".join(differing)
                         + ". Leave them out to keep the run's own, or train into another --output.")
    merged = {**saved, **explicit, "resume": True, "overwrite": False, "output": output}
    if "stop_at_epoch" not in explicit:
        merged["stop_at_epoch"] = None
    return SegTrainConfig.from_dict(merged), state


def _build_data(cfg: SegTrainConfig):
    from hilovit.data.seg_transforms import SegAugmentedDataset, SegTrainTransform
    from hilovit.data.segmentation import build_seg_datasets, is_ade20k_dir

    folder = Path(cfg.data).expanduser()
    if str(cfg.data).strip().lower() not in ("fashion-scenes", "fashion_scenes", "fashionscenes"):
        if not folder.is_dir():
            build_seg_datasets(cfg.data)  # the ValueError naming the known data sets
        if not is_ade20k_dir(folder) and cfg.num_classes is None and cfg.classes is None:
            raise ValueError(f"--data {cfg.data!r} is a folder of images and masks: give --num-classes N (labels "
                             "0..N-1, 255 ignored); the masks are not read up front")
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
    train_aug = SegAugmentedDataset(train_ds, SegTrainTransform(aug), seed=cfg.seed)
    return train_aug, eval_ds, info


def _collate(samples):
    return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples]).long()


def _train_loader(dataset: Dataset, cfg: SegTrainConfig, env: DistEnv, epoch: int) -> DataLoader:
    """This process's batches of ``epoch``: the order of ``(seed, epoch)``, each global batch sliced by rank."""
    order = epoch_order(len(dataset), cfg.seed, epoch)
    b, local = cfg.batch_size, cfg.batch_size // env.world_size
    start = env.rank * local
    batches = [order[s * b + start: s * b + start + local].tolist() for s in range(len(dataset) // b)]
    return DataLoader(dataset, batch_sampler=batches, num_workers=cfg.workers, collate_fn=_collate,
                      pin_memory=env.device.type == "cuda")


def _metadata(cfg: SegTrainConfig, model_name: str, info, in_chans: int) -> Dict[str, str]:
    from hilovit import __version__

    return {
        "format": "hilovit-train", "task": "segmentation", "model": model_name,
        "num_classes": str(info.num_classes), "in_chans": str(in_chans), "classes": json.dumps(list(info.classes)),
        "dataset": info.name, "mean": ",".join(f"{v:.6g}" for v in info.mean),
        "std": ",".join(f"{v:.6g}" for v in info.std), "ignore_index": str(info.ignore_index),
        "crop_size": ",".join(map(str, cfg.crop_size)), "eval_scale": ",".join(map(str, cfg.resolved_eval_scale())),
        "model_kwargs": json.dumps(cfg.model_kwargs), "hilovit_version": __version__,
    }


# --------------------------------------------------------------------------- one epoch
def _train_one_epoch(ctx: Dict[str, Any], epoch: int, reporter: _Reporter) -> Dict[str, float]:
    cfg: SegTrainConfig = ctx["cfg"]
    env: DistEnv = ctx["env"]
    model, ddp_model, optimizer, schedule = ctx["model"], ctx["ddp_model"], ctx["optimizer"], ctx["schedule"]
    scaler, dev, amp_dtype, info = ctx["scaler"], env.device, ctx["amp_dtype"], ctx["info"]
    from hilovit.train.seg_eval import normalize_images

    ddp_model.train()
    ctx["train_ds"].set_epoch(epoch)
    loader = _train_loader(ctx["train_ds"], cfg, env, epoch)
    n_steps = len(loader)
    sums = torch.zeros(4, dtype=torch.float64)  # loss * images, images, correct pixels, labelled pixels
    bar = reporter.bar(n_steps, f"epoch {epoch + 1}/{cfg.epochs}")
    t0 = time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        images, labels = images.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        x = normalize_images(images, info.mean, info.std)
        with autocast_context(dev, amp_dtype):
            logits = ddp_model(x)
        normalizer = None
        if env.world_size > 1:  # the mean over the labelled pixels of the global batch, as one process has it
            count = (labels != info.ignore_index).sum().double().cpu()
            all_reduce_sum(count)
            normalizer = max(float(count), 1.0) / env.world_size
        loss = seg_cross_entropy(logits.float(), labels, info.ignore_index, normalizer)
        lv = float(loss.detach())
        if not math.isfinite(lv):
            raise TrainingDivergedError(f"the training loss is {lv} at epoch {epoch + 1}, step {i + 1}; lower --lr "
                                        f"(now {schedule.get_last_lr():.3g}) or use --amp off")
        (loss if scaler is None else scaler.scale(loss)).backward()
        optimizer_step(model, optimizer, scaler, schedule, cfg.clip_grad)
        ctx["step"] += 1
        with torch.no_grad():
            valid = labels != info.ignore_index
            pred = logits.detach().argmax(1) if logits.shape[-2:] == labels.shape[-2:] else None
            sums[0] += lv * images.shape[0]
            sums[1] += images.shape[0]
            if pred is not None:
                sums[2] += float(((pred == labels) & valid).sum())
            sums[3] += float(valid.sum())
        elapsed = time.perf_counter() - t0
        ips = (i + 1) * images.shape[0] * env.world_size / elapsed if elapsed > 0 else 0.0
        loss_avg = float(sums[0] / sums[1])
        acc = float(100 * sums[2] / sums[3]) if sums[3] > 0 else 0.0
        if bar is not None:
            bar.set_postfix_str(f"loss {loss_avg:.4f} pixel acc {acc:.1f}% lr {schedule.get_last_lr():.2e} "
                                f"{ips:.1f} img/s", refresh=False)
            bar.update(1)
        elif reporter.mode == "log" and ((i + 1) % reporter.log_interval == 0 or i + 1 == n_steps):
            reporter.print(f"epoch {epoch + 1}/{cfg.epochs}  step {i + 1}/{n_steps}  loss {loss_avg:.4f}  "
                           f"pixel acc {acc:.2f}%  lr {schedule.get_last_lr():.3e}  {ips:.1f} img/s")
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    all_reduce_sum(sums)
    return {
        "train_loss": float(sums[0] / sums[1]) if sums[1] > 0 else float("nan"),
        "train_pixel_acc": float(100 * sums[2] / sums[3]) if sums[3] > 0 else None,
        "train_images": int(sums[1]), "train_seconds": seconds,
        "images_per_second": float(sums[1]) / seconds if seconds > 0 else None, "lr": schedule.get_last_lr(),
    }


# --------------------------------------------------------------------------- the run
def train_segmentation(config: Optional[SegTrainConfig] = None, recipe=None, model: Optional[ModelSource] = None,
                       **overrides: Any) -> Dict[str, Any]:
    """Train a segmentation model; see the module docstring and :class:`SegTrainConfig` for the options.

    Call with a :class:`SegTrainConfig`, or with a recipe (path or packaged name such as
    ``'fashion-scenes'``) and keyword options. ``model`` may replace the registered model of the
    configuration by an ``nn.Module`` or a factory ``f(num_classes=, in_chans=)`` (its weights are
    still saved under the configuration's model name); a string is the registered model name.

    Returns:
        The summary (written to ``output/summary.json`` after the last epoch): ``test_miou``,
        ``test_macc``, ``test_aacc`` (percent), ``per_class_iou`` ({class: percent or None}), ...
    """
    t_start = time.perf_counter()
    if isinstance(model, str):  # a registered name is the configuration's model option
        overrides["model"], model = model, None
    cfg, state = _resolve_config(config, recipe, overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if model is None:
        from hilovit.models.registry import model_entrypoint

        model_entrypoint(cfg.model)  # ValueError listing the models
    out = check_writable_dir(cfg.output, "output folder")
    if not cfg.resume and not cfg.overwrite and (out / "last.pt").exists():
        raise ValueError(f"output folder {str(out)!r} already holds a training run (last.pt); pass --resume to "
                         "continue it, --overwrite to start afresh, or choose another --output")
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if cfg.batch_size % world_size:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the number of processes ({world_size})")
    train_ds, eval_ds, info = _build_data(cfg)
    if cfg.batch_size > len(train_ds):
        raise ValueError(f"--batch-size {cfg.batch_size} is larger than the training set: {len(train_ds)} samples "
                         f"in {info.name}; use a batch of at most {len(train_ds)}")
    env = init_distributed(cfg.device)
    try:
        summary = _run(cfg, state, env, out, train_ds, eval_ds, info, model, t_start)
    except BaseException:
        cleanup_distributed(wait=False)
        raise
    cleanup_distributed()
    return summary


def _run(cfg: SegTrainConfig, state, env: DistEnv, out: Path, train_ds, eval_ds, info, model_source,
         t_start: float) -> Dict[str, Any]:
    reporter = _Reporter(env, cfg.progress, cfg.log_interval)
    if cfg.overwrite and env.is_main:
        for name in _OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    if state and int(state["epoch"]) >= (cfg.stop_at_epoch or cfg.epochs):
        reporter.print(f"nothing to do: the run in {str(out)!r} has already trained {int(state['epoch'])} epochs")
        if (out / "summary.json").is_file():
            return {**json.loads((out / "summary.json").read_text(encoding="utf-8")), "rank": env.rank}
    _seed_everything(cfg.seed)
    model, _ = build_segmenter(model_source if model_source is not None else cfg.model, info.num_classes,
                               info.in_chans, cfg.model_kwargs)
    model.to(env.device)
    # The official optimiser: AdamW with weight decay on every parameter (no paramwise_cfg in the config).
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=fused_adamw_supported(model))
    steps_per_epoch = len(train_ds) // cfg.batch_size
    schedule = PolySchedule(optimizer, cfg.lr, cfg.epochs * steps_per_epoch, cfg.poly_power, cfg.min_lr,
                            cfg.warmup_iters, cfg.warmup_ratio)
    amp_dtype = resolve_amp(cfg.amp, env.device)
    eval_dtype = amp_dtype if env.device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda") if (amp_dtype == torch.float16 and env.device.type == "cuda") else None
    start_epoch, step, history, wall_before = 0, 0, [], 0.0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.step(int(state["step"]))
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if state.get("rng"):
            set_rng_state(state["rng"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history = list(state.get("history") or [])
        wall_before = float(state.get("wall_seconds_total", 0.0))
        if int(state.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
            raise ValueError(f"cannot resume: the run in {str(out)!r} had {state.get('steps_per_epoch')} steps per "
                             f"epoch, this set-up has {steps_per_epoch}")
    if env.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    else:
        ddp_model = model
    n_params = sum(p.numel() for p in model.parameters())
    meta = _metadata(cfg, cfg.model, info, info.in_chans)
    if env.is_main:
        import yaml

        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        if state and history:  # a run killed between saving last.pt and rewriting it: it follows the checkpoint
            write_metrics_csv(out / "metrics.csv", history, SEG_METRIC_COLUMNS)
    what = f"resuming at epoch {start_epoch + 1} of {cfg.epochs}" if state else f"{cfg.epochs} epochs"
    reporter.print(f"{cfg.model}: {n_params / 1e6:.2f}M parameters, {info.num_classes} classes | {info.name}: "
                   f"{len(train_ds)} training, {len(eval_ds)} {info.eval_split} samples, crops "
                   f"{cfg.crop_size[0]}x{cfg.crop_size[1]}")
    reporter.print(f"{what}, batch {cfg.batch_size} ({env.world_size} process{'es' if env.world_size > 1 else ''} "
                   f"on {env.device}, {torch.get_num_threads()} threads each), {steps_per_epoch} steps/epoch, AdamW "
                   f"lr {cfg.lr:.3g} poly {cfg.poly_power:g}, amp {amp_dtype or 'off'} -> {out}")
    ctx = dict(cfg=cfg, env=env, model=model, ddp_model=ddp_model, optimizer=optimizer, schedule=schedule,
               scaler=scaler, amp_dtype=amp_dtype, info=info, train_ds=train_ds, step=step)
    eval_batch = cfg.eval_batch_size or max(1, cfg.batch_size // env.world_size)
    eval_scale = cfg.resolved_eval_scale()
    last_eval: Dict[str, Any] = {}
    end_epoch = cfg.stop_at_epoch or cfg.epochs
    for epoch in range(start_epoch, end_epoch):
        _seed_everything(_epoch_seed(cfg.seed, epoch, env.rank))
        row: Dict[str, Any] = {"epoch": epoch + 1}
        row.update(_train_one_epoch(ctx, epoch, reporter))
        row["step"] = ctx["step"]
        t_eval = time.perf_counter()
        if (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs:
            _average_bn_stats(model, env.world_size)
            last_eval = evaluate_segmentation(model, eval_ds, info.num_classes, info.mean, info.std,
                                              info.ignore_index, info.classes, eval_batch, eval_scale, env.device,
                                              eval_dtype, env.rank, env.world_size)
            row.update(eval_loss=last_eval["loss"], eval_miou=last_eval["miou"], eval_macc=last_eval["macc"],
                       eval_aacc=last_eval["aacc"])
        row["eval_seconds"] = time.perf_counter() - t_eval
        row["wall_seconds"] = wall_before + time.perf_counter() - t_start
        history.append(row)
        msg = f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} ({row['train_seconds']:.0f} s)"
        if "eval_miou" in row:
            msg += (f" | {info.eval_split} mIoU {_pct(row['eval_miou'])}% mAcc {_pct(row['eval_macc'])}% "
                    f"aAcc {_pct(row['eval_aacc'])}%")
        reporter.print(msg)
        if env.is_main:
            atomic_torch_save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch + 1,
                "step": ctx["step"], "steps_per_epoch": steps_per_epoch, "rng": get_rng_state(),
                "history": history, "config": cfg.to_dict(), "metadata": meta,
                "wall_seconds_total": row["wall_seconds"],
            }, out / "last.pt")
            write_metrics_csv(out / "metrics.csv", history, SEG_METRIC_COLUMNS)
    return _finish(cfg, env, out, model, info, train_ds, eval_ds, history, last_eval, meta, ctx["step"],
                   start_epoch, end_epoch, n_params, amp_dtype, wall_before, t_start, eval_scale)


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _finish(cfg, env, out, model, info, train_ds, eval_ds, history, last_eval, meta, step, start_epoch, end_epoch,
            n_params, amp_dtype, wall_before, t_start, eval_scale) -> Dict[str, Any]:
    finished = end_epoch >= cfg.epochs
    wall = time.perf_counter() - t_start
    train_images = sum(r.get("train_images", 0) for r in history)
    train_seconds = sum(r.get("train_seconds", 0.0) for r in history)
    summary: Dict[str, Any] = {
        "task": "segmentation", "model": cfg.model, "dataset": info.name, "eval_split": info.eval_split,
        "finished": finished, "epochs": int(history[-1]["epoch"]) if history else start_epoch,
        "epochs_planned": cfg.epochs, "steps": step, "params": n_params, "train_images": len(train_ds),
        "eval_images": len(eval_ds), "batch_size": cfg.batch_size, "crop_size": list(cfg.crop_size),
        "processes": env.world_size, "device": str(env.device), "threads": torch.get_num_threads(),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off", "lr": cfg.lr,
        "train_images_per_second": train_images / train_seconds if train_seconds > 0 else None,
        "wall_seconds": wall, "wall_seconds_total": wall_before + wall, "files": {},
    }
    if last_eval:
        summary.update({
            "test_miou": last_eval["miou"], "test_macc": last_eval["macc"], "test_aacc": last_eval["aacc"],
            "test_loss": last_eval["loss"], "eval_images_per_second": last_eval["images_per_second"],
            "per_class_iou": dict(zip(info.classes, last_eval["iou"])),
            "per_class_acc": dict(zip(info.classes, last_eval["acc"])),
        })
    if env.is_main:
        summary["files"] = {"last": str(out / "last.pt"), "metrics": str(out / "metrics.csv"),
                            "config": str(out / "config.yaml")}
        if finished:
            from hilovit.models.checkpoint import save_safetensors

            save_safetensors(model.state_dict(), out / "model.safetensors", metadata=meta)
            summary["files"]["weights"] = str(out / "model.safetensors")
            if cfg.predictions and len(eval_ds):
                path = _draw_predictions(model, eval_ds, info, cfg, eval_scale, env.device, out / "predictions.png")
                if path is not None:
                    summary["files"]["predictions"] = str(path)
            summary["files"]["summary"] = str(out / "summary.json")
            summary["config"] = cfg.to_dict()
            write_json(out / "summary.json", summary)
    summary["rank"] = env.rank
    return summary


def _draw_predictions(model, eval_ds, info, cfg, eval_scale, device, path: Path) -> Optional[Path]:
    try:
        from hilovit.train.seg_eval import infer_logits
        from hilovit.viz_seg import save_segmentation_grid

        model.eval()
        rows = []
        for i in range(min(cfg.predictions, len(eval_ds))):
            image, label = eval_ds[i]
            logits = infer_logits(model, image.unsqueeze(0).to(device), info.mean, info.std, label.shape[-2:],
                                  eval_scale)
            rows.append((image, label, logits.argmax(1)[0].cpu()))
        return save_segmentation_grid(rows, path, info.classes, ignore_index=info.ignore_index,
                                      title=f"{cfg.model} on {info.name} ({info.eval_split})")
    except Exception as e:  # noqa: BLE001 - a picture must never stop training
        print(f"warning: could not draw {path}: {e}", file=sys.stderr)
        return None


def format_seg_summary(summary: Dict[str, Any]) -> str:
    """The lines ``hilovit train --task segmentation`` prints at the end."""
    lines = []
    if not summary.get("finished", True):
        lines.append(f"stopped after epoch {summary['epochs']} of {summary['epochs_planned']}; continue with --resume")
    if "test_miou" in summary:
        lines.append(f"{summary['model']} on {summary['dataset']} ({summary['eval_split']}, {summary['eval_images']} "
                     f"images): mIoU {_pct(summary['test_miou'])}%  mAcc {_pct(summary['test_macc'])}%  "
                     f"aAcc {_pct(summary['test_aacc'])}%")
    ips = summary.get("train_images_per_second")
    lines.append(f"{summary['epochs']} epochs, {summary['steps']} steps, "
                 f"{'n/a' if ips is None else f'{ips:.1f}'} training images/s, "
                 f"wall time {summary['wall_seconds']:.0f} s ({summary['wall_seconds'] / 60:.1f} min)")
    for kind, path in summary.get("files", {}).items():
        lines.append(f"  {kind}: {path}")
    return "\n".join(lines)


def print_seg_summary(summary: Dict[str, Any], as_json: bool = False) -> None:
    if summary.get("rank", 0) != 0:
        return
    print(json.dumps({k: v for k, v in summary.items() if k != "rank"}, indent=2) if as_json
          else format_seg_summary(summary))

