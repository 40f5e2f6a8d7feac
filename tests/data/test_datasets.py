import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from hilovit.data import (
    FASHION_MNIST_CLASSES,
    IMAGENET_MEAN,
    IdxDataset,
    ImageFolderDataset,
    UnreadableImageError,
    build_datasets,
    compute_mean_std,
    find_idx_dir,
    split_indices,
    write_idx,
)
from hilovit.data import idx as idx_mod

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def make_idx_dir(folder, n_train=30, n_test=12, size=(6, 5), gz=True, train_labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        imgs = rng.integers(0, 256, size=(n, *size), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        if split == "train" and train_labels is not None:
            labels = np.asarray(train_labels, np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(folder / (NAMES[split][0] + suffix), imgs)
        write_idx(folder / (NAMES[split][1] + suffix), labels)
    return folder


@pytest.fixture
def no_default_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("HILOVIT_DATA_DIR", raising=False)
    monkeypatch.setattr(idx_mod, "DEFAULT_IDX_DIR", tmp_path / "no-default")


# ----------------------------------------------------------------------------- find_idx_dir / IdxDataset
def test_find_idx_dir_order(tmp_path, monkeypatch, no_default_dir):
    a = make_idx_dir(tmp_path / "a")
    b = make_idx_dir(tmp_path / "b", gz=False)
    assert find_idx_dir(a) == a
    monkeypatch.setenv("HILOVIT_DATA_DIR", str(b))
    assert find_idx_dir() == b
    assert find_idx_dir(a) == a  # the explicit argument wins over the environment


def test_find_idx_dir_missing_names_folders(tmp_path, monkeypatch, no_default_dir):
    monkeypatch.setenv("HILOVIT_DATA_DIR", str(tmp_path / "env-dir"))
    with pytest.raises(FileNotFoundError) as e:
        find_idx_dir()
    msg = str(e.value)
    assert "env-dir" in msg and "no-default" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-dir" in msg
    partial = tmp_path / "partial"
    partial.mkdir()
    write_idx(partial / "train-images-idx3-ubyte", np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="partial"):
        find_idx_dir(partial)


def test_idx_dataset_synthetic(tmp_path):
    root = make_idx_dir(tmp_path / "digits", size=(6, 5))
    ds = IdxDataset(root, "train")
    assert len(ds) == 30 and ds.images.shape == (30, 1, 6, 5) and ds.images.dtype == torch.uint8
    assert ds.targets.dtype == torch.int64
    assert ds.classes == [str(i) for i in range(10)]
    x, y = ds[3]
    assert x.shape == (1, 6, 5) and x.dtype == torch.uint8 and y == 3
    assert len(IdxDataset(root, "test")) == 12
    sub = IdxDataset(root, "train", subset=7)
    assert len(sub) == 7 and torch.equal(sub.images, ds.images[:7])
    picked = IdxDataset(root, "train", subset=[5, 1])
    assert picked.targets.tolist() == [5, 1]
    named = IdxDataset(root, "test", classes=list("abcdefghij"))
    assert named.classes[named[2][1]] == "c"
    with pytest.raises(ValueError, match="split='val'"):
        IdxDataset(root, "val")


def test_idx_dataset_fashion_folder_names(tmp_path):
    root = make_idx_dir(tmp_path / "my-fashion-copy")
    assert IdxDataset(root, "test").classes == FASHION_MNIST_CLASSES


def test_idx_dataset_label_errors(tmp_path):
    root = make_idx_dir(tmp_path / "bad", train_labels=[0] * 29 + [12])
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        IdxDataset(root, "train", classes=["a", "b", "c"])
    assert len(IdxDataset(root, "train").classes) == 13  # default names cover the labels present
    write_idx(root / (NAMES["test"][1] + ".gz"), np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="12 images but .* 5 labels"):
        IdxDataset(root, "test")


def test_compute_mean_std_exact():
    imgs = torch.randint(0, 256, (4, 2, 5, 3), dtype=torch.uint8)
    mean, std = compute_mean_std(imgs)
    ref = imgs.double() / 255
    assert mean == pytest.approx(ref.mean((0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(ref.std((0, 2, 3), unbiased=False).tolist(), abs=1e-12)


def test_build_datasets_idx_folder(tmp_path):
    root = make_idx_dir(tmp_path / "mnistish", n_train=40)
    train, test, info = build_datasets(str(root), img_size=28)
    assert (len(train), len(test), info.in_chans, info.num_classes) == (40, 12, 1, 10)
    assert info.input_size == (1, 6, 5) and info.eval_split == "test"
    train, val, info = build_datasets(root, 28, val_split=0.25, seed=3, train_subset=5)
    assert len(train) == 5 and len(val) == 10 and info.eval_split == "holdout"


@pytest.fixture(scope="module")
def fashion():
    if not FASHION_DIR.is_dir():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    return build_datasets("fashion-mnist", 28, data_dir=FASHION_DIR)


def test_real_fashion_mnist(fashion):
    train, test, info = fashion
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert torch.bincount(train.targets, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test.targets, minlength=10).tolist() == [1000] * 10
    assert info.classes == tuple(FASHION_MNIST_CLASSES) and test.classes == FASHION_MNIST_CLASSES
    assert info.name == "fashion-mnist" and info.in_chans == 1 and info.num_classes == 10
    assert info.mean[0] == pytest.approx(0.2860, abs=1e-3)
    assert info.std[0] == pytest.approx(0.3530, abs=1e-3)
    assert test.classes[test[0][1]] == "Ankle boot"


# ----------------------------------------------------------------------------- image folders
def _rgb(w, h, color):
    return Image.new("RGB", (w, h), color)


def make_image_folder(root, with_bad=True):
    cats, dogs = root / "cat", root / "dog"
    cats.mkdir(parents=True)
    dogs.mkdir(parents=True)
    _rgb(40, 30, (255, 0, 0)).save(cats / "a.png")
    _rgb(30, 40, (0, 255, 0)).save(cats / "b.jpg", quality=95)
    Image.new("L", (20, 20), 128).save(cats / "grey.png")
    rgba = Image.new("RGBA", (20, 20), (0, 0, 255, 0))  # fully transparent -> white
    rgba.save(cats / "clear.png")
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    pal.save(dogs / "pal.gif")
    _rgb(25, 25, (0, 0, 255)).save(dogs / "c.bmp")
    _rgb(25, 25, (0, 0, 255)).save(dogs / "d.webp")
    _rgb(25, 25, (9, 9, 9)).save(dogs / "e.tiff")
    (dogs / "notes.txt").write_text("ignored: not an image extension")
    _rgb(8, 8, (1, 2, 3)).save(dogs / ".hidden.png")
    if with_bad:
        (dogs / "text.jpg").write_text("this is not a JPEG")
        blob = (root / "cat" / "a.png").read_bytes()
        (cats / "cut.png").write_bytes(blob[: len(blob) // 2])
        big = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        big.save(dogs / "cutjpeg.jpg", quality=90)
        blob = (dogs / "cutjpeg.jpg").read_bytes()
        (dogs / "cutjpeg.jpg").write_bytes(blob[: len(blob) // 2])
    return root


def test_image_folder_formats_and_skips(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    with pytest.warns(UserWarning, match=r"skipped 3 unreadable") as rec:
        ds = ImageFolderDataset(root, img_size=8, verify=True)
    msg = str(rec[0].message)
    assert "cut.png" in msg and "text.jpg" in msg and "cutjpeg.jpg" in msg
    assert ds.classes == ["cat", "dog"]
    names = sorted(p.name for p, _ in ds.samples)
    assert names == ["a.png", "b.jpg", "c.bmp", "clear.png", "d.webp", "e.tiff", "grey.png", "pal.gif"]
    assert sorted(p.name for p in ds.skipped) == ["cut.png", "cutjpeg.jpg", "text.jpg"]
    by_name = {p.name: i for i, (p, _) in enumerate(ds.samples)}
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 8, 8) and x.dtype == torch.uint8 and y in (0, 1)
    assert ds[by_name["a.png"]][0][:, 4, 4].tolist() == [255, 0, 0]
    assert ds[by_name["grey.png"]][0][:, 0, 0].tolist() == [128, 128, 128]
    assert ds[by_name["clear.png"]][0].eq(255).all()  # transparency on white
    assert ds[by_name["pal.gif"]][0][:, 3, 3].tolist() == [10, 20, 30]
    assert ds[by_name["pal.gif"]][1] == 1 and ds.targets.tolist().count(0) == 4


def test_image_folder_strict(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    with pytest.raises(UnreadableImageError, match=r"cut\.png|text\.jpg|cutjpeg\.jpg"):
        ImageFolderDataset(root, img_size=8, strict=True, verify=True)


def test_image_folder_load_time_failure(tmp_path):
    root = make_image_folder(tmp_path / "pets")
    ds = ImageFolderDataset(root, img_size=8)  # bad files pass the listing only (no file opened)
    bad = next(i for i, (p, _) in enumerate(ds.samples) if p.name == "text.jpg")
    nxt = (bad + 1) % len(ds)
    assert ds.samples[nxt][0].name == "a.png"  # text.jpg is the last file; the next one wraps around
    with pytest.warns(UserWarning, match="text.jpg"):
        x, _ = ds[bad]
    assert torch.equal(x, ds[nxt][0])
    strict = ImageFolderDataset(root, img_size=8, verify=False, strict=True)
    with pytest.raises(UnreadableImageError, match="text.jpg"):
        strict[bad]


def test_center_crop_keeps_aspect(tmp_path):
    root = tmp_path / "crop"
    (root / "k").mkdir(parents=True)
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (255, 0, 0)
    img[:, 20:] = (0, 0, 255)
    Image.fromarray(img).save(root / "k" / "wide.png")
    x, _ = ImageFolderDataset(root, img_size=8)[0]
    # centre square = columns 10..30: left half red, right half blue
    assert x[:, :, :3].tolist() == [[[255] * 3] * 8, [[0] * 3] * 8, [[0] * 3] * 8]
    assert x[:, :, 5:].tolist() == [[[0] * 3] * 8, [[0] * 3] * 8, [[255] * 3] * 8]


def test_image_folder_empty_errors(tmp_path):
    root = make_image_folder(tmp_path / "pets", with_bad=False)
    (root / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty.*no image files"):
        ImageFolderDataset(root, img_size=8)
    bare = tmp_path / "bare"
    bare.mkdir()
    _rgb(4, 4, (0, 0, 0)).save(bare / "loose.png")
    with pytest.raises(ValueError, match="bare.*no class subfolders"):
        ImageFolderDataset(bare, img_size=8)
    onlybad = tmp_path / "onlybad"
    (onlybad / "x").mkdir(parents=True)
    (onlybad / "x" / "fake.png").write_text("nope")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no readable images"):
        ImageFolderDataset(onlybad, img_size=8, verify=True)


def test_dataloader_batches(tmp_path):
    root = make_image_folder(tmp_path / "pets", with_bad=False)
    ds = ImageFolderDataset(root, img_size=8)
    x, y = next(iter(DataLoader(ds, batch_size=4, shuffle=False)))
    assert x.shape == (4, 3, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.int64


def _class_tree(root, classes=("a", "b", "c"), per_class=10):
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            _rgb(6, 6, (k * 50, i, 0)).save(root / name / f"{i:02d}.png")
    return root


def test_build_datasets_train_val_layout(tmp_path):
    root = tmp_path / "tv"
    _class_tree(root / "train", per_class=4)
    _class_tree(root / "val", per_class=2)
    train, val, info = build_datasets(str(root), img_size=12)
    assert (len(train), len(val)) == (12, 6)
    assert info.classes == ("a", "b", "c") and info.in_chans == 3 and info.input_size == (3, 12, 12)
    assert info.mean == IMAGENET_MEAN and info.eval_split == "val"
    assert train[0][0].shape == (3, 12, 12)
    with pytest.raises(ValueError, match="val_split=0.2 must be 0"):
        build_datasets(root, img_size=12, val_split=0.2)
    (root / "val" / "d").mkdir()
    with pytest.raises(ValueError, match=r"only in val: \['d'\]"):
        build_datasets(root, img_size=12)


def test_build_datasets_val_split_layout(tmp_path):
    root = _class_tree(tmp_path / "single", per_class=10)
    train, val, info = build_datasets(root, img_size=8, val_split=0.2, seed=1, mean=(0.5,), std=(0.25,))
    assert (len(train), len(val)) == (24, 6)
    assert torch.bincount(val.targets).tolist() == [2, 2, 2]  # stratified
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    assert info.mean == (0.5, 0.5, 0.5) and info.std == (0.25, 0.25, 0.25) and info.eval_split == "holdout"
    again = build_datasets(root, img_size=8, val_split=0.2, seed=1)[1]
    other = build_datasets(root, img_size=8, val_split=0.2, seed=2)[1]
    assert again.samples == val.samples and other.samples != val.samples
    sub = build_datasets(root, img_size=8, val_split=0.2, seed=1, train_subset=5)[0]
    assert len(sub) == 5 and {p for p, _ in sub.samples} <= {p for p, _ in train.samples}
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="val_split"):
            build_datasets(root, img_size=8, val_split=bad)


def test_build_datasets_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"cifar-11.*'fashion-mnist'.*folder"):
        build_datasets("cifar-11", img_size=32)
    with pytest.raises(ValueError, match="train_subset"):
        build_datasets("fashion-mnist", img_size=28, train_subset=0)


def test_split_indices_deterministic():
    t = np.repeat(np.arange(4), 25)
    a = split_indices(t, 0.2, seed=0)
    b = split_indices(t, 0.2, seed=0)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert np.bincount(t[a[1]]).tolist() == [5, 5, 5, 5]
    assert sorted(np.concatenate(a).tolist()) == list(range(100))


def test_no_warning_for_clean_folder(tmp_path):
    root = make_image_folder(tmp_path / "pets", with_bad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ImageFolderDataset(root, img_size=8)
