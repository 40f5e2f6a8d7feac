"""Image folders at ImageNet scale: lazy listing, skipped files handed back from workers, crops of the
full image, the evaluation protocol, and the shipped ImageNet-1k class names."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

import hilovit.data.folders as folders
from hilovit.data import (
    AugmentConfig,
    ImageFolderDataset,
    imagenet_class_names,
    imagenet_label_indices,
    imagenet_wnids,
    random_resized_crop_box,
    resize_center_crop,
)
from hilovit.train.loaders import BatchPipeline, EvalBatches, TrainBatches, crop_in_workers, report_skipped_images

REPO = Path(__file__).resolve().parents[2]


def _x_ramp(width=256, height=64):
    """RGB image whose red value is the column index x (0..255), green the row index."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[..., 0] = np.arange(width, dtype=np.uint8)[None, :]
    arr[..., 1] = np.arange(height, dtype=np.uint8)[:, None]
    return Image.fromarray(arr)


def _folder(root, per_class=3, bad=None):
    for k, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 10), (k * 100 + i, 7, 9)).save(root / name / f"{i}.png")
    if bad is not None:
        (root / "b" / bad).write_bytes(b"not an image at all")
    return root


# --------------------------------------------------------------------------- ImageNet-1k classes
def test_imagenet_classes_are_the_label_order():
    wnids, names = imagenet_wnids(), imagenet_class_names()
    assert len(wnids) == len(set(wnids)) == 1000 and len(names) == 1000
    assert wnids == sorted(wnids)  # label order == sorted WordNet ids == sorted val/<wnid> folders
    known = {0: ("n01440764", "tench"), 1: ("n01443537", "goldfish"), 207: ("n02099601", "golden retriever"),
             281: ("n02123045", "tabby"), 948: ("n07742313", "Granny Smith"), 999: ("n15075141", "toilet tissue")}
    for i, (wnid, name) in known.items():
        assert (wnids[i], names[i]) == (wnid, name)
    assert imagenet_class_names(full=True)[0] == "tench, Tinca tinca"
    assert imagenet_label_indices(["n15075141", "goldfish", "tench, Tinca tinca"]) == [999, 1, 0]
    assert imagenet_label_indices(["crane"]) is None  # two classes share the name
    assert imagenet_label_indices(["cat", "dog"]) is None


def test_class_list_is_package_data():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "imagenet_classes.txt" in cfg["tool"]["setuptools"]["package-data"]["hilovit.data"]
    assert (REPO / "src/hilovit/data/imagenet_classes.txt").is_file()


# --------------------------------------------------------------------------- listing without opening
def test_construction_opens_no_file(tmp_path, monkeypatch):
    root = _folder(tmp_path / "f")
    calls = []
    real_open = Image.open

    def counting_open(*args, **kwargs):
        calls.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    ds = ImageFolderDataset(root, img_size=8)
    assert len(ds) == 6 and calls == []
    ds[4]
    assert len(calls) == 1 and Path(calls[0]) == ds.samples[4][0]


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_file_is_skipped_and_reported_with_its_path(tmp_path, workers):
    root = _folder(tmp_path / "f", bad="broken.jpg")
    ds = ImageFolderDataset(root, img_size=8)  # listed: the broken file is not found out yet
    bad = root / "b" / "broken.jpg"
    assert any(p == bad for p, _ in ds.samples)
    train = TrainBatches(ds, batch_size=7, workers=workers, shuffle=False)
    with pytest.warns(UserWarning, match="broken.jpg") if workers == 0 else _no_check():
        (images, targets), = list(train)
    # training: every index gives an image; the bad file is the last one, so the first (a/0.png) stands in
    assert ds.samples[6][0] == bad
    assert targets.tolist() == [0, 0, 0, 1, 1, 1, 0] and torch.equal(images[6], images[0])
    assert report_skipped_images(lambda _: None, train) == [str(bad)]
    ds.failed.clear()
    batches = EvalBatches(ds, batch_size=3, workers=workers)
    with pytest.warns(UserWarning, match="broken.jpg") if workers == 0 else _no_check():
        seen = torch.cat([y for _, y in batches])
    # evaluation: every readable image exactly once, the stand-in left out
    assert seen.tolist() == [0, 0, 0, 1, 1, 1]
    printed = []
    assert report_skipped_images(printed.append, batches) == [str(bad)]
    assert len(printed) == 1 and "skipped 1 unreadable image file" in printed[0] and str(bad) in printed[0]
    assert bad in ds.failed  # remembered in this process: the next pass's workers skip it without decoding
    assert report_skipped_images(printed.append, batches) == [] and len(printed) == 1  # reported once
    list(batches)
    assert report_skipped_images(printed.append, batches) == [str(bad)]  # met again in the next epoch


class _no_check:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- crops of the full image
def test_random_resized_crop_box_arithmetic():
    torch.manual_seed(0)
    assert random_resized_crop_box(256, 64, scale=(1.0, 1.0), ratio=(4.0, 4.0)) == (0, 0, 256, 64)
    lefts, rights = [], []
    for _ in range(400):
        left, top, w, h = random_resized_crop_box(256, 64, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        assert 0 <= left and left + w <= 256 and 0 <= top and top + h <= 64 and w > 0 and h > 0
        assert 0.08 * 256 * 64 * 0.8 <= w * h <= 256 * 64  # area within scale (rounding aside)
        assert 3 / 4 * 0.8 <= w / h <= 4 / 3 * 1.25
        lefts.append(left)
        rights.append(left + w)
    # a centre square of the 256 x 64 picture spans columns 96..160 only; the full image is reachable
    assert min(lefts) < 16 and max(rights) > 240
    # no crop fits (ratio far from the image's): the centre with the aspect clamped into the range
    assert random_resized_crop_box(100, 10, scale=(1.0, 1.0), ratio=(1.0, 1.0)) == (45, 0, 10, 10)


def test_training_sample_is_a_crop_of_the_full_image(tmp_path):
    (tmp_path / "k").mkdir()
    _x_ramp().save(tmp_path / "k" / "wide.png")
    ds = ImageFolderDataset(tmp_path, img_size=32, interpolation="nearest")
    centre = ds[0][0][0].float()  # evaluation sample: the centre 64 x 64 square (columns 96..159)
    assert centre.min() >= 96 and centre.max() <= 159
    ds.set_train_crop(scale=(1.0, 1.0), ratio=(4.0, 4.0))  # the whole 256 x 64 picture, squeezed
    x = ds[0][0][0].float()
    # nearest: output column j shows source column floor((j + 0.5) * 256 / 32) = 8 j + 4
    assert x[0].tolist() == [8.0 * j + 4 for j in range(32)]
    ds.set_train_crop(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    for seed in range(5):  # the sample is exactly the resize of the drawn box
        torch.manual_seed(seed)
        got = ds[0][0]
        torch.manual_seed(seed)
        left, top, w, h = random_resized_crop_box(256, 64, (0.08, 1.0), (3 / 4, 4 / 3))
        ref = _x_ramp().resize((32, 32), Image.NEAREST, box=(left, top, left + w, top + h))
        assert torch.equal(got, torch.from_numpy(np.array(ref)).permute(2, 0, 1))
        cols = got[0, 0].float()
        assert abs(cols[0] - (left + w / 64)) <= 1 and abs(cols[-1] - (left + w - w / 64)) <= 1


def test_crop_moves_into_the_workers_once(tmp_path):
    root = _folder(tmp_path / "f")
    ds = ImageFolderDataset(root, img_size=8)
    pipe = BatchPipeline(3, 8, (0.5,), (0.5,), AugmentConfig(scale=(0.5, 1.0), ratio=(0.9, 1.1), hflip=False))
    assert crop_in_workers(ds, pipe)
    assert ds.train_crop == ((0.5, 1.0), (0.9, 1.1)) and pipe.augment.crop_in_loader
    pipe.train()
    images, _ = next(iter(TrainBatches(ds, 4, seed=0)))
    # the device side no longer crops: only scaling and normalisation remain
    torch.testing.assert_close(pipe(images), (images.float() / 255 - 0.5) / 0.5)
    idx = TensorDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4))  # no crop of its own
    pipe2 = BatchPipeline(1, 8, (0.5,), (0.5,), AugmentConfig())
    assert not crop_in_workers(idx, pipe2) and not pipe2.augment.crop_in_loader
    off = BatchPipeline(3, 8, (0.5,), (0.5,), AugmentConfig.off())
    assert not crop_in_workers(ImageFolderDataset(root, img_size=8), off)


# --------------------------------------------------------------------------- the evaluation protocol
def test_resize_center_crop_geometry():
    # 240 x 160, size 64, crop_pct 0.875: shorter side int(64 / 0.875) = 73, longer int(73 * 240 / 160) = 109,
    # crop offsets round(45 / 2) = 22 (columns) and round(9 / 2) = 4 (rows)
    img = _x_ramp(240, 160)
    out = resize_center_crop(img, 64, crop_pct=0.875, interpolation="nearest")
    assert out.size == (64, 64)
    arr = np.asarray(out).astype(int)
    for j in (0, 31, 63):
        assert abs(arr[0, j, 0] - math.floor((j + 22 + 0.5) * 240 / 109)) <= 1
    for i in (0, 63):
        assert abs(arr[i, 0, 1] - math.floor((i + 4 + 0.5) * 160 / 73)) <= 1
    ref = np.asarray(img.resize((109, 73), Image.BICUBIC))[4:68, 22:86]
    assert np.array_equal(np.asarray(resize_center_crop(img, 64, 0.875, "bicubic")), ref)
    with pytest.raises(ValueError, match="crop_pct"):
        resize_center_crop(img, 64, crop_pct=1.5)
    with pytest.raises(ValueError, match="interpolation"):
        resize_center_crop(img, 64, interpolation="cubic")


def test_eval_dataset_uses_crop_pct_and_interpolation(tmp_path):
    (tmp_path / "k").mkdir()
    _x_ramp(240, 160).save(tmp_path / "k" / "im.png")
    ds = ImageFolderDataset(tmp_path, img_size=64, crop_pct=0.875, interpolation="bicubic")
    ref = np.asarray(_x_ramp(240, 160).resize((109, 73), Image.BICUBIC))[4:68, 22:86]
    assert torch.equal(ds[0][0], torch.from_numpy(ref.copy()).permute(2, 0, 1))
    assert folders.pil_interpolation("Bicubic") == Image.Resampling.BICUBIC
    assert "crop_pct=0.875" in repr(ds)


# --------------------------------------------------------------------------- reduced-scale JPEG decoding
def _photo_jpeg(path, width=1024, height=768):
    """A smooth picture with mild noise, saved as a JPEG (what draft mode is for)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    arr = np.stack([x / width * 255, y / height * 255, 128 + 90 * np.sin(x / 23) * np.cos(y / 31)], -1)
    arr += np.random.default_rng(0).normal(0, 4, arr.shape)
    Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def test_reduce_jpeg_decode_takes_the_largest_factor_the_room_allows(tmp_path):
    jpg = _photo_jpeg(tmp_path / "p.jpg")
    for room, factor in ((1.0, 1), (1.9, 1), (2.0, 2), (3.99, 2), (4.3, 4), (7.9, 4), (8.0, 8), (50.0, 8)):
        with Image.open(jpg) as im:
            assert folders.reduce_jpeg_decode(im, room) == factor
            im.load()
            assert im.size == (-(-1024 // factor), -(-768 // factor))
    Image.open(jpg).convert("RGB").save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as im:  # not a JPEG: decoded whole
        assert folders.reduce_jpeg_decode(im, 8.0) == 1 and im.size == (1024, 768)


@pytest.mark.parametrize("kind", ["train", "eval"])
def test_reduced_decoding_gives_the_same_crop(tmp_path, kind, monkeypatch):
    """Draft mode changes how the pixels are decoded, not which part of the picture is taken: the
    sample matches the full decode's within JPEG-level differences, crop box for crop box."""
    (tmp_path / "k").mkdir()
    _photo_jpeg(tmp_path / "k" / "p.jpg")
    reduced = ImageFolderDataset(tmp_path, img_size=64, draft="all", crop_pct=0.875)
    full = ImageFolderDataset(tmp_path, img_size=64, draft="off", crop_pct=0.875)
    if kind == "train":
        reduced.set_train_crop(), full.set_train_crop()
    factors = []
    real = folders.reduce_jpeg_decode
    monkeypatch.setattr(folders, "reduce_jpeg_decode", lambda im, room: factors.append(real(im, room)) or factors[-1])
    for seed in range(6):
        torch.manual_seed(seed)
        a = reduced[0][0].float()
        torch.manual_seed(seed)
        b = full[0][0].float()
        assert a.shape == b.shape == (3, 64, 64)
        assert (a - b).abs().mean() < 4.0, f"seed {seed}: mean difference {(a - b).abs().mean():.2f}"
    assert max(factors[0::2]) >= 2 and set(factors[1::2]) == {1}  # the reduced set decoded smaller, the other not
    if kind == "eval":  # 768 / (64 / 0.875) = 10.5: 1/8 scale keeps the centre crop's pixels
        assert factors[0] == 8


def test_default_reduces_training_crops_only(tmp_path, monkeypatch):
    (tmp_path / "k").mkdir()
    _photo_jpeg(tmp_path / "k" / "p.jpg")
    ds = ImageFolderDataset(tmp_path, img_size=64)
    assert ds.draft == "train"
    seen = []
    real = folders.reduce_jpeg_decode
    monkeypatch.setattr(folders, "reduce_jpeg_decode", lambda im, room: seen.append(room) or real(im, room))
    ds[0]  # evaluation: no room offered, the reference protocol decodes the whole image
    ds.set_train_crop(scale=(0.5, 1.0))
    ds[0]
    assert seen[0] == 1.0 and seen[1] >= 768 * math.sqrt(0.5 * 3 / 4) / 64 - 1
    with pytest.raises(ValueError, match="draft='sometimes'"):
        ImageFolderDataset(tmp_path, img_size=64, draft="sometimes")
