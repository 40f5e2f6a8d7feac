"""ONNX export of a detector: the network up to its raw per-level outputs, with symbolic batch, height and width.

Every graph takes the preprocessed batch ``input`` (batch, C, height, width): normalised with the
model's mean/std and padded bottom/right as :class:`~hilovit.models.det_preprocessor.DetDataPreprocessor`
does.

RetinaNet. The outputs are the head's maps, level by level: ``cls_score_{l}`` (batch, anchors x
classes, h_l, w_l) logits and ``bbox_pred_{l}`` (batch, anchors x 4, h_l, w_l) deltas. Decoding and
NMS stay outside the graph, as documented post-processing in PyTorch:
``model.bbox_head.predict_by_feat(cls_scores, bbox_preds, metainfo)`` on the ONNX outputs gives the
detections exactly as ``model.predict``. ONNX's ``NonMaxSuppression`` is not used: the official
post-processing keeps the top 1000 candidates of each level before NMS, makes NMS class-aware by
shifting each class's boxes apart, suppresses at IoU strictly above the threshold and rescales
before NMS; rebuilding that order inside a graph would tie the export to one opset's operator
semantics and could change detections near the thresholds.

Mask R-CNN: two graphs, written together (both verified, then both renamed into place, or neither).

- ``OUT``, the network: ``rpn_cls_score_{l}`` (batch, anchors, h_l, w_l) objectness logits and
  ``rpn_bbox_pred_{l}`` (batch, anchors x 4, h_l, w_l) deltas on every FPN level, then ``feat_{l}``
  (batch, channels, h_l, w_l), the FPN maps the RoI extractors read (the first 4 levels of the
  official models).
- ``OUT.roi_heads.onnx`` (``.onnx`` of ``OUT`` replaced): the box and mask heads on RoI features,
  inputs ``bbox_roi_feats`` (K, channels, 7, 7) and ``mask_roi_feats`` (M, channels, 14, 14), outputs
  ``cls_score`` (K, classes + 1) logits (the last is background), ``bbox_pred`` (K, 4 x classes)
  deltas and ``mask_logits`` (M, classes, 28, 28); K and M are symbolic and independent.

Between and after them, in PyTorch (:func:`mask_rcnn_from_onnx`): the proposals
(``model.rpn_head.predict_by_feat``: per level top-k, NMS, the best kept), the level of each RoI
and RoIAlign with its per-RoI sampling count (``model.roi_head``'s extractors), softmax, decoding and
class-wise NMS of the boxes, RoIAlign on the detections and the mask paste into the image
(``model.roi_head.predict(..., heads=...)`` with the heads graph in place of the heads). These
steps select a data-dependent number of boxes and read the maps at data-dependent places; traced
into a graph they would freeze the counts of the example or need opset-specific operators whose
semantics (NMS order and ties, RoIAlign's sampling) differ from the official ones. In use::

    net = onnxruntime.InferenceSession("det.onnx")
    inputs, metainfo = model.data_preprocessor(images, "rgb")
    outputs = net.run(None, {"input": inputs.numpy()})
    detections = mask_rcnn_from_onnx(model, outputs, onnx_roi_heads("det.roi_heads.onnx"), metainfo)

gives ``model.predict(images, resize=False)``'s boxes, scores and labels (within 1e-4 in the tests)
and its masks (a pixel may differ only where its probability is within 1e-4 of 0.5).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from hilovit.models.heads.roi_heads import Heads
from hilovit.tasks.base import ExportSpec

__all__ = ["detector_export_spec", "roi_heads_export_spec", "mask_rcnn_from_onnx", "onnx_roi_heads", "FlatOutputs",
           "TwoStageOutputs", "RoIHeadsGraph", "ROI_HEADS_SUFFIX"]

ROI_HEADS_SUFFIX = ".roi_heads.onnx"


class FlatOutputs(nn.Module):
    """``detector(inputs)``'s per-level lists as one flat tuple (what ONNX names output by output)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outputs = self.detector(inputs)
        return tuple(t for group in outputs for t in group)


def _roi_levels(roi_head: nn.Module) -> int:
    """How many FPN levels the RoI extractors read (the first ones)."""
    n = roi_head.bbox_roi_extractor.num_inputs
    return max(n, roi_head.mask_roi_extractor.num_inputs) if roi_head.with_mask else n


class TwoStageOutputs(nn.Module):
    """A two-stage detector's network as one flat tuple: its RPN maps on every level
    (``rpn_cls_score_{l}`` then ``rpn_bbox_pred_{l}``) and the FPN maps its RoI extractors read
    (``feat_{l}``). ``(B, C, H, W)`` -> ``2 L + F`` tensors."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.levels = _roi_levels(detector.roi_head)

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.detector.extract_feat(inputs)
        cls_scores, bbox_preds = self.detector.rpn_head(feats)
        return (*cls_scores, *bbox_preds, *feats[: self.levels])


class RoIHeadsGraph(nn.Module):
    """The box and mask heads of a ``RoIHead`` as one graph: ``(bbox_roi_feats (K, C, 7, 7), mask_roi_feats
    (M, C, 14, 14))`` -> ``(cls_score (K, classes + 1), bbox_pred (K, 4 classes), mask_logits (M, classes, 28,
    28))``; a head without masks takes and gives the first of each."""

    def __init__(self, roi_head: nn.Module) -> None:
        super().__init__()
        self.roi_head = roi_head

    def forward(self, bbox_roi_feats: torch.Tensor, mask_roi_feats: Optional[torch.Tensor] = None):
        cls_score, bbox_pred = self.roi_head.bbox_head(bbox_roi_feats)
        if mask_roi_feats is None:
            return cls_score, bbox_pred
        return cls_score, bbox_pred, self.roi_head.mask_head(mask_roi_feats)


def _names(detector: nn.Module, example: torch.Tensor) -> Tuple[Sequence[str], int]:
    with torch.no_grad():
        groups = detector(example)
    kinds = ("cls_score", "bbox_pred") if len(groups) == 2 else tuple(f"out{k}" for k in range(len(groups)))
    names = [f"{kind}_{level}" for kind, group in zip(kinds, groups) for level in range(len(group))]
    return names, len(groups[0])


def _image_checks(in_chans: int, sizes: Sequence[Tuple[int, int]], gen: torch.Generator, dtype) -> Dict[Any, Any]:
    checks: Dict[Any, torch.Tensor] = {}
    for i, (h, w) in enumerate(sizes):
        b = 1 if i % 2 == 0 else 3
        checks[f"{b}x{h}x{w}"] = torch.randn(b, in_chans, h, w, generator=gen, dtype=dtype)
    return checks


def _level_axes(names: Sequence[str]) -> Dict[str, Dict[int, str]]:
    return {n: {0: "batch", 2: f"h_{n.rsplit('_', 1)[1]}", 3: f"w_{n.rsplit('_', 1)[1]}"} for n in names}


def roi_heads_export_spec(roi_head: nn.Module, seed: int = 0) -> ExportSpec:
    """The export of a ``RoIHead``'s box and mask heads (:class:`RoIHeadsGraph`), traced at K = 3, M = 2
    RoIs and verified at (K, M) = (1, 4), (5, 1) and (2, 3)."""
    gen = torch.Generator().manual_seed(seed)
    dtype = next((p.dtype for p in roi_head.parameters()), torch.float32)
    box_shape = (roi_head.bbox_roi_extractor.out_channels, *roi_head.bbox_roi_extractor.roi_layers[0].output_size)
    shapes = {"bbox_roi_feats": ("K", box_shape)}
    outputs = {"cls_score": "K", "bbox_pred": "K"}
    if roi_head.with_mask:
        ext = roi_head.mask_roi_extractor
        shapes["mask_roi_feats"] = ("M", (ext.out_channels, *ext.roi_layers[0].output_size))
        outputs["mask_logits"] = "M"

    def inputs(*counts: int) -> Tuple[torch.Tensor, ...]:
        return tuple(torch.randn(n, *shape, generator=gen, dtype=dtype)
                     for n, (_, shape) in zip(counts, shapes.values()))

    checks = {f"K={k},M={m}" if roi_head.with_mask else f"K={k}": inputs(k, m) for k, m in ((1, 4), (5, 1), (2, 3))}
    axes = {**{n: {0: sym} for n, (sym, _) in shapes.items()}, **{n: {0: sym} for n, sym in outputs.items()}}
    return ExportSpec(RoIHeadsGraph(roi_head), inputs(3, 2), list(shapes), list(outputs), axes, checks, box_shape)


def _heads_text(heads: ExportSpec, roi_head: nn.Module) -> str:
    """``inputs bbox_roi_feats (K, 256, 7, 7), ...; outputs cls_score (K, 81), ...`` of the heads graph."""
    ins = [f"{n} ({', '.join(str(v) for v in (heads.dynamic_axes[n][0], *x.shape[1:]))})"
           for n, x in zip(heads.input_names, heads.example)]
    C = roi_head.bbox_head.num_classes
    outs = [f"cls_score (K, {C + 1})", f"bbox_pred (K, {4 if roi_head.bbox_head.reg_class_agnostic else 4 * C})"]
    if roi_head.with_mask:
        h, w = (s * roi_head.mask_head.scale_factor for s in roi_head.mask_roi_extractor.roi_layers[0].output_size)
        outs.append(f"mask_logits (M, {roi_head.mask_head.conv_logits.out_channels}, {h}, {w})")
    return f"inputs {', '.join(ins)}; outputs {', '.join(outs)}"


def _two_stage_names(model: nn.Module) -> List[str]:
    """The network graph's outputs: ``rpn_cls_score_{l}``, ``rpn_bbox_pred_{l}`` on every level, ``feat_{l}``."""
    levels = model.rpn_head.prior_generator.num_levels
    return ([f"rpn_cls_score_{lv}" for lv in range(levels)] + [f"rpn_bbox_pred_{lv}" for lv in range(levels)]
            + [f"feat_{lv}" for lv in range(_roi_levels(model.roi_head))])


def _two_stage_spec(model: nn.Module, in_chans: int, sizes: Sequence[Tuple[int, int]], seed: int) -> ExportSpec:
    gen = torch.Generator().manual_seed(seed)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    example = torch.randn(2, in_chans, *sizes[0], generator=gen, dtype=dtype)
    levels, feats = model.rpn_head.prior_generator.num_levels, _roi_levels(model.roi_head)
    names = _two_stage_names(model)
    axes: Dict[str, Dict[int, str]] = {"input": {0: "batch", 2: "height", 3: "width"}, **_level_axes(names)}
    heads = roi_heads_export_spec(model.roi_head, seed)
    notes = [f"input (batch, {in_chans}, height, width): normalised and padded as the model's data_preprocessor "
             f"does; outputs: the RPN maps of {levels} levels (rpn_cls_score_l, rpn_bbox_pred_l) and the {feats} FPN "
             "maps the RoI extractors read (feat_l)",
             f"the RoI heads: a second file, the output's name with .onnx replaced by {ROI_HEADS_SUFFIX} "
             f"({_heads_text(heads, model.roi_head)})",
             "proposals, RoIAlign, decoding, NMS and the mask paste: hilovit.tasks.detection_export."
             "mask_rcnn_from_onnx(model, outputs, onnx_roi_heads(session), metainfo) in PyTorch"]
    checks = _image_checks(in_chans, sizes, gen, dtype)
    return ExportSpec(TwoStageOutputs(model), example, ["input"], names, axes, checks, (in_chans, *sizes[0]), notes,
                      {ROI_HEADS_SUFFIX: heads})


def detector_export_spec(model: nn.Module, in_chans: int, sizes: Sequence[Tuple[int, int]], seed: int = 0
                         ) -> ExportSpec:
    """The export of a detector's network, traced at ``sizes[0]`` (batch 2) and verified at every size
    (batches 1 and 3 in turn). A two-stage detector (a ``roi_head``) adds its RoI heads as a companion
    graph (:func:`roi_heads_export_spec`, written to ``OUT.roi_heads.onnx``)."""
    if hasattr(model, "roi_head"):
        return _two_stage_spec(model.eval(), in_chans, sizes, seed)
    gen = torch.Generator().manual_seed(seed)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    example = torch.randn(2, in_chans, *sizes[0], generator=gen, dtype=dtype)
    names, levels = _names(model.eval(), example)
    axes: Dict[str, Dict[int, str]] = {"input": {0: "batch", 2: "height", 3: "width"}, **_level_axes(names)}
    notes = [f"input (batch, {in_chans}, height, width): normalised and padded as the model's data_preprocessor "
             f"does; outputs: {levels} levels of raw head maps ({', '.join(names[:2])}, ...); decoding and NMS: "
             "model.bbox_head.predict_by_feat(...) in PyTorch (see hilovit.tasks.detection_export)"]
    return ExportSpec(FlatOutputs(model), example, ["input"], list(names), axes,
                      _image_checks(in_chans, sizes, gen, dtype), (in_chans, *sizes[0]), notes)


# --------------------------------------------------------------------------- post-processing
def onnx_roi_heads(session: Any) -> Heads:
    """The heads graph (``OUT.roi_heads.onnx``) as the ``heads`` callable of ``RoIHead.predict``.

    Args:
        session: an ``onnxruntime.InferenceSession`` of the heads graph, or its path.

    Returns ``heads(bbox_roi_feats, mask_roi_feats)`` -> ``(cls_score, bbox_pred, mask_logits)`` as float
    tensors; an input given as None, or with zero RoIs (which the graph need not run), is fed one zero RoI
    whose outputs are dropped (None, or their first zero rows)."""
    if not hasattr(session, "run"):
        import onnxruntime as ort

        session = ort.InferenceSession(str(session), providers=["CPUExecutionProvider"])
    ins, outs = session.get_inputs(), session.get_outputs()
    if [i.name for i in ins][:1] != ["bbox_roi_feats"] or len(outs) != len(ins) + 1:
        raise ValueError(f"session must hold the RoI heads graph (inputs bbox_roi_feats[, mask_roi_feats]), got "
                         f"inputs {[i.name for i in ins]} and outputs {[o.name for o in outs]}")
    tails = [tuple(i.shape[1:]) for i in ins]
    owner = [0, 0, 1][: len(outs)]  # the input each output comes from

    def heads(bbox_roi_feats: Optional[torch.Tensor], mask_roi_feats: Optional[torch.Tensor] = None):
        given = [bbox_roi_feats, mask_roi_feats][: len(ins)]
        feed = {}
        for spec, tail, x in zip(ins, tails, given):
            feed[spec.name] = (x.detach().float().cpu().numpy() if x is not None and x.shape[0] > 0
                               else torch.zeros((1, *tail)).numpy())
        results = session.run(None, feed)
        out: List[Optional[torch.Tensor]] = []
        for k, r in enumerate(results):
            x = given[owner[k]]
            out.append(None if x is None else torch.from_numpy(r if x.shape[0] > 0 else r[:0]))
        return tuple(out) + (None,) * (3 - len(out))

    return heads


def _split_outputs(model: nn.Module, outputs: Union[Sequence[Any], Mapping[str, Any]]
                   ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
    levels, names = model.rpn_head.prior_generator.num_levels, _two_stage_names(model)
    if isinstance(outputs, Mapping):
        missing = [n for n in names if n not in outputs]
        if missing:
            raise ValueError(f"network_outputs lacks {missing}; expected the graph's outputs {names}")
        outputs = [outputs[n] for n in names]
    if not isinstance(outputs, (list, tuple)) or len(outputs) != len(names):
        raise ValueError(f"network_outputs must be the network graph's {len(names)} outputs {names} (a list in that "
                         f"order or a dict by name), got {type(outputs).__name__}"
                         + (f" of {len(outputs)}" if isinstance(outputs, (list, tuple)) else ""))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    ts = [torch.as_tensor(o).to(device=device, dtype=torch.float32) for o in outputs]
    return ts[:levels], ts[levels:2 * levels], ts[2 * levels:]


@torch.no_grad()
def mask_rcnn_from_onnx(model: nn.Module, network_outputs: Union[Sequence[Any], Mapping[str, Any]], run_heads: Heads,
                        metainfo: Sequence[Mapping[str, Any]], rescale: bool = True) -> List[Dict[str, torch.Tensor]]:
    """The detections of a two-stage detector from its exported graphs (the post-processing of the export).

    Args:
        model: the detector the graphs were exported from (its RPN, RoI extractors and test settings
            are used; its backbone and heads are not run).
        network_outputs: the network graph's outputs on a preprocessed batch, in its order
            (``session.run(None, ...)``) or by name: ``rpn_cls_score_{l}``, ``rpn_bbox_pred_{l}``,
            ``feat_{l}`` (arrays or tensors).
        run_heads: the heads, ``heads(bbox_roi_feats, mask_roi_feats)`` as ``RoIHead.predict`` takes them:
            :func:`onnx_roi_heads` of the heads graph.
        metainfo: per image ``img_shape``, ``scale_factor``, ``ori_shape``, as the model's
            ``data_preprocessor`` returns them with the batch.
        rescale: boxes and masks in ``ori_shape`` pixels (as ``model.predict``).

    Returns per image ``{'boxes' (N, 4), 'scores' (N,), 'labels' (N,), 'masks' (N, H, W) bool}``, as
    ``model.predict_batch`` on the same batch: ``model.rpn_head.predict_by_feat`` gives the proposals,
    then ``model.roi_head.predict(feats, proposals, metainfo, rescale, heads=run_heads)``.
    """
    if not hasattr(model, "roi_head") or not hasattr(model, "rpn_head"):
        raise TypeError(f"model must be a two-stage detector (rpn_head and roi_head), got {type(model).__name__}")
    cls_scores, bbox_preds, feats = _split_outputs(model, network_outputs)
    if len(metainfo) != cls_scores[0].shape[0]:
        raise ValueError(f"metainfo has {len(metainfo)} entries for a batch of {cls_scores[0].shape[0]}")
    proposals = model.rpn_head.predict_by_feat(cls_scores, bbox_preds, metainfo)
    return model.roi_head.predict(feats, [p["boxes"] for p in proposals], metainfo, rescale=rescale, heads=run_heads)
