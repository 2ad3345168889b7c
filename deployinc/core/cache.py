"""deployinc's one cache root and the private folders under it.

``$DEPLOYINC_CACHE_DIR``, else ``$XDG_CACHE_HOME/deployinc``, else ``~/.cache/deployinc``; every folder under it
is created 0700 and checked on use (a symlink, another user's folder or one others can write is refused or
repaired), because what is cached here (TensorRT engines, BatchNorm statistics) is trusted when read back. Files
are read only when they are regular files (a FIFO planted in the folder would block a reader forever).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import BadInputError

ENV_CACHE_DIR = "DEPLOYINC_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$DEPLOYINC_CACHE_DIR``, else ``$XDG_CACHE_HOME/deployinc``, else ``~/.cache/deployinc``."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says relative values are to be ignored
        return Path(xdg) / "deployinc"
    return Path.home() / ".cache" / "deployinc"


def ensure_private_dir(path: str | os.PathLike[str]) -> tuple[Path, list[str]]:
    """Create ``path`` with mode 0700 (parents as needed), or check and repair an existing one.

    Returns:
        The folder and a list of warnings (a repaired mode).

    Raises:
        BadInputError: The path is a symlink, not a folder, owned by another user, or its mode cannot be repaired.
    """
    path = Path(path).expanduser()
    warnings: list[str] = []
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # created by a concurrent process: check it like any existing folder
            pass
        except OSError as exc:
            raise BadInputError(
                f"cannot create cache directory {path}: {exc.strerror}", hint=f"set {ENV_CACHE_DIR} to a writable folder of yours"
            ) from exc
        st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise BadInputError(f"cache directory {path} is a symlink", hint=f"use a real folder; set {ENV_CACHE_DIR} to point at it")
    if not stat.S_ISDIR(st.st_mode):
        raise BadInputError(f"cache path {path} is not a directory", hint=f"remove it, or set {ENV_CACHE_DIR}")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise BadInputError(
            f"cache directory {path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()})",
            hint=f"what is cached there is trusted when read back; set {ENV_CACHE_DIR} to a folder of yours",
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, 0o700)
        except OSError as exc:
            raise BadInputError(
                f"cache directory {path} has mode {mode:04o} (group/other access) and cannot be made private",
                hint=f"chmod 700 {path}, or set {ENV_CACHE_DIR}",
            ) from exc
        warnings.append(f"cache directory {path} had mode {mode:04o} (group/other access); repaired to 0700")
    return path, warnings


def cache_subdir(name: str) -> tuple[Path, list[str]]:
    """``<cache root>/<name>``, both private (0700)."""
    root, warnings = ensure_private_dir(default_cache_dir())
    sub, more = ensure_private_dir(root / name)
    return sub, warnings + more


def read_regular(path: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a FIFO, device or symlink), at most ``limit`` bytes.

    Raises:
        OSError: Missing, not a regular file, or larger than ``limit``.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{path} is not a regular file")
        if limit is not None and st.st_size > limit:
            raise OSError(f"{path} is larger than {limit} bytes")
        chunks = []
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            chunks.append(block)
        return b"".join(chunks)
    finally:
        os.close(fd)
