"""deployinc.isolate: a native crash or a hang in a backend becomes an error naming that backend."""

from __future__ import annotations

import pytest

from deployinc.errors import BackendCrashed, WeightsError
from deployinc.isolate import call_isolated


def test_result_comes_back():
    assert call_isolated("os.path:join", "a", "b") == "a/b"


def test_segfault_is_reported_as_crash():
    with pytest.raises(BackendCrashed, match=r"ort-cpu crashed \(SIGSEGV\)"):
        call_isolated("deployinc.isolate:_crash_for_test", label="ort-cpu")


def test_hang_is_stopped():
    with pytest.raises(BackendCrashed, match="did not finish within 2 s"):
        call_isolated("deployinc.isolate:_hang_for_test", timeout=2, label="ort-trt")


def test_expected_errors_cross_with_their_hint(tmp_path):
    with pytest.raises(WeightsError) as info:
        call_isolated("deployinc.io:load_checkpoint", str(tmp_path / "missing.pt"))
    assert "does not exist" in info.value.message and info.value.hint


def test_verify_isolate_flag_runs_ort_cpu_in_a_subprocess(cli_runner, tinynets_dir, tmp_path):
    import json

    from deployinc.export import export_pipeline

    from tests.conftest import invoke

    a = tmp_path / "a.onnx"
    export_pipeline("tinynets:build", out=a, input_shape=(1, 3, 16, 16), exporter="torchscript")
    report = tmp_path / "r.json"
    r = invoke(cli_runner, ["verify", "--trust-model-code", str(a), "--isolate", "--batch", "1", "--json", str(report)])
    assert r.exit_code == 0, r.stderr
    assert '"isolated": true' in json.dumps(json.loads(report.read_text()))
