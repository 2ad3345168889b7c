"""The one comparison code path: metrics, tie-aware top-1, non-finite values, presets, overrides."""

from __future__ import annotations

import numpy as np
import pytest

from deployinc.errors import BadInputError
from deployinc.core.metrics import PRESETS, Tolerance, compare_arrays, compare_outputs, one_line, preset, tie_cap


def test_identical_outputs_pass():
    x = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    c = compare_arrays("logits", x, x.copy(), preset("fp32"))
    assert c.passed and c.max_abs == 0 and c.max_rel == 0 and c.cosine == pytest.approx(1.0)
    assert c.top1 == c.top1_raw == c.top5 == 1.0 and c.nan == c.inf == 0


def test_relative_error_is_against_the_output_scale():
    ref = np.array([[100.0, -50.0, 0.0]], np.float32)
    test = ref + np.array([[0.0, 0.0, 0.5]], np.float32)
    c = compare_arrays("y", ref, test, Tolerance(max_rel=1e-3, min_cosine=None, min_top1=None))
    assert c.max_abs == pytest.approx(0.5) and c.ref_scale == pytest.approx(100.0)
    assert c.max_rel == pytest.approx(5e-3) and c.failures == ["max_rel 5.00e-03 > 1e-03"]


def test_tie_aware_top1():
    ref = np.array([[1.0, 1.0000001, 0.0], [5.0, 0.0, 0.0]])
    test = np.array([[1.0000002, 1.0, 0.0], [5.0, 0.0, 0.0]])
    c = compare_arrays("y", ref, test, preset("fp32"))
    assert c.top1_raw == 0.5 and c.top1 == 1.0  # the flip is within the error: a tie, not a disagreement


def _flat_logits(n: int = 4, k: int = 1000) -> np.ndarray:
    """Logits like a random-weight network's: K nearly equal classes, a clear winner (class 0) by 2 units."""
    r = np.random.default_rng(0).standard_normal((n, k))
    r[:, 0] = r.max(axis=1) + 2.0
    return r


def test_int8_ties_are_sized_by_the_cosine_budget():
    ref = _flat_logits()
    test = ref.copy()
    ref[0, 1] = ref[0, 0] - 0.2  # a near-tie: 0.2 apart, ~0.2x the RMS logit
    test[0, 1] = ref[0, 0] + 0.05  # swapped by an error of 0.25, far inside cosine 0.99
    ref[1, 1] = ref[1, 0] - 0.6  # 0.6 apart: more than the cosine budget lets a logit move (0.14x RMS, twice)
    test[1, 1] = ref[1, 0] + 0.05
    tol = preset("int8")
    c = compare_arrays("logits", ref, test, tol)
    assert c.cosine > 0.999 and c.top1_raw == 0.5
    assert c.top1 == 0.75  # sample 0 is a tie; sample 1 a disagreement
    # an offset every logit shares changes no class, and widens no tie (log-softmax outputs carry one)
    shifted = compare_arrays("logits", ref + 50.0, test + 50.0, tol)
    assert shifted.top1 == 0.75
    # the spread sizes the tie: 0.1425x each sample's standard deviation at cosine 0.99 ...
    scale = float(np.abs(ref).max())
    assert np.allclose(tie_cap(tol, scale, ref), 0.1425 * ref.std(axis=1), rtol=1e-3)
    # ... a looser cosine loosens the cosine check, not the ties; a cosine of 1 leaves only exact ties
    assert np.allclose(tie_cap(tol.with_overrides(min_cosine=0.9), scale, ref), tie_cap(tol, scale, ref))
    assert not tie_cap(tol.with_overrides(min_cosine=1.0), scale, ref).any()
    # a budget with max_rel sizes ties by it, as before
    assert np.allclose(tie_cap(preset("fp16"), 4.0, ref), 5e-2 * 4.0)


def test_disagreement_beyond_error_counts():
    ref = np.array([[3.0, 0.0], [0.0, 3.0]])
    test = np.array([[0.0, 3.0], [0.0, 3.0]])
    c = compare_arrays("y", ref, test, preset("int8"))
    assert c.top1 == 0.5 and any(f.startswith("top1") for f in c.failures)


def test_non_finite_values_fail_and_are_counted():
    ref = np.ones((2, 3), np.float32)
    test = ref.copy()
    test[0, 0], test[1, 1] = np.nan, np.inf
    c = compare_arrays("y", ref, test, preset("fp16"))
    assert c.nan == 1 and c.inf == 1 and not c.passed and c.max_abs == float("inf")
    assert c.failures[0] == "non-finite values: 1 NaN, 1 Inf"


def test_shape_mismatch_is_bad_input():
    with pytest.raises(BadInputError, match="shape"):
        compare_arrays("y", np.zeros((1, 3)), np.zeros((1, 4)), preset("fp32"))


def test_compare_outputs_by_name_then_position():
    a = {"logits": np.ones((1, 2))}
    assert compare_outputs(a, {"logits": np.ones((1, 2))}, preset("fp32"))[0].name == "logits"
    assert compare_outputs(a, {"out": np.ones((1, 2))}, preset("fp32"))[0].name == "out"
    with pytest.raises(BadInputError, match="output"):
        compare_outputs(a, {"x": np.ones((1, 2)), "y": np.ones((1, 2))}, preset("fp32"))


def test_presets_per_precision_and_backend():
    assert preset("fp32", "ort-cpu").name == "fp32-cpu"
    assert preset("fp32", "ort-cuda").name == "fp32-cuda"
    assert preset("fp32", "ort-trt").name == "fp32-tensorrt"
    assert preset("fp16", "cpu").max_rel > preset("fp32", "cpu").max_rel
    assert preset("int8").max_rel is None and preset("int8").min_top1 < 1
    assert {p for p, _ in PRESETS} == {"fp32", "fp16", "bf16", "int8"}
    assert preset("bf16", "ort-openvino").name == "bf16" and preset("bf16").max_rel > preset("fp16").max_rel
    with pytest.raises(BadInputError, match="precision"):
        preset("fp8")


def test_overrides():
    t = preset("fp32").with_overrides(max_rel=1e-2, min_top1=None)
    assert t.max_rel == 1e-2 and t.min_top1 == 1.0 and t.name.endswith("+override")
    with pytest.raises(BadInputError, match="unknown tolerance"):
        preset("fp32").with_overrides(atol=1)
    assert "max_rel<=1e-02" in t.describe()


def test_tolerance_sources_preset_config_flags():
    from deployinc.verify.core import tolerance_for

    tol, src = tolerance_for("fp32", "ort-cpu", {"max_rel": 5e-5}, None)  # stricter than the preset: applies
    assert tol.max_rel == 5e-5 and "export config" in src and tol.name == "fp32-cpu+config"
    tol, src = tolerance_for("fp32", "ort-cpu", {"max_rel": 3e-4}, None, trust_file=True)  # looser: only on request
    assert tol.max_rel == 3e-4 and "--file-tolerances" in src
    tol, _ = tolerance_for("fp32", "ort-trt", {"max_rel": 1e-5}, None)
    assert tol.max_rel == preset("fp32", "tensorrt").max_rel  # flat [parity] keys are for fp32 on the CPU
    tol, _ = tolerance_for("fp16", "ort-cpu", {"fp16": {"min_top1": 0.999}}, None)
    assert tol.min_top1 == 0.999
    tol, src = tolerance_for("fp32", "ort-cpu", {"max_rel": 5e-5}, {"max_rel": 1e-2, "min_cosine": None})
    assert tol.max_rel == 1e-2 and src.endswith("flags") and tol.name.endswith("+flags")


def test_one_line_names_preset_and_failure():
    ref = np.ones((1, 3))
    c = compare_arrays("y", ref, ref * 1.1, preset("fp32"))
    line = one_line([c])
    assert line.startswith("FAIL") and "[fp32-cpu:" in line and "max_rel" in line.split("failed:")[1]


def _documented_presets() -> dict[tuple[str, str], tuple]:
    """The preset table of README.md (verify's section), as {(precision, family): (max_rel, cosine, top1, top5, name)}."""
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[2] / "README.md").read_text().splitlines()
    start = lines.index("| preset | provider | max_rel | min cosine | min top-1 | min top-5 |")
    out = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        name, providers, *nums = [c.strip() for c in line.strip("|").split("|")]
        values = tuple(None if v == "not judged" else float(v) for v in nums)
        for provider in providers.split(", "):
            out[(name.split("-")[0], {"CPU": "cpu", "CUDA": "cuda", "TensorRT": "tensorrt"}[provider])] = (*values, name)
    return out


def test_presets_are_the_documented_numbers():
    documented = _documented_presets()
    assert set(documented) == set(PRESETS), "README's preset table and PRESETS name different presets"
    for key, tol in PRESETS.items():
        assert (tol.max_rel, tol.min_cosine, tol.min_top1, tol.min_top5, tol.name) == documented[key], key
        assert tol.max_abs is None, key
    # the ones a user's verdict rests on most often, spelled out
    assert preset("fp32", "ort-trt").max_rel == 5e-3 and preset("fp32", "ort-cpu").max_rel == 1e-4
    assert preset("fp32", "ort-cuda").max_rel == 1e-3 and preset("fp16", "trt-engine").max_rel == 5e-2


def test_top5_counts_the_reference_class_ranked_exactly_fifth():
    ref = np.zeros((2, 10))
    ref[:, 3] = 5.0  # the reference's top-1: class 3
    test = np.zeros((2, 10))
    test[0, [7, 8, 9, 6, 3]] = [9.0, 8.0, 7.0, 6.0, 5.0]  # class 3 is the test's 5th: within its top 5
    test[1, [7, 8, 9, 6, 5, 3]] = [9.0, 8.0, 7.0, 6.0, 5.5, 5.0]  # 6th: outside
    c = compare_arrays("logits", ref, test, preset("fp16"))
    assert c.top5 == 0.5 and c.top1_raw == 0.0
    c = compare_arrays("logits", ref[:1], test[:1], preset("fp16"))
    assert c.top5 == 1.0
    # with five classes or fewer, top-5 is every class
    assert compare_arrays("logits", ref[:1, :5], test[:1, 5:], preset("fp16")).top5 == 1.0
