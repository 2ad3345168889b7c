"""``deployinc.verify.report.render``: the text of a verify report, built from the real dataclasses (VerifyReport,
BackendResult, BatchResult, OutputComparison, Tolerance presets, NoiseFloor, Check, Localization, Accuracy).

No model runs: every number is chosen here, so each expected line is written out by hand.
"""

from __future__ import annotations

import numpy as np

from deployinc.core.floor import NoiseFloor
from deployinc.core.metrics import OutputComparison, Tolerance, compare_arrays, preset
from deployinc.verify.accuracy import Accuracy
from deployinc.verify.checks import Check
from deployinc.verify.core import BackendResult, BatchResult, VerifyReport
from deployinc.verify.localize import Localization, Point
from deployinc.verify.reference import Reference
from deployinc.verify.report import _vec, render

TOL = preset("fp32", "ort-cpu")  # fp32-cpu: max_rel<=1e-04 cos>=0.99999 top1>=1.00 top5>=1.00
NATURAL = {"source": "natural", "samples": 8, "seed": 3, "shape": [3, 32, 32], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def _cmp(name="logits", max_abs=1.5e-5, max_rel=2.5e-6, cosine=0.99999912, top1=1.0, top5=1.0, failures=(), nan=0, inf=0, tol=TOL):
    return OutputComparison(name=name, shape=(8, 10), max_abs=max_abs, max_rel=max_rel, ref_scale=6.0, cosine=cosine, top1=top1, top1_raw=top1,
                            top5=top5, nan=nan, inf=inf, ref_nonfinite=0, tolerance=tol, failures=list(failures))


def _ran(name="ort-cpu", *batches, tol=TOL, note=""):
    return BackendResult(name, "ran", tolerance=tol, budget_note=note, results=[BatchResult(b, 8, outs, 0.01) for b, outs in batches])


def _report(backends, **kw):
    kw.setdefault("reference", Reference("provenance", "tinynets:build (seeded random init (seed 0)) rebuilt from the file's metadata", module=object()))
    kw.setdefault("inputs", dict(NATURAL))
    kw.setdefault("timings", {"total": 2.34})
    return VerifyReport(model="tiny.onnx", precision=kw.pop("precision", "fp32"), precision_source=kw.pop("precision_source", "the file's"),
                        batches=kw.pop("batches", [1, 8]), backends=backends, **kw)


def _lines(report) -> list[str]:
    return render(report).splitlines()


# header -------------------------------------------------------------------------------------------------------------


def test_header_reference_inputs_and_precision_lines():
    ref = Reference("spec", "nets.py:build (w.pt) from --reference", module=object(), notes=["auxiliary heads removed: aux1", "second note"])
    lines = _lines(_report([_ran("ort-cpu", (1, [_cmp()]))], reference=ref, relative_to="torch fp32 on the same inputs"))
    assert lines[0] == "verify tiny.onnx"
    assert lines[1] == "  reference: nets.py:build (w.pt) from --reference"
    assert lines[2:4] == ["    auxiliary heads removed: aux1", "    second note"]
    assert lines[4] == "  inputs: 8 generated natural-statistics images (seed 3), 3x32x32, mean [0.485, 0.456, 0.406] std [0.229, 0.224, 0.225]"
    assert lines[5] == "  precision: fp32 (the file's); batches: 1, 8"
    assert lines[6] == "  judged against: torch fp32 on the same inputs"


def test_each_input_source_is_described():
    def inputs_line(inp):
        return next(ln for ln in _lines(_report([], inputs=inp)) if ln.startswith("  inputs: "))

    base = {"shape": [1, 16, 8], "mean": [0.5], "std": [0.25], "seed": 7, "samples": 4}
    assert inputs_line({**base, "source": "uniform"}) == "  inputs: 4 uniform-noise inputs (seed 7), 1x16x8, mean [0.5] std [0.25]"
    assert inputs_line({**base, "source": "normal"}).startswith("  inputs: 4 normal-noise inputs (seed 7), ")
    assert inputs_line({**base, "source": "file", "file": "in.npz"}).startswith("  inputs: 4 inputs from in.npz, ")
    data = {**base, "source": "data", "used": 5, "folder": "/imgs", "skipped": ["a.png", "b.jpg"]}
    assert inputs_line(data).startswith("  inputs: 5 image(s) from /imgs (2 unreadable skipped), 1x16x8")
    assert inputs_line({**data, "skipped": []}).startswith("  inputs: 5 image(s) from /imgs, 1x16x8")
    assert inputs_line({**base, "source": "mystery"}).startswith("  inputs: mystery, 1x16x8")


def test_vectors_are_shortened():
    assert _vec(None) == "?" and _vec([]) == "?"
    assert _vec([0.48500001, 0.456, 0.406]) == "[0.485, 0.456, 0.406]"
    assert _vec([0.5] * 6) == "[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]"  # six are still listed
    assert _vec([0.5] * 7) == "[0.5] x 7"
    assert _vec([1, 2, 3, 4, 5, 6, 7]) == "[1, 2, 3, 4, 5, 6, ... (7 values)]"


def test_noise_floor_lines():
    measured = NoiseFloor("measured", max_rel={"logits": 2.0e-7, "aux": 3.0e-7}, samples=8, seconds=1.5, reason="from the first output")
    lines = _lines(_report([], floor=measured))
    assert "  float32 noise floor: torch fp32 vs fp64: 3.0e-07 (8 samples, 1.5 s); from the first output" in lines

    unsupported = NoiseFloor("unsupported", reason="float64 does not run: boom")
    text = render(_report([], floor=unsupported))
    assert "  float32 noise floor: torch fp32 vs fp64: not measured (float64 does not run: boom); the preset applies alone" in text.splitlines()
    assert text.count("boom") == 1  # the reason of a missing floor is not repeated after the line

    # no floor: said only where it could have applied (fp32, a torch reference)
    assert "  float32 noise floor: not needed (every fp32 backend is within the preset's max_rel)" in _lines(_report([]))
    assert "noise floor" not in render(_report([], precision="fp16"))
    assert "noise floor" not in render(_report([], reference=Reference("onnx", "other.onnx on ONNX Runtime CPU (fp32 reference)")))
    assert "noise floor" not in render(_report([], reference=None))


# the table --------------------------------------------------------------------------------------------------------


def test_table_rows_numbers_and_verdicts():
    bad = _cmp(max_abs=0.3, max_rel=0.05, cosine=0.998988, top1=0.875, top5=1.0, failures=["max_rel 5.00e-02 > 1e-04"], nan=2, inf=1)
    lines = _lines(_report([_ran("ort-cpu", (1, [_cmp()]), (8, [bad]))]))
    header = next(ln for ln in lines if ln.lstrip().startswith("backend"))
    assert header.split() == ["backend", "batch", "output", "max_abs", "max_rel", "cosine", "top1", "top5", "nan/inf", "verdict"]
    rows = [ln for ln in lines if ln.startswith("  ort-cpu ")]
    assert rows[0].split() == ["ort-cpu", "1", "logits", "1.50e-05", "2.50e-06", "0.999999", "1.00", "1.00", "0/0", "PASS"]
    assert rows[1].split() == ["ort-cpu", "8", "logits", "3.00e-01", "5.00e-02", "0.998988", "0.88", "1.00", "2/1", "FAIL"]
    # columns line up with the header: the verdict of every row starts where the header's does
    col = header.index("verdict")
    assert all(r[col:col + 4] in ("PASS", "FAIL") for r in rows)


def test_outputs_without_top1_keep_the_columns_aligned():
    # a feature-map output has no top-1/top-5: the '-' fills its column, so the verdict stays under its header
    lines = _lines(_report([_ran("ort-cpu", (1, [_cmp(name="features", top1=None, top5=None)]))]))
    header = next(ln for ln in lines if ln.lstrip().startswith("backend"))
    row = next(ln for ln in lines if ln.startswith("  ort-cpu ") and "features" in ln)
    assert row.split()[5:9] == ["0.999999", "-", "-", "0/0"]
    col = header.index("verdict")
    assert row[col:col + 4] == "PASS"


def test_long_output_names_are_cut_to_the_column():
    lines = _lines(_report([_ran("ort-cpu", (1, [_cmp(name="a_very_long_output_name")]))]))
    row = next(ln for ln in lines if ln.startswith("  ort-cpu ") and " 1  " in ln)
    assert "a_very_lon " in row and "a_very_long" not in row


def test_backend_summary_takes_the_worst_over_batches_and_prints_the_budget():
    a = _cmp(max_rel=2.0e-6, cosine=0.9999995, top1=1.0)
    b = _cmp(max_rel=7.0e-5, cosine=0.9999991, top1=0.9, failures=["top1 0.900 < 1.00"])
    lines = _lines(_report([_ran("ort-cpu", (1, [a]), (8, [b]))]))
    assert "  ort-cpu: FAIL max_rel=7.0e-05 cos=0.999999 top1=0.90  [fp32-cpu: max_rel<=1e-04 cos>=0.99999 top1>=1.00 top5>=1.00]" in lines
    assert "    batch 8 logits failed: top1 0.900 < 1.00" in lines
    assert not any(ln.startswith("    batch 1 ") for ln in lines)  # a passing output has no failure line


def test_summary_without_top1_and_with_an_overridden_budget():
    tol = Tolerance(max_rel=2e-3, min_cosine=None, min_top1=None, name="fp32-cpu+override")
    lines = _lines(_report([_ran("ort-cpu", (1, [_cmp(name="features", top1=None, top5=None, tol=tol)]), tol=tol)]))
    assert "  ort-cpu: PASS max_rel=2.5e-06 cos=0.999999  [fp32-cpu+override: max_rel<=2e-03]" in lines


def test_budget_note_names_the_noise_floor_only_when_one_was_measured():
    note = "max_rel budget max(1e-04, 10 x 3.0e-05) = 3.0e-04"
    floor = NoiseFloor("measured", max_rel={"logits": 3.0e-5}, samples=8, seconds=0.5)
    with_floor = _lines(_report([_ran("ort-cpu", (1, [_cmp()]), note=note)], floor=floor))
    assert f"  ort-cpu: PASS max_rel=2.5e-06 (torch fp32 vs fp64: 3.0e-05; {note}) cos=0.999999 top1=1.00  [{TOL.name}: {TOL.describe()}]" in with_floor
    no_note = render(_report([_ran("ort-cpu", (1, [_cmp()]))], floor=floor))
    assert "(torch fp32 vs fp64" not in no_note
    no_floor = render(_report([_ran("ort-cpu", (1, [_cmp()]), note=note)]))
    assert "(torch fp32 vs fp64" not in no_floor


def test_real_comparisons_render_their_failures():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.5]], np.float32)
    ok = compare_arrays("logits", ref, ref, TOL)
    off = compare_arrays("logits", ref, ref + np.array([[0, 0, 0.3], [0, 0, 0]], np.float32), TOL)  # max_abs 0.3 on a scale of 3
    lines = _lines(_report([_ran("ort-cpu", (1, [ok])), _ran("ort-openvino", (1, [off]))]))
    assert "  ort-cpu: PASS max_rel=0.0e+00 cos=1.000000 top1=1.00  [fp32-cpu: max_rel<=1e-04 cos>=0.99999 top1>=1.00 top5>=1.00]" in lines
    assert "    batch 1 logits failed: max_rel 1.00e-01 > 1e-04; cosine 0.998988 < 0.99999" in lines
    assert lines[-1] == "FAIL: 1 of 2 comparisons passed on 2 backend(s) in 2.3 s"


# skipped, crashed, checks -----------------------------------------------------------------------------------------


def test_skipped_and_crashed_backends():
    backends = [
        _ran("ort-cpu", (1, [_cmp()])),
        BackendResult("ort-cuda", "skipped", reason="no CUDA device here", hint="run on a GPU machine"),
        BackendResult("ort-openvino", "skipped", reason="the plugin is not installed"),
        BackendResult("ort-trt", "crashed", reason="the subprocess died (signal 11)"),
    ]
    lines = _lines(_report(backends))
    assert "  ort-cuda" + " " * 8 + "-  skipped: no CUDA device here" in lines
    assert "  ort-trt" + " " * 9 + "-  crashed: the subprocess died (signal 11)" in lines
    assert "  ort-trt: FAIL (crashed: the subprocess died (signal 11))" in lines
    assert "  ort-cuda: SKIPPED (no CUDA device here) — run on a GPU machine" in lines
    assert "  ort-openvino: SKIPPED (the plugin is not installed)" in lines
    # a crashed backend ran (and failed); a skipped one did not
    assert lines[-1] == "FAIL: 1 of 1 comparisons passed on 2 backend(s), 2 skipped in 2.3 s"


def test_checks_diagnosis_and_notes():
    checks = [Check("preprocessing", "warn", "the mean looks like ImageNet's"), Check("input_range", "ok", "inputs in range")]
    lines = _lines(_report([_ran("ort-cpu", (1, [_cmp()]))], checks=checks, diagnosis=["d1", "d2"], notes=["n1"]))
    assert "  preprocessing: WARN the mean looks like ImageNet's" in lines
    assert "  input_range: OK inputs in range" in lines
    assert lines.index("  diagnosis: d1") + 1 == lines.index("  diagnosis: d2")
    assert "  note: n1" in lines


# the verdict line -------------------------------------------------------------------------------------------------


def test_verdict_line_pass_incomplete_and_fail():
    two = _ran("ort-cpu", (1, [_cmp()]), (8, [_cmp()]))
    assert _lines(_report([two], timings={"total": 0.5}))[-1] == "PASS: 2 of 2 comparisons passed on 1 backend(s) in 0.5 s"
    skipped = BackendResult("ort-cuda", "skipped", reason="no GPU")
    assert _lines(_report([two, skipped]))[-1] == "INCOMPLETE: 2 of 2 comparisons passed on 1 backend(s), 1 skipped in 2.3 s"
    assert _lines(_report([two, skipped], allow_skip=True))[-1] == "PASS: 2 of 2 comparisons passed on 1 backend(s), 1 skipped in 2.3 s"
    # a failed check fails the run although every comparison passed
    failed_check = [Check("preprocessing", "fail", "inputs are not normalised")]
    lines = _lines(_report([two], checks=failed_check))
    assert "  preprocessing: FAIL inputs are not normalised" in lines
    assert lines[-1].startswith("FAIL: 2 of 2 comparisons passed")
    # nothing ran: a failure, not a pass with nothing to compare
    assert _lines(_report([skipped], allow_skip=True))[-1] == "FAIL: 0 of 0 comparisons passed on 0 backend(s), 1 skipped in 2.3 s"
    assert _lines(_report([two], timings={}))[-1].endswith(" in 0.0 s")


# localisation and accuracy ----------------------------------------------------------------------------------------


def _point(order, label, compared=True, failures=(), ref_max=4.0, test_max=4.0, max_rel=1e-6):
    return Point(order=order, module=label, label=label, module_type="Conv2d", onnx_value=f"v{order}", onnx_node=f"Conv_{order}", onnx_op="Conv",
                 torch_module=label, compared=compared, max_abs=max_rel * 4, max_rel=max_rel, cosine=0.99, ref_max_abs=ref_max, test_max_abs=test_max,
                 failures=list(failures))


def test_localisation_section():
    good = _point(1, "stem.0")
    first = _point(2, "grouped", failures=["max_rel 3.00e-02 > 1e-04"], max_rel=3e-2, test_max=70000.0)
    suspects = [f"n{i}" for i in range(10)]
    loc = Localization(backend="ort-cpu", method="hooks", budget=Tolerance(max_rel=1e-4, min_cosine=None, min_top1=None), points=[good, first],
                       first=first, last_good=good, suspects=suspects, mapped=5, samples=2, runs=1, notes=["cut at 2 samples"], seconds=0.44)
    lines = _lines(_report([_ran("ort-cpu", (1, [_cmp()]))], localization=loc))
    i = lines.index("  localisation on ort-cpu (hooks, 5 mapped points, 2 samples, 1 run(s), 0.4 s), layer budget max_rel<=1e-04:")
    assert lines[i - 1] == ""
    assert lines[i + 1] == "    first departure at grouped: max_rel 3.00e-02 > 1e-04"
    assert lines[i + 2] == f"    first over budget: {first.line()}"
    assert lines[i + 3] == f"    last within budget: {good.line()}"
    assert lines[i + 4] == "    ONNX nodes between them: n0, n1, n2, n3, n4, n5, n6, n7 ..."  # eight listed, then an ellipsis
    assert lines[i + 5] == "    beyond fp16's 65504: grouped"
    assert lines[i + 6] == "    note: cut at 2 samples"


def test_localisation_at_the_input_side_and_with_few_suspects():
    first = _point(1, "stem.0", failures=["cosine 0.5 < 0.99"])
    loc = Localization(backend="ort-cpu", method="hooks", budget=TOL, points=[first], first=first, suspects=["a", "b"], mapped=1, samples=2, runs=1)
    lines = _lines(_report([_ran("ort-cpu", (1, [_cmp()]))], localization=loc))
    assert "    no earlier point agrees: the departure starts at the model's input side" in lines
    assert "    ONNX nodes between them: a, b" in lines
    assert not any("beyond fp16" in ln for ln in lines)


def test_accuracy_section():
    acc = Accuracy(images=4, classes=2, source="/imgs", rows={"reference": {"top1": 0.75, "top5": 1.0}, "ort-cpu b8": {"top1": 0.5, "top5": 1.0}})
    lines = _lines(_report([_ran("ort-cpu", (1, [_cmp()]))], accuracy=acc))
    i = lines.index("  accuracy on 4 labelled image(s), 2 classes (/imgs):")
    assert lines[i + 1] == "    reference          top-1 0.7500  top-5 1.0000"
    assert lines[i + 2] == "    ort-cpu b8         top-1 0.5000  top-5 1.0000"
