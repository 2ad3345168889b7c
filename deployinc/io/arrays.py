"""The one reader of the arrays a user hands in: ``.npy`` files and ``.npz`` archives (``verify --inputs``,
``verify --load-outputs``, ``bench --inputs``).

Everything is checked before the data is read, from what the file declares: a regular file (not a FIFO or a
device), numbers only (bool, integers, floats: no objects, strings, bytes or records), at most
:data:`MAX_NDIM` dimensions, and a declared size that fits in memory (each array's ``.npy`` header is read from
its zip member first, so a header declaring 3e12 elements is refused without reading anything). Then the data is
read, and a damaged archive (a bad CRC, corrupt compressed data, a truncated member) is refused too. Every
problem is a :class:`~deployinc.errors.BadInputError` with the file and a hint; nothing is ever unpickled.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
import zlib
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from ..core import limits
from ..errors import BadInputError

#: Kinds of dtype accepted: bool, signed and unsigned integers, floats.
NUMERIC_KINDS = "biuf"
#: Most dimensions an array may have (a batch of images has 4).
MAX_NDIM = 8
#: Largest ``.npy`` header read (numpy's own default bound).
MAX_HEADER = 10_000
#: Errors a damaged file raises while it is read (CRC, compressed data, truncation, headers).
_DAMAGED = (zipfile.BadZipFile, zlib.error, ValueError, EOFError, OSError, NotImplementedError, RuntimeError)


def _open_regular(path: str, what: str, hint: str) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file (a FIFO would block, a device never end)."""
    if not os.path.lexists(path):
        raise BadInputError(f"{what} file {path} does not exist", hint=hint)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise BadInputError(f"{what} file {path} cannot be read: {exc.strerror}", hint=hint) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError(f"{what} {path} is not a regular file", hint=hint)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _header(stream: IO[bytes], label: str, hint: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, fortran_order, dtype) of the ``.npy`` header at the start of ``stream``."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream, max_header_size=MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(stream, max_header_size=MAX_HEADER)
        else:
            raise ValueError(f"npy format version {version[0]}.{version[1]} (record types) is not read here")
    except (zipfile.BadZipFile, zlib.error) as exc:  # the member's CRC (checked where a small one ends) or its deflate data
        raise BadInputError(f"{label} is damaged: {str(exc)[:160]}", hint=hint) from exc
    except _DAMAGED as exc:
        raise BadInputError(f"{label} is not a readable numpy array: {str(exc)[:160]}", hint=hint) from exc
    return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype)


def _check_declared(label: str, shape: tuple[int, ...], dtype: np.dtype[Any], hint: str) -> int:
    """Refuse a non-numeric dtype or too many dimensions; returns the declared bytes."""
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        what = {"O": "Python objects", "U": "strings", "S": "bytes", "V": "records", "c": "complex numbers", "M": "dates", "m": "time spans"}
        raise BadInputError(f"{label} holds {what.get(dtype.kind, dtype.str)} ({dtype.str}), not numbers", hint=hint)
    if len(shape) > MAX_NDIM:
        raise BadInputError(f"{label} has {len(shape)} dimensions (at most {MAX_NDIM} are read)", hint=hint)
    return math.prod(shape) * dtype.itemsize


def _read_data(stream: IO[bytes], label: str, shape: tuple[int, ...], fortran: bool, dtype: np.dtype[Any], hint: str) -> np.ndarray:
    """The array after the header, read to the end of ``stream`` (where zipfile checks the member's CRC)."""
    count = math.prod(shape)
    arr = np.empty(count, dtype=dtype)
    view = memoryview(arr).cast("B") if count else memoryview(b"")  # type: ignore[arg-type]
    got = 0
    try:
        while got < len(view):
            n = stream.readinto(view[got:])  # type: ignore[attr-defined]
            if not n:
                break
            got += n
        if got < len(view):
            raise EOFError(f"the data ends after {got} of {len(view)} bytes")
        while stream.read(1 << 20):  # to the end: a zip member's CRC is checked there
            pass
    except _DAMAGED as exc:
        raise BadInputError(f"{label} is damaged: {str(exc)[:160]}", hint=hint) from exc
    return arr.reshape(shape, order="F" if fortran else "C")


def read_npy(path: str | os.PathLike[str], what: str, hint: str) -> np.ndarray:
    """The array of an ``.npy`` file, checked as the module says.

    Raises:
        BadInputError: Missing, not a regular file, not numbers, too large for memory, damaged.
    """
    p = os.fspath(path)
    with _open_regular(p, what, hint) as f:
        label = f"{what} file {p}"
        shape, fortran, dtype = _header(f, label, hint)
        need = _check_declared(label, shape, dtype, hint)
        _check_memory(label, need, _declared(shape, dtype) + " values")
        return _read_data(f, label, shape, fortran, dtype, hint)


def _declared(shape: tuple[int, ...], dtype: np.dtype[Any]) -> str:
    return f"{' x '.join(str(d) for d in shape) or 'a scalar of'} {dtype.name}"


def _check_memory(label: str, need: int, detail: str) -> None:
    limits.check_fits(
        label, need, f"it declares {detail}", factor=limits.INPUT_COPIES,
        hint="give a smaller array (or check that the file is the one meant: its header may be damaged)",
    )  # fmt: skip


def read_npz(path: str | os.PathLike[str], what: str, hint: str, select: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive whose names ``select`` accepts (all by default), by name (without
    ``.npy``). Every selected header is read and checked, and their total size against memory, before any data.

    Raises:
        BadInputError: Missing, not a regular file, not a zip archive, a selected member that is not an ``.npy``
            array of numbers, too large for memory, damaged (a bad CRC, corrupt compressed data).
    """
    p = os.fspath(path)
    label = f"{what} file {p}"
    with _open_regular(p, what, hint) as f:
        try:
            zf = zipfile.ZipFile(f)
        except _DAMAGED as exc:
            raise BadInputError(f"{label} is not a readable .npz (zip) archive: {str(exc)[:160]}", hint=hint) from exc
        with zf:
            members = [i for i in zf.infolist() if i.filename.endswith(".npy") and (select is None or select(i.filename[: -len(".npy")]))]
            declared: list[tuple[zipfile.ZipInfo, tuple[int, ...], bool, np.dtype[Any]]] = []
            total, parts, wrong = 0, [], []
            for info in members:
                name = info.filename[: -len(".npy")]
                with _member(zf, info, label, hint) as stream:
                    shape, fortran, dtype = _header(stream, f"{label}: array {name!r}", hint)
                need = _check_declared(f"{label}: array {name!r}", shape, dtype, hint)
                if not need <= info.file_size <= need + MAX_HEADER + 64:  # checked after the memory, which says more
                    wrong.append(f"{label}: array {name!r} holds {info.file_size} bytes for {need} bytes of data")
                declared.append((info, shape, fortran, dtype))
                total += need
                parts.append(f"{name} ({_declared(shape, dtype)})")
            _check_memory(label, total, ", ".join(parts[:4]) + (f" and {len(parts) - 4} more" if len(parts) > 4 else ""))
            if wrong:
                raise BadInputError(wrong[0], hint=hint)
            out: dict[str, np.ndarray] = {}
            for info, shape, fortran, dtype in declared:
                name = info.filename[: -len(".npy")]
                with _member(zf, info, label, hint) as stream:
                    _header(stream, f"{label}: array {name!r}", hint)
                    out[name] = _read_data(stream, f"{label}: array {name!r}", shape, fortran, dtype, hint)
            return out


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, hint: str) -> IO[bytes]:
    try:
        return zf.open(info)
    except _DAMAGED as exc:
        raise BadInputError(f"{label}: member {info.filename!r} cannot be read: {str(exc)[:160]}", hint=hint) from exc
