import math

import numpy as np
import pytest
import torch

from hilovit.tasks.segmentation_metrics import SegMetric, intersect_and_union, metrics_from_areas


def numpy_reference(preds, labels, num_classes, ignore_index=255):
    """mIoU etc. by plain per-class counting over a list of (pred, label) arrays, as mmseg's formulas."""
    inter = np.zeros(num_classes)
    area_p = np.zeros(num_classes)
    area_l = np.zeros(num_classes)
    for p, lab in zip(preds, labels):
        keep = lab != ignore_index
        p, lab = p[keep], lab[keep]
        for c in range(num_classes):
            inter[c] += np.sum((p == c) & (lab == c))
            area_p[c] += np.sum(p == c)
            area_l[c] += np.sum(lab == c)
    union = area_p + area_l - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
        acc = inter / area_l
    return dict(miou=np.nanmean(iou), macc=np.nanmean(acc), aacc=inter.sum() / area_l.sum(), iou=iou, acc=acc,
                inter=inter, union=union, area_p=area_p, area_l=area_l)


def test_hand_computed_tiny_case():
    pred = torch.tensor([[0, 1], [2, 2]])
    label = torch.tensor([[0, 1], [1, 255]])
    m = SegMetric(4)
    m.update(pred, label)
    r = m.compute()
    # class 0: I 1 U 1; class 1: I 1, pred 1, label 2 -> U 2; class 2: pred 1 label 0 -> IoU 0;
    # class 3: in neither -> nan, left out of the mean.
    assert r["iou"][:3] == [1.0, 0.5, 0.0] and math.isnan(r["iou"][3])
    assert r["miou"] == pytest.approx(0.5)
    # Acc: class 0 1/1, class 1 1/2, classes 2 and 3 never labelled -> nan.
    assert r["acc"][:2] == [1.0, 0.5] and math.isnan(r["acc"][2]) and math.isnan(r["acc"][3])
    assert r["macc"] == pytest.approx(0.75)
    assert r["aacc"] == pytest.approx(2 / 3)  # 2 right of 3 labelled pixels (one ignored)
    a = m.areas()
    assert a["intersect"].tolist() == [1, 1, 0, 0]
    assert a["union"].tolist() == [1, 2, 1, 0]
    assert a["pred"].tolist() == [1, 1, 1, 0] and a["label"].tolist() == [1, 2, 0, 0]


def test_areas_summed_over_the_data_set_not_averaged_per_image():
    # Image 1: class 0 perfect on 1 pixel. Image 2: class 0 labelled on 3 pixels, predicted 1 of them.
    # Per-image IoU averaging would give (1 + 1/3) / 2; summing areas gives 2 / 4.
    m = SegMetric(2)
    m.update(torch.tensor([[0]]), torch.tensor([[0]]))
    m.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 0, 0]]))
    r = m.compute()
    assert r["iou"][0] == pytest.approx(0.5)
    assert r["iou"][1] == 0.0  # predicted twice, never labelled: counted, IoU 0
    assert r["miou"] == pytest.approx(0.25)


@pytest.mark.parametrize("num_classes", [3, 7, 19])
def test_against_numpy_reference_on_random_maps(num_classes):
    rng = np.random.default_rng(num_classes)
    preds, labels = [], []
    m = SegMetric(num_classes)
    for _ in range(5):
        h, w = rng.integers(5, 40, size=2)
        lab = rng.integers(0, num_classes, size=(2, h, w))
        lab[rng.random(lab.shape) < 0.1] = 255
        # predictions right 60% of the time, so IoUs are neither 0 nor 1
        p = np.where(rng.random(lab.shape) < 0.6, np.where(lab == 255, 0, lab), rng.integers(0, num_classes, lab.shape))
        preds.append(p)
        labels.append(lab)
        m.update(torch.from_numpy(p), torch.from_numpy(lab))
    ref = numpy_reference(preds, labels, num_classes)
    r = m.compute()
    assert r["miou"] == pytest.approx(ref["miou"], abs=1e-12)
    assert r["macc"] == pytest.approx(ref["macc"], abs=1e-12)
    assert r["aacc"] == pytest.approx(ref["aacc"], abs=1e-12)
    np.testing.assert_allclose(r["iou"], ref["iou"], rtol=0, atol=1e-12)
    a = m.areas()
    np.testing.assert_array_equal(a["intersect"].numpy(), ref["inter"])
    np.testing.assert_array_equal(a["union"].numpy(), ref["union"])
    np.testing.assert_array_equal(a["pred"].numpy(), ref["area_p"])
    # the functional form on the whole batch sums to the same areas
    one = intersect_and_union(torch.from_numpy(preds[0]), torch.from_numpy(labels[0]), num_classes)
    ref0 = numpy_reference(preds[:1], labels[:1], num_classes)
    np.testing.assert_array_equal(one["intersect"].numpy(), ref0["inter"])
    np.testing.assert_array_equal(one["label"].numpy(), ref0["area_l"])


def test_absent_classes_are_nan_and_left_out_of_the_mean():
    num_classes = 6
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, size=(1, 20, 20))  # classes 3..5 never labelled
    p = lab.copy()
    p[0, 0, :5] = 4  # class 4 predicted but never labelled: IoU 0, counted
    m = SegMetric(num_classes)
    m.update(torch.from_numpy(p), torch.from_numpy(lab))
    r = m.compute()
    assert math.isnan(r["iou"][3]) and math.isnan(r["iou"][5]) and r["iou"][4] == 0.0
    ref = numpy_reference([p], [lab], num_classes)
    assert r["miou"] == pytest.approx(ref["miou"]) and r["miou"] == pytest.approx(np.mean(ref["iou"][[0, 1, 2, 4]]))


def test_logits_are_reduced_by_argmax():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 8, 9)
    label = torch.randint(0, 5, (2, 8, 9))
    a, b = SegMetric(5), SegMetric(5)
    a.update(logits, label)
    b.update(logits.argmax(1), label)
    assert torch.equal(a.confusion, b.confusion) and int(a.confusion.sum()) == 2 * 8 * 9


def test_merging_equals_one_accumulator():
    rng = np.random.default_rng(1)
    whole, parts = SegMetric(4), [SegMetric(4), SegMetric(4), SegMetric(4)]
    for i in range(6):
        p = torch.from_numpy(rng.integers(0, 4, (1, 10, 10)))
        lab = torch.from_numpy(rng.integers(0, 4, (1, 10, 10)))
        whole.update(p, lab)
        parts[i % 3].update(p, lab)
    raw_sum = parts[0].confusion + parts[1].confusion + parts[2].confusion  # what all_reduce computes
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert torch.equal(merged.confusion, whole.confusion) and torch.equal(raw_sum, whole.confusion)
    assert merged.compute()["miou"] == whole.compute()["miou"]
    assert whole.all_reduce() is whole  # identity in one process


def test_metrics_from_areas_with_names_and_empty():
    r = metrics_from_areas(torch.tensor([2, 0]), torch.tensor([4, 3]), torch.tensor([3, 1]), ["a", "b"])
    assert r["iou"] == [0.5, 0.0] and r["classes"] == ["a", "b"] and r["aacc"] == pytest.approx(0.5)
    empty = SegMetric(3).compute()
    assert math.isnan(empty["miou"]) and math.isnan(empty["aacc"])


def test_bad_input_is_reported():
    m = SegMetric(3)
    with pytest.raises(ValueError, match="label holds value 7 outside"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="pred holds class 3"):
        m.update(torch.full((1, 2, 2), 3), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="differ in shape"):
        m.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expected \(\.\.\., 3, H, W\)"):
        m.update(torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="label must be an integer tensor"):
        m.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="ignore_index=1"):
        SegMetric(3, ignore_index=1)
    with pytest.raises(ValueError, match="num_classes=0"):
        SegMetric(0)
    # ignored pixels may hold any prediction, and the ignore label is never counted
    m.update(torch.tensor([[2, 0]]), torch.tensor([[255, 0]]))
    assert int(m.confusion.sum()) == 1
