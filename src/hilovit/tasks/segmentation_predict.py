"""Segmentation inference on image files: the ``(H, W)`` label map, a palette PNG of it and an overlay.

Example::

    >>> from hilovit.tasks.segmentation_predict import SegPredictor
    >>> p = SegPredictor("runs/fashion-scenes")          # a training folder or model.safetensors
    >>> labels = p.predict("scene.png")                   # doctest: +SKIP
    >>> labels.shape                                      # (H, W) int64, the image's own size
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

__all__ = ["SegPredictor", "save_label_png", "predict_files"]

PathLike = Union[str, "os.PathLike[str]"]


def save_label_png(labels: torch.Tensor, path: PathLike, num_classes: int) -> Path:
    """Write a label map (H, W) as a palette PNG (the pixel value is the class; colours from
    :func:`hilovit.viz.segmentation.seg_palette`), atomically."""
    from hilovit.io import atomic_write
    from hilovit.viz.segmentation import seg_palette

    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 2 or arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"save_label_png: labels must be (H, W) with values in 0..255, got {arr.shape}")
    im = Image.fromarray(arr.astype(np.uint8), "P")
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[:num_classes] = seg_palette(num_classes)
    pal[255] = (255, 255, 255)
    im.putpalette(pal.flatten().tolist())
    with atomic_write(Path(path)) as f:
        im.save(f, format="PNG")
    return Path(path)


def _pretrained(model: Optional[str], pretrained) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """A segmenter with published (or given) weights, and the inference facts of its ``pretrained_cfg``."""
    from hilovit.models._builder import pretrained_model

    net = pretrained_model(model, pretrained)
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    n = int(net.num_classes)
    classes = list(cfg.get("label_names") or cfg.get("classes") or [str(i) for i in range(n)])
    scale = cfg.get("test_scale")
    c = int(net.in_chans)
    return net, {"model": model or cfg.get("architecture"), "classes": classes, "num_classes": n, "in_chans": c,
                 "mean": tuple(cfg.get("mean", (0.5,) * c)), "std": tuple(cfg.get("std", (0.5,) * c)),
                 "ignore_index": int(cfg.get("ignore_index", 255)),
                 "eval_scale": tuple(int(v) for v in scale) if scale else None,
                 "path": str((cfg.get("weights") or {}).get("source", pretrained))}


class SegPredictor:
    """A trained segmentation checkpoint ready for inference (whole image, resized back to the image's size).

    Args:
        checkpoint: ``model.safetensors``, ``last.pt`` or a training output folder.
        model: the registered model name (default: the checkpoint's metadata), a module or a factory.
        device: where to run.
        eval_scale: (long, short) rescale before inference (default: the training run's).
        pretrained: instead of a checkpoint, published weights of the model ``model`` names.
        max_pixels: the largest image (height x width) run at full resolution when no eval scale is set;
            a larger one is refused, naming its size and ``--eval-scale``, before the network runs.
    """

    def __init__(self, checkpoint=None, model=None, device: str = "cpu",
                 eval_scale: Optional[Sequence[int]] = None, pretrained=None, max_pixels: int = 64_000_000) -> None:
        from hilovit.options import check_image_size, check_int
        from hilovit.tasks.segmentation_eval import load_seg_checkpoint

        check_image_size(list(eval_scale) if eval_scale else None, "eval_scale", allow_none=True)
        self.max_pixels = check_int(max_pixels, "max_pixels", minimum=1)
        if pretrained is not None and pretrained is not False:
            if checkpoint is not None or not isinstance(model, (str, type(None))):
                raise ValueError("give a checkpoint, or a model name with pretrained weights")
            self.model, self.info = _pretrained(model, pretrained)
        else:
            if checkpoint is None:
                raise ValueError("give a segmentation checkpoint (or a model name with pretrained weights)")
            self.model, self.info = load_seg_checkpoint(checkpoint, model)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.classes = list(self.info["classes"])
        self.num_classes = int(self.info["num_classes"])
        self.eval_scale: Optional[Tuple[int, int]] = tuple(eval_scale) if eval_scale else self.info["eval_scale"]

    def _load(self, image) -> torch.Tensor:
        from hilovit.data.segmentation import load_image_full

        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.dim() != 3:
                raise ValueError(f"image tensor must be uint8 (C, H, W), got {image.dtype} {tuple(image.shape)}")
            x = image
        else:
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"image {str(path)!r} does not exist")
            x = load_image_full(path, channels=3 if self.info["in_chans"] == 3 else 1)
        c = self.info["in_chans"]
        if x.shape[0] != c:
            if c == 1 and x.shape[0] == 3:
                x = (x.float() * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
                x = x.round().clamp(0, 255).to(torch.uint8)
            elif c == 3 and x.shape[0] == 1:
                x = x.expand(3, -1, -1)
            else:
                raise ValueError(f"image has {x.shape[0]} channels, the model takes {c}")
        return x

    @torch.no_grad()
    def predict(self, image) -> torch.Tensor:
        """The label map (H, W) int64 of an image file or a uint8 tensor (C, H, W), at the image's size.

        The image is rescaled to ``eval_scale`` (long, short) for the network when one is set, so memory
        follows that scale; the labels come back at the image's own size, a band of rows at a time."""
        from hilovit.tasks.segmentation_eval import infer_labels

        x = self._load(image)
        if self.eval_scale is None and x.shape[-2] * x.shape[-1] > self.max_pixels:
            raise ValueError(f"image of {x.shape[-1]}x{x.shape[-2]} pixels is larger than {self.max_pixels:,} pixels "
                             "for whole-image inference at full resolution; give an eval scale (--eval-scale "
                             "LONG,SHORT) to rescale it first")
        labels = infer_labels(self.model, x.unsqueeze(0).to(self.device), self.info["mean"], self.info["std"],
                              x.shape[-2:], self.eval_scale)
        return labels[0].cpu()

    def predict_file(self, image: PathLike, output: PathLike) -> Dict[str, Any]:
        """Predict ``image`` and write ``output/STEM_labels.png`` (palette) and ``output/STEM_overlay.png``."""
        from hilovit.io import atomic_write, check_writable_dir
        from hilovit.viz.segmentation import overlay

        x = self._load(image)
        labels = self.predict(x)
        folder = check_writable_dir(output, "output folder")
        stem = Path(image).stem
        lab_path = save_label_png(labels, folder / f"{stem}_labels.png", self.num_classes)
        over = Image.fromarray(overlay(x, labels, self.num_classes))
        over_path = folder / f"{stem}_overlay.png"
        with atomic_write(over_path) as f:
            over.save(f, format="PNG")
        counts = torch.bincount(labels.flatten(), minlength=self.num_classes).double()
        shares = {self.classes[k]: float(100 * counts[k] / counts.sum()) for k in counts.argsort(descending=True)
                  .tolist() if counts[k] > 0}
        return {"image": str(image), "height": int(labels.shape[0]), "width": int(labels.shape[1]),
                "labels": str(lab_path), "overlay": str(over_path), "class_shares": shares}


def predict_files(images: Sequence[PathLike], model=None, checkpoint=None, pretrained=None,
                  output: PathLike = "predictions", eval_scale: Optional[Sequence[int]] = None, device: str = "cpu",
                  max_pixels: int = 64_000_000, **_: Any) -> List[Dict[str, Any]]:
    """``hilovit predict`` with a segmenter: for each image its label map (palette PNG) and overlay in
    ``output``; an image that cannot be read or predicted (too large without an eval scale, see
    :class:`SegPredictor`) gets ``error`` set and the others still run."""
    from hilovit.io import check_creatable_dir

    check_creatable_dir(output, "output folder")  # a bad folder is one error, not one per image; created when used
    predictor = SegPredictor(checkpoint, model=model, device=device, eval_scale=eval_scale, pretrained=pretrained,
                             max_pixels=max_pixels)
    results: List[Dict[str, Any]] = []
    for image in images:
        try:
            results.append(predictor.predict_file(image, output))
        except (ValueError, OSError) as e:
            results.append({"image": str(image), "error": str(e)})
    return results
