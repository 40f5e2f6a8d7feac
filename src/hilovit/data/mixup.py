"""Mixup and CutMix on batches, with label smoothing, and the soft-target cross-entropy they need.

Batch mode: one lambda (and one CutMix box) per batch; sample ``i`` is mixed with sample
``B - 1 - i`` (the batch flipped), so no permutation has to be stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from hilovit.options import check_int


def smooth_one_hot(targets: torch.Tensor, num_classes: int, smoothing: float = 0.0,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot targets with label smoothing.

    The true class gets ``1 - smoothing + smoothing / num_classes``, every other class
    ``smoothing / num_classes``; each row sums to 1.

    Args:
        targets: integer tensor (B,) with values in [0, num_classes).
        num_classes: K.
        smoothing: in [0, 1).
        dtype: floating dtype of the result.

    Returns:
        Tensor (B, K).
    """
    if not isinstance(targets, torch.Tensor) or targets.dim() != 1 or targets.dtype.is_floating_point \
            or targets.dtype == torch.bool:
        got = f"{targets.dtype} {tuple(targets.shape)}" if isinstance(targets, torch.Tensor) else type(targets)
        raise TypeError(f"targets must be an integer tensor (B,) of class indices, got {got}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets has values in [{int(targets.min())}, {int(targets.max())}], expected [0, {num_classes})"
        )
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing={smoothing}, expected a value in [0, 1)")
    off = smoothing / num_classes
    out = torch.full((targets.shape[0], num_classes), off, dtype=dtype, device=targets.device)
    return out.scatter_(1, targets.long().unsqueeze(1), 1.0 - smoothing + off)


def soft_target_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor,
                              reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against a target distribution: ``sum_k -t_k * log_softmax(logits)_k``.

    Args:
        logits: (B, K).
        soft_targets: (B, K), rows summing to 1 (e.g. from :class:`Mixup`).
        reduction: ``'mean'`` over the batch, ``'sum'`` or ``'none'`` (shape (B,)).

    Returns:
        A scalar, or (B,) with ``reduction='none'``. Equals ``F.cross_entropy(logits, y)``
        when ``soft_targets`` is the one-hot of ``y``.
    """
    if logits.dim() != 2 or logits.shape != soft_targets.shape:
        raise ValueError(
            f"soft_target_cross_entropy: logits {tuple(logits.shape)} and soft_targets "
            f"{tuple(soft_targets.shape)} must both be (B, K)"
        )
    loss = torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"soft_target_cross_entropy: reduction={reduction!r}, expected 'mean', 'sum' or 'none'")


@dataclass(frozen=True)
class MixParams:
    """One draw of :class:`Mixup`.

    Attributes:
        mode: ``'none'``, ``'mixup'`` or ``'cutmix'``.
        lam: weight of the original sample (for CutMix: the share of its pixels actually kept).
        box: CutMix rectangle ``(y0, y1, x0, x1)`` (half-open) pasted from the flipped batch, else None.
    """

    mode: str
    lam: float
    box: Optional[Tuple[int, int, int, int]] = None


class Mixup:
    """Mixup / CutMix a batch and return smoothed soft targets (batch mode, as in DeiT and LITv2).

    With probability ``prob`` a batch is mixed, by CutMix with probability ``switch_prob`` (when
    both alphas are > 0) else by Mixup; lambda ~ Beta(alpha, alpha).

    * Mixup: ``x' = lam * x + (1 - lam) * x.flip(0)``.
    * CutMix: a box of area about ``(1 - lam) * H * W`` (side ``sqrt(1 - lam)``, centre uniform,
      clipped at the border) is pasted from ``x.flip(0)``; lam is then corrected to
      ``1 - box_area / (H * W)``.
    * targets: ``lam * y + (1 - lam) * y.flip(0)`` with ``y`` the label-smoothed one-hot.

    ``prob=0``, both alphas 0 or ``enabled=False`` return ``x`` unchanged with smoothed one-hot
    targets. Draws come from ``generator`` (per call, else the one given here) or torch's global
    generator, so a seed fixes them.

    Args:
        mixup_alpha: Beta parameter of Mixup (0 = off).
        cutmix_alpha: Beta parameter of CutMix (0 = off).
        prob: probability of mixing a batch.
        switch_prob: probability of CutMix rather than Mixup when both are on.
        label_smoothing: smoothing in [0, 1).
        num_classes: K (required).
        generator: optional ``torch.Generator``.

    Shape:
        ``mixup(x, targets)``: x float (B, C, H, W), targets int (B,) -> (x' (B, C, H, W), soft (B, K)).

    Example::

        >>> mix = Mixup(num_classes=10)
        >>> x, y = mix(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
        >>> y.shape, bool(torch.allclose(y.sum(1), torch.ones(8)))
        (torch.Size([8, 10]), True)
    """

    def __init__(
        self,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        *,
        num_classes: int,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        for name, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"Mixup: {name}={value!r}, expected a finite number >= 0")
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"Mixup: {name}={value!r}, expected a probability in [0, 1]")
        if not (isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing < 1.0):
            raise ValueError(f"Mixup: label_smoothing={label_smoothing!r}, expected a value in [0, 1)")
        check_int(num_classes, "Mixup: num_classes", minimum=1)
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.prob = float(prob)
        self.switch_prob = float(switch_prob)
        self.label_smoothing = float(label_smoothing)
        self.num_classes = num_classes
        self.generator = generator
        self.enabled = True  # switch off to stop mixing (e.g. for the last epochs)
        self.last: Optional[MixParams] = None

    @property
    def active(self) -> bool:
        """Whether a call can mix at all."""
        return self.enabled and self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def sample_params(self, height: int, width: int, generator: Optional[torch.Generator] = None) -> MixParams:
        """Draw the mode, lambda and CutMix box for one batch of images of size ``height x width``."""
        g = generator if generator is not None else self.generator
        if not self.active:
            return MixParams("none", 1.0)
        dev = g.device if g is not None else "cpu"
        if float(torch.rand((), generator=g, device=dev)) >= self.prob:
            return MixParams("none", 1.0)
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cutmix = float(torch.rand((), generator=g, device=dev)) < self.switch_prob
        else:
            cutmix = self.cutmix_alpha > 0
        # torch has no seeded Beta sampler: a seed drawn from torch drives numpy's.
        seed = int(torch.randint(0, 2**62, (), generator=g, device=dev))
        rng = np.random.default_rng(seed)
        alpha = self.cutmix_alpha if cutmix else self.mixup_alpha
        lam = float(rng.beta(alpha, alpha))
        if not cutmix:
            return MixParams("mixup", lam)
        ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        lam = 1.0 - (y1 - y0) * (x1 - x0) / float(height * width)
        return MixParams("cutmix", lam, (y0, y1, x0, x1))

    def apply(self, x: torch.Tensor, targets: torch.Tensor, params: MixParams) -> Tuple[torch.Tensor, torch.Tensor]:
        """Mix ``x`` and build soft targets according to ``params`` (see the class docstring)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.dtype.is_floating_point:
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"Mixup: x must be a float tensor (B, C, H, W), got {got}")
        if not isinstance(targets, torch.Tensor) or targets.shape != (x.shape[0],):
            got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"Mixup: targets must be a tensor ({x.shape[0]},) of class indices, got {got}")
        y = smooth_one_hot(targets, self.num_classes, self.label_smoothing, dtype=x.dtype)
        if params.mode == "none":
            return x, y
        lam = params.lam
        if params.mode == "mixup":
            x = x * lam + x.flip(0) * (1.0 - lam)
        elif params.mode == "cutmix":
            y0, y1, x0, x1 = params.box
            x = x.clone()
            x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
        else:
            raise ValueError(f"Mixup: params.mode={params.mode!r}, expected 'none', 'mixup' or 'cutmix'")
        return x, y * lam + y.flip(0) * (1.0 - lam)

    def __call__(self, x: torch.Tensor, targets: torch.Tensor,
                 generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"Mixup: x must be a float tensor (B, C, H, W), got {got}")
        params = self.sample_params(x.shape[-2], x.shape[-1], generator)
        self.last = params
        return self.apply(x, targets, params)

    def __repr__(self) -> str:
        return (f"Mixup(mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, prob={self.prob}, "
                f"switch_prob={self.switch_prob}, label_smoothing={self.label_smoothing}, "
                f"num_classes={self.num_classes})")
