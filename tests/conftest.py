import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

# ../shared beside the clone (CI) or beside the working tree.
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("HILOVIT_FIXTURES", ROOT.parent / "shared" / "fixtures"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"reference fixtures not found at {FIXTURES}")
    return FIXTURES


# --------------------------------------------------------------------------- training data and hooks
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
SEG_SHADES = (20, 130, 240)  # the grey level of each class in make_mask_folder's images



def make_idx_dataset(folder: Path, n_train: int = 128, n_test: int = 48, size: int = 28, seed: int = 0) -> Path:
    """Four IDX files of noisy class-dependent patterns (a bright bar whose position is the label)."""
    from hilovit.data import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        images = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
        for i, c in enumerate(labels):
            row = 2 + int(c) * (size - 4) // 10
            images[i, row:row + 2, 3:size - 3] = 230
        write_idx(folder / names[split][0], images)
        write_idx(folder / names[split][1], labels)
    return folder


def make_mask_folder(root: Path, n_train: int = 24, n_val: int = 6, size: int = 24, seed: int = 0) -> Path:
    """train/ and val/ splits of RGB images made of class-shaded blocks (3 classes, 6x6-pixel blocks,
    :data:`SEG_SHADES`), their grey masks with some pixels labelled 255."""
    rng = np.random.default_rng(seed)
    from PIL import Image

    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            lab = np.kron(rng.integers(0, len(SEG_SHADES), (size // 6, size // 6)), np.ones((6, 6), np.int64))
            img = np.array(SEG_SHADES)[lab] + rng.integers(-15, 16, lab.shape)
            lab[rng.random(lab.shape) < 0.05] = 255
            Image.fromarray(np.repeat(img.clip(0, 255).astype(np.uint8)[:, :, None], 3, 2)).save(
                root / split / "images" / f"s{i:03d}.png")
            Image.fromarray(lab.astype(np.uint8), "L").save(root / split / "masks" / f"s{i:03d}.png")
    return root


def make_image_folder(root: Path, classes=("cat", "dog", "owl"), per_class: int = 6, size=(40, 36),
                      seed: int = 0) -> Path:
    """``root/<class>/<i>.png``: noisy RGB images whose mean colour depends on the class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            base = np.array([70 * k % 256, 40 + 30 * k % 200, 200 - 50 * k % 200], np.int64)
            arr = (base + rng.integers(-20, 21, (size[1], size[0], 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    return make_idx_dataset(tmp_path_factory.mktemp("idx") / "synthetic")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    from hilovit.data import find_idx_dir

    try:
        return find_idx_dir()
    except FileNotFoundError:
        pytest.skip(f"Fashion-MNIST not installed (HILOVIT_DATA_DIR or {FASHION_DIR}; run `make data`)")


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """Training with ``threads=`` sets torch's global thread count: put it back for the other tests."""
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def kill_metrics_write(monkeypatch):
    """``kill_metrics_write(module, name, at_rows=2)`` makes ``module.name`` (a metrics-file writer
    ``(path, rows, ...)``) raise KeyboardInterrupt when asked to write ``at_rows`` rows: a run killed after
    saving that epoch's checkpoint and before its metrics file. Returns the real writer, to put
    back with ``monkeypatch.setattr``."""

    def install(module, name: str, at_rows: int = 2):
        real = getattr(module, name)

        def killed(path, rows, *args):
            if len(rows) == at_rows:
                raise KeyboardInterrupt("killed after last.pt, before metrics.csv")
            real(path, rows, *args)

        monkeypatch.setattr(module, name, killed)
        return real

    return install


def make_coco_folder(root: Path, classes, per_split: int = 2, size: int = 40) -> Path:
    """A COCO-format folder: ``annotations/instances_{train,val}.json`` and ``{train,val}/`` with one box per
    image, of the categories ``classes``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(classes)]
    for split in ("train", "val"):
        (root / split).mkdir()
        images, annotations = [], []
        for k in range(per_split):
            name = f"{split}{k}.png"
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / split / name)
            images.append({"id": k + 1, "file_name": name, "height": size, "width": size})
            annotations.append({"id": k + 1, "image_id": k + 1, "category_id": 1 + k % len(classes),
                                "bbox": [4, 4, 20, 16], "area": 320, "iscrowd": 0})
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return root
