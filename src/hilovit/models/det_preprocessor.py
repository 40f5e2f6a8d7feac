"""Detection input pipeline: mmdet's ``DetDataPreprocessor`` and the official test-time resize.

:class:`DetDataPreprocessor` turns uint8 images of any sizes into one normalised, padded float
batch plus per-image metainfo, exactly as mmdet 3.x (on mmengine's ``ImgDataPreprocessor``):
per image the channels are swapped when asked (``bgr_to_rgb``), cast to float, normalised
``(x - mean) / std``; then all are padded bottom/right with ``pad_value`` (in normalised space) to
the largest height and width, rounded up to ``pad_size_divisor``.

:func:`resize_keep_ratio` is mmcv's ``Resize(scale=(1333, 800), keep_ratio=True)`` of the official
COCO test pipeline: the largest factor that fits the long side into 1333 and the short side into
800, sizes rounded half up, bilinear (PyTorch's half-pixel ``bilinear``, no antialiasing, as
OpenCV's ``INTER_LINEAR``; rounded back to uint8).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from hilovit.options import check_int, check_ints, check_number

__all__ = ["DetDataPreprocessor", "as_image_list", "resize_keep_ratio"]

Images = Union[torch.Tensor, Sequence[torch.Tensor]]


def as_image_list(images: Images, in_chans: Optional[int] = None, name: str = "images") -> List[torch.Tensor]:
    """A list of ``(C, H, W)`` uint8 tensors from a list of them or one ``(B, C, H, W)`` uint8 tensor."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ValueError(f"{name} as one tensor must be (B, C, H, W), got shape {tuple(images.shape)}")
        images = list(images)
    if not isinstance(images, (list, tuple)) or not images:
        raise TypeError(f"{name} must be a non-empty list of (C, H, W) uint8 tensors or a (B, C, H, W) uint8 tensor, "
                        f"got {type(images).__name__}")
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(img).__name__}")
        if img.dtype != torch.uint8:
            raise TypeError(f"{name}[{i}] must be uint8 (pixel values 0-255), got dtype {img.dtype}")
        if img.dim() != 3 or min(img.shape[1:]) < 1 or (in_chans is not None and img.shape[0] != in_chans):
            want = f"({in_chans}, H, W)" if in_chans is not None else "(C, H, W)"
            raise ValueError(f"{name}[{i}] must have shape {want}, got {tuple(img.shape)}")
    return list(images)


def resize_keep_ratio(image: torch.Tensor,
                      scale: Tuple[int, int] = (1333, 800)) -> Tuple[torch.Tensor, Tuple[float, float]]:
    """Resize a ``(C, H, W)`` uint8 image keeping its aspect ratio into ``scale`` = (long, short)
    edges, as mmcv's ``imrescale``: factor ``min(long / max(H, W), short / min(H, W))``, new size
    ``int(W * f + 0.5) x int(H * f + 0.5)``. Returns the image and mmdet's ``scale_factor``
    ``(new_W / W, new_H / H)``."""
    check_ints(scale, "scale", minimum=1, length=2)  # (long edge, short edge), either order
    h, w = int(image.shape[-2]), int(image.shape[-1])
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    new_w, new_h = max(int(w * factor + 0.5), 1), max(int(h * factor + 0.5), 1)
    if (new_h, new_w) == (h, w):
        return image, (1.0, 1.0)
    out = F.interpolate(image[None].float(), size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    return out.round_().clamp_(0, 255).to(torch.uint8), (new_w / w, new_h / h)


def _numbers(values, name: str) -> List[float]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = [values]
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) for v in values
    ):
        raise ValueError(f"{name} must be a list of numbers (one per channel), got {values!r}")
    return [float(v) for v in values]


class DetDataPreprocessor(nn.Module):
    """Normalise and pad a batch of uint8 images (mmdet 3.x ``DetDataPreprocessor``).

    Args:
        mean, std: per channel, on the 0-255 scale (COCO models: ImageNet's ``[123.675, 116.28,
            103.53]``, ``[58.395, 57.12, 57.375]``). Non-persistent buffers: no state-dict keys.
        bgr_to_rgb: swap the channels of 3-channel images given in the official loading order (BGR,
            as OpenCV reads files); rgb_to_bgr: the reverse.
        pad_size_divisor: the padded batch's height and width are multiples of it.
        pad_value: the value of the padding (after normalisation).
        pad_mask, mask_pad_value, pad_seg, seg_pad_value, boxtype2tensor, non_blocking: accepted
            (ground-truth padding options of mmdet; no effect on images).

    ``forward(images, channel_order='bgr', metainfo=None)``: ``images`` a list of ``(C, H_i, W_i)``
    uint8 tensors (or one ``(B, C, H, W)``) in ``channel_order`` (``'bgr'``: the official loading;
    ``'rgb'``: channels already in the model's order when ``bgr_to_rgb``). Returns ``(inputs,
    metainfo)``: ``inputs`` ``(B, C, Hp, Wp)`` float32 and one dict per image with ``img_shape``,
    ``ori_shape``, ``scale_factor``, ``pad_shape``, ``batch_input_shape`` (entries given in
    ``metainfo`` are kept: a resize's ``ori_shape`` and ``scale_factor``).
    """

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375),
                 bgr_to_rgb: bool = False, rgb_to_bgr: bool = False, pad_size_divisor: int = 1,
                 pad_value: float = 0.0, pad_mask: bool = False, mask_pad_value: int = 0, pad_seg: bool = False,
                 seg_pad_value: int = 255, boxtype2tensor: bool = True, non_blocking: bool = False,
                 batch_augments: Any = None):
        super().__init__()
        mean, std = _numbers(mean, "mean"), _numbers(std, "std")
        if len(mean) != len(std):
            raise ValueError(f"mean {mean} and std {std} must have one entry per channel each")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {std}")
        if bgr_to_rgb and rgb_to_bgr:
            raise ValueError("bgr_to_rgb and rgb_to_bgr cannot both be True")
        if (bgr_to_rgb or rgb_to_bgr) and len(mean) != 3:
            raise ValueError(f"bgr_to_rgb / rgb_to_bgr need 3 channels; mean has {len(mean)}")
        check_int(pad_size_divisor, "pad_size_divisor", minimum=1)
        check_number(pad_value, "pad_value")
        if batch_augments is not None:
            raise ValueError(f"batch_augments={batch_augments!r} is not supported; use None")
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        self.swap = bool(bgr_to_rgb or rgb_to_bgr)
        self.bgr_to_rgb, self.rgb_to_bgr = bool(bgr_to_rgb), bool(rgb_to_bgr)
        self.pad_size_divisor = pad_size_divisor
        self.pad_value = float(pad_value)

    @property
    def in_chans(self) -> int:
        return self.mean.shape[0]

    def pad_shape(self, hw: Sequence[int]) -> Tuple[int, int]:
        """``(h, w)`` rounded up to ``pad_size_divisor``."""
        d = self.pad_size_divisor
        return (-(-int(hw[0]) // d) * d, -(-int(hw[1]) // d) * d)

    def forward(self, images: Images, channel_order: str = "bgr",
                metainfo: Optional[Sequence[Mapping[str, Any]]] = None) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
        if channel_order not in ("bgr", "rgb"):
            raise ValueError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
        imgs = as_image_list(images, self.in_chans)
        if metainfo is not None and len(metainfo) != len(imgs):
            raise ValueError(f"metainfo has {len(metainfo)} entries for {len(imgs)} images")
        # the swap converts the official loading order; images already in the other order skip it
        swap = self.swap and channel_order == ("bgr" if self.bgr_to_rgb else "rgb")
        H, W = self.pad_shape((max(i.shape[1] for i in imgs), max(i.shape[2] for i in imgs)))
        device = self.mean.device
        batch = torch.full((len(imgs), self.in_chans, H, W), self.pad_value, dtype=self.mean.dtype, device=device)
        metas = []
        for k, img in enumerate(imgs):
            x = img.to(device)
            if swap:
                x = x[[2, 1, 0]]
            h, w = x.shape[1:]
            batch[k, :, :h, :w] = (x.to(self.mean.dtype) - self.mean) / self.std
            meta = {"img_shape": (h, w), "ori_shape": (h, w), "scale_factor": (1.0, 1.0)}
            meta.update(dict(metainfo[k]) if metainfo is not None else {})
            meta.update(pad_shape=self.pad_shape((h, w)), batch_input_shape=(H, W))
            metas.append(meta)
        return batch, metas
