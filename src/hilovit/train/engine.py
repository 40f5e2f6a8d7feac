"""The one training engine behind ``hilovit train``, for every task: one process or many (``torchrun``).

:func:`train` finds the task (:func:`hilovit.tasks.resolve_task`), checks every input first
(model, device, output folder, a run to resume, the starting weights, the data), so bad input
fails before any training with one clear message. Then each epoch:

1. reseed torch, numpy and Python from ``(seed, epoch, rank)`` and walk the batches in the order of
   ``(seed, epoch)``, so a resumed run replays nothing;
2. per step: the task prepares the batch and splits it into ``accum_steps`` micro-batches; each
   runs forward under autocast and the task's loss, backward (gradients all-reduced once per step
   by DistributedDataParallel); then clipping, the optimiser, the schedule and the EMA;
3. evaluate (every ``eval_interval`` epochs and after the last), each process on its share;
4. rank 0 writes ``last.pt`` (model, optimiser, schedule, scaler, EMA, epoch, step, RNG states,
   history, configuration) atomically, rewrites ``metrics.csv`` and ``curves.png``.

After the last epoch: ``model.safetensors`` (the task, model name, classes and normalisation in its
metadata), ``model_ema.safetensors`` with EMA, the task's pictures, ``summary.json``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

from hilovit.device import is_out_of_memory, resolve_device
from hilovit.runtime import autocast_context, resolve_amp
from hilovit.tasks import resolve_task
from hilovit.tasks.base import Run, Task
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
from hilovit.train.finetune import hold_backbone_norms, resolve_weights, set_backbone_frozen, weights_record
from hilovit.train.optim import optimizer_step
from hilovit.train.output import ENGINE_FILES, check_output, clear_output
from hilovit.train.report import (
    Reporter,
    TensorBoardLog,
    format_summary,
    plot_curves,
    plural,
    print_summary,
    write_metrics_csv,
    yaml_dump,
)
from hilovit.train.resume import describe_changes, describe_replan, resolve_run
from hilovit.train.state import (
    atomic_torch_save,
    atomic_write_text,
    get_rng_state,
    missing_folders,
    remove_empty_folders,
    remove_stale_temporaries,
    set_rng_state,
    write_json,
)

__all__ = ["train", "format_summary", "print_summary", "TrainingDivergedError", "TrainingOutOfMemoryError"]


class TrainingDivergedError(OptionError):
    """The training loss became NaN or infinite."""


class TrainingOutOfMemoryError(OptionError):
    """The device ran out of memory: the message names the batch size and how to need less."""


# --------------------------------------------------------------------------- set-up
def seed_everything(seed: int) -> None:
    seed = int(seed) % (2**31 - 1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 100_003 + epoch * 1_009 + rank * 17 + 1) % (2**31 - 1)


def _metadata(task: Task, run: Run, started_from: Optional[Dict[str, Any]]) -> Dict[str, str]:
    from hilovit import __version__

    cfg, info = run.cfg, run.info
    meta = {} if started_from is None else {  # safetensors metadata holds strings only
        "pretrained": str(started_from["given"]), "pretrained_source": str(started_from["source"] or ""),
        "pretrained_file": str(started_from["file"] or ""), "pretrained_sha256": str(started_from["sha256"] or ""),
    }
    meta.update({
        "format": "hilovit-train",
        "task": task.name,
        "model": cfg.model,
        "num_classes": str(info.num_classes),
        "in_chans": str(run.state.get("in_chans", info.in_chans)),
        "classes": json.dumps(list(info.classes)),
        "dataset": info.name,
        "mean": ",".join(f"{v:.6g}" for v in run.state.get("mean", info.mean)),
        "std": ",".join(f"{v:.6g}" for v in run.state.get("std", info.std)),
        "model_kwargs": json.dumps(cfg.model_kwargs),
        "hilovit_version": __version__,
    })
    meta.update(task.metadata(run))
    return meta


def _average_bn_stats(model: nn.Module, world_size: int) -> None:
    """Average BatchNorm running statistics over processes (without SyncBatchNorm they differ per process)."""
    if world_size <= 1:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                all_reduce_sum(buf)
                buf.div_(world_size)


# --------------------------------------------------------------------------- one epoch
class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _train_one_epoch(task: Task, run: Run, ctx: Dict[str, Any], epoch: int, reporter: Reporter) -> Dict[str, Any]:
    cfg, env = run.cfg, run.env
    model, ddp_model = run.model, ctx["ddp_model"]
    optimizer, schedule, scaler, ema = ctx["optimizer"], ctx["schedule"], ctx["scaler"], ctx["ema"]
    batches, compiled = ctx["train_batches"], ctx["compiled"]
    ddp_model.train()
    if ctx.get("backbone_frozen"):
        hold_backbone_norms(model, task.head_prefixes(model))
    task.set_epoch(run, epoch)
    batches.set_epoch(epoch)
    n_steps = len(batches)
    sums = torch.zeros(task.stats_size(), dtype=torch.float64)
    bar = reporter.bar(n_steps, f"epoch {epoch + 1}/{cfg.epochs}")
    t0 = last_log = time.perf_counter()
    for i, batch in enumerate(batches):
        forward = compiled.module_for_step()
        micro = task.micro_batches(run, batch, cfg.accum_steps)
        for j, part in enumerate(micro):
            sync = j == len(micro) - 1
            with (ddp_model.no_sync() if (not sync and hasattr(ddp_model, "no_sync")) else _nullctx()):
                with autocast_context(env.device, run.amp_dtype):
                    loss, stats = task.forward_loss(run, forward, part)
                weighted = loss * part.weight
                (scaler.scale(weighted) if scaler is not None else weighted).backward()
            lv = float(loss.detach())
            if not math.isfinite(lv):
                raise TrainingDivergedError(
                    f"the training loss is {lv} at epoch {epoch + 1}, step {i + 1}; lower {{lr}} (now "
                    f"{schedule.get_last_lr():.3g}) or turn {{amp}} off")
            sums += stats
        optimizer_step(model, optimizer, scaler, schedule, cfg.clip_grad)
        ctx["step"] += 1
        timed = compiled.step_done()
        if timed is not None:
            reporter.print(compiled.describe(timed))
        if ema is not None:
            ema.update(model)
        elapsed = time.perf_counter() - t0
        ips = task.samples_in(sums) * env.world_size / elapsed if elapsed > 0 else 0.0
        figures = task.progress(sums)
        if bar is not None:
            shown = " ".join(f"{k} {v:.4f}" if k == "loss" else f"{k} {v:.1f}%" for k, v in figures.items())
            bar.set_postfix_str(f"{shown} lr {schedule.get_last_lr():.2e} {ips:.1f} img/s", refresh=False)
            bar.update(1)
        elif reporter.mode == "log" and ((i + 1) % reporter.log_interval == 0 or i + 1 == n_steps):
            now = time.perf_counter()
            if i + 1 < n_steps or now - last_log > 0:
                shown = "  ".join(f"{k} {v:.4f}" if k == "loss" else f"{k} {v:.2f}%" for k, v in figures.items())
                reporter.print(f"epoch {epoch + 1}/{cfg.epochs}  step {i + 1}/{n_steps}  {shown}  "
                               f"lr {schedule.get_last_lr():.3e}  {ips:.1f} img/s")
                last_log = now
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    all_reduce_sum(sums)
    n = task.samples_in(sums)
    return {**task.epoch_stats(sums), "train_images": n, "train_seconds": seconds,
            "images_per_second": n / seconds if seconds > 0 else None, "lr": schedule.get_last_lr()}


def _apply_freezing(task: Task, run: Run, ctx: Dict[str, Any], epoch: int, reporter: Reporter) -> None:
    """Freeze the backbone for the first ``freeze_backbone_epochs`` epochs, thaw it after: a function of the
    epoch alone, so a resumed run is in the same state (BatchNorm statistics are held too). DDP registers
    the parameters that need gradients when it wraps the model: it wraps it again when that set changes."""
    cfg = run.cfg
    if not cfg.freeze_backbone_epochs:
        return
    frozen = ctx["backbone_frozen"] = epoch < cfg.freeze_backbone_epochs
    changed = set_backbone_frozen(run.model, frozen, task.head_prefixes(run.model))
    if changed and run.env.distributed:
        ctx["ddp_model"] = wrap_ddp(run.model, run.env)
        ctx["compiled"].replace_module(ctx["ddp_model"])
    if frozen and changed:
        reporter.print(f"backbone frozen for the first {plural(cfg.freeze_backbone_epochs, 'epoch')}: only the "
                       "classifier head trains")
    elif epoch == cfg.freeze_backbone_epochs:
        reporter.print(f"backbone unfrozen at epoch {epoch + 1}: every layer trains from here")


# --------------------------------------------------------------------------- the run
def train(config: Optional[TrainConfig] = None, recipe=None, task: Optional[str] = None,
          **overrides: Any) -> Dict[str, Any]:
    """Train a registered model; see the module docstring and the task's configuration for the options.

    Call with a configuration (``ClassificationConfig(...)``, ``SegmentationConfig(...)``), or with a
    recipe path/name and keyword options (``train(model='litv2_nano', data='fashion-mnist', epochs=2,
    output='runs/x')``). From Python, ``model`` may also be an ``nn.Module`` or a factory called as
    ``factory(num_classes=..., in_chans=...)`` (its weights are saved under the configuration's model
    name; give ``task`` then). ``task`` is inferred when not given: from the configuration, the recipe's
    ``task:``, the run being resumed or the model. With ``resume=True`` the options saved in
    ``output/last.pt`` are used, except those given here (see :mod:`hilovit.train.resume`).

    Returns:
        The summary (also written to ``output/summary.json`` after the last epoch): the task's test
        metrics, ``epochs``, ``train_images_per_second``, ``wall_seconds``, ``files``, ...
        ``finished`` is False when ``stop_at_epoch`` ended the run early.
    """
    t_start = time.perf_counter()
    source = None
    if "model" in overrides and not isinstance(overrides["model"], str):  # a module or a factory, from Python
        source = overrides.pop("model")
        if not (isinstance(source, nn.Module) or callable(source)):
            raise TypeError(f"model must be a registered name, an nn.Module or a factory, got {type(source).__name__}")
    the_task = resolve_task(task, config=config, recipe=recipe, options=overrides)
    cfg, state, changes = resolve_run(the_task, config, recipe, overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # ---- checks, before anything is trained (same on every process)
    from hilovit.models.registry import model_entrypoint

    if source is None:
        model_entrypoint(cfg.model)  # ValueError listing the models
    resolve_device(cfg.device)  # ValueError for an unknown name or a device this machine lacks
    out = check_output(cfg.output, resume=cfg.resume, overwrite=cfg.overwrite)
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
    train_ds, eval_ds, info = the_task.build_data(cfg)
    if cfg.batch_size > len(train_ds):
        subset = f" ({{train_subset}}={cfg.train_subset})" if cfg.train_subset else ""
        raise OptionError(f"{{batch_size}}={cfg.batch_size} is larger than the training set: {len(train_ds)} images "
                          f"in {info.name}{subset}; use a batch of at most {len(train_ds)}")
    local_batch = cfg.batch_size // world_size
    if cfg.accum_steps > local_batch:
        raise OptionError(f"{{accum_steps}}={cfg.accum_steps} is more than the {local_batch} images per process "
                          "and step")
    the_task.check_run(cfg, train_ds, info, world_size)

    # ---- processes, model, optimiser
    env = init_distributed(cfg.device)
    run = Run(cfg=cfg, env=env, info=info, train_ds=train_ds, eval_ds=eval_ds, source=source)
    created = missing_folders(out)  # made by this run when it writes; removed again if it fails before last.pt
    try:
        summary = _run(the_task, run, state, changes, out, t_start, weights)
    except BaseException:
        cleanup_distributed(wait=False)  # another process may be gone: no barrier (torchrun stops the rest)
        if env.is_main and not (out / "last.pt").exists():
            _undo_output(out, created)
        raise
    cleanup_distributed()
    return summary


def _undo_output(out: Path, created: List[Path]) -> None:
    """A run that failed before saving any epoch leaves nothing: its ``config.yaml``, and the folders it made."""
    try:
        (out / "config.yaml").unlink()
    except OSError:
        pass
    remove_empty_folders(created)


def _resume(run: Run, ctx: Dict[str, Any], state: Dict[str, Any], out: Path, steps_per_epoch: int) -> None:
    run.model.load_state_dict(state["model"])
    ctx["optimizer"].load_state_dict(state["optimizer"])
    ctx["schedule"].step(int(state["step"]))
    if ctx["scaler"] is not None and state.get("scaler"):
        ctx["scaler"].load_state_dict(state["scaler"])
    if ctx["ema"] is not None:
        if state.get("ema"):
            ctx["ema"].load_state_dict(state["ema"])
        else:
            ctx["ema"] = ModelEma(run.model, run.cfg.model_ema_decay)
    if state.get("rng"):
        set_rng_state(state["rng"])
    if int(state.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:
        raise ValueError(f"cannot resume: the run in {str(out)!r} had {state.get('steps_per_epoch')} steps per "
                         f"epoch, this set-up has {steps_per_epoch}")


def _setup(task: Task, run: Run, state, weights, reporter: Reporter) -> Dict[str, Any]:
    """Model, optimiser, schedule, scaler, EMA and batches of a run (its state loaded when resuming)."""
    cfg, env = run.cfg, run.env
    seed_everything(cfg.seed)
    notes: List[str] = []  # how the weights were fitted to this model: printed after the run's description
    model = task.build_model(cfg, run.info, weights, notes.append) if run.source is None else \
        task.model_from_source(run.source, run.info)
    started_from = weights_record(model, weights) if not state else state.get("weights")
    if cfg.grad_checkpointing:
        if not hasattr(model, "set_grad_checkpointing"):
            raise OptionError(f"model {cfg.model!r} cannot recompute its blocks in the backward pass; leave "
                              "{grad_checkpointing} out")
        model.set_grad_checkpointing(True)
    if cfg.sync_bn and env.distributed:
        model = convert_sync_batchnorm(model, env.device)
    run.model = model.to(env.device)
    run.amp_dtype = resolve_amp(cfg.amp, env.device)
    # Evaluation: float32 on CPU (the reference numbers, equal to `hilovit eval`'s default); the training
    # autocast on CUDA.
    run.eval_dtype = run.amp_dtype if env.device.type == "cuda" else None
    optimizer = task.build_optimizer(cfg, model)
    train_batches = task.train_batches(run)
    steps_per_epoch = len(train_batches)
    schedule = task.build_schedule(cfg, optimizer, cfg.epochs, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if (run.amp_dtype == torch.float16 and env.device.type == "cuda") else None
    ema = ModelEma(model, cfg.model_ema_decay) if cfg.model_ema else None
    task.prepare(run)
    ctx = dict(optimizer=optimizer, schedule=schedule, scaler=scaler, ema=ema, train_batches=train_batches,
               steps_per_epoch=steps_per_epoch, step=0, started_from=started_from, notes=notes)
    return ctx


def _run(task: Task, run: Run, state, changes, out: Path, t_start: float, weights=None) -> Dict[str, Any]:
    cfg, env = run.cfg, run.env
    reporter = Reporter(env, cfg.progress, cfg.log_interval)
    if cfg.overwrite and env.is_main:
        clear_output(out)
    if state and int(state["epoch"]) >= (cfg.stop_at_epoch or cfg.epochs):
        done = out / "summary.json"
        reporter.print(f"nothing to do: the run in {str(out)!r} has already trained "
                       f"{plural(int(state['epoch']), 'epoch')}")
        if done.is_file():
            return {**json.loads(done.read_text(encoding="utf-8")), "rank": env.rank}
    ctx = _setup(task, run, state, weights, reporter)
    steps_per_epoch = ctx["steps_per_epoch"]
    start_epoch, history, wall_before = 0, [], 0.0
    if state:
        _resume(run, ctx, state, out, steps_per_epoch)
        start_epoch, ctx["step"] = int(state["epoch"]), int(state["step"])
        history = list(state.get("history") or [])
        wall_before = float(state.get("wall_seconds_total", 0.0))
    ctx["ddp_model"] = wrap_ddp(run.model, env)
    ctx["compiled"] = CompiledTraining(ctx["ddp_model"], cfg.compile)
    meta = _metadata(task, run, ctx["started_from"])
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)  # proven creatable by check_output
        atomic_write_text(out / "config.yaml", yaml_dump(cfg.to_dict()))
        if state and history:  # killed between saving last.pt and rewriting these: they follow last.pt again
            write_metrics_csv(out / "metrics.csv", history, task.metric_columns)
            plot_curves(history, out / "curves.png", f"{cfg.model} on {run.info.name}")
    _describe_start(task, run, ctx, state, changes, start_epoch, out, reporter)
    tensorboard = TensorBoardLog(out / "tensorboard") if (cfg.log_tensorboard and env.is_main) else None
    results: Dict[str, Any] = {"last": {}, "ema": {}}
    end_epoch = cfg.stop_at_epoch or cfg.epochs
    for epoch in range(start_epoch, end_epoch):
        seed_everything(epoch_seed(cfg.seed, epoch, env.rank))
        row: Dict[str, Any] = {"epoch": epoch + 1}
        _apply_freezing(task, run, ctx, epoch, reporter)
        try:
            row.update(_train_one_epoch(task, run, ctx, epoch, reporter))
        except Exception as e:
            if is_out_of_memory(e):
                raise _out_of_memory(cfg, env, "training", e) from e
            raise
        row["step"] = ctx["step"]
        t_eval = time.perf_counter()
        if (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs:
            row.update(_evaluate(task, run, ctx, results))
        row["eval_seconds"] = time.perf_counter() - t_eval
        row["wall_seconds"] = wall_before + time.perf_counter() - t_start
        history.append(row)
        reporter.print(task.describe_epoch(run, row))
        task.after_epoch(run, reporter.print, ctx["train_batches"])
        if env.is_main:
            _save_epoch(run, ctx, epoch, history, meta, row, out)
            if tensorboard is not None:
                tensorboard.write_epoch(row)
            write_metrics_csv(out / "metrics.csv", history, task.metric_columns)
            plot_curves(history, out / "curves.png", f"{cfg.model} on {run.info.name}")
    if tensorboard is not None:
        tensorboard.close()
    return _finish(task, run, ctx, history, results, meta, start_epoch, end_epoch, wall_before, t_start, out,
                   reporter)


def _evaluate(task: Task, run: Run, ctx: Dict[str, Any], results: Dict[str, Any]) -> Dict[str, Any]:
    if not run.cfg.sync_bn:
        _average_bn_stats(run.model, run.env.world_size)
    row: Dict[str, Any] = {}
    try:
        results["last"] = task.evaluate(run, run.model)
        row.update(task.eval_row(results["last"]))
        if ctx["ema"] is not None:
            results["ema"] = task.evaluate(run, ctx["ema"].module)
            row.update({f"{k}_ema": v for k, v in task.eval_row(results["ema"]).items()})
    except Exception as e:
        if is_out_of_memory(e):
            raise _out_of_memory(run.cfg, run.env, "evaluating", e, task.eval_batch_size(run)) from e
        raise
    return row


def _describe_start(task: Task, run: Run, ctx, state, changes, start_epoch: int, out: Path,
                    reporter: Reporter) -> None:
    cfg, env = run.cfg, run.env
    what = f"resuming at epoch {start_epoch + 1} of {cfg.epochs}" if state else plural(cfg.epochs, "epoch")
    if cfg.stop_at_epoch and cfg.stop_at_epoch < cfg.epochs:
        what += f", stopping after epoch {cfg.stop_at_epoch}"
    reporter.print(task.describe(run))
    reporter.print(
        f"{what}, batch {cfg.batch_size} ({env.world_size} process{'es' if env.world_size > 1 else ''} on "
        f"{env.device}, {plural(torch.get_num_threads(), 'thread')} each), {ctx['steps_per_epoch']} steps/epoch, "
        f"{task.describe_rate(cfg, ctx['schedule'])}, amp {run.amp_dtype or 'off'} -> {out}")
    started_from = ctx["started_from"]
    if started_from is not None and not state:
        where = [started_from["file"]] if started_from["file"] not in (None, started_from["given"]) else []
        where += [f"sha256 {started_from['sha256'][:12]}..."] if started_from["sha256"] else []
        reporter.print(f"starting from {started_from['given']}" + (f" ({', '.join(where)})" if where else ""))
        for note in ctx["notes"]:
            reporter.print(note)
    if describe_changes(changes):
        reporter.print(describe_changes(changes))
    old_epochs = next((old for key, old, _ in changes if key == "epochs"), None)
    if old_epochs is not None:
        spe = ctx["steps_per_epoch"]
        plan = lambda n: task.build_schedule(cfg, None, n, spe).lr_at  # noqa: E731
        reporter.print(describe_replan(plan(old_epochs), plan(cfg.epochs), ctx["step"], old_epochs, cfg.epochs,
                                       spe, plan(cfg.epochs)(cfg.epochs * spe)))


def _save_epoch(run: Run, ctx, epoch: int, history, meta, row, out: Path) -> None:
    ckpt = {
        "model": run.model.state_dict(),
        "optimizer": ctx["optimizer"].state_dict(),
        "schedule": ctx["schedule"].state_dict(),
        "scaler": ctx["scaler"].state_dict() if ctx["scaler"] is not None else None,
        "ema": ctx["ema"].state_dict() if ctx["ema"] is not None else None,
        "epoch": epoch + 1,
        "step": ctx["step"],
        "steps_per_epoch": ctx["steps_per_epoch"],
        "rng": get_rng_state(),
        "history": history,
        "config": run.cfg.to_dict(),
        "metadata": meta,
        "wall_seconds_total": row["wall_seconds"],
    }
    if ctx["started_from"] is not None:
        ckpt["weights"] = ctx["started_from"]
    atomic_torch_save(ckpt, out / "last.pt")


def _finish(task: Task, run: Run, ctx, history, results, meta, start_epoch: int, end_epoch: int,
            wall_before: float, t_start: float, out: Path, reporter: Reporter) -> Dict[str, Any]:
    cfg, env = run.cfg, run.env
    finished = end_epoch >= cfg.epochs
    wall = time.perf_counter() - t_start
    train_images = sum(r.get("train_images", 0) for r in history)
    train_seconds = sum(r.get("train_seconds", 0.0) for r in history)
    summary: Dict[str, Any] = {
        "task": task.name,
        "model": cfg.model,
        "dataset": run.info.name,
        "eval_split": run.info.eval_split,
        "finished": finished,
        "epochs": int(history[-1]["epoch"]) if history else start_epoch,
        "epochs_planned": cfg.epochs,
        "steps": ctx["step"],
        "params": sum(p.numel() for p in run.model.parameters()),
        "train_images": len(run.train_ds),
        "eval_images": len(run.eval_ds),
        "batch_size": cfg.batch_size,
        "processes": env.world_size,
        "device": str(env.device),
        "threads": torch.get_num_threads(),
        "amp": str(run.amp_dtype).replace("torch.", "") if run.amp_dtype else "off",
        "lr": ctx["schedule"].base_lr,
        "pretrained": ctx["started_from"],
        "train_images_per_second": train_images / train_seconds if train_seconds > 0 else None,
        "wall_seconds": wall,
        "wall_seconds_total": wall_before + wall,
        "files": {},
    }
    if cfg.compile:
        summary["compile"] = ctx["compiled"].result()
        if not ctx["compiled"].reported:
            reporter.print(ctx["compiled"].describe(summary["compile"]))
    if results["last"]:
        summary.update(task.summary(run, results["last"], results["ema"]))
    if env.is_main:
        summary["files"] = {"last": str(out / "last.pt"), "metrics": str(out / "metrics.csv"),
                            "curves": str(out / "curves.png"), "config": str(out / "config.yaml")}
        if cfg.log_tensorboard:
            summary["files"]["tensorboard"] = str(out / "tensorboard")
        if finished:
            from hilovit.models.checkpoint import save_safetensors

            save_safetensors(run.model.state_dict(), out / "model.safetensors", metadata=meta)
            summary["files"]["weights"] = str(out / "model.safetensors")
            if ctx["ema"] is not None:
                save_safetensors(ctx["ema"].module.state_dict(), out / "model_ema.safetensors", metadata=meta)
                summary["files"]["weights_ema"] = str(out / "model_ema.safetensors")
            if results["last"]:
                summary["files"].update(_final_files(task, run, out, results["last"]))
            summary["files"]["summary"] = str(out / "summary.json")
            summary["config"] = cfg.to_dict()
            write_json(out / "summary.json", summary)
    summary["rank"] = env.rank  # not in summary.json: tells callers which process this is
    return summary


def _final_files(task: Task, run: Run, out: Path, result) -> Dict[str, str]:
    import sys

    try:
        return task.final_files(run, out, result)
    except Exception as e:  # noqa: BLE001 - a picture must never stop training after its last epoch
        print(f"warning: could not draw the {task.name} pictures: {e}", file=sys.stderr)
        return {}


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
    return TrainingOutOfMemoryError(f"{what}; even one image does not fit: use a smaller model or input size, "
                                    "or {grad_checkpointing}")


__all__ += ["ENGINE_FILES", "seed_everything", "epoch_seed"]
