"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a header followed by a dense big-endian array::

    bytes 0-1   0x00 0x00
    byte  2     element type (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double)
    byte  3     number of dimensions d
    4*d bytes   the size of each dimension, big-endian uint32
    ...         prod(sizes) elements, big-endian, C order

Files may be gzipped; gzip is recognised by its magic bytes (1f 8b), whatever the name.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODE_OF_KIND = {(d.kind, d.itemsize): code for code, d in IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt gzip stream
        raise ValueError(f"IDX file {str(path)!r}: corrupt or truncated gzip data ({e})") from e


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a numpy array.

    Args:
        path: the file. Gzip is detected from the first two bytes, not from the name.

    Returns:
        An array of the shape stored in the header, e.g. (N, 28, 28) uint8 for an
        ``idx3-ubyte`` image file or (N,) uint8 for labels, in native byte order
        (uint8, int8, int16, int32, float32 or float64) and writable.

    Raises:
        ValueError: bad magic bytes, an unknown type code, a truncated header or data,
            or trailing bytes after the data; the message names the file.
        FileNotFoundError: the file does not exist.

    Example::

        >>> images = read_idx("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
        >>> images.shape, images.dtype
        ((60000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    data = _read_bytes(path)
    name = str(path)
    if len(data) < 4:
        raise ValueError(f"IDX file {name!r} is truncated: {len(data)} bytes, expected at least a 4-byte header")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"IDX file {name!r} has bad magic bytes {data[:4].hex()}: expected 00 00 <type> <ndim>"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"IDX file {name!r} has unknown element type 0x{code:02X}; expected one of {known}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(
            f"IDX file {name!r} is truncated in its header: {len(data)} bytes, "
            f"the {ndim} dimension sizes need {header}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    count = int(np.prod(shape, dtype=np.int64)) if ndim else 1
    expected = header + count * dtype.itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "longer than its header says"
        raise ValueError(
            f"IDX file {name!r} is {what}: header shape {tuple(shape)} of {dtype.name} needs "
            f"{expected} bytes, found {len(data)}"
        )
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header)
    # astype copies: the result is writable and in native byte order.
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def write_idx(path: PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (atomically: a temporary file, then a rename).

    Args:
        path: destination. ``compress=None`` gzips when the name ends in ``.gz``.
        array: an array of dtype uint8, int8, int16, int32, float32 or float64, 0 to 255 dimensions.
        compress: force gzip on (True) or off (False).

    Returns:
        The path written.

    Raises:
        TypeError: ``array`` has a dtype that IDX cannot store (e.g. int64, bool).
        ValueError: more than 255 dimensions.
    """
    array = np.asarray(array)
    code = _CODE_OF_KIND.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise TypeError(
            f"write_idx: array dtype {array.dtype} cannot be stored in IDX; "
            "expected uint8, int8, int16, int32, float32 or float64"
        )
    if array.ndim > 255:
        raise ValueError(f"write_idx: array has {array.ndim} dimensions, IDX stores at most 255")
    path = Path(path)
    if compress is None:
        compress = path.name.endswith(".gz")
    payload = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    payload += np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress:
        payload = gzip.compress(payload, mtime=0)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
