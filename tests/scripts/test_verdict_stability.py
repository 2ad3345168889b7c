"""scripts/verdict_stability.py end to end on a small model: the fp32 file passes every fresh set, a file with a
broken layer passes none, and each file's precision picks its preset."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.scripts.conftest import load_script


def _reference(tmp_path):
    """The work folder and the fp32 reference the script would export there itself."""
    from deployinc.export import export_pipeline

    work = tmp_path / "w"
    work.mkdir()
    ref = work / "inception_cifar.onnx"
    export_pipeline("inception_cifar", out=ref, threads=1)
    return work, ref


def test_fp32_passes_every_set_and_a_broken_file_none(tmp_path):
    mod = load_script("verdict_stability")
    try:
        work, ref = _reference(tmp_path)
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


def _bf16_here() -> bool:
    import deployinc.backends as B

    if B.backend_problem("openvino") is not None:
        return False
    from deployinc.backends import openvino as OV

    return "BF16" in OV.capabilities()


@pytest.mark.skipif(not _bf16_here(), reason="needs the OpenVINO runtime on a CPU with native bf16")
def test_an_int8_file_with_its_float_layers_in_bf16_is_judged_as_deploy_runs_it(tmp_path, capsys):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from deployinc.core.images import natural_images

    mod = load_script("verdict_stability")
    try:
        work, ref = _reference(tmp_path)
        name = onnx.load(str(ref)).graph.input[0].name
        shape = [d.dim_value for d in onnx.load(str(ref)).graph.input[0].type.tensor_type.shape.dim][1:]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter([{name: natural_images(4, shape, seed=s)} for s in range(4)])

            def get_next(self):  # type: ignore[no-untyped-def]
                return next(self.items, None)

        q = tmp_path / "q.onnx"  # the convolutions in int8, the rest left in float
        quantize_static(str(ref), str(q), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])  # fmt: skip
        out = tmp_path / "s.md"
        assert mod.main(["--model", "inception_cifar", "--file", f"f32={q}@openvino", "--file", f"bf={q}@openvino:bf16",
                         "--sets", "2", "--samples", "4", "--threads", "1", "--work", str(work), "--out-md", str(out)]) == 0  # fmt: skip
        rows = {r.split("|")[1].strip(): r.split("|") for r in out.read_text().splitlines() if r.startswith(("| f32", "| bf"))}
        assert rows["bf"][3].strip() == "openvino:bf16" and rows["f32"][3].strip() == "openvino", rows
        args = argparse.Namespace(work=str(work), threads=1, sets=1, samples=4, weights=None)
        got = mod.judge_files("inception_cifar", {"f32": q, "bf": q}, args, {"f32": "openvino", "bf": "ov:bf16"})
        assert got["bf"][0].metrics["cosine"] != got["f32"][0].metrics["cosine"]  # bf16 float layers: other numbers
        for bad, why in ((f"x={q}@ort-cpu:bf16", "computes an int8 file's float layers in fp32"), (f"x={ref}@openvino:bf16", "applies to an int8 file"),
                         (f"x={q}@nope", "is not an ONNX backend"), (f"x={q}@openvino:fp16", "is not one any backend computes in")):  # fmt: skip
            with pytest.raises(SystemExit):
                mod.main(["--model", "inception_cifar", "--file", bad, "--work", str(work)])
            assert why in capsys.readouterr().err
    finally:
        sys.modules.pop("verdict_stability", None)
