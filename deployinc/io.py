"""Files in and out: the only module that writes files, loads checkpoints, or reads ONNX files from disk.

Writes are atomic. The bytes go to an anonymous file in the target directory (``O_TMPFILE`` on Linux, which has
no name and so cannot be left behind by a ``kill -9``), are fsynced, linked under a temporary name and moved over
the target with ``os.replace``. Where a filesystem cannot link such a file (overlay and sandboxed filesystems;
probed once per device), a named temporary file is used instead. Named temporaries are registered with a
*janitor*: a tiny helper process, started once per deployinc process in its own session, that holds the read end
of a pipe. When deployinc exits by any means (``kill -9`` included) the pipe closes and the janitor unlinks the
temporaries still registered. Stale temporaries of dead processes (if even the janitor was killed) are removed
by the next write to the same folder. Several files that belong together (an ONNX model and its
external data) are all written first and then replaced in order, the model last, so a reader never sees a model
pointing at data that is not there yet.

Checkpoints load only through ``torch.load(weights_only=True)`` (explicit, so that
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off) or safetensors. There is no fallback to unsafe loading.

ONNX files are checked before any runtime sees them: empty, truncated, not protobuf, a Git LFS pointer, and
external data that points outside the model's folder, through a symlink or a hardlink, or is shorter than declared.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .errors import BadInputError, OnnxFileError, OutputExistsError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import onnx

_TMP_TAG = ".deployinc-tmp-"
_TMP_RE = re.compile(r"^\.(?P<name>.+)\.deployinc-tmp-(?P<pid>\d+)-[0-9a-f]+$")
#: Tensors at least this large go to external data when a model needs it.
_EXTERNAL_MIN_BYTES = 1024
#: protobuf refuses messages of 2 GiB; stay clear of it.
_PROTOBUF_LIMIT = 2**31 - 2**24


# --------------------------------------------------------------------------------------------------------------
# Output paths


def check_output_path(path: str | os.PathLike[str], force: bool = False) -> Path:
    """Check that ``path`` may be written: its folder exists and is a folder, and it exists only with ``force``.

    Raises:
        BadInputError: The folder is missing or not a folder, or ``path`` is a folder.
        OutputExistsError: ``path`` exists and ``force`` is false.
    """
    path = Path(path)
    parent = path.parent
    if not parent.exists():
        raise BadInputError(
            f"output directory {parent} does not exist", hint="create it first, or choose another --out"
        )
    if not parent.is_dir():
        raise BadInputError(f"output directory {parent} is not a directory", hint="choose another --out")
    if path.is_dir():
        raise BadInputError(f"output path {path} is a directory", hint="give a file name, or --out DIR/ for a folder")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists", hint="pass --force to overwrite it, or choose another --out")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove named temporary files that a killed deployinc process left in ``directory``.

    Only files of deployinc's own naming pattern whose writer process is gone are removed.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            m = _TMP_RE.match(entry.name)
            if m and not _pid_alive(int(m.group("pid"))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_JANITOR_CODE = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
paths = set()
for line in sys.stdin.buffer:
    op, name = line[:1], bytes.fromhex(line[1:].strip().decode())
    if op == b"+":
        paths.add(name)
    else:
        paths.discard(name)
for name in paths:
    try:
        os.unlink(name)
    except OSError:
        pass
"""


class _Janitor:
    """Removes this process's named temporary files after it dies, however it dies (see the module docstring)."""

    _proc: Any = None

    @classmethod
    def _send(cls, op: str, path: Path) -> None:
        import subprocess
        import sys

        line = (op + os.fsencode(str(path.absolute())).hex() + "\n").encode()
        for _ in range(2):
            if cls._proc is None or cls._proc.poll() is not None:
                try:
                    cls._proc = subprocess.Popen(
                        [sys.executable, "-I", "-S", "-c", _JANITOR_CODE],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                        close_fds=True,
                    )
                except OSError:
                    return  # no janitor: stale-temporary cleanup on the next write still applies
            try:
                cls._proc.stdin.write(line)
                cls._proc.stdin.flush()
                return
            except (BrokenPipeError, OSError, ValueError):
                cls._proc = None

    @classmethod
    def add(cls, path: Path) -> None:
        cls._send("+", path)

    @classmethod
    def remove(cls, path: Path) -> None:
        cls._send("-", path)


#: st_dev -> whether an O_TMPFILE file can be linked into a name on that filesystem.
_LINKABLE: dict[int, bool] = {}


def _tmpfile_linkable(directory: Path) -> bool:
    if not hasattr(os, "O_TMPFILE"):
        return False
    try:
        dev = os.stat(directory).st_dev
    except OSError:
        return False
    if dev not in _LINKABLE:
        ok = False
        try:
            fd = os.open(directory, os.O_TMPFILE | os.O_WRONLY, 0o600)
        except OSError:
            fd = None
        if fd is not None:
            probe = directory / f".probe{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}"
            try:
                os.link(f"/proc/self/fd/{fd}", probe, follow_symlinks=True)
                os.unlink(probe)
                ok = True
            except OSError:
                ok = False
            finally:
                os.close(fd)
        _LINKABLE[dev] = ok
    return _LINKABLE[dev]


class _Pending:
    """A file being written: an open handle plus how to put it in place or throw it away."""

    def __init__(self, target: Path, mode: int | None):
        self.target = target
        self.directory = target.parent if str(target.parent) else Path(".")
        self._named: Path | None = None
        umask = os.umask(0)
        os.umask(umask)
        self._mode = mode if mode is not None else (0o666 & ~umask)
        fd = None
        if _tmpfile_linkable(self.directory):
            try:
                fd = os.open(self.directory, os.O_TMPFILE | os.O_WRONLY, self._mode)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    raise
                fd = None
        if fd is None:
            self._named = self.directory / f".{target.name}{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}"
            _Janitor.add(self._named)
            fd = os.open(self._named, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def finish(self) -> Path:
        """Flush and fsync; give the file a (temporary) name in the target folder; return that name."""
        self.file.flush()
        os.fsync(self.file.fileno())
        if self._named is None:
            name = self.directory / f".{self.target.name}{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}"
            _Janitor.add(name)
            os.link(f"/proc/self/fd/{self.file.fileno()}", name, follow_symlinks=True)
            self._named = name
        else:
            os.chmod(self._named, self._mode)
        self.file.close()
        return self._named

    def committed(self) -> None:
        """The temporary name was moved over the target: nothing to clean up any more."""
        if self._named is not None:
            _Janitor.remove(self._named)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        if self._named is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._named)
            _Janitor.remove(self._named)


def _open_pending(target: Path, mode: int | None) -> _Pending:
    try:
        return _Pending(target, mode)
    except OSError as exc:
        raise BadInputError(
            f"cannot write to directory {target.parent or '.'}: {exc.strerror}",
            hint="choose a writable --out directory",
        ) from exc


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, force: bool = False, mode: int | None = None) -> Iterator[BinaryIO]:
    """Open ``path`` for an atomic binary write: the old file or the complete new one, nothing in between.

    Args:
        path: Target file.
        force: Allow replacing an existing file.
        mode: Permission bits of the new file (default: 0o666 less the umask).

    Yields:
        A binary file object; the target is replaced when the ``with`` block ends without an exception.
    """
    target = check_output_path(path, force)
    clean_stale_temporaries(target.parent)
    pending = _open_pending(target, mode)
    try:
        yield pending.file
        name = pending.finish()
        os.replace(name, target)
        pending.committed()
        _fsync_dir(pending.directory)
    except BaseException:
        pending.discard()
        raise


def atomic_write_many(files: list[tuple[str | os.PathLike[str], bytes]], *, force: bool = False) -> None:
    """Write several files that belong together; each is complete before any is replaced, in the order given.

    Put the file that refers to the others (the ONNX model) last.
    """
    targets = [check_output_path(p, force) for p, _ in files]
    for t in {t.parent for t in targets}:
        clean_stale_temporaries(t)
    pendings: list[_Pending] = []
    names: list[Path] = []
    try:
        for target, (_, data) in zip(targets, files):
            pending = _open_pending(target, None)
            pendings.append(pending)
            pending.file.write(data)
            names.append(pending.finish())
        for name, target, pending in zip(names, targets, pendings):
            os.replace(name, target)
            pending.committed()
        for d in {t.parent for t in targets}:
            _fsync_dir(d)
    except BaseException:
        for p in pendings:
            p.discard()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, force: bool = False, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_open(path, force=force, mode=mode) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, force: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), force=force)


# --------------------------------------------------------------------------------------------------------------
# Hashing


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Checkpoints


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            # Checkpoints saved from DataParallel / torch.compile carry a prefix on every key.
            for prefix in ("module.", "_orig_mod."):
                if all(k.startswith(prefix) for k in tensors):
                    tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
            return tensors
    raise WeightsError(
        f"{path} is not a state dict (found {type(obj).__name__} with no tensors)",
        hint="save weights with torch.save(model.state_dict(), path), or a dict holding 'state_dict' or 'model'",
    )


def load_checkpoint(path: str | os.PathLike[str], *, with_extra: bool = False) -> Any:
    """Load a state dict from ``.pt``/``.pth`` (weights-only unpickling) or ``.safetensors``.

    Args:
        path: Checkpoint file.
        with_extra: Return ``(state_dict, raw_object)`` so callers can read other entries (training records).

    Raises:
        WeightsError: Missing, empty, corrupt, refused by the weights-only unpickler, or holding no tensors.
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist", hint="check the path given to --weights")
    if not path.is_file():
        raise WeightsError(f"weights path {path} is not a file", hint="give the checkpoint file itself")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty", hint="the download or copy was interrupted; fetch it again")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(
                f"weights file {path} is corrupt or not safetensors ({exc})", hint="re-save or re-download it"
            ) from exc
        return (sd, sd) if with_extra else sd

    import pickle
    import zipfile

    import torch

    try:
        # weights_only=True is explicit on purpose: torch then ignores TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text or "weights_only" in text.lower():
            hint = "it pickles Python objects, not only tensors; save model.state_dict() instead of the model"
            if "__main__" in text or "nn.modules" in text or "Module" in text:
                hint = "it pickles a whole model class; save model.state_dict() and load that instead"
            first = text.strip().splitlines()[0][:200] if text.strip() else "refused"
            raise WeightsError(
                f"weights file {path} was refused by the weights-only loader: {first}", hint=hint
            ) from exc
        raise WeightsError(f"weights file {path} is corrupt ({exc})", hint="re-save or re-download it") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"weights file {path} is corrupt or truncated ({first})", hint="re-save or re-download it"
        ) from exc
    sd = _unwrap_state_dict(obj, path)
    return (sd, obj) if with_extra else sd


def save_checkpoint(path: str | os.PathLike[str], obj: dict[str, Any], *, force: bool = False) -> Path:
    """``torch.save`` ``obj`` atomically (tensors and plain Python values only, so it loads weights-only)."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue(), force=force)


# --------------------------------------------------------------------------------------------------------------
# ONNX files


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


def load_onnx(path: str | os.PathLike[str], *, load_external: bool = True) -> OnnxFile:
    """Read and check an ONNX file from disk.

    Raises:
        OnnxFileError: Missing, empty, a Git LFS pointer, not protobuf, truncated, or with unsafe external data.
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
    if has_external and load_external:
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise OnnxFileError(f"cannot read external data of {path}: {exc}", hint="re-export the model") from exc
    return OnnxFile(model=model, path=path, has_external_data=has_external)


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
) -> list[Path]:
    """Write ``model`` atomically, with its weights in ``<name>.data`` when it would not fit in one protobuf.

    Args:
        model: The model (not modified).
        path: Target ``.onnx`` path.
        force: Replace existing files.
        external_data: Force external data on (True) or off (False); by default only for models near 2 GiB.

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
        atomic_write_many([(target, model.SerializeToString())], force=force)
        if data_path.exists() and force:
            with contextlib.suppress(OSError):
                data_path.unlink()
        return [target]

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
    atomic_write_many([(data_path, b"".join(chunks)), (target, out.SerializeToString())], force=force)
    return [data_path, target]
