"""Per-image transforms on PIL images, with timm's names and meanings.

* The geometry: :func:`resize_center_crop` (the official evaluation crop, timm's ``crop_mode``
  ``'center'`` and ``'squash'``) and :func:`random_resized_crop_box` (the training crop).
* :func:`create_transform` (``hilovit.data.create_transform``): timm's function of the same name for
  inference: ``create_transform(**resolve_data_config(model=m))`` -> a callable PIL image ->
  normalised ``(C, H, W)`` tensor, the one evaluation transform of hilovit (``hilovit predict``,
  :func:`preprocess_image`, the HiLo pictures).
* :func:`preprocess_image`: the same transform from a model's ``pretrained_cfg``.

Training augmentation in hilovit runs on batches of tensors (:class:`hilovit.data.BatchAugment`), so
``create_transform(is_training=True)`` is refused with a message saying so.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from hilovit.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from hilovit.options import check_number

__all__ = ["create_transform", "ImageTransform", "preprocess_image", "resize_center_crop", "random_resized_crop_box",
           "pil_interpolation", "normalization_problem", "PIL_INTERPOLATION", "CROP_MODES", "DEFAULT_CROP_PCT",
           "DEFAULT_CROP_MODE"]

DEFAULT_CROP_PCT = 0.875  # timm's defaults where neither the arguments nor a pretrained_cfg say
DEFAULT_CROP_MODE = "center"

# Interpolation names of the pretrained configs -> Pillow's resampling filters.
PIL_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def pil_interpolation(name: str) -> Image.Resampling:
    """``'bicubic'`` -> ``Image.Resampling.BICUBIC`` (also bilinear, nearest, lanczos, box, hamming)."""
    if not isinstance(name, str) or name.lower() not in PIL_INTERPOLATION:
        raise ValueError(f"interpolation={name!r}; expected one of {', '.join(PIL_INTERPOLATION)}")
    return PIL_INTERPOLATION[name.lower()]


def _check_crop_pct(crop_pct) -> float:
    return check_number(crop_pct, "crop_pct", minimum=0, maximum=1, min_open=True)


CROP_MODES = ("center", "squash")


def _check_crop_mode(crop_mode) -> str:
    if crop_mode not in CROP_MODES:
        raise ValueError(f"crop_mode={crop_mode!r}; expected one of {', '.join(map(repr, CROP_MODES))}")
    return crop_mode


def _check_range(name: str, value) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}; expected a pair (low, high)") from None
    if not 0 < lo <= hi:
        raise ValueError(f"{name}=({lo}, {hi}); expected 0 < low <= high")
    return lo, hi


# ----------------------------------------------------------------------------- sample geometry
def resize_center_crop(image: Image.Image, size: Union[int, Tuple[int, int]], crop_pct: float = 1.0,
                       interpolation: str = "bilinear", crop_mode: str = "center") -> Image.Image:
    """The evaluation protocol of the official models (and timm's ``crop_mode``) on a PIL image.

    ``crop_mode='center'``: for a square ``size`` S, resize so the shorter side is
    ``int(S / crop_pct)`` (the longer one ``int(short * long / shorter)``, keeping the aspect
    ratio), then crop the centre S x S (offsets ``round((side - S) / 2)``); ``crop_pct=1`` keeps
    the largest centred square. ``crop_mode='squash'`` (and any ``size=(H, W)`` with H != W):
    resize both sides to ``int(H / crop_pct)``, ``int(W / crop_pct)``, ignoring the aspect
    ratio, then crop the centre; with ``crop_pct=1`` the whole image is resized to H x W (the
    official evaluation of the 384 models).
    """
    H, W = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if H < 1 or W < 1:
        raise ValueError(f"size={size!r}; expected positive sides")
    crop_pct = _check_crop_pct(crop_pct)
    squash = _check_crop_mode(crop_mode) == "squash"
    resample = pil_interpolation(interpolation)
    w, h = image.size
    if H == W and not squash:
        short = int(H / crop_pct)
        new = (short, max(1, int(short * h / w))) if w <= h else (max(1, int(short * w / h)), short)
    else:
        new = (int(W / crop_pct), int(H / crop_pct))
    if new != (w, h):
        image = image.resize(new, resample)
    w, h = image.size
    top, left = int(round((h - H) / 2.0)), int(round((w - W) / 2.0))
    return image.crop((left, top, left + W, top + H))


def random_resized_crop_box(width: int, height: int, scale: Tuple[float, float] = (0.08, 1.0),
                            ratio: Tuple[float, float] = (3 / 4, 4 / 3)) -> Tuple[int, int, int, int]:
    """A random crop ``(left, top, w, h)`` of a ``width`` x ``height`` image: area a fraction in
    ``scale`` of the whole, aspect ratio ``w / h`` log-uniform in ``ratio``.

    Up to ten draws; when none fits inside the image, the centred crop of the whole image with its
    aspect ratio clamped into ``ratio``. Random numbers come from torch's global generator (seeded
    per DataLoader worker by torch).
    """
    scale, ratio = _check_range("scale", scale), _check_range("ratio", ratio)
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(2).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,)))
            left = int(torch.randint(0, width - w + 1, (1,)))
            return left, top, w, h
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif aspect > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


_RESAMPLE = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")  # hilovit.data.PIL_INTERPOLATION


def _cfg_value(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    value = cfg.get(key)
    return default if value is None else value


def preprocess_image(image: Image.Image, cfg: Mapping[str, Any]) -> torch.Tensor:
    """A PIL image -> the normalised ``(C, H, W)`` float tensor that ``cfg`` (a ``pretrained_cfg``) asks for:
    :func:`create_transform` with the cfg's ``input_size``, ``interpolation``, ``mean``, ``std``,
    ``crop_pct`` and ``crop_mode`` (missing ones: bilinear, crop_pct 1, centre, no normalisation), the
    transform ``hilovit predict`` applies.

    Raises:
        ValueError: a ``cfg`` value that cannot be used, before any pixel is touched: a ``mean`` or
            ``std`` of other than 1 or C values, not finite, or a std not above 0 (which would make
            the input NaN or infinite); a crop_pct outside (0, 1]; an unknown interpolation or crop mode;
            an image of other than C channels.
    """
    C, H, W = (int(v) for v in _cfg_value(cfg, "input_size", (3, 224, 224)))
    mean, std = _stats(cfg, "mean", 0.0, C), _stats(cfg, "std", 1.0, C)
    crop_pct = float(_cfg_value(cfg, "crop_pct", 1.0))
    if not 0.0 < crop_pct <= 1.0:
        raise ValueError(f"pretrained_cfg['crop_pct'] must be in (0, 1], got {crop_pct}")
    interp = str(_cfg_value(cfg, "interpolation", "bilinear"))
    if interp not in _RESAMPLE:
        raise ValueError(f"pretrained_cfg['interpolation'] = {interp!r}; expected one of {', '.join(_RESAMPLE)}")
    crop_mode = _cfg_value(cfg, "crop_mode", "center")
    if crop_mode not in CROP_MODES:
        raise ValueError(f"pretrained_cfg['crop_mode'] = {crop_mode!r}; expected one of {', '.join(CROP_MODES)}")
    transform = create_transform((C, H, W), interpolation=interp, mean=tuple(mean.flatten().tolist()),
                                 std=tuple(std.flatten().tolist()), crop_pct=crop_pct, crop_mode=crop_mode)
    return transform(image)


def normalization_problem(values: Any, kind: str, channels: int) -> Optional[str]:
    """What is wrong with ``values`` as the per-channel ``kind`` (``'mean'`` or ``'std'``) of a
    ``channels``-channel model, or None: finite numbers, 1 or ``channels`` of them, a std above 0."""
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        numbers = []
    count = "1 value" + (f" or {channels} values" if channels != 1 else "")
    if not numbers or len(numbers) not in (1, channels):
        return f"expected {count} for a {channels}-channel model"
    if not all(math.isfinite(v) for v in numbers):
        return f"expected finite numbers ({count})"
    if kind == "std" and min(numbers) <= 0:
        return f"expected numbers above 0 ({count}): the input is divided by the std"
    return None


def _stats(cfg: Mapping[str, Any], key: str, default: float, C: int) -> torch.Tensor:
    """``cfg[key]`` as a ``(C, 1, 1)`` tensor (1 value or C; finite; a std above 0)."""
    values = _cfg_value(cfg, key, (default,) * C)
    problem = normalization_problem(values, key, C)
    if problem is not None:
        raise ValueError(f"pretrained_cfg[{key!r}] = {values!r}: {problem}")
    numbers = [float(v) for v in values]
    return torch.tensor(numbers * (C if len(numbers) == 1 else 1), dtype=torch.float32).view(C, 1, 1)



# ----------------------------------------------------------------------------- timm's create_transform
# timm's training-only arguments: ignored for evaluation transforms, as timm does.
_TRAIN_ONLY = ("no_aug", "train_crop_mode", "scale", "ratio", "hflip", "vflip", "color_jitter", "color_jitter_prob",
               "grayscale_prob", "gaussian_blur_prob", "auto_augment", "re_prob", "re_mode", "re_count",
               "re_num_splits")


class ImageTransform:
    """The evaluation transform :func:`create_transform` returns: a PIL image -> ``(C, H, W)`` tensor.

    Resize and centre-crop by :func:`resize_center_crop` (``crop_pct``, ``crop_mode``, ``interpolation``),
    then, with ``normalize``, scale to [0, 1] and normalise with ``mean``/``std`` (float32); without, the
    uint8 pixels. ``channels``: the channels the model expects (None: any).
    """

    def __init__(self, size: Tuple[int, int], interpolation: str, mean: Tuple[float, ...], std: Tuple[float, ...],
                 crop_pct: float, crop_mode: str, normalize: bool = True, channels: Optional[int] = None):
        self.size, self.interpolation, self.crop_pct, self.crop_mode = size, interpolation, crop_pct, crop_mode
        self.mean, self.std, self.normalize, self.channels = mean, std, normalize, channels

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        H, W = self.size
        out = resize_center_crop(image, H if H == W else (H, W), self.crop_pct, self.interpolation, self.crop_mode)
        arr = np.asarray(out)
        x = torch.from_numpy(arr.copy())
        x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
        C = x.shape[0]
        if self.channels is not None and C != self.channels:
            raise ValueError(f"prepared image has {C} channels (PIL mode {image.mode!r}) but the model expects "
                             f"{self.channels}; convert it first (image.convert('RGB') or 'L')")
        if not self.normalize:
            return x.contiguous()
        for kind, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, C):
                raise ValueError(f"{kind}={values!r} has {len(values)} values for a {C}-channel image")
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return (x.float() / 255.0 - mean) / std

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(size={self.size}, interpolation={self.interpolation!r}, "
                f"crop_pct={self.crop_pct}, crop_mode={self.crop_mode!r}, mean={self.mean}, std={self.std}, "
                f"normalize={self.normalize})")


def _img_size(input_size: Any) -> Tuple[Optional[int], Tuple[int, int]]:
    """``(channels or None, (H, W))`` from timm's ``input_size``: an int, ``(H, W)`` or ``(C, H, W)``."""
    sizes = [input_size] if isinstance(input_size, (int, np.integer)) else input_size
    try:
        sizes = list(sizes)
    except TypeError:
        sizes = []
    if len(sizes) not in (1, 2, 3) or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                                          for v in sizes):
        raise ValueError(f"input_size={input_size!r}; expected a positive int, (H, W) or (C, H, W)")
    channels = int(sizes[0]) if len(sizes) == 3 else None
    return channels, (int(sizes[-2]), int(sizes[-1])) if len(sizes) > 1 else (int(sizes[0]), int(sizes[0]))


def _stat_values(values: Any, kind: str, channels: Optional[int]) -> Tuple[float, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    problem = normalization_problem(values, kind, channels or len(tuple(values)) if values is not None else 1)
    if problem is not None:
        raise ValueError(f"{kind}={values!r}: {problem}")
    return tuple(float(v) for v in values)


def create_transform(
    input_size: Union[int, Sequence[int]] = 224,
    is_training: bool = False,
    interpolation: str = "bilinear",
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    crop_pct: Optional[float] = None,
    crop_mode: Optional[str] = None,
    normalize: bool = True,
    crop_border_pixels: Optional[int] = None,
    tf_preprocessing: bool = False,
    use_prefetcher: bool = False,
    separate: bool = False,
    **train_args: Any,
) -> ImageTransform:
    """timm's ``create_transform`` for inference: a callable PIL image -> ``(C, H, W)`` tensor.

    Args:
        input_size: an int, ``(H, W)`` or ``(C, H, W)`` (timm's ``input_size``; C, when given, is checked
            against the image's channels).
        is_training: must be False: hilovit augments batches of tensors in training
            (:class:`hilovit.data.BatchAugment`, ``hilovit train``).
        interpolation: the resize filter (``'bilinear'``, ``'bicubic'``, ``'nearest'``, ``'lanczos'``,
            ``'box'``, ``'hamming'``).
        mean, std: the normalisation on the [0, 1] scale, 1 value or one per channel.
        crop_pct: the share of the resized image kept (``None``: 0.875, timm's default): resize to
            ``floor(size / crop_pct)``, then centre-crop ``size``.
        crop_mode: ``'center'`` (``None``, the default: the shorter side resized, keeping the aspect
            ratio) or ``'squash'`` (both sides resized, the aspect ratio not kept; with ``crop_pct=1``
            the whole image); a non-square size resizes both sides in either mode.
        normalize: False returns the uint8 pixels ``(C, H, W)`` instead of the normalised float32 tensor.
        crop_border_pixels, tf_preprocessing, use_prefetcher, separate: timm options hilovit does not
            offer; only their defaults are accepted.
        **train_args: timm's training-only arguments (``scale``, ``hflip``, ``color_jitter``,
            ``auto_augment``, ``re_prob``, ...), ignored as timm ignores them for evaluation.

    Raises:
        ValueError / TypeError: a bad value or an unknown argument, naming it.

    Example::

        >>> from hilovit.data import resolve_data_config, create_transform
        >>> config = resolve_data_config(model=model)        # input_size, interpolation, mean, std, crop_pct, crop_mode
        >>> transform = create_transform(**config)
        >>> logits = model(transform(Image.open("cat.jpg").convert("RGB")).unsqueeze(0))
    """
    unknown = sorted(set(train_args) - set(_TRAIN_ONLY))
    if unknown:
        raise TypeError(f"create_transform() got unexpected argument(s) {unknown}")
    if is_training:
        raise ValueError("create_transform(is_training=True): hilovit's training augmentation runs on batches of "
                         "tensors (hilovit.data.BatchAugment, hilovit train); this builds the evaluation transform")
    for key, value in (("crop_border_pixels", crop_border_pixels), ("tf_preprocessing", tf_preprocessing),
                       ("use_prefetcher", use_prefetcher), ("separate", separate)):
        if value not in (None, False, 0):
            raise ValueError(f"{key}={value!r} is not supported by hilovit's create_transform; leave it unset")
    channels, size = _img_size(input_size)
    crop_pct = _check_crop_pct(DEFAULT_CROP_PCT if crop_pct is None else crop_pct)
    crop_mode = _check_crop_mode(DEFAULT_CROP_MODE if crop_mode is None else crop_mode)
    pil_interpolation(interpolation)
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True or False, got {normalize!r}")
    return ImageTransform(size, interpolation.lower(), _stat_values(mean, "mean", channels),
                          _stat_values(std, "std", channels), crop_pct, crop_mode, normalize, channels)
