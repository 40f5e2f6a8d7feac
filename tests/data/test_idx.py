import gzip
import struct

import numpy as np
import pytest

from hilovit.data import read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


def _sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=np.int64).astype(dtype)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_all_dtypes(tmp_path, dtype, gz):
    arr = _sample(dtype, (5, 3, 4))
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz
    out = read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (5, 3, 4)
    np.testing.assert_array_equal(out, arr)
    assert out.flags.writeable
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


@pytest.mark.parametrize("shape", [(7,), (2, 3, 4, 5), ()])
def test_round_trip_shapes(tmp_path, shape):
    arr = _sample(np.int32, shape, seed=1)
    write_idx(tmp_path / "s.idx", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "s.idx"), arr)


def test_hand_written_header_big_endian(tmp_path):
    # Independent of write_idx: two int16 values 258 and -2, big-endian, shape (2,).
    raw = bytes([0, 0, 0x0B, 1]) + struct.pack(">I", 2) + struct.pack(">hh", 258, -2)
    (tmp_path / "plain").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain"), np.array([258, -2], np.int16))
    # gzip detected by magic bytes even without a .gz name, and a plain file named .gz is read as plain
    (tmp_path / "zipped.idx").write_bytes(gzip.compress(raw))
    (tmp_path / "notzipped.gz").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "zipped.idx"), [258, -2])
    np.testing.assert_array_equal(read_idx(tmp_path / "notzipped.gz"), [258, -2])


def test_mnist_style_labels(tmp_path):
    raw = bytes([0, 0, 8, 1]) + struct.pack(">I", 3) + bytes([9, 0, 3])
    (tmp_path / "labels").write_bytes(raw)
    out = read_idx(tmp_path / "labels")
    assert out.dtype == np.uint8 and out.tolist() == [9, 0, 3]


def _write(tmp_path, name, data, gz=False):
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_data(tmp_path, gz):
    raw = bytes([0, 0, 8, 2]) + struct.pack(">II", 4, 4) + bytes(10)  # needs 16 data bytes
    path = _write(tmp_path, "short.idx", raw, gz)
    with pytest.raises(ValueError, match="short.idx.*truncated"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    raw = bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes(5)
    with pytest.raises(ValueError, match="long.idx.*longer than its header"):
        read_idx(_write(tmp_path, "long.idx", raw))


def test_truncated_header(tmp_path):
    with pytest.raises(ValueError, match="hdr.idx.*truncated"):
        read_idx(_write(tmp_path, "hdr.idx", bytes([0, 0, 8, 3]) + b"\x00\x00"))
    with pytest.raises(ValueError, match="tiny.idx.*truncated"):
        read_idx(_write(tmp_path, "tiny.idx", b"\x00\x00"))


def test_truncated_gzip_stream(tmp_path):
    raw = bytes([0, 0, 8, 1]) + struct.pack(">I", 1000) + bytes(range(256)) * 4
    blob = gzip.compress(raw)
    path = tmp_path / "cut.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="cut.gz.*gzip"):
        read_idx(path)


def test_bad_magic_and_type(tmp_path):
    with pytest.raises(ValueError, match="magic.idx.*bad magic"):
        read_idx(_write(tmp_path, "magic.idx", b"\x12\x34\x08\x01" + bytes(8)))
    with pytest.raises(ValueError, match="type.idx.*element type 0x07"):
        read_idx(_write(tmp_path, "type.idx", b"\x00\x00\x07\x01" + struct.pack(">I", 1) + bytes(1)))


def test_write_rejects_unstorable_dtype(tmp_path):
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "x.idx", np.zeros(3, np.int64))
