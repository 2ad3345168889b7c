"""`deployinc inspect` on every kind of file deployinc writes (export, convert --precision fp16, quantize --data,
external data) and on foreign and broken ones; and the shell completion of model and backend names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployinc.errors import OnnxFileError

from tests.conftest import files_in, invoke


def screen_ok(text: str) -> None:
    """Every line fits 80 columns; no traceback."""
    too_long = [ln for ln in text.splitlines() if len(ln) > 80]
    assert not too_long, too_long
    assert "Traceback" not in text


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tinynets_dir) -> Path:
    """A deployinc export of a tiny user model (torchscript, 16 x 16: quick)."""
    from deployinc.export import export_pipeline

    out = tmp_path_factory.mktemp("inspect") / "tiny.onnx"
    export_pipeline("tinynets:build", out=out, exporter="torchscript", input_shape=(1, 3, 16, 16), threads=2)
    return out


def foreign_model(custom_op: bool = False, cycle: bool = False):
    """A model deployinc did not write: MatMul + Relu, its own metadata, optionally a custom op or a cycle."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")
    if cycle:
        nodes = [
            helper.make_node("Add", ["x", "b"], ["a"], name="first"),
            helper.make_node("Relu", ["a"], ["b"], name="second"),
            helper.make_node("Identity", ["a"], ["y"], name="out"),
        ]
    else:
        nodes = [
            helper.make_node("MatMul", ["x", "w"], ["a"], name="mm"),
            helper.make_node("MyOp", ["a"], ["b"], name="mine", domain="com.example")
            if custom_op
            else helper.make_node("Relu", ["a"], ["b"], name="relu"),
            helper.make_node("Reshape", ["b", "shape"], ["y"], name="reshape"),
        ]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if custom_op else [])
    m = helper.make_model(
        helper.make_graph(nodes, "handmade", [x], [y], [w, shape]), opset_imports=opsets, producer_name="handmade",
        producer_version="2.0",
    )  # fmt: skip
    m.ir_version = 8
    e = m.metadata_props.add()
    e.key, e.value = "author", "someone else"
    return m


# the library --------------------------------------------------------------------------------------------------------


def test_exported_model(exported):
    from deployinc.inspect import inspect_model, render

    info = inspect_model(exported)
    assert info["producer"]["name"] == "deployinc" and info["opsets"]["ai.onnx"] == 17
    assert [i["name"] for i in info["inputs"]] == ["input"] and info["inputs"][0]["dtype"] == "float32"
    assert info["inputs"][0]["shape"][1:] == [3, 16, 16] and isinstance(info["inputs"][0]["shape"][0], str)
    assert info["outputs"][0]["shape"][1] == 10
    assert info["nodes"]["total"] == sum(info["nodes"]["by_op"].values()) and info["nodes"]["by_op"]["Conv"] >= 3
    ini = info["initializers"]
    assert ini["count"] > 0 and ini["bytes"] == sum(e["bytes"] for e in ini["by_dtype"].values())
    assert ini["by_dtype"]["float32"]["bytes"] > 1000
    assert info["external_data"]["files"] == []
    assert info["precision"]["value"] == "fp32" and info["runtime_check"]["ok"]
    prov = info["provenance"]
    assert prov["model_spec"] == "tinynets:build" and prov["input_shape"] == [1, 3, 16, 16]
    assert prov["exporter"] == "torchscript" and "fold_conv_bn" in prov["passes"] and prov["versions"]["onnx"]
    assert info["deployinc_metadata"] == {} and info["calibration"] is None
    json.dumps(info)  # JSON-ready as it is
    text = render(info)
    screen_ok(text)
    for needle in ("tinynets:build", "torchscript, opset 17", "runtime check: ok", "fp32 (float32 weights)", "[", "3, 16, 16]"):
        assert needle in text, needle
    assert f"{ini['bytes']:,} bytes" in text  # exact numbers, never truncated


def test_cli_inspect_and_json(exported, tmp_path, cli_runner):
    from deployinc.inspect import inspect_model

    r = invoke(cli_runner, ["inspect", str(exported)])
    assert r.exit_code == 0, r.stderr
    screen_ok(r.stdout)
    assert "provenance (deployinc export)" in r.stdout
    out = tmp_path / "info.json"
    r = invoke(cli_runner, ["inspect", str(exported), "--json", str(out)])
    assert r.exit_code == 0 and f"wrote {out}" in r.stderr
    assert json.loads(out.read_text()) == json.loads(json.dumps(inspect_model(exported)))
    before = out.read_bytes()
    r = invoke(cli_runner, ["inspect", str(exported), "--json", str(out)])
    assert r.exit_code == 2 and "error:" in r.stderr and "--force" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == "" and out.read_bytes() == before  # refused before anything is read or written
    assert invoke(cli_runner, ["inspect", str(exported), "--json", str(out), "--force"]).exit_code == 0
    assert files_in(tmp_path) == ["info.json"]  # no temporaries left


def test_fp16_file(exported, tmp_path, cli_runner):
    import shutil

    from deployinc.inspect import inspect_model, render

    src = tmp_path / "tiny.onnx"
    shutil.copy(exported, src)
    r = invoke(cli_runner, ["convert", str(src), "--precision", "fp16", "--samples", "2"])
    assert r.exit_code == 0, r.stderr
    info = inspect_model(tmp_path / "tiny.fp16.onnx")
    assert info["precision"]["value"] == "fp16"
    assert "float16" in info["initializers"]["by_dtype"] and info["inputs"][0]["dtype"] == "float32"
    assert info["deployinc_metadata"]["deployinc.precision"] == "fp16"
    assert info["deployinc_metadata"]["deployinc.fp16"]["keep_io_types"] is True
    assert info["provenance"]["model_spec"] == "tinynets:build"  # the export's provenance is kept
    text = render(info)
    screen_ok(text)
    assert info["precision"]["from_graph"] == "fp16" and "the graph agrees" in info["precision"]["why"]
    assert "precision    fp16 (recorded in the file's metadata" in text and "keep_io_types=yes" in text and "float16:" in text


def test_recorded_precision_that_the_graph_contradicts(tmp_path):
    import onnx

    from deployinc.inspect import inspect_model

    m = foreign_model()
    e = m.metadata_props.add()
    e.key, e.value = "deployinc.precision", '"fp16"'
    onnx.save(m, str(tmp_path / "label.onnx"))
    prec = inspect_model(tmp_path / "label.onnx")["precision"]
    assert prec["value"] == "fp16" and prec["from_graph"] == "fp32" and "but the graph looks fp32" in prec["why"]


def test_int8_file_with_calibration(exported, tmp_path, cli_runner):
    import shutil

    from deployinc.inspect import inspect_model, render
    from tests.precision.test_int8 import write_pngs

    src = tmp_path / "tiny.onnx"
    shutil.copy(exported, src)
    data = write_pngs(tmp_path / "calib", 12, size=16)
    r = invoke(cli_runner, ["quantize", str(src), "--data", str(data), "--method", "minmax"])
    assert r.exit_code == 0, r.stderr
    r = invoke(cli_runner, ["inspect", str(tmp_path / "tiny.int8.onnx")])
    assert r.exit_code == 0, r.stderr
    screen_ok(r.stdout)
    info = inspect_model(tmp_path / "tiny.int8.onnx")
    assert info["precision"]["value"] == "int8" and info["nodes"]["by_op"]["QuantizeLinear"] > 0
    assert info["deployinc_metadata"]["deployinc.int8"]["method"] == "minmax"
    cal = info["calibration"]
    assert cal["found"] and cal["calibration_images"] == 12 and cal["method"] == "minmax" and cal["tensors"] > 0
    assert "calibration images 12" in r.stdout and "tiny.int8.calibration.json" in r.stdout
    # without its report beside it, an int8 file still inspects, and says the report is missing
    (tmp_path / "tiny.int8.calibration.json").unlink()
    info = inspect_model(tmp_path / "tiny.int8.onnx")
    assert info["calibration"]["found"] is False
    assert "not found" in render(info)


def test_external_data(exported, tmp_path):
    import onnx

    from deployinc.inspect import inspect_model, render
    from deployinc.io import save_onnx

    m = onnx.load(str(exported))
    written = save_onnx(m, tmp_path / "ext.onnx", external_data=True)
    assert (tmp_path / "ext.onnx.data") in written
    info = inspect_model(tmp_path / "ext.onnx")
    ext = info["external_data"]
    assert [f["location"] for f in ext["files"]] == ["ext.onnx.data"] and ext["tensors"] > 0
    assert ext["bytes"] > 0 and ext["files"][0]["file_bytes"] == (tmp_path / "ext.onnx.data").stat().st_size
    # the weights' bytes are counted from the tensors' shapes, the same wherever they are stored
    assert info["initializers"]["bytes"] == inspect_model(exported)["initializers"]["bytes"]
    text = render(info)
    screen_ok(text)
    assert "external data (1 file(s)" in text and "ext.onnx.data:" in text
    # unsafe external data is refused at the front door, as by every command
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(OnnxFileError, match="missing"):
        inspect_model(tmp_path / "ext.onnx")


def test_foreign_model(tmp_path, cli_runner):
    import onnx

    from deployinc.inspect import inspect_model

    p = tmp_path / "foreign.onnx"
    onnx.save(foreign_model(), str(p))
    info = inspect_model(p)
    assert info["provenance"] is None and info["deployinc_metadata"] == {}
    assert info["metadata"] == {"author": "someone else"} and info["producer"] == {"name": "handmade", "version": "2.0"}
    assert info["ir_version"] == 8 and info["nodes"]["by_op"] == {"MatMul": 1, "Relu": 1, "Reshape": 1}
    assert info["initializers"]["by_dtype"] == {"float32": {"count": 1, "bytes": 64}, "int64": {"count": 1, "bytes": 16}}
    assert info["runtime_check"]["ok"] and info["precision"]["value"] == "fp32"
    r = invoke(cli_runner, ["inspect", str(p)])
    assert r.exit_code == 0
    screen_ok(r.stdout)
    assert "provenance: none" in r.stdout and "author" in r.stdout and "handmade 2.0" in r.stdout


@pytest.mark.parametrize("problem", ["custom_op", "cycle"])
def test_graph_problem_is_shown_not_refused(tmp_path, cli_runner, problem):
    import onnx

    p = tmp_path / f"{problem}.onnx"
    onnx.save(foreign_model(**{problem: True}), str(p))
    r = invoke(cli_runner, ["inspect", str(p)])
    assert r.exit_code == 0, r.stderr
    screen_ok(r.stdout)
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("runtime check:"))
    assert ("com.example::MyOp" if problem == "custom_op" else "cycle") in line
    assert "hint:" in r.stdout
    if problem == "custom_op":
        assert "com.example::MyOp 1" in r.stdout and "com.example 1" in r.stdout


def test_bad_input(tmp_path, cli_runner):
    for path, needle in (
        (tmp_path / "missing.onnx", "does not exist"),
        (tmp_path / "text.onnx", "not a valid ONNX model"),
        (tmp_path / "empty.onnx", "is empty"),
    ):
        if path.name == "text.onnx":
            path.write_text("hello, not protobuf at all\n" * 10)
        if path.name == "empty.onnx":
            path.write_bytes(b"")
        r = invoke(cli_runner, ["inspect", str(path)])
        assert r.exit_code == 2 and needle in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr


def test_json_over_the_model_is_refused(exported, tmp_path, cli_runner):
    import shutil

    p = tmp_path / "m.onnx"
    shutil.copy(exported, p)
    before = p.read_bytes()
    r = invoke(cli_runner, ["inspect", str(p), "--json", str(p), "--force"])
    assert r.exit_code == 2 and "error:" in r.stderr and p.read_bytes() == before


def test_long_names_fit_80_columns(tmp_path):
    import onnx

    from deployinc.inspect import inspect_model, render

    m = foreign_model()
    long = "a_very_long_input_name_" * 5
    m.graph.input[0].name = long
    m.graph.node[0].input[0] = long
    e = m.metadata_props.add()
    e.key, e.value = "a.key.that.is.rather.long.for.a.label.column", "x" * 200
    p = tmp_path / "long.onnx"
    onnx.save(m, str(p))
    text = render(inspect_model(p))
    screen_ok(text)
    assert "".join(text.split())  # nothing lost: the long name is all there, wrapped
    assert long in "".join(ln.strip() for ln in text.splitlines())


# shell completion -----------------------------------------------------------------------------------------------------


def test_model_names_match_the_registry():
    from deployinc.cli.main import model_names
    from deployinc.models.registry import list_models

    assert model_names() == list_models()


def complete(words: str, cwd: Path | None = None) -> list[str]:
    """What bash completion offers for the command line ``words`` (the last word being completed)."""
    env = dict(os.environ, COMP_WORDS=words, COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)),
               _DEPLOYINC_COMPLETE="bash_complete")  # fmt: skip
    r = subprocess.run([sys.executable, "-m", "deployinc"], env=env, capture_output=True, text=True, timeout=60, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_completion_end_to_end(tmp_path):
    (tmp_path / "googlenet.onnx").write_bytes(b"")
    assert complete("deployinc ins") == ["plain,inspect"]
    assert complete("deployinc export googl") == ["plain,googlenet"]
    assert complete("deployinc train inception_c") == ["plain,inception_cifar"]
    assert "plain,resnet50" in complete("deployinc profile resnet")
    assert complete("deployinc bench googlenet", cwd=tmp_path) == ["plain,googlenet", "plain,googlenet.onnx"]
    assert complete("deployinc export path/to/") == ["file,path/to/"]  # paths: the shell's file completion
    assert complete("deployinc export zzz") == ["file,zzz"]
    assert complete("deployinc verify m.onnx --providers cpu,c") == ["plain,cpu,cuda"]
    got = complete("deployinc bench m.onnx --backends torch,ort-")
    assert {"plain,torch,ort-cpu", "plain,torch,ort-cuda", "plain,torch,ort-trt"} <= set(got)  # names of deployinc.backends
    assert all(g.startswith("plain,torch,ort-") for g in got)


def test_completion_names_and_cost():
    """Backend names are the ones the parsers accept; completing imports neither torch nor onnxruntime."""
    from deployinc.cli.main import backend_names, provider_names
    from deployinc.cli.bench import parse_bench_backends
    from deployinc.verify.backends import parse_providers

    for name in provider_names():
        parse_providers(name)
    for name in backend_names():
        parse_bench_backends(name)
    code = (
        "import sys, click\n"
        "from deployinc.cli.main import cli, COMPLETIONS\n"
        "for (cmd, param) in COMPLETIONS:\n"
        "    c = cli.get_command(None, cmd)\n"
        "    p = next(p for p in c.params if p.name == param)\n"
        "    assert p.shell_complete(click.Context(c, info_name=cmd), '')\n"
        "print('HEAVY', sorted(m for m in ('torch', 'torchvision', 'onnxruntime') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
