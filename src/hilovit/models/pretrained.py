"""The published weights of the registered models (the table each family fills), and loading weights into a model.

Each :class:`PretrainedWeights` entry names a model and a tag (``litv2_s.in1k``,
``litv2_s.alpha_0_5``, ``swin_t.ms_in22k_ft_in1k``, ``semfpn_litv2_s.ade20k``,
``retinanet_litv2_s.coco``), where the official file is published, the alternative on the Hugging
Face hub (timm's copy, for Swin), the preprocessing the reported result was measured with, and
that result. Each family registers its own entries beside its entry points
(:func:`register_weights`), so a new family is one file. timm's names resolve through the
registry's aliases: ``swin_base_patch4_window12_384.ms_in22k_ft_in1k`` is ``swin_b_384`` with the
tag ``ms_in22k_ft_in1k``.

:func:`load_pretrained` fetches a source (:mod:`hilovit.models.hub`), adapts its state dict to the
model as timm does (input channels, a missing classifier, an mmdet/mmseg detection or
segmentation checkpoint for a backbone) and hands it to :func:`hilovit.load_checkpoint`, which
runs the family's own ``checkpoint_filter_fn`` (Swin: relative-position tables and absolute
position embeddings resized bicubically to the model's windows and size) and re-initialises a
classifier of another size with a warning.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from hilovit.data.constants import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from hilovit.data.constants import IMAGENET_DEFAULT_STD as IMAGENET_STD
from hilovit.models import hub
from hilovit.models._prefix import add_backbone_prefix, backbone_key, has_backbone_keys, is_backbone_key, split_backbone

__all__ = [
    "PretrainedWeights",
    "adapt_state_dict",
    "get_pretrained",
    "list_pretrained",
    "load_file",
    "load_pretrained",
    "register_weights",
    "published",
    "SQUASH",
]

CROP_MODES = ("center", "squash")
# The official 384 models are evaluated with TEST.CROP False (configs/*384*.yaml of LITv2 and Swin):
# the whole image resized to 384x384, no crop.
SQUASH = dict(crop_pct=1.0, crop_mode="squash")


@dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint of a registered model.

    ``variant_args`` are constructor arguments that define the variant the file was trained as
    (``alpha`` for the LITv2-S alpha series); ``model_args`` are defaults the file implies
    (``num_classes=21841`` for ImageNet-22k) that a caller may still override.
    ``metrics`` holds the official results of a dense-prediction file (``miou``, ``box_ap``,
    ``mask_ap``; a classifier's is ``top1``), ``extra`` further ``pretrained_cfg`` entries (the test
    scale, the class names). ``crop_pct``/``crop_mode``/``interpolation``/``mean``/``std`` are the
    official evaluation's preprocessing, with timm's meaning: ``crop_mode='center'`` resizes the shorter side to
    ``size / crop_pct`` (keeping the aspect ratio) and centre-crops ``size``; ``'squash'`` resizes
    both sides to ``size / crop_pct`` (the official 384 evaluation: the whole image to 384x384 when
    ``crop_pct`` is 1) and centre-crops ``size``. Then normalise with ``mean``/``std``.
    """

    model: str
    tag: str
    url: str
    top1: Optional[float]
    num_classes: int = 1000
    input_size: Tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    crop_mode: str = "center"
    interpolation: str = "bicubic"
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    dataset: str = "imagenet-1k"
    hf_hub_id: Optional[str] = None
    sha256: Optional[str] = None
    file_name: Optional[str] = None
    variant_args: Mapping[str, Any] = field(default_factory=dict)
    model_args: Mapping[str, Any] = field(default_factory=dict)
    paper: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.crop_mode not in CROP_MODES:
            raise ValueError(f"{self.model}.{self.tag}: crop_mode={self.crop_mode!r}; expected one of {CROP_MODES}")

    @property
    def name(self) -> str:
        return f"{self.model}.{self.tag}"

    @property
    def cache_path(self) -> str:
        return str(hub.cached_path(self.url, self.file_name))

    def is_cached(self) -> bool:
        return hub.cached_path(self.url, self.file_name).is_file()

    def cfg(self) -> Dict[str, Any]:
        """The ``pretrained_cfg`` fields this entry sets on a model."""
        return {
            "tag": self.tag, "url": self.url, "hf_hub_id": self.hf_hub_id, "sha256": self.sha256,
            "file_name": self.file_name, "num_classes": self.num_classes, "input_size": self.input_size,
            "crop_pct": self.crop_pct, "crop_mode": self.crop_mode, "interpolation": self.interpolation,
            "mean": self.mean, "std": self.std,
            "top1": self.top1, "dataset": self.dataset, "paper": self.paper, "metrics": dict(self.metrics),
            **self.extra,
        }

    @property
    def result(self) -> str:
        """The official result, as ``hilovit models`` shows it: the top-1, or the dense metrics."""
        if self.top1 is not None:
            return f"{self.top1:.2f}"
        names = {"miou": "mIoU", "box_ap": "box AP", "mask_ap": "mask AP"}
        return ", ".join(f"{v:.1f} {names.get(k, k)}" for k, v in self.metrics.items()) or "-"


# --------------------------------------------------------------------------- the table
_TABLE: Dict[str, Dict[str, PretrainedWeights]] = {}


def register_weights(*entries: PretrainedWeights) -> None:
    """Add published weights to the table (each family calls this beside its entry points). The first
    entry of a model is its default (the tag ``pretrained=True`` loads without one)."""
    for w in entries:
        if w.tag in _TABLE.setdefault(w.model, {}):
            raise ValueError(f"pretrained weights {w.name!r} listed twice")
        _TABLE[w.model][w.tag] = w


def _load_families() -> None:
    from hilovit.models.registry import _load_families as load

    load()


def published(model: str) -> List[PretrainedWeights]:
    """The published weights of a registered model (its default first)."""
    _load_families()
    return list(_TABLE.get(model, {}).values())


# --------------------------------------------------------------------------- look-up
def list_pretrained(pattern: str = "*") -> List[str]:
    """``name.tag`` of every published checkpoint matching a shell pattern (default tags first)."""
    import fnmatch

    _load_families()
    return [w.name for tags in _TABLE.values() for w in tags.values()
            if fnmatch.fnmatch(w.name, pattern) or fnmatch.fnmatch(w.model, pattern)]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), abs_tol=1e-9)
    return a == b


def get_pretrained(model: str, tag: Optional[str] = None, model_kwargs: Optional[Mapping[str, Any]] = None,
                   required: bool = False) -> Optional[PretrainedWeights]:
    """The published weights for ``model`` (a registered name, not an alias) and ``tag``.

    Without a tag, the entry whose ``variant_args`` agree with ``model_kwargs`` (e.g.
    ``alpha=0.5`` picks ``litv2_s.alpha_0_5``), the default entry first. Returns None when there
    is none, unless ``required`` (then ``ValueError`` says what exists).
    """
    _load_families()
    kwargs = dict(model_kwargs or {})
    tags = _TABLE.get(model, {})
    if tag is not None:
        if tag not in tags:
            known = ", ".join(f"{model}.{t}" for t in tags) or "none"
            raise ValueError(f"unknown pretrained tag {tag!r} for {model!r}; published weights: {known}")
        entry = tags[tag]
        for key, value in entry.variant_args.items():
            if key in kwargs and not _same(kwargs[key], value):
                raise ValueError(f"{key}={kwargs[key]!r} contradicts {entry.name!r}, which was trained with "
                                 f"{key}={value!r}")
        return entry
    fits = [w for w in tags.values() if all(_same(kwargs[k], v) for k, v in w.variant_args.items() if k in kwargs)]
    if fits:
        return fits[0]
    if required:
        if not tags:
            raise ValueError(f"no pretrained weights are published for {model!r}; pass a file: pretrained='path.pth'")
        keys = sorted({k for w in tags.values() for k in w.variant_args if k in kwargs})
        offered = "; ".join(f"{w.name} ({', '.join(f'{k}={w.variant_args[k]}' for k in keys)})"
                            for w in tags.values() if all(k in w.variant_args for k in keys))
        asked = ", ".join(f"{k}={kwargs[k]!r}" for k in keys)
        raise ValueError(f"no published weights of {model!r} for {asked}; published: {offered}")
    return None


# --------------------------------------------------------------------------- adapting a state dict
def _stem_key(model: nn.Module) -> Optional[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    if isinstance(first, str):
        return first + ".weight"
    return None


def _adapt_in_chans(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Stem weights ``(C, I, kh, kw)`` for ``in_chans`` inputs, as timm adapts them: one channel sums
    the input channels; otherwise they are repeated to ``in_chans`` and scaled by ``I / in_chans``
    (a grey image copied into every channel gives the same output)."""
    have = weight.shape[1]
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_chans // have)
    return (weight.repeat(1, reps, 1, 1)[:, :in_chans] * (have / in_chans)).contiguous()


def adapt_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Fit a checkpoint's state dict to ``model`` before :func:`hilovit.load_checkpoint`.

    * An mmdet/mmseg checkpoint (keys under ``backbone.``) loaded into a backbone or classifier
      keeps its backbone, the prefix removed (:mod:`hilovit.models._prefix`); a segmentation backbone's
      ``norm0`` is dropped with a warning when the model (the detection backbone) has no norm on
      stage 0. Into a detector or segmentor (a model with ``backbone.*`` keys of its own) it loads
      whole.
    * The stem convolution (``pretrained_cfg['first_conv']``) is adapted to the model's input
      channels: summed for one channel, else repeated and scaled (a warning says so).
    * A model without a classifier (``num_classes=0``) drops the checkpoint's.

    Everything else (timm layouts, Swin table sizes, a classifier of another size) is left to
    :func:`hilovit.load_checkpoint` and the family's ``checkpoint_filter_fn``.
    """
    sd = dict(state_dict)
    own = model.state_dict()
    whole = has_backbone_keys(sd) and not has_backbone_keys(own)
    if whole:  # a detector's or segmentor's checkpoint for a backbone or classifier: its backbone part
        sd, _ = split_backbone(sd)
    extra_norm0 = [k for k in sd if k.startswith("norm0.") and k not in own]
    if extra_norm0 and getattr(model, "features_only", False):
        named = sorted(backbone_key(k) if whole else k for k in extra_norm0)
        warnings.warn("the checkpoint normalises stage 0 (norm0, a segmentation backbone); this model returns "
                      f"stage 0 without a norm, so {', '.join(named)} are not loaded", stacklevel=3)
        for k in extra_norm0:
            del sd[k]
    stem = _stem_key(model)
    if stem in sd and stem in own:
        have, want = sd[stem], own[stem]
        if have.dim() == 4 and want.dim() == 4 and have.shape[1] != want.shape[1] \
                and have.shape[0] == want.shape[0] and have.shape[2:] == want.shape[2:]:
            how = "summed over" if want.shape[1] == 1 else "repeated and scaled from"
            warnings.warn(f"{stem}: {want.shape[1]} input channel(s) {how} the checkpoint's {have.shape[1]}",
                          stacklevel=3)
            sd[stem] = _adapt_in_chans(have, int(want.shape[1]))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier", "head")
    heads = [heads] if isinstance(heads, str) else list(heads)
    for head in heads:
        if not any(k == head or k.startswith(head + ".") for k in own):
            for k in [k for k in sd if k.startswith(head + ".")]:
                del sd[k]
    return sd


# --------------------------------------------------------------------------- loading
def _read_state_dict(path: os.PathLike) -> Dict[str, torch.Tensor]:
    from hilovit.models.checkpoint import read_checkpoint

    out = read_checkpoint(path)
    if isinstance(out, tuple):  # (state_dict, metadata)
        out = out[0]
    return dict(out)


def load_pretrained(
    model: nn.Module,
    source: Union[str, os.PathLike, Mapping[str, torch.Tensor]],
    sha256: Optional[str] = None,
    file_name: Optional[str] = None,
    progress: Optional[bool] = None,
    strict: bool = True,
):
    """Load weights from ``source`` into ``model``, adapting them as timm does.

    Args:
        model: any hilovit model (classifier, ``features_only`` model or :class:`LITv2Backbone`).
        source: a state dict, a file path, an ``http(s)://`` URL (downloaded once into the torch hub
            cache) or ``'hf-hub:org/name'``.
        sha256: the file's expected SHA-256 (checked after a download).
        file_name: the cache name for a URL (default: its last path part).
        strict: as :func:`hilovit.load_checkpoint`.

    Returns:
        the :class:`~hilovit.models.checkpoint.LoadResult`. ``model.pretrained_cfg['weights']``
        records where the weights came from (source, file, SHA-256 of the file).
    """
    if isinstance(source, Mapping):
        return _load(model, dict(source), {"source": "state dict"}, strict)
    origin = os.fspath(source) if isinstance(source, os.PathLike) else source
    path = hub.fetch(origin, sha256=sha256, file_name=file_name, progress=progress)
    return load_file(model, path, origin, strict=strict)


def load_file(model: nn.Module, path: Union[str, os.PathLike], origin: Optional[str] = None, strict: bool = True):
    """:func:`load_pretrained` for a file already fetched; ``origin`` is recorded as its source."""
    from hilovit.models.checkpoint import CheckpointError

    record = {"source": origin or os.fspath(path), "file": os.fspath(path), "sha256": hub.file_sha256(path)}
    try:
        state_dict = _read_state_dict(path)
    except CheckpointError as e:
        if os.path.dirname(os.path.abspath(path)) != str(hub.cache_dir().resolve()):
            raise
        raise CheckpointError(f"{e}\nThe cached file {path} cannot be read (a fetch by hand cut short?): delete it "
                              "and run again to download it anew (with its .sha256 record, if there is one).") from None
    return _load(model, state_dict, record, strict)


def _load(model: nn.Module, state_dict: Dict[str, torch.Tensor], record: Dict[str, str], strict: bool):
    from hilovit.models._api import update_pretrained_cfg
    from hilovit.models.checkpoint import load_checkpoint

    own = model.state_dict()
    if has_backbone_keys(own) and not has_backbone_keys(state_dict):
        result = _load_backbone(model, state_dict)
    else:
        result = load_checkpoint(model, adapt_state_dict(model, state_dict), strict=strict)
    update_pretrained_cfg(model, weights=record)
    return result


_BACKBONE_NORM = re.compile("^" + re.escape(backbone_key("norm")) + r"\d+\.")


def _load_backbone(model: nn.Module, state_dict: Dict[str, torch.Tensor]):
    """A classifier's (or a backbone's) weights into the ``backbone`` of a dense-prediction model, as the
    official segmentation and detection configs start from ImageNet weights.

    The classifier's head and final norm are left out; every other tensor must find its place (a stem
    of another patch size or any other shape is refused naming both shapes: never half-loaded). The
    stage output norms the classifier lacks (``backbone.norm{i}``) and the neck and heads keep their
    initialisation, named in one warning.
    """
    from hilovit.models.checkpoint import CheckpointError, load_checkpoint

    heads = ("head.", "norm.", "fc.", "classifier.")
    moved = add_backbone_prefix({k: v for k, v in state_dict.items() if not k.startswith(heads)})
    left_out = sorted(k for k in state_dict if k.startswith(heads))
    moved = adapt_state_dict(model, moved)
    result = load_checkpoint(model, moved, strict=False)
    own = model.state_dict()
    missing_backbone = [k for k in own if is_backbone_key(k) and k not in moved
                        and not _BACKBONE_NORM.match(k)]
    if missing_backbone or result.ignored:
        parts = []
        if missing_backbone:
            parts.append(f"backbone weights it lacks: {', '.join(sorted(missing_backbone)[:8])}"
                         + (" ..." if len(missing_backbone) > 8 else ""))
        if result.ignored:
            parts.append(f"weights with no place in the backbone: {', '.join(sorted(result.ignored)[:8])}"
                         + (" ..." if len(result.ignored) > 8 else ""))
        raise CheckpointError(f"the checkpoint does not fit the backbone of {type(model).__name__}: "
                              + "; ".join(parts))
    norms = sorted({m.group(0)[:-1] for k in own if (m := _BACKBONE_NORM.match(k)) and k not in moved})
    fresh = sorted({k.split(".")[0] for k in own if not is_backbone_key(k)})
    dropped = ", ".join(sorted({k.split(".")[0] for k in left_out})) or "nothing"
    afresh = ", ".join(norms + fresh)
    warnings.warn(f"backbone loaded from the checkpoint ({len(moved)} tensors; its {dropped} left out); "
                  f"initialised afresh: {afresh}", stacklevel=3)
    return result
