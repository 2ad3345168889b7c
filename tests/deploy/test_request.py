"""deploy's request, checked before any work: the resume key holds every option that changes a result and what the
data folders hold; --force replaces only a deploy package (never the cwd or a folder above it); the batch list is
bounded; data folders of unreadable images are refused up front."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployinc.core import limits
from deployinc.deploy.request import MANIFEST, NOT_IN_KEY, DeployRequest, check_image_folder, package_problem
from deployinc.errors import BadInputError

#: A second value for every field that changes a candidate's artifact, verdict or timing; the key must change with
#: each. A new DeployRequest field fails test_every_field_is_in_the_key_or_excluded_with_a_reason until it is
#: listed here or in NOT_IN_KEY (whose comment says why each is left out).
OTHER_VALUE = {
    "model": "resnet_cifar",
    "weights": "ckpt.pth",
    "num_classes": 7,
    "input_shape": (1, 3, 64, 64),
    "data": "OTHER_FOLDER",
    "accuracy_data": "OTHER_FOLDER",
    "target": "cuda",
    "precisions": ["fp32"],
    "backends": ["ort-cpu"],
    "batches": (1, 8),
    "warmup": 2,
    "iters": 7,
    "threads": 3,
    "samples": 5,
    "calibration_images": 9,
    "torch_compile": False,
    "search": False,
    "fallback": "none",
    "max_accuracy_drop": 2.5,
    "trust_model_code": True,
}


def _images(folder: Path, n: int = 2, classes: tuple[str, ...] = ()) -> Path:
    for sub in classes or ("",):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(folder / sub / f"{i}.png")
    return folder


def test_every_field_is_in_the_key_or_excluded_with_a_reason(tmp_path: Path) -> None:
    names = {f.name for f in dataclasses.fields(DeployRequest)}
    assert names == set(OTHER_VALUE) | set(NOT_IN_KEY), "classify the new DeployRequest field: OTHER_VALUE or NOT_IN_KEY"
    a, b = _images(tmp_path / "a"), _images(tmp_path / "b", n=3)
    base = DeployRequest(model="depthwise_cifar", data=str(a), accuracy_data=str(a))
    key = base.key("digest")
    for name, value in OTHER_VALUE.items():
        changed = dataclasses.replace(base, **{name: str(b) if value == "OTHER_FOLDER" else value})
        assert changed.key("digest") != key, f"{name} changes a deploy result but not its key"
    for name in NOT_IN_KEY:  # the choice, the package and the messages: finished candidates are reused across them
        value = {"out": "x.deploy", "force": True, "keep_variants": True, "log": print, "require_backend": "ort-cpu",
                 "require_precision": "int8", "min_top1_agreement": 0.5, "objective": "throughput"}[name]
        assert dataclasses.replace(base, **{name: value}).key("digest") == key, name
    assert base.key("other digest") != key


@pytest.mark.parametrize("option", ["data", "accuracy_data"])
def test_the_key_follows_what_a_data_folder_holds(tmp_path: Path, option: str) -> None:
    folder = _images(tmp_path / "val", classes=("cat", "dog"))
    req = DeployRequest(model="depthwise_cifar", **{option: str(folder)})
    first = req.key("d")
    assert req.key("d") == first, "the same folder, the same key"
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(folder / "cat" / "0.png")
    os.utime(folder / "cat" / "0.png", ns=(1, 1))  # same name; other bytes and time
    second = req.key("d")
    assert second != first
    _images(tmp_path / "val", n=3, classes=("dog",))  # one more image
    assert req.key("d") != second
    (folder / "dog" / "2.png").rename(folder / "cat" / "2.png")  # an image moved to another class
    assert len({first, second, req.key("d")}) == 3


def _package(folder: Path) -> Path:
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"x")
    (folder / "triton" / "m" / "1").mkdir(parents=True)
    (folder / "triton" / "m" / "1" / "model.onnx").write_bytes(b"x")
    files = {"model.onnx": {}, "triton/m/1/model.onnx": {}}
    (folder / MANIFEST).write_text(json.dumps({"package": "m", "files": files}))
    return folder


def test_force_replaces_only_a_deploy_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert package_problem(_package(tmp_path / "p.deploy")) is None
    DeployRequest(model="m", out="p.deploy", force=True).check_package()
    (tmp_path / "empty").mkdir()
    DeployRequest(model="m", out="empty", force=True).check_package()  # nothing there to lose
    keep = tmp_path / "keepme"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    (keep / "photo.png").write_bytes(b"\x89PNG")
    with pytest.raises(BadInputError, match="keepme is not one: it holds no readable manifest.json") as e:
        DeployRequest(model="m", out="keepme", force=True).check_package()
    assert "another --out" in e.value.hint
    (tmp_path / "p.deploy" / "triton" / "mine.txt").write_text("added by the user")
    with pytest.raises(BadInputError, match="triton/mine.txt, which deploy did not write"):
        DeployRequest(model="m", out="p.deploy", force=True).check_package()
    (keep / MANIFEST).write_text("[1, 2]")
    with pytest.raises(BadInputError, match="not a deploy package's"):
        DeployRequest(model="m", out="keepme", force=True).check_package()


@pytest.mark.parametrize("out", [".", "..", "/", "CWD", "sub/.."])
def test_the_current_folder_or_one_above_it_is_never_an_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInputError, match="is the current folder or one above it"):
        DeployRequest(model="m", out=str(tmp_path) if out == "CWD" else out, force=True).check_package()


def test_the_batch_list_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    req = DeployRequest(model="depthwise_cifar", batches=list(range(1, 3001)))
    with pytest.raises(BadInputError, match="--batch lists 3000 batch sizes") as e:
        req.check()
    assert f"at most {limits.DEPLOY_BATCH_SIZES_MAX}" in e.value.hint
    DeployRequest(model="depthwise_cifar", batches=[1, 1, 2] * 20).check()  # repeats count once
    req = DeployRequest(model="depthwise_cifar", batches=[1, 100_000_000])
    req.check()
    assert req.known_chw() == (3, 32, 32)  # the registry's size, before any export
    with pytest.raises(BadInputError, match=r"--batch 1,100000000 needs at least .* TiB"):
        req.check_memory(req.known_chw())


def test_image_folders_of_unreadable_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "cls").mkdir(parents=True)
    (bad / "cls" / "a.png").write_bytes(b"")
    (bad / "cls" / "b.jpg").write_bytes(b"not a jpeg")
    for labelled in (False, True):
        with pytest.raises(BadInputError, match="2 image file.*none can be read"):
            check_image_folder(str(bad), "--data", labelled)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "cls" / "c.png")
    check_image_folder(str(bad), "--data", False)  # one readable image is enough up front


def test_a_onednn_cap_is_another_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Capped, OpenVINO and torch run other kernels (and the int8 recipe may change): nothing timed uncapped is reused."""
    from deployinc.core import env

    monkeypatch.setattr(env, "cpu_flags", lambda: {"avx2", "avx512bw", "avx512_vnni", "avx512_bf16"})  # a Zen 4
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(var, raising=False)
    base = DeployRequest(model="depthwise_cifar").key("digest")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")  # hides only bf16 here: the int8 path may stay the same
    assert DeployRequest(model="depthwise_cifar").key("digest") != base
