"""Transforms on whole batches of tensors, run on the training device (kornia, no torchvision).

The pipeline an engine runs on each batch of ``uint8 (B, C, H, W)`` samples::

    x = to_float_batch(x)              # uint8 -> float in [0, 1]
    x = match_channels(x, in_chans)    # 1 -> 3 channels (or 3 -> 1) for the model
    x = augment(x)                     # BatchAugment: random in train(), plain resize in eval()
    x = normalize(x)                   # Normalize(mean, std)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Sequence, Tuple, Union

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia.augmentation.auto import RandAugment
from torch import nn

# ITU-R BT.601 luma weights, for 3 -> 1 channel conversion.
_LUMA = (0.299, 0.587, 0.114)


def to_float_batch(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert a uint8 batch to floats in [0, 1] (divide by 255).

    Args:
        x: uint8 tensor of any shape, typically (B, C, H, W). A floating tensor is taken as
            already scaled and only cast to ``dtype``.
        dtype: a floating dtype for the result.

    Returns:
        Tensor of the same shape, ``dtype``, on the same device.

    Raises:
        TypeError: ``x`` is not a tensor, has another integer/bool dtype, or ``dtype`` is not floating.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"to_float_batch: x must be a torch.Tensor, got {type(x).__name__}")
    if not dtype.is_floating_point:
        raise TypeError(f"to_float_batch: dtype={dtype} must be a floating dtype")
    if x.dtype == torch.uint8:
        return x.to(dtype).div_(255.0)
    if x.dtype.is_floating_point:
        return x.to(dtype)
    raise TypeError(f"to_float_batch: x has dtype {x.dtype}, expected uint8 (0..255) or a floating dtype")


def match_channels(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Give a batch the number of channels the model takes.

    1 -> C repeats the grey channel (e.g. Fashion-MNIST into an RGB model), 3 -> 1 takes the
    BT.601 luma, C -> C returns ``x`` itself.

    Args:
        x: float tensor (B, C, H, W).
        in_chans: channels wanted.

    Returns:
        Tensor (B, in_chans, H, W).

    Raises:
        ValueError: ``x`` is not 4-D or the conversion has no meaning (e.g. 3 -> 2, 4 -> 3).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"match_channels: x must be a tensor (B, C, H, W), got {shape}")
    c = x.shape[1]
    if c == in_chans:
        return x
    if c == 1 and in_chans >= 1:
        return x.expand(-1, in_chans, -1, -1).contiguous()
    if c == 3 and in_chans == 1:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise ValueError(
        f"match_channels: cannot turn {c} channels into in_chans={in_chans}; "
        "supported: equal counts, 1 -> any (repeat), 3 -> 1 (luma)"
    )


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel.

    Args:
        mean, std: sequences of C floats (or one float, used for every channel); std > 0.

    Shape:
        x: (B, C, H, W) float -> same shape. Statistics of length 1 apply to any C.

    Example::

        >>> norm = Normalize((0.286,), (0.353,))
        >>> norm(torch.rand(2, 3, 28, 28)).shape
        torch.Size([2, 3, 28, 28])
    """

    def __init__(self, mean: Union[float, Sequence[float]], std: Union[float, Sequence[float]]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != std_t.numel() or mean_t.numel() == 0:
            raise ValueError(
                f"Normalize: mean={mean} and std={std} must have the same, non-zero number of values"
            )
        if not torch.all(std_t > 0):
            raise ValueError(f"Normalize: std={std} must be positive")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.mean.shape[1]
        if x.dim() != 4 or (c != 1 and x.shape[1] != c):
            raise ValueError(f"Normalize: x has shape {tuple(x.shape)}, expected (B, {c}, H, W)")
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


@dataclass
class AugmentConfig:
    """A training augmentation recipe for :class:`BatchAugment`. Defaults suit small images.

    Attributes:
        img_size: output side (square); None keeps the input's H, W.
        random_resized_crop: crop a random area and aspect ratio, resize to ``img_size``.
        scale: area range of the crop. Default (0.35, 1.0), not ImageNet's (0.08, 1.0): on a
            28x28 image 8% of the area is an 8x8 patch, too little to recognise a garment.
        ratio: aspect-ratio range of the crop.
        hflip: horizontal flip with probability 0.5 (turn off for digits or text).
        rand_augment: kornia's RandAugment with ``rand_augment_n`` operations of magnitude
            ``rand_augment_m`` (in (0, 30); 9 as in the paper's ImageNet setting).
        random_erasing: probability of erasing one random rectangle per image (0 = off).
        erasing_scale, erasing_ratio: area and aspect ranges of the rectangle.
        erasing_mode: ``'pixel'`` fills it with uniform noise in [0, 1] (like timm's default in
            DeiT-style recipes, so black backgrounds are still changed); ``'const'`` with
            ``erasing_value``.
        erasing_value: fill value in [0, 1] for ``'const'``.
    """

    img_size: Optional[int] = None
    random_resized_crop: bool = True
    scale: Tuple[float, float] = (0.35, 1.0)
    ratio: Tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    rand_augment: bool = False
    rand_augment_n: int = 2
    rand_augment_m: int = 9
    random_erasing: float = 0.0
    erasing_scale: Tuple[float, float] = (0.02, 1 / 3)
    erasing_ratio: Tuple[float, float] = (0.3, 3.3)
    erasing_mode: str = "pixel"
    erasing_value: float = 0.0

    def __post_init__(self) -> None:
        if self.img_size is not None and (not isinstance(self.img_size, int) or self.img_size < 1):
            raise ValueError(f"AugmentConfig: img_size={self.img_size!r}, expected a positive int or None")
        for name in ("scale", "ratio", "erasing_scale", "erasing_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"AugmentConfig: {name}=({lo}, {hi}), expected 0 < low <= high")
            setattr(self, name, (float(lo), float(hi)))
        if self.scale[1] > 1 or self.erasing_scale[1] > 1:
            raise ValueError(f"AugmentConfig: area fractions must be <= 1, got scale={self.scale}, "
                             f"erasing_scale={self.erasing_scale}")
        if not 0.0 <= self.random_erasing <= 1.0:
            raise ValueError(f"AugmentConfig: random_erasing={self.random_erasing}, expected a probability in [0, 1]")
        if not 1 <= self.rand_augment_n <= 15:
            raise ValueError(
                f"AugmentConfig: rand_augment_n={self.rand_augment_n}, expected 1..15 (kornia's 15 operations)"
            )
        if not 0 < self.rand_augment_m < 30:
            raise ValueError(f"AugmentConfig: rand_augment_m={self.rand_augment_m}, expected 0 < m < 30")
        if self.erasing_mode not in ("pixel", "const"):
            raise ValueError(f"AugmentConfig: erasing_mode={self.erasing_mode!r}, expected 'pixel' or 'const'")
        if not 0.0 <= self.erasing_value <= 1.0:
            raise ValueError(f"AugmentConfig: erasing_value={self.erasing_value}, expected a value in [0, 1]")

    @classmethod
    def off(cls, img_size: Optional[int] = None) -> AugmentConfig:
        """A recipe with every random step off (only the resize to ``img_size`` remains)."""
        return cls(img_size=img_size, random_resized_crop=False, hflip=False, rand_augment=False,
                   random_erasing=0.0)


class BatchAugment(nn.Module):
    """Random augmentation of a float batch in training mode; a plain resize in eval mode.

    Training (``module.train()``), in order, each step switchable in the recipe:
    random resized crop to ``img_size`` (else a resize when the size differs; also a resize when
    ``crop_in_loader`` says the data loader took the crop from the full image), horizontal flip,
    RandAugment, random erasing. Evaluation (``module.eval()``): a deterministic bilinear,
    anti-aliased resize to ``img_size`` (nothing when the size already matches). Randomness comes
    from torch's global generator (``torch.manual_seed`` makes it repeatable).

    kornia 0.9's RandAugment accepts only 3-channel input; a 1-channel batch is run through it as
    a 3-channel copy and averaged back (grey stays grey under every operation, so this is exact
    up to float rounding).

    Args:
        config: an :class:`AugmentConfig`; None gives the defaults.
        **overrides: fields of the config to change, e.g. ``BatchAugment(img_size=32, hflip=False)``.

    Shape:
        x: float (B, C, H, W) in [0, 1] -> float (B, C, img_size, img_size) in [0, 1]
        (H, W kept when ``img_size`` is None). With every step off and the size unchanged the
        input is returned as is.
    """

    def __init__(self, config: Optional[AugmentConfig] = None, **overrides) -> None:
        super().__init__()
        config = config if config is not None else AugmentConfig()
        if not isinstance(config, AugmentConfig):
            raise TypeError(f"BatchAugment: config must be an AugmentConfig, got {type(config).__name__}")
        known = {f.name for f in fields(AugmentConfig)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"BatchAugment: unknown option(s) {unknown}; expected fields of AugmentConfig")
        self.config = replace(config, **overrides) if overrides else config
        cfg = self.config
        self.flip = K.RandomHorizontalFlip(p=0.5) if cfg.hflip else None
        self.rand_augment = RandAugment(n=cfg.rand_augment_n, m=cfg.rand_augment_m) if cfg.rand_augment else None
        self.erasing = (
            K.RandomErasing(scale=cfg.erasing_scale, ratio=cfg.erasing_ratio, value=0.0, p=cfg.random_erasing)
            if cfg.random_erasing > 0 else None
        )
        self.crops = nn.ModuleDict()  # kornia RandomResizedCrop per output size, made on first use
        # True when the data loader already took the random-resized crop from the full image
        # (hilovit.train.loaders.crop_in_workers): only a resize to img_size is left here.
        self.crop_in_loader = False

    def _out_size(self, x: torch.Tensor) -> Tuple[int, int]:
        s = self.config.img_size
        return (s, s) if s is not None else (x.shape[-2], x.shape[-1])

    @staticmethod
    def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        if tuple(x.shape[-2:]) == tuple(size):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)

    def _random_resized_crop(self, x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        key = f"{size[0]}x{size[1]}"
        if key not in self.crops:
            self.crops[key] = K.RandomResizedCrop(size, scale=self.config.scale, ratio=self.config.ratio)
        return self.crops[key](x)

    def _rand_augment(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == 3:
            y = self.rand_augment(x)
        elif c == 1:
            y = self.rand_augment(x.expand(-1, 3, -1, -1).contiguous()).mean(1, keepdim=True)
        else:
            raise ValueError(f"BatchAugment: RandAugment takes 1 or 3 channels, got x with {c} channels")
        return y.clamp_(0.0, 1.0)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        # kornia draws the rectangles (per sample, with probability p); erasing a batch of ones
        # gives the mask, which is filled with noise or a constant.
        ones = torch.ones(x.shape[0], 1, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
        mask = self.erasing(ones) == 0  # (B, 1, H, W)
        if self.config.erasing_mode == "pixel":
            fill = torch.rand_like(x)
        else:
            fill = torch.full_like(x, self.config.erasing_value)
        return torch.where(mask, fill, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.dtype.is_floating_point:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"BatchAugment: x must be a float tensor (B, C, H, W) in [0, 1], got {got}")
        size = self._out_size(x)
        if not self.training:
            return self._resize(x, size)
        cfg = self.config
        crop = cfg.random_resized_crop and not self.crop_in_loader
        x = self._random_resized_crop(x, size) if crop else self._resize(x, size)
        if self.flip is not None:
            x = self.flip(x)
        if self.rand_augment is not None:
            x = self._rand_augment(x)
        if self.erasing is not None:
            x = self._erase(x)
        return x

    def extra_repr(self) -> str:
        return repr(self.config)
