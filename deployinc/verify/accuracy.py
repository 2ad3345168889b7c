"""Accuracy on a labelled image folder (``verify --data DIR --labels``): top-1 and top-5 of the reference and of
each backend against the folder's labels, over every image.

Layout: ImageFolder (one sub-folder per class). Class indices come from the sorted sub-folder names, as
torchvision's ``ImageFolder`` numbers them, or from a labels file (one class name per line, in index order).
Images are resized and cropped by the same rule as every other image input (:mod:`deployinc.core.images`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import images as core_images
from ..core.cache import read_regular
from ..errors import BadInputError


@dataclass
class Accuracy:
    """Top-1/top-5 accuracy of the reference and each backend (at each batch size) on labelled images."""

    images: int
    classes: int
    source: str
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "classes": self.classes, "source": self.source, "rows": self.rows}

    def lines(self) -> list[str]:
        out = [f"accuracy on {self.images} labelled image(s), {self.classes} classes ({self.source}):"]
        for name, r in self.rows.items():
            out.append(f"  {name:<18} top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}")
        return out


#: Largest labels file read (ImageNet-21k's class names are under 1 MiB).
LABELS_MAX_BYTES = 16 << 20


def _labels_file(p: Path) -> list[str]:
    hint = "one class name per line, in index order; or --labels without a file"
    if not p.exists() and not p.is_symlink():
        raise BadInputError(f"labels file {p} does not exist", hint=hint)
    try:
        text = read_regular(p.resolve(), limit=LABELS_MAX_BYTES).decode("utf-8", errors="replace")  # a FIFO would block
    except OSError as exc:
        problem = "is not a regular file" if not p.is_file() else f"cannot be read ({exc.strerror or exc})"
        raise BadInputError(f"labels file {p} {problem}", hint=hint) from exc
    names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not names:
        raise BadInputError(f"labels file {p} is empty", hint="one class name per line, in index order")
    seen: set[str] = set()
    dups = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if dups:
        raise BadInputError(
            f"labels file {p} names {len(dups)} class(es) twice ({', '.join(repr(d) for d in dups[:3])}): a class folder cannot tell which index it is",
            hint="one distinct class name per line, in index order",
        )
    return names


def _class_names(folder: Path, labels: bool | str) -> list[str]:
    if isinstance(labels, str) and labels not in ("", "folders"):
        return _labels_file(Path(labels))
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise BadInputError(
            f"--data {folder} has no class sub-folders, so its images carry no labels",
            hint="lay it out as DIR/<class>/<image> (ImageFolder), or drop --labels",
        )
    return names


def class_count(out_dims: list[list[Any]]) -> int | None:
    """Classes of a model from its outputs' dims: the first output's second dim when it is N x K (None otherwise)."""
    if out_dims and len(out_dims[0]) == 2 and isinstance(out_dims[0][1], int) and out_dims[0][1] > 0:
        return int(out_dims[0][1])
    return None


def check_class_count(folder: str | os.PathLike[str], labels: bool | str, outputs: int | None, option: str = "--data") -> list[str]:
    """The class names (a labels file's, or the sorted sub-folders'), refused unless there is one per model output:
    with more or fewer, class indices mean other classes than the model's, and top-1 is meaningless."""
    names = _class_names(Path(folder), labels)
    if outputs is not None and len(names) != outputs:
        source = f"labels file {labels}" if isinstance(labels, str) and labels not in ("", "folders") else f"{option} {folder}"
        what = "names" if source.startswith("labels") else "has class sub-folders for"
        raise BadInputError(
            f"{source} {what} {len(names)} classes, but the model has {outputs} outputs: class i must be output i",
            hint=f"give --labels FILE with the model's {outputs} class names in output order (a folder's classes are looked up there), or the folder of this model's classes",
        )
    return names


def load_labelled_folder(
    folder: str | os.PathLike[str], chw: tuple[int, ...], labels: bool | str, outputs: int | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Every readable image of an ImageFolder tree: (raw [0, 1] images, class indices, description). ``outputs``:
    the model's class count, which the classes must match (:func:`check_class_count`)."""
    root = Path(folder)
    names = check_class_count(root, labels, outputs)
    index = {n: i for i, n in enumerate(names)}
    raw, rep = core_images.load_image_folder_with_report(root, chw, None, None, limit=None)
    ys, keep = [], []
    unlabelled = 0
    for i, f in enumerate(rep["files"]):  # type: ignore[arg-type]
        cls = Path(f).relative_to(root).parts[0] if len(Path(f).relative_to(root).parts) > 1 else None
        if cls is None or cls not in index:
            unlabelled += 1
            continue
        ys.append(index[cls])
        keep.append(i)
    if not keep:
        raise BadInputError(f"no image under {root} sits in a class folder the labels name", hint="lay it out as DIR/<class>/<image>")
    desc = {
        "source": "data", "folder": str(root), "used": len(keep), "skipped": list(rep["skipped"])[:20],  # type: ignore[arg-type]
        "labels": "file " + str(labels) if isinstance(labels, str) else "sorted folder names", "classes": len(names),
        "unlabelled": unlabelled, "samples": len(keep),
    }  # fmt: skip
    return raw[keep], np.asarray(ys, dtype=np.int64), desc


def _topk(logits: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    k = min(5, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    return float((top[:, 0] == y).mean()), float((top == y[:, None]).any(axis=1).mean())


def accuracy(labels: np.ndarray, ref_out: dict[str, np.ndarray], outputs: dict[str, dict[str, np.ndarray]], batches: list[int]) -> Accuracy:
    """Top-1/top-5 of the reference and of each backend run (their first output) against ``labels``."""
    n = len(labels)
    first = next(iter(ref_out))
    acc = Accuracy(images=n, classes=int(ref_out[first].shape[1]), source="labels of the --data folder")
    t1, t5 = _topk(np.asarray(ref_out[first])[:n], labels)
    acc.rows["reference"] = {"top1": t1, "top5": t5, "images": n}
    for where, got in outputs.items():
        arr = np.asarray(next(iter(got.values())))
        m = min(n, arr.shape[0])
        t1, t5 = _topk(arr[:m], labels[:m])
        acc.rows[where] = {"top1": t1, "top5": t5, "images": m}
    return acc
