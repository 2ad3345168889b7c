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


def _class_names(folder: Path, labels: bool | str) -> list[str]:
    if isinstance(labels, str) and labels not in ("", "folders"):
        p = Path(labels)
        if not p.is_file():
            raise BadInputError(f"labels file {p} does not exist", hint="one class name per line, in index order; or --labels without a file")
        names = [ln.strip() for ln in p.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        if not names:
            raise BadInputError(f"labels file {p} is empty", hint="one class name per line, in index order")
        return names
    names = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise BadInputError(
            f"--data {folder} has no class sub-folders, so its images carry no labels",
            hint="lay it out as DIR/<class>/<image> (ImageFolder), or drop --labels",
        )
    return names


def load_labelled_folder(folder: str | os.PathLike[str], chw: tuple[int, ...], labels: bool | str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Every readable image of an ImageFolder tree: (raw [0, 1] images, class indices, description)."""
    root = Path(folder)
    names = _class_names(root, labels)
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
