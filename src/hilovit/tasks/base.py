"""The protocol every task implements: what the engine, the command line, ``predict`` and ``export`` call.

A task is one object (:class:`Task`) that knows its data, its loss, its metric and its outputs;
everything else (the epoch loop, resume, DDP, AMP, EMA, accumulation, compile, freezing,
progress, checkpoints, the command line) is written once and asks the task. A new task is a
subclass in ``hilovit/tasks/<name>.py`` registered in :mod:`hilovit.tasks`, its data module, a
recipe and its tests.

The engine's side (:class:`Task` methods under "training") works on a :class:`Run`: the
configuration, the data, the model, the processes and what the task keeps between steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn as nn

from hilovit.train.config import TrainConfig

__all__ = ["Task", "Run", "MicroBatch", "ExportSpec", "image_export_spec"]


@dataclass
class MicroBatch:
    """One forward/backward of a training step: the model ``inputs``, what the loss compares them with,
    and the share of the step's loss it carries (``weight``: its fraction of the step's samples)."""

    inputs: Any
    targets: Any
    weight: float = 1.0
    extra: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """What one training run holds while it runs (created by the engine, passed to the task)."""

    cfg: TrainConfig
    env: Any  # hilovit.train.distributed.DistEnv
    info: Any  # the data's description (classes, channels, statistics, ...)
    train_ds: Any
    eval_ds: Any
    model: nn.Module = None
    amp_dtype: Optional[torch.dtype] = None
    eval_dtype: Optional[torch.dtype] = None
    state: Dict[str, Any] = field(default_factory=dict)  # the task's own pieces (pipelines, mixing, ...)
    source: Any = None  # a module or factory given from Python instead of the registered model

    @property
    def device(self) -> torch.device:
        return self.env.device


@dataclass
class ExportSpec:
    """How a model of a task goes to ONNX: the module traced, its input and axes, and the checks.

    Attributes:
        module: the ``nn.Module`` traced (the network; post-processing stays outside, documented).
        example: the input traced, ``(B, C, H, W)``, or a tuple of tensors for a graph of several inputs.
        input_names, output_names: the graph's names; dynamic_axes: as ``torch.onnx.export``'s.
        checks: ``{label: input}``, the inputs (other batches and sizes) the file is verified at (tuples
            like ``example`` for several inputs).
        input_shape: ``(C, H, W)`` of the example (H, W are symbolic when the axes say so); of its first
            input for several.
        notes: lines for the user (what the graph holds, what is left to post-processing).
        companions: ``{suffix: spec}``, further graphs written beside the output, each to the output's
            name with ``.onnx`` replaced by ``suffix`` (e.g. ``'.roi_heads.onnx'``); all the files are
            verified before any is written, and either all are written or none.
    """

    module: nn.Module
    example: Union[torch.Tensor, Tuple[torch.Tensor, ...]]
    input_names: List[str]
    output_names: List[str]
    dynamic_axes: Dict[str, Dict[int, str]]
    checks: Dict[Any, Union[torch.Tensor, Tuple[torch.Tensor, ...]]]
    input_shape: Tuple[int, ...]
    notes: List[str] = field(default_factory=list)
    companions: Dict[str, ExportSpec] = field(default_factory=dict)


def image_export_spec(module: nn.Module, in_chans: int, sizes: Sequence[Tuple[int, int]], dynamic_batch: bool,
                      dynamic_size: bool, output_name: str, seed: int = 0) -> ExportSpec:
    """The spec of a model taking images ``(B, C, H, W)`` to one tensor.

    The first of ``sizes`` is traced (batch 2 with a dynamic batch, else 1). Checks: with a fixed
    size, batches 1 and 3 (dynamic batch) or 1, labelled by the batch; with dynamic sizes, every size
    at batch 1 and 3 in turn, labelled ``'BxHxW'``.
    """
    gen = torch.Generator().manual_seed(seed)
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    h, w = sizes[0]
    example = torch.randn(2 if dynamic_batch else 1, in_chans, h, w, generator=gen, dtype=dtype)
    axes: Dict[str, Dict[int, str]] = {}
    if dynamic_batch or dynamic_size:
        spatial = {2: "height", 3: "width"} if dynamic_size else {}
        axes = {"input": {**({0: "batch"} if dynamic_batch else {}), **spatial},
                output_name: {**({0: "batch"} if dynamic_batch else {}), **(spatial if output_name == "logits" and
                                                                                dynamic_size else {})}}
    checks: Dict[Any, torch.Tensor] = {}
    if dynamic_size:
        for i, (hh, ww) in enumerate(sizes):
            b = (1 if i % 2 == 0 else 3) if dynamic_batch else 1
            checks[f"{b}x{hh}x{ww}"] = torch.randn(b, in_chans, hh, ww, generator=gen, dtype=dtype)
    else:
        for b in ((1, 3) if dynamic_batch else (1,)):
            checks[b] = torch.randn(b, in_chans, h, w, generator=gen, dtype=dtype)
    return ExportSpec(module, example, ["input"], [output_name], axes, checks, (in_chans, h, w))


class Task:
    """The base of every task; subclasses set the class attributes and implement the methods.

    Attributes:
        name: the task's name (``--task NAME``, ``task:`` in recipes and checkpoint metadata).
        config_class: its :class:`~hilovit.train.config.TrainConfig` subclass.
        metric_columns: the columns of ``metrics.csv``.
        entry_points: ``{"run_eval" | "format_eval" | "predict_files": "module:function"}``, the functions the
            commands call, imported only when called (``hilovit --help`` imports no task code).
        eval_options, predict_options: the command-line options ``hilovit eval`` / ``predict`` pass to them.
        export_sizes: the default (H, W) sizes an export is traced at (the first) and verified at.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[Type[TrainConfig]] = TrainConfig
    metric_columns: ClassVar[List[str]] = []
    entry_points: ClassVar[Dict[str, str]] = {}
    eval_options: ClassVar[Tuple[str, ...]] = ()
    predict_options: ClassVar[Tuple[str, ...]] = ()
    export_sizes: ClassVar[Tuple[Tuple[int, int], ...]] = ()

    # ------------------------------------------------------------------ configuration
    def default_recipe(self, options: Mapping[str, Any]) -> Optional[str]:
        """A packaged recipe to start from when none is given (e.g. for the embedded data set)."""
        return None

    # ------------------------------------------------------------------ data and model
    def build_data(self, cfg: TrainConfig) -> Tuple[Any, Any, Any]:
        """``(train_dataset, eval_dataset, info)``; ``info`` has at least ``name``, ``classes``,
        ``num_classes``, ``in_chans``, ``mean``, ``std`` and ``eval_split``."""
        raise NotImplementedError

    def check_run(self, cfg: TrainConfig, train_ds: Any, info: Any, world_size: int) -> None:
        """Checks that need the data (before any process group or model exists)."""

    def build_model(self, cfg: TrainConfig, info: Any, weights: Any, log) -> nn.Module:
        """The model of a run, with the starting ``weights`` (a :class:`~hilovit.train.finetune.WeightsPlan`
        or None) loaded; ``log(line)`` takes one line per adaptation of the weights."""
        raise NotImplementedError

    def model_from_source(self, source: Any, info: Any) -> nn.Module:
        """A model given from Python: an ``nn.Module`` as it is, or ``factory(num_classes=, in_chans=)``."""
        if isinstance(source, nn.Module):
            return source
        built = source(num_classes=info.num_classes, in_chans=info.in_chans)
        if not isinstance(built, nn.Module):
            raise TypeError(f"model factory returned {type(built).__name__}, expected an nn.Module")
        return built

    def describe(self, run: Run) -> str:
        """The first line a run prints: model, parameters, input, classes, data."""
        raise NotImplementedError

    def metadata(self, run: Run) -> Dict[str, str]:
        """The task's entries of the weights' metadata (strings), beside the engine's."""
        return {}

    # ------------------------------------------------------------------ optimisation
    def build_optimizer(self, cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def build_schedule(self, cfg: TrainConfig, optimizer, epochs: int, steps_per_epoch: int):
        """A schedule with ``lr_at(step)``, ``step(n)``, ``get_last_lr()``, ``state_dict()``."""
        raise NotImplementedError

    def describe_rate(self, cfg: TrainConfig, schedule) -> str:
        return f"lr {schedule.get_last_lr():.3g}"

    # ------------------------------------------------------------------ the loop
    def prepare(self, run: Run) -> None:
        """Build what the steps and evaluations need into ``run.state`` (after the model)."""

    def train_batches(self, run: Run):
        """This process's batches: ``len()``, ``set_epoch(epoch)``, iteration; a function of
        ``(seed, epoch, rank)`` alone."""
        raise NotImplementedError

    def set_epoch(self, run: Run, epoch: int) -> None:
        """Called before each epoch (after the generators are reseeded)."""

    def micro_batches(self, run: Run, batch: Any, count: int) -> List[MicroBatch]:
        """The step's batch moved to the device, prepared (augmented, mixed) and split into ``count`` parts."""
        raise NotImplementedError

    def forward_loss(self, run: Run, forward: nn.Module, micro: MicroBatch) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(loss, stats)`` of one micro-batch under the engine's autocast: the loss to back-propagate
        (weighted by the engine with ``micro.weight``) and a float64 tensor of sums the task
        accumulates over the epoch (summed over processes at its end)."""
        raise NotImplementedError

    def stats_size(self) -> int:
        return 1

    def progress(self, sums: torch.Tensor) -> Dict[str, float]:
        """The running figures shown in the progress bar and log lines (``loss`` first)."""
        raise NotImplementedError

    def epoch_stats(self, sums: torch.Tensor) -> Dict[str, Any]:
        """The epoch's training figures for ``metrics.csv`` (``train_loss``, ...), from the summed stats."""
        raise NotImplementedError

    def samples_in(self, sums: torch.Tensor) -> int:
        """How many training samples the summed stats cover."""
        raise NotImplementedError

    def after_epoch(self, run: Run, print_fn, train_batches) -> None:
        """Called after each epoch's evaluation (e.g. to report unreadable files)."""

    def eval_batch_size(self, run: Run) -> int:
        """The evaluation batch per process (named when it runs out of memory)."""
        return run.cfg.eval_batch_size or run.cfg.batch_size

    def evaluate(self, run: Run, model: nn.Module) -> Dict[str, Any]:
        """Evaluate ``model`` on ``run.eval_ds`` (each process its share, totals summed)."""
        raise NotImplementedError

    def eval_row(self, result: Mapping[str, Any]) -> Dict[str, Any]:
        """The metrics of an evaluation, for the epoch's row of ``metrics.csv``."""
        raise NotImplementedError

    def describe_epoch(self, run: Run, row: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def summary(self, run: Run, result: Mapping[str, Any], ema_result: Mapping[str, Any]) -> Dict[str, Any]:
        """The task's entries of ``summary.json`` (the last evaluation's metrics)."""
        return {}

    def final_files(self, run: Run, out, result: Mapping[str, Any]) -> Dict[str, str]:
        """Pictures and reports written after the last epoch (a failure warns, never stops the run)."""
        return {}

    def format_summary(self, summary: Mapping[str, Any]) -> List[str]:
        """The result lines ``hilovit train`` prints at the end (before the common ones)."""
        return []

    # ------------------------------------------------------------------ inference
    def head_prefixes(self, model: nn.Module) -> List[str]:
        """The modules that train while the backbone is frozen."""
        heads = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "head")
        return [heads] if isinstance(heads, str) else list(heads)

    def export_spec(self, model: nn.Module, sizes: Optional[Sequence[Tuple[int, int]]], dynamic_batch: bool,
                    in_chans: int) -> ExportSpec:
        """The ONNX export of ``model`` (see :class:`ExportSpec`); ``sizes`` None: the task's defaults."""
        raise NotImplementedError

    def _entry(self, name: str):
        import importlib

        if name not in self.entry_points:
            raise NotImplementedError(f"the {self.name} task has no {name}")
        module, function = self.entry_points[name].split(":")
        return getattr(importlib.import_module(module), function)

    def run_eval(self, **options: Any) -> Dict[str, Any]:
        """``hilovit eval`` of a checkpoint or published weights; the result is what ``eval.json`` holds."""
        return self._entry("run_eval")(**options)

    def format_eval(self, result: Mapping[str, Any]) -> str:
        return self._entry("format_eval")(result)

    def predict_files(self, images: Sequence[Any], **options: Any) -> List[Any]:
        """``hilovit predict``: one result per image (errors per image)."""
        return self._entry("predict_files")(images, **options)

    def format_predictions(self, results: Sequence[Any], as_json: bool = False) -> str:
        raise NotImplementedError
