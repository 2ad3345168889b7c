"""One front door for ONNX files: every command that reads one (verify, convert, quantize, bench, check) answers a
graph no runtime would run, and malformed external-data fields, with the same clear error: exit 2, an ``error:``
and a ``hint:`` line, no traceback. ``check`` reports such a graph as incompatible (exit 1) instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from tests.conftest import invoke


def _image_model(nodes, opset=17, inputs=None, inits=(), domain_opsets=()):
    inputs = inputs or [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])]
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])], list(inits))
    ops = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domain_opsets)]
    return helper.make_model(g, opset_imports=ops, ir_version=8)


def _head(src: str = "input") -> list:
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros((4,), np.float32), "b")  # Gemm's C is optional only from opset 11
    return [
        helper.make_node("GlobalAveragePool", [src], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "w", "b"], ["logits"], name="fc", transB=1),
    ], [w, b]


def _bad_models(d: Path) -> dict[str, Path]:
    out = {}
    head, inits = _head("r")
    cyclic = [helper.make_node("Add", ["input", "r"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["r"], name="relu"), *head]
    out["cyclic"] = _image_model(cyclic, inits=inits)
    head, inits = _head("c")
    out["custom op"] = _image_model([helper.make_node("Twist", ["input"], ["c"], name="twist", domain="acme"), *head], inits=inits, domain_opsets=["acme"])
    head, inits = _head("input")
    out["opset 6"] = _image_model(head, opset=6, inits=inits)
    head, inits = _head("x")
    int_in = [helper.make_tensor_value_info("input", TensorProto.INT64, ["N", 3, 8, 8])]
    out["int64 input"] = _image_model([helper.make_node("Cast", ["input"], ["x"], name="cast", to=TensorProto.FLOAT), *head], inputs=int_in, inits=inits)
    paths = {}
    for name, m in out.items():
        p = d / (name.replace(" ", "_") + ".onnx")
        onnx.save(m, str(p))
        paths[name] = p
    head, inits = _head("input")
    good = d / "good.onnx"
    onnx.save(_image_model(head, inits=inits), str(good))
    paths["good"] = good
    return paths


def _external(d: Path, **fields: str) -> Path:
    """A model whose weight lives in external data, with ``fields`` overriding location/offset/length."""
    head, inits = _head("input")
    m = _image_model(head, inits=inits)
    t = m.graph.initializer[0]  # w
    (d / "w.bin").write_bytes(numpy_helper.to_array(t).tobytes())
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in {"location": "w.bin", "offset": "0", "length": "48", **fields}.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    name = "ext_" + "_".join(f"{k}" for k in fields) + ".onnx"
    p = d / name
    p.write_bytes(m.SerializeToString())
    return p


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("front-door")
    paths = _bad_models(d)
    paths["offset abc"] = _external(d, offset="abc")
    paths["NUL in location"] = _external(d, location="w\x00.bin")
    paths["5000-character location"] = _external(d, location="x" * 5000)
    calib = d / "calib"
    calib.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(calib / f"{i}.png")
    paths["calib"] = calib
    return paths


def _commands(bad: dict[str, Path], what: str) -> list[list[str]]:
    f = str(bad[what])
    return [
        ["verify", f, "--against", str(bad["good"]), "--batch", "1"],
        ["convert", f, "--precision", "fp16", "--out", f + ".fp16.onnx"],
        ["quantize", f, "--data", str(bad["calib"]), "--out", f + ".int8.onnx"],
        ["bench", f, "--backends", "ort-cpu", "--warmup", "1", "--iters", "2", "--no-progress"],
    ]


CASES = ["cyclic", "custom op", "opset 6", "int64 input", "offset abc", "NUL in location", "5000-character location"]


@pytest.mark.parametrize("what", CASES)
def test_every_command_refuses_the_file_cleanly(cli_runner, bad, what):
    for cmd in _commands(bad, what):
        r = invoke(cli_runner, cmd)
        out = r.stdout + r.stderr
        assert r.exit_code == 2, f"{cmd[0]} {what}: exit {r.exit_code}\n{out}"
        assert "Traceback" not in out and "internal error" not in out, f"{cmd[0]} {what}\n{out}"
        tags = [ln.split(":")[0] for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
        assert tags == ["error", "hint"], f"{cmd[0]} {what}\n{r.stderr}"
        assert not Path(cmd[-1]).exists() or cmd[0] in ("verify", "bench")  # nothing written


def test_quantize_refuses_an_opset_without_qdq(cli_runner, bad, tmp_path):
    head, inits = _head("input")
    old = tmp_path / "opset9.onnx"
    onnx.save(_image_model(head, opset=9, inits=inits), str(old))
    r = invoke(cli_runner, ["quantize", str(old), "--data", str(bad["calib"]), "--out", str(tmp_path / "q.onnx")])
    assert r.exit_code == 2 and "needs opset 13" in r.stderr and "hint:" in r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("what", ["cyclic", "custom op"])
def test_check_reports_a_graph_ort_would_refuse_as_incompatible(cli_runner, bad, what):
    r = invoke(cli_runner, ["check", str(bad[what]), "--target", "ort-cpu"])
    assert r.exit_code == 1, r.stdout + r.stderr
    assert ("cycle" if what == "cyclic" else "acme::Twist") in r.stdout + r.stderr


# external data: where it may be read from ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    ["../w.bin", "sub/../../w.bin", "sub/../w.bin", "sub\\..\\..\\w.bin", "a/b/../../../w.bin", "sub/.."],
)
def test_dot_dot_anywhere_in_an_external_data_path_is_refused(tmp_path, location):
    from deployinc.errors import OnnxFileError
    from deployinc.io import load_onnx

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "sub").mkdir()
    p = _external(model_dir, location=location)
    (tmp_path / "w.bin").write_bytes((model_dir / "w.bin").read_bytes())  # what an escaping path would reach
    with pytest.raises(OnnxFileError) as info:
        load_onnx(p)
    assert info.value.message == f"tensor 'w' has external-data location {location!r} that leaves the model's folder"
    assert info.value.hint == "external data must sit beside the model; refusing to read it"


def test_external_data_reached_through_a_symlinked_folder_is_refused_and_never_copied(tmp_path):
    """``sub`` is a symlink to a folder outside the model's: the data file itself is a plain file with one link, so
    only the resolved-path check stands between a package and a copy of the outside file."""
    from deployinc.errors import OnnxFileError
    from deployinc.io import copy_onnx, load_onnx

    model_dir, outside = tmp_path / "model", tmp_path / "outside"
    model_dir.mkdir()
    outside.mkdir()
    p = _external(model_dir, location="sub/w.bin")
    (model_dir / "w.bin").rename(outside / "w.bin")
    (model_dir / "sub").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OnnxFileError, match=r"external data 'sub/w.bin' of tensor 'w' resolves outside"):
        load_onnx(p)
    pkg = tmp_path / "pkg"  # deploy's package copies the chosen model with copy_onnx
    with pytest.raises(OnnxFileError, match="resolves outside"):
        copy_onnx(p, pkg / "model.onnx")
    assert not pkg.exists() or not any(pkg.rglob("*"))
    # the same file beside the model, in a real folder, loads and copies
    (model_dir / "sub").unlink()
    (model_dir / "sub").mkdir()
    (outside / "w.bin").rename(model_dir / "sub" / "w.bin")
    assert load_onnx(p).model is not None
    assert [x.relative_to(pkg) for x in copy_onnx(p, pkg / "model.onnx")] == [Path("model.onnx"), Path("sub/w.bin")]
