"""Training data: an ImageFolder tree, a local CIFAR-10 python directory, or a built-in ``synthetic:NAME`` set.

Every source becomes a :class:`DataSplit`: uint8 images (N x H x W x 3, at the training image size) and int64
labels for a training and a held-out part, with the class names. Data is held in memory; this is a toolkit for
fine-tuning and for small, reproducible runs, not a streaming loader for ImageNet.

- ImageFolder: ``DIR/<class>/<image>``; with ``DIR/train`` and ``DIR/val`` (or ``test``, ``heldout``) those are the
  two parts, otherwise a seeded, stratified share (``val_split``) is held out. Images that cannot be read are
  skipped and counted; an error is raised when none is usable. Images are resized and centre-cropped by verify's own
  rule (shorter side to size/0.875, :func:`deployinc.core.images.fit_image`), so held-out accuracy means the same here
  and in verify.
- CIFAR-10: the ``cifar-10-batches-py`` layout, read with a restricted unpickler (:mod:`deployinc.train.cifar`).
- ``synthetic:NAME``: generated, seeded, offline (:mod:`deployinc.train.synthetic`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.images import fit_image
from ..errors import BadInputError
from . import cifar, synthetic

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
HELDOUT_DIRS = ("val", "valid", "validation", "test", "heldout")


@dataclass
class Dataset:
    """Images and labels in memory.

    Attributes:
        images: uint8 N x H x W x 3.
        labels: int64 N.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DataSplit:
    """A training and a held-out part of one source.

    Attributes:
        train: Training images.
        heldout: Held-out images (accuracy is measured on these after every epoch).
        classes: Class names; label ``i`` is ``classes[i]``.
        source: What was read, for the training record (``synthetic:shapes``, a resolved path).
        kind: ``synthetic``, ``cifar10`` or ``imagefolder``.
        skipped: Image files that could not be read.
        notes: What was done on the way (a split, a resize, skipped files).
    """

    train: Dataset
    heldout: Dataset
    classes: list[str]
    source: str
    kind: str
    skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _resize(img: Any, size: int) -> np.ndarray:
    """A PIL image at ``size`` x ``size`` by verify's own rule (:func:`deployinc.core.images.fit_image`: shorter
    side to size/0.875, centre crop), so a model is trained on what verify and deploy will show it; uint8 H x W x 3."""
    return np.asarray(fit_image(img, (size, size)), dtype=np.uint8)


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _read_folder(root: Path, size: int, classes: list[str] | None = None) -> tuple[Dataset, list[str], int]:
    """Read ``root/<class>/*``; with ``classes`` given, folders must be among them. Returns (data, classes, skipped)."""
    from PIL import Image, UnidentifiedImageError

    folders = _class_folders(root)
    if not folders:
        loose = _image_files(root)
        hint = "put the images in one subfolder per class: DIR/<class>/<image>"
        if loose:
            raise BadInputError(f"--data {root} holds {len(loose)} images but no class subfolders", hint=hint)
        raise BadInputError(f"--data {root} is empty (no class subfolders, no images)", hint=hint)
    names = [f.name for f in folders]
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise BadInputError(
                f"held-out folder {root} has class {unknown[0]!r} that the training folder lacks",
                hint=f"training classes: {', '.join(classes)}",
            )
    index = {n: i for i, n in enumerate(classes if classes is not None else names)}
    images, labels, skipped = [], [], 0
    empty: list[tuple[Path, int]] = []
    for folder in folders:
        read = failed = 0
        for path in _image_files(folder):
            try:
                with Image.open(path) as im:
                    im.load()
                    images.append(_resize(im, size))
                labels.append(index[folder.name])
                read += 1
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                failed += 1
        skipped += failed
        if not read:
            empty.append((folder, failed))
    if not images:
        raise BadInputError(
            f"--data {root} has no readable images" + (f" ({skipped} files could not be read)" if skipped else ""),
            hint=f"image files ({', '.join(IMAGE_EXTENSIONS[:5])}...) go in DIR/<class>/",
        )
    if empty:  # a class with no image would be trained as absent, and the held-out accuracy judged without it
        folder, failed = empty[0]
        raise BadInputError(
            f"class folder {folder} has no readable image" + (f" ({failed} file(s) could not be read)" if failed else " (it is empty)")
            + (f"; {len(empty) - 1} other class folder(s) neither" if len(empty) > 1 else ""),
            hint=f"put images of class {folder.name!r} in it ({', '.join(IMAGE_EXTENSIONS[:4])}...), or remove the folder",
        )
    data = Dataset(np.stack(images), np.asarray(labels, dtype=np.int64))
    return data, (classes if classes is not None else names), skipped


def _split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Seeded stratified split: ``fraction`` of every class (at least one image where a class has two) held out."""
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for c in np.unique(data.labels):
        idx = np.flatnonzero(data.labels == c)
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        held += idx[:k].tolist()
    mask = np.zeros(len(data), bool)
    mask[held] = True
    return (
        Dataset(data.images[~mask], data.labels[~mask]),
        Dataset(data.images[mask], data.labels[mask]),
    )


def _limit(data: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(data):
        return data
    idx = np.sort(np.random.default_rng(seed).permutation(len(data))[:n])
    return Dataset(data.images[idx], data.labels[idx])


def _resize_array(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if images.shape[1] == size and images.shape[2] == size:
        return images
    return np.stack([_resize(Image.fromarray(im), size) for im in images])


def load_data(
    spec: str,
    image_size: int = 32,
    seed: int = 0,
    val_split: float = 0.2,
    limit_train: int | None = None,
    limit_heldout: int | None = None,
) -> DataSplit:
    """Read the training data named by ``spec``.

    Args:
        spec: ``synthetic:NAME``, a CIFAR-10 python directory, or an ImageFolder directory.
        image_size: Height and width of the training images.
        seed: Seed of the synthetic generator and the held-out split.
        val_split: Share held out when an ImageFolder has no separate held-out folder.
        limit_train: Use at most this many training images (generate only these for synthetic data).
        limit_heldout: Use at most this many held-out images.

    Raises:
        BadInputError: A missing or empty folder, no readable image, a wrong CIFAR layout, an unknown synthetic
            name, fewer than two classes.
    """
    if image_size < 8:
        raise BadInputError(f"--image-size {image_size} is too small", hint="use 32 or more")
    if not 0.0 < val_split < 1.0:
        raise BadInputError(f"--val-split {val_split} must be between 0 and 1", hint="e.g. 0.2")
    if spec.startswith("synthetic:"):
        name = spec.split(":", 1)[1]
        if name not in synthetic.SYNTHETIC:
            synthetic.generate(name, 0, image_size, seed)  # raises with the list of names
        n_train, n_held = synthetic.SYNTHETIC_SIZES[name]
        n_train = limit_train if limit_train is not None else n_train
        n_held = limit_heldout if limit_heldout is not None else n_held
        xtr, ytr, classes = synthetic.generate(name, n_train, image_size, seed)
        xte, yte, _ = synthetic.generate(name, n_held, image_size, seed + 1_000_003)
        return DataSplit(
            Dataset(xtr, ytr),
            Dataset(xte, yte),
            classes,
            source=spec,
            kind="synthetic",
            notes=[f"generated {n_train} training and {n_held} held-out images ({image_size}x{image_size}, seed {seed})"],
        )
    root = Path(os.path.expanduser(spec))
    if not root.exists():
        hint = "check the path given to --data"
        if ":" in spec and not spec.startswith(("/", ".")):
            hint = f"built-in datasets: {', '.join('synthetic:' + k for k in synthetic.SYNTHETIC)}"
        raise BadInputError(f"data folder {root} does not exist", hint=hint)
    if not root.is_dir():
        raise BadInputError(
            f"--data {root} is not a folder",
            hint="give an ImageFolder directory (DIR/<class>/<image>), a cifar-10-batches-py directory or synthetic:shapes",
        )
    source = str(root.resolve())
    notes: list[str] = []
    if cifar.is_cifar_dir(root):
        xtr, ytr, xte, yte, classes = cifar.read_cifar10(root)
        if image_size != 32:
            xtr, xte = _resize_array(xtr, image_size), _resize_array(xte, image_size)
            notes.append(f"CIFAR-10 images resized from 32 to {image_size}")
        train = _limit(Dataset(xtr, ytr), limit_train, seed)
        held = _limit(Dataset(xte, yte), limit_heldout, seed + 1)
        return DataSplit(train, held, classes, source=source, kind="cifar10", notes=notes)
    held_dir = next((root / d for d in HELDOUT_DIRS if (root / d).is_dir()), None)
    if (root / "train").is_dir() and held_dir is not None:
        train, classes, skipped = _read_folder(root / "train", image_size)
        held, _, skipped2 = _read_folder(held_dir, image_size, classes)
        skipped += skipped2
        notes.append(f"held-out images from {held_dir.name}/")
    else:
        data, classes, skipped = _read_folder(root, image_size)
        train, held = _split(data, val_split, seed)
        notes.append(f"held out {len(held)} of {len(data)} images (stratified, seed {seed})")
        if len(held) == 0:
            raise BadInputError(
                f"--data {root} has too few images to hold any out ({len(data)})",
                hint="give at least two images per class, or DIR/train and DIR/val folders",
            )
    if len(classes) < 2:
        raise BadInputError(
            f"--data {root} has {len(classes)} class folder ({classes[0]!r}); a classifier needs at least two",
            hint="put each class's images in its own subfolder",
        )
    if skipped:
        notes.append(f"skipped {skipped} unreadable image file(s)")
    train = _limit(train, limit_train, seed)
    held = _limit(held, limit_heldout, seed + 1)
    return DataSplit(train, held, classes, source=source, kind="imagefolder", skipped=skipped, notes=notes)
