"""Training configurations: the options every task shares, YAML recipes and overrides, in that order.

:class:`TrainConfig` holds what the engine itself reads (model, data, length, batch, rate, the
hardware, checkpoints, fine-tuning); each task subclasses it with its own options and defaults
(:class:`hilovit.tasks.classification.ClassificationConfig`,
:class:`hilovit.tasks.segmentation.SegmentationConfig`, ...). Every field declares its check
(:mod:`hilovit.options`) beside its default, so one loop validates a configuration.

A recipe is a YAML mapping of a configuration's fields (``task:`` names the task it is for);
``--config NAME`` also accepts the name of a recipe shipped in ``hilovit/train/recipes/``
(:func:`list_recipes`).
"""

from __future__ import annotations

import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Union

import yaml

from hilovit.options import (
    OptionError,
    check_bool,
    check_choice,
    check_fraction,
    check_image_size,
    check_int,
    check_number,
    check_pair,
    check_str,
)

__all__ = ["TrainConfig", "OptionError", "option", "load_recipe", "list_recipes", "merge_options", "RECIPE_DIR",
           "IN_MEMORY", "AMP_CHOICES", "PROGRESS_CHOICES"]

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
PROGRESS_CHOICES = ("auto", "bar", "log", "off")
IN_MEMORY = "state dict (in memory)"  # how a state dict given as ``pretrained`` is written down
Check = Callable[[Any, str], Any]


# --------------------------------------------------------------------------- field checks
def option(default: Any = MISSING, check: Optional[Check] = None, default_factory: Any = MISSING):
    """A configuration field with its check ``check(value, name) -> value`` (the value as stored)."""
    return field(default=default, default_factory=default_factory, metadata={"check": check})


def positive_int(allow_none: bool = False) -> Check:
    return lambda v, n: check_int(v, n, 1, allow_none=allow_none)


def non_negative_int() -> Check:
    return lambda v, n: check_int(v, n, 0)


def number(minimum: Optional[float] = 0.0, min_open: bool = False, maximum: Optional[float] = None,
           allow_none: bool = False) -> Check:
    return lambda v, n: check_number(v, n, minimum, maximum, min_open=min_open, allow_none=allow_none)


def fraction(include_one: bool = False) -> Check:
    return lambda v, n: check_fraction(v, n, include_one=include_one)


def choice(*choices: Any) -> Check:
    return lambda v, n: check_choice(v, n, choices)


def flag() -> Check:
    return check_bool


def text(what: str = "a non-empty string", allow_none: bool = False) -> Check:
    return lambda v, n: check_str(v, n, what, allow_none=allow_none)


def pair(cast: Callable[[Any], Any] = int, minimum: Optional[float] = 1, allow_none: bool = False) -> Check:
    return lambda v, n: check_pair(v, n, cast, minimum, allow_none=allow_none)


def image_size(allow_none: bool = False, as_pair: bool = False) -> Check:
    """A side (or with ``as_pair`` a ``(height, width)`` pair) within the sizes the models are run at
    (:func:`hilovit.options.check_image_size`: refused before anything is allocated)."""
    def check(v, n):
        value = check_pair(v, n, int, 1, allow_none=allow_none) if as_pair else check_int(v, n, 1,
                                                                                            allow_none=allow_none)
        return check_image_size(value, n, allow_none=allow_none)
    return check


def mapping() -> Check:
    def check(v, n):
        if not isinstance(v, Mapping):
            raise OptionError(f"{{{n}}}={v!r}: expected a mapping of constructor arguments")
        return dict(v)
    return check


def _weights(v, n):
    if v is None or v is False:
        return None
    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if not isinstance(v, (bool, str, Mapping)) or (isinstance(v, str) and not v.strip()):
        raise OptionError(f"{{{n}}}={v!r}: expected a model name, NAME.TAG, a file path, a URL, 'hf-hub:org/name' "
                          "or a state dict")
    return v


# --------------------------------------------------------------------------- the shared options
@dataclass
class TrainConfig:
    """The options of a training run that every task shares (the engine reads these).

    Attributes:
        model: a registered model name (``hilovit.list_models()``).
        data: the task's embedded data set or a folder (see the task's ``build_data``).
        output: folder for ``last.pt``, ``model.safetensors``, ``metrics.csv``, ``summary.json``.
        epochs: passes over the training data; batch_size: samples per optimiser step over all processes.
        lr: the learning rate (a task may derive it when None); min_lr: the end of the schedule.
        weight_decay: AdamW's decoupled decay; clip_grad: maximum gradient norm (None or 0: none).
        accum_steps: split each process's share of a batch into this many micro-batches (gradient
            accumulation: same result, less memory).
        drop_path: stochastic depth rate (None: the model's default); model_kwargs: more constructor arguments.
        train_subset, eval_subset: the first N training / evaluation samples.
        data_dir, val_split: where the embedded data lies; the hold-out fraction of a folder without a split.
        model_ema, model_ema_decay: keep and evaluate an exponential moving average of the weights.
        amp: ``'auto'``, ``'bf16'``, ``'fp16'`` or ``'off'`` (see :func:`hilovit.runtime.resolve_amp`).
        device: ``'auto'``, ``'cpu'``, ``'cuda'``, ``'cuda:N'``.
        grad_checkpointing: recompute blocks in the backward pass (less memory, slower).
        compile: ``torch.compile`` the training step after a few timed eager steps.
        sync_bn: synchronise BatchNorm statistics across processes.
        seed: seeds the model, the order of the data and the augmentation.
        workers: DataLoader workers; threads: torch CPU threads per process.
        eval_interval: evaluate every N epochs (the last epoch always); eval_batch_size: its batch.
        log_interval: steps between log lines when the progress bar is off; progress: ``'auto'``,
            ``'bar'``, ``'log'`` or ``'off'``.
        pretrained: starting weights: a model with published weights (``NAME`` or ``NAME.TAG``), a
            file or training output folder, an ``http(s)://`` URL, ``'hf-hub:org/name'``, True (the
            published weights of ``model``) or a state dict. Weights of another task's model give
            their backbone (ImageNet classifier -> segmenter or detector).
        freeze_backbone_epochs: train only the task's head for this many first epochs.
        log_tensorboard: also write TensorBoard scalars into ``output/tensorboard/``.
        resume: continue from ``output/last.pt``; overwrite: start afresh even if ``output`` has a run.
        stop_at_epoch: end this process after that epoch (the schedule still follows ``epochs``).
    """

    task: ClassVar[str] = ""
    _by_task: ClassVar[Dict[str, type]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.task:
            TrainConfig._by_task[cls.task] = cls

    model: str = option("", text("a model name"))
    data: str = option("", text("a data set name or a folder"))
    output: str = option("runs/train", text("a folder"))
    epochs: int = option(10, positive_int())
    batch_size: int = option(16, positive_int())
    lr: Optional[float] = option(None, number(0.0, min_open=True, allow_none=True))
    min_lr: float = option(0.0, number())
    weight_decay: float = option(0.05, number())
    clip_grad: Optional[float] = option(None, number(allow_none=True))
    accum_steps: int = option(1, positive_int())
    drop_path: Optional[float] = option(None, number(allow_none=True))
    model_kwargs: Dict[str, Any] = option(check=mapping(), default_factory=dict)
    train_subset: Optional[int] = option(None, positive_int(allow_none=True))
    eval_subset: Optional[int] = option(None, positive_int(allow_none=True))
    data_dir: Optional[str] = option(None, text("a folder", allow_none=True))
    val_split: float = option(0.0, fraction())
    model_ema: bool = option(False, flag())
    model_ema_decay: float = option(0.999, number(0.0, maximum=1.0))
    amp: str = option("auto", lambda v, n: "off" if v is False else check_choice(v, n, AMP_CHOICES))  # YAML: off
    device: str = option("auto", text("a device name"))
    grad_checkpointing: bool = option(False, flag())
    compile: bool = option(False, flag())
    sync_bn: bool = option(False, flag())
    seed: int = option(0, non_negative_int())
    workers: int = option(2, non_negative_int())
    threads: Optional[int] = option(None, positive_int(allow_none=True))
    eval_interval: int = option(1, positive_int())
    eval_batch_size: Optional[int] = option(None, positive_int(allow_none=True))
    log_interval: int = option(50, positive_int())
    progress: str = option("auto", choice(*PROGRESS_CHOICES))
    pretrained: Optional[Union[bool, str, Mapping[str, Any]]] = option(None, _weights)
    freeze_backbone_epochs: int = option(0, non_negative_int())
    log_tensorboard: bool = option(False, flag())
    resume: bool = option(False, flag())
    overwrite: bool = option(False, flag())
    stop_at_epoch: Optional[int] = option(None, positive_int(allow_none=True))

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ building
    @classmethod
    def option_names(cls) -> List[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_sources(cls, config: Optional[Union[str, os.PathLike]] = None, **overrides: Any) -> TrainConfig:
        """Defaults, then the recipe ``config`` (a YAML path or a packaged recipe name), then ``overrides``
        (those whose value is None are ignored, so unset command-line options do not hide the recipe)."""
        values = load_recipe(config) if config is not None else {}
        return cls.from_dict(merge_options(values, overrides))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """A configuration from a mapping of options (``task:`` must be this task's, if present).

        Raises:
            OptionError: an unknown option (naming the task it belongs to, when it belongs to one).
        """
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        task = values.pop("task", None)
        if task is not None and task != cls.task:
            raise OptionError(f"{{task}}={task!r} does not match this {cls.task} configuration")
        values = cls.normalize(values)
        unknown = sorted(set(values) - set(cls.option_names()))
        if unknown:
            raise OptionError(_unknown_message(cls, unknown))
        return cls(**values)

    @classmethod
    def normalize(cls, values: Dict[str, Any]) -> Dict[str, Any]:
        """Aliases and derived options before the fields are set (a task may extend it)."""
        return values

    def to_dict(self) -> Dict[str, Any]:
        """Plain types only (for JSON, YAML and checkpoints), ``task`` first."""
        out: Dict[str, Any] = {"task": self.task}
        for f in fields(self):
            out[f.name] = _plain(f.name, getattr(self, f.name))
        return out

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check every field through its declared check, then the relations between fields."""
        for f in fields(self):
            check = f.metadata.get("check")
            if check is not None:
                setattr(self, f.name, check(getattr(self, f.name), f.name))
        if self.stop_at_epoch is not None and self.stop_at_epoch > self.epochs:
            raise OptionError(f"{{stop_at_epoch}}={self.stop_at_epoch} is beyond {{epochs}}={self.epochs}")
        if self.resume and self.overwrite:
            raise OptionError("{resume} and {overwrite} contradict each other; choose one")
        if self.model_ema_decay >= 1.0:
            raise OptionError(f"{{model_ema_decay}}={self.model_ema_decay!r}: expected a value in [0, 1)")


def _plain(name: str, v: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {k: list(x) if isinstance(x, tuple) else x for k, x in dataclasses.asdict(v).items()}
    if isinstance(v, tuple):
        return list(v)
    if name == "pretrained" and isinstance(v, Mapping):
        return IN_MEMORY  # tensors do not belong in YAML, JSON or the options of a checkpoint
    if isinstance(v, dict):
        return dict(v)
    return v


def _unknown_message(cls: type, unknown: List[str]) -> str:
    """Unknown options, and for each that another task takes, which task that is."""
    owners: Dict[str, str] = {}
    for name, other in TrainConfig._by_task.items():
        if name != cls.task:
            for key in unknown:
                if key in other.option_names():
                    owners.setdefault(key, name)
    parts = [f"{{{k}}}" + (f" (a {owners[k]} option)" if k in owners else "") for k in unknown]
    return (f"unknown training option(s) for {cls.task}: {', '.join(parts)}; the {cls.task} task takes "
            f"{', '.join(sorted(cls.option_names()))}")


def merge_options(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """``base`` updated with the ``overrides`` that are not None; two ``augment`` mappings merge field by field."""
    import dataclasses

    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "augment" and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        elif key == "augment" and isinstance(value, Mapping) and dataclasses.is_dataclass(out.get(key)):
            out[key] = dataclasses.replace(out[key], **{k: tuple(v) if isinstance(v, list) else v
                                                          for k, v in value.items()})
        else:
            out[key] = value
    return out


def list_recipes() -> List[str]:
    """Names of the recipes shipped with hilovit (``--config NAME``)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(config: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a recipe: a YAML file path, or the name of a packaged recipe."""
    path = Path(config).expanduser()
    if not path.is_file():
        packaged = RECIPE_DIR / f"{config}.yaml"
        if packaged.is_file():
            path = packaged
        else:
            raise FileNotFoundError(
                f"recipe {str(config)!r} not found: not a file, nor a packaged recipe "
                f"(choose one of: {', '.join(list_recipes()) or 'none'})"
            )
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"recipe {str(path)!r} is not valid YAML: {e}") from e
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"recipe {str(path)!r} must be a mapping of training options, got {type(values).__name__}")
    return {str(k).replace("-", "_"): v for k, v in values.items()}

