"""Segmentation augmentation: the official mmseg training pipeline, on tensors, one sample at a time.

The official ADE20K configs train with::

    Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0))      # keep the aspect ratio
    RandomCrop(crop_size=(512, 512), cat_max_ratio=0.75)
    RandomFlip(prob=0.5)
    PhotoMetricDistortion()
    Normalize(...)
    Pad(size=(512, 512), pad_val=0, seg_pad_val=255)

:class:`SegTrainTransform` does the same steps on a uint8 image (C, H, W) and its int64 label map
(H, W): labels are always resized with nearest-neighbour interpolation, images bilinearly (without
anti-aliasing, as OpenCV's ``INTER_LINEAR`` that mmseg uses); every random number comes from the
``torch.Generator`` passed in, so a sample's augmentation is repeatable. Its output has the crop
size, so samples stack into batches; normalisation happens later on the batch.

Two differences from mmseg, both on the image only: the colour steps of the photometric distortion
(saturation, hue) go through kornia's float HSV instead of OpenCV's 8-bit HSV, so they round
differently; and padding is applied to the uint8 image (``pad_value``, default 0) where mmseg pads
the normalised image with 0 (the mean colour); pass the mean in 0..255 as ``pad_value`` to match it.
Padded pixels carry the ignore label, so they never enter the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import hsv_to_rgb, rgb_to_hsv
from torch.utils.data import Dataset

IGNORE_INDEX = 255


def _pair(value, name: str, kind=int) -> Tuple:
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        value = (value, value)
    try:
        a, b = value
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}, expected two numbers") from None
    return kind(a), kind(b)


@dataclass
class SegAugmentConfig:
    """The training augmentation recipe; defaults are the official ADE20K ones.

    Attributes:
        crop_size: (height, width) of the output.
        img_scale: (long edge, short edge) bound of the base rescale: an image is rescaled, keeping
            its aspect ratio, to the largest size whose long and short edges fit within
            ``img_scale`` times the sampled ratio (mmcv's ``imrescale``). None skips the rescale.
        ratio_range: (low, high) of the uniform random ratio; None uses ``img_scale`` as it is.
        cat_max_ratio: a crop is redrawn (up to 10 times) while one class fills this share or more
            of its labelled pixels, or while it holds fewer than two classes; 1 turns the check off.
        flip_prob: probability of a horizontal flip.
        photometric: apply mmseg's PhotoMetricDistortion (brightness, contrast, and for RGB images
            saturation and hue; each with probability 0.5).
        brightness_delta, contrast_range, saturation_range, hue_delta: its ranges (hue in OpenCV's
            units of 2 degrees).
        pad_value: fill of the padded image, one value or one per channel (0..255).
        ignore_index: the label of padded pixels, left out of the crop check.
    """

    crop_size: Tuple[int, int] = (512, 512)
    img_scale: Optional[Tuple[int, int]] = (2048, 512)
    ratio_range: Optional[Tuple[float, float]] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    brightness_delta: float = 32.0
    contrast_range: Tuple[float, float] = (0.5, 1.5)
    saturation_range: Tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18
    pad_value: Union[int, Sequence[int]] = 0
    ignore_index: int = IGNORE_INDEX

    def __post_init__(self) -> None:
        self.crop_size = _pair(self.crop_size, "SegAugmentConfig: crop_size")
        if min(self.crop_size) < 1:
            raise ValueError(f"SegAugmentConfig: crop_size={self.crop_size}, expected positive sides")
        if self.img_scale is not None:
            self.img_scale = _pair(self.img_scale, "SegAugmentConfig: img_scale")
            if min(self.img_scale) < 1:
                raise ValueError(f"SegAugmentConfig: img_scale={self.img_scale}, expected positive edges")
        if self.ratio_range is not None:
            lo, hi = _pair(self.ratio_range, "SegAugmentConfig: ratio_range", float)
            if not 0 < lo <= hi:
                raise ValueError(f"SegAugmentConfig: ratio_range=({lo}, {hi}), expected 0 < low <= high")
            self.ratio_range = (lo, hi)
        if not 0 < self.cat_max_ratio <= 1:
            raise ValueError(f"SegAugmentConfig: cat_max_ratio={self.cat_max_ratio}, expected a share in (0, 1]")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"SegAugmentConfig: flip_prob={self.flip_prob}, expected a probability in [0, 1]")
        for name in ("contrast_range", "saturation_range"):
            lo, hi = _pair(getattr(self, name), f"SegAugmentConfig: {name}", float)
            if not 0 <= lo <= hi:
                raise ValueError(f"SegAugmentConfig: {name}=({lo}, {hi}), expected 0 <= low <= high")
            setattr(self, name, (lo, hi))
        if self.brightness_delta < 0 or self.hue_delta < 0:
            raise ValueError(f"SegAugmentConfig: brightness_delta={self.brightness_delta} and "
                             f"hue_delta={self.hue_delta} must be >= 0")
        values = self.pad_value if isinstance(self.pad_value, (list, tuple)) else [self.pad_value]
        if not values or any(not 0 <= v <= 255 for v in values):
            raise ValueError(f"SegAugmentConfig: pad_value={self.pad_value!r}, expected values in 0..255")


# ----------------------------------------------------------------------------- steps
def _rand(generator: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: Optional[torch.Generator]) -> int:
    """An integer in [low, high) (numpy's ``randint`` convention)."""
    return int(torch.randint(low, high, (), generator=generator))


def rescale_size(height: int, width: int, scale: Tuple[int, int]) -> Tuple[int, int]:
    """The (height, width) that mmcv's ``imrescale(img, scale)`` gives: the largest size keeping the
    aspect ratio whose long edge is at most ``max(scale)`` and short edge at most ``min(scale)``."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_pair(image: torch.Tensor, label: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Resize a uint8 image (C, H, W) bilinearly and its label (H, W) with nearest neighbours to ``size``."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, label
    img = F.interpolate(image.unsqueeze(0).float(), size=size, mode="bilinear", align_corners=False)
    img = img.round_().clamp_(0, 255).to(torch.uint8)[0]
    lab = F.interpolate(label[None, None].double(), size=size, mode="nearest").long()[0, 0]
    return img, lab


def _crop_box(height: int, width: int, crop: Tuple[int, int], generator) -> Tuple[int, int, int, int]:
    top = _randint(0, max(height - crop[0], 0) + 1, generator)
    left = _randint(0, max(width - crop[1], 0) + 1, generator)
    return top, min(top + crop[0], height), left, min(left + crop[1], width)


def _largest_share(label: torch.Tensor, ignore_index: int) -> Tuple[int, float]:
    """(number of classes, share of the largest) among the pixels not ignored."""
    counts = torch.bincount(label.flatten())  # (no boolean indexing of the map: slow on many threads)
    if 0 <= ignore_index < counts.numel():
        counts[ignore_index] = 0
    total = int(counts.sum())
    if total == 0:
        return 0, 1.0
    return int((counts > 0).sum()), float(counts.max()) / total


def random_crop_box(
    label: torch.Tensor,
    crop_size: Tuple[int, int],
    cat_max_ratio: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    generator: Optional[torch.Generator] = None,
    tries: int = 10,
) -> Tuple[int, int, int, int]:
    """A crop box ``(top, bottom, left, right)`` as mmseg's RandomCrop draws it.

    With ``cat_max_ratio < 1`` a box is kept once it holds at least two classes and its largest
    class fills less than ``cat_max_ratio`` of the labelled pixels; after ``tries`` rejected boxes
    the next one is used unchecked (as mmseg does). A side shorter than the crop is taken whole.
    """
    h, w = label.shape[-2:]
    box = _crop_box(h, w, crop_size, generator)
    if cat_max_ratio < 1.0:
        for _ in range(tries):
            top, bottom, left, right = box
            n, share = _largest_share(label[top:bottom, left:right], ignore_index)
            if n > 1 and share < cat_max_ratio:
                break
            box = _crop_box(h, w, crop_size, generator)
    return box


def _blend(image: torch.Tensor, alpha: float = 1.0, beta: float = 0.0) -> torch.Tensor:
    """``uint8(clip(image * alpha + beta, 0, 255))`` with truncation, as mmseg's ``convert``."""
    return (image.float() * alpha + beta).clamp_(0, 255).to(torch.uint8)


def photometric_distortion(image: torch.Tensor, config: SegAugmentConfig,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """mmseg's PhotoMetricDistortion on a uint8 image (C, H, W), C = 3 (RGB) or 1 (grey).

    Brightness (add U(-delta, delta)), then contrast (multiply by U(low, high)) either second or
    last, and between them, for RGB only, saturation (scale S of HSV) and hue (shift H by an integer
    in [-hue_delta, hue_delta) units of 2 degrees); each step with probability 0.5. Values are clipped
    to 0..255 and truncated to integers after each step, as in mmseg.
    """
    cfg = config
    if _randint(0, 2, generator):
        image = _blend(image, beta=cfg.brightness_delta * (2 * _rand(generator) - 1))
    mode = _randint(0, 2, generator)

    def contrast(img):
        if _randint(0, 2, generator):
            lo, hi = cfg.contrast_range
            img = _blend(img, alpha=lo + (hi - lo) * _rand(generator))
        return img

    if mode == 1:
        image = contrast(image)
    if image.shape[0] == 3:
        if _randint(0, 2, generator):
            lo, hi = cfg.saturation_range
            alpha = lo + (hi - lo) * _rand(generator)
            hsv = rgb_to_hsv(image.float().div_(255).unsqueeze(0))
            hsv[:, 1] = (hsv[:, 1] * alpha).clamp_(0, 1)
            image = hsv_to_rgb(hsv)[0].mul_(255).round_().clamp_(0, 255).to(torch.uint8)
        if _randint(0, 2, generator):
            shift = _randint(-cfg.hue_delta, cfg.hue_delta, generator) if cfg.hue_delta > 0 else 0
            hsv = rgb_to_hsv(image.float().div_(255).unsqueeze(0))
            hsv[:, 0] = torch.remainder(hsv[:, 0] + shift * 2.0 * torch.pi / 180.0, 2 * torch.pi)
            image = hsv_to_rgb(hsv)[0].mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    if mode == 0:
        image = contrast(image)
    return image


def pad_pair(image: torch.Tensor, label: torch.Tensor, size: Tuple[int, int], pad_value=0,
             ignore_index: int = IGNORE_INDEX) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pad an image (C, H, W) with ``pad_value`` and its label with ``ignore_index`` at the bottom and
    right up to ``size`` (mmcv's ``impad(shape=size)``); larger sides are left as they are."""
    c, h, w = image.shape
    th, tw = max(size[0], h), max(size[1], w)
    if (th, tw) == (h, w):
        return image, label
    fill = torch.as_tensor(pad_value, dtype=image.dtype).flatten()
    out = fill.view(-1, 1, 1).expand(c, th, tw).clone() if fill.numel() in (1, c) else None
    if out is None:
        raise ValueError(f"pad_pair: pad_value={pad_value!r} has {fill.numel()} values for {c} channels")
    out[:, :h, :w] = image
    lab = torch.full((th, tw), ignore_index, dtype=label.dtype)
    lab[:h, :w] = label
    return out, lab


# ----------------------------------------------------------------------------- pipeline
class SegTrainTransform:
    """The official training pipeline on one sample: rescale, crop, flip, photometric, pad.

    Args:
        config: a :class:`SegAugmentConfig`; None gives the official ADE20K recipe.
        **overrides: fields of the config to change, e.g. ``SegTrainTransform(crop_size=128)``.

    Call: ``transform(image, label, generator=None) -> (image, label)`` with image uint8 (C, H, W)
    (C = 1 or 3) and label int64 (H, W) of the same size; the outputs are (C, *crop_size) and
    crop_size. ``generator`` (a ``torch.Generator``) makes the result repeatable; None uses torch's
    global generator.

    Example::

        >>> t = SegTrainTransform(crop_size=(128, 128), img_scale=(512, 128))
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = t(torch.zeros(1, 128, 128, dtype=torch.uint8), torch.zeros(128, 128, dtype=torch.long), g)
        >>> x.shape, y.shape
        (torch.Size([1, 128, 128]), torch.Size([128, 128]))
    """

    def __init__(self, config: Optional[SegAugmentConfig] = None, **overrides) -> None:
        config = config if config is not None else SegAugmentConfig()
        if not isinstance(config, SegAugmentConfig):
            raise TypeError(f"SegTrainTransform: config must be a SegAugmentConfig, got {type(config).__name__}")
        self.config = replace(config, **overrides) if overrides else config

    def sample_scale(self, generator: Optional[torch.Generator] = None) -> Optional[Tuple[int, int]]:
        """The (long, short) bound for one sample: ``img_scale`` times a ratio drawn from ``ratio_range``."""
        cfg = self.config
        if cfg.img_scale is None:
            return None
        if cfg.ratio_range is None:
            return cfg.img_scale
        lo, hi = cfg.ratio_range
        ratio = lo + (hi - lo) * _rand(generator)
        return int(cfg.img_scale[0] * ratio), int(cfg.img_scale[1] * ratio)

    def __call__(self, image: torch.Tensor, label: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.dim() != 3:
            got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
            raise TypeError(f"SegTrainTransform: image must be a uint8 tensor (C, H, W), got {got}")
        if not isinstance(label, torch.Tensor) or label.dim() != 2 or label.dtype.is_floating_point:
            got = f"{label.dtype} {tuple(label.shape)}" if isinstance(label, torch.Tensor) else type(label).__name__
            raise TypeError(f"SegTrainTransform: label must be an integer tensor (H, W), got {got}")
        if tuple(image.shape[1:]) != tuple(label.shape):
            raise ValueError(f"SegTrainTransform: image {tuple(image.shape)} and label {tuple(label.shape)} "
                             "differ in size")
        cfg = self.config
        label = label.long()
        scale = self.sample_scale(generator)
        if scale is not None:
            image, label = resize_pair(image, label, rescale_size(*label.shape, scale))
        top, bottom, left, right = random_crop_box(label, cfg.crop_size, cfg.cat_max_ratio, cfg.ignore_index,
                                                   generator)
        image, label = image[:, top:bottom, left:right], label[top:bottom, left:right]
        if _rand(generator) < cfg.flip_prob:
            image, label = image.flip(-1), label.flip(-1)
        if cfg.photometric:
            image = photometric_distortion(image, cfg, generator)
        image, label = pad_pair(image, label, cfg.crop_size, cfg.pad_value, cfg.ignore_index)
        return image.contiguous(), label.contiguous()

    def __repr__(self) -> str:
        return f"SegTrainTransform({self.config!r})"


def rescale_for_eval(image: torch.Tensor, img_scale: Tuple[int, int]) -> torch.Tensor:
    """The official test-time resize of a uint8 image (C, H, W): keep the aspect ratio, fit in ``img_scale``.

    The label map is not resized; predictions are resized back to the label's size for the metrics.
    """
    size = rescale_size(image.shape[-2], image.shape[-1], _pair(img_scale, "rescale_for_eval: img_scale"))
    if tuple(image.shape[-2:]) == size:
        return image
    img = F.interpolate(image.unsqueeze(0).float(), size=size, mode="bilinear", align_corners=False)
    return img.round_().clamp_(0, 255).to(torch.uint8)[0]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of ``epoch`` under ``seed``, the same in every process."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SegAugmentedDataset(Dataset):
    """A segmentation dataset seen through a :class:`SegTrainTransform`, repeatable per (seed, epoch, index).

    Each sample is augmented with its own ``torch.Generator`` seeded from ``(seed, epoch, index)``
    (:func:`sample_seed`), so the result does not depend on the worker, the process or the order;
    call :meth:`set_epoch` at each epoch for fresh augmentation.
    """

    def __init__(self, dataset: Dataset, transform: SegTrainTransform, seed: int = 0) -> None:
        if not callable(transform):
            raise TypeError(f"SegAugmentedDataset: transform must be callable, got {type(transform).__name__}")
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image, label = self.dataset[index]
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
        return self.transform(image, label, generator)

    def __getattr__(self, name: str):
        # classes, num_classes, ignore_index ... of the wrapped dataset
        if name in ("dataset", "transform", "seed", "epoch"):
            raise AttributeError(name)
        return getattr(self.dataset, name)
