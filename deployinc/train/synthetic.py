"""Built-in generated datasets (``--data synthetic:NAME``): seeded, offline, visually distinct and learnable.

``shapes`` — ten classes of simple shapes (disc, square, triangle, plus, ring, frame, diamond, cross, hbar, vbar) of
random position, size, small rotation and colour, on a background of another colour with a soft gradient and
pixel noise. Every class is symmetric under a horizontal flip, so the flip augmentation keeps labels true. Shapes
are rendered at twice the size and averaged down 2x2, so their edges are anti-aliased like a photograph's.

The same (name, count, size, seed) gives the same images on every machine (numpy's PCG64).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import BadInputError

#: Least RGB distance between a shape's colour and its background's (of sqrt(3)).
MIN_CONTRAST = 0.6
#: Half-extent of a shape, as a share of the image size.
SIZE_RANGE = (0.24, 0.38)
#: Largest rotation, degrees.
MAX_ROTATION = 10.0

SHAPE_CLASSES = ("disc", "square", "triangle", "plus", "ring", "frame", "diamond", "cross", "hbar", "vbar")


def _shape_mask(kind: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of one shape on coordinates scaled so the shape spans about [-1, 1] (v points down)."""
    au, av = np.abs(u), np.abs(v)
    if kind == "disc":
        return u * u + v * v <= 1.0
    if kind == "square":
        return np.maximum(au, av) <= 0.8
    if kind == "triangle":  # apex at the top
        return (v >= -1.0) & (v <= 0.8) & (au <= (v + 1.0) * 0.55)
    if kind == "plus":
        return ((au <= 0.28) & (av <= 1.0)) | ((av <= 0.28) & (au <= 1.0))
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.55**2)
    if kind == "frame":
        m = np.maximum(au, av)
        return (m <= 0.85) & (m >= 0.5)
    if kind == "diamond":
        return au + av <= 1.1
    if kind == "cross":
        a, b = np.abs(u + v) / np.sqrt(2.0), np.abs(u - v) / np.sqrt(2.0)
        return ((a <= 0.25) & (b <= 1.05)) | ((b <= 0.25) & (a <= 1.05))
    if kind == "hbar":
        return (au <= 1.0) & (av <= 0.3)
    if kind == "vbar":
        return (au <= 0.3) & (av <= 1.0)
    raise ValueError(kind)


def _colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A foreground and a background colour that differ clearly (distance in RGB >= :data:`MIN_CONTRAST`)."""
    while True:
        fg, bg = rng.random(3), rng.random(3)
        if np.linalg.norm(fg - bg) >= MIN_CONTRAST:
            return fg, bg


def shapes(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate ``n`` shape images, classes balanced and shuffled.

    Args:
        n: Number of images.
        size: Height and width in pixels (at least 16).
        seed: Seed of everything random.

    Returns:
        ``(images, labels, classes)``: uint8 N x size x size x 3, int64 N, class names.
    """
    if size < 16:
        raise BadInputError(f"synthetic:shapes needs --image-size >= 16, got {size}", hint="use --image-size 32")
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % len(SHAPE_CLASSES)
    rng.shuffle(labels)
    s2 = size * 2  # supersampled canvas
    yy, xx = np.mgrid[0:s2, 0:s2].astype(np.float32) + 0.5
    out = np.empty((n, size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        kind = SHAPE_CLASSES[label]
        r = rng.uniform(*SIZE_RANGE) * s2  # half-extent of the shape
        margin = r * 1.05 + 1
        cx, cy = rng.uniform(margin, s2 - margin, size=2)
        theta = np.deg2rad(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
        c, s = np.cos(theta), np.sin(theta)
        dx, dy = (xx - cx) / r, (yy - cy) / r
        u, v = c * dx + s * dy, -s * dx + c * dy
        mask = _shape_mask(kind, u, v).astype(np.float32)
        fg, bg = _colours(rng)
        # soft background gradient in a random direction
        g = rng.uniform(-0.15, 0.15)
        phi = rng.uniform(0, 2 * np.pi)
        grad = g * ((np.cos(phi) * xx + np.sin(phi) * yy) / s2 - 0.5)
        img = bg[None, None, :] + grad[..., None]
        img = img * (1 - mask[..., None]) + fg[None, None, :] * mask[..., None]
        img = img.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))  # anti-alias 2x2
        img = img + rng.normal(0.0, 0.03, img.shape)
        out[i] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out, labels, list(SHAPE_CLASSES)


#: name -> generator(n, size, seed) -> (uint8 N x H x W x 3, int64 labels, class names).
SYNTHETIC: dict[str, Callable[..., tuple[np.ndarray, np.ndarray, list[str]]]] = {"shapes": shapes}
#: name -> (train count, held-out count) by default.
SYNTHETIC_SIZES: dict[str, tuple[int, int]] = {"shapes": (5000, 1000)}


def generate(name: str, n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Generate ``n`` images of the built-in dataset ``name``.

    Raises:
        BadInputError: Unknown name.
    """
    if name not in SYNTHETIC:
        raise BadInputError(
            f"unknown synthetic dataset {name!r}",
            hint=f"built-in datasets: {', '.join('synthetic:' + k for k in SYNTHETIC)}",
        )
    return SYNTHETIC[name](n, size=size, seed=seed)
