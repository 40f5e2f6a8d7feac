"""Sliding-window segmentation evaluation: `hilovit eval --mode slide` against the model's slide predict path
computed by hand (mmseg's mIoU in plain numpy), and the validation of mode, crop and stride."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hilovit import create_model
from hilovit.cli import main
from hilovit.models.checkpoint import save_safetensors
from hilovit.tasks.segmentation_eval import resolve_inference, run_seg_eval

K = 3
CROP, STRIDE = 32, 20


def _model():
    torch.manual_seed(0)
    net = create_model("semfpn_litv2_nano", in_chans=3, num_classes=K).eval()
    with torch.no_grad():  # random features, sharply classified: labels that vary across the image
        net.decode_head.conv_seg.weight.mul_(200.0)
    return net


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("slide")
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "data" / split / "images").mkdir(parents=True)
        (root / "data" / split / "masks").mkdir(parents=True)
        for i in range(2):
            lab = np.kron(rng.integers(0, K, (5, 7)), np.ones((8, 8), np.int64))[:40, :52]
            lab[rng.random(lab.shape) < 0.05] = 255
            img = rng.integers(0, 256, (*lab.shape, 3)).astype(np.uint8)
            Image.fromarray(img).save(root / "data" / split / "images" / f"s{i}.png")
            Image.fromarray(lab.astype(np.uint8), "L").save(root / "data" / split / "masks" / f"s{i}.png")
    meta = {"task": "segmentation", "model": "semfpn_litv2_nano", "num_classes": str(K), "in_chans": "3",
            "mean": "0.5,0.5,0.5", "std": "0.25,0.25,0.25", "classes": json.dumps(["a", "b", "c"])}
    save_safetensors(_model().state_dict(), root / "model.safetensors", metadata=meta)
    return root


@pytest.fixture(scope="module")
def by_hand(run):
    return _miou_by_hand(run, mode="slide", crop_size=CROP, stride=STRIDE)


def _miou_by_hand(root, **how):
    """mmseg's mIoU: intersections and unions summed over the images, IoU per class, mean over the classes seen."""
    net = _model()
    inter, union = np.zeros(K), np.zeros(K)
    maps = []
    for path in sorted((root / "data" / "val" / "images").iterdir()):
        img = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float()
        x = ((img / 255.0 - 0.5) / 0.25)[None]
        pred = net.predict(x, **how)[0].numpy()
        lab = np.array(Image.open(root / "data" / "val" / "masks" / path.name)).astype(np.int64)
        keep = lab != 255
        for c in range(K):
            p, t = (pred == c) & keep, (lab == c) & keep
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
        maps.append(pred)
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return 100.0 * np.nanmean(iou), 100.0 * iou, maps


def test_slide_eval_equals_the_slide_predict_path_by_hand(run, by_hand):
    res = run_seg_eval(run / "model.safetensors", str(run / "data"), mode="slide", crop_size=CROP, stride=STRIDE,
                       device="cpu")
    miou, iou, slide_maps = by_hand
    assert res["inference"] == {"mode": "slide", "crop_size": [CROP, CROP], "stride": [STRIDE, STRIDE]}
    assert res["images"] == 2 and res["miou"] == pytest.approx(miou, abs=1e-9)
    assert list(res["per_class_iou"].values()) == pytest.approx(list(iou), abs=1e-9)
    assert 0 < miou < 100 and len(np.unique(slide_maps[0])) > 1
    # the windows really were used: whole-image inference labels the same image otherwise
    net = _model()
    img = torch.from_numpy(np.array(Image.open(run / "data" / "val" / "images" / "s0.png"))).permute(2, 0, 1)
    whole = net.predict(((img.float() / 255.0 - 0.5) / 0.25)[None], mode="whole")[0].numpy()
    assert int((whole != slide_maps[0]).sum()) > 0


def test_cli_slide_eval(run, by_hand, capsys):
    base = ["eval", "--task", "segmentation", "--checkpoint", str(run / "model.safetensors"), "--data",
            str(run / "data"), "--device", "cpu"]
    assert main([*base, "--mode", "slide", "--crop-size", str(CROP), "--stride", f"{STRIDE},{STRIDE}"]) == 0
    out = capsys.readouterr().out
    miou = by_hand[0]
    assert f"slide 32x32 every 20x20): mIoU {miou:.2f}%" in out
    with pytest.raises(SystemExit):  # argparse: one line, exit 2
        main([*base, "--mode", "slide", "--stride", "0"])
    assert "expected one or two positive integers, got '0'" in capsys.readouterr().err
    assert main([*base, "--crop-size", "32"]) == 2  # a crop with whole-image inference
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apply to --mode='slide' only" in err[0]


def test_resolve_inference_defaults_and_errors():
    net = _model()
    assert resolve_inference(net) == {"mode": "whole"}
    # slide without a test_cfg crop: the model's input size, stride two thirds of it
    assert resolve_inference(net, "slide") == {"mode": "slide", "crop_size": (128, 128), "stride": (85, 85)}
    assert resolve_inference(net, "slide", 64) == {"mode": "slide", "crop_size": (64, 64), "stride": (42, 42)}
    sliding = create_model("semfpn_litv2_nano", test_cfg=dict(mode="slide", crop_size=(96, 64), stride=(48, 32)))
    assert resolve_inference(sliding) == {"mode": "slide", "crop_size": (96, 64), "stride": (48, 32)}
    assert resolve_inference(sliding, stride=16) == {"mode": "slide", "crop_size": (96, 64), "stride": (16, 16)}
    for kwargs, message in (
        (dict(mode="tiles"), "mode must be 'whole' or 'slide', got 'tiles'"),
        (dict(mode="whole", stride=8), "apply to mode='slide' only"),
        (dict(mode="slide", crop_size=32, stride=0), r"stride must be a positive int .* got \[0, 0\]"),
        (dict(mode="slide", crop_size=32, stride=-4), "stride must be a positive int"),
        (dict(mode="slide", crop_size=(0, 8), stride=4), "crop_size must be a positive int"),
        (dict(mode="slide", crop_size=16, stride=20), r"stride \(20, 20\) must not exceed crop_size \(16, 16\)"),
    ):
        with pytest.raises(ValueError, match=message):
            resolve_inference(net, **kwargs)
    # a crop larger than the image is cut to it (as mmseg): equal to whole-image inference on that image
    x = torch.randn(1, 3, 40, 52)
    opts = resolve_inference(net, "slide", 64, 48)
    assert torch.allclose(net.inference(x, "slide", opts["crop_size"], opts["stride"]), net.inference(x, "whole"))
