"""ONNX export of a detector: the network up to its raw per-level outputs, with symbolic batch, height and width.

The graph takes the preprocessed batch ``input`` (batch, C, height, width): normalised with the
model's mean/std and padded bottom/right as :class:`~hilovit.models.det_preprocessor.DetDataPreprocessor`
does. Its outputs are the head's maps, level by level: RetinaNet ``cls_score_{l}`` (batch,
anchors x classes, h_l, w_l) logits and ``bbox_pred_{l}`` (batch, anchors x 4, h_l, w_l) deltas.

Decoding and NMS stay outside the graph, as documented post-processing in PyTorch:
``model.bbox_head.predict_by_feat(cls_scores, bbox_preds, metainfo)`` on the ONNX outputs gives
the detections exactly as ``model.predict``. ONNX's ``NonMaxSuppression`` is not used: the official
post-processing keeps the top 1000 candidates of each level before NMS, makes NMS class-aware by
shifting each class's boxes apart, suppresses at IoU strictly above the threshold and rescales
before NMS; rebuilding that order inside a graph would tie the export to one opset's operator
semantics and could change detections near the thresholds.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import torch
import torch.nn as nn

from hilovit.tasks.base import ExportSpec

__all__ = ["detector_export_spec", "FlatOutputs"]


class FlatOutputs(nn.Module):
    """``detector(inputs)``'s per-level lists as one flat tuple (what ONNX names output by output)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = self.detector(inputs)
        return tuple(t for group in outputs for t in group)


def _names(detector: nn.Module, example: torch.Tensor) -> Tuple[Sequence[str], int]:
    with torch.no_grad():
        groups = detector(example)
    kinds = ("cls_score", "bbox_pred") if len(groups) == 2 else tuple(f"out{k}" for k in range(len(groups)))
    names = [f"{kind}_{level}" for kind, group in zip(kinds, groups) for level in range(len(group))]
    return names, len(groups[0])


def detector_export_spec(model: nn.Module, in_chans: int, sizes: Sequence[Tuple[int, int]], seed: int = 0
                         ) -> ExportSpec:
    """The export of a detector's network, traced at ``sizes[0]`` (batch 2) and verified at every size
    (batches 1 and 3 in turn)."""
    gen = torch.Generator().manual_seed(seed)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    example = torch.randn(2, in_chans, *sizes[0], generator=gen, dtype=dtype)
    names, levels = _names(model.eval(), example)
    spatial = {0: "batch", 2: "height", 3: "width"}
    axes: Dict[str, Dict[int, str]] = {"input": spatial}
    axes.update({n: {0: "batch", 2: f"h_{n.rsplit('_', 1)[1]}", 3: f"w_{n.rsplit('_', 1)[1]}"} for n in names})
    checks: Dict[Any, torch.Tensor] = {}
    for i, (h, w) in enumerate(sizes):
        b = 1 if i % 2 == 0 else 3
        checks[f"{b}x{h}x{w}"] = torch.randn(b, in_chans, h, w, generator=gen, dtype=dtype)
    notes = [f"input (batch, {in_chans}, height, width): normalised and padded as the model's data_preprocessor "
             f"does; outputs: {levels} levels of raw head maps ({', '.join(names[:2])}, ...); decoding and NMS: "
             "model.bbox_head.predict_by_feat(...) in PyTorch (see hilovit.tasks.detection_export)"]
    return ExportSpec(FlatOutputs(model), example, ["input"], list(names), axes, checks, (in_chans, *sizes[0]), notes)
