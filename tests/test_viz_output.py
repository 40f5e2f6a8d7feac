"""Pictures are written in the format their extension names (PNG, JPEG, WebP) or refused with one line, and a HiLo
map too small to compare the branches on gets one warning line."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image, features

from hilovit.cli import main
from hilovit.viz import small_map_warning
from hilovit.viz.files import image_format
from hilovit.viz.plots import _pyplot, save_figure
from hilovit.viz.segmentation import save_segmentation_figure

MAGIC = {"PNG": b"\x89PNG\r\n\x1a\n", "JPEG": b"\xff\xd8\xff"}


def _format_of(path):
    head = path.read_bytes()[:12]
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for name, magic in MAGIC.items() if head.startswith(magic)), None)


def test_image_format_from_the_extension():
    assert [image_format(p) for p in ("a.png", "b.JPG", "c.jpeg", "d/e.Png")] == ["PNG", "JPEG", "JPEG", "PNG"]
    for bad, shown in (("x.gif", "'.gif'"), ("x", "'(none)'"), ("x.png.bak", "'.bak'")):
        message = f"unknown image extension {shown}; use .png, .jpg, .jpeg or .webp"
        with pytest.raises(ValueError, match=re.escape(message)):
            image_format(bad)


@pytest.mark.parametrize("suffix, fmt", [(".png", "PNG"), (".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
def test_save_figure_writes_the_format_of_the_extension(tmp_path, suffix, fmt):
    if fmt == "WEBP" and not features.check("webp"):
        pytest.skip("this Pillow has no WebP")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / f"fig{suffix}")
    assert _format_of(path) == fmt
    with Image.open(path) as im:
        assert im.format == fmt and im.size[0] > 50
    assert [p.name for p in tmp_path.iterdir()] == [f"fig{suffix}"]  # no temporary left


def test_save_figure_refuses_an_unknown_extension(tmp_path):
    fig, _ = _pyplot().subplots()
    with pytest.raises(ValueError, match="unknown image extension '.bmp'"):
        save_figure(fig, tmp_path / "fig.bmp")
    assert list(tmp_path.iterdir()) == []


def test_segmentation_figure_formats(tmp_path):
    img, lab = torch.zeros(1, 8, 8, dtype=torch.uint8), torch.zeros(8, 8, dtype=torch.long)
    path = save_segmentation_figure(img, lab, lab, tmp_path / "seg.jpg", classes=["bg", "a"])
    assert _format_of(path) == "JPEG"
    assert _format_of(save_segmentation_figure(img, lab, lab, tmp_path / "seg.png", classes=["bg", "a"])) == "PNG"
    with pytest.raises(ValueError, match="unknown image extension '.tif'"):
        save_segmentation_figure(img, lab, lab, tmp_path / "seg.tif", classes=["bg", "a"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.jpg", "seg.png"]


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("pic") / "picture.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(path)
    return path


def test_cli_viz_writes_jpeg_and_refuses_unknown_extensions(picture, tmp_path, capsys):
    out = tmp_path / "hilo.jpg"
    assert main(["viz", "hilo", str(picture), "--model", "litv2_nano", "--img-size", "112", "--output", str(out)]) == 0
    assert _format_of(out) == "JPEG"
    assert capsys.readouterr().err == ""  # 112 px: a 14x14 map, pooled by 3 to 5x5 keys: no warning
    for command in ("hilo", "attention"):
        assert main(["viz", command, str(picture), "--model", "litv2_nano", "--output", str(tmp_path / "a.gif")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "unknown image extension '.gif'" in err[0] and "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hilo.jpg"]


def test_small_map_warning():
    assert small_map_warning(2, "layers.2.blocks.0.attn", (6, 7), 2) is None
    line = small_map_warning(2, "layers.2.blocks.0.attn", (3, 3), 2)
    assert "3x3 token map" in line and "window size 2 pools it to 2x2 Lo-Fi keys" in line and "6x6" in line
    assert "1x1 Lo-Fi keys" in small_map_warning(0, "x", (1, 2), 2)
    assert "\n" not in line


def test_cli_viz_warns_once_on_a_small_map(picture, tmp_path, capsys):
    out = tmp_path / "hilo.png"
    assert main(["viz", "hilo", str(picture), "--model", "litv2_nano", "--img-size", "32", "--output", str(out)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: HiLo layer 0 (layers.2.blocks.0.attn)")
    assert "4x4 token map: its window size 3 pools it to 2x2 Lo-Fi keys" in err[0] and "9x9 tokens" in err[0]
    assert _format_of(out) == "PNG"
    # the Lo-Fi attention picture of the same layer has the same keys: the same warning
    from hilovit import create_model
    from hilovit.viz import attention_map

    amap = attention_map(create_model("litv2_nano"), torch.randn(1, 3, 32, 32))
    assert amap.kind == "lofi" and small_map_warning(amap.layer, amap.name, amap.tokens, amap.cell) == err[0][9:]
