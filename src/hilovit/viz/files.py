"""Pictures written in the format their file name asks for (``.png``, ``.jpg``/``.jpeg``, ``.webp``).

Matplotlib renders the figure to PNG; for the other formats Pillow converts it. The file is
written through a temporary file and renamed, so nothing half-written is left behind.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

__all__ = ["IMAGE_FORMATS", "image_format", "write_figure"]

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def image_format(path: Union[str, os.PathLike]) -> str:
    """Pillow's format name for ``path``'s extension; a ValueError naming the path and the choices
    for an unknown extension (or ``.webp`` where this Pillow cannot write WebP)."""
    suffix = Path(path).suffix.lower()
    fmt = IMAGE_FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(f"output {str(path)!r}: unknown image extension {suffix or '(none)'!r}; use .png, .jpg, "
                         ".jpeg or .webp")
    if fmt == "WEBP":
        from PIL import features

        if not features.check("webp"):
            raise ValueError(f"output {str(path)!r}: this Pillow cannot write WebP; use .png or .jpg")
    return fmt


def write_figure(fig, path: Union[str, os.PathLike], dpi: int = 120, tight: bool = True) -> Path:
    """Save the matplotlib ``fig`` to ``path`` in the format of its extension (atomically); the folder
    is created. Does not close the figure."""
    from hilovit.io import atomic_write

    path = Path(path)
    fmt = image_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"bbox_inches": "tight"} if tight else {}
    with atomic_write(path) as f:
        if fmt == "PNG":
            fig.savefig(f, format="png", dpi=dpi, **extra)
        else:
            from PIL import Image

            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=dpi, **extra)
            buf.seek(0)
            with Image.open(buf) as im:
                im.convert("RGB").save(f, format=fmt, quality=92)
    return path
