"""Atomic writes: the old file or the complete new one, never half a file, never a file replaced behind a check.

How a write lands:

- The bytes go to an anonymous file in the target's folder (``O_TMPFILE`` on Linux, which has no name and so
  cannot be left behind by a ``kill -9``) or, where a filesystem cannot link such a file, to a named temporary
  ``.<name>.deployinc-tmp-<pid>-<hex>``. It is fsynced, then put in place.
- Without ``force`` it is put in place with ``link(2)``, which fails when the target exists: "is it there?" and
  "put it there" are one step, so of two writers racing for one new path exactly one succeeds and the other gets
  :class:`~deployinc.errors.OutputExistsError`. A symlink, dangling or not, counts as existing.
- With ``force`` it replaces the target with ``rename(2)``.
- Several files that belong together (a model, its external data, its sidecar reports) land as one unit
  (:func:`atomic_write_many`): all are written first, then put in place in order with the model last, and a
  failure on the way (a full disk, a target that appeared meanwhile) puts back the old files and removes the new
  ones.
- A killed writer's named temporaries and working folders carry its pid. The next write into that folder (and
  the next :func:`work_dir` or :func:`scratch_dir`) removes those whose process is gone. No helper process is
  needed: the guarantee that matters, the old file intact and nothing half-written at the target's name, holds at
  every instant; leftovers are removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import BadInputError, OutputExistsError

_TMP_TAG = ".deployinc-tmp-"
_WORK_TAG = ".deployinc-work-"
_LEFTOVER_RE = re.compile(r"^\.?(?P<name>.*)\.deployinc-(?:tmp|work)-(?P<pid>\d+)-[0-9a-f]+$")
#: errno values that mean "the filesystem cannot hard-link here": fall back to an exclusive create.
_NO_LINK = (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS)
#: errno values that are the disk's or the folder's fault, reported as bad input with the path.
_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EFBIG: "file too large for the file system"}


# --------------------------------------------------------------------------------------------------------------
# Output paths


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether anything is at ``path``: a file, a folder, or a symlink (even a dangling one)."""
    return os.path.lexists(path)


def check_output_path(path: str | os.PathLike[str], force: bool = False) -> Path:
    """Check that ``path`` may be written: its folder exists and is a folder, and it exists only with ``force``.

    This is an early, friendly check; the write itself refuses an existing target again, atomically.

    Raises:
        BadInputError: The folder is missing or not a folder, or ``path`` is a folder.
        OutputExistsError: ``path`` exists (a symlink counts) and ``force`` is false.
    """
    path = Path(path)
    parent = path.parent
    if not parent.exists():
        raise BadInputError(f"output directory {parent} does not exist", hint="create it first, or choose another --out")
    if not parent.is_dir():
        raise BadInputError(f"output directory {parent} is not a directory", hint="choose another --out")
    if path.is_dir():
        raise BadInputError(f"output path {path} is a directory", hint="give a file name, or --out DIR/ for a folder")
    if exists(path) and not force:
        what = "is a symlink" if path.is_symlink() else "exists"
        raise OutputExistsError(f"{path} {what}", hint="pass --force to overwrite it, or choose another --out")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries and working folders that killed deployinc processes left in ``directory``.

    Only entries of deployinc's own naming pattern whose writer process is gone are removed.
    """
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            m = _LEFTOVER_RE.match(entry.name)
            if not m or _pid_alive(int(m.group("pid"))):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
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


def _disk_error(exc: OSError, target: Path) -> BadInputError | None:
    why = _DISK_ERRORS.get(exc.errno or 0)
    if why is None:
        return None
    return BadInputError(
        f"cannot write {target}: {why}; nothing was replaced",
        hint="free space or choose another --out folder; the previous files are intact",
    )


# --------------------------------------------------------------------------------------------------------------
# One pending file


#: st_dev -> whether an O_TMPFILE file can be linked into a name on that filesystem.
_LINKABLE: dict[int, bool] = {}


def _tmp_name(directory: Path, target: Path) -> Path:
    return directory / f".{target.name}{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}"


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
    """A file being written: an open handle, then a temporary name in the target's folder."""

    def __init__(self, target: Path, mode: int | None):
        self.target = target
        self.directory = target.parent if str(target.parent) else Path(".")
        self.name: Path | None = None
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
            self.name = _tmp_name(self.directory, target)
            fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def finish(self) -> Path:
        """Flush and fsync; give the file a temporary name in the target folder; return that name."""
        self.file.flush()
        os.fsync(self.file.fileno())
        if self.name is None:
            name = _tmp_name(self.directory, self.target)
            os.link(f"/proc/self/fd/{self.file.fileno()}", name, follow_symlinks=True)
            self.name = name
        else:
            os.chmod(self.name, self._mode)
        self.file.close()
        return self.name

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        if self.name is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.name)


def _open_pending(target: Path, mode: int | None) -> _Pending:
    try:
        return _Pending(target, mode)
    except OSError as exc:
        raise BadInputError(
            f"cannot write to directory {target.parent or '.'}: {exc.strerror}", hint="choose a writable --out directory"
        ) from exc


def _place_new(name: Path, target: Path) -> None:
    """Put ``name`` at ``target`` only if nothing is there (one atomic step), then drop the temporary name."""
    try:
        os.link(name, target, follow_symlinks=False)
    except FileExistsError:
        raise OutputExistsError(
            f"{target} exists (another process wrote it meanwhile)", hint="pass --force to overwrite it, or choose another --out"
        ) from None
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        # No hard links here: reserve the name exclusively, then move the complete file over the reservation.
        try:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            raise OutputExistsError(
                f"{target} exists (another process wrote it meanwhile)", hint="pass --force to overwrite it, or choose another --out"
            ) from None
        os.replace(name, target)
        return
    os.unlink(name)


# --------------------------------------------------------------------------------------------------------------
# Writers


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, force: bool = False, mode: int | None = None) -> Iterator[BinaryIO]:
    """Open ``path`` for an atomic binary write: the old file or the complete new one, nothing in between.

    Args:
        path: Target file.
        force: Allow replacing an existing file.
        mode: Permission bits of the new file (default: 0o666 less the umask).

    Yields:
        A binary file object; the target is put in place when the ``with`` block ends without an exception.

    Raises:
        OutputExistsError: The target exists without ``force``, also when it appeared while writing.
        BadInputError: The folder is not writable, or the disk is full (the old file is intact).
    """
    target = check_output_path(path, force)
    clean_stale_temporaries(target.parent)
    pending = _open_pending(target, mode)
    try:
        yield pending.file
        name = pending.finish()
        if force:
            os.replace(name, target)
        else:
            _place_new(name, target)
        _fsync_dir(pending.directory)
    except OSError as exc:
        pending.discard()
        err = _disk_error(exc, target)
        if err is not None:
            raise err from exc
        raise
    except BaseException:
        pending.discard()
        raise


def atomic_write_many(files: list[tuple[str | os.PathLike[str], bytes]], *, force: bool = False) -> None:
    """Write several files that belong together as one unit: all new, or (after any failure) all as they were.

    Every file is written and fsynced before any is put in place; then they are put in place in the order given,
    so put the file that refers to the others (the ONNX model) last. If putting one in place fails, the ones
    already placed are rolled back: replaced files get their old content back, new ones are removed.

    Raises:
        OutputExistsError: A target exists without ``force`` (nothing is left written).
        BadInputError: The folder is not writable or the disk is full (every old file intact).
    """
    targets = [check_output_path(p, force) for p, _ in files]
    if len({str(t) for t in targets}) != len(targets):
        raise BadInputError("two outputs of one write name the same file", hint="give each output its own path")
    for d in {t.parent for t in targets}:
        clean_stale_temporaries(d)
    pendings: list[_Pending] = []
    placed: list[tuple[Path, Path | None]] = []  # (target, backup of the old file or None when it was new)
    try:
        for target, (_, data) in zip(targets, files):
            pending = _open_pending(target, None)
            pendings.append(pending)
            pending.file.write(data)
            pending.finish()
        for target, pending in zip(targets, pendings):
            assert pending.name is not None
            if force:
                backup = _keep_old(target)
                placed.append((target, backup))
                os.replace(pending.name, target)
            else:
                _place_new(pending.name, target)
                placed.append((target, None))
        for _, backup in placed:
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(backup)
        for d in {t.parent for t in targets}:
            _fsync_dir(d)
    except BaseException as exc:
        _roll_back(placed)
        for p in pendings:
            p.discard()
        if isinstance(exc, OSError):
            err = _disk_error(exc, targets[len(placed)] if len(placed) < len(targets) else targets[-1])
            if err is not None:
                raise err from exc
        raise


def _keep_old(target: Path) -> Path | None:
    """A second name for the file at ``target`` (to put back on a rollback), or None when there is none."""
    if not exists(target):
        return None
    backup = _tmp_name(target.parent, target)
    try:
        os.link(target, backup, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        shutil.copy2(target, backup, follow_symlinks=False)
    return backup


def _roll_back(placed: list[tuple[Path, Path | None]]) -> None:
    """Undo placed files, newest first: restore each backup over its target, remove targets that were new."""
    for target, backup in reversed(placed):
        with contextlib.suppress(OSError):
            if backup is None:
                os.unlink(target)
            elif exists(target) and os.path.samestat(os.lstat(backup), os.lstat(target)):
                os.unlink(backup)  # the old file was never replaced (rename of two links to one file does nothing)
            else:
                os.replace(backup, target)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, force: bool = False, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_open(path, force=force, mode=mode) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, force: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), force=force)


# --------------------------------------------------------------------------------------------------------------
# Working folders


@contextlib.contextmanager
def work_dir(beside: str | os.PathLike[str]) -> Iterator[Path]:
    """A private working folder next to the output ``beside`` (same filesystem, so results move in atomically),
    removed afterwards; a killed run's folder is removed by the next write or working folder there."""
    target = Path(beside)
    parent = target.parent if str(target.parent) else Path(".")
    clean_stale_temporaries(parent)
    path = parent / f".{target.name}{_WORK_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        path.mkdir(mode=0o700)
    except OSError as exc:
        raise BadInputError(f"cannot create a working folder in {parent}: {exc.strerror}", hint="choose a writable --out directory") from exc
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def scratch_root() -> Path:
    """``<temp dir>/deployinc-<uid>``: private (0700) home of working folders for commands that write no output."""
    root = Path(tempfile.gettempdir()) / f"deployinc-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    root.mkdir(mode=0o700, exist_ok=True)
    if root.is_symlink() or not root.is_dir():
        raise BadInputError(f"{root} is not a private folder", hint="remove it, or set TMPDIR to another folder")
    with contextlib.suppress(OSError):
        os.chmod(root, 0o700)
    return root


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A working folder under :func:`scratch_root`, removed afterwards; a killed run's folders are removed by the
    next one."""
    root = scratch_root()
    clean_stale_temporaries(root)
    path = root / f"{prefix}{_WORK_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
