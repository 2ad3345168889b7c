"""scripts/digits_folder.py: the seeded stratified split, the folder it writes (placed by one rename, refused
without --force), and scikit-learn's digits as RGB images (skipped only where scikit-learn is missing; the dev
extra installs it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from deployinc.errors import BadInputError


def _parts(n_per_class: int = 5, classes: int = 3, size: int = 12):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(classes), n_per_class)
    images = rng.integers(0, 256, size=(len(labels), size, size, 3), dtype=np.uint8)
    return images, labels


def test_stratified_split_holds_out_each_class_and_is_seeded(dfold):
    labels = np.repeat(np.arange(4), [10, 10, 5, 2])
    kept, held = dfold.stratified_split(labels, 0.2, seed=3)
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(labels)))
    assert [int((labels[held] == c).sum()) for c in range(4)] == [2, 2, 1, 1]  # every class, at least one, none emptied
    again = dfold.stratified_split(labels, 0.2, seed=3)[1]
    assert held.tolist() == again.tolist()
    assert held.tolist() != dfold.stratified_split(labels, 0.2, seed=4)[1].tolist()
    with pytest.raises(BadInputError):
        dfold.stratified_split(labels, 1.5, seed=0)


def test_calibration_subset_mixes_classes_in_any_prefix(dfold):
    labels = np.repeat(np.arange(4), 25)
    pick = dfold.stratified_subset(labels, 8, seed=1)
    assert len(set(pick.tolist())) == 8
    assert sorted(np.bincount(labels[pick], minlength=4).tolist()) == [2, 2, 2, 2]


def test_write_folder_layout_refusal_and_force(dfold, tmp_path):
    images, labels = _parts()
    kept, held = dfold.stratified_split(labels, 0.2, seed=0)
    parts = {"train": (images[kept], labels[kept], kept), "heldout": (images[held], labels[held], held)}
    out = tmp_path / "set"
    counts = dfold.write_folder(out, parts, ["a", "b", "c"], calibration=6, seed=0, record={"source": "test"})
    assert counts == {"train": 12, "heldout": 3, "calibration": 6}
    assert sorted(p.name for p in out.iterdir()) == ["calibration", "dataset.json", "heldout", "train"]
    assert sorted(p.name for p in (out / "heldout").iterdir()) == ["a", "b", "c"]
    assert len(list((out / "calibration").glob("*.png"))) == 6
    from PIL import Image

    first = sorted((out / "train" / "b").glob("*.png"))[0]
    i = int(first.stem)
    assert np.array_equal(np.asarray(Image.open(first)), images[i])  # the image under its class, named by its index
    assert json.loads((out / "dataset.json").read_text())["images"]["heldout"] == 3
    with pytest.raises(BadInputError, match="already exists"):
        dfold.write_folder(out, parts, ["a", "b", "c"], calibration=0, seed=0, record={})
    assert (out / "calibration").is_dir()  # untouched
    dfold.write_folder(out, parts, ["a", "b", "c"], calibration=0, seed=0, record={}, force=True)
    assert not (out / "calibration").exists()  # replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no working folder left beside it


def test_cli_refuses_existing_folder_with_exit_2(dfold, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert dfold.main([str(tmp_path / "taken"), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "hint:" in err and "--force" in err


def test_digits_are_upscaled_rgb_and_split(dfold):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'deployinc[evidence]')")
    parts, classes, record = dfold.digits_parts(size=16, share=0.2, seed=0, resample="nearest")
    tr, te = parts["train"], parts["heldout"]
    assert classes == [str(c) for c in range(10)]
    assert tr[0].shape[1:] == (16, 16, 3) and tr[0].dtype == np.uint8
    assert len(tr[1]) + len(te[1]) == 1797 and 340 <= len(te[1]) <= 380
    assert set(te[1].tolist()) == set(range(10))
    assert np.array_equal(tr[0][0][..., 0], tr[0][0][..., 2])  # grey
    assert tr[0].max() == 255  # the 0..16 range scaled to 0..255
    # nearest upscaling by 2: each 8x8 pixel is a 2x2 block
    assert np.array_equal(tr[0][0][::2, ::2, 0], tr[0][0][1::2, 1::2, 0])
    assert "sklearn" in record["source"]


def test_written_digits_load_as_deployinc_training_data(dfold, tmp_path):
    pytest.importorskip("sklearn", reason="scikit-learn is not installed (pip install 'deployinc[evidence]')")
    from deployinc.train.data import load_data

    parts, classes, record = dfold.digits_parts(size=16, share=0.2, seed=0, resample="bilinear")
    def few(y: np.ndarray, n: int) -> np.ndarray:  # the first n of every class: no class folder left empty
        return np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in np.unique(y)]))

    small = {k: (im[few(y, 3)], y[few(y, 3)], few(y, 3)) for k, (im, y, _) in parts.items()}
    dfold.write_folder(tmp_path / "d", small, classes, calibration=4, seed=0, record=record)
    data = load_data(str(tmp_path / "d"), image_size=16)
    assert data.classes == classes and len(data.train) == len(small["train"][1]) and len(data.heldout) == len(small["heldout"][1])
    assert Path(tmp_path / "d" / "calibration").is_dir()
