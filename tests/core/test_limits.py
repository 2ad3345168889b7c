"""Bounded work: a backend that would run for days is stopped at --timeout and reported, not waited for."""

from __future__ import annotations

import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import invoke


def _classifier(loop_trips: int | None):
    """input N x 3 x 8 x 8 -> (a Loop of ``loop_trips`` Identity steps) -> pool -> Gemm -> logits N x 4."""
    nodes, inits = [], [numpy_helper.from_array(np.ones((4, 3), np.float32), "w"), numpy_helper.from_array(np.zeros(4, np.float32), "b")]
    src = "input"
    if loop_trips is not None:
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["x_in"], ["x_out"])],
            "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
             helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("x_out", TensorProto.FLOAT, None)],
        )  # fmt: skip
        inits += [numpy_helper.from_array(np.array(loop_trips, np.int64), "trips"), numpy_helper.from_array(np.array(True), "cond")]
        nodes.append(helper.make_node("Loop", ["trips", "cond", "input"], ["looped"], name="spin", body=body))
        src = "looped"
    nodes += [
        helper.make_node("GlobalAveragePool", [src], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], name="fc", transB=1),
    ]
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_a_hanging_backend_is_stopped_at_the_timeout(cli_runner, tmp_path):
    hang, ref = tmp_path / "hang.onnx", tmp_path / "ref.onnx"
    onnx.save(_classifier(10**12), str(hang))
    onnx.save(_classifier(None), str(ref))
    t0 = time.perf_counter()
    r = invoke(cli_runner, ["verify", str(hang), "--against", str(ref), "--batch", "1", "--samples", "1", "--timeout", "5", "--no-localize"])
    took = time.perf_counter() - t0
    assert r.exit_code == 1, r.stdout + r.stderr
    assert "did not finish within 5 s" in r.stdout + r.stderr
    assert took < 60, took  # the subprocess start-up and the 5 s, not 1e12 loop steps
    r = invoke(cli_runner, ["verify", str(hang), "--against", str(ref), "--timeout", "nan"])
    assert r.exit_code == 2 and "hint:" in r.stderr
