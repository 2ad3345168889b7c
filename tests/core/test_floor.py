"""fp32 judged against the float64 answer where the float32-vs-float32 comparison is over its budget.

Two float32 computations of the same function are each about one floor from the exact answer, possibly on opposite
sides, so a correct export can be more than ``2 x floor`` from torch fp32 (torchvision efficientnet_b5 on the zoo
sweep: max_rel 2.51e-4 against a budget of 2 x 1.18e-4). verify then judges the backend on its own error against
the float64 outputs the floor measurement keeps, with the same budget. Each test here fails if that judgement is
skipped (the correct export FAILs), applied too widely (a fault or a user's max_rel is let through), or measured
against the wrong array.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from deployinc.core.floor import NoiseFloor, judge_fp64, widen
from deployinc.core.metrics import compare_outputs, preset
from deployinc.verify.core import BackendResult, BatchResult, _rejudge

from tests.conftest import invoke
from tests.verify.test_verify import _cache_dir, exports_dir, tiny  # noqa: F401 - fixtures

FLOOR = 1.18e-4  # efficientnet_b5's torch fp32 vs fp64 on the sweep


def _case(n: int = 4, classes: int = 10, ref_side: float = 1.0, test_side: float = -1.5, seed: int = 0):
    """The exact answer ``y64``; torch fp32 ``ref_side`` floors from it at one element of each sample, the backend
    ``test_side`` floors at the same element (opposite signs: the two errors add up against each other)."""
    y64 = np.random.default_rng(seed).standard_normal((n, classes)) * 3.0
    y64[:, 0] = 10.0  # the scale, and a clear top-1
    scale = np.abs(y64).max()
    ref32, test = y64.copy(), y64.copy()
    ref32[:, 3] += ref_side * FLOOR * scale
    test[:, 3] += test_side * FLOOR * scale
    floor = NoiseFloor(
        "measured", max_rel={"logits": FLOOR}, max_abs={"logits": FLOOR * scale}, samples=n, output="logits", y64=y64
    )
    return y64, ref32.astype(np.float32), test.astype(np.float32), floor


def _judge(ref32: np.ndarray, test: np.ndarray, floor: NoiseFloor, flags: dict | None = None) -> BackendResult:
    """Run verify's re-judging (:func:`_rejudge`) on one ort-cpu backend at batch ``len(test)``."""
    req = SimpleNamespace(tolerance=flags, file_tolerances=False)
    subj = SimpleNamespace(precision="fp32", prov=None)
    n = len(test)
    ref_out, got = {"logits": ref32}, {"logits": test}
    br = BatchResult(batch=n, samples=n, outputs=compare_outputs(ref_out, got, preset("fp32", "cpu")), seconds=0.0)
    r = BackendResult("ort-cpu", "ran", preset("fp32", "cpu"), "fp32-cpu", results=[br])
    notes: list[str] = []
    _rejudge(req, subj, [r], ref_out, {f"ort-cpu/b{n}": got}, floor, notes)
    r.describe["notes"] = notes
    return r


def test_within_the_floor_of_float64_but_over_twice_it_from_torch_fp32_passes():
    _, ref32, test, floor = _case()
    budget = widen(preset("fp32", "cpu"), "fp32", floor).max_rel
    assert budget == pytest.approx(2 * FLOOR)
    vs32 = compare_outputs({"logits": ref32}, {"logits": test}, widen(preset("fp32", "cpu"), "fp32", floor))[0]
    assert vs32.max_rel == pytest.approx(2.5 * FLOOR, rel=1e-3) and not vs32.passed  # the old rule's false FAIL
    check = judge_fp64(test, ref32, floor, budget)
    assert check is not None and check.err == pytest.approx(1.5 * FLOOR, rel=1e-3) and check.passed
    assert "<= max(1e-04, 2 x floor 1.18e-04) = 2.36e-04" in check.line(1e-4)

    r = _judge(ref32, test, floor)
    br = r.results[0]
    assert r.passed and br.judged_vs_fp64 and br.err_vs_fp64 == pytest.approx(1.5 * FLOOR, rel=1e-3)
    assert br.outputs[0].max_rel == pytest.approx(2.5 * FLOOR, rel=1e-3)  # the torch fp32 number is still reported
    assert r.fp64_note.startswith("judged against float64: err vs fp64 1.77e-04 <=")
    assert any("passed against float64" in n for n in r.describe["notes"])
    d = r.to_dict()
    assert d["judged_vs_fp64"] and d["err_vs_fp64"] == pytest.approx(1.5 * FLOOR, rel=1e-3)
    assert d["results"][0]["err_vs_fp64"] == pytest.approx(1.5 * FLOOR, rel=1e-3)


def test_far_from_float64_still_fails_and_says_so():
    _, ref32, test, floor = _case(test_side=-2.5)  # 2.5 floors from the exact answer: over 2 x floor there too
    check = judge_fp64(test, ref32, floor, 2 * FLOOR)
    assert check is not None and not check.passed and check.err == pytest.approx(2.5 * FLOOR, rel=1e-3)
    r = _judge(ref32, test, floor)
    assert not r.passed and not r.results[0].judged_vs_fp64
    fail = r.results[0].outputs[0].failures
    assert len(fail) == 1 and fail[0].startswith("max_rel") and "against float64 too: err vs fp64 2.95e-04 >" in fail[0]
    assert r.fp64_note.startswith("over against float64 too")

    # a planted fault: one logit 5% of the scale off, orders of magnitude past the floor against either answer
    _, ref32, test, floor = _case()
    test[:, 4] += 0.5
    r = _judge(ref32, test, floor)
    assert not r.passed and r.results[0].err_vs_fp64 > 100 * FLOOR


def test_close_to_torch_fp32_but_far_from_float64_passes_as_before():
    # the float64 judgement only lifts a max_rel failure: a backend within budget of torch fp32 keeps its PASS
    _, ref32, test, floor = _case(test_side=1.5)  # same side as torch: 0.5 floor from it, 1.5 from float64
    r = _judge(ref32, test, floor)
    assert r.passed and not r.results[0].judged_vs_fp64 and r.results[0].err_vs_fp64 == pytest.approx(1.5 * FLOOR, rel=1e-3)


def test_only_the_max_rel_check_is_lifted():
    _, ref32, test, floor = _case()
    test[:, 0] -= 0.2  # off at the top class too: the cosine fails, whatever max_rel says
    test[:, 1] = 10.5  # and top-1 moves
    r = _judge(ref32, test, floor)
    fail = r.results[0].outputs[0].failures
    assert not r.passed and any(f.startswith("cosine") for f in fail) and any(f.startswith("top1") for f in fail)


def test_a_users_max_rel_is_judged_against_torch_fp32_only():
    _, ref32, test, floor = _case()
    r = _judge(ref32, test, floor, flags={"max_rel": 2.4e-4})
    assert not r.passed and not r.results[0].judged_vs_fp64 and r.results[0].err_vs_fp64 is None


def test_samples_past_the_float64_run_are_judged_against_torch_fp32():
    y64, ref32, test, floor = _case(n=4)
    floor.y64, floor.samples = y64[:2], 2  # the float64 run stopped at its time budget after 2 samples
    assert judge_fp64(test, ref32, floor, 2 * FLOOR).passed is False  # samples 3-4: 2.5 floors from torch fp32
    test[2:] = ref32[2:]  # they agree with torch fp32 exactly: the float64-judged samples decide
    check = judge_fp64(test, ref32, floor, 2 * FLOOR)
    assert check.passed and check.samples == 2 and check.rest == 0.0 and check.rest_samples == 2
    assert judge_fp64(test, ref32, NoiseFloor("unsupported", reason="no double kernel"), 2 * FLOOR) is None
    assert judge_fp64(test[:, :5], ref32[:, :5], floor, 2 * FLOOR) is None  # shapes that do not line up


def test_measure_keeps_the_float64_outputs():
    import torch
    from torch import nn

    from deployinc.core.floor import measure

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 5)).eval()
    x = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    with torch.no_grad():
        y32 = net(torch.from_numpy(x)).numpy()
        y64 = net.double()(torch.from_numpy(x).double()).numpy()
    net.float()
    f = measure(net, x, {"logits": y32}, batch=4)
    assert f.output == "logits" and f.y64 is not None and f.y64.dtype == np.float64
    np.testing.assert_allclose(f.y64, y64, rtol=1e-12, atol=1e-14)  # float64 (batching moves the last bits)
    assert "y64" not in f.to_dict()  # the report carries numbers, not arrays


# end to end: verify measures the floor lazily, then judges against float64 ---------------------------------------------


class _Shifted:
    """A backend runner whose outputs are moved by ``shift(y)`` (the rest is the real runner's)."""

    def __init__(self, runner, shift) -> None:
        self._runner, self._shift = runner, shift

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def infer(self, feed):
        return {k: self._shift(np.asarray(v)) for k, v in self._runner.infer(feed).items()}


def _at_class_3(rel: float):
    def shift(y: np.ndarray) -> np.ndarray:
        y = y.copy()
        y[:, 3] += np.float32(rel * np.abs(y).max())
        return y

    return shift


def test_verify_judges_against_float64_end_to_end(cli_runner, tiny, tmp_path, monkeypatch):
    import deployinc.verify.core as core

    # torch fp32 a floor (1e-4) above the exact answer at one logit, ORT 1.5 floors below it: 2.5e-4 from each
    # other, over max(1e-4, 2 x floor) = 2e-4, but 1.5e-4 from float64, within it
    real_ref, real_open = core.reference_outputs, core.open_backend

    def ref_outputs(*a, **kw):
        return {k: _at_class_3(1e-4)(v) for k, v in real_ref(*a, **kw).items()}

    def open_backend(name, **kw):
        opened = real_open(name, **kw)
        if opened.runner is not None:
            opened.runner = _Shifted(opened.runner, _at_class_3(-1.5e-4))
        return opened

    monkeypatch.setattr(core, "reference_outputs", ref_outputs)
    monkeypatch.setattr(core, "open_backend", open_backend)
    report = tmp_path / "r.json"
    args = ["verify", "--trust-model-code", str(tiny), "--batch", "1,2", "--samples", "4", "--no-localize", "--json", str(report)]
    r = invoke(cli_runner, args)
    assert r.exit_code == 0, r.stdout + r.stderr
    d = json.loads(report.read_text())
    assert d["noise_floor"]["status"] == "measured" and d["noise_floor"]["worst_rel"] == pytest.approx(1e-4, rel=0.05)
    (b,) = d["backends"]
    rels = [o["max_rel"] for res in b["results"] for o in res["outputs"]]
    assert min(rels) > b["tolerance"]["max_rel"]  # over the budget against torch fp32 at every batch size
    assert b["judged_vs_fp64"] and b["err_vs_fp64"] == pytest.approx(1.5e-4, rel=0.05)
    assert all(res["judged_vs_fp64"] and res["err_vs_fp64"] is not None for res in b["results"])
    assert "judged against float64: err vs fp64" in b["budget_note"] and "judged against float64" in r.stdout
    assert any("passed against float64" in n for n in d["notes"])


def test_a_planted_fault_still_fails_end_to_end(cli_runner, tiny, tmp_path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tiny))
    inits = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    w = inits[convs[len(convs) // 2].input[1]]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(1.1), w.name))
    planted = tmp_path / "planted.onnx"
    onnx.save(model, str(planted))
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(planted), "--batch", "1", "--samples", "4", "--no-localize", "--json", str(report)])
    assert r.exit_code == 1, r.stdout + r.stderr
    d = json.loads(report.read_text())
    (b,) = d["backends"]
    assert d["noise_floor"]["status"] == "measured" and not b["judged_vs_fp64"]
    assert b["err_vs_fp64"] > 1e3 * d["noise_floor"]["worst_rel"]
    assert any("against float64 too" in f for f in d["failures"])


def test_a_report_without_a_floor_has_no_float64_keys(cli_runner, tiny, tmp_path, monkeypatch):
    # "where computed": a run that never needed the floor carries no err_vs_fp64 (nor anything a reader such as
    # scripts/sweep_zoo.py's floor lookup, which takes any key naming fp64, could mistake for a floor)

    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--batch", "1", "--samples", "2", "--json", str(report)])
    assert r.exit_code == 0, r.stdout + r.stderr
    d = json.loads(report.read_text())
    assert d["noise_floor"] is None and "not needed" in r.stdout
    assert "fp64" not in json.dumps(d["backends"])
    from tests.scripts.conftest import load_script

    monkeypatch.setitem(sys.modules, "sweep_zoo", sys.modules.get("sweep_zoo"))  # put back whatever was there
    sz = load_script("sweep_zoo")
    got = sz.read_floor(d)
    assert got.get("noise_floor") is None and "fp64" not in str(got.get("floor_status"))


def test_a_max_rel_lifted_against_float64_leaves_the_cosine_failure_standing():
    """The float64 answer decides the max_rel check and nothing else: a backend within budget of float64 (its
    max_rel failure against torch fp32 lifted) still fails a cosine budget it misses (here a --min-cosine 1.0)."""
    _, ref32, test, floor = _case()  # 2.5 floors from torch fp32, 1.5 from float64: the max_rel failure is lifted
    r = _judge(ref32, test, floor, flags={"min_cosine": 1.0})
    br = r.results[0]
    assert br.judged_vs_fp64 and r.fp64_note.startswith("judged against float64")
    fail = br.outputs[0].failures
    assert not r.passed and [f.split(" ")[0] for f in fail] == ["cosine"], fail
    # and without the cosine budget, the same outputs pass: the max_rel failure alone was lifted
    assert _judge(ref32, test, floor).passed
