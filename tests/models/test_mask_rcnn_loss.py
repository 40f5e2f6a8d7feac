"""Mask R-CNN training: the RPN's assigner, sampler and loss and the R-CNN multiclass NMS against scalar
references, optimiser steps that lower every loss, images without boxes, and bad ground truth."""

import json
import math

import numpy as np
import pytest
import torch

from hilovit import build_detector
from hilovit.models.heads.rpn_head import RPNHead
from hilovit.ops.nms import multiclass_nms

FIXTURE = "maskrcnn_litv2_e16_262x305_201x263_a0.9_ws0042"


@pytest.fixture(scope="module")
def constructor(fixtures_dir):
    return json.loads((fixtures_dir / f"{FIXTURE}.json").read_text())["constructor"]


def scalar_iou(a, b):
    """IoU of two boxes in float32 scalar arithmetic (ties between anchors are float32 ties, as in mmdet)."""
    a, b = [np.float32(v) for v in a], [np.float32(v) for v in b]
    w = max(np.float32(0), np.float32(min(a[2], b[2]) - max(a[0], b[0])))
    h = max(np.float32(0), np.float32(min(a[3], b[3]) - max(a[1], b[1])))
    inter = np.float32(w * h)
    area_a, area_b = np.float32((a[2] - a[0]) * (a[3] - a[1])), np.float32((b[2] - b[0]) * (b[3] - b[1]))
    union = np.float32(np.float32(area_a + area_b) - inter)
    return float(np.float32(inter / max(union, np.float32(1e-6))))


def scalar_assign(ious, n, pos_thr, neg_thr, min_pos):
    """mmdet's MaxIoUAssigner (match_low_quality, gt_max_assign_all), one anchor and one box at a time."""
    if not ious:
        return [0] * n
    assigned = [-1] * n
    for j in range(n):
        col = [row[j] for row in ious]
        best = max(col)
        if 0 <= best < neg_thr:
            assigned[j] = 0
        if best >= pos_thr:
            assigned[j] = col.index(best) + 1
    for i, row in enumerate(ious):
        if max(row) >= min_pos:
            for j in range(n):
                if row[j] == max(row):
                    assigned[j] = i + 1
    return assigned


def scalar_sample(indices, num, generator):
    """RandomSampler's draw: all when there are at most ``num``, else ``randperm[:num]`` of them, sorted."""
    if len(indices) <= num:
        return list(indices)
    perm = torch.randperm(len(indices), generator=generator)[:num].tolist()
    return sorted(indices[k] for k in perm)


def scalar_bce(x, t):
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def test_rpn_assigner_sampler_and_loss_match_scalar_references():
    head = RPNHead(in_channels=4, feat_channels=4,
                   anchor_generator=dict(type="AnchorGenerator", scales=[2], ratios=[0.5, 1.0, 2.0], strides=[8, 16]),
                   train_cfg=dict(assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3,
                                                min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
                                  sampler=dict(type="RandomSampler", num=24, pos_fraction=0.5, neg_pos_ub=-1,
                                               add_gt_as_proposals=False), allowed_border=-1, pos_weight=-1))
    g = torch.Generator().manual_seed(3)
    sizes = [(8, 12), (4, 6)]
    cls = [torch.randn(2, 3, h, w, generator=g, dtype=torch.float64) * 2 for h, w in sizes]
    reg = [torch.randn(2, 12, h, w, generator=g, dtype=torch.float64) * 0.2 for h, w in sizes]
    targets = [dict(boxes=torch.tensor([[2.0, 3.0, 30.0, 20.0], [20.0, 8.0, 44.0, 30.0], [50.0, 10.0, 66.0, 42.0],
                                        [60.0, 30.0, 90.0, 60.0]]),
                    labels=torch.tensor([2, 0, 1, 5]), img_shape=(64, 96)),
               dict(boxes=torch.tensor([[4.0, 4.0, 20.0, 28.0]]), labels=torch.tensor([3]), img_shape=(30, 40)),
               ]
    losses = head.loss_by_feat(cls, reg, targets, pad_size_divisor=32, generator=torch.Generator().manual_seed(7))
    flat = torch.cat(head.anchors(sizes))
    draws = torch.Generator().manual_seed(7)
    bce = l1 = 0.0
    avg = 0
    n_pos_all = 0
    every = [(lvl, y, x, a) for lvl, (h, w) in enumerate(sizes) for y in range(h) for x in range(w) for a in range(3)]
    for i, t in enumerate(targets):
        pad_h, pad_w = (-(-s // 32) * 32 for s in t["img_shape"])
        valid = [k for k, (lvl, y, x, a) in enumerate(every)  # anchors of cells inside the image's pad_shape
                 if y < math.ceil(pad_h / (8, 16)[lvl]) and x < math.ceil(pad_w / (8, 16)[lvl])]
        rows = [every[k] for k in valid]
        ious = [[scalar_iou(b.tolist(), flat[k].tolist()) for k in valid] for b in t["boxes"]]
        assigned = scalar_assign(ious, len(valid), 0.7, 0.3, 0.3)
        pos = scalar_sample([j for j, a in enumerate(assigned) if a > 0], 12, draws)
        neg = scalar_sample([j for j, a in enumerate(assigned) if a == 0], 24 - len(pos), draws)
        avg += max(len(pos), 1) + max(len(neg), 1)
        n_pos_all += len(pos)
        for j in pos + neg:
            lvl, y, x, a = rows[j]
            bce += scalar_bce(float(cls[lvl][i, a, y, x]), 1.0 if j in pos else 0.0)
        for j in pos:
            lvl, y, x, a = rows[j]
            an, box = flat[valid[j]].double().tolist(), t["boxes"][assigned[j] - 1].double().tolist()
            pw, ph = an[2] - an[0], an[3] - an[1]
            d = [((box[0] + box[2]) - (an[0] + an[2])) / 2 / pw, ((box[1] + box[3]) - (an[1] + an[3])) / 2 / ph,
                 math.log((box[2] - box[0]) / pw), math.log((box[3] - box[1]) / ph)]
            l1 += sum(abs(float(reg[lvl][i, a * 4 + k, y, x]) - d[k]) for k in range(4))
    eps = torch.finfo(torch.float32).eps
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"}
    assert float(losses["loss_rpn_cls"]) == pytest.approx(bce / (avg + eps), rel=1e-5)
    assert float(losses["loss_rpn_bbox"]) == pytest.approx(l1 / (avg + eps), rel=1e-5)
    assert n_pos_all >= 5 and avg == 48  # 4 + 1 boxes claim anchors; 24 sampled in each image
    # mmdet's official initialisation of the RPN: normal(0, 0.01), zero biases
    torch.manual_seed(0)
    big = RPNHead(in_channels=64, feat_channels=64)
    for conv in (big.rpn_conv, big.rpn_cls, big.rpn_reg):
        assert abs(conv.weight.std().item() - 0.01) < 1.5e-3 and conv.bias.abs().max() == 0


def test_multiclass_nms_matches_per_class_greedy_nms():
    g = torch.Generator().manual_seed(0)
    N, C = 60, 4
    xy = torch.randint(0, 40, (N, 2), generator=g).float()
    boxes = torch.cat([xy, xy + torch.randint(5, 30, (N, 2), generator=g)], 1).repeat(1, C)
    boxes += torch.randint(-3, 4, boxes.shape, generator=g).float()
    scores = torch.softmax(torch.randn(N, C + 1, generator=g) * 2, 1)
    got_boxes, got_scores, got_labels = multiclass_nms(boxes, scores, 0.1, 0.5, max_num=25)
    kept = []
    for c in range(C):
        cand = sorted([(float(scores[n, c]), n) for n in range(N) if scores[n, c] > 0.1], key=lambda t: -t[0])
        keep_c = []
        for s, n in cand:
            b = boxes[n, 4 * c:4 * c + 4].tolist()
            if all(scalar_iou(b, boxes[m, 4 * c:4 * c + 4].tolist()) <= 0.5 for _, m in keep_c):
                keep_c.append((s, n))
        kept += [(s, n, c) for s, n in keep_c]
    kept = sorted(kept, key=lambda t: -t[0])[:25]
    assert got_labels.tolist() == [c for _, _, c in kept]
    assert got_scores.tolist() == [s for s, _, _ in kept]
    assert torch.equal(got_boxes, torch.stack([boxes[n, 4 * c:4 * c + 4] for _, n, c in kept]))


def _scene(model, g):
    images = [torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8) for _ in range(2)]
    inputs, metas = model.data_preprocessor(images)
    boxes = [torch.tensor([[10.0, 8.0, 50.0, 40.0], [40.0, 20.0, 90.0, 60.0]]), torch.tensor([[5.0, 5.0, 40.0, 60.0]])]
    targets = []
    for b, labels, m in zip(boxes, ([1, 4], [6]), metas):
        masks = torch.zeros(len(b), *m["img_shape"], dtype=torch.bool)  # the image's own size: padded inside
        for k, (x1, y1, x2, y2) in enumerate(b.long().tolist()):
            masks[k, y1 + 3:y2 - 3, x1 + 5:x2 - 5] = True
        targets.append(dict(boxes=b, labels=torch.tensor(labels), img_shape=m["img_shape"], masks=masks))
    return inputs, metas, targets


def test_training_steps_lower_every_loss_and_empty_images_work(constructor):
    torch.manual_seed(0)
    model = build_detector(constructor).train()
    inputs, metas, targets = _scene(model, torch.Generator().manual_seed(0))
    # fixed proposals (jittered ground truths and random boxes) and sampler draws: every term is a fixed target
    g = torch.Generator().manual_seed(1)
    proposals = []
    for t in targets:
        near = t["boxes"].repeat(8, 1) + torch.randn(8 * len(t["boxes"]), 4, generator=g) * 3
        xy = torch.rand(40, 2, generator=g) * 60
        proposals.append(torch.cat([near, torch.cat([xy, xy + 8 + torch.rand(40, 2, generator=g) * 30], 1)]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(4):
        losses = model.loss(inputs, targets, generator=torch.Generator().manual_seed(0), proposals=proposals)
        assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "loss_mask"}
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    for key in history[0]:
        assert history[-1][key] < history[0][key], (key, [h[key] for h in history])
    for part in (model.neck, model.rpn_head, model.roi_head):  # every head parameter learns
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    # the RPN's own proposals: finite losses, reproducible from the global seed
    with torch.no_grad():
        torch.manual_seed(5)
        a = model.loss(inputs, targets)
        torch.manual_seed(5)
        b = model.loss(inputs, targets)
        torch.manual_seed(6)
        c = model.loss(inputs, targets)
    assert all(math.isfinite(float(v)) and float(v) == float(b[k]) for k, v in a.items())
    assert float(a["loss_cls"]) != float(c["loss_cls"])  # another seed, other sampled RoIs
    # images without boxes (and without masks): finite losses, no regression terms
    empty = [dict(boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long), img_shape=m["img_shape"])
             for m in metas]
    losses = model.loss(inputs, empty)
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    assert float(losses["loss_rpn_bbox"].detach()) == float(losses["loss_bbox"].detach()) == 0.0
    assert float(losses["loss_mask"].detach()) == 0.0
    sum(losses.values()).backward()
    with torch.no_grad():
        mixed = model.loss(inputs, [targets[0], empty[1]])
    assert all(math.isfinite(float(v)) for v in mixed.values())


def test_loss_input_errors(constructor):
    model = build_detector(constructor).train()
    inputs, _, targets = _scene(model, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] must be in \[0, 7\)"):
        model.loss(inputs, [dict(targets[0], labels=torch.tensor([1, 7])), targets[1]])
    with pytest.raises(ValueError, match=r"targets\[1\] has 1 boxes but no 'masks'"):
        model.loss(inputs, [targets[0], {k: v for k, v in targets[1].items() if k != "masks"}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\] must be a bool/uint8 \(2, H, W\)"):
        model.loss(inputs, [dict(targets[0], masks=targets[0]["masks"].float()), targets[1]])
    with pytest.raises(ValueError, match="larger than the padded batch"):
        model.loss(inputs, [dict(targets[0], masks=torch.zeros(2, 70, 96, dtype=torch.bool)), targets[1]])
    with pytest.raises(ValueError, match="proposals must be one"):
        model.loss(inputs, targets, proposals=[torch.zeros(3, 4)])
    with pytest.raises(TypeError, match="inputs must be a preprocessed"):
        model.loss([inputs[0]], targets)
