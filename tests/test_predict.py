"""Tests for hilovit.predict (Predictor, load_model, preprocessing) and ``hilovit predict``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hilovit import Predictor, create_model
from hilovit.cli import main
from hilovit.data.folders import open_image, preprocess_image
from hilovit.models.checkpoint import CheckpointError, save_safetensors
from hilovit.models.checkpoint import read_metadata as read_checkpoint_metadata
from hilovit.tasks.classification_predict import load_model

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-class litv2_nano 'trained' on grey images: model.safetensors with the engine's metadata,
    a last.pt with a metadata dict, and a bare state dict without names."""
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = create_model("litv2_nano", num_classes=4, in_chans=1).eval()
    meta = {"model": "litv2_nano", "classes": json.dumps(CLASSES), "img_size": "28", "in_chans": "1",
            "mean": "0.286", "std": "0.353"}
    save_safetensors(model.state_dict(), d / "model.safetensors", metadata=meta)
    torch.save({"model": model.state_dict(), "epoch": 2, "metadata": {"classes": CLASSES, "model": "litv2_nano"}},
               d / "last.pt")
    torch.save(model.state_dict(), d / "bare.pth")
    return d, model


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The same picture saved in many Pillow modes, a missing path and a file that is not an image."""
    d = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8))
    paths = {}
    for mode in ("RGB", "L", "RGBA", "LA", "P", "I;16", "1"):
        paths[mode] = d / f"img_{mode.replace(';', '')}.png"
        rgb.convert(mode).save(paths[mode])
    paths["CMYK"] = d / "img_cmyk.jpg"
    rgb.convert("CMYK").save(paths["CMYK"])
    paths["GIF"] = d / "img.gif"
    rgb.convert("P").save(paths["GIF"])
    bad = d / "notes.png"
    bad.write_text("not an image")
    return paths, d / "missing.png", bad


# --------------------------------------------------------------------------- preprocessing
def test_preprocess_centre_crop_removes_border_exactly():
    # 256 px with a 16 px border, input 224 and crop_pct 0.875: no resize, the crop cuts the border off
    arr = np.zeros((256, 256, 3), np.uint8)
    arr[:] = (200, 10, 10)
    arr[16:240, 16:240] = (10, 100, 250)
    cfg = {"input_size": (3, 224, 224), "crop_pct": 0.875, "interpolation": "bicubic",
           "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    x = preprocess_image(Image.fromarray(arr), cfg)
    assert x.shape == (3, 224, 224)
    expected = torch.tensor([10, 100, 250], dtype=torch.float32).view(3, 1, 1) / 255
    torch.testing.assert_close(x, expected.expand(3, 224, 224), atol=1e-6, rtol=0)


def test_preprocess_keeps_aspect_and_normalises():
    # 512 x 256 horizontal ramp: shorter side already 256, the crop takes the centre 224 columns
    ramp = np.tile(np.arange(512, dtype=np.float64)[None, :] / 2, (256, 1)).astype(np.uint8)
    cfg = {"input_size": (1, 224, 224), "crop_pct": 0.875, "interpolation": "bilinear", "mean": (0.5,), "std": (0.25,)}
    x = preprocess_image(Image.fromarray(ramp), cfg)
    assert x.shape == (1, 224, 224)
    first, last = (x[0, 0, [0, -1]] * 0.25 + 0.5) * 255
    assert abs(first - 144 / 2) < 1 and abs(last - 367 / 2) < 1
    # a non-square input size resizes both sides
    cfg = dict(cfg, input_size=(1, 32, 48), crop_pct=1.0)
    assert preprocess_image(Image.fromarray(ramp), cfg).shape == (1, 32, 48)


def test_preprocess_rejects_bad_cfg():
    im = Image.new("RGB", (8, 8))
    with pytest.raises(ValueError, match="interpolation"):
        preprocess_image(im, {"input_size": (3, 8, 8), "interpolation": "cubic-ish"})
    with pytest.raises(ValueError, match="crop_pct"):
        preprocess_image(im, {"input_size": (3, 8, 8), "crop_pct": 0.0})


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "I;16", "1", "CMYK", "GIF"])
def test_open_image_any_mode(images, mode):
    paths, _, _ = images
    assert open_image(paths[mode], 3).mode == "RGB"
    assert open_image(paths[mode], 1).mode == "L"


def test_transparency_is_composited_on_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (6, 6), (0, 0, 0, 0)).save(path)
    assert np.asarray(open_image(path)).min() == 255


# --------------------------------------------------------------------------- checkpoints
def test_load_model_sizes_from_checkpoint(trained):
    d, ref = trained
    model, classes = load_model("litv2_nano", d / "model.safetensors")
    assert classes == CLASSES
    assert model.num_classes == 4 and model.in_chans == 1 and not model.training
    assert tuple(model.pretrained_cfg["mean"]) == (0.286,) and tuple(model.pretrained_cfg["std"]) == (0.353,)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)
    # a training output folder: its model.safetensors
    assert load_model("litv2_nano", d)[1] == CLASSES
    # last.pt: names from its metadata dict; a bare state dict: no names
    assert read_checkpoint_metadata(d / "last.pt")["classes"] == CLASSES
    assert load_model("litv2_nano", d / "last.pt")[1] == CLASSES
    assert load_model("litv2_nano", d / "bare.pth")[1] is None


def test_load_model_without_checkpoint_overlays_the_normalisation_given():
    default = create_model("litv2_nano").pretrained_cfg
    model, classes = load_model("litv2_nano", mean=[0.5, 0.25, 0], std=None)
    assert classes is None and not model.training
    cfg = model.pretrained_cfg
    assert cfg["mean"] == (0.5, 0.25, 0.0) and cfg["std"] == default["std"]
    assert {k: v for k, v in cfg.items() if k != "mean"} == {k: v for k, v in default.items() if k != "mean"}
    assert load_model("litv2_nano")[0].pretrained_cfg == default


def test_load_model_refuses_another_architecture(trained):
    d, _ = trained
    with pytest.raises(CheckpointError, match="litv2_nano"):
        load_model("swin_nano", d / "model.safetensors")
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_model("litv2_nano", d / "nothing.pt")
    with pytest.raises(ValueError, match="unknown model"):
        load_model("litv3", d / "model.safetensors")


# --------------------------------------------------------------------------- Predictor
def test_predictor_matches_the_model(trained, images):
    d, ref = trained
    paths, _, _ = images
    predictor = Predictor.from_checkpoint("litv2_nano", d / "model.safetensors")
    top = predictor.predict(paths["RGB"], topk=3)
    assert [label for label, _ in top] == [label for label, _ in sorted(top, key=lambda t: -t[1])]
    assert len(top) == 3 and all(label in CLASSES for label, _ in top)
    x = predictor.preprocess(paths["RGB"])
    assert x.shape == (1, 28, 28)
    with torch.no_grad():
        probs = ref(x[None]).softmax(-1)[0]
    best = int(probs.argmax())
    assert top[0][0] == CLASSES[best]
    assert top[0][1] == pytest.approx(float(probs[best]), abs=1e-6)
    # topk larger than the classes gives all of them, summing to one
    assert sum(p for _, p in predictor.predict(paths["L"], topk=10)) == pytest.approx(1.0, abs=1e-5)


def test_predict_many_reports_bad_files_and_predicts_the_rest(trained, images):
    d, _ = trained
    paths, missing, bad = images
    predictor = Predictor.from_checkpoint("litv2_nano", d / "model.safetensors")
    files = [paths["RGB"], missing, paths["P"], bad, paths["RGBA"]]
    results = predictor.predict_many(files, topk=2, batch_size=2)
    assert [r.ok for r in results] == [True, False, True, False, True]
    assert "missing.png" in results[1].error and "does not exist" in results[1].error
    assert "notes.png" in results[3].error
    assert all(len(r.labels) == 2 for r in results if r.ok)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        predictor.predict(missing)


def test_predictor_without_names_uses_indices(images):
    paths, _, _ = images
    model = create_model("swin_nano", num_classes=3)
    predictor = Predictor(model)
    labels = [label for label, _ in predictor.predict(paths["GIF"], topk=3)]
    assert sorted(labels) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="2 class names"):
        Predictor(model, classes=["a", "b"])


# --------------------------------------------------------------------------- CLI
def test_cli_predict_text_and_exit_status(trained, images, capsys):
    d, _ = trained
    paths, missing, bad = images
    rc = main(["predict", str(paths["L"]), str(missing), str(bad), str(paths["CMYK"]), "--model", "litv2_nano",
               "--checkpoint", str(d / "model.safetensors"), "--topk", "2"])
    out, err = capsys.readouterr()
    assert rc == 1  # some images failed; the others are still printed
    assert str(paths["L"]) in out and str(paths["CMYK"]) in out
    assert sum(name in out for name in CLASSES) >= 1
    assert str(missing) in err and str(bad) in err and str(missing) not in out


def test_cli_predict_json(trained, images, capsys):
    d, _ = trained
    paths, missing, _ = images
    rc = main(["predict", str(paths["RGB"]), str(missing), "--model", "litv2_nano", "--checkpoint", str(d / "last.pt"),
               "--json", "--topk", "3"])
    out, _ = capsys.readouterr()
    doc = json.loads(out)
    assert rc == 1
    assert doc[0]["image"] == str(paths["RGB"]) and doc[0]["error"] is None
    preds = doc[0]["predictions"]
    assert [p["rank"] for p in preds] == [1, 2, 3]
    assert all(p["label"] == CLASSES[p["index"]] for p in preds)
    assert doc[1]["predictions"] == [] and "missing.png" in doc[1]["error"]
    assert main(["predict", str(paths["RGB"]), "--model", "litv2_nano", "--checkpoint", str(d / "bare.pth"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["predictions"][0]["label"].isdigit()


def test_cli_predict_bad_checkpoint_is_a_usage_error(trained, images, capsys):
    d, _ = trained
    paths, _, _ = images
    rc = main(["predict", str(paths["RGB"]), "--model", "swin_nano", "--checkpoint", str(d / "model.safetensors")])
    assert rc == 2
    assert "litv2_nano" in capsys.readouterr().err


# --------------------------------------------------------------------------- normalisation that cannot work
def _reference(image: Image.Image, mean: float, std: float) -> torch.Tensor:
    """The preprocessing of a 28x28 grey image for a 28x28 input, written out: [0, 1], minus mean, over std."""
    arr = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
    return torch.from_numpy((arr - mean) / std)[None].float()


@pytest.mark.parametrize("mean, std, message", [
    ((0.5,), (0.0,), r"\{?std\}?=\(0\.0,\): expected numbers above 0"),
    ((0.5,), (-1.0,), "expected numbers above 0"),
    ((0.5,), (float("nan"),), "expected finite numbers"),
    ((0.5, 0.5), (0.5, 0.5), r"mean=\(0\.5, 0\.5\): expected 1 value for a 1-channel model"),
    ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), "expected 1 value for a 1-channel model"),
])
def test_normalisation_that_cannot_work_is_refused(trained, images, mean, std, message):
    d, _ = trained
    paths, _, _ = images
    with pytest.raises(ValueError, match=message):  # before any image is read: no NaN probabilities
        Predictor.from_checkpoint(None, d / "model.safetensors", mean=mean, std=std)
    cfg = {"input_size": (1, 28, 28), "mean": mean, "std": std}
    with pytest.raises(ValueError, match="pretrained_cfg"):
        preprocess_image(open_image(paths["RGB"], 1), cfg)


def test_one_value_or_one_per_channel(trained):
    d, _ = trained
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (28, 28), dtype=np.uint8))
    got = preprocess_image(image, {"input_size": (1, 28, 28), "mean": (0.25,), "std": (0.5,)})
    torch.testing.assert_close(got, _reference(image, 0.25, 0.5), atol=1e-6, rtol=0)
    rgb = preprocess_image(image.convert("RGB"), {"input_size": (3, 28, 28), "mean": (0.25,), "std": (0.5,)})
    assert rgb.shape == (3, 28, 28) and torch.allclose(rgb[1], _reference(image, 0.25, 0.5)[0], atol=1e-6)
    predictor = Predictor.from_checkpoint(None, d / "model.safetensors", mean=(0.3,), std=(0.2,))
    assert predictor.model.pretrained_cfg["std"] == (0.2,)  # the model's name is the checkpoint's


def test_cli_refuses_nan_makers_in_one_line(trained, images, capsys):
    d, _ = trained
    paths, _, _ = images
    for args, text in ((["--mean", "0.5", "--std", "0"], "argument --std: expected comma-separated numbers above 0"),
                       (["--mean", "nan", "--std", "1"], "argument --mean: expected comma-separated finite numbers"),
                       (["--mean", "0.5,0.5", "--std", "0.5,0.5"], "--mean=(0.5, 0.5): expected 1 value")):
        try:
            rc = main(["predict", str(paths["RGB"]), "--checkpoint", str(d / "model.safetensors"), *args])
        except SystemExit as e:
            rc = e.code
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and text in err, err
