"""Classifying images with a (trained) model: :class:`Predictor` and ``hilovit predict`` of a classifier.

Images are decoded with Pillow in any mode (grey, RGBA, palette, 16-bit ...), made RGB (or grey
for ``in_chans=1`` models; transparency composited on white) and prepared as the model's
``pretrained_cfg`` says, the way timm evaluates: resize to ``input_size / crop_pct`` (the shorter
side, for square inputs) with its ``interpolation``, centre crop to ``input_size``, scale to
[0, 1], normalise with ``mean``/``std``.

A checkpoint sizes the model it is loaded into: the number of classes comes from its classifier,
the image channels from its first convolution, and what the training engine stored beside the
weights (``model.safetensors`` metadata, or the ``metadata``/``classes`` entries of a ``last.pt``)
gives the class names, the image size and the normalisation. Without class names the classes
are called by their indices.

Example::

    >>> from hilovit import Predictor
    >>> predictor = Predictor.from_checkpoint("litv2_nano", "runs/fmnist/model.safetensors")
    >>> predictor.predict("shoe.png", topk=3)
    [('Sneaker', 0.91), ('Sandal', 0.06), ('Ankle boot', 0.02)]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from hilovit.data.folders import check_normalization, open_image, preprocess_image
from hilovit.models._api import update_pretrained_cfg
from hilovit.models._builder import pretrained_model
from hilovit.options import check_int

__all__ = ["Prediction", "Predictor", "format_predictions", "preprocess_image", "predict_files", "load_model"]

PathLike = Union[str, "os.PathLike[str]"]
ImageLike = Union[PathLike, "Image.Image", np.ndarray]  # noqa: F821 - PIL imported lazily


def load_model(
    name: Optional[str],
    checkpoint: Optional[PathLike] = None,
    device: Union[str, torch.device] = "cpu",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    **overrides,
) -> Tuple[nn.Module, Optional[List[str]]]:
    """Build the registered model ``name`` to fit ``checkpoint``, load it, and put it in eval mode.

    The loading is :func:`hilovit.load_model`'s: the number of classes, the input
    channels, the image size and the normalisation follow the checkpoint (its stored metadata, its
    classifier and stem shapes) unless ``overrides`` (or ``mean``/``std``) name them, and a
    checkpoint that does not fit, the classifier included, is refused. ``name`` None builds the model
    the checkpoint records. Without a checkpoint the model keeps its random initialisation.

    Returns:
        ``(model, classes)``: classes are the names stored with the checkpoint, or None.

    Raises:
        FileNotFoundError: the checkpoint does not exist.
        hilovit.CheckpointError: it does not fit ``name`` (the message lists the keys), or it was
            trained as another model.
    """
    from hilovit.models import create_model
    from hilovit.models._builder import load_model as _load

    if checkpoint is None:
        if name is None:
            raise ValueError("give a model name or a checkpoint")
        model = create_model(name, **overrides)
        _given_normalization(model, mean, std)
        return model.eval().to(device), None
    model, info = _load(checkpoint, name, device=device, mean=mean, std=std, **overrides)
    return model, info["classes"]


def _given_normalization(model: nn.Module, mean: Optional[Sequence[float]], std: Optional[Sequence[float]]) -> None:
    """Overlay the ``mean``/``std`` given (None: keep the model's) on ``model.pretrained_cfg``, through its
    one writer."""
    given = {k: tuple(float(x) for x in v) for k, v in (("mean", mean), ("std", std)) if v is not None}
    if given:
        update_pretrained_cfg(model, **given)


# --------------------------------------------------------------------------- predictions
@dataclass
class Prediction:
    """The top classes of one image (``error`` set and the lists empty when it could not be read)."""

    source: str
    labels: List[str] = field(default_factory=list)
    indices: List[int] = field(default_factory=list)
    probs: List[float] = field(default_factory=list)
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top(self) -> List[Tuple[str, float]]:
        """``[(label, probability), ...]``, most probable first."""
        return list(zip(self.labels, self.probs))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "image": self.source,
            "predictions": [
                {"rank": r + 1, "index": i, "label": lab, "probability": p}
                for r, (i, lab, p) in enumerate(zip(self.indices, self.labels, self.probs))
            ],
            "error": self.error,
        }


class Predictor:
    """Classify images with ``model``: preprocessing from its ``pretrained_cfg``, top-k with class names.

    Args:
        model: a classifier with a ``pretrained_cfg`` (any hilovit model); put in eval mode.
        classes: class names in label order; None: the ``pretrained_cfg``'s ``label_names``, else the
            classes of a 1000-class model by the ImageNet-1k names
            (:func:`hilovit.data.imagenet_class_names`), others by their indices.
        device: where to run (default: where the model is).

    Raises:
        OptionError: the ``pretrained_cfg``'s ``mean`` or ``std`` cannot be used (other than 1 or
            ``in_chans`` values, not finite, a std not above 0): named, before any image is read.

    Example::

        >>> predictor = Predictor.from_checkpoint("litv2_nano", "runs/fmnist")   # folder or file
        >>> predictor.predict("shirt.png")                                      # [(label, prob), ...]
        >>> results = predictor.predict_many(["a.png", "missing.png"])           # Prediction objects
        >>> [r.error for r in results]
        [None, "image 'missing.png' does not exist"]
    """

    def __init__(
        self,
        model: nn.Module,
        classes: Optional[Sequence[str]] = None,
        device: Optional[Union[str, torch.device]] = None,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        cfg = getattr(model, "pretrained_cfg", None)
        if not cfg or "input_size" not in cfg:
            raise ValueError(f"{type(model).__name__} has no pretrained_cfg with an input_size to prepare images for")
        check_normalization(cfg.get("mean"), cfg.get("std"), int(cfg["input_size"][0]))  # before any image
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else "cpu"
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        num_classes = getattr(model, "num_classes", None)
        if classes is None and cfg.get("label_names"):  # timm's field (a model repository's config.json)
            classes = cfg["label_names"]
        if classes is None and num_classes == 1000:  # an ImageNet-1k classifier (the official weights)
            from hilovit.data.imagenet import imagenet_class_names

            classes = imagenet_class_names()
        if classes is not None:
            classes = [str(c) for c in classes]
            if num_classes is not None and len(classes) != num_classes:
                raise ValueError(f"{len(classes)} class names given for a model with {num_classes} classes")
        self.classes = classes

    @classmethod
    def from_checkpoint(
        cls,
        model: Optional[str],
        checkpoint: Optional[PathLike] = None,
        classes: Optional[Sequence[str]] = None,
        device: Union[str, torch.device] = "cpu",
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        **overrides,
    ) -> Predictor:
        """Build the registered ``model`` (None: the one the checkpoint records) sized for ``checkpoint``
        and load it (see :func:`load_model`).

        ``classes`` overrides the names stored in the checkpoint; ``mean``/``std`` the
        normalisation (a checkpoint that records none gets the model's default, with a warning
        saying which): 1 value or one per input channel, finite, a std above 0 (else an
        :class:`~hilovit.options.OptionError` naming ``mean`` or ``std``, before any image is read).
        """
        net, stored = load_model(model, checkpoint, device=device, mean=mean, std=std, **overrides)
        return cls(net, classes if classes is not None else stored, device=device)

    @property
    def cfg(self) -> Dict[str, Any]:
        return dict(self.model.pretrained_cfg)

    @property
    def in_chans(self) -> int:
        return int(self.cfg["input_size"][0])

    def label(self, index: int) -> str:
        return self.classes[index] if self.classes is not None else str(index)

    def preprocess(self, image: ImageLike) -> torch.Tensor:
        """Decode and prepare one image: ``(C, H, W)`` float tensor, normalised."""
        return preprocess_image(open_image(image, self.in_chans), self.cfg)

    @torch.no_grad()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes for a prepared ``(B, C, H, W)`` batch."""
        logits = self.model(batch.to(self.device))
        if logits.dim() != 2:
            raise ValueError(f"the model returned {tuple(logits.shape)}, not class scores (B, num_classes)")
        return logits.float().softmax(dim=-1).cpu()

    def predict(self, image: ImageLike, topk: int = 5) -> List[Tuple[str, float]]:
        """The ``topk`` most probable ``(label, probability)`` pairs for one image (errors raise)."""
        result = self.predict_many([image], topk=topk, raise_errors=True)[0]
        return result.top

    def predict_many(
        self, images: Iterable[ImageLike], topk: int = 5, batch_size: int = 16, raise_errors: bool = False
    ) -> List[Prediction]:
        """One :class:`Prediction` per image, in order. An image that cannot be read gets its
        ``error`` set (unless ``raise_errors``) and the others are still predicted."""
        check_int(topk, "topk", minimum=1)
        check_int(batch_size, "batch_size", minimum=1)
        results: List[Prediction] = []
        pending: List[Tuple[Prediction, torch.Tensor]] = []
        for image in images:
            name = str(image) if isinstance(image, (str, os.PathLike)) else f"<{type(image).__name__}>"
            result = Prediction(source=name)
            results.append(result)
            try:
                pending.append((result, self.preprocess(image)))
            except (OSError, ValueError) as e:
                if raise_errors:
                    raise
                result.error = str(e)
                continue
            if len(pending) == batch_size:
                self._fill(pending, topk)
                pending = []
        if pending:
            self._fill(pending, topk)
        return results

    def _fill(self, pending: List[Tuple[Prediction, torch.Tensor]], topk: int) -> None:
        probs = self.probabilities(torch.stack([x for _, x in pending]))
        k = min(topk, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        for (result, _), v, i in zip(pending, values.tolist(), indices.tolist()):
            result.indices = [int(j) for j in i]
            result.labels = [self.label(j) for j in i]
            result.probs = [float(p) for p in v]

    __call__ = predict


def format_predictions(results: Sequence[Prediction]) -> str:
    """Plain-text listing: the image, then one line per class (rank, probability, label)."""
    lines: List[str] = []
    for r in results:
        if not r.ok:
            continue
        lines.append(r.source)
        for rank, (label, p, i) in enumerate(zip(r.labels, r.probs, r.indices), 1):
            tag = f"  [{i}]" if label != str(i) else ""
            lines.append(f"  {rank:>2}. {p:8.4f}  {label}{tag}")
    return "\n".join(lines)


def predict_files(
    images: Sequence[PathLike],
    model: Optional[str] = None,
    checkpoint: Optional[PathLike] = None,
    topk: int = 5,
    batch_size: int = 16,
    device: str = "cpu",
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    pretrained: Union[bool, str, os.PathLike, None] = None,
) -> List[Prediction]:
    """``hilovit predict``: load ``model`` (None: the one the checkpoint records) from ``checkpoint`` (or its
    ``pretrained`` weights, see :func:`pretrained_model`) and predict every image (errors per image). A
    ``mean``/``std`` that cannot be used is refused before any image is read (see :class:`Predictor`)."""
    if not images:
        raise ValueError("no images given")
    if pretrained is not None and pretrained is not False:
        if checkpoint is not None:
            raise ValueError("give a checkpoint or pretrained weights, not both")
        net = pretrained_model(model, pretrained, device=device)  # no model: a repository that names its own
        _given_normalization(net, mean, std)
        predictor = Predictor(net, device=device)
    else:
        predictor = Predictor.from_checkpoint(model, checkpoint, device=device, mean=mean, std=std)
    return predictor.predict_many(images, topk=topk, batch_size=batch_size)
