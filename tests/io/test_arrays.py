"""The one reader of user arrays (.npy, .npz): numbers only, the declared size checked against memory before any
data is read, damaged archives (bad CRC, corrupt deflate data, truncated members) refused as bad input."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deployinc.errors import BadInputError
from deployinc.io.arrays import read_npy, read_npz

HINT = "write it with verify --save-outputs"


def _header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _flip_data_byte(src: Path, dst: Path, member: str = "input.npy") -> Path:
    """A copy of an uncompressed archive with one data byte of ``member`` changed: its CRC no longer matches."""
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = zf.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start + info.file_size - 5] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def test_a_good_archive_reads_back_exactly(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32)
    f = np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3))
    np.savez_compressed(tmp_path / "a.npz", input=x, **{"reference/logits": f, "meta": np.array("text")})
    got = read_npz(tmp_path / "a.npz", "--load-outputs", HINT, select=lambda n: n != "meta")
    assert set(got) == {"input", "reference/logits"}  # a member not asked for is not read (a string here)
    assert np.array_equal(got["input"], x) and np.array_equal(got["reference/logits"], f)
    np.save(tmp_path / "a.npy", x)
    assert np.array_equal(read_npy(tmp_path / "a.npy", "--inputs", HINT), x)


@pytest.mark.parametrize(
    "arrays, says",
    [
        ({"input": np.array([None, {"a": 1}], dtype=object)}, "holds Python objects"),
        ({"input": np.array(["a", "b"])}, "holds strings"),
        ({"input": np.array([b"a"])}, "holds bytes"),
        ({"input": np.zeros(2, dtype=[("a", "<f4")])}, "holds records"),
        ({"input": np.zeros(2, dtype=np.complex64)}, "holds complex numbers"),
        ({"input": np.zeros((1,) * 9, np.float32)}, "has 9 dimensions"),
    ],
)
def test_what_is_not_numbers_is_refused_without_unpickling(tmp_path: Path, arrays: dict, says: str) -> None:
    np.savez(tmp_path / "x.npz", **arrays)
    with pytest.raises(BadInputError, match=says) as e:
        read_npz(tmp_path / "x.npz", "--inputs", HINT)
    assert e.value.hint == HINT
    np.save(tmp_path / "x.npy", next(iter(arrays.values())), allow_pickle=True)
    with pytest.raises(BadInputError, match=says):
        read_npy(tmp_path / "x.npy", "--inputs", HINT)


def test_a_header_declaring_3e12_elements_is_refused_before_reading(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("input.npy", _header((3_000_000_000_000,)) + b"\0" * 64)
    with pytest.raises(BadInputError, match=r"needs at least .* TiB: it declares input \(3000000000000 float32\)"):
        read_npz(tmp_path / "huge.npz", "--inputs", HINT)
    (tmp_path / "huge.npy").write_bytes(_header((3_000_000_000_000,)))
    with pytest.raises(BadInputError, match="needs at least .* TiB"):
        read_npy(tmp_path / "huge.npy", "--inputs", HINT)
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as zf:  # fits in memory, but the member is far too short
        zf.writestr("input.npy", _header((1000, 3, 32, 32)) + b"\0" * 64)
    with pytest.raises(BadInputError, match="holds .* bytes for 12288000 bytes of data"):
        read_npz(tmp_path / "short.npz", "--inputs", HINT)
    (tmp_path / "short.npy").write_bytes(_header((1000,)) + b"\0" * 64)
    with pytest.raises(BadInputError, match="damaged: the data ends after 64 of 4000 bytes"):
        read_npy(tmp_path / "short.npy", "--inputs", HINT)


def test_damaged_archives_are_bad_input(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "good.npz", input=x)
    crc = _flip_data_byte(tmp_path / "good.npz", tmp_path / "crc.npz")
    with pytest.raises(BadInputError, match="is damaged: Bad CRC-32"):
        read_npz(crc, "--inputs", HINT)
    np.savez(tmp_path / "big.npz", input=np.zeros((4, 3, 64, 64), np.float32))  # the CRC is checked past the header
    with pytest.raises(BadInputError, match="is damaged: Bad CRC-32"):
        read_npz(_flip_data_byte(tmp_path / "big.npz", tmp_path / "bigcrc.npz"), "--inputs", HINT)
    np.savez_compressed(tmp_path / "c.npz", input=x)
    data = bytearray((tmp_path / "c.npz").read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the deflate stream
    (tmp_path / "corrupt.npz").write_bytes(bytes(data))
    with pytest.raises(BadInputError, match="damaged|not a readable"):
        read_npz(tmp_path / "corrupt.npz", "--inputs", HINT)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(BadInputError, match="not a readable .npz"):
        read_npz(tmp_path / "text.npz", "--inputs", HINT)
    (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:300])
    with pytest.raises(BadInputError):
        read_npz(tmp_path / "cut.npz", "--inputs", HINT)


def test_a_fifo_or_a_missing_file_is_refused_without_blocking(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        read_npz(tmp_path / "nope.npz", "--inputs", HINT)
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(BadInputError, match="is not a regular file"):
        read_npz(tmp_path / "pipe.npz", "--inputs", HINT)
    with pytest.raises(BadInputError, match="is not a regular file"):
        read_npy(tmp_path / "pipe.npz", "--inputs", HINT)
