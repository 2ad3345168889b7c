"""What a file may not decide: which code runs (a ``module:function`` spec in its metadata) and its own pass mark
(budgets in ``deployinc.tolerances``). Each case plants the hostile edit and asserts nothing was imported or
loosened."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.conftest import invoke

SHAPE = (1, 3, 16, 16)
EVIL = """
from pathlib import Path
Path(__file__).with_name("IMPORTED").write_text("imported")

def build(num_classes=10):
    Path(__file__).with_name("CALLED").write_text("called")
    raise SystemExit("never here")
"""


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "deployinc-cache"))


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tinynets_dir) -> Path:
    from deployinc.export import export_pipeline

    out = tmp_path_factory.mktemp("trust") / "tiny.onnx"
    export_pipeline("tinynets:build", out=out, exporter="torchscript", input_shape=SHAPE, threads=2)
    return out


def _edit_meta(src: Path, dst: Path, **values: object) -> Path:
    m = onnx.load(str(src))
    for p in m.metadata_props:
        key = p.key.removeprefix("deployinc.")
        if key in values:
            p.value = json.dumps(values[key])
    onnx.save(m, str(dst))
    return dst


def _scale_weight(src: Path, dst: Path, name: str, factor: float) -> Path:
    m = onnx.load(str(src))
    t = next(t for t in m.graph.initializer if t.name == name)
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * np.float32(factor), t.name))
    onnx.save(m, str(dst))
    return dst


def _one_line_error(r) -> None:
    assert "Traceback" not in r.stdout + r.stderr
    assert [ln.split(":")[0] for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))] == ["error", "hint"]


@pytest.mark.parametrize("command", ["verify", "bench"])
def test_a_spec_planted_in_the_metadata_is_never_imported(cli_runner, tiny_file, tmp_path, monkeypatch, command):
    (tmp_path / "evilmod.py").write_text(EVIL)
    evil = _edit_meta(tiny_file, tmp_path / "evil.onnx", model_spec="evilmod:build")
    monkeypatch.chdir(tmp_path)  # the stranger's folder, as the probe ran it
    sys.modules.pop("evilmod", None)
    path_before = list(sys.path)
    if command == "verify":
        r = invoke(cli_runner, ["verify", "evil.onnx"])
        assert r.exit_code == 2, r.stdout + r.stderr
        _one_line_error(r)
        assert "names Python code" in r.stderr and "--reference evilmod:build" in r.stderr
    else:
        r = invoke(cli_runner, ["bench", str(evil), "--backends", "torch,ort-cpu", "--warmup", "1", "--iters", "5", "--no-progress"])
        assert "names Python code" in r.stdout + r.stderr  # the torch row is skipped with the reason
        assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "CALLED").exists()
    assert "evilmod" not in sys.modules
    assert sys.path == path_before  # the current folder was not put on sys.path


def test_an_installed_module_named_by_a_file_is_not_imported(cli_runner, tiny_file, tmp_path):
    # `this` prints the Zen of Python on import: any installed module would do.
    had = "this" in sys.modules
    evil = _edit_meta(tiny_file, tmp_path / "zen.onnx", model_spec="this:x")
    r = invoke(cli_runner, ["verify", str(evil)])
    assert r.exit_code == 2
    assert "Beautiful is better than ugly" not in r.stdout + r.stderr
    assert ("this" in sys.modules) == had


def test_the_user_confirms_the_recorded_spec_with_reference_or_the_trust_flag(cli_runner, tiny_file):
    r = invoke(cli_runner, ["verify", str(tiny_file), "--reference", "tinynets:build", "--batch", "1"])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "rebuilt from the file's metadata" in r.stdout  # the recorded weights and seed, not a fresh model
    r = invoke(cli_runner, ["verify", str(tiny_file), "--trust-model-code", "--batch", "1"])
    assert r.exit_code == 0, r.stdout + r.stderr


def test_a_spec_given_by_the_user_may_name_its_file(tmp_path, tinynets_dir, monkeypatch):
    from deployinc.models.loading import load_model

    (tmp_path / "nets_by_path.py").write_text((tinynets_dir / "tinynets.py").read_text())
    path_before = list(sys.path)
    loaded = load_model(f"{tmp_path / 'nets_by_path.py'}:build", input_shape=SHAPE, calibrate_bn=False)
    assert loaded.info.num_classes == 10
    # and a module in the current folder, imported without leaving the folder on sys.path
    (tmp_path / "nets_in_cwd.py").write_text((tinynets_dir / "tinynets.py").read_text())
    monkeypatch.chdir(tmp_path)
    loaded = load_model("nets_in_cwd:build", input_shape=SHAPE, calibrate_bn=False)
    assert loaded.info.num_classes == 10
    assert sys.path == path_before


def test_a_file_cannot_loosen_its_own_pass_mark(cli_runner, tiny_file, tmp_path):
    broken = _scale_weight(tiny_file, tmp_path / "x3.onnx", "pw.weight", 3.0)
    r = invoke(cli_runner, ["verify", str(broken), "--trust-model-code", "--no-localize", "--batch", "1"])
    assert r.exit_code == 1, r.stdout + r.stderr
    loose = {"max_rel": 100, "min_cosine": -1, "min_top1": 0, "min_top5": 0, "fp32": {"max_rel": 100, "min_cosine": -1, "min_top1": 0, "min_top5": 0}}
    loosened = _edit_meta(broken, tmp_path / "loose.onnx", tolerances=loose)
    r = invoke(cli_runner, ["verify", str(loosened), "--trust-model-code", "--no-localize", "--batch", "1"])
    assert r.exit_code == 1, r.stdout + r.stderr
    assert "looser than the fp32-cpu preset were ignored" in r.stdout + r.stderr
    # honoured only when the user asks for it explicitly
    r = invoke(cli_runner, ["verify", str(loosened), "--trust-model-code", "--file-tolerances", "--no-localize", "--batch", "1"])
    assert r.exit_code == 0, r.stdout + r.stderr


def test_stricter_budgets_recorded_in_a_file_still_apply(cli_runner, tiny_file, tmp_path):
    strict = _edit_meta(tiny_file, tmp_path / "strict.onnx", tolerances={"max_abs": 0.0})
    r = invoke(cli_runner, ["verify", str(strict), "--trust-model-code", "--no-localize", "--batch", "1", "--inputs", "normal"])
    assert r.exit_code == 1, r.stdout + r.stderr  # no export matches torch to the last bit on every sample


def test_tolerance_for_applies_only_stricter_recorded_budgets():
    from deployinc.verify.core import tolerance_for

    notes: list[str] = []
    tol, src = tolerance_for("fp32", "ort-cpu", {"max_rel": 5e-5, "min_cosine": 0.5, "min_top1": float("nan")}, None, notes=notes)
    assert tol.max_rel == 5e-5 and tol.min_cosine == 0.99999 and tol.min_top1 == 1.0
    assert "min_cosine=0.5" in notes[0] and "min_top1=nan" in notes[0] and "max_rel" not in notes[0]
    tol, _ = tolerance_for("fp32", "ort-cpu", {"min_cosine": 0.5}, None, trust_file=True)
    assert tol.min_cosine == 0.5
    tol, _ = tolerance_for("fp32", "ort-cpu", {"min_cosine": 0.5}, {"min_cosine": 0.25})
    assert tol.min_cosine == 0.25  # the user's flag decides
