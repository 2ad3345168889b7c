"""scripts/int8_sensitivity.py end to end on a small model: the whole int8 file, the weights alone in int8, and each
layer alone in float, each judged and written to the page."""

from __future__ import annotations


import onnx



def test_a_small_model_gets_every_layer_judged(sens, tmp_path):
    out = tmp_path / "s.md"
    assert sens.main(["--models", "inception_cifar", "--calibration", "16", "--samples", "4", "--threads", "1",
                     "--work", str(tmp_path / "w"), "--out-md", str(out)]) == 0  # fmt: skip
    text = out.read_text()
    fp32 = onnx.load(str(tmp_path / "w" / "inception_cifar.onnx"))
    layers = [n for n in fp32.graph.node if n.op_type in ("Conv", "Gemm")]
    assert "- whole model int8 (recipe u8s8), weights rounded to nearest: " in text and "- only the weights in int8 (per channel" in text
    assert "- whole model int8, weights rounded by GPTQ (" in text
    assert f"- each of the {len(layers)} layers alone in float: min cosine from" in text
    rows = [r for r in text.splitlines() if r.startswith("| ") and "%" in r]
    assert len(rows) == len(layers) and abs(sum(float(r.split("|")[4].strip(" %")) for r in rows) - 100.0) < 0.5
    # every calibration method on deploy's search images (96 in sets of --samples), each set judged on its own
    methods = [r for r in text.splitlines() if r.startswith(("| minmax |", "| entropy |", "| percentile |", "| mse |"))]
    assert len(methods) == 4 and all(r.endswith(" of 24 |") for r in methods), methods
    # the error block by block, from verify's localisation against eager torch: each inception block's output
    blocks = [r.split("|")[1].strip() for r in text.splitlines() if "| InceptionV1Block |" in r]
    assert blocks == ["inception1", "inception2", "inception3"], blocks
    assert "| avgpool | AdaptiveAvgPool2d |" in text


def test_weights_only_rounds_each_output_channel_to_127_steps(sens):
    import numpy as np
    from onnx import helper, numpy_helper

    w = np.array([[[[1.0, 0.3]]], [[[0.01, -0.004]]]], dtype=np.float32)  # two output channels, far apart
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 1, 2])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], [numpy_helper.from_array(w, "w")])  # fmt: skip
    got = numpy_helper.to_array(sens.weights_only(helper.make_model(g)).graph.initializer[0])
    assert np.allclose(got[0], np.round(w[0] / (1.0 / 127)) * (1.0 / 127))
    assert np.allclose(got[1], np.round(w[1] / (0.01 / 127)) * (0.01 / 127))  # its own scale, not channel 0's
    assert not np.array_equal(got, w)
