"""Every ONNX file deployinc writes passes ``onnx.checker.check_model(full_check=True)``: export (both exporters),
convert (fp16) and quantize (int8), on a plain and a depthwise network. ONNX Runtime loads files the checker
refuses (fp16 models with Casts after their users did), so only the checker proves this."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from tests.conftest import invoke


@pytest.fixture(scope="module")
def written(tmp_path_factory, tinynets_dir) -> dict[str, Path]:
    from click.testing import CliRunner

    d = tmp_path_factory.mktemp("writers")
    calib = d / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    runner = CliRunner()
    out: dict[str, Path] = {}
    for spec, shape, exporter in (("tinynets:build", "1,3,16,16", "torchscript"), ("depthwise_cifar", "1,3,32,32", "dynamo")):
        stem = spec.replace(":", "_")
        p = d / f"{stem}.onnx"
        r = invoke(runner, ["export", spec, "--input-shape", shape, "--exporter", exporter, "--out", str(p)])
        assert r.exit_code == 0, r.stdout + r.stderr
        out[f"export {stem} ({exporter})"] = p
        f16 = d / f"{stem}.fp16.onnx"
        r = invoke(runner, ["convert", str(p), "--precision", "fp16", "--out", str(f16)])
        assert r.exit_code == 0, r.stdout + r.stderr
        out[f"convert {stem}"] = f16
        for target in ("cpu", "tensorrt"):
            q = d / f"{stem}.{target}.int8.onnx"
            r = invoke(runner, ["quantize", str(p), "--data", str(calib), "--target", target, "--out", str(q)])
            assert r.exit_code == 0, r.stdout + r.stderr
            out[f"quantize {stem} {target}"] = q
    return out


@pytest.mark.parametrize(
    "what",
    [
        "export tinynets_build (torchscript)", "export depthwise_cifar (dynamo)",
        "convert tinynets_build", "convert depthwise_cifar",
        "quantize tinynets_build cpu", "quantize tinynets_build tensorrt",
        "quantize depthwise_cifar cpu", "quantize depthwise_cifar tensorrt",
    ],
)  # fmt: skip
def test_every_written_file_passes_the_full_onnx_checker(written, what):
    onnx.checker.check_model(str(written[what]), full_check=True)


def test_toposort_orders_nodes_appended_after_their_users_and_names_a_cycle():
    from onnx import TensorProto, helper

    from deployinc.core.graph import toposort_nodes

    relu = helper.make_node("Relu", ["c"], ["y"], name="relu")
    cast = helper.make_node("Cast", ["x"], ["c"], name="cast", to=TensorProto.FLOAT)
    g = helper.make_graph(
        [relu, cast], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    assert toposort_nodes(g) and [n.name for n in g.node] == ["cast", "relu"]
    assert not toposort_nodes(g)
    onnx.checker.check_graph(g)
    loop = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["b"], name="r")],
        "loop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])],
    )  # fmt: skip
    with pytest.raises(ValueError, match="cycle"):
        toposort_nodes(loop)
