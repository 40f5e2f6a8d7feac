"""Reading and writing IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a header followed by a dense big-endian array::

    bytes 0-1   0x00 0x00
    byte  2     element type (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double)
    byte  3     number of dimensions d
    4*d bytes   the size of each dimension, big-endian uint32
    ...         prod(sizes) elements, big-endian, C order

Files may be gzipped; gzip is recognised by its magic bytes (1f 8b), whatever the name.

:class:`IdxDataset` holds a folder of the four MNIST-format files (Fashion-MNIST by default) in
memory; :func:`find_idx_dir` finds that folder.
"""

from __future__ import annotations

import copy
import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from hilovit.io import atomic_write

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
    with atomic_write(path, "wb") as f:
        f.write(payload)
    return path


# ----------------------------------------------------------------------------- the IDX dataset
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
ENV_DATA_DIR = "HILOVIT_DATA_DIR"
DEFAULT_IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_FASHION_ALIASES = {"fashion-mnist", "fashion_mnist", "fashionmnist"}
# The first labels of each Fashion-MNIST split: recognises the data in a renamed folder.
_FASHION_LABEL_PREFIX = {
    "train": (9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9),
    "test": (9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1),
}


# ----------------------------------------------------------------------------- IDX folders
def _idx_file(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _is_idx_dir(folder: Path) -> bool:
    return folder.is_dir() and all(_idx_file(folder, s) for pair in IDX_FILES.values() for s in pair)


def find_idx_dir(data_dir: Optional[PathLike] = None) -> Path:
    """Find the folder holding the four MNIST-format IDX files.

    A folder counts when it has ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or ``.gz``.

    Args:
        data_dir: an explicit folder. When given it is the only one tried (a wrong
            ``--data-dir`` is reported, never silently replaced). When None: the
            environment variable ``HILOVIT_DATA_DIR`` if set, then
            ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).

    Returns:
        The folder, as a Path.

    Raises:
        FileNotFoundError: no candidate holds the four files; the message lists the folders tried.
    """
    if data_dir is not None:
        candidates = [Path(data_dir).expanduser()]
    else:
        candidates = []
        env = os.environ.get(ENV_DATA_DIR, "").strip()
        if env:
            candidates.append(Path(env).expanduser())
        candidates.append(DEFAULT_IDX_DIR)
    for folder in candidates:
        if _is_idx_dir(folder):
            return folder
    names = ", ".join(s for pair in IDX_FILES.values() for s in pair)
    tried = ", ".join(repr(str(c)) for c in candidates)
    raise FileNotFoundError(
        f"no IDX dataset found: tried {tried} (each needs {names}, plain or .gz). "
        f"Install Fashion-MNIST with `apt-get install dataset-fashion-mnist`, or point to a folder "
        f"with --data-dir / data_dir= or the {ENV_DATA_DIR} environment variable."
    )


def _as_index_array(indices, length: int, what: str) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.dtype == bool or idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise TypeError(f"{what} must be a 1-D sequence of integer indices, got {type(indices).__name__}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= length):
        raise ValueError(f"{what} has indices outside [0, {length}): min {idx.min()}, max {idx.max()}")
    return idx


class IdxDataset(Dataset):
    """Images and labels from IDX files (Fashion-MNIST by default), held in memory.

    Args:
        root: folder with the four IDX files; None resolves it with :func:`find_idx_dir`
            (``HILOVIT_DATA_DIR``, then ``/usr/share/datasets/fashion-mnist``).
        split: ``'train'`` (``train-*``) or ``'test'`` (``t10k-*``).
        classes: class names; None gives :data:`FASHION_MNIST_CLASSES` when the data is
            Fashion-MNIST (the folder's name contains "fashion", or its first labels match), else
            ``'0'``, ``'1'``, ... (at least ten names, more if the labels need them).
        subset: an int N keeps the first N samples; a sequence of indices keeps those.

    Attributes:
        images: uint8 tensor (N, 1, H, W) (28x28 for (Fashion-)MNIST).
        targets: int64 tensor (N,).
        classes: list of class names; ``len(classes)`` is the number of classes.
        root, split: where the data came from.

    Sample ``ds[i]``: ``(uint8 tensor (1, H, W), int label)``.

    Raises:
        ValueError: unknown split, images/labels count mismatch, labels outside
            ``[0, len(classes))``, images that are not uint8 (N, H, W).
        FileNotFoundError: no IDX folder.

    Example::

        >>> ds = IdxDataset(split="test")
        >>> x, y = ds[0]; x.shape, ds.classes[y]
        (torch.Size([1, 28, 28]), 'Ankle boot')
    """

    def __init__(
        self,
        root: Optional[PathLike] = None,
        split: str = "train",
        classes: Optional[Sequence[str]] = None,
        subset: Union[int, Sequence[int], None] = None,
    ) -> None:
        if split not in IDX_FILES:
            raise ValueError(f"IdxDataset: split={split!r}, expected 'train' or 'test'")
        self.root = find_idx_dir(root)
        self.split = split
        img_path, lbl_path = (_idx_file(self.root, s) for s in IDX_FILES[split])
        images, labels = read_idx(img_path), read_idx(lbl_path)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise ValueError(
                f"IdxDataset: {img_path} holds {images.dtype} images of shape {images.shape}, "
                "expected uint8 (N, H, W)"
            )
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(
                f"IdxDataset: {lbl_path} holds {labels.dtype} labels of shape {labels.shape}, "
                "expected integer (N,)"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"IdxDataset: {img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels"
            )
        labels = labels.astype(np.int64)
        self.is_fashion_mnist = self._looks_like_fashion_mnist(labels)
        if classes is None:
            if self.is_fashion_mnist:
                classes = FASHION_MNIST_CLASSES
            else:
                top = int(labels.max()) + 1 if labels.size else 0
                classes = [str(i) for i in range(max(10, top))]
        self.classes = [str(c) for c in classes]
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.classes)):
            bad = labels[(labels < 0) | (labels >= len(self.classes))]
            raise ValueError(
                f"IdxDataset: {lbl_path} has labels outside [0, {len(self.classes)}) for the "
                f"{len(self.classes)} classes (e.g. {int(bad[0])}, {bad.size} in all)"
            )
        self.images = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W) uint8
        self.targets = torch.from_numpy(labels)
        if subset is not None:
            if isinstance(subset, (int, np.integer)) and not isinstance(subset, bool):
                if subset < 1:
                    raise ValueError(f"IdxDataset: subset={subset}, expected a positive count")
                subset = range(min(int(subset), len(self.targets)))
            idx = torch.from_numpy(_as_index_array(subset, len(self.targets), "IdxDataset: subset"))
            self.images, self.targets = self.images[idx], self.targets[idx]

    def _looks_like_fashion_mnist(self, labels: np.ndarray) -> bool:
        if "fashion" in self.root.name.lower():
            return True
        prefix = _FASHION_LABEL_PREFIX[self.split]
        return len(labels) >= len(prefix) and tuple(int(v) for v in labels[: len(prefix)]) == prefix

    def select(self, indices: Sequence[int]) -> IdxDataset:
        """A new dataset holding the samples at ``indices`` (classes and root kept)."""
        idx = torch.from_numpy(_as_index_array(indices, len(self), "IdxDataset.select: indices"))
        out = copy.copy(self)
        out.images, out.targets = self.images[idx], self.targets[idx]
        return out

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.images[index], int(self.targets[index])

    def __repr__(self) -> str:
        return (f"IdxDataset(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"classes={len(self.classes)}, size={tuple(self.images.shape[1:])})")
