import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader

from hilovit.data import write_idx
from hilovit.data.coco import CocoDetection
from hilovit.data.det_transforms import DetAugmentedDataset, DetTrainTransform, hflip_detection, rescale_detection
from hilovit.data.detection import DetDatasetInfo, build_det_datasets, detection_collate, find_coco_files
from hilovit.data.fashion_scenes import FashionSceneInstances, FashionScenes

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


# ----------------------------------------------------------------------------- references
def extent(mask: np.ndarray):
    """The tight box [x1, y1, x2, y2) of a mask's pixels, from their coordinates."""
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def decode_rle_counts(counts, height, width):
    """Uncompressed COCO RLE by hand: alternating runs of 0 and 1, column-major."""
    flat = np.zeros(height * width, dtype=bool)
    pos, value = 0, False
    for run in counts:
        flat[pos:pos + run] = value
        pos, value = pos + run, not value
    return flat.reshape(width, height).T


def results_from_targets(targets, category_ids):
    """COCO result entries (score 1) for the ground-truth instances of ``targets``."""
    out = []
    for t in targets:
        masks = t["masks"].numpy().transpose(1, 2, 0).astype(np.uint8)
        rles = mask_util.encode(np.asfortranarray(masks)) if len(t["boxes"]) else []
        for (x1, y1, x2, y2), label, rle in zip(t["boxes"].tolist(), t["labels"].tolist(), rles):
            rle["counts"] = rle["counts"].decode("ascii")
            out.append({"image_id": t["image_id"], "category_id": category_ids[label], "score": 1.0,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "segmentation": rle})
    return out


def coco_ap(gt: COCO, results, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0]


# ----------------------------------------------------------------------------- fashion-scenes
@pytest.fixture(scope="module")
def idx_root(tmp_path_factory):
    """Small IDX files: garments of random values with unlit holes, classes 0..9."""
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(1)
    for split, n in (("train", 40), ("test", 20)):
        imgs = rng.integers(40, 256, (n, 28, 28)).astype(np.uint8)
        imgs[rng.random(imgs.shape) < 0.3] = 0
        write_idx(root / NAMES[split][0], imgs)
        write_idx(root / NAMES[split][1], rng.integers(0, 10, n).astype(np.uint8))
    return root


def same_target(a, b):
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)


def test_fashion_instances_deterministic_in_any_order_and_worker(idx_root):
    a = FashionSceneInstances("train", num_scenes=30, seed=3, root=idx_root)
    b = FashionSceneInstances("train", num_scenes=30, seed=3, root=idx_root)
    order = [7, 0, 21, 7, 13]
    first = {i: a[i] for i in order}
    for i in reversed(order):
        x, t = b[i]
        assert torch.equal(x, first[i][0]) and same_target(t, first[i][1])
    assert not torch.equal(FashionSceneInstances("train", num_scenes=30, seed=4, root=idx_root)[7][0], first[7][0])
    loader = DataLoader(a, batch_size=4, num_workers=2, collate_fn=detection_collate)
    images, targets = [], []
    for xs, ts in loader:
        images += xs
        targets += ts
    assert len(images) == 30 and [t["image_id"] for t in targets] == list(range(30))
    assert torch.equal(images[21], first[21][0]) and same_target(targets[13], first[13][1])


def test_fashion_instances_boxes_masks_and_segmentation(idx_root):
    kw = dict(num_scenes=25, seed=1, root=idx_root, items=(6, 10))  # crowded: some garments hidden, some slivers
    seg = FashionScenes("test", **kw)
    every = FashionSceneInstances("test", min_visible=1, **kw)
    ds = FashionSceneInstances("test", **kw)
    assert ds.num_classes == 10 and ds.classes == [str(c) for c in range(10)] and ds.category_ids == tuple(range(1, 11))
    left_out = hidden = 0
    for i in range(25):
        image, label = seg[i]
        for view in (every, ds):
            x, t = view[i]
            assert torch.equal(x, image) and t["image_id"] == i
            masks, boxes, labels = t["masks"].numpy(), t["boxes"].numpy(), t["labels"].numpy()
            assert masks.dtype == bool and boxes.dtype == np.float32 and labels.dtype == np.int64
            assert masks.shape == (len(boxes), 128, 128) and labels.shape == (len(boxes),)
            assert masks.sum(0).max() <= 1  # visible pixels belong to one garment
            assert (masks.sum((1, 2)) >= view.min_visible).all()
            for m, box in zip(masks, boxes):
                assert box.tolist() == extent(m)
            painted = np.zeros((128, 128), dtype=np.int64)
            for m, c in zip(masks, labels):
                painted[m] = c + 1
            placements = view.layout(i)
            assert labels[-1] == placements[-1].label  # the top garment is whole, and last
            if view is every:
                assert np.array_equal(painted, label.numpy())  # segmentation = union of instance masks
                counts = masks.sum((1, 2))
                hidden += len(placements) - len(counts)  # no pixel left: not an instance in either view
            else:
                differ = painted != label.numpy()
                assert (painted[differ] == 0).all()  # only pixels of left-out garments are missing
                dropped = counts[counts < 8]
                assert differ.sum() == dropped.sum() and len(labels) == len(counts) - len(dropped)
                left_out += len(dropped)
    assert left_out > 0 and hidden > 0  # both cases do occur here


def test_fashion_coco_ground_truth_scores_itself(idx_root, tmp_path):
    ds = FashionSceneInstances("test", num_scenes=12, seed=0, root=idx_root)
    gt = ds.coco_ground_truth()
    samples = [ds[i] for i in range(12)]
    anns = [a for a in gt["annotations"]]
    assert [im["id"] for im in gt["images"]] == list(range(12))
    assert len(anns) == sum(len(t["boxes"]) for _, t in samples) and anns[0]["id"] == 1
    for a in anns[:6]:
        t = samples[a["image_id"]][1]
        k = [j for j, b in enumerate(t["boxes"].tolist()) if [b[0], b[1], b[2] - b[0], b[3] - b[1]] == a["bbox"]][0]
        m = mask_util.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
        assert np.array_equal(m.astype(bool), t["masks"][k].numpy()) and a["area"] == m.sum() and a["iscrowd"] == 0
        assert a["category_id"] == int(t["labels"][k]) + 1
    path = ds.write_coco_gt(tmp_path / "gt" / "fashion_test.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["fashion_test.json"]  # no temporary file left
    with contextlib.redirect_stdout(io.StringIO()):
        from_file = COCO(str(path))
    results = results_from_targets([t for _, t in samples], ds.category_ids)
    for coco in (ds.coco_gt(), from_file):
        assert coco_ap(coco, results, "bbox") == 1.0 and coco_ap(coco, results, "segm") == 1.0
    # a wrong label is scored as a miss
    results[0]["category_id"] = results[0]["category_id"] % 10 + 1
    assert coco_ap(from_file, results, "bbox") < 1.0


def test_build_det_datasets_fashion_scenes(idx_root):
    train, test, info = build_det_datasets("fashion-scenes", seed=1, data_dir=idx_root, num_train=10, num_test=4)
    assert isinstance(info, DetDatasetInfo) and isinstance(train, FashionSceneInstances)
    assert (len(train), len(test), train.split, test.split) == (10, 4, "train", "test")
    assert info.num_classes == 10 and info.in_chans == 1 and info.coco_gt is None and info.eval_split == "test"
    assert info.category_ids == tuple(range(1, 11)) and len(info.classes) == 10
    seg_train, _, seg_info = build_seg_datasets_same(idx_root)
    assert info.mean == seg_info.mean and info.std == seg_info.std  # the same images, the same statistics
    with pytest.raises(ValueError, match="val_split=0.2 must be 0"):
        build_det_datasets("fashion-scenes", val_split=0.2, data_dir=idx_root)
    with pytest.raises(ValueError, match=r"no-such-data.*\['fashion-scenes'\].*COCO folder"):
        build_det_datasets("no-such-data")
    with pytest.raises(ValueError, match="min_visible=0"):
        FashionSceneInstances("test", root=idx_root, min_visible=0)


def build_seg_datasets_same(idx_root):
    from hilovit.data.segmentation import build_seg_datasets

    return build_seg_datasets("fashion-scenes", seed=1, data_dir=idx_root, num_train=10, num_test=4)


def test_real_fashion_instances():
    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_DIR}")
    ds = FashionSceneInstances("test", num_scenes=40, seed=0, root=FASHION_DIR)
    seg = FashionScenes("test", num_scenes=40, seed=0, root=FASHION_DIR)
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and ds.num_classes == 10
    seen = set()
    for i in range(0, 40, 4):
        x, t = ds[i]
        painted = np.zeros((128, 128), dtype=np.int64)
        for m, c in zip(t["masks"].numpy(), t["labels"].tolist()):
            painted[m] = c + 1
        label = seg[i][1].numpy()
        assert ((painted == label) | (painted == 0)).all() and (painted == label).mean() > 0.99
        seen |= set(t["labels"].tolist())
    assert len(seen) >= 6


# ----------------------------------------------------------------------------- COCO folders
def save(path, arr, mode, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode).save(path, **kw)


def hand_rle_mask():
    m = np.zeros((20, 30), dtype=bool)
    m[10:15, 20:26] = True
    m[12, 19] = True
    return m


def make_coco_folder(root: Path):
    """A small COCO 2017 folder: polygons, uncompressed and compressed RLE, crowd, a grey image, an
    EXIF-rotated JPEG without annotations and a degenerate box. Categories unsorted, ids 9, 3, 7."""
    rng = np.random.default_rng(0)
    categories = [{"id": 9, "name": "nine"}, {"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]
    for split in ("train2017", "val2017"):
        save(root / split / "a.png", rng.integers(0, 256, (20, 30, 3)), "RGB")
        save(root / split / "grey.png", rng.integers(0, 256, (16, 12)), "L")
        exif = Image.Exif()
        exif[0x0112] = 6  # stored 14 wide x 10 high, shown rotated a quarter turn clockwise
        save(root / split / "rot.jpg", rng.integers(0, 256, (10, 14, 3)), "RGB", exif=exif, quality=95)
        crowd = mask_util.encode(np.asfortranarray(hand_rle_mask().astype(np.uint8)))
        grey_mask = np.zeros((16, 12), dtype=np.uint8, order="F")
        grey_mask[2:9, 4:7] = 1
        grey_rle = mask_util.encode(grey_mask)
        data = {
            "images": [{"id": 42, "file_name": "a.png", "width": 30, "height": 20},
                       {"id": 7, "file_name": "grey.png", "width": 12, "height": 16},
                       {"id": 100, "file_name": "rot.jpg", "width": 10, "height": 14}],
            "categories": categories,
            "annotations": [
                {"id": 1, "image_id": 42, "category_id": 7, "bbox": [2, 3, 4, 5], "area": 20, "iscrowd": 0,
                 "segmentation": [[2, 3, 6, 3, 6, 8, 2, 8]]},
                {"id": 2, "image_id": 42, "category_id": 3, "bbox": [0, 1, 2, 3], "area": 5, "iscrowd": 0,
                 "segmentation": {"size": [20, 30], "counts": [21, 2, 18, 3, 556]}},
                {"id": 3, "image_id": 42, "category_id": 9, "bbox": [19, 10, 7, 5], "area": 31, "iscrowd": 1,
                 "segmentation": {"size": [20, 30], "counts": crowd["counts"].decode()}},
                {"id": 5, "image_id": 7, "category_id": 9, "bbox": [4, 2, 3, 7], "area": 21, "iscrowd": 0,
                 "segmentation": {"size": [16, 12], "counts": grey_rle["counts"].decode()}},
                {"id": 6, "image_id": 7, "category_id": 3, "bbox": [10, 13, 2, 3], "area": 6, "iscrowd": 0,
                 "segmentation": [[10, 13, 12, 13, 12, 16, 10, 16]]},
            ],
        }
        if split == "train2017":  # under a pixel wide: skipped, as mmdet does (and not in the file scored)
            data["annotations"].append({"id": 4, "image_id": 42, "category_id": 9, "bbox": [5, 5, 0.5, 3], "area": 1,
                                        "iscrowd": 0, "segmentation": [[5, 5, 5.5, 5, 5.5, 8]]})
        ann = root / "annotations" / f"instances_{split}.json"
        ann.parent.mkdir(parents=True, exist_ok=True)
        ann.write_text(json.dumps(data))
    return root


@pytest.fixture
def coco_root(tmp_path):
    return make_coco_folder(tmp_path / "coco")


def test_coco_folder_targets_by_hand(coco_root):
    ds = CocoDetection(coco_root / "annotations" / "instances_train2017.json", coco_root / "train2017")
    assert ds.classes == ["three", "seven", "nine"] and ds.category_ids == (3, 7, 9) and ds.with_masks
    assert ds.image_ids == [42, 7, 100] and len(ds) == 3
    assert (ds.num_skipped, ds.num_ignored, ds.num_empty) == (1, 1, 1)  # w = 0.5; one crowd; rot.jpg

    image, t = ds[0]
    assert image.shape == (3, 20, 30) and image.dtype == torch.uint8 and t["image_id"] == 42
    assert np.array_equal(image.permute(1, 2, 0).numpy(), np.array(Image.open(coco_root / "train2017" / "a.png")))
    assert t["boxes"].tolist() == [[2, 3, 6, 8], [0, 1, 2, 4]] and t["labels"].tolist() == [1, 0]
    square = np.zeros((20, 30), dtype=bool)
    square[3:8, 2:6] = True  # polygon with corners (2, 3) and (6, 8): columns 2..5, rows 3..7
    assert np.array_equal(t["masks"][0].numpy(), square)
    assert np.array_equal(t["masks"][1].numpy(), decode_rle_counts([21, 2, 18, 3, 556], 20, 30))
    assert sorted(t["masks"][1].numpy().nonzero()[1].tolist()) == [1, 1, 2, 2, 2]  # columns 1 and 2
    assert t["ignore_boxes"].tolist() == [[19, 10, 26, 15]]
    assert np.array_equal(t["ignore_masks"][0].numpy(), hand_rle_mask())

    grey, t = ds[1]  # a grey file comes out as three equal channels
    assert grey.shape == (3, 16, 12) and torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])
    assert t["labels"].tolist() == [2, 0] and t["image_id"] == 7
    assert t["boxes"].tolist() == [[4, 2, 7, 9], [10, 13, 12, 16]]
    assert t["masks"][0].numpy().sum() == 21 and extent(t["masks"][0].numpy()) == [4, 2, 7, 9]
    assert extent(t["masks"][1].numpy()) == [10, 13, 12, 16] and t["masks"][1].numpy().sum() == 6

    rot, t = ds[2]  # EXIF orientation applied: stored 14x10, shown 10x14
    raw = np.array(Image.open(coco_root / "train2017" / "rot.jpg").convert("RGB"))
    assert rot.shape == (3, 14, 10) and np.array_equal(rot.permute(1, 2, 0).numpy(), np.rot90(raw, k=-1))
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 14, 10) and t["image_id"] == 100


def test_coco_round_trip_scores_itself(coco_root):
    train, val, info = build_det_datasets(str(coco_root))
    assert info.name == f"coco:{coco_root}" and info.eval_split == "val" and info.in_chans == 3
    assert info.classes == ("three", "seven", "nine") and info.category_ids == (3, 7, 9)
    assert info.coco_gt == str(coco_root / "annotations" / "instances_val2017.json")
    assert info.empty_images == (1, 1) and len(train) == 3 and train.image_dir == coco_root / "train2017"
    targets = [val[i][1] for i in range(len(val))]
    results = results_from_targets(targets, info.category_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        gt_file = COCO(info.coco_gt)
    for gt in (gt_file, val.coco_gt()):
        assert coco_ap(gt, results, "bbox") == 1.0 and coco_ap(gt, results, "segm") == 1.0
    del results[0]  # one instance missed
    assert coco_ap(gt_file, results, "bbox") < 1.0


def test_coco_single_file_holdout_and_explicit_folder(coco_root):
    ann = coco_root / "annotations" / "instances_val2017.json"
    train, val, info = build_det_datasets(str(ann), val_split=0.34, data_dir=coco_root / "val2017", seed=0)
    assert info.eval_split == "holdout" and len(train) == 2 and len(val) == 1
    assert sorted(train.image_ids + val.image_ids) == [7, 42, 100]
    gt = val.coco_gt()
    assert gt.getImgIds() == val.image_ids
    assert all(a["image_id"] in val.image_ids for a in gt.dataset["annotations"])
    _, val_again, _ = build_det_datasets(str(ann), val_split=0.34, data_dir=coco_root / "val2017", seed=0)
    assert val_again.image_ids == val.image_ids  # seeded
    results = results_from_targets([val[0][1]], info.category_ids)
    if results:
        assert coco_ap(gt, results, "bbox") == 1.0
    # a folder with one annotation file, the images in a folder of its name
    (coco_root / "annotations" / "instances_train2017.json").unlink()
    assert set(find_coco_files(coco_root)) == {"all"}
    with pytest.raises(ValueError, match="val_split=0.0 must be in"):
        build_det_datasets(coco_root)
    _, _, info = build_det_datasets(coco_root, val_split=0.5, num_train=1)
    assert info.eval_split == "holdout"
    with pytest.raises(ValueError, match="give its image folder as data_dir"):
        build_det_datasets(str(ann), val_split=0.5)


def test_coco_num_and_masks_off(coco_root):
    train, val, info = build_det_datasets(coco_root, num_train=2, num_test=1, with_masks=False)
    assert (len(train), len(val)) == (2, 1) and val.image_ids == [42]
    _, t = val[0]
    assert "masks" not in t and t["boxes"].shape == (2, 4) and t["ignore_boxes"].shape == (1, 4)
    assert val.coco_gt().getImgIds() == [42]


def by_id(data, ann_id):
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def rewrite(ann: Path, change):
    data = json.loads(ann.read_text())
    change(data)
    ann.write_text(json.dumps(data))


def test_coco_bad_inputs_name_file_and_annotation(coco_root):
    ann = coco_root / "annotations" / "instances_val2017.json"
    images = coco_root / "val2017"
    good = ann.read_text()

    def expect(change, pattern, exc=ValueError):
        ann.write_text(good)
        rewrite(ann, change)
        with pytest.raises(exc, match=pattern):
            CocoDetection(ann, images)

    ann.write_text(good[:-20])
    with pytest.raises(ValueError, match=r"instances_val2017.json' is not valid JSON"):
        CocoDetection(ann, images)
    expect(lambda d: by_id(d, 2).update(category_id=5),
           r"instances_val2017.json.*annotation id 2 has category_id 5, which is not in 'categories'")
    expect(lambda d: by_id(d, 1).update(bbox=[2, 3, 4, 18.5]),
           r"instances_val2017.json.*annotation id 1 has bbox \[2.0, 3.0, 4.0, 18.5\].*outside its image \(30x20")
    expect(lambda d: by_id(d, 5).update(bbox=[-1.5, 2, 3, 7]), "annotation id 5 has bbox")
    expect(lambda d: by_id(d, 5).update(image_id=8), "annotation id 5 refers to image id 8")
    expect(lambda d: by_id(d, 5).update(bbox=[4, 2, 3]), r"annotation id 5: 'bbox' must be \[x, y, w, h\]")
    expect(lambda d: d["images"][1].update(file_name="gone.png"),
           r"instances_val2017.json.*image id 7: image file .*val2017/gone.png' does not exist")
    expect(lambda d: d["annotations"].append(dict(d["annotations"][0])), "annotation id 1 appears twice")
    expect(lambda d: d.pop("images"), "'images' must be a list")
    # within the 1-pixel tolerance: accepted and clipped
    ann.write_text(good)
    rewrite(ann, lambda d: by_id(d, 1).update(bbox=[-0.5, 3, 30.9, 5]))
    assert CocoDetection(ann, images)[0][1]["boxes"][0].tolist() == [0, 3, 30, 8]
    rewrite(ann, lambda d: by_id(d, 1).update(bbox=[30, 3, 1, 5]))  # within it, but outside the image: skipped
    ds = CocoDetection(ann, images)
    assert ds.num_skipped == 1 and ds[0][1]["boxes"].tolist() == [[0, 1, 2, 4]]
    # an image whose decoded size is not the recorded one
    ann.write_text(good)
    rewrite(ann, lambda d: d["images"][2].update(width=14, height=10))  # the stored size, before EXIF
    with pytest.raises(ValueError, match=r"rot.jpg' is 10x14 \(WxH, after its EXIF orientation\).*records 14x10"):
        CocoDetection(ann, images)[2]
    ann.write_text(good)
    with pytest.raises(ValueError, match="already has train and val annotation files; val_split=0.5 must be 0"):
        build_det_datasets(coco_root, val_split=0.5)
    with pytest.raises(FileNotFoundError, match="no annotations"):
        build_det_datasets(coco_root / "val2017")


# ----------------------------------------------------------------------------- augmentation and batches
def rect_sample(h=40, w=60):
    """An image and solid rectangles (masks and their boxes) whose value encodes the instance."""
    rects = [(3, 5, 17, 20), (30, 10, 60, 39), (0, 0, 9, 4), (20, 25, 28, 38)]  # x1, y1, x2, y2
    masks = torch.zeros(len(rects), h, w, dtype=torch.bool)
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(rects):
        masks[k, y1:y2, x1:x2] = True
        image[:, y1:y2, x1:x2] = 50 * (k + 1)
    target = {"boxes": torch.tensor(rects, dtype=torch.float32), "labels": torch.arange(len(rects)),
              "masks": masks, "image_id": 5, "ignore_boxes": torch.tensor([[20.0, 20, 30, 30]]),
              "ignore_masks": torch.zeros(1, h, w, dtype=torch.bool)}
    target["ignore_masks"][0, 20:30, 20:30] = True
    return image, target


def test_flip_moves_boxes_and_masks_together():
    image, target = rect_sample()
    x, t = hflip_detection(image, target)
    assert torch.equal(x, image.flip(-1)) and t["image_id"] == 5
    assert torch.equal(target["masks"], rect_sample()[1]["masks"])  # the input is not changed
    for key, mkey in (("boxes", "masks"), ("ignore_boxes", "ignore_masks")):
        for box, m in zip(t[key].tolist(), t[mkey].numpy()):
            assert box == extent(m)
    assert t["boxes"][0].tolist() == [60 - 17, 5, 60 - 3, 20]


@pytest.mark.parametrize("scale", [(120, 80), (100, 50), (37, 25), (70, 47)])
def test_resize_keeps_boxes_on_the_masks(scale):
    image, target = rect_sample()
    x, t = rescale_detection(image, target, scale)
    f = min(max(scale) / 60, min(scale) / 40)
    assert tuple(x.shape[1:]) == (int(40 * f + 0.5), int(60 * f + 0.5))  # mmcv's imrescale, half up
    h, w = x.shape[1:]
    fx, fy = w / 60, h / 40
    assert torch.allclose(t["boxes"], torch.minimum(target["boxes"] * torch.tensor([fx, fy, fx, fy]),
                                                    torch.tensor([w, h, w, h], dtype=torch.float32)))
    assert t["masks"].shape == (4, h, w) and t["labels"].tolist() == [0, 1, 2, 3]
    for key, mkey in (("boxes", "masks"), ("ignore_boxes", "ignore_masks")):
        for box, m in zip(t[key].tolist(), t[mkey].numpy()):
            assert max(abs(a - b) for a, b in zip(box, extent(m))) <= 1.0  # nearest resize: edges within a pixel
    # the image and the masks moved together: each rectangle's pixels carry its value
    for k, m in enumerate(t["masks"]):
        outside = torch.nn.functional.pad((~m)[None].float(), (2, 2, 2, 2), value=1.0)
        inner = torch.nn.functional.max_pool2d(outside, 5, 1)[0] == 0  # 2 px from the mask's edges
        if inner.any():
            assert (x[0][inner] == 50 * (k + 1)).all()


def test_transform_drops_empty_boxes_and_is_repeatable():
    image, target = rect_sample()
    target = dict(target, boxes=torch.cat([target["boxes"], torch.tensor([[60.0, 2, 60.5, 9], [7, 7, 7, 12]])]),
                  labels=torch.arange(6), masks=torch.cat([target["masks"], torch.zeros(2, 40, 60, dtype=torch.bool)]))
    x, t = DetTrainTransform(scale=(120, 80), flip_prob=0.0)(image, target)
    assert t["labels"].tolist() == [0, 1, 2, 3] and t["masks"].shape[0] == 4  # x1 = x2 once clipped, and w = 0
    assert len(target["boxes"]) == 6  # the input is not changed
    t1 = DetTrainTransform(scale=(1333, 800), ratio_range=(0.05, 0.25))
    sizes = set()
    for seed in range(6):
        a = t1(image, target, torch.Generator().manual_seed(seed))
        b = t1(image, target, torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and same_target(a[1], b[1])
        sizes.add(tuple(a[0].shape))
        assert max(a[0].shape[1:]) <= 0.25 * 1333 and min(a[0].shape[1:]) <= 0.25 * 800
    assert len(sizes) == 6  # random scales
    with pytest.raises(ValueError, match="ratio_range=\\(2.0, 1.0\\)"):
        DetTrainTransform(ratio_range=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"target\['masks'\] must have shape \(6, 40, 60\)"):
        DetTrainTransform()(image, dict(target, masks=target["masks"][:, :5]))
    with pytest.raises(TypeError, match="image must be a uint8 tensor"):
        DetTrainTransform()(image.float(), target)


def test_augmented_dataset_depends_on_seed_epoch_index(idx_root):
    scenes = FashionSceneInstances("train", num_scenes=8, root=idx_root)
    aug = DetAugmentedDataset(scenes, DetTrainTransform(scale=(256, 160), ratio_range=(1.0, 1.5)), seed=1)
    first = [aug[i] for i in range(8)]
    again = DetAugmentedDataset(scenes, DetTrainTransform(scale=(256, 160), ratio_range=(1.0, 1.5)), seed=1)
    for i in (5, 2, 7):
        assert torch.equal(again[i][0], first[i][0]) and same_target(again[i][1], first[i][1])
    aug.set_epoch(1)
    assert any(not torch.equal(aug[i][0], first[i][0]) for i in range(8))
    assert aug.category_ids == scenes.category_ids and aug.num_classes == 10
    for _, t in first:
        for box, m in zip(t["boxes"].tolist(), t["masks"].numpy()):
            if m.any():
                assert max(abs(a - b) for a, b in zip(box, extent(m))) <= 1.0


def test_collate_keeps_sizes(coco_root):
    ds = CocoDetection(coco_root / "annotations" / "instances_val2017.json", coco_root / "val2017")
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=detection_collate)))
    assert [tuple(x.shape) for x in images] == [(3, 20, 30), (3, 16, 12), (3, 14, 10)]
    assert [t["image_id"] for t in targets] == [42, 7, 100] and targets[0]["boxes"].shape == (2, 4)
    with pytest.raises(TypeError, match=r"batch\[1\] must be an \(image, target\) pair"):
        detection_collate([ds[0], ds[1][0]])
