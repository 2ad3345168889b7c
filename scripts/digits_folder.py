"""Write a labelled image set as an ImageFolder for ``deployinc train`` and ``deployinc deploy --accuracy-data``.

The default source is scikit-learn's handwritten digits (``sklearn.datasets.load_digits``: 1797 grey 8x8 images,
10 classes, bundled in the scikit-learn wheel, nothing downloaded), upscaled to RGB PNGs; ``--source
synthetic:shapes`` writes deployinc's own generated shapes instead (the exact images ``deployinc train --data
synthetic:shapes`` trains on, read through its loader). The folder it writes:

    OUT/train/<class>/<index>.png     the training images (``deployinc train --data OUT`` reads train/ and heldout/)
    OUT/heldout/<class>/<index>.png   a seeded, stratified share held out (digits; shapes: train's own held-out set)
    OUT/calibration/<n>_<class>.png   a seeded, stratified subset of the training images, flat and shuffled by name,
                                      so that any first-N of the sorted files is a class mix (``deploy --data``)
    OUT/dataset.json                  what was written: source, sizes, seed, counts per part

Everything is written into a private folder beside OUT and moved in by one rename when complete; an existing OUT is
refused without ``--force`` (with it, renamed aside and removed after the new one is in place).

    pip install 'deployinc[evidence]'   # scikit-learn
    python scripts/digits_folder.py build/digits --size 96
    python scripts/digits_folder.py build/shapes --source synthetic:shapes --size 96 --limit-train 2000 --limit-heldout 400
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from deployinc.errors import BadInputError, DeployincError
from deployinc.io.atomic import work_dir

RESAMPLE = ("nearest", "bilinear")


def stratified_split(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held) with ``round(share * n_c)`` of each class held out (at least one, and at least one kept,
    for a class of two or more), seeded; both sorted."""
    if not 0.0 < share < 1.0:
        raise BadInputError(f"--heldout {share} must be between 0 and 1", hint="e.g. 0.2")
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n = min(max(1, round(share * len(idx))), len(idx) - 1) if len(idx) > 1 else 0
        held += idx[:n].tolist()
    mask = np.zeros(len(labels), bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def stratified_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` indices (all where there are fewer), the classes as even as they allow, in a seeded shuffled order."""
    rng = np.random.default_rng(seed)
    per = {int(c): rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)}
    out: list[int] = []
    while len(out) < min(n, len(labels)):
        for c in sorted(per):
            if per[c] and len(out) < n:
                out.append(per[c].pop())
    return rng.permutation(np.asarray(out, dtype=np.int64))


def to_rgb(images: np.ndarray, size: int, resample: str) -> np.ndarray:
    """N x h x w (grey, any range: scaled by its maximum) or N x h x w x 3 uint8 -> N x size x size x 3 uint8."""
    from PIL import Image

    if resample not in RESAMPLE:
        raise BadInputError(f"unknown --resample {resample!r}", hint=f"use one of {', '.join(RESAMPLE)}")
    if images.ndim == 3:
        top = float(images.max()) or 1.0
        grey = np.clip(np.rint(images.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
        images = np.repeat(grey[..., None], 3, axis=-1)
    mode = Image.Resampling.NEAREST if resample == "nearest" else Image.Resampling.BILINEAR
    if images.shape[1:3] == (size, size):
        return images.astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), mode), dtype=np.uint8) for im in images])


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_folder(out: str | os.PathLike[str], parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], classes: list[str],
                 calibration: int, seed: int, record: dict[str, Any], force: bool = False) -> dict[str, int]:  # fmt: skip
    """Write ``parts`` (name -> (RGB uint8 images, labels, original indices)) under ``out/<name>/<class>/``, a flat
    ``calibration/`` of ``calibration`` training images and ``dataset.json``; placed by one rename. Returns the image
    count per part.

    Raises:
        BadInputError: ``out`` exists and not ``force``; a label outside ``classes``.
    """
    target = Path(out)
    if (target.exists() or target.is_symlink()) and not force:
        raise BadInputError(f"{target} already exists", hint="pass --force to replace it, or choose another folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with work_dir(target) as work:
        tree = work / "tree"
        for name, (images, labels, index) in parts.items():
            if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
                raise BadInputError(f"{name}: a label outside 0..{len(classes) - 1}", hint="give one class name per label")
            width = max(4, len(str(int(index.max()) if len(index) else 0)))
            for c in classes:
                (tree / name / c).mkdir(parents=True, exist_ok=True)
            for im, y, i in zip(images, labels, index):
                (tree / name / classes[int(y)] / f"{int(i):0{width}d}.png").write_bytes(_png(im))
            counts[name] = len(labels)
        if calibration:
            images, labels, _ = parts["train"]
            pick = stratified_subset(labels, calibration, seed + 1)
            (tree / "calibration").mkdir()
            for k, i in enumerate(pick):
                (tree / "calibration" / f"{k:04d}_{classes[int(labels[i])]}.png").write_bytes(_png(images[i]))
            counts["calibration"] = len(pick)
        (tree / "dataset.json").write_text(json.dumps({**record, "classes": classes, "seed": seed, "images": counts}, indent=1))
        old = None
        if target.exists() or target.is_symlink():
            old = work / "old"
            os.rename(target, old)
        try:
            os.rename(tree, target)
        except OSError as exc:
            if old is not None:
                os.rename(old, target)
            raise BadInputError(f"cannot put the folder at {target}: {exc.strerror}", hint="choose another folder") from exc
    return counts


def digits_parts(size: int, share: float, seed: int, resample: str) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """scikit-learn's digits, upscaled to RGB, split stratified and seeded."""
    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise BadInputError("scikit-learn is not installed (its wheel carries the digits)", hint="pip install 'deployinc[evidence]'") from exc
    digits = load_digits()
    labels = np.asarray(digits.target, dtype=np.int64)
    images = to_rgb(np.asarray(digits.images), size, resample)
    kept, held = stratified_split(labels, share, seed)
    parts = {"train": (images[kept], labels[kept], kept), "heldout": (images[held], labels[held], held)}
    record = {"source": f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})", "original_size": [8, 8],
              "size": size, "resample": resample, "heldout_share": share}  # fmt: skip
    return parts, [str(c) for c in range(10)], record


def synthetic_parts(spec: str, size: int, seed: int, limit_train: int | None, limit_heldout: int | None) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """The images ``deployinc train --data <spec>`` trains and holds out with the same size, seed and limits."""
    from deployinc.train.data import load_data
    from deployinc.train.loop import heldout_folder_names

    data = load_data(spec, image_size=size, seed=seed, limit_train=limit_train, limit_heldout=limit_heldout)
    parts = {
        "train": (data.train.images, data.train.labels, np.arange(len(data.train))),
        "heldout": (data.heldout.images, data.heldout.labels, np.arange(len(data.heldout))),
    }
    record = {"source": f"{spec} through deployinc.train.data.load_data", "size": size, "limit_train": limit_train, "limit_heldout": limit_heldout,
              "notes": data.notes}  # fmt: skip
    return parts, heldout_folder_names(list(data.classes)), record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the folder to write (must not exist, unless --force)")
    ap.add_argument("--source", default="digits", help="digits (scikit-learn) or synthetic:shapes")
    ap.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    ap.add_argument("--resample", default="bilinear", choices=RESAMPLE, help="upscaling filter of the 8x8 digits (default bilinear)")
    ap.add_argument("--heldout", type=float, default=0.2, help="held-out share per class (digits; default 0.2)")
    ap.add_argument("--calibration", type=int, default=128, help="training images copied to calibration/ (0: none; default 128)")
    ap.add_argument("--limit-train", type=int, default=None, help="synthetic: training images (as deployinc train --limit-train)")
    ap.add_argument("--limit-heldout", type=int, default=None, help="synthetic: held-out images (as deployinc train --limit-heldout)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="replace an existing folder")
    args = ap.parse_args(argv)
    try:
        if not 8 <= args.size <= 1024:
            raise BadInputError(f"--size {args.size} is out of range", hint="use 8..1024, e.g. 96")
        if args.calibration < 0:
            raise BadInputError(f"--calibration {args.calibration} is negative", hint="give a count, e.g. 128, or 0 for none")
        if args.source == "digits":
            parts, classes, record = digits_parts(args.size, args.heldout, args.seed, args.resample)
        elif args.source.startswith("synthetic:"):
            parts, classes, record = synthetic_parts(args.source, args.size, args.seed, args.limit_train, args.limit_heldout)
        else:
            raise BadInputError(f"unknown --source {args.source!r}", hint="use digits or synthetic:shapes")
        counts = write_folder(args.out, parts, classes, args.calibration, args.seed, record, force=args.force)
    except DeployincError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" images, {len(classes)} classes, {args.size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
