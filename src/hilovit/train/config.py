"""The training configuration: defaults, YAML recipes and command-line overrides, in that order.

A recipe is a YAML mapping of :class:`TrainConfig` fields (``augment:`` may be a mapping of
:class:`~hilovit.data.AugmentConfig` fields, ``model_kwargs:`` a mapping of constructor
arguments). ``--config NAME`` also accepts the name of a recipe shipped in
``hilovit/train/recipes/`` (``fashion-mnist``; see :func:`list_recipes`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import yaml

from hilovit.data import AugmentConfig

__all__ = ["TrainConfig", "OptionError", "load_recipe", "list_recipes", "merge_options", "options_from_cli",
           "default_augment", "RECIPE_DIR"]

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
_AMP = ("auto", "bf16", "fp16", "off")
_PROGRESS = ("auto", "bar", "log", "off")
_OPTIMIZERS = ("adamw", "sgd")


class OptionError(ValueError):
    """A training option that cannot be used, with a message that names options.

    The message is written with options as ``{name}`` (a :class:`TrainConfig` field); ``str(error)``
    shows them as the Python names (``batch_size=8192 is larger ...``), :meth:`render` as the
    caller wants them (the command line shows ``--batch-size=8192 is larger ...``).
    """

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self.render())

    def render(self, name: Callable[[str], str] = str) -> str:
        """The message with each option written as ``name(field)``."""
        return re.sub(r"\{([a-z][a-z0-9_]*)\}",
                      lambda m: name(m.group(1)) if m.group(1) in _FIELD_NAMES else m.group(0), self.template)


def default_augment() -> AugmentConfig:
    """The default training augmentation: random resized crop of 60-100% of the area, horizontal flip."""
    return AugmentConfig(scale=(0.6, 1.0))


@dataclass
class TrainConfig:
    """Everything one training run needs. The defaults are the official LITv2/Swin recipe
    (AdamW, base rate 5e-4 per 512 images, weight decay 0.05, cosine with warm-up, clipping at
    5, label smoothing 0.1) with the augmentation and length scaled down for small images.

    Attributes:
        model: a registered model name (``hilovit.list_models()``).
        data: ``'fashion-mnist'`` or a folder (see :func:`hilovit.data.build_datasets`).
        output: folder for ``last.pt``, ``model.safetensors``, ``metrics.csv``, ``summary.json``, curves.
        epochs: training epochs; batch_size: images per optimiser step over all processes.
        lr: the learning rate itself; None derives it as ``base_lr * batch_size / 512``.
        base_lr, min_lr, warmup_lr: rates for a batch of 512, scaled linearly to ``batch_size``.
        warmup_epochs: linear warm-up length (may be fractional).
        weight_decay: AdamW's decoupled decay (none on norms, biases, position tables).
        optimizer: ``'adamw'`` or ``'sgd'``; betas, eps, momentum: their settings.
        clip_grad: maximum global gradient norm (0 or None: no clipping).
        accum_steps: split each process's share of the batch into this many micro-batches
            (gradient accumulation: same result, less memory).
        offset_lr_scale: LITv2's rate multiplier for the deformable offsets (official 0.01).
        label_smoothing, mixup, cutmix, mixup_prob, mixup_switch_prob: targets and mixing.
        augment: an :class:`~hilovit.data.AugmentConfig` (or a mapping of its fields); None = none.
        drop_path: stochastic depth rate (None: the model's default).
        model_kwargs: more constructor arguments for the model.
        img_size: model input side (None: the model's default, e.g. 28 for ``litv2_nano``).
        in_chans: model input channels (None: the data's, 1 for Fashion-MNIST).
        train_subset: use the first N training images; eval_subset: the first N evaluation images.
        data_dir, val_split: see :func:`~hilovit.data.build_datasets`.
        model_ema, model_ema_decay: keep and evaluate an EMA of the weights.
        amp: ``'auto'`` (bfloat16 autocast on CPU, float16 with a gradient scaler on CUDA),
            ``'bf16'``, ``'fp16'`` or ``'off'``.
        device: ``'auto'``, ``'cpu'``, ``'cuda'``.
        grad_checkpointing: recompute blocks in the backward pass (less memory, slower).
        compile: run the training forward and backward through ``torch.compile`` (inductor). The
            first few steps of each process run eagerly and are timed, then the model is
            compiled; the log and ``summary.json`` (``compile``) give the compile time and the
            step time against the eager one. Evaluation stays eager.
        sync_bn: synchronise BatchNorm statistics across processes.
        seed: seeds the model, the order of the data and the augmentation.
        workers: DataLoader workers for image folders (in-memory data needs none).
        threads: torch CPU threads per process (None: torch's choice, or shared out under torchrun).
        eval_interval: evaluate every N epochs (the last epoch always).
        eval_batch_size: batch of evaluation (None: 2 x batch_size per process).
        log_interval: steps between log lines when the progress bar is off.
        progress: ``'auto'`` (a bar on a terminal, log lines otherwise), ``'bar'``, ``'log'``, ``'off'``.
        pretrained: start from these weights (fine-tuning): a model name with published weights,
            ``NAME.TAG`` (``hilovit models --pretrained``), a file path, an ``http(s)://`` URL,
            ``'hf-hub:org/name'``, True (the published weights of ``model``) or, from Python, a state
            dict. The model is built for the data's classes and channels; a classifier of another
            size is re-initialised. A name also sets ``model`` when ``model`` is not given.
            Ignored on ``resume`` (the run's own weights are used). Alias: ``initial_checkpoint``.
        layer_decay: layer-wise learning-rate decay in (0, 1] (BEiT/timm): the rate of layer ``i`` of
            ``L`` blocks is multiplied by ``layer_decay ** (L + 1 - i)``; None = off.
        freeze_backbone_epochs: train only the classifier head for this many first epochs (as many as
            ``epochs`` or more: the backbone never trains, a linear probe).
        log_tensorboard: also write TensorBoard scalars into ``output/tensorboard/`` (needs
            ``pip install hilovit[tensorboard]``).
        resume: continue from ``output/last.pt``; overwrite: start afresh even if ``output`` has a run.
        stop_at_epoch: end this process after that epoch (the schedule still follows ``epochs``);
            continue later with ``resume``.
    """

    model: str = "litv2_nano"
    data: str = "fashion-mnist"
    output: str = "runs/train"
    epochs: int = 10
    batch_size: int = 128
    lr: Optional[float] = None
    base_lr: float = 5e-4
    min_lr: float = 5e-6
    warmup_lr: float = 5e-7
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    clip_grad: Optional[float] = 5.0
    accum_steps: int = 1
    offset_lr_scale: float = 0.01
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    augment: Optional[AugmentConfig] = field(default_factory=default_augment)
    drop_path: Optional[float] = None
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    img_size: Optional[int] = None
    in_chans: Optional[int] = None
    train_subset: Optional[int] = None
    eval_subset: Optional[int] = None
    data_dir: Optional[str] = None
    val_split: float = 0.0
    model_ema: bool = False
    model_ema_decay: float = 0.999
    amp: str = "auto"
    device: str = "auto"
    grad_checkpointing: bool = False
    compile: bool = False
    sync_bn: bool = False
    seed: int = 0
    workers: int = 2
    threads: Optional[int] = None
    eval_interval: int = 1
    eval_batch_size: Optional[int] = None
    log_interval: int = 50
    progress: str = "auto"
    pretrained: Optional[Union[bool, str, Mapping[str, Any]]] = None
    layer_decay: Optional[float] = None
    freeze_backbone_epochs: int = 0
    log_tensorboard: bool = False
    resume: bool = False
    overwrite: bool = False
    stop_at_epoch: Optional[int] = None

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ building
    @classmethod
    def from_sources(cls, config: Optional[Union[str, os.PathLike]] = None, **overrides: Any) -> TrainConfig:
        """Defaults, then the recipe ``config`` (a YAML path or a packaged recipe name), then ``overrides``.

        ``overrides`` whose value is None are ignored (so unset command-line options do not hide
        the recipe). Unknown keys raise ``ValueError`` naming them.
        """
        values = load_recipe(config) if config is not None else {}
        return cls.from_dict(merge_options(values, overrides))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - {"initial_checkpoint"})
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {', '.join(sorted(known))}")
        values = dict(values)
        if "initial_checkpoint" in values:  # timm's name for the same thing
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
        aug = values.get("augment", "default")
        if aug == "default":
            values.pop("augment", None)
        else:
            values["augment"] = _as_augment(aug)
        if "betas" in values:
            values["betas"] = tuple(float(b) for b in values["betas"])
        return cls(**values)

    def to_dict(self) -> Dict[str, Any]:
        """Plain types only (for JSON, YAML and checkpoints)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, AugmentConfig):
                v = {k: list(x) if isinstance(x, tuple) else x for k, x in dataclasses.asdict(v).items()}
            elif isinstance(v, tuple):
                v = list(v)
            elif f.name == "pretrained" and isinstance(v, Mapping):
                v = IN_MEMORY  # tensors do not belong in YAML, JSON or the options of a checkpoint
            elif isinstance(v, dict):
                v = dict(v)
            out[f.name] = v
        return out

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        def positive_int(name: str, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise OptionError(f"{_flag(name)}={v!r}: expected a positive integer")

        def non_negative(name: str, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise OptionError(f"{_flag(name)}={v!r}: expected a number >= 0")

        if not isinstance(self.model, str) or not self.model:
            raise OptionError(f"{{model}}={self.model!r}: expected a model name")
        if not isinstance(self.data, (str, os.PathLike)) or not str(self.data):
            raise OptionError(f"{{data}}={self.data!r}: expected 'fashion-mnist' or a folder")
        self.data = str(self.data)
        self.output = str(self.output)
        for name in ("epochs", "batch_size", "accum_steps", "eval_interval", "log_interval"):
            positive_int(name)
        for name in ("train_subset", "eval_subset", "img_size", "in_chans", "eval_batch_size", "threads",
                     "stop_at_epoch"):
            positive_int(name, allow_none=True)
        if self.lr is not None and (isinstance(self.lr, bool) or not self.lr > 0):
            raise OptionError(f"{{lr}}={self.lr!r}: expected a positive number")
        if not (isinstance(self.base_lr, (int, float)) and self.base_lr > 0):
            raise OptionError(f"{{base_lr}}={self.base_lr!r}: expected a positive number")
        for name in ("min_lr", "warmup_lr", "warmup_epochs", "weight_decay", "eps", "momentum", "offset_lr_scale",
                     "mixup", "cutmix", "model_ema_decay"):
            non_negative(name)
        non_negative("clip_grad", allow_none=True)
        non_negative("drop_path", allow_none=True)
        if self.warmup_epochs > self.epochs:
            raise OptionError(f"{{warmup_epochs}}={self.warmup_epochs} is longer than {{epochs}}={self.epochs}")
        if isinstance(self.val_split, bool) or not isinstance(self.val_split, (int, float)) \
                or not 0.0 <= self.val_split < 1.0:
            raise OptionError(f"{{val_split}}={self.val_split!r}: expected a fraction in [0, 1)")
        for name in ("label_smoothing",):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise OptionError(f"{_flag(name)}={v!r}: expected a value in [0, 1)")
        for name in ("mixup_prob", "mixup_switch_prob"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise OptionError(f"{_flag(name)}={v!r}: expected a probability in [0, 1]")
        if not self.model_ema_decay < 1.0:
            raise OptionError(f"{{model_ema_decay}}={self.model_ema_decay!r}: expected a value in [0, 1)")
        if self.optimizer not in _OPTIMIZERS:
            raise OptionError(f"{{optimizer}}={self.optimizer!r}: choose one of {', '.join(_OPTIMIZERS)}")
        if self.amp not in _AMP:
            raise OptionError(f"{{amp}}={self.amp!r}: choose one of {', '.join(_AMP)}")
        if self.progress not in _PROGRESS:
            raise OptionError(f"{{progress}}={self.progress!r}: choose one of {', '.join(_PROGRESS)}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 0:
            raise OptionError(f"{{workers}}={self.workers!r}: expected an integer >= 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise OptionError(f"{{seed}}={self.seed!r}: expected an integer >= 0")
        if not isinstance(self.model_kwargs, dict):
            raise OptionError(f"{{model_kwargs}}={self.model_kwargs!r}: expected a mapping of constructor arguments")
        if self.augment is not None and not isinstance(self.augment, AugmentConfig):
            self.augment = _as_augment(self.augment)
        if self.stop_at_epoch is not None and self.stop_at_epoch > self.epochs:
            raise OptionError(f"{{stop_at_epoch}}={self.stop_at_epoch} is beyond {{epochs}}={self.epochs}")
        if self.pretrained is not None and not isinstance(self.pretrained, (bool, str, os.PathLike, Mapping)):
            raise OptionError(f"{{pretrained}}={self.pretrained!r}: expected a model name, NAME.TAG, a file path, a "
                              "URL, 'hf-hub:org/name' or a state dict")
        if isinstance(self.pretrained, os.PathLike):
            self.pretrained = os.fspath(self.pretrained)
        if isinstance(self.pretrained, str) and not self.pretrained.strip():
            raise OptionError("{pretrained}='': expected a model name, NAME.TAG, a file path, a URL or "
                              "'hf-hub:org/name'")
        if self.pretrained is False:
            self.pretrained = None
        if self.layer_decay is not None and (isinstance(self.layer_decay, bool)
                                             or not isinstance(self.layer_decay, (int, float))
                                             or not 0 < self.layer_decay <= 1):
            raise OptionError(f"{{layer_decay}}={self.layer_decay!r}: expected a number in (0, 1] (or unset: off)")
        fbe = self.freeze_backbone_epochs
        if isinstance(fbe, bool) or not isinstance(fbe, int) or fbe < 0:
            raise OptionError(f"{{freeze_backbone_epochs}}={fbe!r}: expected an integer >= 0")
        if not isinstance(self.compile, bool):
            raise OptionError(f"{{compile}}={self.compile!r}: expected true or false")
        if not isinstance(self.log_tensorboard, bool):
            raise OptionError(f"{{log_tensorboard}}={self.log_tensorboard!r}: expected true or false")
        if self.resume and self.overwrite:
            raise OptionError("{resume} and {overwrite} contradict each other; choose one")

    # ------------------------------------------------------------------ derived
    def scaled_lr(self) -> Tuple[float, float, float]:
        """``(lr, min_lr, warmup_lr)`` for this batch size (``lr`` as given when set explicitly)."""
        from hilovit.train.optim import scale_lr

        lr = self.lr if self.lr is not None else scale_lr(self.base_lr, self.batch_size)
        ratio = lr / self.base_lr  # min_lr and warmup_lr keep their proportion to base_lr
        return lr, self.min_lr * ratio, self.warmup_lr * ratio


_FIELD_NAMES = frozenset(f.name for f in fields(TrainConfig))
IN_MEMORY = "state dict (in memory)"  # how a state dict given as ``pretrained`` is written down


def _flag(name: str) -> str:
    """``name`` marked as an option in an :class:`OptionError` message."""
    return "{" + name + "}"


def _as_augment(value: Any) -> Optional[AugmentConfig]:
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
            raise OptionError(f"{{augment}} has unknown option(s) {unknown}; known: {', '.join(sorted(known))}")
        vals = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
        return dataclasses.replace(default_augment(), **vals)  # fields not given keep the defaults
    raise OptionError(f"{{augment}}={value!r}: expected a mapping of AugmentConfig fields, 'none' or null")


def merge_options(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    """``base`` updated with the ``overrides`` that are not None; two ``augment`` mappings merge field by field."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "augment" and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        elif key == "augment" and isinstance(value, Mapping) and isinstance(out.get(key), AugmentConfig):
            out[key] = dataclasses.replace(out[key], **{k: tuple(v) if isinstance(v, list) else v
                                                          for k, v in value.items()})
        else:
            out[key] = value
    return out


# Command-line flags that set fields of ``augment`` (flag dest -> AugmentConfig field).
CLI_AUGMENT_FLAGS = {
    "crop": "random_resized_crop",
    "crop_scale": "scale",
    "hflip": "hflip",
    "rand_augment": "rand_augment",
    "rand_augment_m": "rand_augment_m",
    "random_erasing": "random_erasing",
}


def options_from_cli(values: Mapping[str, Any]) -> Dict[str, Any]:
    """Turn parsed ``hilovit train`` flags into :class:`TrainConfig` options.

    Flags listed in :data:`CLI_AUGMENT_FLAGS` become fields of ``augment``; ``no_augment`` turns
    augmentation off; ``config`` (the recipe) and None values are dropped.
    """
    out: Dict[str, Any] = {}
    augment: Dict[str, Any] = {}
    for key, value in values.items():
        if value is None or key in ("config", "func", "command", "version", "json"):
            continue
        if key in CLI_AUGMENT_FLAGS:
            augment[CLI_AUGMENT_FLAGS[key]] = tuple(value) if isinstance(value, list) else value
        elif key == "no_augment":
            if value:
                out["augment"] = "none"
        else:
            out[key] = value
    if augment:
        if out.get("augment") == "none":
            raise ValueError("--no-augment contradicts the augmentation flags given "
                             f"({', '.join('--' + k.replace('_', '-') for k in augment)})")
        out["augment"] = augment
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
