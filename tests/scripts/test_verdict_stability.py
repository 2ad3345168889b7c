"""scripts/verdict_stability.py end to end on a small model: the fp32 file passes every fresh set, a file with a
broken layer passes none, and each file's precision picks its preset."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.scripts.conftest import load_script


def test_fp32_passes_every_set_and_a_broken_file_none(tmp_path):
    mod = load_script("verdict_stability")
    try:
        work = tmp_path / "w"
        work.mkdir()
        from deployinc.export import export_pipeline

        ref = work / "inception_cifar.onnx"
        export_pipeline("inception_cifar", out=ref, threads=1)
        broken = onnx.load(str(ref))
        w = next(t for t in broken.graph.initializer if numpy_helper.to_array(t).ndim == 4)
        w.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(w) * -3.0).astype(np.float32), w.name))
        bad = tmp_path / "bad.onnx"
        onnx.save(broken, str(bad))
        out = tmp_path / "s.md"
        assert mod.main(["--model", "inception_cifar", "--file", f"fp32={ref}", "--file", f"broken={bad}", "--file", f"ov={ref}@openvino",
                         "--sets", "3", "--samples", "4", "--threads", "1", "--work", str(work), "--out-md", str(out)]) == 0  # fmt: skip
        rows = {r.split("|")[1].strip(): r for r in out.read_text().splitlines() if r.startswith(("| fp32", "| broken", "| ov"))}
        assert "| ort-cpu | 3 of 3 | PPP" in rows["fp32"]
        assert "0 of 3" in rows["broken"] and "FFF" in rows["broken"]
        assert "| openvino | 3 of 3 | PPP" in rows["ov"]  # the same file run by OpenVINO
        with pytest.raises(SystemExit):
            mod.main(["--model", "inception_cifar", "--file", "nolabel"])
    finally:
        sys.modules.pop("verdict_stability", None)
