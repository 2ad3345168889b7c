"""``deployinc verify``'s exit code: 1 for a failed comparison comes before 3 for a backend that could not run."""

from __future__ import annotations

import numpy as np
import pytest

from deployinc.cli.verify import _exit_for
from deployinc.core.metrics import compare_outputs, preset
from deployinc.errors import CheckFailed, IncompleteRun
from deployinc.verify.core import BackendResult, BatchResult, VerifyReport
from tests.verify.test_verify import _cache_dir, exports_dir, tiny  # noqa: F401 - fixtures


def _report(test_logits: np.ndarray, allow_skip: bool = False) -> VerifyReport:
    ref = {"logits": np.eye(4, dtype=np.float32)}
    tol = preset("fp32", "cpu")
    ran = BackendResult("ort-cpu", "ran", tol, tol.name,
                        results=[BatchResult(batch=4, samples=4, outputs=compare_outputs(ref, {"logits": test_logits}, tol), seconds=0.0)])  # fmt: skip
    skipped = BackendResult("ort-cuda", "skipped", tol, tol.name, reason="no CUDA device here", hint="run on a GPU")
    return VerifyReport(model="m.onnx", precision="fp32", precision_source="file", reference=None, inputs={}, batches=[4],
                        backends=[ran, skipped], allow_skip=allow_skip)  # fmt: skip


def test_a_failed_comparison_with_a_skipped_backend_exits_1_not_3():
    wrong = np.eye(4, dtype=np.float32)[::-1].copy()  # every top-1 moved
    rep = _report(wrong)
    assert rep.verdict == "FAIL" and not rep.passed and not rep.complete
    with pytest.raises(CheckFailed) as info:
        _exit_for(rep)
    assert info.value.exit_code == 1 and info.value.message.startswith("parity failed: ort-cpu batch 4 logits:")
    with pytest.raises(CheckFailed):  # --allow-skip changes nothing about a failure
        _exit_for(_report(wrong, allow_skip=True))


def test_a_passing_comparison_with_a_skipped_backend_exits_3_unless_allowed():
    right = np.eye(4, dtype=np.float32)
    rep = _report(right)
    assert rep.verdict == "INCOMPLETE"
    with pytest.raises(IncompleteRun) as info:
        _exit_for(rep)
    assert info.value.exit_code == 3 and "ort-cuda (no CUDA device here)" in info.value.message
    assert _report(right, allow_skip=True).verdict == "PASS" and _exit_for(_report(right, allow_skip=True)) is None


def test_through_the_cli_a_failure_beside_a_skipped_backend_exits_1(cli_runner, tiny):
    from deployinc.backends import backend_problem
    from tests.conftest import invoke

    if backend_problem("ort-cuda") is None:
        pytest.skip("ORT CUDA runs here: nothing is skipped")
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(tiny), "--providers", "cpu,cuda", "--max-rel", "1e-12", "--no-localize"])
    assert r.exit_code == 1, r.stdout + r.stderr
    assert "parity failed" in r.stderr and "skipped" in r.stdout
