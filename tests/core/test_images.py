"""Inputs: seeded natural-image statistics by default, noise only on request, image folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deployinc.errors import BadInputError
from deployinc.core.images import load_image_folder, load_image_folder_with_report, natural_images, noise


def test_natural_images_are_seeded_and_shaped():
    a = natural_images(3, (3, 40, 48), seed=7)
    b = natural_images(3, (3, 40, 48), seed=7)
    c = natural_images(3, (3, 40, 48), seed=8)
    assert a.shape == (3, 3, 40, 48) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert 0.0 <= a.min() and a.max() <= 1.0


def test_natural_images_look_like_photos_not_noise():
    x = natural_images(4, (3, 64, 64), seed=0)
    u = noise(4, (3, 64, 64), "uniform", seed=0)

    def neighbour_corr(v):
        return float(np.corrcoef(v[..., :, :-1].ravel(), v[..., :, 1:].ravel())[0, 1])

    assert neighbour_corr(x) > 0.8 and abs(neighbour_corr(u)) < 0.1  # smooth structure at every scale
    channels = x.transpose(1, 0, 2, 3).reshape(3, -1)
    assert np.corrcoef(channels)[0, 1] > 0.5  # colour channels correlate, as in photographs


def test_normalisation_and_channels():
    m, s = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = natural_images(8, (3, 32, 32), m, s, seed=1)
    assert abs(float(x.mean())) < 1.0 and 0.3 < float(x.std()) < 2.0
    assert natural_images(2, (1, 16, 16), seed=1).shape == (2, 1, 16, 16)
    assert natural_images(2, (256, 8, 8), (0.0,) * 256, (1.0,) * 256, seed=1).shape == (2, 256, 8, 8)


def test_noise_kinds():
    assert noise(2, (3, 4, 4), "normal", seed=0).dtype == np.float32
    with pytest.raises(BadInputError, match="noise"):
        noise(2, (3, 4, 4), "pink")


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "big.jpg")
    sub = tmp_path / "sub"
    sub.mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(sub / "gray.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    x, rep = load_image_folder_with_report(tmp_path, (3, 224, 224), (0.5,) * 3, (0.5,) * 3)
    assert x.shape == (2, 3, 224, 224) and rep["used"] == 2 and len(rep["skipped"]) == 1
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert load_image_folder(tmp_path, (3, 32, 32), limit=1).shape == (1, 3, 32, 32)


def test_image_folder_errors(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        load_image_folder(tmp_path / "nope", (3, 8, 8))
    with pytest.raises(BadInputError, match="no image files"):
        load_image_folder(tmp_path, (3, 8, 8))
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(BadInputError, match="none readable"):
        load_image_folder(tmp_path, (3, 8, 8))
