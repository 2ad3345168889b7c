"""Verdicts that can fail: each metric alone decides, values exactly on a budget pass, the scale is the
reference's, ties are judged by the tie rule, and the fp32 budget respects torch's own float32 error.

Each test is built so that one deliberate bug in :mod:`deployinc.core.metrics` or :mod:`deployinc.core.floor`
makes it fail: top-1 without the tie rule, cosine or top-5 not judged, ``<=`` turned into ``<``, the scale taken
from the output under test, the floor ignored or applied to the wrong precision.
"""

from __future__ import annotations

import numpy as np
import pytest

from deployinc.core.floor import NoiseFloor, budget_text, measure, widen
from deployinc.core.metrics import Tolerance, compare_arrays, preset

ONLY = dict(max_rel=None, max_abs=None, min_cosine=None, min_top1=None, min_top5=None)


def only(**budget: float) -> Tolerance:
    return Tolerance(**{**ONLY, **budget}, name="only")


# each metric alone ------------------------------------------------------------------------------------------------


def test_cosine_alone_fails_when_max_rel_passes():
    # One large logit sets the scale; a small error on each of 20000 others keeps max_rel at 5e-5 (< 1e-4) while
    # the direction drifts: 1 - cos ~ n * d^2 / 2 = 2.5e-5 > 1e-5.
    ref = np.zeros((1, 20000), np.float32)
    ref[0, 0] = 1.0
    test = ref + np.float32(5e-5)
    test[0, 0] = 1.0
    c = compare_arrays("logits", ref, test, preset("fp32", "cpu"))
    assert c.max_rel <= 1e-4 and c.top1 == 1.0 and c.top5 == 1.0
    assert not c.passed and [f.split()[0] for f in c.failures] == ["cosine"]


def test_top5_alone_fails():
    ref = np.array([[9.0, 8, 7, 6, 5, 4, 3, 2]], np.float32)
    test = np.array([[0.0, 8, 7, 6, 5, 4, 3, 9]], np.float32)  # the reference's class 0 falls to the last place
    c = compare_arrays("logits", ref, test, only(min_top5=1.0))
    assert c.top5 == 0.0 and [f.split()[0] for f in c.failures] == ["top5"]


def test_top1_alone_fails_and_a_near_tie_is_not_a_disagreement():
    tol = only(max_rel=1e-4, min_top1=1.0)
    ref = np.array([[1.0, 0.5, 0.0], [1.0, 0.99999, 0.0]], np.float32)
    swapped = np.array([[1.0, 0.5, 0.0], [0.99999, 1.0, 0.0]], np.float32)  # sample 2: gap 1e-5, error 1e-5
    c = compare_arrays("logits", ref, swapped, tol)
    assert c.top1_raw == 0.5 and c.top1 == 1.0 and c.passed  # a tie within twice its own error
    far = np.array([[0.5, 1.0, 0.0], [1.0, 0.99999, 0.0]], np.float32)  # sample 1: gap 0.5, not a tie
    c = compare_arrays("logits", ref, far, only(min_top1=1.0))
    assert c.top1 == 0.5 and [f.split()[0] for f in c.failures] == ["top1"]


def test_a_tie_is_capped_by_the_budget_so_a_broken_output_cannot_hide_behind_it():
    ref = np.array([[1.0, 0.9, 0.0]], np.float32)
    test = np.array([[0.0, 0.9, 0.5]], np.float32)  # error 1.0, gap 0.1: would be a "tie" without the cap
    c = compare_arrays("logits", ref, test, only(max_rel=1e-4, min_top1=1.0))
    assert c.top1 == 0.0


# exactly on the budget ----------------------------------------------------------------------------------------------


def test_values_exactly_on_the_budget_pass():
    ref = np.array([[1.0, 0.5]], np.float32)
    test = np.array([[1.0, 0.5 + 2.0**-14]], np.float32)  # every number exact in binary
    c = compare_arrays("logits", ref, test, only(max_rel=2.0**-14, max_abs=2.0**-14))
    assert c.max_rel == 2.0**-14 and c.max_abs == 2.0**-14 and c.passed
    c = compare_arrays("logits", ref, test, only(max_rel=2.0**-15))
    assert not c.passed
    same = compare_arrays("logits", ref, ref.copy(), only(min_cosine=1.0, min_top1=1.0, min_top5=1.0))
    assert same.cosine == 1.0 and same.passed
    half = compare_arrays("logits", np.array([[1.0, 0], [1.0, 0]], np.float32), np.array([[1.0, 0], [0, 1.0]], np.float32), only(min_top1=0.5))
    assert half.top1 == 0.5 and half.passed


def test_the_scale_is_the_references():
    ref = np.array([[1.0, 0.0]], np.float32)
    test = np.array([[1.0, 10.0]], np.float32)  # error 10: 10x the reference's scale, 1x the test's
    c = compare_arrays("logits", ref, test, only(max_rel=2.0))
    assert c.ref_scale == 1.0 and c.max_rel == 10.0 and not c.passed
    zeros = compare_arrays("logits", np.array([[4.0, 0.0]], np.float32), np.zeros((1, 2), np.float32), only(max_rel=2.0))
    assert zeros.max_rel == 1.0 and zeros.passed  # an all-zero output under test must not make the scale 0


# the float32 noise floor ----------------------------------------------------------------------------------------------


def _floor(rel: float) -> NoiseFloor:
    return NoiseFloor("measured", max_rel={"logits": rel}, max_abs={"logits": rel}, samples=8, seconds=0.1)


def test_the_fp32_budget_is_the_larger_of_the_preset_and_twice_the_floor():
    base = preset("fp32", "cpu")
    wide = widen(base, "fp32", _floor(2.1e-4))
    assert wide.max_rel == pytest.approx(4.2e-4) and wide.name.endswith("+floor")
    assert wide.min_cosine == base.min_cosine and wide.min_top1 == base.min_top1  # only max_rel moves
    assert widen(base, "fp32", _floor(1e-6)) is base  # a tiny floor never tightens the preset
    assert widen(preset("fp16", "cpu"), "fp16", _floor(1e-1)) == preset("fp16", "cpu")  # fp16 is relative to fp32
    assert widen(base, "fp32", NoiseFloor("unsupported", reason="no double kernel")) is base
    assert budget_text(wide, base, _floor(2.1e-4)) == "budget max(1e-04, 2 x floor) = 4.2e-04"


def test_a_correct_deep_export_passes_within_the_floor_and_a_real_fault_does_not():
    from deployinc.verify.core import tolerance_for

    floor = _floor(2.1e-4)  # timm inception_v4: torch fp32 vs fp64
    tol, src = tolerance_for("fp32", "ort-cpu", None, None, floor=floor)
    ref = np.array([[10.0, 5.0, 1.0, 0.0]])
    ort = ref.copy()
    ort[0, 1] += 2.7e-3  # max_rel 2.7e-4: over the preset, within 2 x floor
    assert compare_arrays("logits", ref, ort, preset("fp32", "cpu")).failures[0].startswith("max_rel")
    assert compare_arrays("logits", ref, ort, tol).passed and "noise floor" in src
    bad = ref.copy()
    bad[0, 1] += 5e-3  # 5e-4 > 4.2e-4
    assert not compare_arrays("logits", ref, bad, tol).passed
    tol, _ = tolerance_for("fp32", "ort-cpu", None, {"max_rel": 1e-4}, floor=floor)
    assert tol.max_rel == 1e-4  # the user's flag decides


def test_measure_compares_float32_with_float64_of_the_same_model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10)).eval()
    x = np.random.default_rng(0).standard_normal((6, 64)).astype(np.float32)
    with torch.no_grad():
        y32 = net(torch.from_numpy(x)).numpy()
        y64 = net.double()(torch.from_numpy(x).double()).numpy()
    net.float()
    f = measure(net, x, {"logits": y32}, batch=4)
    want = np.abs(y32.astype(np.float64) - y64).max() / np.abs(y64).max()
    assert f.status == "measured" and f.samples == 6 and f.worst_rel == pytest.approx(want) and want > 0
    assert next(net.parameters()).dtype == torch.float32  # the caller's module is untouched


def test_a_model_that_cannot_run_in_float64_uses_the_preset_and_says_why():
    import torch
    from torch import nn

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.ones(4, 3)  # a plain attribute: .double() leaves it float32

        def forward(self, x):
            return x @ self.w

    f = measure(Mixed(), np.ones((2, 4), np.float32), {"logits": np.ones((2, 3), np.float32)}, batch=2)
    assert f.status == "unsupported" and "float64 does not run" in f.reason
    assert "the preset applies alone" in f.line()
