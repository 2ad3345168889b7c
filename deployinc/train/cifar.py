"""Read a local CIFAR-10 python directory (``cifar-10-batches-py``) without trusting its pickles.

The standard layout: ``data_batch_1`` .. ``data_batch_5`` (training), ``test_batch`` (held out) and
``batches.meta`` (class names), each a pickled dict. A pickle can run arbitrary code when loaded, so these files are
read only through :class:`RestrictedUnpickler`, which resolves no global except numpy's array reconstruction
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``) and ``_codecs.encode`` (how Python 3's
protocol-2 pickles spell bytes): dicts, lists, strings, bytes and ints are built by the pickle opcodes themselves,
and anything else is refused before it is constructed.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1"): a pure conversion.
    ("_codecs", "encode"),
}
_HINT = "--data must be the cifar-10-batches-py folder of the python version of CIFAR-10 (data_batch_1..5, test_batch, batches.meta)"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global but numpy's array reconstruction and ``_codecs.encode``."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def restricted_load(path: Path) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler` (latin1 strings, as CIFAR's Python 2 pickles need).

    Raises:
        BadInputError: The file is unreadable, not a pickle, or pickles something other than plain data.
    """
    try:
        data = path.read_bytes()
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise BadInputError(f"{path} was refused: {exc}", hint=_HINT) from exc
    except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as exc:
        raise BadInputError(f"{path} is not a readable CIFAR batch ({type(exc).__name__}: {exc})", hint=_HINT) from exc


def _get(d: dict, key: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    return None


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = restricted_load(path)
    if not isinstance(obj, dict):
        raise BadInputError(f"{path} holds a {type(obj).__name__}, not a CIFAR batch dict", hint=_HINT)
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise BadInputError(f"{path} has no N x 3072 'data' array and 'labels' list", hint=_HINT)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise BadInputError(f"{path}: {len(labels)} labels for {data.shape[0]} images", hint=_HINT)
    images = np.ascontiguousarray(data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def is_cifar_dir(folder: Path) -> bool:
    """Whether ``folder`` looks like a CIFAR-10 python directory (any of its batch files is there)."""
    return any((folder / n).exists() for n in (*TRAIN_FILES, TEST_FILE, META_FILE))


def read_cifar10(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Read a CIFAR-10 python directory.

    Returns:
        ``(train_images, train_labels, test_images, test_labels, classes)``; images are uint8 N x 32 x 32 x 3.

    Raises:
        BadInputError: A file is missing or does not have CIFAR's layout.
    """
    missing = [n for n in (*TRAIN_FILES, TEST_FILE, META_FILE) if not (folder / n).is_file()]
    if missing:
        raise BadInputError(f"CIFAR-10 directory {folder} lacks {', '.join(missing)}", hint=_HINT)
    meta = restricted_load(folder / META_FILE)
    names = _get(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise BadInputError(f"{folder / META_FILE} has no 'label_names' list", hint=_HINT)
    classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
    parts = [_read_batch(folder / n) for n in TRAIN_FILES]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_batch(folder / TEST_FILE)
    for what, y in (("training", ytr), ("test", yte)):
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise BadInputError(
                f"{folder}: a {what} label is outside 0..{len(classes) - 1} (batches.meta names {len(classes)} classes)",
                hint=_HINT,
            )
    return xtr, ytr, xte, yte, classes
