from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from hilovit.data import write_idx
from hilovit.data.fashion_scenes import FASHION_SCENES_CLASSES, FashionScenes
from hilovit.data.seg_transforms import (
    SegAugmentConfig,
    SegAugmentedDataset,
    SegTrainTransform,
    photometric_distortion,
    random_crop_box,
    rescale_for_eval,
    rescale_size,
)
from hilovit.data.segmentation import (
    ADE20K_CLASSES,
    ADE20KDataset,
    MaskFolderDataset,
    build_seg_datasets,
)

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- folder fixtures
def save_rgb(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), "RGB").save(path)


def save_grey(path, arr, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode).save(path)


def save_palette(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr.astype(np.uint8), "P")
    rng = np.random.default_rng(0)
    im.putpalette(rng.integers(0, 256, 768, dtype=np.uint8).tolist())  # colours unrelated to the indices
    im.save(path)


def make_ade(root, n=3, size=(10, 14)):
    rng = np.random.default_rng(0)
    raw = {}
    for split in ("training", "validation"):
        for i in range(n):
            stem = f"ADE_{split}_{i:04d}"
            save_rgb(root / "images" / split / f"{stem}.jpg", rng.integers(0, 256, (*size, 3)))
            ann = rng.integers(0, 151, size)
            ann[0, :4] = [0, 1, 150, 255]
            save_grey(root / "annotations" / split / f"{stem}.png", ann)
            raw[(split, i)] = ann
    return raw


def test_ade20k_layout_and_reduce_zero_label(tmp_path):
    raw = make_ade(tmp_path)
    ds = ADE20KDataset(tmp_path, "training")
    assert len(ds) == 3 and ds.num_classes == 150 and ds.classes == list(ADE20K_CLASSES) and len(ADE20K_CLASSES) == 150
    image, label = ds[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 10, 14)
    assert label.dtype == torch.int64 and label.shape == (10, 14)
    ann = raw[("training", 1)]
    assert label[0, :4].tolist() == [255, 0, 149, 255]  # 0 -> ignore, 1 -> 0, 150 -> 149, 255 stays ignored
    expected = np.where(ann == 0, 255, ann - 1)
    expected[ann == 255] = 255
    np.testing.assert_array_equal(label.numpy(), expected)
    # without reduce_zero_label the raw values are the labels, 151 classes with 'other' first
    plain = ADE20KDataset(tmp_path, "val", reduce_zero_label=False)
    assert plain.num_classes == 151 and plain.classes[0] == "other" and plain.split == "validation"
    np.testing.assert_array_equal(plain[2][1].numpy(), raw[("validation", 2)])
    train, val, info = build_seg_datasets(tmp_path)
    assert info.num_classes == 150 and info.eval_split == "validation" and len(val) == 3
    assert info.name.startswith("ade20k:") and info.in_chans == 3


def test_generic_layout_palette_and_grey_masks(tmp_path):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (9, 7, 3))
    lab = rng.integers(0, 5, (9, 7))
    lab[0, 0] = 255
    save_rgb(tmp_path / "images" / "b.png", img)
    save_palette(tmp_path / "masks" / "b.png", lab)  # palette indices are the labels
    save_rgb(tmp_path / "images" / "a.png", img[::-1])
    save_grey(tmp_path / "masks" / "a.bmp", lab[::-1])  # grey values are the labels, any extension
    save_grey(tmp_path / "masks" / "orphan.png", lab)  # a mask without an image is left out
    ds = MaskFolderDataset(tmp_path, num_classes=5)
    assert [p[0].name for p in ds.pairs] == ["a.png", "b.png"]
    (_, ya), (xb, yb) = ds[0], ds[1]
    np.testing.assert_array_equal(xb.permute(1, 2, 0).numpy(), img)
    np.testing.assert_array_equal(yb.numpy(), lab)
    np.testing.assert_array_equal(ya.numpy(), lab[::-1])
    grey = MaskFolderDataset(tmp_path, classes=list("abcde"), channels=1)
    assert grey[1][0].shape == (1, 9, 7) and grey.classes == list("abcde")


@pytest.mark.parametrize("style", ["images/split", "split/images"])
def test_generic_train_val_folders(tmp_path, style):
    rng = np.random.default_rng(2)
    for split, n in (("train", 3), ("val", 2)):
        img_dir = tmp_path / ("images/" + split if style == "images/split" else split + "/images")
        mask_dir = tmp_path / ("masks/" + split if style == "images/split" else split + "/masks")
        for i in range(n):
            save_rgb(img_dir / f"{split}{i}.jpg", rng.integers(0, 256, (6, 6, 3)))
            save_grey(mask_dir / f"{split}{i}.png", rng.integers(0, 3, (6, 6)))
    train, val, info = build_seg_datasets(tmp_path, num_classes=3)
    assert (len(train), len(val), info.eval_split, info.num_classes) == (3, 2, "val", 3)
    assert all(p[0].name.startswith("val") for p in val.pairs)


def test_generic_holdout_split(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(10):
        save_rgb(tmp_path / "images" / f"{i}.png", rng.integers(0, 256, (4, 4, 3)))
        save_grey(tmp_path / "masks" / f"{i}.png", rng.integers(0, 2, (4, 4)))
    with pytest.raises(ValueError, match="val_split=0.0 must be in"):
        build_seg_datasets(tmp_path, num_classes=2)
    train, val, info = build_seg_datasets(tmp_path, num_classes=2, val_split=0.3, seed=5)
    names = lambda d: {p[0].name for p in d.pairs}  # noqa: E731
    assert len(val) == 3 and len(train) == 7 and not names(train) & names(val) and info.eval_split == "holdout"
    again = build_seg_datasets(tmp_path, num_classes=2, val_split=0.3, seed=5)[1]
    assert names(again) == names(val)


def test_missing_mask_names_the_image(tmp_path):
    save_rgb(tmp_path / "images" / "a.png", np.zeros((4, 4, 3)))
    save_rgb(tmp_path / "images" / "lonely.jpg", np.zeros((4, 4, 3)))
    save_grey(tmp_path / "masks" / "a.png", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"image '.*lonely\.jpg' has no mask"):
        MaskFolderDataset(tmp_path, num_classes=2)
    with pytest.raises(ValueError, match="give num_classes"):
        MaskFolderDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no images/train"):
        MaskFolderDataset(tmp_path, "train", num_classes=2)


def test_mask_of_another_size_names_both_sizes(tmp_path):
    save_rgb(tmp_path / "images" / "a.png", np.zeros((4, 6, 3)))
    save_grey(tmp_path / "masks" / "a.png", np.zeros((4, 5)))
    ds = MaskFolderDataset(tmp_path, num_classes=2)
    with pytest.raises(ValueError, match=r"mask '.*a\.png' is 5x4 \(WxH\) but its image '.*a\.png' is 6x4"):
        ds[0]


def test_label_out_of_range_names_file_and_value(tmp_path):
    lab = np.zeros((4, 4))
    lab[1, 1], lab[2, 2] = 7, 255
    save_rgb(tmp_path / "images" / "a.png", np.zeros((4, 4, 3)))
    save_grey(tmp_path / "masks" / "a.png", lab)
    with pytest.raises(ValueError, match=r"mask '.*a\.png' holds label value\(s\) 7 outside \[0, 5\)"):
        MaskFolderDataset(tmp_path, num_classes=5)[0]
    assert int(MaskFolderDataset(tmp_path, num_classes=8)[0][1][1, 1]) == 7  # 7 fits 8 classes; 255 ignored
    # after reduce_zero_label the value is reported as read from the file
    make_ade(tmp_path / "ade", n=1)
    with pytest.raises(ValueError, match=r"holds label value\(s\) (\d+, )*150.* \(before reduce_zero_label\)"):
        ADE20KDataset(tmp_path / "ade", num_classes=149)[0]


def test_colour_mask_rejected_and_listing_opens_no_file(tmp_path):
    save_rgb(tmp_path / "images" / "a.png", np.zeros((4, 4, 3)))
    colour = np.zeros((4, 4, 3))
    colour[0, 0] = (255, 0, 0)
    save_rgb(tmp_path / "masks" / "a.png", colour)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image at all")
    save_grey(tmp_path / "masks" / "broken.png", np.zeros((4, 4)))
    ds = MaskFolderDataset(tmp_path, num_classes=2)  # listing succeeds: nothing was decoded
    assert len(ds) == 2
    with pytest.raises(ValueError, match="is a colour RGB image; expected a palette"):
        ds[0]
    with pytest.raises(Exception, match="broken.jpg|cannot identify"):
        ds[1]


# ----------------------------------------------------------------------------- fashion-scenes
NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@pytest.fixture(scope="module")
def split_marked_idx(tmp_path_factory):
    """IDX files whose splits can be told apart in every scene: training garments hold values 200..255
    and classes 0..4, test garments values 60..110 and classes 5..9, with unlit holes (value 0)."""
    root = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for split, n, (lo, hi), classes in (("train", 40, (200, 256), (0, 5)), ("test", 20, (60, 111), (5, 10))):
        imgs = rng.integers(lo, hi, (n, 28, 28)).astype(np.uint8)
        imgs[rng.random(imgs.shape) < 0.3] = 0
        write_idx(root / NAMES[split][0], imgs)
        write_idx(root / NAMES[split][1], rng.integers(*classes, n).astype(np.uint8))
    return root


def test_fashion_scenes_deterministic_in_any_order_and_instance(split_marked_idx):
    a = FashionScenes("train", num_scenes=50, seed=3, root=split_marked_idx)
    b = FashionScenes("train", num_scenes=50, seed=3, root=split_marked_idx)
    order = [7, 0, 42, 7, 13]
    first = {i: a[i] for i in order}
    for i in reversed(order):
        x, y = b[i]
        assert torch.equal(x, first[i][0]) and torch.equal(y, first[i][1])
    other = FashionScenes("train", num_scenes=50, seed=4, root=split_marked_idx)
    assert not torch.equal(other[7][1], first[7][1])
    assert not torch.equal(a[0][1], a[1][1])
    # in DataLoader worker processes too
    loader = DataLoader(a, batch_size=5, num_workers=2, shuffle=False)
    xs, ys = zip(*loader)
    assert torch.equal(torch.cat(ys)[42], first[42][1]) and torch.equal(torch.cat(xs)[13], first[13][0])


def test_fashion_scenes_split_sources_are_separate(split_marked_idx):
    train = FashionScenes("train", num_scenes=30, seed=0, root=split_marked_idx)
    test = FashionScenes("test", num_scenes=30, seed=0, root=split_marked_idx)
    assert train.classes[0] == "background" and train.num_classes == 11
    for ds, (lo, hi), labels in ((train, (200, 255), set(range(1, 6))), (test, (60, 110), set(range(6, 11)))):
        values, classes = set(), set()
        for i in range(len(ds)):
            x, y = (t.numpy() for t in ds[i])
            lit = y > 0
            values |= set(np.unique(x[0][lit]).tolist())
            classes |= set(np.unique(y[lit]).tolist())
            assert (x[0][~lit] == 0).all()  # background stays black
        # garments from this split only: test scenes never reach the training values, training scenes do
        # (blending with the holes makes lower values in both)
        assert max(values) <= hi and max(values) >= lo
        assert classes <= labels and len(classes) >= 3


def test_fashion_scenes_labels_match_lit_pixels_and_layout(split_marked_idx):
    ds = FashionScenes("test", num_scenes=20, seed=1, root=split_marked_idx, threshold=80)
    for i in range(20):
        x, y = ds[i]
        assert torch.equal(x[0] > 80, y > 0)
        placements = ds.layout(i)
        assert 2 <= len(placements) <= 5
        for p in placements:
            assert 32 <= p.size <= 64 and 0 <= p.top <= 128 - p.size and 0 <= p.left <= 128 - p.size
            assert p.label == int(ds.targets[p.source])
        # the last garment is drawn on top: its lit pixels carry its class and its resized pixels
        top = placements[-1]
        g = F.interpolate(ds.images[top.source][None].float(), size=(top.size, top.size), mode="bilinear",
                          align_corners=False, antialias=True)[0, 0].round().clamp(0, 255)
        box = (slice(top.top, top.top + top.size), slice(top.left, top.left + top.size))
        lit = g > 81  # clear of the threshold: the library resizes with matrices, rounding may differ by 1
        assert (y[box][lit] == top.label + 1).all()
        assert (x[0][box][lit].float() - g[lit]).abs().max() <= 1  # same garment, float rounding aside


def test_fashion_scenes_bad_arguments(split_marked_idx):
    for kw, msg in ((dict(split="val"), "split='val'"), (dict(num_scenes=0), "num_scenes=0"),
                    (dict(items=(3, 2)), "items=(3, 2)"), (dict(item_scale=(0.5, 1.5)), "item_scale"),
                    (dict(threshold=300), "threshold=300")):
        with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            FashionScenes(root=split_marked_idx, **kw)
    with pytest.raises(IndexError):
        FashionScenes("test", num_scenes=3, root=split_marked_idx)[3]
    with pytest.raises(ValueError, match="val_split=0.2 must be 0"):
        build_seg_datasets("fashion-scenes", val_split=0.2, data_dir=split_marked_idx)
    train, test, info = build_seg_datasets("fashion-scenes", data_dir=split_marked_idx, num_train=20, num_test=5)
    assert (len(train), len(test), info.num_classes, info.in_chans) == (20, 5, 11, 1)
    assert train.split == "train" and test.split == "test" and 0 < info.mean[0] < 0.5
    with pytest.raises(ValueError, match="neither a known dataset nor an existing folder"):
        build_seg_datasets("no-such-data")


@pytest.fixture(scope="module")
def real_scenes():
    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    return FashionScenes("test", num_scenes=200, seed=0, root=FASHION_DIR)


def test_real_fashion_scenes(real_scenes):
    ds = real_scenes
    assert tuple(ds.classes) == FASHION_SCENES_CLASSES and ds.classes[1] == "T-shirt/top" and len(ds.images) == 10000
    seen = set()
    for i in range(0, 200, 10):
        x, y = ds[i]
        assert x.shape == (1, 128, 128) and y.shape == (128, 128) and y.dtype == torch.int64
        assert torch.equal(x[0] > 25, y > 0)
        seen |= set(y.unique().tolist())
        for p in ds.layout(i):
            assert p.source < 10000
    assert len(seen) >= 8  # background and most garment classes appear in 20 scenes


# ----------------------------------------------------------------------------- augmentation
def block_sample(h=96, w=80, block=16, channels=1):
    """Labels in constant blocks, images whose value encodes the label (20 * label)."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 10, (h // block + 1, w // block + 1))
    label = torch.from_numpy(np.kron(blocks, np.ones((block, block), dtype=np.int64))[:h, :w])
    image = (label * 20).to(torch.uint8).expand(channels, h, w).clone()
    return image, label


def near_boundary(label):
    """Pixels within 3 px of a change of label (where bilinear images blend neighbouring values)."""
    lab = label.float()[None, None]
    edge = (F.max_pool2d(lab, 7, 1, 3) != -F.max_pool2d(-lab, 7, 1, 3))[0, 0]
    return edge


@pytest.mark.parametrize("channels", [1, 3])
def test_augmentation_keeps_image_and_label_aligned(channels):
    image, label = block_sample(channels=channels)
    t = SegTrainTransform(crop_size=(64, 72), img_scale=(160, 96), ratio_range=(0.5, 2.0), photometric=False,
                          cat_max_ratio=0.75)
    padded = 0
    for seed in range(12):
        x, y = t(image, label, torch.Generator().manual_seed(seed))
        assert x.shape == (channels, 64, 72) and y.shape == (64, 72) and x.dtype == torch.uint8
        assert set(y.unique().tolist()) <= set(range(10)) | {255}  # nearest: no new label values
        pad = y == 255
        padded += int(pad.any())
        assert (x[:, pad] == 0).all()
        keep = ~pad & ~near_boundary(torch.where(pad, -1, y))
        keep[:3], keep[-3:], keep[:, :3], keep[:, -3:] = False, False, False, False  # labels beyond the crop
        assert keep.sum() > 100
        assert (x[:, keep].long() == 20 * y[keep]).all()  # the image value still encodes the label
    assert padded >= 2  # ratios below ~0.8 leave images smaller than the crop


def test_flip_moves_image_and_label_together():
    image, label = block_sample(channels=3)
    t = SegTrainTransform(crop_size=(96, 80), img_scale=None, cat_max_ratio=1.0, photometric=False)
    flips = 0
    for seed in range(10):
        x, y = t(image, label, torch.Generator().manual_seed(seed))
        if torch.equal(y, label.flip(-1)):
            flips += 1
            assert torch.equal(x, image.flip(-1))
        else:
            assert torch.equal(y, label) and torch.equal(x, image)
    assert 1 <= flips <= 9


def test_augmentation_is_repeatable_and_dataset_wrapper(split_marked_idx):
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8, generator=gen)
    label = torch.randint(0, 4, (50, 60), generator=gen)
    t = SegTrainTransform(crop_size=32, img_scale=(120, 50))
    r1 = t(image, label, torch.Generator().manual_seed(9))
    r2 = t(image, label, torch.Generator().manual_seed(9))
    r3 = t(image, label, torch.Generator().manual_seed(10))
    assert torch.equal(r1[0], r2[0]) and torch.equal(r1[1], r2[1])
    assert not torch.equal(r1[0], r3[0])
    scenes = FashionScenes("train", num_scenes=8, root=split_marked_idx)
    aug = SegAugmentedDataset(scenes, SegTrainTransform(crop_size=128, img_scale=(512, 128)), seed=1)
    again = SegAugmentedDataset(scenes, SegTrainTransform(crop_size=128, img_scale=(512, 128)), seed=1)
    assert torch.equal(aug[5][1], again[5][1]) and aug.num_classes == 11
    before = aug[5][0]
    aug.set_epoch(1)
    assert not torch.equal(aug[5][0], before)


def test_cat_max_ratio_caps_the_largest_class():
    # class 1 on a 40x40 square of a 128x128 map of class 0: most 64x64 crops hold class 0 only
    label = torch.zeros(128, 128, dtype=torch.long)
    label[40:80, 40:80] = 1
    label[:, :8] = 255  # ignored pixels do not count in the shares

    def share(box):
        crop = label[box[0]:box[1], box[2]:box[3]]
        counts = torch.bincount(crop.flatten(), minlength=256)[:2]  # 255 (ignored) left out
        return float(counts.max()) / float(counts.sum()), int((counts > 0).sum())

    capped = [share(random_crop_box(label, (64, 64), 0.75, 255, torch.Generator().manual_seed(s))) for s in range(60)]
    free = [share(random_crop_box(label, (64, 64), 1.0, 255, torch.Generator().manual_seed(s))) for s in range(60)]
    assert sum(s >= 0.75 or n < 2 for s, n in free) >= 12  # the check has something to reject
    assert sum(s < 0.75 and n >= 2 for s, n in capped) >= 57  # only an 11th unchecked draw may fail
    # a single-class map still gets a box after the tries
    box = random_crop_box(torch.zeros(70, 70, dtype=torch.long), (64, 64), 0.75, 255, torch.Generator().manual_seed(0))
    assert box[1] - box[0] == 64 and box[3] - box[2] == 64


def test_rescale_size_as_mmcv():
    assert rescale_size(512, 683, (2048, 512)) == (512, 683)
    assert rescale_size(512, 683, (1024, 256)) == (256, 342)  # 683 * 0.5 + 0.5 -> 342
    assert rescale_size(300, 2000, (2048, 512)) == (307, 2048)  # the long edge binds: 2048 / 2000
    assert rescale_size(128, 128, (768, 192)) == (192, 192)


def test_rescale_for_eval_keeps_the_aspect_ratio():
    image = torch.full((3, 100, 150), 77, dtype=torch.uint8)
    out = rescale_for_eval(image, (300, 50))  # factor min(300 / 150, 50 / 100) = 0.5
    assert out.shape == (3, 50, 75) and (out == 77).all()
    assert rescale_for_eval(image, (150, 100)) is image


def test_photometric_distortion():
    grey = torch.arange(100, 164, dtype=torch.uint8).view(1, 8, 8)
    neutral = SegAugmentConfig(brightness_delta=0.0, contrast_range=(1, 1), saturation_range=(1, 1), hue_delta=0)
    rgb = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for s in range(5):
        assert torch.equal(photometric_distortion(grey, neutral, torch.Generator().manual_seed(s)), grey)
        out = photometric_distortion(rgb, neutral, torch.Generator().manual_seed(s))
        assert (out.int() - rgb.int()).abs().max() <= 1  # HSV round trip only
    bright = SegAugmentConfig(brightness_delta=32.0, contrast_range=(1, 1))
    shifts = set()
    for s in range(12):
        out = photometric_distortion(grey, bright, torch.Generator().manual_seed(s)).int() - grey.int()
        assert out.max() - out.min() <= 1 and out.abs().max() <= 32  # one shift for all pixels (truncation aside)
        shifts.add(int(out[0, 0, 0]))
    assert 0 in shifts and len(shifts) >= 3
    # hue moves colours of an RGB image but never a grey one (3 equal channels)
    hue = SegAugmentConfig(brightness_delta=0.0, contrast_range=(1, 1), saturation_range=(1, 1))
    grey3 = grey.expand(3, 8, 8).contiguous()
    changed = 0
    for s in range(8):
        def moved(img, s=s):
            return (photometric_distortion(img, hue, torch.Generator().manual_seed(s)).int() - img.int()).abs().max()

        assert moved(grey3) <= 1
        changed += int(moved(rgb) > 2)
    assert changed >= 1


def test_augment_bad_input():
    with pytest.raises(ValueError, match="cat_max_ratio=0"):
        SegAugmentConfig(cat_max_ratio=0)
    with pytest.raises(ValueError, match="ratio_range"):
        SegAugmentConfig(ratio_range=(2.0, 0.5))
    t = SegTrainTransform(crop_size=8)
    with pytest.raises(TypeError, match="image must be a uint8 tensor"):
        t(torch.zeros(1, 8, 8), torch.zeros(8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="differ in size"):
        t(torch.zeros(1, 8, 8, dtype=torch.uint8), torch.zeros(8, 9, dtype=torch.long))
