"""``hilovit app`` without a browser: what the page shows for an image is what ``hilovit predict`` and
``hilovit viz hilo`` give for it (classification, segmentation, detection checkpoints), a file that is not an
image is one line of error text, and the command needs Gradio only when it serves."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hilovit import create_model
from hilovit.app import AppPredictor
from hilovit.app.page import page_outputs
from hilovit.app.predictions import resolve_source
from hilovit.cli import main
from hilovit.models.checkpoint import save_safetensors

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt"]


def _save(model, path, meta):
    save_safetensors(model.state_dict(), path, metadata={k: str(v) for k, v in meta.items()})
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One checkpoint per task, saved with the metadata a training run records (random weights)."""
    d = tmp_path_factory.mktemp("app_ckpt")
    torch.manual_seed(0)
    cls = create_model("litv2_nano", num_classes=len(CLASSES), in_chans=1, img_size=56)
    seg = create_model("semfpn_litv2_nano", num_classes=4, in_chans=3)
    det = create_model("retinanet_litv2_nano", num_classes=3, in_chans=3)
    torch.nn.init.zeros_(det.bbox_head.retina_cls.bias)  # scores near 0.5 instead of the prior's 0.01: boxes to draw
    return {
        "classification": _save(cls, d / "cls.safetensors", {
            "task": "classification", "model": "litv2_nano", "classes": json.dumps(CLASSES), "img_size": 56,
            "in_chans": 1, "mean": 0.286, "std": 0.353, "format": "hilovit-train"}),
        "segmentation": _save(seg, d / "seg.safetensors", {
            "task": "segmentation", "model": "semfpn_litv2_nano", "num_classes": 4, "in_chans": 3,
            "classes": json.dumps(["background", "Bag", "Shirt", "Coat"]), "mean": "0.3,0.3,0.3",
            "std": "0.3,0.3,0.3"}),
        "detection": _save(det, d / "det.safetensors", {
            "task": "detection", "model": "retinanet_litv2_nano", "num_classes": 3, "in_chans": 3,
            "classes": json.dumps(["Bag", "Shirt", "Coat"]), "mean": "0.5,0.5,0.5", "std": "0.5,0.5,0.5"}),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A grey 28x28 picture (a Fashion-MNIST-sized image), a colour scene, a text file named .png, a missing path."""
    d = tmp_path_factory.mktemp("app_img")
    rng = np.random.default_rng(1)
    grey = d / "item.png"
    Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(grey)
    scene = d / "scene.png"
    Image.fromarray(rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)).save(scene)
    bad = d / "notes.png"
    bad.write_text("not an image")
    return {"grey": grey, "scene": scene, "bad": bad, "missing": d / "missing.png"}


def _png(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _predict_json(capsys, *args):
    capsys.readouterr()
    main(["predict", *map(str, args), "--json"])
    return json.loads(capsys.readouterr().out)


# --------------------------------------------------------------------------- the same results as predict / viz
def test_classification_top5_and_hilo_are_predict_and_viz(checkpoints, images, capsys, tmp_path):
    ckpt, image = checkpoints["classification"], images["grey"]
    app = AppPredictor(ckpt, hilo_size=112)
    assert app.task == "classification" and app.has_hilo
    result = app.predict(image)
    assert result.ok and result.task == "classification" and result.source == "item.png"
    want = _predict_json(capsys, image, "--checkpoint", ckpt, "--topk", "5")[0]["predictions"]
    assert list(result.top) == [p["label"] for p in want]
    np.testing.assert_allclose(list(result.top.values()), [p["probability"] for p in want], rtol=0, atol=1e-7)
    # an independent softmax over the model's logits: the five largest, in order
    model = app.predictor.model
    with Image.open(image) as im:  # 28x28 grey, resized to the 56x56 input (crop_pct 1: no crop)
        arr = np.asarray(im.convert("L").resize((56, 56), Image.BICUBIC), dtype=np.float32) / 255.0
    with torch.no_grad():
        logits = model(torch.from_numpy((arr - 0.286) / 0.353)[None, None]).double()[0].numpy()
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)[:5]
    assert list(result.top) == [CLASSES[i] for i in order]
    np.testing.assert_allclose(list(result.top.values()), probs[order], atol=2e-3)
    # the picture `hilovit viz hilo` writes for the same checkpoint and image, pixel for pixel
    out = tmp_path / "hilo.png"
    assert main(["viz", "hilo", str(image), "--model", "litv2_nano", "--checkpoint", str(ckpt), "--img-size", "112",
                 "--output", str(out)]) == 0
    assert "14x14 tokens" in capsys.readouterr().out and result.notes == []  # 112 px: no small-map warning
    np.testing.assert_array_equal(result.hilo, _png(out))
    with Image.open(image) as im:  # the input, each pixel shown as 8x8 (224 px)
        np.testing.assert_array_equal(result.picture, np.kron(np.asarray(im.convert("RGB")), np.ones((8, 8, 1),
                                                                                                    np.uint8)))
    status, top, picture, hilo = page_outputs(result)
    assert f"**{next(iter(result.top))}**" in status and top == result.top and hilo is result.hilo


def test_segmentation_overlay_is_predicts(checkpoints, images, capsys, tmp_path):
    ckpt, image = checkpoints["segmentation"], images["scene"]
    app = AppPredictor(ckpt)
    assert app.task == "segmentation" and not app.has_hilo
    result = app.predict(image)
    assert result.ok and result.top == {} and result.hilo is None
    want = _predict_json(capsys, image, "--checkpoint", ckpt, "--output", tmp_path)[0]
    np.testing.assert_array_equal(result.picture, _png(want["overlay"]))
    assert result.picture.shape == (72, 96, 3)
    for label, share in want["class_shares"].items():
        assert f"- {label}: {share:.1f}% of the pixels" in result.details
    # the overlay blends the palette colour of each predicted label into the image (half and half)
    labels = np.asarray(Image.open(want["labels"]))
    with Image.open(image) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    palette = np.asarray(Image.open(want["labels"]).getpalette(), dtype=np.float64).reshape(-1, 3)
    blended = np.clip(np.round(0.5 * rgb + 0.5 * palette[labels]), 0, 255)
    keep = labels == 0  # class 0 is black: left as it is
    blended[keep] = rgb[keep]
    np.testing.assert_array_equal(result.picture, blended.astype(np.uint8))


def test_detection_picture_is_predicts(checkpoints, images, capsys, tmp_path):
    ckpt, image = checkpoints["detection"], images["scene"]
    app = AppPredictor(ckpt)
    assert app.task == "detection"
    result = app.predict(image)
    assert result.ok and result.hilo is None
    want = _predict_json(capsys, image, "--checkpoint", ckpt, "--output", tmp_path)[0]
    assert want["detections"], "the detector should keep some boxes above 0.3"
    np.testing.assert_array_equal(result.picture, _png(want["picture"]))
    lines = result.details.splitlines()
    assert lines[0] == f"{len(want['detections'])} detections with a score of at least 0.3:"
    for line, d in zip(lines[1:], want["detections"]):
        assert line.startswith(f"- {d['label']} {d['score']:.2f} at x={d['bbox'][0]:.0f}, y={d['bbox'][1]:.0f}")


# --------------------------------------------------------------------------- errors on the page
@pytest.mark.parametrize("task", ["classification", "segmentation", "detection"])
def test_a_bad_file_is_one_line_of_error_text(checkpoints, images, task):
    app = AppPredictor(checkpoints[task])
    for name, expected in (("bad", "notes.png"), ("missing", "does not exist")):
        result = app.predict(images[name])
        assert not result.ok and expected in result.error and "\n" not in result.error, (name, result.error)
        status, top, picture, hilo = page_outputs(result)
        assert status == f"**Error:** {result.error}" and "Traceback" not in status
        assert top is None and picture is None and hilo is None


def test_the_page_handler_turns_any_failure_into_text(checkpoints, images, capsys):
    from hilovit.app.page import _handler

    app = AppPredictor(checkpoints["classification"])
    app.predictor.model.head = torch.nn.Linear(3, 3)  # a broken model: the forward pass raises
    status, top, picture, hilo = _handler(app)(str(images["grey"]))
    assert status.startswith("**Error:** RuntimeError: ") and "Traceback" not in status and top is None
    assert "Traceback" in capsys.readouterr().err  # kept for whoever runs the server
    assert _handler(app)(None)[0] == "Drop an image above."


def test_source_is_a_checkpoint_or_a_model_name(checkpoints, tmp_path):
    assert resolve_source(checkpoints["detection"]) == (str(checkpoints["detection"]), None)
    assert resolve_source("litv2_nano") == (None, True)
    with pytest.raises(ValueError, match=r"--checkpoint 'runs/nothing'.*not a registered model name"):
        resolve_source("runs/nothing")
    with pytest.raises(ValueError, match="topk=0: expected a positive integer"):
        AppPredictor(checkpoints["classification"], topk=0)


# --------------------------------------------------------------------------- the command
def test_help_imports_neither_torch_nor_gradio():
    code = ("import sys; from hilovit.cli import build_parser; build_parser().parse_args(['app', '--checkpoint', "
            "'x']); print(sorted(m for m in ('torch', 'gradio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_without_gradio_the_command_says_how_to_install(checkpoints, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    assert main(["app", "--checkpoint", str(checkpoints["classification"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'hilovit[app]'" in err and "Traceback" not in err


def test_a_bad_hilo_size_is_refused_before_anything_loads(capsys):
    assert main(["app", "--checkpoint", "runs/nothing", "--hilo-size", "1", "2", "3"]) == 2
    assert "--hilo-size takes H or H W, got 3 values" in capsys.readouterr().err
