"""NMS against a scalar transcription of mmcv 2.1's ``nms_cpu`` greedy loop (numpy float32 scalars)."""

import numpy as np
import pytest
import torch

from hilovit.ops import nms as nms_mod
from hilovit.ops.nms import batched_nms, nms


def scalar_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list:
    """mmcv ``nms_cpu`` (offset 0) one box at a time: stable descending order, greedy suppression of
    later boxes whose IoU with a kept box is > the float32 threshold."""
    thr = np.float32(thr)
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    x1, y1, x2, y2 = (boxes[:, k].astype(np.float32) for k in range(4))
    areas = [np.float32(np.float32(x2[i] - x1[i]) * np.float32(y2[i] - y1[i])) for i in range(len(scores))]
    selected = [True] * len(order)
    keep = []
    for a in range(len(order)):
        if not selected[a]:
            continue
        i = order[a]
        keep.append(i)
        for b in range(a + 1, len(order)):
            if not selected[b]:
                continue
            j = order[b]
            w = max(np.float32(0), np.float32(min(x2[i], x2[j]) - max(x1[i], x1[j])))
            h = max(np.float32(0), np.float32(min(y2[i], y2[j]) - max(y1[i], y1[j])))
            inter = np.float32(w * h)
            with np.errstate(invalid="ignore", divide="ignore"):
                ovr = np.float32(inter / np.float32(np.float32(areas[i] + areas[j]) - inter))
            if ovr > thr:
                selected[b] = False
    return keep


def scalar_batched(boxes, scores, idxs, thr):
    """mmcv's batched_nms: the coordinate offsets in float32, then the greedy loop."""
    b = torch.from_numpy(boxes)
    off = torch.from_numpy(idxs).to(b) * (b.max() + torch.tensor(1).to(b))
    return scalar_nms((b + off[:, None]).numpy(), scores, thr)


def make_case(kind: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    if kind == "random":
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(20, 80, (n, 2))
    elif kind == "clustered":
        centres = rng.uniform(20, 180, (max(n // 15, 1), 2))
        xy = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 4, (n, 2))
        wh = rng.uniform(20, 40, (n, 2))
    else:  # integer coordinates: exact ties of IoU and area
        xy = rng.integers(0, 40, (n, 2)).astype(np.float64)
        wh = rng.integers(1, 20, (n, 2)).astype(np.float64)
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    if kind != "random":  # tied scores
        scores = np.round(scores * 8).astype(np.float32) / 8
    return boxes, scores


@pytest.fixture(params=["pytorch", "default"])
def backend(request):
    before = nms_mod.BACKEND
    if request.param == "pytorch":
        nms_mod.use_torchvision(False)
    yield request.param
    nms_mod.BACKEND = before


@pytest.mark.parametrize("kind", ["random", "clustered", "integer"])
@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_nms_equals_the_greedy_scalar_loop(kind, thr, backend):
    boxes, scores = make_case(kind, 150, seed=int(thr * 10) + len(kind))
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr)
    ref = scalar_nms(boxes, scores, thr)
    assert got.dtype == torch.int64 and got.tolist() == ref
    assert 0 < len(ref) < len(scores)  # both keeping and suppressing happened


def test_blocks_agree_with_one_block(monkeypatch):
    boxes, scores = make_case("clustered", 300, seed=3)
    ref = scalar_nms(boxes, scores, 0.5)
    monkeypatch.setattr(nms_mod, "_BLOCK", 64)  # five blocks, each pruned by the ones before
    assert nms_mod._nms_pytorch(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist() == ref


def test_threshold_is_float32_and_strict():
    # IoU exactly float32(0.3) (= 0.300000012): not suppressed (> is strict on the float32 threshold)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 3.0]])  # IoU 30 / 100
    iou = torch.tensor(30.0) / torch.tensor(100.0)
    assert float(iou) == float(torch.tensor(0.3, dtype=torch.float32))
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.3).tolist() == [0, 1]
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.29).tolist() == [0]
    # equal scores keep index order
    assert nms(boxes, torch.tensor([0.5, 0.5]), 0.9).tolist() == [0, 1]
    assert nms(boxes[[1, 0]], torch.tensor([0.5, 0.5]), 0.2).tolist() == [0]


def test_batched_nms_equals_scalar_reference_and_keeps_classes_apart(backend):
    boxes, scores = make_case("clustered", 200, seed=7)
    idxs = np.random.default_rng(1).integers(0, 4, 200)
    got = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.5)
    assert got.tolist() == scalar_batched(boxes, scores, idxs, 0.5)
    # the same as NMS within each class, merged by descending score
    per_class = []
    for c in range(4):
        members = np.nonzero(idxs == c)[0]
        per_class += [int(members[k]) for k in scalar_nms(boxes[members], scores[members], 0.5)]
    assert sorted(got.tolist()) == sorted(per_class)
    assert torch.all(torch.from_numpy(scores)[got][:-1] >= torch.from_numpy(scores)[got][1:])


def test_empty_and_bad_inputs():
    empty = torch.zeros(0, 4)
    assert nms(empty, torch.zeros(0), 0.5).shape == (0,)
    assert batched_nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        nms(torch.zeros(3, 5), torch.zeros(3), 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \(3,\)"):
        nms(torch.zeros(3, 4), torch.zeros(2), 0.5)
    with pytest.raises(TypeError, match="iou_threshold must be a number"):
        nms(torch.zeros(3, 4), torch.zeros(3), "0.5")
    with pytest.raises(ValueError, match="idxs must be an integer tensor"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3), 0.5)
    with pytest.raises(TypeError, match="enabled must be a bool"):
        nms_mod.use_torchvision("no")
