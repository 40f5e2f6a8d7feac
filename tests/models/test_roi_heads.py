"""Tests for hilovit.models.heads.roi_heads / roi_targets: the official Mask R-CNN fixture (RoI levels,
RoI features, box head, mask head, pasted masks), the full-size manifests' keys and shapes, the
losses against hand computations, the sampler, and a few training steps."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from hilovit.models.heads.roi_heads import FCNMaskHead, RoIHead, Shared2FCBBoxHead, map_roi_levels
from hilovit.models.heads.roi_targets import bbox_targets, random_sample, sample_rois
from hilovit.ops.boxes import DeltaXYWHBBoxCoder

encode_deltas = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2)).encode  # the R-CNN coder

FIXTURE = "maskrcnn_litv2_e16_262x305_201x263_a0.9_ws0042"
ATOL = RTOL = 1e-4


@pytest.fixture(scope="module")
def official(fixtures_dir):
    meta = json.loads((fixtures_dir / f"{FIXTURE}.json").read_text())
    cfg = {k: v for k, v in meta["constructor"]["roi_head"].items() if k != "type"}
    head = RoIHead(**cfg, train_cfg=meta["constructor"]["train_cfg"]["rcnn"],
                   test_cfg=meta["constructor"]["test_cfg"]["rcnn"]).eval()
    sd = load_file(str(fixtures_dir / f"{FIXTURE}.state_dict.safetensors"))
    head.load_state_dict({k[len("roi_head."):]: v for k, v in sd.items() if k.startswith("roi_head.")}, strict=True)
    io = load_file(str(fixtures_dir / f"{FIXTURE}.io.safetensors"))
    return head, io, meta, [io[f"neck.out{i}"] for i in range(5)]


def _close(a, b):
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=ATOL, rtol=RTOL), f"max |diff| {(a - b).abs().max().item():.3g}"


def test_roi_levels_match_the_official_counts(official):
    _, io, meta, _ = official
    roi = meta["derived"]["roi"]
    assert torch.bincount(map_roi_levels(io["bbox_rois"], 4), minlength=4).tolist() == roi["bbox_roi_level_counts"]
    assert torch.bincount(map_roi_levels(io["mask_rois"], 4), minlength=4).tolist() == roi["mask_roi_level_counts"]
    # the formula, written out per RoI: floor(log2(sqrt(w h) / 56 + 1e-6)) in [0, 3]
    for r in io["bbox_rois"][:50].tolist():
        s = math.sqrt((r[3] - r[1]) * (r[4] - r[2]))
        assert map_roi_levels(torch.tensor([r]), 4).item() == min(max(math.floor(math.log2(s / 56 + 1e-6)), 0), 3)


def test_bbox_branch_matches_the_official_tensors(official):
    head, io, _, feats = official
    with torch.no_grad():
        out = head.bbox_forward(feats, io["bbox_rois"])  # all 2000 proposals of both images
        rows = io["bbox_roi_feats_subset_rows"]
        _close(out["bbox_feats"][rows], io["bbox_roi_feats_subset"])
        _close(out["cls_score"], io["bbox_cls_score"])
        _close(out["bbox_pred"], io["bbox_bbox_pred"])
        cls, reg = head.bbox_head(io["bbox_roi_feats_subset"])  # from the saved features alone
    _close(cls, io["bbox_cls_score"][rows])
    _close(reg, io["bbox_bbox_pred"][rows])


def test_mask_branch_and_pasted_masks_match_the_official_tensors(official):
    head, io, meta, feats = official
    with torch.no_grad():
        out = head.mask_forward(feats, io["mask_rois"])
        _close(out["mask_feats"], io["mask_roi_feats"])
        _close(out["mask_preds"], io["mask_preds"])
        _close(head.mask_head(io["mask_roi_feats"]), io["mask_preds"])
    start = 0
    for i, (info, info_rs) in enumerate(zip(meta["derived"]["per_image"], meta["derived"]["per_image_rescale_case"])):
        boxes, labels = io[f"bbox_det.img{i}.bboxes"], io[f"bbox_det.img{i}.labels"]
        preds = io["mask_preds"][start:start + len(boxes)]
        start += len(boxes)
        for case, m in (("", info), ("rescale_case.", info_rs)):
            masks = head.mask_head.predict_masks(preds, boxes, labels, m["ori_shape"], m["scale_factor"])
            assert torch.equal(masks, io[f"{case}det.img{i}.masks"])
    with pytest.raises(ValueError, match="scale_factor"):
        head.mask_head.predict_masks(preds, boxes, labels, (10, 10), (1.0,))


def test_predict_with_the_heads_given_as_a_callable(official):
    """``heads=``: the post-processing around a stand-in for the two heads (e.g. their ONNX graph) is the
    one of ``predict``: the heads themselves as the callable give the very same results (official model,
    boxes rescaled, masks pasted), a callable of other logits other detections, a wrong one a clear error."""
    head, io, meta, feats = official
    few = [io[f"proposals.img{i}.bboxes"][:100] for i in range(2)]  # 200 RoIs keep it quick
    metas = [dict(m, img_shape=b["img_shape"])
             for m, b in zip(meta["derived"]["per_image_rescale_case"], meta["derived"]["per_image"])]
    calls = []

    def same(bbox_feats, mask_feats):
        calls.append((None if bbox_feats is None else bbox_feats.shape, None if mask_feats is None else
                      mask_feats.shape))
        return (*head.bbox_head(bbox_feats), None) if mask_feats is None else (None, None, head.mask_head(mask_feats))

    with torch.no_grad():
        want = head.predict(feats, few, metas)
        got = head.predict(feats, few, metas, heads=same)
    assert [len(w["labels"]) for w in want] == [1, 5]
    assert calls == [((200, 32, 7, 7), None), (None, (6, 32, 14, 14))]
    for w, g in zip(want, got):
        assert w.keys() == g.keys() and all(torch.equal(w[k], g[k]) for k in w)

    def background(bbox_feats, mask_feats):  # every RoI scored as background: nothing is detected
        if bbox_feats is None:
            return None, None, head.mask_head(mask_feats)
        cls, reg = head.bbox_head(bbox_feats)
        return cls.index_fill(1, torch.tensor([cls.shape[1] - 1]), 100.0), reg, None

    with torch.no_grad():
        assert [len(r["labels"]) for r in head.predict(feats, few, metas, heads=background)] == [0, 0]
        with pytest.raises(ValueError, match=r"heads returned cls_score, bbox_pred of shapes "
                                             r"\[\(200, 7\), \(200, 27\)\] for 200 RoIs; expected tensors \(200, 8\)"):
            head.predict(feats, few, metas, heads=lambda b, m: (*(t[:, :-1] for t in head.bbox_head(b)), None))
        with pytest.raises(ValueError, match=r"heads must return \(cls_score, bbox_pred, mask_logits\)"):
            head.predict(feats, few, metas, heads=lambda b, m: head.bbox_head(b))
        with pytest.raises(ValueError, match=r"heads returned mask_logits of shape \(6, 28, 28\) for 6 RoIs; "
                                             r"expected a tensor \(6, 7, h, w\)"):
            head.predict(feats, few, metas, heads=lambda b, m: same(b, None) if m is None else (None, None, same(
                None, m)[2][:, 0]))
        with pytest.raises(TypeError, match="heads must be a callable"):
            head.predict(feats, few, metas, heads="onnx")


@pytest.mark.parametrize("size", ["s", "m", "b"])
def test_full_size_keys_and_shapes_match_the_manifests(fixtures_dir, size):
    manifest = json.loads((fixtures_dir / "manifests" / f"mask_rcnn_litv2_{size}_fpn_1x_coco.json").read_text())
    cfg = {k: v for k, v in manifest["config"]["roi_head"].items() if k != "type"}
    with torch.device("meta"):
        head = RoIHead(**cfg)
    ours = {f"roi_head.{k}": list(v.shape) for k, v in head.state_dict().items()}
    official = {k: v for k, v in manifest["state_dict_shapes"].items() if k.startswith("roi_head.")}
    assert ours == official and len(ours) == 20
    n_params = sum(p.numel() for p in head.parameters())
    assert n_params == manifest["param_count_by_part"].get("roi_head", n_params) == 16_949_985


def test_official_initialisation():
    torch.manual_seed(0)
    head = Shared2FCBBoxHead(in_channels=16, fc_out_channels=256, num_classes=80)
    assert abs(head.fc_cls.weight.std().item() - 0.01) < 1e-3 and abs(head.fc_reg.weight.std().item() - 1e-3) < 1e-4
    for fc in head.shared_fcs:  # Xavier uniform: |w| <= sqrt(6 / (fan_in + fan_out))
        bound = math.sqrt(6 / sum(fc.weight.shape))
        assert fc.weight.abs().max() <= bound and fc.weight.abs().max() > 0.9 * bound
    mask = FCNMaskHead(num_convs=2, in_channels=8, conv_out_channels=64, num_classes=5)
    for w in (mask.convs[0].conv.weight, mask.upsample.weight, mask.conv_logits.weight):  # Kaiming normal, fan_out
        fan_out = w.shape[0] * w[0, 0].numel()
        assert abs(w.std().item() / math.sqrt(2 / fan_out) - 1) < 0.15
    biases = [head.fc_cls.bias, head.fc_reg.bias, mask.upsample.bias, mask.conv_logits.bias, mask.convs[1].conv.bias]
    assert all(b.abs().max() == 0 for b in biases)


def test_bbox_loss_against_hand_computation():
    head = Shared2FCBBoxHead(in_channels=1, roi_feat_size=1, fc_out_channels=4, num_classes=3)
    g = torch.Generator().manual_seed(0)
    cls = torch.randn(5, 4, generator=g)
    reg = torch.randn(5, 12, generator=g)
    labels = torch.tensor([0, 2, 3, 3, 1])
    label_w = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0])
    targets = torch.randn(5, 4, generator=g)
    bbox_w = torch.tensor([[1.0] * 4, [1.0] * 4, [0.0] * 4, [0.0] * 4, [1.0, 0.0, 1.0, 1.0]])
    losses = head.loss(cls, reg, labels, label_w, targets, bbox_w)
    ce = 0.0
    for i in range(5):
        row = cls[i].tolist()
        ce += label_w[i].item() * (math.log(sum(math.exp(v) for v in row)) - row[labels[i]])
    eps = torch.finfo(torch.float32).eps
    assert math.isclose(losses["loss_cls"].item(), ce / (4 + eps), rel_tol=1e-6)  # 4 weights > 0
    l1 = 0.0
    for i in range(5):
        if labels[i] < 3:  # positives: the deltas of their own class
            for j in range(4):
                l1 += abs(reg[i, 4 * labels[i] + j].item() - targets[i, j].item()) * bbox_w[i, j].item()
    assert math.isclose(losses["loss_bbox"].item(), l1 / (5 + eps), rel_tol=1e-6)  # averaged over all 5 RoIs
    assert math.isclose(losses["acc"].item(), 100 * sum(int(cls[i].argmax() == labels[i]) for i in range(5)) / 5)
    none = head.loss(cls, reg, torch.full((5,), 3), label_w, targets, bbox_w)
    assert none["loss_bbox"].item() == 0.0
    smooth = Shared2FCBBoxHead(in_channels=1, roi_feat_size=1, fc_out_channels=4, num_classes=3,
                               loss_bbox=dict(type="SmoothL1Loss", beta=1.0, loss_weight=2.0))
    d = torch.tensor([[0.5, -2.0, 0.0, 1.0]])
    s = smooth.loss(torch.zeros(1, 4), torch.cat([d, torch.zeros(1, 8)], 1), torch.tensor([0]), torch.ones(1),
                    torch.zeros(1, 4), torch.ones(1, 4))["loss_bbox"]
    assert math.isclose(s.item(), 2 * (0.125 + 1.5 + 0 + 0.5) / (1 + eps), rel_tol=1e-6)


def test_mask_loss_against_hand_computation():
    head = FCNMaskHead(num_convs=0, in_channels=2, conv_out_channels=2, num_classes=3,
                       loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.5))
    g = torch.Generator().manual_seed(1)
    preds = torch.randn(2, 3, 4, 4, generator=g)
    targets = (torch.rand(2, 4, 4, generator=g) > 0.5).float()
    labels = torch.tensor([2, 0])
    total = 0.0
    for i in range(2):
        for y in range(4):
            for x in range(4):
                z, t = preds[i, labels[i], y, x].item(), targets[i, y, x].item()
                total += max(z, 0) - z * t + math.log1p(math.exp(-abs(z)))
    loss = head.loss(preds, targets, labels)["loss_mask"]
    assert math.isclose(loss.item(), 1.5 * total / 32, rel_tol=1e-6)
    assert head.loss(preds[:0], targets[:0], labels[:0])["loss_mask"].item() == 0.0


def test_encode_deltas_and_bbox_targets():
    p = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    gt = torch.tensor([[12.0, 18.0, 60.0, 44.0]])
    dx, dy = (36.0 - 30.0) / 40.0, (31.0 - 30.0) / 20.0
    dw, dh = math.log(48.0 / 40.0), math.log(26.0 / 20.0)
    expected = torch.tensor([[dx / 0.1, dy / 0.1, dw / 0.2, dh / 0.2]])
    assert torch.allclose(encode_deltas(p, gt), expected, atol=1e-6)
    res = sample_rois(torch.tensor([[11.0, 19, 52, 41], [100, 100, 120, 130], [0, 0, 5, 5]]), torch.tensor([1, 0, -1]),
                      gt, torch.tensor([4]), num=8, pos_fraction=0.5)
    labels, label_w, targets, bbox_w = bbox_targets([res, res], num_classes=7)
    assert labels.tolist() == [4, 4, 7] * 2 and label_w.tolist() == [1.0] * 6
    assert torch.allclose(targets[0], encode_deltas(gt, gt)[0]) and targets[0].abs().max() == 0  # the gt itself
    assert torch.allclose(targets[1], encode_deltas(res.pos_priors[1:2], gt)[0]) and targets[2].abs().max() == 0
    assert bbox_w.tolist()[:3] == [[1.0] * 4, [1.0] * 4, [0.0] * 4]


def test_random_sample_and_sample_rois():
    g = torch.Generator().manual_seed(0)
    inds = torch.tensor([0] * 300 + [1] * 100 + [-1] * 50 + [2] * 60)[torch.randperm(510, generator=g)]
    pos, neg = random_sample(inds, 256, 0.25, generator=torch.Generator().manual_seed(5))
    assert len(pos) == 64 and len(neg) == 192 and (inds[pos] > 0).all() and (inds[neg] == 0).all()
    assert torch.equal(pos, pos.sort().values) and len(pos.unique()) == 64
    again = random_sample(inds, 256, 0.25, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again[0], pos) and torch.equal(again[1], neg)
    few = torch.tensor([0, 3, 0, -1, 1, 0])
    pos, neg = random_sample(few, 512, 0.25, neg_pos_ub=1)
    assert pos.tolist() == [1, 4] and len(neg) == 2  # all positives; negatives capped at 1 x #pos
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 40]])
    props = torch.tensor([[1.0, 1, 9, 9], [50, 50, 60, 60], [21, 19, 41, 42]])
    res = sample_rois(props, torch.tensor([1, 0, 2]), gt, torch.tensor([3, 5]), num=512, pos_fraction=0.25)
    assert res.pos_inds.tolist() == [0, 1, 2, 4] and res.neg_inds.tolist() == [3]  # gts prepended
    assert res.pos_is_gt.tolist() == [True, True, False, False]
    assert res.pos_assigned_gt_inds.tolist() == [0, 1, 0, 1] and res.pos_gt_labels.tolist() == [3, 5, 3, 5]
    assert torch.equal(res.priors, torch.cat([gt, props[[0, 2]], props[[1]]]))
    with pytest.raises(ValueError, match="num=0: expected a positive integer"):
        random_sample(few, 0, 0.25)
    with pytest.raises(ValueError, match="refers to ground truth 3"):
        sample_rois(props, torch.tensor([3, 0, 0]), gt, torch.tensor([0, 1]))


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="bbox_head type 'ConvFCBBoxHead'"):
        RoIHead(dict(type="SingleRoIExtractor", roi_layer=dict(type="RoIAlign", output_size=7), out_channels=8,
                     featmap_strides=[4]), dict(type="ConvFCBBoxHead"))
    with pytest.raises(ValueError, match="roi_layer type 'RoIPool'"):
        RoIHead(dict(type="SingleRoIExtractor", roi_layer=dict(type="RoIPool", output_size=7), out_channels=8,
                     featmap_strides=[4]), dict(type="Shared2FCBBoxHead"))
    with pytest.raises(ValueError, match="loss_cls must be CrossEntropyLoss"):
        Shared2FCBBoxHead(loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True))
    with pytest.raises(ValueError, match="upsample_cfg type 'carafe'"):
        FCNMaskHead(upsample_cfg=dict(type="carafe", scale_factor=2))
    with pytest.raises(ValueError, match="featmap_strides"):
        RoIHead(dict(type="SingleRoIExtractor", roi_layer=dict(type="RoIAlign", output_size=7), out_channels=8,
                     featmap_strides=[]), dict(type="Shared2FCBBoxHead"))


def _small_head():
    ext = dict(type="SingleRoIExtractor", out_channels=8, featmap_strides=[4, 8, 16, 32])
    return RoIHead(
        bbox_roi_extractor=dict(ext, roi_layer=dict(type="RoIAlign", output_size=7, sampling_ratio=0)),
        bbox_head=dict(type="Shared2FCBBoxHead", in_channels=8, fc_out_channels=32, roi_feat_size=7, num_classes=3),
        mask_roi_extractor=dict(ext, roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0)),
        mask_head=dict(type="FCNMaskHead", num_convs=2, in_channels=8, conv_out_channels=8, num_classes=3),
        train_cfg=dict(mask_size=28, pos_weight=-1),
    )


def _iou(a, b):
    lt, rb = torch.maximum(a[:, None, :2], b[None, :, :2]), torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def test_losses_decrease_over_a_few_steps_and_reach_the_fpn():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    head = _small_head()
    feats = [torch.randn(2, 8, 128 // s, 128 // s, generator=g).requires_grad_() for s in (4, 8, 16, 32)]
    samples, gt_masks = [], []
    for img in range(2):
        gt = torch.tensor([[10.0, 12, 60, 70], [70, 30, 120, 90]]) + 3 * img
        near = gt.repeat(10, 1) + torch.randn(20, 4, generator=g) * 4  # jittered ground truths
        xy, wh = torch.rand(30, 2, generator=g) * 90, 10 + torch.rand(30, 2, generator=g) * 30
        props = torch.cat([near, torch.cat([xy, xy + wh], 1)], 0)
        iou = _iou(props, gt)
        best, arg = iou.max(1)
        assigned = torch.where(best >= 0.5, arg + 1, torch.zeros_like(arg))
        samples.append(sample_rois(props, assigned, gt, torch.tensor([1, 2]), num=32, pos_fraction=0.25, generator=g))
        m = torch.zeros(2, 128, 128, dtype=torch.uint8)
        for k, (x1, y1, x2, y2) in enumerate(gt.long().tolist()):
            m[k, y1:y2, x1 + 5:x2 - 5] = 1
        gt_masks.append(m)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    history = []
    for _ in range(6):
        losses = head.loss(feats, samples, gt_masks)
        total = losses["loss_cls"] + losses["loss_bbox"] + losses["loss_mask"]
        history.append({k: v.item() for k, v in losses.items()})
        opt.zero_grad()
        total.backward()
        opt.step()
    for key in ("loss_cls", "loss_bbox", "loss_mask"):
        assert history[-1][key] < history[0][key], (key, [h[key] for h in history])
    # gradients reach the FPN map the RoIs read (level 0 for these sizes); the unused levels get zeros
    assert feats[0].grad.abs().sum() > 0 and all(f.grad is not None and f.grad.abs().sum() == 0 for f in feats[1:])
    assert sum(len(s.pos_inds) for s in samples) >= 8


def test_head_integer_arguments_are_checked_with_name_value_and_bound():
    from hilovit.models.heads.retina_head import RetinaHead
    from hilovit.models.heads.roi_heads import FCNMaskHead
    from hilovit.models.heads.rpn_head import RPNHead

    cases = [(lambda: RetinaHead(num_classes=3, in_channels=8, stacked_convs=-1),
              "RetinaHead stacked_convs=-1: expected an integer >= 0"),
             (lambda: RPNHead(in_channels=0), "RPNHead in_channels=0: expected a positive integer"),
             (lambda: FCNMaskHead(num_convs=2.0), "num_convs=2.0: expected an integer >= 0"),
             (lambda: FCNMaskHead(num_classes=True), "num_classes=True: expected a positive integer")]
    for build, message in cases:
        with pytest.raises(ValueError) as info:
            build()
        assert str(info.value) == message
