"""scripts/sweep_zoo.py: rows from a fake CLI, resume from the state file, timeouts, the report, the planted fault.

Nothing here exports a real model: the child processes are replaced by a fake ``run_step`` that writes what the CLI
would (a tiny ONNX file with deployinc provenance, a verify JSON report), except one test that runs a real
``sleep`` through the real ``run_step`` to see the time limit kill it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest



def tiny_onnx(path: Path, zero_branch: bool = False, fallback: str | None = None) -> None:
    """x -> Conv a -> Relu -> Conv b -> Add(Relu out) -> logits; with ``zero_branch`` Conv b has all-zero weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from deployinc.metadata import Provenance, write_provenance

    rng = np.random.default_rng(0)
    wa = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    wb = np.zeros((4, 4, 1, 1), np.float32) if zero_branch else rng.normal(size=(4, 4, 1, 1)).astype(np.float32)
    wc = rng.normal(size=(4, 4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "a.weight"], ["ya"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["ya"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "c.weight"], ["yc"], name="conv_c"),  # the residual branch...
        helper.make_node("Conv", ["yc", "b.weight"], ["yb"], name="conv_b"),  # ...muted when zero_branch
        helper.make_node("Add", ["ra", "yb"], ["logits"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [numpy_helper.from_array(wa, "a.weight"), numpy_helper.from_array(wb, "b.weight"), numpy_helper.from_array(wc, "c.weight")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    prov = Provenance(model_spec="tiny", exporter="torchscript", opset=17)
    write_provenance(model, prov)
    if fallback:  # what a newer deployinc records; written raw, so it is there whether or not Provenance has the fields
        extra = {"deployinc.fallback": fallback, "deployinc.export_path": [
            {"exporter": "dynamo", "opset": 17, "error": "boom"}, {"exporter": "torchscript", "opset": 17, "error": None}]}
        keep = [(p.key, p.value) for p in model.metadata_props if p.key not in extra]
        del model.metadata_props[:]
        for key, value in keep + [(k, json.dumps(v)) for k, v in extra.items()]:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(model, str(path))


def verify_report(verdict: str, max_rel: float, floor: float | None = None, first: str | None = None) -> dict:
    out = {"logits": None}
    rep = {
        "verdict": verdict,
        "failures": [] if verdict == "pass" else [f"ort-cpu batch 1 logits: max_rel {max_rel:.1e} > 1e-04"],
        "backends": [{"backend": "ort-cpu", "status": "ran", "tolerance": {"max_rel": 1e-4},
                      "results": [{"batch": 1, "outputs": [dict(out, max_rel=max_rel)]},
                                  {"batch": 8, "outputs": [dict(out, max_rel="nan" if max_rel > 1 else max_rel / 2)]}]}],
        "localization": {"summary": "departs at conv_c", "first": {"module": first, "onnx_node": "conv_c"}} if first else None,
    }
    if floor is not None:
        rep["noise_floor"] = {"status": "measured", "max_rel": {"logits": floor}}
    return rep


class FakeCLI:
    """Stands in for run_step: answers export / verify / plant by the behaviour set per model."""

    def __init__(self, sz, behaviour: dict[str, str]):
        self.sz, self.behaviour, self.calls = sz, behaviour, []

    def __call__(self, cmd, cwd, timeout, log_path, tick=None):
        step = log_path.stem  # export / verify / plant
        spec = cmd[4] if step == "export" else None
        model = next(m for m in self.behaviour if self.sz.model_dir(Path(cwd).parents[1], m) == Path(cwd))
        self.calls.append((model, step))
        how = self.behaviour[model]
        log_path.write_text("")
        if how == "timeout" and step == "export":
            return self.sz.StepResult(None, timeout, 100.0, timed_out=True)
        if how == "segfault" and step == "verify":
            return self.sz.StepResult(-11, 1.0, 200.0, signal="SIGSEGV", log="")
        if how == "bug" and step == "export":
            log = "Traceback (most recent call last):\n  File x\nKeyError: 'conv7'\nerror: internal error in deployinc (this is a bug)\n"
            return self.sz.StepResult(70, 2.0, 300.0, log=log)
        if step == "export":
            tiny_onnx(Path(cmd[cmd.index("--out") + 1]), fallback="dynamo failed: boom" if how == "fallback" else None)
            log = f"quick check (ORT CPU vs torch): PASS\nwrote {spec}.onnx (opset 17, torchscript, dynamic batch) in 3.5 s\n"
            return self.sz.StepResult(0, 4.0, 500.0, log=log)
        json_path = Path(cmd[cmd.index("--json") + 1])
        if step == "plant":
            json_path.write_text(json.dumps(verify_report("fail", 0.2, first="c")))
            return self.sz.StepResult(1, 2.0, 450.0, log="")
        if how == "blind":  # what ran passed, but the reference ignores its input: verify exits 3
            json_path.write_text(json.dumps(verify_report("inconclusive", 0.0)))
            return self.sz.StepResult(3, 3.0, 400.0, log="error: what ran passed, but it proves nothing: the reference's 'logits' is the same\n")
        ok = how != "fail"
        json_path.write_text(json.dumps(verify_report("pass" if ok else "fail", 1e-6 if ok else 3e-3, floor=4e-7)))
        return self.sz.StepResult(0 if ok else 1, 3.0, 400.0, log="" if ok else "error: parity failed: ...\n")


def run(sz, tmp_path, monkeypatch, behaviour, *extra):
    fake = FakeCLI(sz, behaviour)
    monkeypatch.setattr(sz, "run_step", fake)
    monkeypatch.setattr(sz, "param_count", lambda spec: 1000)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    md, js = tmp_path / "out.md", tmp_path / "out.json"
    args = ["--models", ",".join(behaviour), "--work", str(tmp_path / "work"), "--out-md", str(md), "--out-json", str(js), *extra]
    assert sz.main(args) == 0
    return fake, md.read_text(), json.loads(js.read_text())


def test_rows_verdicts_and_report(sz, tmp_path, monkeypatch):
    behaviour = {"good": "pass", "timm/bad": "fail", "slow": "timeout", "buggy": "bug", "seg": "segfault", "fb": "fallback", "zero": "blind"}
    _, md, data = run(sz, tmp_path, monkeypatch, behaviour)
    rows = {r["model"]: r for r in data["rows"]}
    assert [r["model"] for r in data["rows"]] == list(behaviour)
    assert rows["good"]["verdict"] == "PASS" and rows["good"]["nodes"] == 5 and rows["good"]["path"] == "torchscript@17"
    assert rows["good"]["max_rel"] == pytest.approx(1e-6) and rows["good"]["noise_floor"] == pytest.approx(4e-7)
    assert rows["good"]["peak_mb"] == 500.0 and rows["good"]["pipeline_s"] == 3.5 and rows["good"]["budget"] == 1e-4
    assert rows["timm/bad"]["verdict"] == "FAIL" and "max_rel" in rows["timm/bad"]["error"]
    assert rows["slow"]["verdict"] == "timeout" and "timed out" in rows["slow"]["error"] and "verify_rc" not in rows["slow"]
    assert rows["buggy"]["verdict"] == "export-error" and rows["buggy"]["error"] == "KeyError: 'conv7'"
    assert rows["seg"]["verdict"] == "crash" and rows["seg"]["error"] == "killed by SIGSEGV"
    assert rows["fb"]["fallback"] == "dynamo failed: boom" and rows["fb"]["path"] == "dynamo@17 x -> torchscript@17"
    assert rows["zero"]["verdict"] == "inconclusive" and "proves nothing" in rows["zero"]["error"]
    assert data["counts"] == {"PASS": 2, "FAIL": 1, "inconclusive": 1, "export-error": 1, "verify-error": 0, "timeout": 1, "crash": 1}
    for line in ("| PASS | 2 |", "| FAIL | 1 |", "| inconclusive | 1 |", "| timeout | 1 |", "| crash | 1 |", "| export-error | 1 |", "7 models run"):
        assert line in md
    assert "`timm/bad`" in md and "Machine:" in md and "torch " in md


def test_resume_skips_finished_and_redo(sz, tmp_path, monkeypatch):
    fake, _, _ = run(sz, tmp_path, monkeypatch, {"a": "pass", "b": "timeout"})
    assert ("a", "export") in fake.calls and ("b", "export") in fake.calls
    # a killed sweep: the state has a's row and a half-written line
    state = tmp_path / "work" / "state.jsonl"
    state.write_text(state.read_text().splitlines()[0] + "\n" + '{"model": "b", "verd')
    fake, md, data = run(sz, tmp_path, monkeypatch, {"a": "pass", "b": "pass", "c": "pass"})
    assert {m for m, _ in fake.calls} == {"b", "c"}  # a finished before the kill: skipped
    assert [r["verdict"] for r in data["rows"]] == ["PASS", "PASS", "PASS"]
    assert {m: r["verdict"] for m, r in sz.load_state(state).items()} == {"a": "PASS", "b": "PASS", "c": "PASS"}
    fake, _, data = run(sz, tmp_path, monkeypatch, {"a": "pass", "b": "fail", "c": "pass"}, "--redo", "b")
    assert {m for m, _ in fake.calls} == {"b"} and data["rows"][1]["verdict"] == "FAIL"
    fake, _, _ = run(sz, tmp_path, monkeypatch, {"a": "pass", "b": "pass", "c": "pass"}, "--redo", "FAIL")
    assert {m for m, _ in fake.calls} == {"b"}
    # --report-only rewrites from the state without running anything
    out = tmp_path / "again.md"
    assert sz.main(["--report-only", "--work", str(tmp_path / "work"), "--out-md", str(out), "--out-json", str(tmp_path / "a.json")]) == 0
    assert "| PASS | 3 |" in out.read_text()


def test_plant_row(sz, tmp_path, monkeypatch):
    _, md, data = run(sz, tmp_path, monkeypatch, {"p": "pass"}, "--plant")
    p = data["rows"][0]["plant"]
    assert p["rc"] == 1 and p["caught"] and p["localized"] == "c" and p["match"] == "exact"
    assert p["node"] == "conv_c" and p["weight"] == "c.weight"
    assert "1/1 caught" in md and "## Planted faults" in md


def test_plant_skips_a_muted_branch(sz, tmp_path):
    import onnx
    from onnx import numpy_helper

    src = tmp_path / "m.onnx"
    tiny_onnx(src, zero_branch=True)
    info = sz.plant_fault(src, tmp_path / "planted.onnx")
    assert info["node"] == "conv_a" and "1/1 live Conv (3 in all)" == info["index"]  # conv_c feeds the zero conv_b
    before = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(src)).graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "planted.onnx")).graph.initializer}
    np.testing.assert_allclose(after["a.weight"], before["a.weight"] * 1.1, rtol=1e-6)
    np.testing.assert_array_equal(after["c.weight"], before["c.weight"])


def test_real_timeout_kills_the_child(sz, tmp_path):
    r = sz.run_step([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], tmp_path, 1.0, tmp_path / "x.log")
    assert r.timed_out and r.rc is None and r.seconds < 10 and "started" in r.log
    assert sz.error_line(r).startswith("timed out")
    r = sz.run_step([sys.executable, "-c", "import sys; print('error: no such model'); sys.exit(2)"], tmp_path, 30, tmp_path / "y.log")
    assert r.rc == 2 and not r.timed_out and r.maxrss_mb > 1 and sz.error_line(r) == "no such model"


def test_timm_list_is_in_timm(sz):
    timm = pytest.importorskip("timm")
    names = [n for family in sz.TIMM_MODELS.values() for n in family]
    assert len(names) >= 50 and len(sz.TIMM_MODELS) >= 20 and len(set(names)) == len(names)
    assert not set(names) - set(timm.list_models())


def test_read_floor_says_when_verify_did_not_need_it(sz):
    assert sz.read_floor({"noise_floor": None}) == {"noise_floor": None, "floor_status": "not needed (within the preset)"}
    got = sz.read_floor({"noise_floor": {"status": "measured", "max_rel": {"logits": 2e-4, "aux": 1e-4}}})
    assert got == {"noise_floor": 2e-4, "floor_status": "measured", "floor_reason": None}
