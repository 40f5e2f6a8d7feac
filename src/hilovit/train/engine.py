"""The training engine behind ``hilovit train``: one process or many (``torchrun``), CPU or CUDA.

:func:`train` checks every input first (model name, data, batch size, output folder, a run to
resume), so bad input fails before any training with one clear message. Then each epoch:

1. reseed torch, numpy and Python from ``(seed, epoch, rank)`` (augmentation, mixing and drop
   path are a function of those alone) and walk the batches in the order of ``(seed, epoch)``;
2. per step: uint8 batch -> device -> augmentation -> Mixup/CutMix and smoothed targets ->
   forward under autocast -> backward (split into ``accum_steps`` micro-batches, gradients
   all-reduced once by DistributedDataParallel) -> clipping -> AdamW -> schedule -> EMA;
3. evaluate (every ``eval_interval`` epochs and after the last; in float32 on CPU, under the
   training autocast on CUDA), each process on its share of the images, counts summed;
4. rank 0 writes ``last.pt`` (model, optimiser, schedule, scaler, EMA, epoch, step, RNG states,
   history, configuration) atomically, rewrites ``metrics.csv`` and ``curves.png``.

After the last epoch: ``model.safetensors`` (with the model name, classes and input size in its
metadata, loadable with :func:`hilovit.load_checkpoint`), ``model_ema.safetensors`` with EMA,
``summary.json``.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from hilovit.device import is_out_of_memory, resolve_device
from hilovit.train.compiled import CompiledTraining
from hilovit.train.config import OptionError, TrainConfig
from hilovit.train.distributed import (
    DistEnv,
    all_reduce_sum,
    cleanup_distributed,
    convert_sync_batchnorm,
    init_distributed,
    wrap_ddp,
)
from hilovit.train.ema import ModelEma
from hilovit.train.evaluate import autocast_context, evaluate, resolve_amp
from hilovit.train.finetune import (
    build_model,
    hold_backbone_norms,
    resolve_weights,
    set_backbone_frozen,
    weights_record,
)
from hilovit.train.loaders import BatchPipeline, EvalBatches, TrainBatches, crop_in_workers, report_skipped_images
from hilovit.train.optim import CosineWarmupSchedule, build_optimizer, optimizer_step
from hilovit.train.report import (
    METRIC_COLUMNS,
    Reporter,
    TensorBoardLog,
    format_summary,
    plot_curves,
    plural,
    print_summary,
    write_metrics_csv,
    yaml_dump,
)
from hilovit.train.resume import describe_changes, describe_replan, resolve_run, schedule_rate
from hilovit.train.state import (
    atomic_torch_save,
    atomic_write_text,
    check_writable_dir,
    get_rng_state,
    remove_stale_temporaries,
    set_rng_state,
    write_json,
)

__all__ = ["train", "format_summary", "print_summary", "METRIC_COLUMNS", "TrainingDivergedError",
           "TrainingOutOfMemoryError"]


class TrainingDivergedError(OptionError):
    """The training loss became NaN or infinite."""


class TrainingOutOfMemoryError(OptionError):
    """The device ran out of memory: the message names the batch size and how to need less."""

_OUTPUT_FILES = ("last.pt", "model.safetensors", "model_ema.safetensors", "summary.json", "metrics.csv",
                 "curves.png", "confusion.png", "config.yaml")



def _metadata(cfg: TrainConfig, model_name: str, info, in_chans: int, img_size: int, mean, std,
              started_from: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    import json

    from hilovit import __version__

    meta = {} if started_from is None else {  # safetensors metadata holds strings only
        "pretrained": str(started_from["given"]), "pretrained_source": str(started_from["source"] or ""),
        "pretrained_file": str(started_from["file"] or ""), "pretrained_sha256": str(started_from["sha256"] or ""),
    }
    return {
        **meta,
        "format": "hilovit-train",
        "model": model_name,
        "num_classes": str(info.num_classes),
        "in_chans": str(in_chans),
        "img_size": str(img_size),
        "classes": json.dumps(list(info.classes)),
        "dataset": info.name,
        "mean": ",".join(f"{v:.6g}" for v in mean),
        "std": ",".join(f"{v:.6g}" for v in std),
        "hilovit_version": __version__,
    }


# --------------------------------------------------------------------------- set-up
def _seed_everything(seed: int) -> None:
    seed = int(seed) % (2**31 - 1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 100_003 + epoch * 1_009 + rank * 17 + 1) % (2**31 - 1)


def _check_output(cfg: TrainConfig) -> Path:
    out = check_writable_dir(cfg.output, "output folder")
    if not cfg.resume and not cfg.overwrite and (out / "last.pt").exists():
        raise OptionError(
            f"output folder {str(out)!r} already holds a training run (last.pt): continue it with {{resume}}, "
            "start afresh with {overwrite}, or choose another {output}"
        )
    return out


def _set_threads(cfg: TrainConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)


# --------------------------------------------------------------------------- one epoch
def _train_one_epoch(ctx: Dict[str, Any], epoch: int, reporter: Reporter) -> Dict[str, float]:
    cfg: TrainConfig = ctx["cfg"]
    env: DistEnv = ctx["env"]
    model, ddp_model = ctx["model"], ctx["ddp_model"]
    optimizer, schedule, scaler, ema = ctx["optimizer"], ctx["schedule"], ctx["scaler"], ctx["ema"]
    pipeline, mixup, batches = ctx["pipeline"], ctx["mixup"], ctx["train_batches"]
    dev, amp_dtype = env.device, ctx["amp_dtype"]
    from hilovit.data import soft_target_cross_entropy

    ddp_model.train()
    if ctx.get("backbone_frozen"):
        hold_backbone_norms(model)
    pipeline.train()
    batches.set_epoch(epoch)
    n_steps = len(batches)
    sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n (this process)
    bar = reporter.bar(n_steps, f"epoch {epoch + 1}/{cfg.epochs}")
    t0 = time.perf_counter()
    last_log = t0
    compiled: CompiledTraining = ctx["compiled"]
    for i, (images, targets) in enumerate(batches):
        forward = compiled.module_for_step()
        images = images.to(dev, non_blocking=True)
        targets = targets.to(dev, non_blocking=True)
        with torch.no_grad():
            x = pipeline(images)
            x, soft = mixup(x, targets)
        micro = max(1, min(cfg.accum_steps, x.shape[0]))
        chunks = list(zip(x.chunk(micro), soft.chunk(micro), targets.chunk(micro)))
        for j, (xc, sc, tc) in enumerate(chunks):
            sync = j == len(chunks) - 1
            ctx_sync = ddp_model.no_sync() if (not sync and hasattr(ddp_model, "no_sync")) else _nullctx()
            with ctx_sync:
                with autocast_context(dev, amp_dtype):
                    logits = forward(xc)
                loss = soft_target_cross_entropy(logits.float(), sc)
                weight = xc.shape[0] / x.shape[0]
                if scaler is not None:
                    scaler.scale(loss * weight).backward()
                else:
                    (loss * weight).backward()
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise TrainingDivergedError(
                    f"the training loss is {lv} at epoch {epoch + 1}, step {i + 1}; lower {{lr}} (now "
                    f"{schedule.get_last_lr():.3g}) or turn {{amp}} off"
                )
            sums[0] += lv * xc.shape[0]
            sums[1] += float((logits.detach().argmax(1) == tc).sum())
            sums[2] += xc.shape[0]
        optimizer_step(model, optimizer, scaler, schedule, cfg.clip_grad)
        ctx["step"] += 1
        timed = compiled.step_done()
        if timed is not None:
            reporter.print(compiled.describe(timed))
        if ema is not None:
            ema.update(model)
        elapsed = time.perf_counter() - t0
        ips = (i + 1) * cfg.batch_size / elapsed if elapsed > 0 else 0.0
        loss_avg, acc = float(sums[0] / sums[2]), float(100 * sums[1] / sums[2])
        if bar is not None:
            bar.set_postfix_str(f"loss {loss_avg:.4f} acc {acc:.1f}% lr {schedule.get_last_lr():.2e} "
                                f"{ips:.0f} img/s", refresh=False)
            bar.update(1)
        elif reporter.mode == "log" and ((i + 1) % reporter.log_interval == 0 or i + 1 == n_steps):
            now = time.perf_counter()
            if i + 1 < n_steps or now - last_log > 0:
                reporter.print(f"epoch {epoch + 1}/{cfg.epochs}  step {i + 1}/{n_steps}  loss {loss_avg:.4f}  "
                               f"acc {acc:.2f}%  lr {schedule.get_last_lr():.3e}  {ips:.0f} img/s")
                last_log = now
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    all_reduce_sum(sums)
    return {
        "train_loss": float(sums[0] / sums[2]),
        "train_top1": float(100 * sums[1] / sums[2]),
        "train_images": int(sums[2]),
        "train_seconds": seconds,
        "images_per_second": float(sums[2]) / seconds if seconds > 0 else float("nan"),
        "lr": schedule.get_last_lr(),
    }


def _apply_freezing(ctx: Dict[str, Any], epoch: int, reporter: Reporter) -> None:
    """Freeze the backbone for the first ``freeze_backbone_epochs`` epochs, thaw it after: a function of the
    epoch alone, so a resumed run is in the same state (BatchNorm statistics are held too). DDP registers
    the parameters that need gradients when it wraps the model: it wraps it again when that set changes."""
    cfg: TrainConfig = ctx["cfg"]
    if not cfg.freeze_backbone_epochs:
        return
    frozen = ctx["backbone_frozen"] = epoch < cfg.freeze_backbone_epochs
    changed = set_backbone_frozen(ctx["model"], frozen)
    if changed and ctx["env"].distributed:
        ctx["ddp_model"] = wrap_ddp(ctx["model"], ctx["env"])
        ctx["compiled"].replace_module(ctx["ddp_model"])
    if frozen and changed:
        reporter.print(f"backbone frozen for the first {plural(cfg.freeze_backbone_epochs, 'epoch')}: only the "
                       "classifier head trains")
    elif epoch == cfg.freeze_backbone_epochs:
        reporter.print(f"backbone unfrozen at epoch {epoch + 1}: every layer trains from here")


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _average_bn_stats(model: nn.Module, world_size: int) -> None:
    """Average BatchNorm running statistics over processes (without SyncBatchNorm they differ per process)."""
    if world_size <= 1:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                all_reduce_sum(buf)
                buf.div_(world_size)


# --------------------------------------------------------------------------- the run
def train(config: Optional[TrainConfig] = None, recipe=None, **overrides: Any) -> Dict[str, Any]:
    """Train a registered model; see the module docstring and :class:`TrainConfig` for the options.

    Call with a :class:`TrainConfig`, or with a recipe path/name and keyword options
    (``train(model='litv2_nano', data='fashion-mnist', epochs=2, output='runs/x')``). With
    ``resume=True`` the options saved in ``output/last.pt`` are used, except those given here
    (identity options such as the model or the batch size must not change).

    Returns:
        The summary (also written to ``output/summary.json`` after the last epoch): ``test_top1``,
        ``test_top5``, ``test_loss``, ``epochs``, ``train_images_per_second``, ``wall_seconds``,
        ``files``, ... ``finished`` is False when ``stop_at_epoch`` ended the run early.
    """
    t_start = time.perf_counter()
    cfg, state, changes = resolve_run(config, recipe, overrides)
    _set_threads(cfg)

    # ---- checks, before anything is trained (same on every process)
    from hilovit.data import build_datasets
    from hilovit.models.registry import model_entrypoint

    model_entrypoint(cfg.model)  # ValueError listing the models
    resolve_device(cfg.device)  # ValueError for an unknown name or a device this machine lacks
    out = _check_output(cfg)
    weights = None if state else resolve_weights(cfg)  # a resumed run keeps its own weights
    if weights is not None:
        cfg.model = weights.model  # with the weights' tag (it may set the variant): what eval and predict rebuild
    if cfg.log_tensorboard:
        TensorBoardLog.check_available()
    if os.environ.get("RANK", "0") in ("", "0"):
        remove_stale_temporaries(out)  # left by a process killed while writing
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if cfg.batch_size % world_size:
        raise OptionError(f"{{batch_size}}={cfg.batch_size} must be a multiple of the number of processes "
                          f"({world_size})")
    # img_size comes from the model when not given: build the data after the model's defaults are known.
    if cfg.img_size is None:
        from hilovit.train.evaluate import default_img_size

        img_size_hint = default_img_size(cfg.model)
    else:
        img_size_hint = cfg.img_size
    train_ds, eval_ds, info = build_datasets(cfg.data, img_size_hint, data_dir=cfg.data_dir, val_split=cfg.val_split,
                                             seed=cfg.seed, train_subset=cfg.train_subset)
    if cfg.batch_size > len(train_ds):
        subset = f" ({{train_subset}}={cfg.train_subset})" if cfg.train_subset else ""
        raise OptionError(f"{{batch_size}}={cfg.batch_size} is larger than the training set: {len(train_ds)} images "
                         f"in {info.name}{subset}; use a batch of at most {len(train_ds)}")
    if cfg.eval_subset is not None:
        eval_ds = eval_ds.select(range(min(cfg.eval_subset, len(eval_ds))))
    local_batch = cfg.batch_size // world_size
    if cfg.accum_steps > local_batch:
        raise OptionError(f"{{accum_steps}}={cfg.accum_steps} is more than the {local_batch} images per process "
                          "and step")
    in_chans = cfg.in_chans or info.in_chans

    # ---- processes, model, optimiser
    env = init_distributed(cfg.device)
    try:
        summary = _run(cfg, state, changes, env, out, train_ds, eval_ds, info, in_chans, t_start, weights)
    except BaseException:
        cleanup_distributed(wait=False)  # another process may be gone: no barrier (torchrun stops the rest)
        raise
    cleanup_distributed()
    return summary


def _run(cfg, state, changes, env, out, train_ds, eval_ds, info, in_chans, t_start, weights=None) -> Dict[str, Any]:
    from hilovit.data import Mixup

    reporter = Reporter(env, cfg.progress, cfg.log_interval)
    if cfg.overwrite and env.is_main:
        for name in _OUTPUT_FILES:
            (out / name).unlink(missing_ok=True)
    if state and int(state["epoch"]) >= (cfg.stop_at_epoch or cfg.epochs):
        done = out / "summary.json"
        reporter.print(f"nothing to do: the run in {str(out)!r} has already trained "
                       f"{plural(int(state['epoch']), 'epoch')}")
        if done.is_file():
            import json

            return {**json.loads(done.read_text(encoding="utf-8")), "rank": env.rank}
    _seed_everything(cfg.seed)
    weight_notes: list = []  # how the weights were fitted to this model: printed after the run's description
    model, img_size = build_model(cfg, info.num_classes, in_chans, weights, log=weight_notes.append)
    started_from = weights_record(model, weights) if not state else state.get("weights")
    if cfg.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise OptionError(f"model {cfg.model!r} cannot recompute its blocks in the backward pass; leave "
                              "{grad_checkpointing} out")
        model.set_grad_checkpointing(True)
    if cfg.sync_bn and env.distributed:
        model = convert_sync_batchnorm(model, env.device)
    model.to(env.device)
    lr, min_lr, warmup_lr = cfg.scaled_lr()
    optimizer = build_optimizer(model, cfg.optimizer, lr, cfg.weight_decay, cfg.betas, cfg.eps, cfg.momentum,
                                cfg.offset_lr_scale, cfg.layer_decay)
    train_batches = TrainBatches(train_ds, cfg.batch_size, cfg.seed, env.rank, env.world_size, cfg.workers,
                                 env.device.type == "cuda")
    steps_per_epoch = len(train_batches)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = min(total_steps, int(round(cfg.warmup_epochs * steps_per_epoch)))
    schedule = CosineWarmupSchedule(optimizer, lr, total_steps, warmup_steps, min_lr, warmup_lr)
    amp_dtype = resolve_amp(cfg.amp, env.device)
    # Evaluation: float32 on CPU (bfloat16 is no faster there for inference, and float32 gives the reference
    # numbers, equal to `hilovit eval`'s default); the training autocast on CUDA.
    eval_dtype = amp_dtype if env.device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda") if (amp_dtype == torch.float16 and env.device.type == "cuda") else None
    ema = ModelEma(model, cfg.model_ema_decay) if cfg.model_ema else None
    mean, std = info.mean, info.std
    pipeline = BatchPipeline(in_chans, img_size, mean, std, cfg.augment).to(env.device)
    crop_in_workers(train_ds, pipeline)  # image folders: the random-resized crop of the full image, in the workers
    eval_pipeline = BatchPipeline(in_chans, img_size, mean, std, None).to(env.device)
    mixup = Mixup(cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.mixup_switch_prob, cfg.label_smoothing,
                  num_classes=info.num_classes)
    eval_batch = cfg.eval_batch_size or max(1, 2 * cfg.batch_size // env.world_size)
    eval_batches = EvalBatches(eval_ds, eval_batch, env.rank, env.world_size, cfg.workers, env.device.type == "cuda")

    # ---- resume
    start_epoch, step, history, wall_before = 0, 0, [], 0.0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.step(int(state["step"]))
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if state.get("ema"):
                ema.load_state_dict(state["ema"])
            else:
                ema = ModelEma(model, cfg.model_ema_decay)
        if state.get("rng"):
            set_rng_state(state["rng"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history = list(state.get("history") or [])
        wall_before = float(state.get("wall_seconds_total", 0.0))
        if int(state.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
            raise ValueError(f"cannot resume: the run in {str(out)!r} had {state.get('steps_per_epoch')} steps per "
                             f"epoch, this set-up has {steps_per_epoch}")
    ddp_model = wrap_ddp(model, env)

    n_params = sum(p.numel() for p in model.parameters())
    meta = _metadata(cfg, cfg.model, info, in_chans, img_size, pipeline.normalize.mean.flatten().tolist(),
                     pipeline.normalize.std.flatten().tolist(), started_from)
    if env.is_main:
        atomic_write_text(out / "config.yaml", yaml_dump(cfg.to_dict()))
        if state and history:  # killed between saving last.pt and rewriting these: they follow last.pt again
            write_metrics_csv(out / "metrics.csv", history)
            plot_curves(history, out / "curves.png", f"{cfg.model} on {info.name}")
    what = f"resuming at epoch {start_epoch + 1} of {cfg.epochs}" if state else plural(cfg.epochs, "epoch")
    if cfg.stop_at_epoch and cfg.stop_at_epoch < cfg.epochs:
        what += f", stopping after epoch {cfg.stop_at_epoch}"
    reporter.print(
        f"{cfg.model}: {n_params / 1e6:.2f}M parameters, input {in_chans}x{img_size}x{img_size}, "
        f"{info.num_classes} classes | {info.name}: {len(train_ds)} training, {len(eval_ds)} {info.eval_split} images"
    )
    reporter.print(
        f"{what}, batch {cfg.batch_size} ({env.world_size} process{'es' if env.world_size > 1 else ''} on "
        f"{env.device}, {plural(torch.get_num_threads(), 'thread')} each), {steps_per_epoch} steps/epoch, "
        f"lr {lr:.3g} (warm-up {plural(warmup_steps, 'step')}), amp {amp_dtype or 'off'} -> {out}"
    )
    if started_from is not None and not state:
        where = [started_from["file"]] if started_from["file"] not in (None, started_from["given"]) else []
        where += [f"sha256 {started_from['sha256'][:12]}..."] if started_from["sha256"] else []
        reporter.print(f"starting from {started_from['given']}" + (f" ({', '.join(where)})" if where else ""))
        for note in weight_notes:
            reporter.print(note)
    if describe_changes(changes):
        reporter.print(describe_changes(changes))
    old_epochs = next((old for key, old, _ in changes if key == "epochs"), None)
    if old_epochs is not None:
        plan = lambda n: schedule_rate(lr, min_lr, warmup_lr, cfg.warmup_epochs, n, steps_per_epoch)  # noqa: E731
        reporter.print(describe_replan(plan(old_epochs), plan(cfg.epochs), step, old_epochs, cfg.epochs,
                                       steps_per_epoch, min_lr))
    ctx = dict(cfg=cfg, env=env, model=model, ddp_model=ddp_model, optimizer=optimizer, schedule=schedule,
               scaler=scaler, ema=ema, pipeline=pipeline, mixup=mixup, train_batches=train_batches,
               amp_dtype=amp_dtype, step=step, compiled=CompiledTraining(ddp_model, cfg.compile))
    tensorboard = TensorBoardLog(out / "tensorboard") if (cfg.log_tensorboard and env.is_main) else None
    last_eval: Dict[str, Any] = {}
    last_eval_ema: Dict[str, Any] = {}
    end_epoch = cfg.stop_at_epoch or cfg.epochs
    for epoch in range(start_epoch, end_epoch):
        seed = _epoch_seed(cfg.seed, epoch, env.rank)
        _seed_everything(seed)
        row: Dict[str, Any] = {"epoch": epoch + 1}
        _apply_freezing(ctx, epoch, reporter)
        try:
            stats = _train_one_epoch(ctx, epoch, reporter)
        except Exception as e:
            if is_out_of_memory(e):
                raise _out_of_memory(cfg, env, "training", e) from e
            raise
        row.update(stats)
        row["step"] = ctx["step"]
        t_eval = time.perf_counter()
        if (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs:
            if not cfg.sync_bn:
                _average_bn_stats(model, env.world_size)
            try:
                last_eval = evaluate(model, eval_batches, eval_pipeline, info.num_classes, env.device, eval_dtype)
                row.update(eval_loss=last_eval["loss"], eval_top1=last_eval["top1"], eval_top5=last_eval["top5"])
                if ema is not None:
                    last_eval_ema = evaluate(ema.module, eval_batches, eval_pipeline, info.num_classes, env.device,
                                             eval_dtype)
                    row.update(eval_top1_ema=last_eval_ema["top1"], eval_top5_ema=last_eval_ema["top5"])
            except Exception as e:
                if is_out_of_memory(e):
                    raise _out_of_memory(cfg, env, "evaluating", e, eval_batch) from e
                raise
        row["eval_seconds"] = time.perf_counter() - t_eval
        row["wall_seconds"] = wall_before + time.perf_counter() - t_start
        history.append(row)
        msg = (f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc {row['train_top1']:.2f}% "
               f"({row['images_per_second']:.0f} img/s, {row['train_seconds']:.0f} s)")
        if "eval_top1" in row:
            msg += (f" | {info.eval_split} loss {row['eval_loss']:.4f} top-1 {row['eval_top1']:.2f}% "
                    f"top-{last_eval.get('top5_k', 5)} {row['eval_top5']:.2f}%")
        if "eval_top1_ema" in row:
            msg += f" | EMA top-1 {row['eval_top1_ema']:.2f}%"
        reporter.print(msg)
        report_skipped_images(reporter.print, train_batches, eval_batches)  # files that failed to decode
        if env.is_main:
            ckpt = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "ema": ema.state_dict() if ema is not None else None,
                "epoch": epoch + 1,
                "step": ctx["step"],
                "steps_per_epoch": steps_per_epoch,
                "rng": get_rng_state(),
                "history": history,
                "config": cfg.to_dict(),
                "metadata": meta,
                "wall_seconds_total": row["wall_seconds"],
            }
            if started_from is not None:
                ckpt["weights"] = started_from
            atomic_torch_save(ckpt, out / "last.pt")
            if tensorboard is not None:
                tensorboard.write_epoch(row)
            write_metrics_csv(out / "metrics.csv", history)
            plot_curves(history, out / "curves.png", f"{cfg.model} on {info.name}")

    if tensorboard is not None:
        tensorboard.close()
    finished = end_epoch >= cfg.epochs
    wall = time.perf_counter() - t_start
    train_images = sum(r.get("train_images", 0) for r in history)
    train_seconds = sum(r.get("train_seconds", 0.0) for r in history)
    summary: Dict[str, Any] = {
        "model": cfg.model,
        "dataset": info.name,
        "eval_split": info.eval_split,
        "finished": finished,
        "epochs": int(history[-1]["epoch"]) if history else start_epoch,
        "epochs_planned": cfg.epochs,
        "steps": ctx["step"],
        "params": n_params,
        "train_images": len(train_ds),
        "eval_images": len(eval_ds),
        "batch_size": cfg.batch_size,
        "processes": env.world_size,
        "device": str(env.device),
        "threads": torch.get_num_threads(),
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off",
        "lr": lr,
        "pretrained": started_from,
        "train_images_per_second": train_images / train_seconds if train_seconds > 0 else None,
        "wall_seconds": wall,
        "wall_seconds_total": wall_before + wall,
        "files": {},
    }
    if cfg.compile:
        summary["compile"] = ctx["compiled"].result()
        if not ctx["compiled"].reported:
            reporter.print(ctx["compiled"].describe(summary["compile"]))
    if last_eval:
        summary.update({
            "test_top1": last_eval["top1"], "test_top5": last_eval["top5"], "test_topk": last_eval.get("top5_k", 5),
            "test_loss": last_eval["loss"],
            "eval_images_per_second": last_eval["images_per_second"],
            "per_class_accuracy": dict(zip(info.classes, last_eval["per_class_accuracy"])),
        })
    if last_eval_ema:
        summary.update({"test_top1_ema": last_eval_ema["top1"], "test_top5_ema": last_eval_ema["top5"],
                        "test_loss_ema": last_eval_ema["loss"]})
    if env.is_main:
        summary["files"] = {"last": str(out / "last.pt"), "metrics": str(out / "metrics.csv"),
                            "curves": str(out / "curves.png"), "config": str(out / "config.yaml")}
        if cfg.log_tensorboard:
            summary["files"]["tensorboard"] = str(out / "tensorboard")
        if finished:
            from hilovit.models.checkpoint import save_safetensors

            save_safetensors(model.state_dict(), out / "model.safetensors", metadata=meta)
            summary["files"]["weights"] = str(out / "model.safetensors")
            if ema is not None:
                save_safetensors(ema.module.state_dict(), out / "model_ema.safetensors", metadata=meta)
                summary["files"]["weights_ema"] = str(out / "model_ema.safetensors")
            if last_eval:
                from hilovit.viz import plot_confusion_matrix

                plot_confusion_matrix(last_eval["confusion"], list(info.classes), out / "confusion.png",
                                      title=f"{cfg.model} on {info.name} ({info.eval_split}): "
                                            f"top-1 {last_eval['top1']:.2f}%")
                summary["files"]["confusion"] = str(out / "confusion.png")
            summary["files"]["summary"] = str(out / "summary.json")
            summary["config"] = cfg.to_dict()
            write_json(out / "summary.json", summary)
    summary["rank"] = env.rank  # not in summary.json: tells callers which process this is
    return summary


def _out_of_memory(cfg: TrainConfig, env: DistEnv, doing: str, error: BaseException,
                   eval_batch: int = 0) -> TrainingOutOfMemoryError:
    """The one-line error for an allocation that failed: the batch that did not fit and how to need less."""
    where = f"{env.device}" + (f", {env.world_size} processes" if env.world_size > 1 else "")
    if doing == "evaluating":
        return TrainingOutOfMemoryError(
            f"out of memory while evaluating batches of {eval_batch} images per process ({where}); set "
            f"{{eval_batch_size}} to fewer (e.g. {max(1, eval_batch // 4)})")
    local = cfg.batch_size // env.world_size
    micro = -(-local // cfg.accum_steps)
    what = (f"out of memory while training with {{batch_size}}={cfg.batch_size} ({where}: micro-batches of "
            f"{plural(micro, 'image')} per process)")
    if micro > 1:
        more = min(local, cfg.accum_steps * 4)
        return TrainingOutOfMemoryError(
            f"{what}; split each step into more micro-batches with {{accum_steps}}={more} (same optimisation, "
            f"{-(-local // more)} images at a time), or use a smaller {{batch_size}}")
    return TrainingOutOfMemoryError(f"{what}; even one image does not fit: use a smaller model or {{img_size}}, "
                                    "or {grad_checkpointing}")
