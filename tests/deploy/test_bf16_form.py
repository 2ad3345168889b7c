"""deploy's bf16-float file (``run._bf16_form``, artifact ``int8-cpu-mixed-qdq-bf16``) on any CPU: the layer search's
judge and its widening planted, so each outcome is checked where OpenVINO or native bf16 is missing too (the real
runs are in tests/backends/test_openvino.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from deployinc.core.metrics import preset
from deployinc.deploy import run as R
from deployinc.deploy.request import DeployRequest
from deployinc.errors import BackendUnavailable
from deployinc.io import atomic_write_text, save_onnx
from deployinc.precision import fallback as F
from tests.precision.test_fp16 import convnet

RANKING = [{"node": "/conv2", "gain": 2e-3}, {"node": "/conv1", "gain": 1e-3}]


def _judgement(passed: bool, line: str) -> F.Judgement:
    return F.Judgement(passed, 0.0 if passed else 1.0, ("PASS " if passed else "FAIL ") + line, "planted")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A deploy state folder holding the fp32 file and a made ``-qdq`` artifact whose search kept /fc in float."""
    save_onnx(convnet(), tmp_path / "fp32.onnx", force=True)
    save_onnx(convnet(), tmp_path / "int8-cpu-mixed-qdq.onnx", force=True)
    fallback = {"float_nodes": ["/fc"], "layers": [{"node": "/fc", "module": "fc", "gain": 3e-3, "share": 0.01}], "ranking": RANKING,
                "float_share": 0.01, "candidates": 3}  # fmt: skip
    atomic_write_text(tmp_path / "int8-cpu-mixed-qdq.json", json.dumps({"format": 1, "made": "quantize + layer fallback", "fallback": fallback}), force=True)
    return tmp_path


def _plant(monkeypatch: pytest.MonkeyPatch, *, base: bool, added: list[str] | None, fp32_float: bool, labels: bool = False) -> dict[str, Any]:
    """The search's oracle (labelled or not), widen's outcome (``added`` None: nothing within reach passes) and the
    judgement with fp32 float layers, planted; returns what widen was called with."""
    x = np.zeros((8, 3, 16, 16), np.float32)
    goal = F.TaskGoal(np.zeros(8, np.int64)) if labels else None
    oracle = F.Oracle(x, "input", {"logits": np.zeros((8, 5), np.float32)}, preset("int8"), goal=goal, set_size=4)
    monkeypatch.setattr(R, "_oracle", lambda *a, **k: oracle)
    seen: dict[str, Any] = {}

    def widen(qmodel: Any, nodes: Any, ranking: Any, on: F.Oracle, **kw: Any) -> F.Widened:
        seen.update(nodes=list(nodes), ranking=list(ranking), backend=on.backend, float_precision=on.float_precision, images=len(on.inputs))
        start = _judgement(base, "cosine 0.9903")
        if base:
            return F.Widened(qmodel, [], start, start, 1, 0.0)
        if added is None:
            return F.Widened(None, ["/conv2", "/conv1"], _judgement(False, "cosine 0.9905"), start, 3, 0.0)
        return F.Widened(F.keep_float(qmodel, added, kw.get("fp32")), list(added), _judgement(True, "cosine 0.9913"), start, 2, 0.0)

    monkeypatch.setattr(F, "widen", widen)
    monkeypatch.setattr(F.Oracle, "judge", lambda self, m: _judgement(fp32_float, "cosine 0.9915") if self.float_precision is None else _judgement(False, "x"))
    return seen


def _make(state: Path) -> tuple[dict[str, Any], Path]:
    artifacts: dict[str, Any] = {}
    R._artifact(DeployRequest(model="x", samples=4), state, state / "fp32.onnx", "int8-cpu-mixed-qdq-bf16", artifacts)
    return artifacts["int8-cpu-mixed-qdq-bf16"], state / "int8-cpu-mixed-qdq-bf16.onnx"


def test_a_file_that_keeps_the_margin_is_kept_as_it_is(monkeypatch, state):
    seen = _plant(monkeypatch, base=True, added=None, fp32_float=True)
    info, path = _make(state)
    assert seen == {"nodes": ["/fc"], "ranking": RANKING, "backend": "openvino", "float_precision": "bf16", "images": 8}
    assert info["float_form"]["added"] == [] and info["fallback"]["float_nodes"] == ["/fc"] and path.is_file()
    assert "fp32_float_layers" not in info["float_form"] and "more layer(s)" not in info["made"]


def test_a_file_bf16_spends_is_widened_and_stamped(monkeypatch, state):
    _plant(monkeypatch, base=False, added=["/conv2"], fp32_float=True)
    info, path = _make(state)
    form = info["float_form"]
    assert [r["node"] for r in form["added"]] == ["/conv2"] and form["added"][0]["module"] == "/conv2" and form["added"][0]["for"] == "bf16"
    assert form["base_line"].startswith("FAIL") and form["line"].startswith("PASS") and form["fp32_float_layers"] == "PASS cosine 0.9915"
    assert info["fallback"]["float_nodes"] == ["/fc", "/conv2"] and info["fallback"]["float_share"] > 0.01
    assert "1 more layer(s) in float to keep the search's margin with bf16 float layers on openvino" in info["made"]
    stamped = json.loads({p.key: p.value for p in onnx.load(path).metadata_props}["deployinc.int8"])["fallback"]
    assert stamped["float_nodes"] == ["/fc", "/conv2"] and "ranking" not in stamped and stamped["judged_on"].startswith("openvino")


def test_no_widening_within_reach_fails_where_fp32_float_layers_keep_the_margin(monkeypatch, state):
    _plant(monkeypatch, base=False, added=None, fp32_float=True)
    with pytest.raises(R.NoArtifact, match="spend the margin the layer search kept .* 2 more layer.s. in float do not restore it") as err:
        _make(state)
    assert err.value.verdict == "fail" and not (state / "int8-cpu-mixed-qdq-bf16.onnx").exists()


def test_where_fp32_float_layers_miss_the_margin_too_the_file_is_kept_for_verify_alone(monkeypatch, state):
    _plant(monkeypatch, base=False, added=None, fp32_float=False)
    info, path = _make(state)
    assert info["float_form"]["added"] == [] and "not what spends it" in info["float_form"]["note"] and path.is_file()


def test_with_labelled_images_the_task_rule_judges_and_nothing_is_widened(monkeypatch, state):
    seen = _plant(monkeypatch, base=False, added=["/conv2"], fp32_float=True, labels=True)
    info, _ = _make(state)
    assert seen == {} and info["float_form"]["added"] == [] and "--accuracy-data" in info["float_form"]["note"]


def test_the_searched_files_own_verdict_and_a_missing_backend_pass_through(monkeypatch, state):
    _plant(monkeypatch, base=True, added=None, fp32_float=True)
    artifacts: dict[str, Any] = {"int8-cpu-mixed-qdq": {"error": "not needed: the whole-model int8 passes", "verdict": "skipped"}}
    with pytest.raises(R.NoArtifact) as err:
        R._artifact(DeployRequest(model="x", samples=4), state, state / "fp32.onnx", "int8-cpu-mixed-qdq-bf16", artifacts)
    assert err.value.verdict == "skipped"

    def unavailable(*a: Any, **k: Any) -> F.Widened:
        raise BackendUnavailable("openvino cannot run here: no bf16")

    monkeypatch.setattr(F, "widen", unavailable)
    with pytest.raises(BackendUnavailable):  # the candidate is skipped with the reason, not an error
        _make(state)
