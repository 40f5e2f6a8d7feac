"""The official pretrained weights of every registered model, and loading them into a model.

Each :class:`PretrainedWeights` entry names a model and a tag (``litv2_s.in1k``,
``litv2_s.alpha_0_5``, ``swin_t.ms_in22k_ft_in1k``), where the official file is published, the
alternative on the Hugging Face hub (timm's copy, for Swin), the preprocessing the reported
accuracy was measured with, and that accuracy. timm's names resolve through the registry's
aliases: ``swin_base_patch4_window12_384.ms_in22k_ft_in1k`` is ``swin_b_384`` with the tag
``ms_in22k_ft_in1k``.

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
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn

from hilovit.models import hub

__all__ = [
    "PretrainedWeights",
    "adapt_state_dict",
    "get_pretrained",
    "list_pretrained",
    "load_file",
    "load_pretrained",
    "split_tag",
    "timm_default_tag",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_MODES = ("center", "squash")


@dataclass(frozen=True)
class PretrainedWeights:
    """One published checkpoint of a registered model.

    ``variant_args`` are constructor arguments that define the variant the file was trained as
    (``alpha`` for the LITv2-S alpha series); ``model_args`` are defaults the file implies
    (``num_classes=21841`` for ImageNet-22k) that a caller may still override.
    ``crop_pct``/``crop_mode``/``interpolation``/``mean``/``std`` are the official evaluation's
    preprocessing, with timm's meaning: ``crop_mode='center'`` resizes the shorter side to
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
            "top1": self.top1, "dataset": self.dataset, "paper": self.paper,
        }


# --------------------------------------------------------------------------- the table
_LITV2 = "https://github.com/ziplab/LITv2/releases/download/"
_LITV2_PAPER = "https://arxiv.org/abs/2205.13213"
_SWIN = "https://github.com/SwinTransformer/storage/releases/download/"
_SWIN_PAPER = "https://arxiv.org/abs/2103.14030"
_IN22K = 21841  # the ImageNet-22k classifier of the official Swin files


def _litv2(model: str, tag: str, file: str, top1: Optional[float], **kw: Any) -> PretrainedWeights:
    return PretrainedWeights(model=model, tag=tag, url=_LITV2 + file, top1=top1, paper=_LITV2_PAPER, **kw)


def _swin(model: str, tag: str, file: str, top1: Optional[float], timm_name: str, **kw: Any) -> PretrainedWeights:
    if tag == "ms_in22k":
        kw.setdefault("num_classes", _IN22K)
        kw.setdefault("model_args", {"num_classes": _IN22K})
        kw.setdefault("dataset", "imagenet-22k")
    elif tag == "ms_in22k_ft_in1k":
        kw.setdefault("dataset", "imagenet-22k, fine-tuned on imagenet-1k")
    if kw.get("input_size", (3, 224, 224))[1] >= 384:
        kw.update(_SQUASH)
    return PretrainedWeights(model=model, tag=tag, url=_SWIN + file, top1=top1, paper=_SWIN_PAPER,
                             hf_hub_id=f"timm/{timm_name}.{tag}", **kw)


# The official 384 models are evaluated with TEST.CROP False (configs/*384*.yaml of both
# projects): the whole image resized to 384x384, no crop.
_SQUASH = dict(crop_pct=1.0, crop_mode="squash")
# LITv2: README.md of ziplab/LITv2 (release v1.0; single-crop 224, crop 224/256 as the official
# TEST.CROP evaluation, bicubic). The alpha series (release v1.1) is LITv2-S trained with other
# shares of Lo-Fi heads: (alpha, tag, release file, official top-1). The tags keep underscores;
# the release's file names have the decimal point.
_S384 = dict(input_size=(3, 384, 384), **_SQUASH)
_ALPHAS = ((0.0, "alpha_0", "alpha_0.pth", 81.16), (0.2, "alpha_0_2", "alpha_0.2.pth", 81.89),
           (0.4, "alpha_0_4", "alpha_0.4.pth", 81.81), (0.5, "alpha_0_5", "alpha_0.5.pth", 81.88),
           (0.7, "alpha_0_7", "alpha_0.7.pth", 81.94), (0.9, "alpha_0_9", "alpha_0.9.pth", 82.03),
           (1.0, "alpha_1", "alpha_1.pth", 81.89))
_ENTRIES: List[PretrainedWeights] = [
    _litv2("litv2_s", "in1k", "v1.0/litv2_s.pth", 82.0, variant_args={"alpha": 0.9}),
    *(
        _litv2("litv2_s", tag, f"v1.1/{file}", top1, variant_args={"alpha": a}, file_name=f"litv2_s-{tag}.pth")
        for a, tag, file, top1 in _ALPHAS
    ),
    _litv2("litv2_m", "in1k", "v1.0/litv2_m.pth", 83.3),
    _litv2("litv2_b", "in1k", "v1.0/litv2_b.pth", 83.6),
    _litv2("litv2_b_384", "in1k", "v1.0/litv2_b_384.pth", 84.7, **_S384),
    # Swin: MODELHUB.md of microsoft/Swin-Transformer. The official evaluation resizes 224 models to
    # 256 and centre-crops (crop_pct 0.875; timm uses 0.9) and resizes 384 models straight to 384x384.
    _swin("swin_t", "ms_in1k", "v1.0.0/swin_tiny_patch4_window7_224.pth", 81.2, "swin_tiny_patch4_window7_224"),
    _swin("swin_t", "ms_in22k_ft_in1k", "v1.0.8/swin_tiny_patch4_window7_224_22kto1k_finetune.pth", 80.9,
          "swin_tiny_patch4_window7_224"),
    _swin("swin_t", "ms_in22k", "v1.0.8/swin_tiny_patch4_window7_224_22k.pth", None, "swin_tiny_patch4_window7_224"),
    _swin("swin_s", "ms_in1k", "v1.0.0/swin_small_patch4_window7_224.pth", 83.2, "swin_small_patch4_window7_224"),
    _swin("swin_s", "ms_in22k_ft_in1k", "v1.0.8/swin_small_patch4_window7_224_22kto1k_finetune.pth", 83.2,
          "swin_small_patch4_window7_224"),
    _swin("swin_s", "ms_in22k", "v1.0.8/swin_small_patch4_window7_224_22k.pth", None,
          "swin_small_patch4_window7_224"),
    _swin("swin_b", "ms_in1k", "v1.0.0/swin_base_patch4_window7_224.pth", 83.5, "swin_base_patch4_window7_224"),
    _swin("swin_b", "ms_in22k_ft_in1k", "v1.0.0/swin_base_patch4_window7_224_22kto1k.pth", 85.2,
          "swin_base_patch4_window7_224"),
    _swin("swin_b", "ms_in22k", "v1.0.0/swin_base_patch4_window7_224_22k.pth", None, "swin_base_patch4_window7_224"),
    _swin("swin_b_384", "ms_in22k_ft_in1k", "v1.0.0/swin_base_patch4_window12_384_22kto1k.pth", 86.4,
          "swin_base_patch4_window12_384", input_size=(3, 384, 384)),
    _swin("swin_b_384", "ms_in1k", "v1.0.0/swin_base_patch4_window12_384.pth", 84.5, "swin_base_patch4_window12_384",
          input_size=(3, 384, 384)),
    _swin("swin_b_384", "ms_in22k", "v1.0.0/swin_base_patch4_window12_384_22k.pth", None,
          "swin_base_patch4_window12_384", input_size=(3, 384, 384)),
    _swin("swin_l", "ms_in22k_ft_in1k", "v1.0.0/swin_large_patch4_window7_224_22kto1k.pth", 86.3,
          "swin_large_patch4_window7_224"),
    _swin("swin_l", "ms_in22k", "v1.0.0/swin_large_patch4_window7_224_22k.pth", None, "swin_large_patch4_window7_224"),
    _swin("swin_l_384", "ms_in22k_ft_in1k", "v1.0.0/swin_large_patch4_window12_384_22kto1k.pth", 87.3,
          "swin_large_patch4_window12_384", input_size=(3, 384, 384)),
    _swin("swin_l_384", "ms_in22k", "v1.0.0/swin_large_patch4_window12_384_22k.pth", None,
          "swin_large_patch4_window12_384", input_size=(3, 384, 384)),
]
# The first entry of a model is its default (the tag ``pretrained=True`` loads without one).
# timm's own names follow timm's default instead: the first tag of the name in timm's
# ``default_cfgs`` (timm/models/swin_transformer.py), where the ImageNet-22k fine-tuned weights come
# first except for Swin-T.
_TIMM_DEFAULT_TAGS = {
    "swin_tiny_patch4_window7_224": "ms_in1k",
    "swin_small_patch4_window7_224": "ms_in22k_ft_in1k",
    "swin_base_patch4_window7_224": "ms_in22k_ft_in1k",
    "swin_large_patch4_window7_224": "ms_in22k_ft_in1k",
    "swin_base_patch4_window12_384": "ms_in22k_ft_in1k",
    "swin_large_patch4_window12_384": "ms_in22k_ft_in1k",
}
_TABLE: Dict[str, Dict[str, PretrainedWeights]] = {}
for _w in _ENTRIES:
    if _w.tag in _TABLE.setdefault(_w.model, {}):
        raise ValueError(f"pretrained weights {_w.name!r} listed twice")
    _TABLE[_w.model][_w.tag] = _w


# --------------------------------------------------------------------------- look-up
def split_tag(name: str) -> Tuple[str, Optional[str]]:
    """``'litv2_s.alpha_0_5'`` -> ``('litv2_s', 'alpha_0_5')``; ``'litv2_s'`` -> ``('litv2_s', None)``."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    base, dot, tag = name.partition(".")
    if dot and not tag:
        raise ValueError(f"model name {name!r} ends with '.': expected 'name' or 'name.tag'")
    return base, (tag or None)


def timm_default_tag(name: str) -> Optional[str]:
    """The tag timm loads for one of timm's untagged names (``'swin_small_patch4_window7_224'`` ->
    ``'ms_in22k_ft_in1k'``); None for other names (ours default to their first published weights)."""
    return _TIMM_DEFAULT_TAGS.get(name)


def list_pretrained(pattern: str = "*") -> List[str]:
    """``name.tag`` of every published checkpoint matching a shell pattern (default tags first)."""
    import fnmatch

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


def _cfg_stats(values: Tuple[float, ...], in_chans: int) -> Tuple[float, ...]:
    if len(values) == in_chans:
        return tuple(values)
    if in_chans == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(in_chans))


def adapt_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Fit a checkpoint's state dict to ``model`` before :func:`hilovit.load_checkpoint`.

    * An mmdet/mmseg checkpoint (keys under ``backbone.``) loaded into a backbone or classifier
      keeps its backbone (the family's filter strips the prefix); a segmentation backbone's
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
    if sd and any(k.startswith("backbone.") for k in sd) and not any(k.startswith("backbone.") for k in own):
        sd = {k: v for k, v in sd.items() if k.startswith("backbone.")}
        prefix = "backbone."
    else:  # a plain checkpoint, or a whole detector / segmentor's for a model that has a backbone part
        prefix = ""
    extra_norm0 = [k for k in sd if k[len(prefix):].startswith("norm0.") and k[len(prefix):] not in own]
    if extra_norm0 and getattr(model, "features_only", False):
        warnings.warn("the checkpoint normalises stage 0 (norm0, a segmentation backbone); this model returns "
                      f"stage 0 without a norm, so {', '.join(sorted(extra_norm0))} are not loaded", stacklevel=3)
        for k in extra_norm0:
            del sd[k]
    stem = _stem_key(model)
    key = prefix + stem if stem else None
    if key in sd and stem in own:
        have, want = sd[key], own[stem]
        if have.dim() == 4 and want.dim() == 4 and have.shape[1] != want.shape[1] \
                and have.shape[0] == want.shape[0] and have.shape[2:] == want.shape[2:]:
            how = "summed over" if want.shape[1] == 1 else "repeated and scaled from"
            warnings.warn(f"{stem}: {want.shape[1]} input channel(s) {how} the checkpoint's {have.shape[1]}",
                          stacklevel=3)
            sd[key] = _adapt_in_chans(have, int(want.shape[1]))
    cfg = getattr(model, "pretrained_cfg", None) or {}
    heads = cfg.get("classifier", "head")
    heads = [heads] if isinstance(heads, str) else list(heads)
    for head in heads:
        if not any(k == head or k.startswith(head + ".") for k in own):
            for k in [k for k in sd if k[len(prefix):].startswith(head + ".")]:
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
    from hilovit.models.checkpoint import load_checkpoint

    state_dict = adapt_state_dict(model, state_dict)
    result = load_checkpoint(model, state_dict, strict=strict)
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg["weights"] = record
    model.pretrained_cfg = cfg
    return result


def apply_cfg(model: nn.Module, entry: PretrainedWeights) -> None:
    """Set ``model.pretrained_cfg`` from ``entry``, keeping what the model's own arguments decide
    (``num_classes``, ``input_size``; ``mean``/``std`` fitted to its input channels)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    own_input = cfg.get("input_size")
    own_classes = cfg.get("num_classes", getattr(model, "num_classes", None))
    cfg.update(entry.cfg())
    in_chans = int(getattr(model, "in_chans", entry.input_size[0]))
    if own_input is not None:
        cfg["input_size"] = tuple(own_input)
    if own_classes is not None:
        cfg["num_classes"] = own_classes
    cfg["mean"] = _cfg_stats(entry.mean, in_chans)
    cfg["std"] = _cfg_stats(entry.std, in_chans)
    model.pretrained_cfg = cfg


# --------------------------------------------------------------------------- the model list
def _matches(pattern: str, *names: str) -> bool:
    """A shell pattern (``'litv2*'``) matches the whole name; a plain word (``'litv2'``) anywhere in it."""
    import fnmatch

    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return any(fnmatch.fnmatch(n, pattern) for n in names if n)


def _gflops(model) -> Any:
    """``model.flops()`` in G multiply-adds, or None where the model has no count for its configuration."""
    flops = getattr(model, "flops", None)
    if not callable(flops):
        return None
    try:
        return round(flops() / 1e9, 2)
    except (ValueError, TypeError, NotImplementedError):
        return None


def model_rows(pattern: str = "*", pretrained: bool = False) -> List[Dict[str, Any]]:
    """One row per registered model (or, with ``pretrained``, per published checkpoint) matching
    ``pattern`` (a shell pattern on our names, timm's names, or ``name.tag``): parameters, FLOPs
    (multiply-adds at the input size, ``model.flops()``), input size, the official top-1, where
    the weights are published and whether they are in the cache. Models are built on the meta
    device (no memory, no time)."""
    from hilovit.models.registry import _ALIASES, create_model, list_models, model_task

    aliases: Dict[str, List[str]] = {}
    for alias, target in _ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    rows = []
    for name in list_models():
        names = [name, *aliases.get(name, [])]
        if pretrained:
            todo = [(w.name, w) for w in _TABLE.get(name, {}).values()
                    if _matches(pattern, *names, *(f"{n}.{w.tag}" for n in names))]
        elif _matches(pattern, *names):
            todo = [(name, get_pretrained(name))]
        else:
            todo = []
        for label, entry in todo:
            with torch.device("meta"):
                model = create_model(label if pretrained else name)
            cfg = model.pretrained_cfg
            gflops = _gflops(model)
            rows.append({
                "model": label,
                "task": model_task(name),
                "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                "GFLOPs": gflops if gflops is not None else "-",
                "input": "x".join(str(s) for s in cfg.get("input_size", ())),
                "crop_pct": cfg.get("crop_pct"),
                "top1": entry.top1 if entry is not None and entry.top1 is not None else "-",
                "dataset": entry.dataset if entry is not None else "-",
                "weights": entry.url if entry is not None else "-",
                "hf_hub_id": (entry.hf_hub_id or "-") if entry is not None else "-",
                "cached": ("yes" if entry.is_cached() else "no") if entry is not None else "-",
                "cache_path": entry.cache_path if entry is not None else "",
            })
    return rows
