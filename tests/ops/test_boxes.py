"""Box coder, IoU, rescaling and RoI helpers against scalar references written from mmdet's formulas."""

import math

import numpy as np
import pytest
import torch

from hilovit.ops.boxes import (
    MAX_RATIO,
    DeltaXYWHBBoxCoder,
    bbox2roi,
    bbox_overlaps,
    box_area,
    decode_deltas,
    encode_deltas,
    scale_boxes,
)


def random_boxes(n, seed, scale=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 2 + 1
    return torch.cat([xy, xy + wh], 1)


def scalar_decode(anchor, delta, means, stds, max_shape=None):
    """delta2bbox for one box, in float64 Python arithmetic."""
    d = [delta[k] * stds[k] + means[k] for k in range(4)]
    px, py = (anchor[0] + anchor[2]) * 0.5, (anchor[1] + anchor[3]) * 0.5
    pw, ph = anchor[2] - anchor[0], anchor[3] - anchor[1]
    dw = min(max(d[2], -MAX_RATIO), MAX_RATIO)
    dh = min(max(d[3], -MAX_RATIO), MAX_RATIO)
    gx, gy = px + pw * d[0], py + ph * d[1]
    gw, gh = pw * math.exp(dw), ph * math.exp(dh)
    box = [gx - gw * 0.5, gy - gh * 0.5, gx + gw * 0.5, gy + gh * 0.5]
    if max_shape is not None:
        h, w = max_shape
        box = [min(max(box[0], 0), w), min(max(box[1], 0), h), min(max(box[2], 0), w), min(max(box[3], 0), h)]
    return box


def scalar_encode(anchor, gt, means, stds):
    px, py = (anchor[0] + anchor[2]) * 0.5, (anchor[1] + anchor[3]) * 0.5
    pw, ph = anchor[2] - anchor[0], anchor[3] - anchor[1]
    gx, gy = (gt[0] + gt[2]) * 0.5, (gt[1] + gt[3]) * 0.5
    gw, gh = gt[2] - gt[0], gt[3] - gt[1]
    d = [(gx - px) / pw, (gy - py) / ph, math.log(gw / pw), math.log(gh / ph)]
    return [(d[k] - means[k]) / stds[k] for k in range(4)]


def scalar_iou(a, b, mode="iou"):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    denom = area_a + area_b - inter if mode == "iou" else area_a
    return inter / max(denom, 1e-6)


@pytest.mark.parametrize("means,stds", [((0, 0, 0, 0), (1, 1, 1, 1)), ((0.1, -0.2, 0.0, 0.3), (0.1, 0.1, 0.2, 0.2))])
def test_decode_matches_the_scalar_formula_with_clamps(means, stds):
    anchors = random_boxes(64, 0)
    g = torch.Generator().manual_seed(1)
    deltas = torch.randn(64, 4, generator=g) * 3  # beyond the dw/dh clamp after the stds
    deltas[:4, 2:] = torch.tensor([[30.0, -30.0], [-25.0, 25.0], [4.2, -4.2], [100.0, 100.0]])
    for max_shape in (None, (70, 102)):
        got = decode_deltas(anchors, deltas, means, stds, max_shape)
        ref = torch.tensor([scalar_decode(a.double().tolist(), d.double().tolist(), means, stds, max_shape)
                            for a, d in zip(anchors, deltas)], dtype=torch.float64)
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-3)
    # the clamp acts: the first anchors' sizes are exactly exp(+-max_ratio) times the anchor's
    got = decode_deltas(anchors[:1], torch.tensor([[0.0, 0.0, 50.0, -50.0]]))
    w, h = float(got[0, 2] - got[0, 0]), float(got[0, 3] - got[0, 1])
    aw, ah = float(anchors[0, 2] - anchors[0, 0]), float(anchors[0, 3] - anchors[0, 1])
    assert w == pytest.approx(aw * 1000 / 16, rel=1e-5) and h == pytest.approx(ah * 16 / 1000, abs=1e-4)


def test_encode_matches_the_scalar_formula_and_round_trips():
    anchors, gt = random_boxes(50, 2), random_boxes(50, 3)
    means, stds = (0.0, 0.0, 0.0, 0.0), (0.1, 0.1, 0.2, 0.2)
    got = encode_deltas(anchors, gt, means, stds)
    ref = torch.tensor([scalar_encode(a.double().tolist(), b.double().tolist(), means, stds)
                        for a, b in zip(anchors, gt)], dtype=torch.float64)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    coder = DeltaXYWHBBoxCoder(target_means=means, target_stds=stds)
    small = encode_deltas(anchors, anchors + 0.5)  # within the clamp
    torch.testing.assert_close(coder.decode(anchors, coder.encode(anchors, anchors + 0.5)), anchors + 0.5,
                               atol=1e-4, rtol=0)
    assert small.shape == (50, 4)


def test_overlaps_match_scalar_iou_and_iof():
    a, b = random_boxes(20, 4), random_boxes(30, 5)
    b[0] = torch.tensor([5.0, 5.0, 5.0, 9.0])  # zero width: IoU 0, no NaN
    for mode in ("iou", "iof"):
        got = bbox_overlaps(a, b, mode)
        ref = torch.tensor([[scalar_iou(x.tolist(), y.tolist(), mode) for y in b] for x in a], dtype=torch.float64)
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    assert bbox_overlaps(a, b[:0]).shape == (20, 0)
    torch.testing.assert_close(box_area(a), (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))


def test_scale_boxes_and_bbox2roi():
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert scale_boxes(boxes, (2.0, 0.5)).tolist() == [[2.0, 1.0, 6.0, 2.0]]
    assert scale_boxes(boxes, 3).tolist() == [[3.0, 6.0, 9.0, 12.0]]
    rois = bbox2roi([boxes, torch.zeros(0, 4), boxes * 2])
    assert rois.tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 4.0, 6.0, 8.0]]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"anchors must have shape \(N, 4\)"):
        decode_deltas(torch.zeros(3, 5), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="must have the same length"):
        decode_deltas(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(TypeError, match="boxes1 must be floating point"):
        bbox_overlaps(torch.zeros(3, 4, dtype=torch.long), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="mode must be 'iou' or 'iof'"):
        bbox_overlaps(torch.zeros(3, 4), torch.zeros(2, 4), mode="giou")
    with pytest.raises(ValueError, match="target_stds must be four numbers"):
        DeltaXYWHBBoxCoder(target_stds=[1.0, 1.0])
    with pytest.raises(ValueError, match="target_stds must be positive"):
        DeltaXYWHBBoxCoder(target_stds=[1.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="scale_factor must be a number or an"):
        scale_boxes(torch.zeros(1, 4), (1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="max_shape must be an"):
        decode_deltas(torch.zeros(1, 4), torch.zeros(1, 4), max_shape=(5,))
    assert np.isfinite(decode_deltas(torch.zeros(0, 4), torch.zeros(0, 4)).numpy()).all()
