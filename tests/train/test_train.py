"""`deployinc train`: one epoch on tiny data, resume, auxiliary losses, every dataset reader, and bad input."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from deployinc.errors import BadInputError
from deployinc.io import load_checkpoint
from deployinc.train import TrainConfig, compute_loss, load_data, lr_at, train
from deployinc.train.cifar import RestrictedUnpickler, read_cifar10
from deployinc.train.synthetic import SHAPE_CLASSES, shapes

from tests.conftest import files_in, invoke

TINY = ["--limit-train", "48", "--limit-heldout", "20", "--epochs", "1", "--batch-size", "16", "--quiet"]


def _png_tree(root: Path, classes=("cat", "dog"), per_class=5, size=20, corrupt=0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)
            arr[..., ci % 3] = 255  # a class-dependent colour
            Image.fromarray(arr).save(root / c / f"{i}.png")
        for i in range(corrupt):
            (root / c / f"broken{i}.jpg").write_bytes(b"not an image at all")
    return root


def _cifar_dir(root: Path, per_batch=6, classes=("airplane", "automobile", "bird")) -> Path:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {
            "batch_label": name,
            "labels": [int(v) for v in rng.integers(0, len(classes), per_batch)],
            "data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8),
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        (root / name).write_bytes(pickle.dumps(d, protocol=2))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": list(classes), "num_vis": 3072}, protocol=2))
    return root


def _assert_bad(r, work: Path, before: list[str], pattern: str) -> None:
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert re.search(pattern, r.stderr), r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), r.stderr
    assert "Traceback" not in r.stderr
    assert files_in(work) == before


# ---- datasets ------------------------------------------------------------------------------------------------------


def test_synthetic_shapes_seeded_balanced_distinct():
    a, la, classes = shapes(40, 32, seed=3)
    b, lb, _ = shapes(40, 32, seed=3)
    c, _, _ = shapes(40, 32, seed=4)
    assert a.shape == (40, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert classes == list(SHAPE_CLASSES) and len(classes) == 10
    assert np.bincount(la, minlength=10).tolist() == [4] * 10
    assert a.std() > 20  # not blank images


def test_imagefolder_reader_split_and_skipped(tmp_path):
    root = _png_tree(tmp_path / "imgs", per_class=5, corrupt=1)
    split = load_data(str(root), image_size=16, seed=0, val_split=0.2)
    assert split.kind == "imagefolder" and split.classes == ["cat", "dog"]
    assert split.skipped == 2
    assert len(split.train) + len(split.heldout) == 10 and len(split.heldout) == 2
    assert split.train.images.shape[1:] == (16, 16, 3)
    assert sorted(split.heldout.labels.tolist()) == [0, 1]  # stratified


def test_imagefolder_train_val_layout(tmp_path):
    _png_tree(tmp_path / "d" / "train", per_class=3)
    _png_tree(tmp_path / "d" / "val", per_class=2)
    split = load_data(str(tmp_path / "d"), image_size=16)
    assert (len(split.train), len(split.heldout)) == (6, 4)
    assert any("val/" in n for n in split.notes)


def test_cifar_reader(tmp_path):
    root = _cifar_dir(tmp_path / "cifar-10-batches-py")
    xtr, ytr, xte, yte, classes = read_cifar10(root)
    assert xtr.shape == (30, 32, 32, 3) and xte.shape == (6, 32, 32, 3)
    assert classes == ["airplane", "automobile", "bird"]
    raw = pickle.loads((root / "data_batch_1").read_bytes())
    assert np.array_equal(xtr[0], raw["data"][0].reshape(3, 32, 32).transpose(1, 2, 0))
    split = load_data(str(root), image_size=32)
    assert split.kind == "cifar10" and len(split.train) == 30 and len(split.heldout) == 6


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    root = _cifar_dir(tmp_path / "c")

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (root / "data_batch_3").write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(BadInputError, match="not allowed"):
        read_cifar10(root)
    with pytest.raises(pickle.UnpicklingError):
        import io

        RestrictedUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()


# ---- training ------------------------------------------------------------------------------------------------------


def test_one_epoch_cli_checkpoint_and_heldout_export(cli_runner, tmp_path):
    out = tmp_path / "ckpt.pt"
    held = tmp_path / "held"
    r = invoke(cli_runner, ["train", "inception_cifar", "--data", "synthetic:shapes", "--out", str(out),
                            "--export-heldout", str(held), *TINY[:-1]])  # with the progress bar
    assert r.exit_code == 0, r.stderr
    assert "held-out accuracy" in r.stdout and "epoch 1/1" in r.stderr
    sd, raw = load_checkpoint(out, with_extra=True)  # weights-only loading
    rec = raw["record"]
    assert rec["arch"] == "inception_cifar" and rec["data"] == "synthetic:shapes"
    assert rec["epochs"] == 1 and rec["epoch"] == 1 and rec["num_classes"] == 10 and rec["seed"] == 0
    assert 0.0 <= rec["accuracy"] <= 1.0 and len(rec["history"]) == 1
    assert "fc.weight" in sd and "optimizer" in raw
    pngs = sorted(held.rglob("*.png"))
    assert len(pngs) == 20 and {p.parent.name.split("_", 1)[1] for p in pngs} <= set(SHAPE_CLASSES)
    # sorted folder names number the classes as training did (ImageFolder, verify --labels)
    folders = sorted(d.name for d in held.iterdir())
    assert all(SHAPE_CLASSES.index(name.split("_", 1)[1]) == int(name.split("_", 1)[0]) for name in folders)
    # deployinc's model loader reads the checkpoint
    from deployinc.models import load_model

    loaded = load_model("inception_cifar", weights=str(out))
    assert loaded.weights_sha256


def test_resume_continues_exactly(tmp_path):
    common = dict(arch="depthwise_cifar", data="synthetic:shapes", batch_size=16, limit_train=32, limit_heldout=10,
                  threads=2)
    straight = train(TrainConfig(out=str(tmp_path / "a.pt"), epochs=2, **common))
    train(TrainConfig(out=str(tmp_path / "b.pt"), epochs=1, **common))
    resumed = train(TrainConfig(out=str(tmp_path / "b.pt"), epochs=2, resume=str(tmp_path / "b.pt"), **common))
    assert resumed.record["epoch"] == 2 and len(resumed.record["history"]) == 2
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-5), k
    assert straight.record["history"][1]["train_loss"] == pytest.approx(resumed.record["history"][1]["train_loss"], abs=1e-4)


def test_aux_loss_weighting():
    from torchvision.models import GoogLeNetOutputs

    torch.manual_seed(0)
    y = torch.tensor([0, 1, 2])
    main, a1, a2 = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    ce = torch.nn.functional.cross_entropy
    loss, logits = compute_loss(GoogLeNetOutputs(main, a2, a1), y, aux_weight=0.3)
    assert logits is main
    assert float(loss) == pytest.approx(float(ce(main, y) + 0.3 * ce(a1, y) + 0.3 * ce(a2, y)), rel=1e-6)
    assert float(compute_loss(main, y)[0]) == pytest.approx(float(ce(main, y)))


def test_googlenet_trains_with_aux_heads_and_exports_without(tmp_path):
    out = tmp_path / "g.pt"
    res = train(TrainConfig("googlenet", "synthetic:shapes", out=str(out), epochs=1, batch_size=8, limit_train=8,
                            limit_heldout=4, image_size=32, aux_weight=0.3))
    assert res.record["aux_weight"] == 0.3 and res.record["num_classes"] == 10
    sd = load_checkpoint(out)
    assert any(k.startswith("aux1.") for k in sd) and any(k.startswith("aux2.") for k in sd)
    from deployinc.models import load_model
    from deployinc.prepare import prepare

    m = load_model("googlenet", weights=str(out), num_classes=10, input_shape=(1, 3, 32, 32)).module
    prepared, report = prepare(m, (1, 3, 32, 32), aux_heads=("aux1", "aux2"))
    assert prepared.aux1 is None and prepared.aux2 is None
    assert prepared(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_aux_weight_changes_the_loss(tmp_path):
    kw = dict(epochs=1, batch_size=16, limit_train=16, limit_heldout=4)
    a = train(TrainConfig("inception_v3_cifar", "synthetic:shapes", out=str(tmp_path / "a.pt"), aux_weight=0.0, **kw))
    b = train(TrainConfig("inception_v3_cifar", "synthetic:shapes", out=str(tmp_path / "b.pt"), aux_weight=1.0, **kw))
    assert b.record["history"][0]["train_loss"] > a.record["history"][0]["train_loss"] + 0.5  # + ~ln(10)


def test_imagefolder_and_cifar_train_with_init_weights(cli_runner, tmp_path):
    root = _png_tree(tmp_path / "imgs", classes=("a", "b", "c"), per_class=4, corrupt=1)
    init = tmp_path / "init.pt"
    from deployinc.models import create_model

    torch.save(create_model("resnet_cifar", num_classes=7).state_dict(), init)  # another class count
    r = invoke(cli_runner, ["train", "resnet_cifar", "--data", str(root), "--out", str(tmp_path / "r.pt"),
                            "--weights", str(init), "--num-classes", "3", "--image-size", "16", *TINY])
    assert r.exit_code == 0, r.stderr
    assert "skipped 3 unreadable" in r.stderr and "re-initialised fc.weight, fc.bias" in r.stderr
    cifar = _cifar_dir(tmp_path / "cifar-10-batches-py")
    r = invoke(cli_runner, ["train", "depthwise_cifar", "--data", str(cifar), "--out", str(tmp_path / "c.pt"), *TINY])
    assert r.exit_code == 0, r.stderr
    assert load_checkpoint(tmp_path / "c.pt", with_extra=True)[1]["record"]["classes"] == ["airplane", "automobile", "bird"]


def test_lr_schedules():
    assert lr_at(0, 100, 1.0, "none") == 1.0
    assert lr_at(99, 100, 1.0, "cosine") < 0.01 and lr_at(3, 100, 1.0, "cosine") == pytest.approx(1.0, abs=0.01)
    assert lr_at(60, 100, 1.0, "step") == pytest.approx(0.1) and lr_at(80, 100, 1.0, "step") == pytest.approx(0.01)


# ---- bad input -----------------------------------------------------------------------------------------------------


def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    unreadable = tmp_path / "unreadable"
    (unreadable / "a").mkdir(parents=True)
    (unreadable / "a" / "x.png").write_bytes(b"garbage")
    (unreadable / "b").mkdir()
    (unreadable / "b" / "y.jpg").write_bytes(b"")
    wrong_cifar = tmp_path / "cifar"
    wrong_cifar.mkdir()
    (wrong_cifar / "data_batch_1").write_bytes(pickle.dumps({"data": [1, 2], "labels": [0]}))
    pngs = _png_tree(tmp_path / "pngs", per_class=3)
    return {
        "missing folder": (["--data", str(tmp_path / "nope")], r"data folder .*nope does not exist"),
        "empty folder": (["--data", str(empty)], r"is empty"),
        "unreadable images": (["--data", str(unreadable)], r"no readable images \(2 files could not be read\)"),
        "cifar layout": (["--data", str(wrong_cifar)], r"CIFAR-10 directory .* lacks data_batch_2"),
        "num classes": (["--data", str(pngs), "--num-classes", "5"], r"--num-classes 5 contradicts the data: .* has 2 classes"),
        "unknown synthetic": (["--data", "synthetic:blobs"], r"unknown synthetic dataset 'blobs'"),
    }


@pytest.mark.parametrize(
    "case", ["missing folder", "empty folder", "unreadable images", "cifar layout", "num classes", "unknown synthetic"]
)
def test_bad_input_exit_2_one_line_no_checkpoint(cli_runner, tmp_path, case):
    args, pattern = _bad_cases(tmp_path)[case]
    work = tmp_path / "work"
    work.mkdir()
    before = files_in(work)
    r = invoke(cli_runner, ["train", "resnet_cifar", *args, "--out", str(work / "ckpt.pt"), *TINY])
    _assert_bad(r, work, before, pattern)


def test_resume_from_another_architecture(cli_runner, tmp_path):
    first = tmp_path / "first.pt"
    r = invoke(cli_runner, ["train", "depthwise_cifar", "--data", "synthetic:shapes", "--out", str(first), *TINY])
    assert r.exit_code == 0, r.stderr
    work = tmp_path / "work"
    work.mkdir()
    r = invoke(cli_runner, ["train", "resnet_cifar", "--data", "synthetic:shapes", "--resume", str(first),
                            "--out", str(work / "x.pt"), *TINY[:-3], "--epochs", "2", "--quiet"])
    _assert_bad(r, work, [], r"checkpoint of 'depthwise_cifar', not 'resnet_cifar'")
    # a resume that has nothing left to do is bad input too, and leaves the checkpoint alone
    before = first.read_bytes()
    r = invoke(cli_runner, ["train", "depthwise_cifar", "--data", "synthetic:shapes", "--resume", str(first), *TINY])
    assert r.exit_code == 2 and "already trained 1 epoch (--epochs 1)" in r.stderr
    assert first.read_bytes() == before


def test_existing_checkpoint_needs_force(cli_runner, tmp_path):
    out = tmp_path / "c.pt"
    out.write_bytes(b"keep me")
    r = invoke(cli_runner, ["train", "resnet_cifar", "--data", "synthetic:shapes", "--out", str(out), *TINY])
    assert r.exit_code == 2 and "exists" in r.stderr and out.read_bytes() == b"keep me"


def test_imagefolder_images_are_framed_as_verify_frames_them(tmp_path):
    """A model is trained on what verify (``--accuracy-data``) and deploy will show it: the same resize and crop."""
    from PIL import Image

    from deployinc.core.images import load_image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "d" / "train" / cls).mkdir(parents=True)
        (tmp_path / "d" / "val" / cls).mkdir(parents=True)
        Image.fromarray((rng.random((60, 100, 3)) * 255).astype("uint8")).save(tmp_path / "d" / "train" / cls / "0.png")
        Image.fromarray((rng.random((60, 100, 3)) * 255).astype("uint8")).save(tmp_path / "d" / "val" / cls / "0.png")
    split = load_data(str(tmp_path / "d"), image_size=32)
    want = load_image(tmp_path / "d" / "val" / "a" / "0.png", (32, 32))
    got = split.heldout.images[split.heldout.labels.tolist().index(0)]
    assert np.array_equal(got, np.round(want.transpose(1, 2, 0) * 255).astype(np.uint8))
