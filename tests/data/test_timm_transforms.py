"""hilovit.data.resolve_data_config / create_transform: timm-style inference code gives the input tensor
that `hilovit predict` prepares, and both equal a crop and normalisation written here with NumPy."""

import argparse
import math

import numpy as np
import pytest
import torch
from PIL import Image

from hilovit import Predictor, create_model
from hilovit.data import create_transform, resolve_data_config


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(3)
    smooth = rng.integers(0, 255, (9, 13, 3)).astype(np.uint8)
    return Image.fromarray(smooth).resize((131, 97), Image.Resampling.BILINEAR)  # 131 wide, 97 high


def _reference(image: Image.Image, size: int, crop_pct: float, mode: str, mean, std) -> torch.Tensor:
    """timm's evaluation transform written out: the resized sides computed here, Pillow's bicubic filter for the
    resampling, the centre crop by offsets and the normalisation in NumPy."""
    w, h = image.size
    scale = math.floor(size / crop_pct)
    if mode == "squash":
        new_w, new_h = scale, scale
    elif w <= h:
        new_w, new_h = scale, int(scale * h / w)
    else:
        new_w, new_h = int(scale * w / h), scale
    arr = np.asarray(image.resize((new_w, new_h), Image.Resampling.BICUBIC), dtype=np.float64) / 255.0
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    arr = arr[top:top + size, left:left + size]
    out = (arr - np.asarray(mean)) / np.asarray(std)
    return torch.from_numpy(out.transpose(2, 0, 1).astype(np.float32))


@pytest.mark.parametrize("crop_pct, crop_mode", [(0.8, "center"), (1.0, "squash"), (0.9, "squash")])
def test_timm_style_inference_equals_predict(photo, crop_pct, crop_mode):
    model = create_model("litv2_nano", num_classes=3, img_size=64,
                         pretrained_cfg={"crop_pct": crop_pct, "crop_mode": crop_mode, "interpolation": "bicubic"})
    model.eval()
    config = resolve_data_config(model=model)
    assert config == {"input_size": (3, 64, 64), "interpolation": "bicubic", "mean": model.pretrained_cfg["mean"],
                      "std": model.pretrained_cfg["std"], "crop_pct": crop_pct, "crop_mode": crop_mode}
    x_timm = create_transform(**config)(photo)
    x_predict = Predictor(model, ["a", "b", "c"]).preprocess(photo)
    assert x_timm.shape == (3, 64, 64) and x_timm.dtype == torch.float32
    assert torch.equal(x_timm, x_predict)
    ref = _reference(photo, 64, crop_pct, crop_mode, config["mean"], config["std"])
    torch.testing.assert_close(x_timm, ref, atol=1e-5, rtol=0)
    with torch.no_grad():
        assert torch.equal(model(x_timm[None]), model(x_predict[None]))


def test_resolve_data_config_precedence_and_defaults():
    assert resolve_data_config(pretrained_cfg={}) == {  # timm's defaults
        "input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225), "crop_pct": 0.875, "crop_mode": "center"}
    cfg = {"input_size": (3, 224, 224), "test_input_size": (3, 288, 288), "crop_pct": 0.9, "test_crop_pct": 1.0,
           "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_mode": "squash"}
    test = resolve_data_config(pretrained_cfg=cfg, use_test_size=True)
    assert test["input_size"] == (3, 288, 288) and test["crop_pct"] == 1.0 and test["crop_mode"] == "squash"
    args = argparse.Namespace(img_size=160, mean=(0.25,), std=None, crop_pct=0.7, interpolation="nearest",
                              crop_mode=None, input_size=None)
    got = resolve_data_config(args, pretrained_cfg=cfg)
    assert got["input_size"] == (3, 160, 160) and got["mean"] == (0.25, 0.25, 0.25) and got["std"] == (0.5,) * 3
    assert got["crop_pct"] == 0.7 and got["interpolation"] == "nearest" and got["crop_mode"] == "squash"
    with torch.device("meta"):
        model = create_model("litv2_b_384")
    assert resolve_data_config(model=model)["crop_mode"] == "squash"
    assert resolve_data_config(pretrained_cfg=cfg, model=model)["crop_mode"] == "squash"  # the dict wins
    assert resolve_data_config(model=model)["input_size"] == (3, 384, 384)


def test_resolve_data_config_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        resolve_data_config()
    with pytest.raises(ValueError, match="input_size"):
        resolve_data_config({"input_size": (224, 224)})
    with pytest.raises(ValueError, match="img_size"):
        resolve_data_config({"img_size": (224, 224)})
    with pytest.raises(ValueError, match="mean"):
        resolve_data_config({"mean": (0.1, 0.2)}, pretrained_cfg={})
    with pytest.raises(TypeError, match="args"):
        resolve_data_config(3)


def test_create_transform_options(photo):
    raw = create_transform(48, crop_pct=1.0, interpolation="bicubic", normalize=False, hflip=0.5, color_jitter=0.4)
    pixels = raw(photo)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 48, 48)
    ref = _reference(photo, 48, 1.0, "center", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    torch.testing.assert_close(pixels.float() / 255, ref, atol=1e-6, rtol=0)
    grey = create_transform((1, 32, 32), mean=(0.5,), std=(0.25,), crop_pct=1.0)(photo.convert("L"))
    assert grey.shape == (1, 32, 32)
    with pytest.raises(ValueError, match="expects 1"):
        create_transform((1, 32, 32), mean=(0.5,), std=(0.25,))(photo)
    for kwargs, error, match in [
        (dict(is_training=True), ValueError, "is_training"),
        (dict(crop_mode="border"), ValueError, "crop_mode"),
        (dict(crop_pct=0.0), ValueError, "crop_pct"),
        (dict(interpolation="cubic"), ValueError, "interpolation"),
        (dict(input_size=(3, 0, 5)), ValueError, "input_size"),
        (dict(std=(1.0, 0.0, 1.0)), ValueError, "std"),
        (dict(use_prefetcher=True), ValueError, "use_prefetcher"),
        (dict(colour_jitter=0.4), TypeError, "colour_jitter"),
    ]:
        with pytest.raises(error, match=match):
            create_transform(**kwargs)
    with pytest.raises(TypeError, match="PIL image"):
        create_transform(32)(np.zeros((32, 32, 3), np.uint8))
