"""What the ``hilovit app`` page shows for one image, without the page: :class:`AppPredictor`.

The predictor of the checkpoint's task is the one ``hilovit predict`` uses (a classifier's
:class:`~hilovit.tasks.classification_predict.Predictor`, a segmenter's
:class:`~hilovit.tasks.segmentation_predict.SegPredictor`, a detector's
:class:`~hilovit.tasks.detection_predict.DetPredictor`), loaded once; the pictures are the ones
``hilovit predict`` and ``hilovit viz hilo`` write (the overlay, the detections drawn, HiLo's
Hi-Fi/Lo-Fi branches), read back as arrays for the page. No Gradio here: these functions are
tested without a browser.

Example::

    >>> from hilovit.app import AppPredictor
    >>> app = AppPredictor("runs/demo")                  # a run folder, a checkpoint file or a model name
    >>> result = app.predict("shoe.png")                  # doctest: +SKIP
    >>> result.top                                        # {'Ankle boot': 0.97, 'Sneaker': 0.02, ...}
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from hilovit.options import check_int

__all__ = ["AppResult", "AppPredictor", "resolve_source", "enlarge"]

PathLike = Union[str, "os.PathLike[str]"]
READ_ERRORS = (ValueError, OSError)  # what `hilovit predict` reports per image instead of stopping


@dataclass
class AppResult:
    """What the page shows for one image.

    Attributes:
        task: ``'classification'``, ``'segmentation'`` or ``'detection'``.
        source: the image's file name.
        top: classification: ``{label: probability}``, the ``topk`` most probable, most probable first.
        picture: the image as predicted: the input (classification, small ones enlarged by :func:`enlarge`),
            the overlay (segmentation) or the detections drawn (detection); uint8 ``(H, W, 3)``.
        hilo: HiLo's Hi-Fi/Lo-Fi picture (``hilovit viz hilo``) for a classifier with HiLo layers, uint8
            ``(H, W, 3)``; None otherwise.
        details: Markdown lines: the class shares (segmentation) or the detections (detection).
        notes: remarks on the pictures (a HiLo map too small to mean much, ...).
        error: why the image could not be predicted (the other fields are then empty).
    """

    task: str
    source: str
    top: Dict[str, float] = field(default_factory=dict)
    picture: Optional[np.ndarray] = None
    hilo: Optional[np.ndarray] = None
    details: str = ""
    notes: List[str] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def resolve_source(source: PathLike, model: Optional[str] = None) -> Tuple[Optional[str], object]:
    """``(checkpoint, pretrained)`` for ``hilovit app --checkpoint SOURCE``: an existing file or folder is a
    checkpoint (``pretrained`` None); a registered model name (with ``model`` unset) means its published
    weights (``checkpoint`` None, ``pretrained`` True). Anything else is a ValueError naming it."""
    from hilovit.models.registry import is_model

    if not isinstance(source, (str, os.PathLike)) or not str(source):
        raise TypeError(f"checkpoint must be a run folder, a checkpoint file or a model name, got {source!r}")
    text = str(source)
    if Path(text).expanduser().exists():
        return str(Path(text).expanduser()), None
    if model is None and is_model(text):
        return None, True
    raise ValueError(f"--checkpoint {text!r}: no such file or folder, and not a registered model name "
                     "(hilovit models lists them)")


def _read_picture(path: PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


def enlarge(picture: np.ndarray, side: int = 224) -> np.ndarray:
    """``picture`` (H, W, C) repeated an integer number of times along both axes (nearest neighbour), so that
    its longer side reaches ``side`` pixels (a 28x28 Fashion-MNIST image becomes 224x224); larger ones as they
    are. For showing small inputs on the page; the model sees the image as ``hilovit predict`` does."""
    factor = -(-side // max(picture.shape[:2]))
    return picture if factor <= 1 else picture.repeat(factor, axis=0).repeat(factor, axis=1)


def _recorded_model(checkpoint: Optional[str]) -> Optional[str]:
    from hilovit.models.checkpoint import read_metadata, resolve_checkpoint

    try:
        return read_metadata(resolve_checkpoint(checkpoint)).get("model")
    except READ_ERRORS:
        return None


class AppPredictor:
    """The model of ``source`` loaded once, ready to predict uploaded images for the page.

    Args:
        source: a training output folder, a checkpoint file (``model.safetensors``, ``last.pt``, ``.pth``)
            or a registered model name (its published weights).
        model: the registered model name, when the checkpoint records none.
        device: where to run (``'cpu'``, ``'cuda'``).
        topk: classes listed for a classifier.
        score_thr: the lowest detection score drawn and listed.
        hilo_size: the input size ``H`` or ``(H, W)`` of the HiLo picture (``hilovit viz hilo --img-size``;
            default the model's own: a larger one gives the branches a larger token map to compare).

    Raises:
        ValueError / FileNotFoundError: a source that is neither a checkpoint nor a model name, a checkpoint
            that does not fit its model (raised here, before any page is served).
    """

    def __init__(self, source: PathLike, model: Optional[str] = None, device: str = "cpu", topk: int = 5,
                 score_thr: float = 0.3, hilo_size=None) -> None:
        from hilovit.tasks import resolve_task

        check_int(topk, "topk", minimum=1)
        checkpoint, pretrained = resolve_source(source, model)
        name = model or (str(source) if pretrained else None)
        self.task = resolve_task(None, checkpoint=checkpoint, model=name).name
        self.topk = topk
        self.hilo_size = hilo_size
        self.name = name or _recorded_model(checkpoint) or "model"
        self.title = f"{self.name} ({'published weights' if pretrained else checkpoint})"
        self.weights = "published weights" if pretrained else "trained weights"  # as hilovit viz titles them
        if self.task == "classification":
            from hilovit.tasks.classification_predict import Predictor

            if pretrained:
                from hilovit.models._builder import pretrained_model

                self.predictor = Predictor(pretrained_model(name, pretrained, device=device), device=device)
            else:
                self.predictor = Predictor.from_checkpoint(model, checkpoint, device=device)
        elif self.task == "segmentation":
            from hilovit.tasks.segmentation_predict import SegPredictor

            self.predictor = SegPredictor(checkpoint, model=name, device=device, pretrained=pretrained)
        else:
            from hilovit.tasks.detection_predict import DetPredictor

            self.predictor = DetPredictor(checkpoint, model=name, pretrained=pretrained, device=device,
                                          score_thr=score_thr)

    @property
    def has_hilo(self) -> bool:
        """Whether the page shows HiLo's branch pictures (a classifier with HiLo layers: LITv2)."""
        from hilovit.viz.hilo import hilo_layers

        return self.task == "classification" and bool(hilo_layers(self.predictor.model))

    def predict(self, image: PathLike) -> AppResult:
        """What the page shows for the image file ``image``; an image that cannot be read or predicted gets
        :attr:`AppResult.error` (the message ``hilovit predict`` prints for it), never an exception."""
        source = Path(str(image)).name
        if self.task == "classification":
            return self._classify(image, source)
        with tempfile.TemporaryDirectory(prefix="hilovit-app-") as folder:
            try:
                found = self.predictor.predict_file(image, folder)
            except READ_ERRORS as e:
                return AppResult(self.task, source, error=str(e))
            if self.task == "segmentation":
                shares = found["class_shares"]
                lines = [f"- {label}: {share:.1f}% of the pixels" for label, share in shares.items()]
                return AppResult(self.task, source, picture=_read_picture(found["overlay"]),
                                 details="\n".join(lines))
            shown = found["detections"]
            lines = [f"- {d['label']} {d['score']:.2f} at x={d['bbox'][0]:.0f}, y={d['bbox'][1]:.0f}, "
                     f"{d['bbox'][2]:.0f}x{d['bbox'][3]:.0f}" for d in shown]
            head = f"{len(shown)} detections with a score of at least {self.predictor.score_thr:g}"
            return AppResult(self.task, source, picture=_read_picture(found["picture"]),
                             details="\n".join([head + (":" if lines else ""), *lines]))

    def _classify(self, image: PathLike, source: str) -> AppResult:
        from hilovit.data.folders import open_image

        found = self.predictor.predict_many([image], topk=self.topk)[0]
        if not found.ok:
            return AppResult(self.task, source, error=found.error)
        result = AppResult(self.task, source, top=dict(found.top))
        result.picture = enlarge(np.asarray(open_image(image, 3)))
        if self.has_hilo:
            result.hilo, note = self.hilo_picture(image)
            if note:
                result.notes.append(note)
        return result

    def hilo_picture(self, image: PathLike) -> Tuple[Optional[np.ndarray], Optional[str]]:
        """``hilovit viz hilo``'s picture of the classifier for ``image`` and its warning (or why there is no
        picture: a model whose HiLo layers lack one of the branches)."""
        from hilovit.viz.hilo import hilo_picture

        with tempfile.TemporaryDirectory(prefix="hilovit-app-") as folder:
            try:
                path, branches = hilo_picture(self.predictor.model, image, Path(folder) / "hilo.png",
                                              f"{self.name} ({self.weights})", img_size=self.hilo_size)
            except ValueError as e:
                return None, str(e)
            return _read_picture(path), branches.warning
