"""ONNX files read and written safely: checked before any runtime sees them (empty, truncated, not protobuf, a Git
LFS pointer, text fields that are not UTF-8, external data that points outside the model's folder, through a
symlink or a hardlink, or is shorter than declared), and written atomically with their external data."""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import OnnxFileError
from .atomic import atomic_write_many, check_output_path

if TYPE_CHECKING:  # pragma: no cover
    import onnx

#: Tensors at least this large go to external data when a model needs it.
_EXTERNAL_MIN_BYTES = 1024
#: protobuf refuses messages of 2 GiB; stay clear of it.
_PROTOBUF_LIMIT = 2**31 - 2**24

@dataclass
class OnnxFile:
    """An ONNX model read from disk and checked, with where it came from."""

    model: onnx.ModelProto
    path: Path
    has_external_data: bool


def _external_tensors(model: onnx.ModelProto) -> Iterator[Any]:
    from onnx import TensorProto
    from onnx.external_data_helper import _get_all_tensors

    for t in _get_all_tensors(model):
        if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL:
            yield t


def _check_external_data(model: onnx.ModelProto, base: Path) -> bool:
    """Refuse external data that could read outside the model's folder. Return whether there is any."""
    found = False
    base_real = base.resolve()
    for tensor in _external_tensors(model):
        found = True
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        name = tensor.name or "<unnamed>"
        if not loc:
            raise OnnxFileError(f"tensor {name!r} has external data with no location", hint="re-export the model")
        if "\x00" in loc or len(loc) > 1024 or any(len(part) > 255 for part in re.split(r"[\\/]", loc)):
            shown = loc.replace("\x00", "\\0")[:60]
            raise OnnxFileError(
                f"tensor {name!r} has an external-data location that is no file name ({shown!r}"
                + (f", {len(loc)} characters" if len(loc) > 60 else "") + ")",
                hint="the file is damaged or hostile; export it again",
            )
        for field_name in ("offset", "length"):
            value = info.get(field_name)
            if value is not None and not (value.isascii() and value.isdigit()):
                raise OnnxFileError(
                    f"tensor {name!r} has external-data {field_name} {value[:40]!r}, not a non-negative integer",
                    hint="the file is damaged; export it again",
                )
        p = Path(loc)
        if p.is_absolute() or loc.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", loc):
            raise OnnxFileError(
                f"tensor {name!r} points at an absolute external-data path {loc!r}",
                hint="external data must sit beside the model under a relative name; refusing to read it",
            )
        if ".." in re.split(r"[\\/]", loc):
            raise OnnxFileError(
                f"tensor {name!r} has external-data location {loc!r} that leaves the model's folder",
                hint="external data must sit beside the model; refusing to read it",
            )
        full = base / p
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            raise OnnxFileError(
                f"external data {loc!r} of tensor {name!r} is missing (looked in {base})",
                hint="copy the .data file next to the .onnx file",
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise OnnxFileError(
                f"external data {loc!r} of tensor {name!r} is a symlink", hint="copy the real file beside the model"
            )
        if not stat.S_ISREG(st.st_mode):
            raise OnnxFileError(f"external data {loc!r} of tensor {name!r} is not a regular file", hint="re-export")
        if st.st_nlink > 1:
            raise OnnxFileError(
                f"external data {loc!r} of tensor {name!r} is a hardlink ({st.st_nlink} links)",
                hint="copy the file (cp, not ln) beside the model",
            )
        if not full.resolve().is_relative_to(base_real):
            raise OnnxFileError(f"external data {loc!r} of tensor {name!r} resolves outside {base}", hint="refusing")
        offset = int(info.get("offset", 0) or 0)
        length = info.get("length")
        if length is not None and offset + int(length) > st.st_size:
            raise OnnxFileError(
                f"external data {loc!r} of tensor {name!r} is shorter than declared "
                f"({st.st_size} bytes, needs {offset + int(length)})",
                hint="the .data file is truncated; copy or export it again",
            )
    return found


def _check_text_fields(model: onnx.ModelProto, path: Path) -> None:
    """Refuse a graph whose names are not valid UTF-8 (protobuf hands such string fields out as bytes)."""

    def bad(value: Any) -> bool:
        return not isinstance(value, str)

    g = model.graph
    for i, node in enumerate(g.node):
        fields = [node.op_type, node.domain, node.name, *node.input, *node.output]
        if any(bad(v) for v in fields):
            raise OnnxFileError(
                f"{path}: node {i} has a name or op type that is not valid UTF-8 text",
                hint="the file is damaged; export it again",
            )
    for v in [*g.input, *g.output, *g.initializer]:
        if bad(v.name):
            raise OnnxFileError(f"{path}: a graph input, output or initializer name is not valid UTF-8 text", hint="the file is damaged; export it again")
    for o in model.opset_import:
        if bad(o.domain):
            raise OnnxFileError(f"{path}: an opset domain is not valid UTF-8 text", hint="the file is damaged; export it again")


def load_onnx(path: str | os.PathLike[str], *, load_external: bool = True, check_graph: bool = True) -> OnnxFile:
    """Read and check an ONNX file from disk: the one front door of every command that reads one.

    Args:
        path: The file.
        load_external: Read external data into the model.
        check_graph: Refuse a graph no runtime would run (:func:`deployinc.core.graph.graph_problem`: opset,
            custom operators, cycles); ``deployinc check`` turns this off to report it instead.

    Raises:
        OnnxFileError: Missing, empty, a Git LFS pointer, not protobuf, truncated, with unsafe or malformed
            external data, or (``check_graph``) a graph ONNX Runtime would refuse.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise OnnxFileError(f"ONNX file {path} does not exist", hint="check the path, or run deployinc export first")
    if not path.is_file():
        raise OnnxFileError(f"{path} is not a file", hint="give the path of an .onnx file")
    size = path.stat().st_size
    if size == 0:
        raise OnnxFileError(f"ONNX file {path} is empty", hint="the export or copy was interrupted; export again")
    with open(path, "rb") as f:
        head = f.read(200)
    if head.startswith(b"version https://git-lfs"):
        raise OnnxFileError(f"{path} is a Git LFS pointer, not the model", hint="run git lfs pull to fetch the file")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise OnnxFileError(
            f"{path} is not a valid ONNX model (truncated, or not ONNX protobuf): {str(exc)[:120]}",
            hint="export it again, or check that the file is the .onnx model",
        ) from exc
    if not model.HasField("graph") or (len(model.graph.node) == 0 and len(model.graph.output) == 0):
        raise OnnxFileError(f"{path} holds no ONNX graph", hint="check that the file is an .onnx model")
    _check_text_fields(model, path)
    has_external = _check_external_data(model, path.parent)
    if check_graph:
        from ..core.graph import graph_problem  # lazy: core.graph imports numpy; the CLI imports deployinc.io for --help

        problem = graph_problem(model)
        if problem is not None:
            raise OnnxFileError(f"{path}: {problem[0]}", hint=problem[1])
    if has_external and load_external:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise OnnxFileError(f"cannot read external data of {path}: {exc}", hint="re-export the model") from exc
    return OnnxFile(model=model, path=path, has_external_data=has_external)


def external_locations(model: onnx.ModelProto) -> list[str]:
    """The external-data file names the model's tensors point to, sorted, each once."""
    return sorted({e.value for t in _external_tensors(model) for e in t.external_data if e.key == "location"})


def copy_onnx(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> list[Path]:
    """Copy an ONNX file byte for byte to ``dst``, with the external-data files it names (checked as
    :func:`load_onnx` checks them: beside it, nothing outside its folder) under the same names beside ``dst``.

    For assembling a folder that is then moved into place as a whole (deploy's package, a Triton repository):
    the copies themselves are plain writes. Returns the files written, the model first.
    """
    import shutil

    src, dst = Path(src), Path(dst)
    locations = external_locations(load_onnx(src, load_external=False, check_graph=False).model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    written = [dst]
    for loc in locations:
        target = dst.parent / loc
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src.parent / loc, target)
        written.append(target)
    return written


def parse_onnx_bytes(data: bytes, source: str = "<bytes>") -> onnx.ModelProto:
    """Parse ONNX bytes already in memory, with the same errors as :func:`load_onnx`."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise OnnxFileError(f"{source} is not a valid ONNX model: {str(exc)[:120]}", hint="export it again") from exc


def save_onnx(
    model: onnx.ModelProto,
    path: str | os.PathLike[str],
    *,
    force: bool = False,
    external_data: bool | None = None,
    sidecars: list[tuple[str | os.PathLike[str], bytes]] | None = None,
) -> list[Path]:
    """Write ``model`` atomically, with its weights in ``<name>.data`` when it would not fit in one protobuf.

    Args:
        model: The model (not modified).
        path: Target ``.onnx`` path.
        force: Replace existing files.
        external_data: Force external data on (True) or off (False); by default only for models near 2 GiB.
        sidecars: Files that belong to the model (a calibration report...), written in the same unit: every file
            new, or after any failure every file as it was.

    Returns:
        The paths written, the model last. A stale ``<name>.data`` from an earlier export is removed when the new
        model does not use it, so a re-export always starts fresh.
    """
    import onnx
    from onnx import TensorProto

    target = check_output_path(path, force)
    data_path = target.with_name(target.name + ".data")
    use_external = external_data if external_data is not None else model.ByteSize() > _PROTOBUF_LIMIT
    if not use_external:
        extra = [(Path(p), b) for p, b in (sidecars or [])]
        atomic_write_many([*extra, (target, model.SerializeToString())], force=force)
        if data_path.exists() and force:
            with contextlib.suppress(OSError):
                data_path.unlink()
        return [p for p, _ in extra] + [target]

    from onnx.external_data_helper import _get_all_tensors

    out = onnx.ModelProto()
    out.CopyFrom(model)
    chunks: list[bytes] = []
    offset = 0
    for tensor in _get_all_tensors(out):
        if not tensor.HasField("raw_data") or len(tensor.raw_data) < _EXTERNAL_MIN_BYTES:
            continue
        raw = tensor.raw_data
        pad = (-offset) % 64  # keep tensors aligned for mmap-friendly readers
        if pad:
            chunks.append(b"\0" * pad)
            offset += pad
        chunks.append(raw)
        del tensor.external_data[:]
        for key, value in (("location", data_path.name), ("offset", str(offset)), ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = TensorProto.EXTERNAL
        tensor.ClearField("raw_data")
        offset += len(raw)
    extra = [(Path(p), b) for p, b in (sidecars or [])]
    atomic_write_many([(data_path, b"".join(chunks)), *extra, (target, out.SerializeToString())], force=force)
    return [data_path, *(p for p, _ in extra), target]
