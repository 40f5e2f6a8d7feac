"""Pictures of segmentations: a colour palette, label maps as colours, input / truth / prediction side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

from hilovit.options import check_int

__all__ = ["seg_palette", "colorize", "overlay", "save_segmentation_figure", "save_segmentation_grid"]

PathLike = Union[str, "os.PathLike[str]"]
IGNORE_COLOUR = (255, 255, 255)


def seg_palette(num_classes: int) -> np.ndarray:
    """A fixed uint8 palette (num_classes, 3): black for class 0, then well separated colours.

    Colours come from the bits of the class index spread over the three channels (the PASCAL VOC
    scheme), so class ``k`` has the same colour for any ``num_classes``.
    """
    check_int(num_classes, "seg_palette: num_classes", minimum=1)
    pal = np.zeros((num_classes, 3), dtype=np.uint8)
    for k in range(num_classes):
        c, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        pal[k] = (r, g, b)
    return pal


def _as_label_array(label, name: str) -> np.ndarray:
    arr = label.detach().cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label map (H, W), got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


def colorize(label, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Label map (H, W) -> uint8 RGB (H, W, 3) with :func:`seg_palette`; ignored pixels white."""
    arr = _as_label_array(label, "label")
    pal = seg_palette(num_classes)
    bad = (arr != ignore_index) & ((arr < 0) | (arr >= num_classes))
    if bad.any():
        raise ValueError(f"label holds {int(arr[bad][0])}, outside [0, {num_classes}) and not the ignore index")
    out = np.empty((*arr.shape, 3), dtype=np.uint8)
    ignored = arr == ignore_index
    out[~ignored] = pal[arr[~ignored]]
    out[ignored] = IGNORE_COLOUR
    return out


def _image_rgb(image) -> np.ndarray:
    """uint8 tensor (C, H, W) (C = 1 or 3) or array (H, W[, C]) -> uint8 (H, W, 3)."""
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image must be a tensor (C, H, W) with 1 or 3 channels, got {tuple(image.shape)}")
        arr = image.detach().cpu().permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[:, :, None]
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr


def overlay(image, label, num_classes: int, alpha: float = 0.5, ignore_index: int = 255) -> np.ndarray:
    """The image with the label colours blended in (``alpha`` of colour; class 0 and ignored pixels left as they are
    when class 0 is black)."""
    rgb = _image_rgb(image).astype(np.float32)
    col = colorize(label, num_classes, ignore_index).astype(np.float32)
    if rgb.shape[:2] != col.shape[:2]:
        raise ValueError(f"image {rgb.shape[:2]} and label {col.shape[:2]} differ in size")
    arr = _as_label_array(label, "label")
    keep = (arr == ignore_index) | ((arr == 0) & (col.sum(-1) == 0))
    out = rgb * (1 - alpha) + col * alpha
    out[keep] = rgb[keep]
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def save_segmentation_grid(rows: Sequence[Tuple], path: PathLike, classes: Sequence[str], ignore_index: int = 255,
                           title: Optional[str] = None) -> Path:
    """One row per ``(image, truth, prediction)``: input, truth, prediction, and a legend of the classes
    present. Written atomically, PNG, JPEG or WebP by ``path``'s extension."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from hilovit.viz.files import image_format

    if not rows:
        raise ValueError("save_segmentation_grid: rows is empty, expected (image, truth, prediction) triples")
    image_format(path)  # an unknown extension is refused before drawing
    n = len(classes)
    pal = seg_palette(n)
    present = set()
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows) + 0.6), squeeze=False)
    for r, (image, truth, pred) in enumerate(rows):
        t, p = _as_label_array(truth, "truth"), _as_label_array(pred, "prediction")
        if t.shape != p.shape:
            raise ValueError(f"truth {t.shape} and prediction {p.shape} differ in size")
        present |= {int(v) for v in np.unique(t) if v != ignore_index} | {int(v) for v in np.unique(p)}
        pics = (_image_rgb(image), colorize(t, n, ignore_index), colorize(p, n, ignore_index))
        for ax, pic, name in zip(axes[r], pics, ("input", "truth", "prediction")):
            ax.imshow(pic, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
    handles = [Patch(facecolor=pal[k] / 255.0, edgecolor="grey", label=str(classes[k])) for k in sorted(present)
               if k < n]
    fig.legend(handles=handles, loc="lower center", ncol=min(6, max(1, len(handles))), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    from hilovit.viz.files import write_figure

    try:
        return write_figure(fig, path, dpi=100, tight=False)  # PNG, JPEG or WebP by the extension
    finally:
        plt.close(fig)


def save_segmentation_figure(image, truth, pred, path: PathLike, classes: Sequence[str],
                             ignore_index: int = 255, title: Optional[str] = None) -> Path:
    """Input, truth and prediction of one image side by side with a legend of the classes shown.

    Args:
        image: uint8 tensor (C, H, W) (C = 1 or 3) or array (H, W[, 3]).
        truth, pred: integer label maps (H, W) (``ignore_index`` pixels drawn white).
        path: the PNG to write.
        classes: class names in label order.
    """
    return save_segmentation_grid([(image, truth, pred)], path, classes, ignore_index, title)
