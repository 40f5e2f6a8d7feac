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
