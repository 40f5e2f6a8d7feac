"""Reading image files: the EXIF orientation everywhere a picture is decoded, and Pillow's size limits named.

Photos are built upright in NumPy, stored turned the way a camera stores them (``np.rot90``) with the
EXIF orientation that turns them back; every reader must give the upright picture.
"""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from hilovit.cli import main
from hilovit.data.folders import ImageFolderDataset, check_image, decode_image
from hilovit.data.images import LargeImageWarning, open_image_file, oriented_size
from hilovit.data.segmentation import load_image_full, load_mask

ORIENTATION = 0x0112
# EXIF orientation -> how the stored pixels relate to the upright picture (np.rot90 turns counter-clockwise)
STORED = {1: lambda a: a, 3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, 1), 8: lambda a: np.rot90(a, -1),
          2: lambda a: a[:, ::-1]}


def upright(height=20, width=30):
    """Four quadrants of different colours: any turn or mirror of it is told apart."""
    a = np.zeros((height, width, 3), np.uint8)
    a[: height // 2, : width // 2] = (250, 10, 10)
    a[: height // 2, width // 2:] = (10, 250, 10)
    a[height // 2:, : width // 2] = (10, 10, 250)
    a[height // 2:, width // 2:] = (250, 250, 10)
    return a


def save_oriented(path, picture, orientation, **kw):
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(np.ascontiguousarray(STORED[orientation](picture))).save(path, exif=exif, **kw)
    return path


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_decode_image_turns_photos_upright(tmp_path, orientation):
    pic = upright()
    path = save_oriented(tmp_path / "photo.png", pic, orientation)
    assert np.array_equal(np.asarray(decode_image(path)), pic)
    with open_image_file(path) as im:
        assert oriented_size(im) == (30, 20)


def test_segmentation_images_and_masks_upright(tmp_path):
    pic = upright()
    label = ((pic[..., 0] > 128) + 2 * (pic[..., 1] > 128)).astype(np.uint8)
    img = save_oriented(tmp_path / "a.png", pic, 6)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(label, 1)), "L").save(tmp_path / "m.png", exif=exif)
    assert torch.equal(load_image_full(img), torch.from_numpy(pic).permute(2, 0, 1))
    assert np.array_equal(load_mask(tmp_path / "m.png"), label.astype(np.int64))


def _quadrant_means(sample):
    x = sample.permute(1, 2, 0).numpy().astype(np.float64)
    h, w = x.shape[0] // 2, x.shape[1] // 2
    return [x[:h, :w].mean((0, 1)), x[:h, w:].mean((0, 1)), x[h:, :w].mean((0, 1)), x[h:, w:].mean((0, 1))]


@pytest.mark.parametrize("draft", ["train", "off"])
def test_training_crop_is_drawn_on_the_upright_photo(tmp_path, draft):
    """A JPEG stored 400 wide, 240 high, shown 240 x 400: a crop of the whole upright picture (area 1, aspect
    0.6) fits only in the upright geometry; with the JPEG decoded at 1/8 (draft) the box must follow."""
    pic = upright(400, 240)
    (tmp_path / "c").mkdir()
    save_oriented(tmp_path / "c" / "0.jpg", pic, 6, quality=95)
    ds = ImageFolderDataset(tmp_path, 16, draft=draft).set_train_crop(scale=(1.0, 1.0), ratio=(0.6, 0.6))
    sample, _ = ds[0]
    assert sample.shape == (3, 16, 16)
    for got, want in zip(_quadrant_means(sample), _quadrant_means(torch.from_numpy(pic).permute(2, 0, 1))):
        assert np.abs(got - want).max() < 25, (got, want)


# --------------------------------------------------------------------------- Pillow's limits
def test_decompression_bomb_is_a_named_error(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (100, 50)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # refused above 4000 pixels
    with pytest.raises(ValueError, match=r"cannot read image '.*huge.png': 5,000 pixels, above Pillow's limit of "
                                         r"4,000 .*MAX_IMAGE_PIXELS"):
        decode_image(path)
    with pytest.raises(ValueError, match="huge.png"):
        load_image_full(path)
    assert "5,000 pixels" in check_image(path)


def test_large_image_warning_names_the_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "large.png"
    Image.new("RGB", (60, 50), (20, 30, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 3000 pixels: above the limit, below twice it
    with pytest.warns(LargeImageWarning, match=r"image '.*large.png': Image size \(3000 pixels\) exceeds limit"):
        assert decode_image(path).size == (60, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow's own, unnamed, never escapes
        with pytest.warns(LargeImageWarning):
            load_image_full(path)
    # the command line shows it (Pillow's was a RuntimeWarning, which predict did not show)
    from hilovit import create_model
    from hilovit.models.checkpoint import save_safetensors

    ckpt = tmp_path / "model.safetensors"
    save_safetensors(create_model("litv2_nano", num_classes=3).state_dict(), ckpt,
                     metadata={"model": "litv2_nano", "mean": "0.5", "std": "0.5"})
    assert main(["predict", str(path), "--checkpoint", str(ckpt)]) == 0
    err = capsys.readouterr().err
    assert "hilovit predict: note: image '" in err and "large.png" in err and "3000 pixels" in err
