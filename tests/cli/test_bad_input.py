"""Bad input a probe found not answered as README promises (issue 22, part 4), through the real commands: exit 2
with one ``error:`` and one ``hint:`` line and no traceback, nothing lost, bounded time. scripts/probe_inputs.py
runs the same cases in subprocesses."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from tests.conftest import files_in, invoke
from tests.core.test_limits import _classifier
from tests.io.test_arrays import _flip_data_byte, _header

DEPLOY_FAST = ["--backends", "ort-cpu", "--no-compile", "--no-search", "--iters", "2", "--warmup", "1", "--samples", "2", "--precisions", "fp32"]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "deployinc-cache"))


@pytest.fixture(scope="module")
def dw(tmp_path_factory) -> Path:
    """depthwise_cifar exported by deployinc: 3 x 32 x 32 in, 10 classes out, provenance recorded."""
    from deployinc.export import export_pipeline

    out = tmp_path_factory.mktemp("bad-input") / "dw.onnx"
    export_pipeline("depthwise_cifar", out=out, exporter="torchscript", threads=2)
    return out


@pytest.fixture(scope="module")
def saved(dw: Path) -> Path:
    """A run saved by verify --save-outputs (inputs, reference and backend outputs)."""
    from deployinc.verify.core import verify

    path = dw.with_name("run.npz")
    verify(dw, samples=2, batches=[1], save_outputs=path, localize=False, fp64_floor=False)
    return path


def _bad(r, says: str) -> None:
    """Exit 2, one error line (containing ``says``) and one hint line, no traceback."""
    out = r.stdout + r.stderr
    tags = [ln.split(":")[0] for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    assert r.exit_code == 2, out
    assert tags == ["error", "hint"], out
    assert says in r.stderr, out
    assert "Traceback" not in out


def _images(folder: Path, classes: int) -> Path:
    for c in range(classes):
        (folder / f"c{c:02d}").mkdir(parents=True)
        Image.fromarray(np.full((32, 32, 3), 20 * c, np.uint8)).save(folder / f"c{c:02d}" / "0.png")
    return folder


# saved tensors: one reader for every .npz ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["scalar reference", "object arrays", "strings", "bad CRC", "NaN inputs"])
def test_verify_load_outputs_refuses_a_bad_saved_run(cli_runner, dw: Path, saved: Path, tmp_path: Path, case: str) -> None:
    with np.load(saved) as z:
        arrays = {k: z[k] for k in z.files if k != "meta"}
    ref = next(k for k in arrays if k.startswith("reference/"))
    path = tmp_path / "bad.npz"
    if case == "scalar reference":
        arrays[ref], says = np.float32(1.0), "has shape []"
    elif case == "object arrays":
        arrays["input"], says = np.array([None] * 2, dtype=object), "holds Python objects"
    elif case == "strings":
        arrays[ref], says = np.array(["cat", "dog"]), "holds strings"
    elif case == "NaN inputs":
        arrays["input"] = arrays["input"].copy()
        arrays["input"][0, 0, 0, 0] = np.nan
        says = "hold non-finite values (1 NaN"
    np.savez(path, **arrays)
    if case == "bad CRC":
        path, says = _flip_data_byte(path, tmp_path / "crc.npz"), "Bad CRC-32"
    _bad(invoke(cli_runner, ["verify", str(dw), "--load-outputs", str(path), "--batch", "1"]), says)


@pytest.mark.parametrize("case", ["bad CRC", "object arrays", "3e12 elements"])
def test_bench_inputs_refuses_a_bad_archive(cli_runner, dw: Path, tmp_path: Path, case: str) -> None:
    path = tmp_path / "in.npz"
    if case == "bad CRC":
        np.savez(tmp_path / "good.npz", input=np.zeros((2, 3, 32, 32), np.float32))
        path, says = _flip_data_byte(tmp_path / "good.npz", path), "Bad CRC-32"
    elif case == "object arrays":
        np.savez(path, input=np.array([{"a": 1}], dtype=object))
        says = "holds Python objects"
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("input.npy", _header((3_000_000_000_000,)) + b"\0" * 64)
        says = "needs at least"
    t = time.perf_counter()
    r = invoke(cli_runner, ["bench", str(dw), "--inputs", str(path), "--backends", "ort-cpu", "--iters", "2", "--warmup", "1", "--no-progress"])
    _bad(r, says)
    assert time.perf_counter() - t < 60


# deploy: nothing lost, bounded, refused up front ---------------------------------------------------------------------


def test_deploy_force_keeps_a_folder_deploy_did_not_write(cli_runner, dw: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keepme"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    (keep / "photo.png").write_bytes(b"\x89PNG not really")
    _bad(invoke(cli_runner, ["deploy", str(dw), "--out", str(keep), "--force", *DEPLOY_FAST]), "is not one")
    assert files_in(keep) == ["notes.txt", "photo.png"]


@pytest.mark.parametrize("out", [".", "..", "/"])
def test_deploy_never_replaces_the_current_folder_or_above(cli_runner, dw: Path, tmp_path: Path, monkeypatch, out: str) -> None:
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "mine.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "here")
    _bad(invoke(cli_runner, ["deploy", str(dw), "--out", out, "--force", *DEPLOY_FAST]), "is the current folder or one above it")
    assert (tmp_path / "here" / "mine.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args, says",
    [
        (["--batch", ",".join(str(b) for b in range(1, 3001))], "--batch lists 3000 batch sizes"),
        (["--batch", "1,100000000"], "--batch 1,100000000 needs at least"),
        (["--input-shape", "1,3,64,64"], "--input-shape 1,3,64,64 does not fit"),
        (["--data", "ZERO"], "none can be read"),
        (["--accuracy-data", "TWELVE"], "has class sub-folders for 12 classes, but the model has 10 outputs"),
    ],
)
def test_deploy_refuses_before_any_candidate_runs(cli_runner, dw: Path, tmp_path: Path, monkeypatch, args: list[str], says: str) -> None:
    zero = tmp_path / "zero"
    zero.mkdir()
    (zero / "a.png").write_bytes(b"")
    (zero / "b.jpg").write_bytes(b"not a jpeg")
    paths = {"ZERO": str(zero), "TWELVE": str(_images(tmp_path / "val", 12))}
    args = [paths.get(a, a) for a in args]
    monkeypatch.chdir(tmp_path)
    t = time.perf_counter()
    _bad(invoke(cli_runner, ["deploy", str(dw), "--out", str(tmp_path / "p.deploy"), *DEPLOY_FAST, *args]), says)
    assert time.perf_counter() - t < 60
    assert not (tmp_path / "p.deploy").exists()


# labels and class counts --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels, says", [("3", "names 3 classes, but the model has 10 outputs"), ("15", "names 15 classes"),
                                          ("dup", "names 1 class(es) twice ('c01')"), ("fifo", "is not a regular file"),
                                          ("folders12", "has class sub-folders for 12 classes")])  # fmt: skip
def test_verify_labels_must_name_one_class_per_output(cli_runner, dw: Path, tmp_path: Path, labels: str, says: str) -> None:
    data = _images(tmp_path / "val", 12 if labels == "folders12" else 10)
    f = tmp_path / "labels.txt"
    if labels == "fifo":
        os.mkfifo(f)
    elif labels != "folders12":
        names = {"3": ["c00", "c01", "c02"], "15": [f"c{i:02d}" for i in range(15)], "dup": [f"c{i:02d}" for i in range(9)] + ["c01"]}[labels]
        f.write_text("\n".join(names) + "\n")
    extra = [] if labels == "folders12" else [str(f)]
    _bad(invoke(cli_runner, ["verify", str(dw), "--data", str(data), "--labels", *extra, "--batch", "1"]), says)


# other commands -----------------------------------------------------------------------------------------------------


def test_models_unknown_family_names_the_known_ones(cli_runner) -> None:
    r = invoke(cli_runner, ["models", "--family", "nosuchfam"])
    _bad(r, "unknown family 'nosuchfam'")
    assert "inception" in r.stderr and "resnet" in r.stderr
    assert invoke(cli_runner, ["models", "--source", "builtin", "--family", "depthwise"]).exit_code == 0


@pytest.mark.parametrize(
    "key, value",
    [("weights_sha256", 1), ("state_sha256", {"a": [1]}), ("versions", [1, 2]), ("versions", "x"), ("export_path", 3.5),
     ("model_spec", "y" * 200_000), ("passes", "[" * 5000 + "]" * 5000), ("mean", "[" * 900 + "]" * 900), ("fp16", {"k": "v" * 99_999})],
)  # fmt: skip
def test_inspect_shows_hostile_metadata(cli_runner, dw: Path, tmp_path: Path, key: str, value: object) -> None:
    m = onnx.load(str(dw))
    raw = isinstance(value, str) and value.startswith("[")
    entry = next((p for p in m.metadata_props if p.key == f"deployinc.{key}"), None) or m.metadata_props.add()
    entry.key, entry.value = f"deployinc.{key}", value if raw else json.dumps(value)
    path = tmp_path / "hostile.onnx"
    onnx.save(m, str(path))
    t = time.perf_counter()
    r = invoke(cli_runner, ["inspect", str(path), "--json", str(tmp_path / "i.json")])
    assert r.exit_code == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert max(len(ln) for ln in r.stdout.splitlines()) <= 80 and len(r.stdout) < 20_000
    assert time.perf_counter() - t < 30
    json.loads((tmp_path / "i.json").read_text())


def test_convert_fp16_io_names_what_stays_as_it_is(cli_runner, dw: Path, tmp_path: Path) -> None:
    m = onnx.load(str(dw))
    m.graph.node.append(helper.make_node("ArgMax", [m.graph.output[0].name], ["cls"], axis=1, keepdims=0))
    m.graph.output.append(helper.make_tensor_value_info("cls", TensorProto.INT64, ["batch"]))
    src = tmp_path / "argmax.onnx"
    onnx.save(m, str(src))
    r = invoke(cli_runner, ["convert", str(src), "--fp16-io", "--no-check", "--out", str(tmp_path / "a16.onnx")])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "not float32, so kept as they are: cls (int64)" in r.stdout
    out = onnx.load(str(tmp_path / "a16.onnx"))
    assert out.graph.output[1].type.tensor_type.elem_type == TensorProto.INT64
    assert out.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT16


@pytest.mark.parametrize("bad", ["empty", "corrupt"])
def test_train_refuses_a_class_folder_without_images(cli_runner, tmp_path: Path, bad: str) -> None:
    data = tmp_path / "data"
    for c in ("cat", "dog"):
        (data / c).mkdir(parents=True)
    for i in range(6):
        Image.fromarray(np.full((20, 20, 3), 30 * i, np.uint8)).save(data / "cat" / f"{i}.png")
    if bad == "corrupt":
        (data / "dog" / "a.png").write_bytes(b"")
        (data / "dog" / "b.jpg").write_bytes(b"garbage")
    work = tmp_path / "work"
    work.mkdir()
    r = invoke(cli_runner, ["train", "resnet_cifar", "--data", str(data), "--out", str(work / "c.pt"), "--epochs", "1", "--quiet"])
    _bad(r, f"class folder {data / 'dog'} has no readable image")
    assert files_in(work) == []


def test_verify_isolate_is_bounded_without_timeout(cli_runner, tmp_path: Path, monkeypatch) -> None:
    """A hanging graph in its own process is stopped at the default bound (shortened here) and fails: exit 1."""
    from deployinc.verify import core

    assert "300 s by default" in invoke(cli_runner, ["verify", "--help"]).stdout
    assert core.isolated_timeout("ort-cpu", None) == 300 and core.isolated_timeout("ort-trt", None) == 1800
    assert core.isolated_timeout("ort-cpu", 7.0) == 7.0
    onnx.save(_classifier(10**12), str(tmp_path / "hang.onnx"))
    onnx.save(_classifier(None), str(tmp_path / "ref.onnx"))
    monkeypatch.setattr(core, "ISOLATED_TIMEOUT_OTHERS", 3.0)
    t = time.perf_counter()
    r = invoke(cli_runner, ["verify", str(tmp_path / "hang.onnx"), "--against", str(tmp_path / "ref.onnx"), "--isolate",
                            "--batch", "1", "--samples", "1", "--no-localize"])  # fmt: skip
    assert r.exit_code == 1, r.stdout + r.stderr
    assert "did not finish within 3 s" in r.stdout + r.stderr
    assert time.perf_counter() - t < 60
