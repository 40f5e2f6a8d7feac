"""Reading one image file: Pillow's safety limits named by file, the EXIF orientation, any mode to RGB.

Every place that opens a picture in :mod:`hilovit.data` goes through :func:`open_image_file`:

* Pillow refuses an image above twice ``PIL.Image.MAX_IMAGE_PIXELS`` (a possible decompression
  bomb) with an error that names neither the file nor what to do; here it is a ``ValueError``
  naming the file, its pixel count and the limit. Above the limit itself Pillow only warns; here
  the warning is a :class:`LargeImageWarning` (a ``UserWarning``, so the command line shows it)
  naming the file.
* A photo's EXIF ``Orientation`` tag says how the camera was held; :func:`exif_orientation` reads
  it from the header and :func:`apply_orientation` turns the decoded pixels upright, so every image
  is used as a viewer shows it (:func:`oriented_size` gives that geometry before decoding).
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

__all__ = ["LargeImageWarning", "open_image_file", "exif_orientation", "oriented_size", "apply_orientation",
           "decode_image", "open_image", "check_image", "reduce_jpeg_decode"]

PathLike = Union[str, "os.PathLike[str]"]

_ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 upright, 2-8 mirrored and/or rotated
_TRANSPOSED = (5, 6, 7, 8)  # orientations whose upright image has width and height swapped
_BOMB_NUMBERS = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+) pixels")


class LargeImageWarning(UserWarning):
    """An image above Pillow's warning limit ``PIL.Image.MAX_IMAGE_PIXELS``, read anyway (the file is named)."""


def _bomb_message(path: PathLike, error: Exception) -> str:
    numbers = _BOMB_NUMBERS.search(str(error))
    size = f"{int(numbers.group(1)):,} pixels, above Pillow's limit of {int(numbers.group(2)):,}" if numbers \
        else str(error)
    return (f"cannot read image {str(path)!r}: {size} (refused as a possible decompression bomb; "
            "raise PIL.Image.MAX_IMAGE_PIXELS to read it)")


@contextlib.contextmanager
def open_image_file(path: PathLike) -> Iterator[Image.Image]:
    """``with open_image_file(path) as im``: ``PIL.Image.open`` (header only, pixels not decoded) with the
    decompression-bomb checks named by file.

    Raises:
        ValueError: the image is above twice ``PIL.Image.MAX_IMAGE_PIXELS`` (names the file, its pixels
            and the limit). Pillow's other errors (missing file, unknown format) pass unchanged.

    Warns:
        LargeImageWarning: the image is above ``PIL.Image.MAX_IMAGE_PIXELS`` (names the file).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:
            raise ValueError(_bomb_message(path, e)) from None
    for w in caught:  # re-emitted outside the recording block: Pillow's bomb warning named, the others as they were
        if issubclass(w.category, Image.DecompressionBombWarning):
            warnings.warn(LargeImageWarning(f"image {str(path)!r}: {w.message}"), stacklevel=3)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    with im:
        yield im


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened image, read from its header; 1 when it has none."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: use the pixels as stored
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented_size(im: Image.Image) -> Tuple[int, int]:
    """``(width, height)`` of the image as a viewer shows it (the stored size, swapped for orientations 5-8)."""
    width, height = im.size
    return (height, width) if exif_orientation(im) in _TRANSPOSED else (width, height)


def apply_orientation(im: Image.Image, orientation: Optional[int] = None) -> Image.Image:
    """The decoded image turned upright by its EXIF orientation (``orientation`` read if not given); the
    image itself when upright already (no copy)."""
    orientation = exif_orientation(im) if orientation is None else orientation
    if orientation == 1:
        return im
    from PIL import ImageOps

    upright = ImageOps.exif_transpose(im)
    return upright if upright is not None else im


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and arr.max(initial=0) > 255):
            arr = arr / 257.0  # 16-bit -> 8-bit
        elif im.mode == "F" and arr.max(initial=0) <= 1.0:
            arr = arr * 255.0  # float images in [0, 1]
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if "transparency" in im.info and im.mode in ("P", "L", "RGB"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        background.alpha_composite(im)
        im = background
    return im.convert("RGB")


def _to_tensor(rgb: Image.Image) -> torch.Tensor:
    arr = np.array(rgb, dtype=np.uint8)  # (H, W, 3), a writable copy
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def decode_image(path: PathLike, draft: Optional[int] = None) -> Image.Image:
    """Open and fully decode ``path`` to an upright RGB PIL image (any mode; transparency on white; first
    frame of animations; the EXIF orientation applied). ``draft``: let a JPEG decode at a reduced scale
    whose sides stay >= it."""
    with open_image_file(path) as im:
        if draft is not None:
            im.draft("RGB", (int(draft), int(draft)))
        im.load()
        return _to_rgb(apply_orientation(im))


def open_image(image, in_chans: int = 3) -> Image.Image:
    """Decode ``image`` (a path, a PIL image or a uint8 array) to a PIL image in RGB (``L`` for 1 channel).

    Any Pillow mode works: palette and grey images are expanded, transparency is composited on
    white, 16-bit and float images are scaled to 8 bits; animated files give their first frame; a
    file's EXIF orientation is applied.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable image (names the file and the reason), or the model's
            channels are neither 1 nor 3.
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    if isinstance(image, Image.Image):
        rgb = _to_rgb(image)
    else:
        path = Path(image)
        if not path.exists():
            raise FileNotFoundError(f"image {str(path)!r} does not exist")
        if path.is_dir():
            raise ValueError(f"image {str(path)!r} is a directory, not an image file")
        try:
            rgb = decode_image(path)
        except ValueError:
            raise
        except Exception as e:  # noqa: BLE001 - Pillow raises many types
            raise ValueError(f"cannot read image {str(path)!r}: {type(e).__name__}: {e}") from e
    if in_chans == 1:
        return rgb.convert("L")
    if in_chans != 3:
        raise ValueError(f"images can be prepared for 1 or 3 channels, the model has in_chans={in_chans}")
    return rgb


def _jpeg_complete(path: Path, tail: int = 65536) -> bool:
    """A cheap truncation test for JPEG: the end-of-image marker FF D9 near the end of the file."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - tail))
        return b"\xff\xd9" in f.read()


def check_image(path: PathLike) -> Optional[str]:
    """Cheaply check that ``path`` is a readable image, without decoding its pixels.

    Pillow's header parse plus ``Image.verify()`` (which checks PNG chunk CRCs), and for JPEG the
    presence of the end-of-image marker. Returns None when fine, else the reason as a string.
    """
    try:
        with open_image_file(path) as im:
            fmt = im.format
            im.verify()
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...)
        return f"{type(e).__name__}: {e}"
    if fmt in ("JPEG", "MPO") and not _jpeg_complete(Path(path)):
        return "truncated JPEG (no end-of-image marker)"
    return None


def reduce_jpeg_decode(im: Image.Image, room: float) -> float:
    """Let an opened, not yet loaded JPEG decode at 1/2, 1/4 or 1/8 scale (Pillow's draft mode:
    the DCT does the downscaling, so decoding costs a fraction of the full image) when ``room``,
    how many times larger than needed the region of interest is, allows it: the largest factor
    ``f <= room`` is chosen. Returns the factor taken (1.0 for other formats or too little room);
    the same along both sides, so it holds in the upright geometry too."""
    if room < 2 or getattr(im, "format", None) != "JPEG":
        return 1.0
    factor = next(f for f in (8, 4, 2) if f <= room)
    width, height = im.size
    # asking for ceil(size / f) per side makes Pillow pick f or the next smaller factor, never a larger one
    done = im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else "RGB",
                    (-(-width // factor), -(-height // factor)))
    if not done:
        return 1.0
    return width / done[1][2]
