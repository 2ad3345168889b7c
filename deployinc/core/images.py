"""Input data for parity checks, calibration and benchmarks.

Realistic by default. Without a folder of images, :func:`natural_images` generates a seeded set with the
statistics of natural photographs rather than uniform noise: a 1/f amplitude spectrum (smooth structure at every
scale), hard-edged shapes (occlusion boundaries), and correlated colour channels (a shared luminance field plus
weaker chroma). Uniform or normal noise is available only on request (:func:`noise`).

Images from a folder are decoded with Pillow, resized (shorter side to 256/224 of the crop, as torchvision's
classification transforms do) and centre-cropped to the model's input size, then normalised with its mean/std.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _pink_field(rng: np.random.Generator, h: int, w: int, exponent: float) -> np.ndarray:
    """A zero-mean, unit-std field whose amplitude spectrum falls as 1/f**exponent."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = 1.0 / f**exponent
    amp[0, 0] = 0.0
    phase = rng.uniform(0, 2 * np.pi, size=amp.shape)
    spec = amp * np.exp(1j * phase)
    field = np.fft.irfft2(spec, s=(h, w))
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def natural_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One RGB image in [0, 1], shape (3, h, w), float32, with natural-image statistics."""
    lum = 0.5 + 0.18 * _pink_field(rng, h, w, rng.uniform(1.0, 1.4))
    chroma = [0.06 * _pink_field(rng, h, w, 1.6) for _ in range(2)]
    # Colour: a random tint and luminance shared across channels (channels of photos correlate strongly).
    tint = rng.uniform(0.8, 1.2, size=3)
    img = np.stack(
        [lum * tint[0] + chroma[0], lum * tint[1] - 0.5 * chroma[0] + 0.5 * chroma[1], lum * tint[2] - chroma[1]]
    )
    yy, xx = np.mgrid[0:h, 0:w]
    # Occluding shapes with hard edges, each with its own colour and a little texture.
    for _ in range(rng.integers(2, 6)):
        colour = rng.uniform(0.05, 0.95, size=3)
        kind = rng.integers(0, 3)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.08, 0.35) * h, rng.uniform(0.08, 0.35) * w
        if kind == 0:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        elif kind == 1:
            mask = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        else:
            a = rng.uniform(0, np.pi)
            mask = np.abs((yy - cy) * np.cos(a) - (xx - cx) * np.sin(a)) <= 0.25 * ry
        shade = 1.0 + 0.1 * _pink_field(rng, h, w, 1.8)
        img[:, mask] = (colour[:, None] * shade[mask][None, :]).astype(img.dtype)
    # Global illumination gradient.
    g = rng.uniform(-0.15, 0.15, size=2)
    img = img + (g[0] * (yy / h - 0.5) + g[1] * (xx / w - 0.5))[None]
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(x - mean) / std per channel, float32; images are N x C x H x W in [0, 1]."""
    m = np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return ((images - m) / s).astype(np.float32)


def _fit_channels(images: np.ndarray, channels: int) -> np.ndarray:
    if channels == images.shape[1]:
        return images
    if channels == 1:
        return (0.299 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3]).astype(np.float32)
    reps = -(-channels // images.shape[1])
    return np.tile(images, (1, reps, 1, 1))[:, :channels]


def natural_images(
    n: int,
    input_size: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``n`` generated images, N x C x H x W float32, normalised with mean/std when given.

    The same seed gives the same images on every machine (numpy's PCG64).
    """
    c, h, w = (int(v) for v in input_size)
    rng = np.random.default_rng(seed)
    imgs = np.stack([natural_image(rng, h, w) for _ in range(n)]) if n else np.zeros((0, 3, h, w), np.float32)
    imgs = _fit_channels(imgs, c)
    if mean is not None and std is not None:
        imgs = normalize(imgs, _per_channel(mean, c, "mean"), _per_channel(std, c, "std"))
    return imgs


def _per_channel(values: Sequence[float], channels: int, what: str) -> list[float]:
    """``values`` for ``channels`` channels: the first ``channels`` of them, or one value broadcast."""
    if len(values) >= channels:
        return list(values[:channels])
    if len(values) == 1:
        return list(values) * channels
    raise BadInputError(
        f"{len(values)} {what} values for an input of {channels} channels",
        hint=f"give one {what} value per channel (--{what}), or an input shape with {len(values)} channels",
    )


def noise(
    n: int, input_size: Sequence[int], kind: str = "uniform", seed: int = 0
) -> np.ndarray:
    """Uniform [0, 1) or standard-normal noise, only when asked for (``--inputs uniform|normal``)."""
    rng = np.random.default_rng(seed)
    shape = (n, *(int(v) for v in input_size))
    if kind == "uniform":
        return rng.random(shape, dtype=np.float32)
    if kind == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    raise BadInputError(f"unknown noise kind {kind!r}", hint="use natural, uniform or normal")


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, by extension."""
    folder = Path(folder)
    if not folder.exists():
        raise BadInputError(f"data folder {folder} does not exist", hint="check the path given to --data")
    if not folder.is_dir():
        raise BadInputError(f"--data {folder} is not a folder", hint="give a folder of image files")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def fit_image(im: Any, size: tuple[int, int]) -> Any:
    """The one geometry rule for image files (verify, quantize, bench and train's folders): a PIL image in RGB at
    ``size`` (h, w): the shorter side resized to size/0.875, then centre-cropped. An image already at (or below)
    the target size is resized straight to it (CIFAR-size data)."""
    from PIL import Image

    h, w = size
    im = im.convert("RGB")
    iw, ih = im.size
    if min(iw, ih) <= max(h, w):
        return im if (iw, ih) == (w, h) else im.resize((w, h), Image.Resampling.BILINEAR)
    scale = (min(h, w) / 0.875) / min(iw, ih)
    nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - w) // 2, (nh - h) // 2
    return im.crop((left, top, left + w, top + h))


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode one image to RGB float32 (3, h, w) in [0, 1] by :func:`fit_image`'s rule."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(fit_image(im, size), dtype=np.float32) / 255.0
    return arr.transpose(2, 0, 1).copy()


def load_image_folder(
    folder: str | os.PathLike[str],
    input_size: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    limit: int | None = None,
) -> np.ndarray:
    """Images of a folder as N x C x H x W float32, normalised with mean/std when given.

    Unreadable files are skipped; an error is raised only when none is usable.

    Raises:
        BadInputError: Missing folder, or no readable image in it.
    """
    images, _ = load_image_folder_with_report(folder, input_size, mean, std, limit)
    return images


def load_image_folder_with_report(
    folder: str | os.PathLike[str],
    input_size: Sequence[int],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    limit: int | None = None,
) -> tuple[np.ndarray, dict[str, object]]:
    """Like :func:`load_image_folder`, also returning ``{"used": n, "skipped": [names], "files": [names]}``."""
    c, h, w = (int(v) for v in input_size)
    paths = list_images(folder)
    arrays: list[np.ndarray] = []
    used: list[str] = []
    skipped: list[str] = []
    for p in paths:
        if limit is not None and len(arrays) >= limit:
            break
        try:
            arrays.append(load_image(p, (h, w)))
            used.append(str(p))
        except Exception:  # noqa: BLE001 - PIL raises many types for bad files; skip and count them
            skipped.append(str(p))
    if not arrays:
        what = f"{len(paths)} image file(s), none readable" if paths else "no image files"
        raise BadInputError(
            f"--data folder {folder} has {what}",
            hint=f"put {', '.join(IMAGE_EXTENSIONS[:4])}... files in it (subfolders are searched)",
        )
    imgs = _fit_channels(np.stack(arrays), c)
    if mean is not None and std is not None:
        imgs = normalize(imgs, _per_channel(mean, c, "mean"), _per_channel(std, c, "std"))
    return imgs, {"used": len(used), "skipped": skipped, "files": used}
