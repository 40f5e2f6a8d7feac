"""Pictures of detections: boxes, class names and scores (and instance masks) over the image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["draw_detections", "save_detection_grid", "save_detection_picture"]

PathLike = Union[str, "os.PathLike[str]"]


def _rgb(image: torch.Tensor) -> np.ndarray:
    arr = image.detach().cpu()
    if arr.dim() == 3 and arr.shape[0] in (1, 3):
        arr = arr.permute(1, 2, 0)
    arr = arr.numpy()
    if arr.ndim == 2 or arr.shape[-1] == 1:
        arr = np.repeat(arr.reshape(arr.shape[0], arr.shape[1], 1), 3, axis=2)
    return arr.astype(np.uint8)


def _colour(label: int) -> Tuple[float, float, float]:
    from hilovit.viz.segmentation import seg_palette

    return tuple(float(c) / 255 for c in seg_palette(max(label + 2, 2))[label + 1])


def draw_detections(ax, image: torch.Tensor, result: Mapping[str, Any], classes: Sequence[str],
                    score_thr: float = 0.3, title: Optional[str] = None, max_boxes: int = 30) -> int:
    """Draw ``image`` with the boxes (class name, score) and masks of ``result`` scoring at least
    ``score_thr`` on a matplotlib axis; returns how many were drawn."""
    from matplotlib.patches import Rectangle

    rgb = _rgb(image).astype(np.float32) / 255
    boxes, scores, labels = result["boxes"].cpu(), result.get("scores"), result["labels"].cpu()
    scores = scores.cpu() if scores is not None else torch.ones(len(boxes))
    keep = (scores >= score_thr).nonzero().flatten()[:max_boxes].tolist()
    masks = result.get("masks")
    if masks is not None:
        for k in keep:
            m = masks[k].cpu().numpy().astype(bool)
            rgb[m] = 0.5 * rgb[m] + 0.5 * np.array(_colour(int(labels[k])))
    ax.imshow(rgb, interpolation="nearest")
    for k in keep:
        x1, y1, x2, y2 = boxes[k].tolist()
        colour = _colour(int(labels[k]))
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
        name = classes[int(labels[k])] if int(labels[k]) < len(classes) else str(int(labels[k]))
        text = name if result.get("scores") is None else f"{name} {float(scores[k]):.2f}"
        ax.text(x1, y1 - 1, text, fontsize=6, color="white", va="bottom",
                bbox=dict(facecolor=colour, edgecolor="none", pad=0.5, alpha=0.8))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=8)
    return len(keep)


def save_detection_grid(rows: Sequence[Tuple[torch.Tensor, Mapping[str, Any], Mapping[str, Any]]], path: PathLike,
                        classes: Sequence[str], title: Optional[str] = None, score_thr: float = 0.3) -> Path:
    """One row per image: the ground truth beside the detections (``rows`` of ``(image, target, result)``)."""
    from hilovit.viz.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(len(rows), 2, figsize=(6, 3 * len(rows)), squeeze=False)
    for r, (image, target, result) in enumerate(rows):
        draw_detections(axes[r, 0], image, {**target, "scores": None}, classes, 0.0, "ground truth" if r == 0 else None)
        draw_detections(axes[r, 1], image, result, classes, score_thr,
                        f"detections (score >= {score_thr:g})" if r == 0 else None)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def save_detection_picture(image: torch.Tensor, result: Mapping[str, Any], path: PathLike, classes: Sequence[str],
                           score_thr: float = 0.3, title: Optional[str] = None) -> Path:
    """The detections of one image (boxes, names, scores, masks) as a picture at about the image's size."""
    from hilovit.viz.plots import _pyplot, save_figure

    plt = _pyplot()
    h, w = _rgb(image).shape[:2]
    scale = max(4.0 / max(h, w), min(12.0 / max(h, w), 1 / 100))
    fig, ax = plt.subplots(figsize=(max(3.0, w * scale), max(3.0, h * scale)))
    draw_detections(ax, image, result, classes, score_thr, title)
    fig.tight_layout()
    return save_figure(fig, path)
