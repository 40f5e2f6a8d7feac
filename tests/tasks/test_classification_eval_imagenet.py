"""hilovit eval on an ImageNet-style val folder with published-format weights, predict's ImageNet names,
and the end-of-epoch report of files that fail to decode during training."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hilovit import Predictor, create_model
from hilovit.cli import main
from hilovit.tasks.classification_eval import run_eval
from hilovit.train import train

WNIDS = ("n01440764", "n01443537", "n15075141")  # tench (0), goldfish (1), toilet tissue (999)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """A 1000-class litv2_nano stored as the official releases store weights ({'model': state_dict}); its
    classifier ignores the image: bias order 999 > 0 > 500 > 2 > 3 > the rest."""
    torch.manual_seed(0)
    model = create_model("litv2_nano", num_classes=1000)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        for rank, cls in enumerate((999, 0, 500, 2, 3)):
            model.head.bias[cls] = 5.0 - rank
    path = tmp_path_factory.mktemp("weights") / "litv2_nano_in1k.pth"
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def val_dir(tmp_path_factory):
    """ImageNet val layout: VAL/<wnid>/<images>, two non-square JPEGs per class, no train/ beside it."""
    root = tmp_path_factory.mktemp("imagenet") / "val"
    rng = np.random.default_rng(0)
    for wnid in WNIDS:
        (root / wnid).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 255, (30, 44, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / wnid / f"ILSVRC2012_val_{wnid}_{i}.JPEG", quality=90)
    return root


def test_eval_pretrained_on_a_val_folder(official_file, val_dir, tmp_path, capsys):
    rc = main(["eval", "--model", "litv2_nano", "--pretrained", str(official_file), "--data", str(val_dir),
               "--img-size", "32", "--crop-pct", "0.875", "--interpolation", "bicubic", "--workers", "0",
               "--threads", "1", "--progress", "off", "--json", "--output", str(tmp_path / "out")])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    # labels are the ImageNet indices of the folders (0, 1, 999): only the 999 images are top-1,
    # the goldfish (1) images are outside the top 5
    assert r["n"] == 6 and r["split"] == "all" and r["top5_k"] == 5
    assert r["top1"] == pytest.approx(100 * 2 / 6) and r["top5"] == pytest.approx(100 * 4 / 6)
    assert r["per_class"]["tench"] == 0.0 and r["per_class"]["toilet tissue"] == 100.0
    assert r["per_class"]["goldfish"] == 0.0 and r["per_class"]["golden retriever"] is None
    assert r["preprocessing"] == {"img_size": 32, "crop_pct": 0.875, "crop_mode": "center", "interpolation": "bicubic",
                                  "mean": pytest.approx([0.5] * 3), "std": pytest.approx([0.5] * 3)}
    assert r["confusion"] is None  # 1000 x 1000: neither stored nor drawn
    written = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert written["top1"] == r["top1"] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["eval.json"]
    text_rc = main(["eval", "--model", "litv2_nano", "--pretrained", str(official_file), "--data", str(val_dir),
                    "--img-size", "32", "--workers", "0", "--threads", "1", "--progress", "off"])
    out = capsys.readouterr().out
    assert text_rc == 0 and "top-1 33.33%" in out and "3 of 1000 classes have images" in out


def test_eval_refuses_a_folder_with_another_class_count(official_file, tmp_path, capsys):
    root = tmp_path / "pets"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        Image.new("RGB", (20, 20)).save(root / c / "0.png")
    with pytest.raises(ValueError, match=r"has 2 class folders \(cat, dog\) but the model has 1000 classes"):
        run_eval("litv2_nano", pretrained=str(official_file), data=str(root), img_size=32, workers=0,
                 progress="off")
    rc = main(["eval", "--model", "litv2_nano", "--pretrained", str(official_file), "--data", str(root)])
    assert rc == 2 and "2 class folders" in capsys.readouterr().err
    with pytest.raises(ValueError, match="either a checkpoint or pretrained"):
        run_eval("litv2_nano", data=str(root))
    with pytest.raises(ValueError, match="name the data"):
        run_eval("litv2_nano", pretrained=str(official_file))
    with pytest.raises(ValueError, match="neither a weights file nor a published tag"):
        run_eval("litv2_s", pretrained="alpha_0_6", data=str(root))


def test_official_weights_offline_is_one_clear_error(val_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty cache
    monkeypatch.setenv("HILOVIT_OFFLINE", "1")
    rc = main(["eval", "--model", "litv2_s", "--pretrained", "--data", str(val_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "releases/download/v1.0/litv2_s.pth" in err and "Traceback" not in err
    image = next((val_dir / WNIDS[0]).iterdir())
    assert main(["predict", str(image), "--model", "litv2_s", "--pretrained", "alpha_0_5"]) == 2
    assert "v1.1/alpha_0.5.pth" in capsys.readouterr().err


def test_eval_checkpoint_on_a_whole_class_folder(tmp_path):
    from hilovit.models.checkpoint import save_safetensors

    root = tmp_path / "shapes"
    for c in ("circle", "square", "star"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (14, 10), (60 * i, 9, 9)).save(root / c / f"{i}.png")
    (root / "star" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    model = create_model("litv2_nano", num_classes=3)
    meta = {"model": "litv2_nano", "dataset": "folder:/elsewhere", "img_size": "28", "in_chans": "3"}
    save_safetensors(model.state_dict(), tmp_path / "model.safetensors", metadata=meta)
    (tmp_path / "config.yaml").write_text("model: litv2_nano\ndata: /elsewhere\nval_split: 0.5\nseed: 0\n")
    r = run_eval("litv2_nano", tmp_path / "model.safetensors", data=str(root), workers=0, progress="off")
    # another folder than the recorded one: its recorded hold-out does not apply, every image counts
    # the torn file is left out (its stand-in is not counted twice) and named
    assert r["n"] == 9 and r["split"] == "all" and r["classes"] == ["circle", "square", "star"]
    assert r["skipped_images"] == [str(root / "star" / "torn.png")]
    assert sum(sum(row) for row in r["confusion"]) == 9
    assert r["preprocessing"]["crop_pct"] == 1.0 and r["preprocessing"]["interpolation"] == "bilinear"


def test_predict_prints_imagenet_names(official_file, val_dir, capsys):
    image = next((val_dir / WNIDS[0]).iterdir())
    rc = main(["predict", str(image), "--model", "litv2_nano", "--pretrained", str(official_file), "--topk", "2"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert "toilet tissue" in lines[1] and "[999]" in lines[1] and "tench" in lines[2] and "[0]" in lines[2]
    predictor = Predictor(create_model("litv2_nano", num_classes=1000))
    assert predictor.classes[0] == "tench" and predictor.classes[999] == "toilet tissue"
    assert Predictor(create_model("litv2_nano", num_classes=10)).classes is None


def test_training_reports_undecodable_files_at_the_end_of_the_epoch(tmp_path, capsys):
    folder = tmp_path / "photos"
    for k, c in enumerate(("cat", "dog")):
        (folder / c).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 30), (100 * k, 20 * i, 120)).save(folder / c / f"{i}.jpg")
    bad = folder / "dog" / "3b.jpg"
    bad.write_bytes(b"\xff\xd8 not really a JPEG")
    summary = train(model="litv2_nano", data=str(folder), val_split=0.25, img_size=32, epochs=1, batch_size=4,
                    workers=0, progress="log", threads=1, output=str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert summary["train_images"] > 0
    assert "skipped 1 unreadable image file" in out and str(bad) in out
