"""deploy's pipeline pieces (``deployinc.deploy.run``) on a tiny ONNX model, without a whole deploy."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto

from deployinc.deploy.request import DeployRequest
from deployinc.deploy.run import _artifact
from tests.precision.test_fp16 import convnet


def test_the_fp16_candidate_keeps_fp32_inputs_and_outputs(tmp_path: Path) -> None:
    """A user feeds deploy's fp16 model the same float32 images as the fp32 one, and gets float32 logits back."""
    from deployinc.io import save_onnx

    fp32 = tmp_path / "fp32.onnx"
    m = convnet()
    for key, value in (("deployinc.mean", "[0.5, 0.5, 0.5]"), ("deployinc.std", "[0.25, 0.25, 0.25]")):
        e = m.metadata_props.add()
        e.key, e.value = key, value
    save_onnx(m, fp32)
    req = DeployRequest(model=str(fp32), threads=1)
    artifacts: dict = {}
    path = _artifact(req, tmp_path, fp32, "fp16", artifacts)
    model = onnx.load(str(path))
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    assert any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)  # and it is fp16 inside
    assert "I/O kept fp32" in artifacts["fp16"]["made"]
