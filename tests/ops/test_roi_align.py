"""Tests for hilovit.ops.roi_align against a scalar transcription of mmcv 2.1's CPU kernel
(``references.ref_roi_align``: NumPy scalars in the kernel's dtype and operation order)."""

from __future__ import annotations

import pytest
import torch

from hilovit.ops import roi_align as ra
from hilovit.ops.roi_align import RoIAlign, bbox2roi, roi_align
from references import ref_roi_align

# RoIs in feature-map pixels of an 11 x 13 map (divided by spatial_scale before the call).
_BASE = [
    [0, 1.0, 1.5, 7.5, 10.0],  # inside
    [1, -2.5, -1.5, 5.0, 7.5],  # partly outside (top-left)
    [0, 10.0, 7.5, 17.5, 15.0],  # partly outside (bottom-right)
    [1, 20.0, 20.0, 30.0, 25.0],  # fully outside (beyond W + 1, H + 1)
    [0, -12.5, -10.0, -5.0, -2.5],  # fully outside (before -1)
    [0, 2.5, 2.5, 2.5, 2.5],  # zero size
    [1, 3.0, 2.0, 3.0, 7.5],  # zero width
    [0, 1.325, 1.775, 1.4, 1.85],  # sub-pixel
    [1, 0.0, 0.0, 13.0, 11.0],  # the whole map
    [0, 12.2, 10.3, 13.5, 11.9],  # on the last row/column
]

# (output_size, spatial_scale, sampling_ratio, aligned, pool_mode)
CONFIGS = [
    (7, 0.25, 0, True, "avg"),
    (7, 0.25, 0, True, "max"),
    (14, 0.25, 0, True, "avg"),
    ((5, 3), 1.0, 0, True, "avg"),
    ((5, 3), 1.0, 2, False, "max"),
    (7, 1.0, 2, True, "avg"),
    (7, 0.25, 0, False, "avg"),
    (14, 1.0, 0, False, "max"),
    ((5, 3), 0.25, 2, True, "max"),
    (7, 0.25, 2, False, "avg"),
    (14, 0.25, 0, False, "avg"),
    ((5, 3), 1.0, 0, True, "max"),
]


def _inputs(dtype=torch.float32, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 3, 11, 13, generator=g)
    corners = torch.rand(6, 4, generator=g) * torch.tensor([13.0, 11.0, 13.0, 11.0])
    rnd = torch.cat([torch.randint(0, 2, (6, 1), generator=g).float(),
                     torch.minimum(corners[:, :2], corners[:, 2:]), torch.maximum(corners[:, :2], corners[:, 2:])], 1)
    rois = torch.cat([torch.tensor(_BASE), rnd])
    rois[:, 1:] /= scale
    return feats.to(dtype), rois.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_matches_scalar_kernel_transcription(cfg, dtype):
    out_size, scale, ratio, aligned, mode = cfg
    feats, rois = _inputs(dtype, scale)
    out = roi_align(feats, rois, out_size, scale, ratio, aligned, mode)
    ref = ref_roi_align(feats, rois, out_size, scale, ratio, aligned, mode)
    assert out.dtype == dtype and out.shape == ref.shape
    assert (out.double() - ref).abs().max().item() == 0.0  # the kernel's operations in its order
    # the cases really occur: empty bins (0 / -10000) and non-trivial values
    assert ref.abs().max() > 0.5
    if aligned and mode == "max" and ratio == 0:  # zero-size RoIs: an empty sample grid
        assert (ref == -10000).any()


def test_float64_matches_the_kernel_run_in_double_and_differs_from_float32():
    feats, rois = _inputs(torch.float64, 0.25)
    out64 = roi_align(feats, rois, 7, 0.25)
    out32 = roi_align(feats.float(), rois.float(), 7, 0.25)
    assert (out64 - ref_roi_align(feats, rois, 7, 0.25)).abs().max().item() == 0.0
    assert 0 < (out64 - out32.double()).abs().max().item() < 1e-5


def test_chunked_groups_give_the_same_result(monkeypatch):
    feats, rois = _inputs(torch.float32, 0.25)
    whole = roi_align(feats, rois, 7, 0.25)
    monkeypatch.setattr(ra, "_CHUNK_ELEMENTS", 1)  # one RoI per chunk
    assert torch.equal(roi_align(feats, rois, 7, 0.25), whole)


@pytest.mark.parametrize("ratio,mode", [(0, "avg"), (2, "avg"), (2, "max")])
def test_gradcheck_float64(ratio, mode):
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor([[0, 0.3, 0.6, 4.1, 3.7], [1, -0.8, 1.2, 3.3, 5.9], [1, 2.2, 0.1, 6.4, 2.8]],
                        dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (3, 2), 1.0, ratio, True, mode), (feats,))


def test_gradient_reaches_only_the_sampled_image():
    feats = torch.randn(2, 3, 8, 8, requires_grad=True)
    rois = torch.tensor([[1.0, 4.0, 4.0, 20.0, 24.0]], requires_grad=True)
    roi_align(feats, rois, 7, 0.25).sum().backward()
    assert feats.grad[0].abs().max() == 0 and feats.grad[1].abs().sum() > 0
    assert rois.grad is None  # as mmcv: the coordinates get no gradient
    # avg pooling is linear: the gradient of the sum is the sum of the bilinear weights / count per pixel
    assert torch.allclose(feats.grad[1].sum(), torch.tensor(3 * 49.0))


def test_module_wrapper_has_mmcv_arguments():
    layer = RoIAlign(output_size=7, spatial_scale=0.25, sampling_ratio=0, pool_mode="avg", aligned=True)
    assert layer.output_size == (7, 7) and layer.spatial_scale == 0.25 and layer.sampling_ratio == 0
    assert "pool_mode='avg'" in repr(layer) and list(layer.parameters()) == []
    feats, rois = _inputs(torch.float32, 0.25)
    assert torch.equal(layer(feats, rois), roi_align(feats, rois, 7, 0.25, 0, True, "avg"))


def test_empty_rois_half_precision_and_rois_dtype():
    feats, rois = _inputs(torch.float32, 0.25)
    assert roi_align(feats, rois[:0], (5, 3), 0.25).shape == (0, 3, 5, 3)
    half = roi_align(feats.half(), rois, 7, 0.25)
    assert half.dtype == torch.float16
    assert torch.allclose(half.float(), roi_align(feats.half().float(), rois, 7, 0.25), atol=2e-3)
    # float64 RoIs on float32 maps are cast to float32, as the kernel reads them in the maps' type
    assert torch.equal(roi_align(feats, rois.double(), 7, 0.25), roi_align(feats, rois, 7, 0.25))


def test_negative_size_is_allowed_only_when_not_aligned():
    feats, _ = _inputs()
    rois = torch.tensor([[0, 5.0, 5.0, 3.0, 4.0]])
    with pytest.raises(ValueError, match="negative size"):
        roi_align(feats, rois, 7, 1.0, aligned=True)
    out = roi_align(feats, rois, 7, 1.0, aligned=False)  # the kernel's minimum size 1
    assert (out.double() - ref_roi_align(feats, rois, 7, 1.0, 0, False)).abs().max().item() == 0.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(features=torch.zeros(3, 4, 4)), "features must be a floating"),
    (dict(features=torch.zeros(1, 3, 4, 4, dtype=torch.int64)), "features must be a floating"),
    (dict(rois=torch.zeros(2, 4)), r"rois must be a floating \(K, 5\)"),
    (dict(rois=torch.zeros(2, 5, dtype=torch.int64)), r"rois must be a floating \(K, 5\)"),
    (dict(output_size=0), "output_size must be a positive int"),
    (dict(output_size=(7, 7, 7)), "output_size must be a positive int"),
    (dict(spatial_scale=-0.25), r"spatial_scale=-0\.25: expected a number > 0"),
    (dict(sampling_ratio=-1), "sampling_ratio=-1: expected an integer >= 0"),
    (dict(sampling_ratio=1.5), r"sampling_ratio=1\.5: expected an integer >= 0"),
    (dict(aligned=1), "aligned must be a bool"),
    (dict(pool_mode="sum"), "pool_mode must be 'avg' or 'max'"),
    (dict(rois=torch.tensor([[2.0, 0, 0, 1, 1]])), r"batch indices\) must lie in \[0, 1\)"),
    (dict(rois=torch.tensor([[0.0, 0, float("nan"), 1, 1]])), "rois must be finite"),
])
def test_bad_inputs_raise_clear_errors(kwargs, match):
    args = dict(features=torch.zeros(1, 3, 4, 4), rois=torch.tensor([[0.0, 0, 0, 2, 2]]), output_size=2,
                spatial_scale=1.0, sampling_ratio=0, aligned=True, pool_mode="avg")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        roi_align(**args)
    with pytest.raises(TypeError, match="must be tensors"):
        roi_align([[0.0]], torch.zeros(0, 5), 2)
    with pytest.raises(ValueError, match="pool_mode"):
        RoIAlign(7, pool_mode="median")


def test_bbox2roi_prefixes_the_image_index():
    a, b = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8]]), torch.tensor([[9.0, 10, 11, 12, 0.9]])
    rois = bbox2roi([a, b, torch.zeros(0, 4)])
    assert rois.tolist() == [[0, 1, 2, 3, 4], [0, 5, 6, 7, 8], [1, 9, 10, 11, 12]]
    with pytest.raises(ValueError, match="bbox_list"):
        bbox2roi(a)
    with pytest.raises(ValueError, match=r"bbox_list\[1\]"):
        bbox2roi([a, torch.zeros(3)])


@pytest.mark.skipif(ra._tv_roi_align is None, reason="torchvision is not importable")
def test_torchvision_backend_agrees_with_the_pytorch_path():
    feats, rois = _inputs(torch.float32, 0.25)
    for ratio, aligned in ((0, True), (2, False)):
        ours = ra._roi_align_pytorch(feats, rois, (7, 7), 0.25, ratio, aligned, False)
        assert torch.allclose(roi_align(feats, rois, 7, 0.25, ratio, aligned), ours, atol=1e-6)
