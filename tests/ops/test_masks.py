"""Tests for hilovit.ops.masks: the paste against a per-pixel scalar reference and the official
Mask R-CNN fixture, mask targets against the scalar RoIAlign transcription, COCO RLE round trips."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hilovit.ops.masks import mask_targets, mask_to_rle, paste_masks, rle_to_mask
from references import ref_roi_align

FIXTURE = "maskrcnn_litv2_e16_262x305_201x263_a0.9_ws0042"


def ref_paste(prob: np.ndarray, box, H: int, W: int) -> np.ndarray:
    """One instance, pixel by pixel, in float64 from the float32 box: mmdet's window and coordinate map,
    then bilinear sampling with zero padding and align_corners=False written out."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = prob.shape
    out = np.zeros((H, W))
    x0i, y0i = max(math.floor(x1) - 1, 0), max(math.floor(y1) - 1, 0)
    x1i, y1i = min(math.ceil(x2) + 1, W), min(math.ceil(y2) + 1, H)

    def norm(c, a, b):
        return 0.0 if b == a else (c + 0.5 - a) / (b - a) * 2 - 1  # an infinite value becomes 0

    for r in range(y0i, y1i):
        for c in range(x0i, x1i):
            ix, iy = ((norm(c, x1, x2) + 1) * w - 1) / 2, ((norm(r, y1, y2) + 1) * h - 1) / 2
            fx, fy = math.floor(ix), math.floor(iy)
            val = 0.0
            for yy, wy in ((fy, 1 - (iy - fy)), (fy + 1, iy - fy)):
                for xx, wx in ((fx, 1 - (ix - fx)), (fx + 1, ix - fx)):
                    if 0 <= yy < h and 0 <= xx < w:
                        val += prob[yy, xx] * wy * wx
            out[r, c] = val
    return out


def test_paste_matches_per_pixel_reference():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(6, 28, 28, generator=g)
    boxes = torch.tensor([
        [3.3, 4.7, 20.2, 15.9],  # inside
        [-5.5, -2.25, 10.0, 8.5],  # partly outside (top-left)
        [30.1, 17.2, 45.7, 29.0],  # partly outside (bottom-right)
        [7.0, 3.0, 7.0, 12.0],  # zero width (integer x: the infinite coordinates become 0)
        [12.4, 9.6, 12.9, 10.2],  # sub-pixel
        [50.0, 40.0, 60.0, 50.0],  # fully outside: an empty window
    ])
    H, W = 24, 37
    pasted = paste_masks(probs, boxes, (H, W), threshold=None)
    masks = paste_masks(probs, boxes, (H, W))
    assert pasted.dtype == torch.float32 and masks.dtype == torch.bool and masks.shape == (6, H, W)
    for i in range(6):
        ref = ref_paste(probs[i].double().numpy(), boxes[i], H, W)
        assert np.abs(pasted[i].double().numpy() - ref).max() < 2e-5
        decided = np.abs(ref - 0.5) > 2e-5
        assert np.array_equal(masks[i].numpy()[decided], (ref >= 0.5)[decided])
    assert masks[5].sum() == 0 and masks[0].sum() > 20 and pasted[3].abs().sum() > 0


def test_paste_edge_cases_and_bad_inputs():
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6)).shape == (0, 5, 6)
    ones = torch.ones(1, 28, 28)
    m = paste_masks(ones, torch.tensor([[2.0, 1.0, 6.0, 4.0]]), (8, 9))
    assert m[0, 1:4, 2:6].all()  # the box's pixels
    assert not m[0, 6:].any() and not m[0, :, 8:].any()  # outside the window [1, 7) x [0, 6)
    with pytest.raises(ValueError, match="image_shape"):
        paste_masks(ones, torch.zeros(1, 4), (0, 5))
    with pytest.raises(ValueError, match="mask_probs"):
        paste_masks(torch.ones(28, 28), torch.zeros(1, 4), (5, 5))
    with pytest.raises(ValueError, match="boxes must be"):
        paste_masks(ones, torch.zeros(2, 4), (5, 5))
    with pytest.raises(ValueError, match="boxes must be finite"):
        paste_masks(ones, torch.tensor([[0.0, float("nan"), 3, 3]]), (5, 5))
    with pytest.raises(ValueError, match="threshold"):
        paste_masks(ones, torch.zeros(1, 4), (5, 5), threshold="0.5")


@pytest.fixture(scope="module")
def maskrcnn(fixtures_dir):
    meta = json.loads((fixtures_dir / f"{FIXTURE}.json").read_text())
    return load_file(str(fixtures_dir / f"{FIXTURE}.io.safetensors")), meta


@pytest.mark.parametrize("case", ["", "rescale_case."])
def test_paste_reproduces_the_official_masks(maskrcnn, case):
    io, meta = maskrcnn
    infos = meta["derived"]["per_image_rescale_case" if case else "per_image"]
    start = 0
    for i, info in enumerate(infos):
        det = io[f"bbox_det.img{i}.bboxes"]
        labels = io[f"bbox_det.img{i}.labels"]
        n = det.shape[0]
        probs = io["mask_preds"][start:start + n].sigmoid()[torch.arange(n), labels]
        start += n
        boxes = det / det.new_tensor(info["scale_factor"]).repeat(2)  # the official in-place division
        assert torch.equal(boxes, io[f"{case}det.img{i}.bboxes"])
        pasted = paste_masks(probs, boxes, info["ori_shape"], threshold=None)
        masks = paste_masks(probs, boxes, info["ori_shape"])
        expected = io[f"{case}det.img{i}.masks"]
        assert masks.shape == expected.shape == (n, *info["ori_shape"])
        flipped = masks != expected
        # a flip is tolerated only where the pasted probability is within 1e-4 of 0.5
        assert ((pasted[flipped] - 0.5).abs() <= 1e-4).all()
        assert flipped.sum() == 0, f"image {i}: {int(flipped.sum())} flipped pixels (all within 1e-4 of 0.5)"
        assert expected.sum() > 500


def _ref_targets(gt_masks, rois, inds, size):
    H, W = gt_masks.shape[1:]
    out = []
    for box, k in zip(rois.tolist(), inds.tolist()):
        x1, y1, x2, y2 = (np.clip(np.float32(v), 0, lim) for v, lim in zip(box, (W, H, W, H)))
        roi = torch.tensor([[0.0, x1, y1, x2, y2]])
        soft = ref_roi_align(gt_masks[k][None, None].float(), roi, size, 1.0, 0, True, "avg")[0, 0]
        out.append(soft)
    return torch.stack(out)


def test_mask_targets_match_cropped_roi_align_reference():
    g = torch.Generator().manual_seed(3)
    H, W = 30, 41
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    gt = torch.stack([((yy - 12) ** 2 + (xx - 15) ** 2 < 80), (xx > 20) & (yy < 18),
                      torch.rand(H, W, generator=g) > 0.5]).to(torch.uint8)
    rois = torch.tensor([[4.2, 3.7, 26.9, 20.1], [18.5, -3.0, 45.0, 20.0], [0.3, 0.6, 5.1, 9.9],
                         [10.0, 10.0, 10.0, 10.0], [-8.0, 5.5, 50.0, 35.0]])
    inds = torch.tensor([0, 1, 2, 0, 2])
    ref = _ref_targets(gt, rois, inds, (28, 14))
    soft = mask_targets(gt, rois, inds, (28, 14), binarize=False)
    hard = mask_targets(gt.bool(), rois, inds, (28, 14))
    assert (soft.double() - ref).abs().max().item() == 0.0
    assert torch.equal(hard, (ref >= 0.5).float()) and hard.dtype == torch.float32
    assert 0 < hard.mean() < 1 and ((soft > 0) & (soft < 1)).any()
    assert mask_targets(gt, rois[:0], inds[:0]).shape == (0, 28, 28)


def test_mask_targets_bad_inputs():
    gt = torch.zeros(2, 10, 10, dtype=torch.uint8)
    rois = torch.tensor([[0.0, 0, 5, 5]])
    with pytest.raises(ValueError, match=r"pos_assigned_gt_inds must lie in \[0, 2\)"):
        mask_targets(gt, rois, torch.tensor([2]))
    with pytest.raises(ValueError, match="pos_assigned_gt_inds must be an integer"):
        mask_targets(gt, rois, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="pos_rois"):
        mask_targets(gt, rois.long(), torch.tensor([0]))
    with pytest.raises(ValueError, match="gt_masks"):
        mask_targets(gt[0], rois, torch.tensor([0]))
    with pytest.raises(ValueError, match="mask_size"):
        mask_targets(gt, rois, torch.tensor([0]), mask_size=0)


# pycocotools' decoder under NumPy 2 warns about its own __array__ (not about these calls)
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_rle_round_trip_is_json_serialisable():
    pytest.importorskip("pycocotools")
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 23, 31, generator=g) > 0.6
    masks[2] = False  # an empty mask
    rles = json.loads(json.dumps(mask_to_rle(masks)))
    assert len(rles) == 4 and all(r["size"] == [23, 31] and isinstance(r["counts"], str) for r in rles)
    assert np.array_equal(rle_to_mask(rles), masks.numpy())
    single = mask_to_rle(masks[0].numpy().astype(np.uint8))
    assert isinstance(single, dict) and np.array_equal(rle_to_mask(single), masks[0].numpy())
    from pycocotools import mask as mask_util
    assert int(mask_util.area({"size": single["size"], "counts": single["counts"].encode()})) == int(masks[0].sum())
    with pytest.raises(ValueError, match="masks must be"):
        mask_to_rle(np.zeros(5))
    with pytest.raises(ValueError, match="rle must be"):
        rle_to_mask([{"counts": "x"}])
