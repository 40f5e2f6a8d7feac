"""hilovit eval: metrics, per-class accuracy, JSON, the confusion-matrix picture."""

import json

import pytest
import torch
import torch.nn as nn

from hilovit.cli import main
from hilovit.tasks.classification_eval import evaluate, run_eval
from hilovit.train import BatchPipeline, train


class _Fixed(nn.Module):
    """Returns preset logits for the batch, whatever the images."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.i = 0

    def forward(self, x):
        out = self.logits[self.i: self.i + x.shape[0]]
        self.i += x.shape[0]
        return out


def test_evaluate_counts_exactly():
    # 6 images, 3 classes; predictions: 0->0, 0->1, 1->1, 1->1, 2->0, 2->2
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.tensor([[3., 1, 0], [1, 3, 0], [0, 3, 1], [0, 3, 1], [3, 0, 2], [0, 1, 3]])
    images = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    batches = [(images[:4], targets[:4]), (images[4:], targets[4:])]
    pipe = BatchPipeline(1, 4, [0.5], [0.5])
    r = evaluate(_Fixed(logits), batches, pipe, 3, torch.device("cpu"))
    assert r["n"] == 6
    assert r["top1"] == pytest.approx(400 / 6)
    assert r["top5_k"] == 3 and r["top5"] == 100.0
    assert r["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert r["per_class_accuracy"] == [50.0, 100.0, 50.0]
    assert r["loss"] == pytest.approx(float(nn.functional.cross_entropy(logits, targets)))


@pytest.fixture(scope="module")
def tiny_run(idx_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    train(model="litv2_nano", data=str(idx_dir), epochs=1, batch_size=32, eval_subset=16, progress="off",
          threads=1, output=str(out))
    return out


def test_run_eval_writes_json_and_confusion_png(tiny_run, idx_dir, tmp_path):
    out = tmp_path / "eval"
    r = run_eval("litv2_nano", tiny_run, data=str(idx_dir), output=str(out), threads=1, progress="off")
    assert r["n"] == 48 and 0 <= r["top1"] <= r["top5"] <= 100
    assert r["classes"] == [str(i) for i in range(10)]
    assert set(r["per_class"]) == set(r["classes"])
    assert r["images_per_second"] > 0
    assert sum(map(sum, r["confusion"])) == 48
    png = out / "confusion.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "eval.json").read_text())["top1"] == pytest.approx(r["top1"])
    # last.pt and model.safetensors hold the same final weights
    r2 = run_eval("litv2_nano", tiny_run / "last.pt", data=str(idx_dir), threads=1, progress="off")
    assert r2["top1"] == r["top1"] and r2["loss"] == pytest.approx(r["loss"], abs=1e-6)


def test_cli_eval_json(tiny_run, idx_dir, tmp_path, capsys):
    png = tmp_path / "cm.png"
    rc = main(["eval", "--model", "litv2_nano", "--checkpoint", str(tiny_run / "model.safetensors"),
               "--data", str(idx_dir), "--eval-subset", "20", "--json", "--confusion-png", str(png),
               "--threads", "1", "--progress", "off"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("top1", "top5", "loss", "per_class", "images_per_second", "confusion"):
        assert key in r
    assert r["n"] == 20 and png.is_file()
    rc = main(["eval", "--model", "litv2_nano", "--checkpoint", str(tmp_path / "missing.safetensors"),
               "--data", str(idx_dir)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


@pytest.fixture
def folder_run(tmp_path):
    """A 3-class image folder and a run folder whose checkpoint records it (as the engine writes them)."""
    import numpy as np
    from PIL import Image

    from hilovit import create_model
    from hilovit.models.checkpoint import save_safetensors

    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for c in ("circle", "square", "star"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = create_model("litv2_nano", num_classes=3)
    meta = {"model": "litv2_nano", "dataset": f"folder:{root}", "img_size": "28", "in_chans": "3",
            "classes": json.dumps(["circle", "square", "star"])}
    save_safetensors(model.state_dict(), run / "model.safetensors", metadata=meta)
    (run / "config.yaml").write_text(f"model: litv2_nano\ndata: {root}\nval_split: 0.5\nseed: 0\n")
    return root, run


def test_eval_uses_the_recorded_data_and_keeps_an_earlier_report(folder_run):
    from hilovit.tasks.classification_eval import format_eval

    root, run = folder_run
    kw = dict(threads=1, progress="off", workers=0, default_output="eval")
    r = run_eval("litv2_nano", run, **kw)  # no data named: the image folder, not Fashion-MNIST
    assert r["dataset"] == f"folder:{root}" and r["split"] == "holdout"
    assert r["n"] == 6 and r["classes"] == ["circle", "square", "star"]  # half of 4 images per class
    first = (run / "eval" / "eval.json").read_bytes()
    r2 = run_eval("litv2_nano", run, **kw)
    assert r2["files"]["json"] == str(run / "eval" / "eval-2.json")
    assert r2["files"]["confusion_png"] == str(run / "eval" / "confusion-2.png")
    assert (run / "eval" / "eval.json").read_bytes() == first  # the earlier report is kept
    r3 = run_eval("litv2_nano", run, overwrite=True, eval_subset=3, **kw)
    assert r3["files"]["json"] == str(run / "eval" / "eval.json")
    assert json.loads((run / "eval" / "eval.json").read_text())["n"] == 3
    text = format_eval(r)
    assert "top-3" in text and "top-5" not in text  # 3 classes: top-k is top-3
    with pytest.raises(ValueError, match="eval_subset=0"):
        run_eval("litv2_nano", run, eval_subset=0, **kw)


def test_eval_without_recorded_data_asks_for_it(folder_run, capsys):
    root, run = folder_run
    (run / "config.yaml").unlink()
    from hilovit.models.checkpoint import read_checkpoint, save_safetensors

    sd, meta = read_checkpoint(run / "model.safetensors")
    meta.pop("dataset")
    save_safetensors(sd, run / "model.safetensors", metadata=meta)
    with pytest.raises(ValueError, match="records no dataset"):
        run_eval("litv2_nano", run, threads=1, progress="off", workers=0)
    rc = main(["eval", "--model", "litv2_nano", "--checkpoint", str(run), "--data", str(root), "--val-split", "0.5",
               "--threads", "1", "--progress", "off", "--workers", "0", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["n"] == 6
