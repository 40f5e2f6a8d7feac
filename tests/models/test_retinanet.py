"""RetinaNet: the official fixture stage by stage, post-processing, manifests and FLOPs, the registry,
predict on raw images, build_detector errors, and the training loss against scalar references."""

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import hilovit
from detector_fixtures import dense_outputs, load_detector_fixture
from hilovit import build_detector, create_model, load_checkpoint
from hilovit.models.det_preprocessor import DetDataPreprocessor, resize_keep_ratio
from hilovit.models.heads.fpn import FPN
from hilovit.models.heads.losses import l1_loss, sigmoid_focal_loss
from hilovit.models.heads.retina_head import RetinaHead
from hilovit.ops.assign import max_iou_assign

FIXTURE = "retinanet_litv2_e16_70x102_61x90_a0.9_ws0042"
NAMES = ["retinanet_litv2_s", "retinanet_litv2_m", "retinanet_litv2_b", "retinanet_litv2_s_ws4",
         "retinanet_litv2_m_ws4", "retinanet_litv2_b_ws4", "retinanet_swin_t", "retinanet_litv2_nano"]


@pytest.fixture(scope="module")
def fixture(fixtures_dir):
    return load_detector_fixture(fixtures_dir, FIXTURE)


# --------------------------------------------------------------------------- official fixture
def test_fixture_every_dense_stage_matches(fixture):
    model, io, meta = fixture
    assert model.param_count_by_part() == meta["param_count_by_part"]
    assert len(model.state_dict()) == meta["state_dict_num_keys"]
    inputs, metas = model.data_preprocessor([io["image0_raw"], io["image1_raw"]])  # raw BGR, bgr_to_rgb
    assert torch.equal(inputs, io["inputs"])
    for m, ref in zip(metas, meta["derived"]["per_image"]):
        assert {k: list(v) for k, v in m.items()} == {k: list(v) for k, v in ref.items()}
    got, _, _ = dense_outputs(model, inputs)
    assert len(got) == 4 + 5 + 10
    for name, t in got.items():
        assert t.shape == io[name].shape, name
        torch.testing.assert_close(t, io[name], atol=1e-4, rtol=1e-4, msg=name)
    # an RGB image through predict's channel order gives the same batch
    rgb, _ = model.data_preprocessor([io["image0_raw"].flip(0), io["image1_raw"].flip(0)], channel_order="rgb")
    assert torch.equal(rgb, io["inputs"])


@pytest.mark.parametrize("case", ["", "rescale_case."])
def test_fixture_candidates_and_detections(fixture, case):
    model, io, meta = fixture
    metas = meta["derived"]["per_image_rescale_case" if case else "per_image"]
    head = model.bbox_head
    # from the saved head outputs the post-processing is the official one bit for bit
    cls = [io[f"cls_score.{k}"] for k in range(5)]
    reg = [io[f"bbox_pred.{k}"] for k in range(5)]
    anchors = head.anchors([c.shape[-2:] for c in cls])
    results = head.predict_by_feat(cls, reg, metas)
    for i in range(2):
        cand = head.candidates([c[i] for c in cls], [r[i] for r in reg], anchors, metas[i]["img_shape"])
        for ours, theirs in (("boxes", "bboxes"), ("scores", "scores"), ("labels", "labels")):
            assert torch.equal(cand[ours], io[f"{case}candidates.img{i}.{theirs}"]), (i, ours)
            assert torch.equal(results[i][ours], io[f"{case}det.img{i}.{theirs}"]), (i, ours)
    assert [len(r["labels"]) for r in results] == meta["checks"]["n_detections"]
    # end to end from the raw images: same counts and labels, boxes within 1e-3 px, scores within 1e-5
    inputs, _ = model.data_preprocessor([io["image0_raw"], io["image1_raw"]])
    results = model.predict_batch(inputs, metas)
    for i, r in enumerate(results):
        assert r["labels"].dtype == torch.int64 and torch.equal(r["labels"], io[f"{case}det.img{i}.labels"])
        torch.testing.assert_close(r["boxes"], io[f"{case}det.img{i}.bboxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(r["scores"], io[f"{case}det.img{i}.scores"], atol=1e-5, rtol=0)


def test_predict_on_rgb_images_equals_the_official_detections(fixture):
    model, io, _ = fixture
    out = model.predict([io["image0_raw"].flip(0), io["image1_raw"].flip(0)], resize=False)
    for i, r in enumerate(out):
        assert torch.equal(r["labels"], io[f"det.img{i}.labels"])
        torch.testing.assert_close(r["boxes"], io[f"det.img{i}.bboxes"], atol=1e-3, rtol=0)


# --------------------------------------------------------------------------- manifests, FLOPs, registry
@pytest.mark.parametrize("size", ["s", "m", "b"])
def test_manifest_keys_shapes_params_and_official_flops(fixtures_dir, size):
    man = json.loads((fixtures_dir / "manifests" / f"retinanet_litv2_{size}_fpn_1x_coco.json").read_text())
    with torch.device("meta"):
        model = create_model(f"retinanet_litv2_{size}")
        from_cfg = build_detector(man["config"])
    for m in (model, from_cfg):
        assert {k: list(v.shape) for k, v in m.state_dict().items()} == man["state_dict_shapes"]
        assert sum(p.numel() for p in m.parameters()) == man["param_count"]
        assert m.param_count_by_part() == man["param_count_by_part"]
    counts = model.flops(breakdown=True)
    assert {k: v for k, v in counts.items() if k != "total"} == man["flops_breakdown"]
    assert model.flops() == model.flops((1280, 800)) == man["flops"]
    shapes = man["output_shape"]
    cls, reg = model(torch.empty(shapes["input"], device="meta"))
    assert [list(c.shape) for c in cls] == shapes["cls_scores"] and [list(r.shape) for r in reg] == shapes["bbox_preds"]


def test_registry_entries_and_their_configs():
    readme = {"s": (44.0, 43.7), "m": (46.0, 45.8), "b": (46.7, 46.3)}
    assert set(NAMES) <= set(hilovit.list_models("retinanet_*"))
    for name in NAMES:
        with torch.device("meta"):
            model = create_model(name)
        cfg = model.pretrained_cfg
        assert cfg["task"] == "detection" and model.num_classes == cfg["num_classes"]
        if name.startswith("retinanet_litv2_") and name != "retinanet_litv2_nano":
            size, ws4 = name.split("_")[2], name.endswith("ws4")
            assert cfg["url"] == ("https://github.com/ziplab/LITv2/releases/download/v1.0/"
                                  f"retinanet_litv2_{size}_fpn_1x_coco{'_ws_4' if ws4 else ''}.pth")
            assert cfg["box_ap"] == readme[size][ws4]
            assert cfg["class_names"][:3] == ("person", "bicycle", "car") and len(cfg["class_names"]) == 80
            assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
            assert cfg["test_scale"] == (1333, 800)
            assert model.backbone.local_ws[2] == (4 if ws4 else 2)
    with torch.device("meta"):
        ws4 = {n: create_model(n).flops() for n in ("retinanet_litv2_s_ws4", "retinanet_litv2_m_ws4",
                                                   "retinanet_litv2_b_ws4")}
    assert [round(v / 1e9) for v in ws4.values()] == [230, 312, 430]  # the official README's ws 4 rows
    nano = create_model("retinanet_litv2_nano")
    assert nano.in_chans == 1 and nano.pretrained_cfg["input_size"] == (1, 128, 128) and nano.test_scale is None
    assert [s[0] for s in nano.bbox_head.prior_generator.strides] == [8, 16, 32, 64]
    small = create_model("retinanet_litv2_nano", num_classes=3, in_chans=3)
    assert small.bbox_head.retina_cls.out_channels == 9 * 3 and small.in_chans == 3
    assert small.pretrained_cfg["class_names"] is None and small.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)
    with pytest.raises(TypeError, match="unexpected argument"):
        create_model("retinanet_litv2_nano", img_size=64)


def test_pretrained_true_fetches_the_official_url_and_loads_strictly(tmp_path, monkeypatch):
    from hilovit.models.hub import cached_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HILOVIT_OFFLINE", "1")
    tiny = dict(backbone=dict(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], out_indices=[0, 1, 2, 3]),
                neck=dict(in_channels=[16, 32, 64, 128], out_channels=16),
                bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1))
    torch.manual_seed(0)
    source = create_model("retinanet_litv2_s", **tiny)
    url = source.pretrained_cfg["url"]
    assert url == "https://github.com/ziplab/LITv2/releases/download/v1.0/retinanet_litv2_s_fpn_1x_coco.pth"
    cached_path(url).parent.mkdir(parents=True)
    torch.save({"meta": {}, "state_dict": source.state_dict()}, cached_path(url))  # as a fetch by hand leaves it
    torch.manual_seed(1)
    model = create_model("retinanet_litv2_s", pretrained=True, **tiny)
    assert model.pretrained_cfg["weights"]["source"].endswith("/v1.0/retinanet_litv2_s_fpn_1x_coco.pth")
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(hilovit.DownloadError, match="retinanet_litv2_m_fpn_1x_coco.pth"):
        create_model("retinanet_litv2_m", pretrained=True, **tiny)
    with pytest.raises(ValueError, match="no pretrained weights are published for 'retinanet_swin_t'"):
        create_model("retinanet_swin_t", pretrained=True)


# --------------------------------------------------------------------------- predict on raw images
def test_resize_keep_ratio_follows_mmcv():
    for h, w in ((70, 102), (480, 640), (1000, 300), (800, 1333)):
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        out, (sw, sh) = resize_keep_ratio(img, (1333, 800))
        f = min(1333 / max(h, w), 800 / min(h, w))
        assert out.shape[1:] == (int(h * f + 0.5), int(w * f + 0.5)) and out.dtype == torch.uint8
        assert (sw, sh) == (out.shape[2] / w, out.shape[1] / h)
        assert max(out.shape[1:]) <= 1333 and min(out.shape[1:]) <= 800
    flat = torch.full((3, 10, 20), 77, dtype=torch.uint8)
    assert torch.equal(resize_keep_ratio(flat, (60, 30))[0], torch.full((3, 30, 60), 77, dtype=torch.uint8))


def test_predict_images_of_different_sizes_with_and_without_resize(fixture):
    model, _, _ = fixture
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in ((50, 75), (64, 40))]
    model.test_scale = (120, 90)  # resize=None / True: the model's test_scale (official: 1333 x 800)
    try:
        runs = [model.predict(images, resize=r) for r in (False, (160, 100), True)]
        assert model._test_scale(None) == model._test_scale(True) == (120, 90) and model._test_scale(False) is None
    finally:
        model.test_scale = (1333, 800)
    for out in runs:
        for img, r in zip(images, out):
            assert set(r) == {"boxes", "scores", "labels"} and r["boxes"].dtype == torch.float32
            assert r["boxes"].shape[0] > 0  # the fixture's weights detect plenty
            h, w = img.shape[1:]
            assert r["boxes"][:, 0::2].min() >= 0 and r["boxes"][:, 0::2].max() <= w + 1e-3
            assert r["boxes"][:, 1::2].min() >= 0 and r["boxes"][:, 1::2].max() <= h + 1e-3
            assert torch.all(r["scores"][:-1] >= r["scores"][1:]) and r["scores"].min() > 0.05
    # the resize path is: resize, preprocess, detect in the resized image, map back by 1 / scale_factor
    resized = [resize_keep_ratio(img, (160, 100)) for img in images]
    inputs, metas = model.data_preprocessor([r[0] for r in resized], channel_order="rgb")
    plain = model.predict_batch(inputs, metas)  # scale_factor 1: boxes in the resized images
    out = model.predict(images, resize=(160, 100))
    for (_, (sw, sh)), p, r in zip(resized, plain, out):
        assert torch.equal(p["labels"], r["labels"])
        torch.testing.assert_close(r["boxes"], p["boxes"] * torch.tensor([1 / sw, 1 / sh] * 2), atol=1e-4, rtol=0)
    batch = torch.stack([images[0], images[0]])
    twice = model.predict(batch, resize=False)
    assert torch.equal(twice[0]["boxes"], twice[1]["boxes"])


def test_preprocessor_normalises_and_pads_per_image():
    pre = DetDataPreprocessor(mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 8.0], bgr_to_rgb=True, pad_size_divisor=16,
                              pad_value=-1.0)
    a = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    b = torch.randint(0, 256, (3, 17, 3), dtype=torch.uint8)
    x, metas = pre([a, b])
    assert x.shape == (2, 3, 32, 16)
    for k, img in enumerate((a, b)):
        h, w = img.shape[1:]
        for c in range(3):  # channel c of the batch is input channel 2 - c (BGR -> RGB)
            ref = (img[2 - c].double() - [10.0, 20.0, 30.0][c]) / [2.0, 4.0, 8.0][c]
            torch.testing.assert_close(x[k, c, :h, :w].double(), ref, rtol=1e-6, atol=1e-6)
        assert (x[k, :, h:, :] == -1).all() and (x[k, :, :, w:] == -1).all()
        assert metas[k]["img_shape"] == (h, w) and metas[k]["pad_shape"] == (-(-h // 16) * 16, -(-w // 16) * 16)
    assert metas[0]["batch_input_shape"] == (32, 16) and not pre.state_dict()
    with pytest.raises(TypeError, match=r"images\[0\] must be uint8"):
        pre([a.float()])
    with pytest.raises(ValueError, match=r"images\[1\] must have shape \(3, H, W\)"):
        pre([a, b[:1]])
    with pytest.raises(ValueError, match="channel_order must be 'bgr' or 'rgb'"):
        pre([a], channel_order="hsv")


# --------------------------------------------------------------------------- build_detector errors
def test_build_detector_errors_name_the_problem(fixture):
    _, _, meta = fixture
    base = meta["constructor"]

    def broken(**change):
        cfg = copy.deepcopy(base)
        for path, value in change.items():
            *parents, last = path.split("__")
            d = cfg
            for p in parents:
                d = d[p]
            d[last] = value
        return cfg
    cases = [
        (dict(type="FasterRCNN"), ValueError, "model type 'FasterRCNN' is not supported"),
        (dict(roi_head={}), ValueError, r"unknown keys \['roi_head'\]"),
        (dict(data_preprocessor=None), ValueError, "needs a 'data_preprocessor' dict"),
        (dict(backbone__type="ResNet"), ValueError, "backbone type 'ResNet' is not supported"),
        (dict(backbone__depth=50), TypeError, r"backbone \(type='LITv2'\) got unknown argument\(s\) \['depth'\]"),
        (dict(neck__in_channels=[8, 16, 32, 64]), ValueError, "neck in_channels .* do not match"),
        (dict(neck__add_extra_convs="on_top"), ValueError, "add_extra_convs must be"),
        (dict(bbox_head__in_channels=16), ValueError, "bbox_head .* does not fit the neck"),
        (dict(bbox_head__loss_cls={"type": "CrossEntropyLoss"}), ValueError, "loss_cls must be a dict with type"),
        (dict(train_cfg__sampler={"type": "RandomSampler"}), ValueError, "sampler must be a dict with type"),
        (dict(test_cfg__nms={"type": "soft_nms", "iou_threshold": 0.5}), ValueError, "test_cfg nms must be"),
        (dict(test_cfg__topk=5), ValueError, r"test_cfg has unknown keys \['topk'\]"),
        (dict(data_preprocessor__mean=[1.0]), ValueError, "mean .* and std .* one entry per channel"),
        (dict(backbone__init_cfg={"type": "Kaiming"}), ValueError, "backbone init_cfg must be None or"),
    ]
    for change, exc, match in cases:
        with pytest.raises(exc, match=match):
            build_detector(broken(**change))
    with pytest.raises(TypeError, match="model must be a dict"):
        build_detector("RetinaNet")


def test_backbone_init_cfg_loads_the_backbone_non_strictly(fixture, tmp_path):
    model, _, meta = fixture
    path = tmp_path / "det.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    cfg = copy.deepcopy(meta["constructor"])
    cfg["backbone"]["init_cfg"] = dict(type="Pretrained", checkpoint=str(path))
    other = build_detector(cfg)
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(other.backbone.state_dict()[k], v), k
    assert not torch.equal(other.neck.fpn_convs[0].conv.weight, model.neck.fpn_convs[0].conv.weight)
    cfg["backbone"]["init_cfg"] = None
    cfg["init_cfg"] = dict(type="Pretrained", checkpoint=str(path))  # an mmdet checkpoint: the whole detector
    whole = build_detector(cfg)
    assert torch.equal(whole.neck.fpn_convs[0].conv.weight, model.neck.fpn_convs[0].conv.weight)


# --------------------------------------------------------------------------- FPN extra levels
@pytest.mark.parametrize("mode", ["on_input", "on_lateral", "on_output", True])
@pytest.mark.parametrize("relu", [False, True])
def test_fpn_extra_convs_match_plain_convolutions(mode, relu):
    torch.manual_seed(0)
    fpn = FPN([4, 8, 16], 6, num_outs=4, start_level=1, add_extra_convs=mode, relu_before_extra_convs=relu)
    xs = [torch.randn(2, c, s, s + 1) for c, s in ((4, 16), (8, 8), (16, 4))]
    outs = fpn(xs)
    conv = lambda m, x, **kw: F.conv2d(x, m.conv.weight, m.conv.bias, **kw)  # noqa: E731
    lat = [conv(fpn.lateral_convs[k], xs[k + 1]) for k in range(2)]
    lat[0] = lat[0] + F.interpolate(lat[1], size=lat[0].shape[2:], mode="nearest")
    ref = [conv(fpn.fpn_convs[k], lat[k], padding=1) for k in range(2)]
    src = {"on_input": xs[2], True: xs[2], "on_lateral": lat[1], "on_output": ref[1]}[mode]
    ref.append(conv(fpn.fpn_convs[2], src, stride=2, padding=1))
    ref.append(conv(fpn.fpn_convs[3], F.relu(ref[2]) if relu else ref[2], stride=2, padding=1))
    assert len(outs) == 4 and len(fpn.fpn_convs) == 4 and fpn.fpn_convs[2].conv.in_channels == (16 if mode in (
        "on_input", True) else 6)
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 9), (4, 5), (2, 3), (1, 2)]
    pooled = FPN([4, 8, 16], 6, num_outs=4, start_level=1)  # mmseg's default: max-pooled extra levels
    assert len(pooled.fpn_convs) == 2 and torch.equal(pooled(xs)[3], F.max_pool2d(pooled(xs)[2], 1, stride=2))
    mmseg = FPN([4, 8, 16], 6, num_outs=4, add_extra_convs=True, extra_convs_on_inputs=False)
    assert mmseg.add_extra_convs == "on_output"


# --------------------------------------------------------------------------- training loss
def scalar_iou(a, b):
    """IoU of two boxes in float32 scalar arithmetic (ties between anchors are float32 ties, as in mmdet)."""
    a, b = [np.float32(v) for v in a], [np.float32(v) for v in b]
    w = max(np.float32(0), np.float32(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(np.float32(0), np.float32(min(a[3], b[3]) - max(a[1], b[1])))
    inter = np.float32(w * h)
    area_a, area_b = np.float32((a[2] - a[0]) * (a[3] - a[1])), np.float32((b[2] - b[0]) * (b[3] - b[1]))
    union = np.float32(np.float32(area_a + area_b) - inter)
    return float(np.float32(inter / max(union, np.float32(1e-6))))


def scalar_assign(ious, N, pos_thr, neg_thr, min_pos):
    """mmdet's MaxIoUAssigner, one anchor and one box at a time (``ious``: G lists of N IoUs)."""
    G = len(ious)
    if G == 0:
        return [0] * N
    assigned = [-1] * N
    for j in range(N):
        col = [ious[i][j] for i in range(G)]
        best = max(col)
        if 0 <= best < neg_thr:
            assigned[j] = 0
        if best >= pos_thr:
            assigned[j] = col.index(best) + 1
    for i in range(G):
        gmax = max(ious[i])
        if gmax >= min_pos:
            for j in range(N):
                if ious[i][j] == gmax:
                    assigned[j] = i + 1
    return assigned


def test_assigner_matches_the_scalar_loop():
    g = torch.Generator().manual_seed(0)
    for G in (0, 1, 4):
        xy = torch.rand(G, 2, generator=g) * 60
        gt = torch.cat([xy, xy + 10 + torch.rand(G, 2, generator=g) * 30], 1)
        axy = torch.rand(200, 2, generator=g) * 80
        anchors = torch.cat([axy, axy + 5 + torch.rand(200, 2, generator=g) * 40], 1)
        ious = [[scalar_iou(b.tolist(), a.tolist()) for a in anchors] for b in gt]
        overlaps = torch.tensor(ious, dtype=torch.float32).reshape(G, 200)
        labels = torch.arange(G) % 3
        assigned, _, assigned_labels = max_iou_assign(overlaps, labels, 0.5, 0.4, 0.0)
        ref = scalar_assign(overlaps.tolist(), 200, 0.5, 0.4, 0.0)
        assert assigned.tolist() == ref
        assert assigned_labels.tolist() == [int(labels[k - 1]) if k > 0 else -1 for k in ref]
        if G:
            assert set(ref) >= {0, -1} | set(range(1, G + 1))  # every box claims an anchor


def scalar_focal(logits, labels, weights, gamma=2.0, alpha=0.25):
    total = 0.0
    for row, lab, w in zip(logits.tolist(), labels.tolist(), weights.tolist()):
        for c, x in enumerate(row):
            t = 1.0 if lab == c else 0.0
            p = 1 / (1 + math.exp(-x))
            bce = -(t * math.log(p) + (1 - t) * math.log(1 - p))
            pt = (1 - p) * t + p * (1 - t)
            total += bce * (alpha * t + (1 - alpha) * (1 - t)) * pt**gamma * w
    return total


def test_focal_and_l1_losses_match_their_formulas():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 6, (40,), generator=g)  # 5 = background
    weights = (torch.rand(40, generator=g) > 0.2).double()
    got = sigmoid_focal_loss(logits, labels, weights, 2.0, 0.25, avg_factor=7)
    ref = scalar_focal(logits, labels, weights) / (7 + torch.finfo(torch.float32).eps)
    assert float(got) == pytest.approx(ref, rel=1e-10)
    pred, target = torch.randn(10, 4, generator=g), torch.randn(10, 4, generator=g)
    w = torch.zeros(10, 4)
    w[:3] = 1
    ref = sum(abs(float(pred[i, k] - target[i, k])) for i in range(3) for k in range(4)) / 3
    assert float(l1_loss(pred, target, w, avg_factor=3)) == pytest.approx(ref, rel=1e-5)
    assert float(l1_loss(pred, target, torch.zeros(10, 4), avg_factor=1)) == 0.0


def tiny_head():
    return RetinaHead(num_classes=3, in_channels=8, stacked_convs=1, feat_channels=8,
                      anchor_generator=dict(type="AnchorGenerator", octave_base_scale=4, scales_per_octave=1,
                                            ratios=[0.5, 1.0, 2.0], strides=[8, 16]),
                      train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.4,
                                                   min_pos_iou=0, ignore_iof_thr=-1),
                                     sampler=dict(type="PseudoSampler"), allowed_border=-1, pos_weight=-1))


def test_head_loss_matches_a_scalar_reference():
    torch.manual_seed(0)
    head = tiny_head()
    g = torch.Generator().manual_seed(1)
    cls = [torch.randn(2, 9, 4, 6, generator=g, dtype=torch.float64), torch.randn(2, 9, 2, 3, generator=g,
                                                                                   dtype=torch.float64)]
    reg = [torch.randn(2, 12, 4, 6, generator=g, dtype=torch.float64) * 0.2,
           torch.randn(2, 12, 2, 3, generator=g, dtype=torch.float64) * 0.2]
    targets = [dict(boxes=torch.tensor([[2.0, 3.0, 30.0, 20.0], [20.0, 8.0, 44.0, 30.0], [0.0, 0.0, 9.0, 40.0]]),
                    labels=torch.tensor([2, 0, 1]), img_shape=(32, 48)),
               dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long), img_shape=(20, 30))]
    losses = head.loss_by_feat(cls, reg, targets, pad_size_divisor=32)
    anchors = head.anchors([(4, 6), (2, 3)])
    # reference: scalar assignment and targets per anchor, valid only inside each image's pad_shape
    focal = l1 = 0.0
    avg = 0
    for i, t in enumerate(targets):
        pad_h, pad_w = (-(-s // 32) * 32 for s in t["img_shape"])
        rows = []
        for lvl, (stride, (h, w)) in enumerate(((8, (4, 6)), (16, (2, 3)))):
            for y in range(h):
                for x in range(w):
                    for a in range(3):
                        valid = y < math.ceil(pad_h / stride) and x < math.ceil(pad_w / stride)
                        rows.append((lvl, y, x, a, valid))
        flat = torch.cat(anchors)
        valid_idx = [k for k, r in enumerate(rows) if r[4]]
        ious = [[scalar_iou(b.tolist(), flat[k].tolist()) for k in valid_idx] for b in t["boxes"]]
        assigned = scalar_assign(ious, len(valid_idx), 0.5, 0.4, 0.0)
        n_pos = 0
        for k, gt in zip(valid_idx, assigned):
            if gt < 0:
                continue
            lvl, y, x, a, _ = rows[k]
            logits = cls[lvl][i, a * 3:(a + 1) * 3, y, x]
            label = int(t["labels"][gt - 1]) if gt > 0 else 3
            focal += scalar_focal(logits[None], torch.tensor([label]), torch.ones(1))
            if gt > 0:
                n_pos += 1
                an, box = flat[k].double().tolist(), t["boxes"][gt - 1].double().tolist()
                pw, ph = an[2] - an[0], an[3] - an[1]
                d = [((box[0] + box[2]) - (an[0] + an[2])) / 2 / pw, ((box[1] + box[3]) - (an[1] + an[3])) / 2 / ph,
                     math.log((box[2] - box[0]) / pw), math.log((box[3] - box[1]) / ph)]
                l1 += sum(abs(float(reg[lvl][i, a * 4 + j, y, x]) - d[j]) for j in range(4))
        avg += max(n_pos, 1)
    eps = torch.finfo(torch.float32).eps
    assert float(losses["loss_cls"]) == pytest.approx(focal / (avg + eps), rel=1e-5)
    assert float(losses["loss_bbox"]) == pytest.approx(l1 / (avg + eps), rel=1e-5)
    assert avg > 2  # positives were found (image 1 has no boxes: it counts 1)


def test_training_steps_decrease_the_loss_and_empty_images_work(fixture):
    _, _, meta = fixture
    torch.manual_seed(0)
    model = build_detector(meta["constructor"]).train()
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8) for _ in range(2)]
    inputs, metas = model.data_preprocessor(images)
    targets = [dict(boxes=torch.tensor([[10.0, 8.0, 50.0, 40.0], [40.0, 20.0, 90.0, 60.0]]),
                    labels=torch.tensor([1, 4]), img_shape=metas[0]["img_shape"]),
               dict(boxes=torch.tensor([[5.0, 5.0, 40.0, 60.0]]), labels=torch.tensor([6]),
                    img_shape=metas[1]["img_shape"])]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(4):
        losses = model.loss(inputs, targets)
        total = losses["loss_cls"] + losses["loss_bbox"]
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(float(total.detach()))
    assert history[-1] < history[0] and all(math.isfinite(v) for v in history)
    empty = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long), img_shape=m["img_shape"])
             for m in metas]
    losses = model.loss(inputs, empty)
    assert math.isfinite(losses["loss_cls"].item()) and losses["loss_bbox"].item() == 0.0
    losses["loss_cls"].backward()
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] must be in \[0, 7\)"):
        model.loss(inputs, [dict(targets[0], labels=torch.tensor([1, 7])), targets[1]])
    with pytest.raises(ValueError, match="targets must be a list of 2 dicts"):
        model.loss(inputs, targets[:1])
    with pytest.raises(TypeError, match="inputs must be a preprocessed"):
        model.loss(images, targets)


# --------------------------------------------------------------------------- the other registered detectors
def test_nano_and_swin_detectors_run_and_the_fast_path_changes_nothing():
    torch.manual_seed(0)
    nano = create_model("retinanet_litv2_nano").eval()
    x = torch.randn(1, 1, 128, 96)
    with torch.inference_mode():
        on = nano(x)
        with hilovit.fast_inference(False):
            off = nano(x)
    assert [tuple(c.shape[2:]) for c in on[0]] == [(16, 12), (8, 6), (4, 3), (2, 2)]
    for a, b in zip(on[0] + on[1], off[0] + off[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    out = nano.predict(torch.randint(0, 256, (2, 1, 128, 128), dtype=torch.uint8))
    assert len(out) == 2 and out[0]["labels"].dtype == torch.int64  # no resize: test_scale None
    swin = create_model("retinanet_swin_t", num_classes=4, backbone=dict(embed_dim=24, depths=[1, 1, 1, 1],
                                                                          num_heads=[1, 2, 2, 4]),
                        neck=dict(in_channels=[48, 96, 192])).eval()
    assert swin.neck.start_level == 0 and list(swin.backbone.out_indices) == [1, 2, 3]
    cls, reg = swin(torch.randn(1, 3, 100, 140))
    assert [tuple(c.shape[1:]) for c in cls] == [(36, 13, 18), (36, 7, 9), (36, 4, 5), (36, 2, 3), (36, 1, 2)]
    load_checkpoint(swin, swin.state_dict())  # strict, through the backbone's own filter
    with pytest.raises(ValueError, match="defined for LITv2 backbones"):
        swin.flops()
