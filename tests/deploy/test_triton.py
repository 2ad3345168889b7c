"""deployinc.deploy.triton: the config.pbtxt it writes, read back with Triton's own ModelConfig schema, and the
model repository layout."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deployinc.deploy import triton
from deployinc.deploy.triton import TensorSpec, io_specs, model_config_schema, triton_config, validate, write_repository
from deployinc.errors import BadInputError, OutputExistsError


def _classifier(batch: str | int = "batch", elem: int = TensorProto.FLOAT, out_batch: str | int | None = None) -> onnx.ModelProto:
    """Conv + GlobalAveragePool + Flatten + Gemm: "input" [batch, 3, 32, 32] -> "logits" [batch, 10]."""
    dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(dtype), "conv_w"),
        numpy_helper.from_array(rng.standard_normal((10, 8)).astype(dtype), "fc_w"),
        numpy_helper.from_array(np.zeros(10, dtype), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", elem, [batch, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", elem, [batch if out_batch is None else out_batch, 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _parse(text: str):
    from google.protobuf import text_format

    schema = model_config_schema()
    assert schema is not None, "tritonclient is in the dev extra; its schema must load without grpcio"
    return text_format.Parse(text, schema())


def _data_type(message, value: int) -> str:
    return message.DESCRIPTOR.fields_by_name["data_type"].enum_type.values_by_number[value].name


def _kind(group, value: int) -> str:
    return group.DESCRIPTOR.fields_by_name["kind"].enum_type.values_by_number[value].name


# --------------------------------------------------------------------------------------------------------------
# The schema


def test_schema_loads_without_grpc_and_is_cached():
    pytest.importorskip("tritonclient")
    first = model_config_schema()
    assert first is not None and first.__name__ == "ModelConfig"
    assert model_config_schema() is first
    assert first.DESCRIPTOR.full_name == "inference.ModelConfig"
    if "tritonclient.grpc.model_config_pb2" not in sys.modules:
        assert "deployinc._triton_model_config_pb2" in sys.modules


def test_validate():
    pytest.importorskip("tritonclient")
    assert validate('name: "m"\nmax_batch_size: 4\n') is None
    broken = validate('name: "m"\nmax_batch_size: [\n')
    assert isinstance(broken, str) and broken
    unknown = validate("no_such_field: 1\n")
    assert unknown is not None and "no_such_field" in unknown
    assert validate("max_batch_size: \"many\"\n") is not None


def test_without_tritonclient(monkeypatch):
    monkeypatch.setattr(triton, "model_config_schema", lambda: None)
    assert validate('name: "m"') == "tritonclient is not installed (pip install 'deployinc[triton]')"
    text = triton_config("m", _classifier(), max_batch_size=4, preferred_batch_sizes=[2])
    assert 'name: "m"' in text and "max_batch_size: 4" in text


# --------------------------------------------------------------------------------------------------------------
# io_specs


def test_io_specs_dynamic_batch():
    inputs, outputs, batching = io_specs(_classifier())
    assert batching is True
    assert inputs == [TensorSpec("input", "TYPE_FP32", [3, 32, 32])]  # initializers are no inputs
    assert outputs == [TensorSpec("logits", "TYPE_FP32", [10])]


def test_io_specs_static_and_mixed():
    inputs, outputs, batching = io_specs(_classifier(batch=1))
    assert batching is False
    assert inputs[0].dims == [1, 3, 32, 32] and outputs[0].dims == [1, 10]
    inputs, outputs, batching = io_specs(_classifier(out_batch=1))  # dynamic input, static output: no batching
    assert batching is False
    assert inputs[0].dims == [-1, 3, 32, 32] and outputs[0].dims == [1, 10]


def test_io_specs_unknown_dim_counts_as_dynamic():
    model = _classifier()
    for vi in (model.graph.input[0], model.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].Clear()  # neither dim_value nor dim_param
    assert io_specs(model)[2] is True


def test_io_specs_initializer_listed_as_input_is_skipped():
    model = _classifier()
    model.graph.input.append(helper.make_tensor_value_info("fc_b", TensorProto.FLOAT, [10]))
    inputs, _, batching = io_specs(model)
    assert [s.name for s in inputs] == ["input"] and batching


def test_io_specs_fp16_and_unsupported_types():
    inputs, outputs, _ = io_specs(_classifier(elem=TensorProto.FLOAT16))
    assert inputs[0].dtype == outputs[0].dtype == "TYPE_FP16"
    model = _classifier()
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.COMPLEX64
    with pytest.raises(BadInputError, match="COMPLEX64"):
        io_specs(model)


def test_io_specs_unknown_rank():
    model = _classifier()
    model.graph.output[0].type.tensor_type.ClearField("shape")
    with pytest.raises(BadInputError, match="no shape"):
        io_specs(model)


# --------------------------------------------------------------------------------------------------------------
# triton_config


def test_config_dynamic_batch():
    text = triton_config("tiny_fp32", _classifier(), max_batch_size=16, preferred_batch_sizes=[8, 1, 4, 4, 64], max_queue_delay_us=250)
    cfg = _parse(text)
    assert cfg.name == "tiny_fp32"
    assert cfg.platform == "onnxruntime_onnx" and cfg.backend == "onnxruntime"
    assert cfg.max_batch_size == 16
    assert [i.name for i in cfg.input] == ["input"] and [o.name for o in cfg.output] == ["logits"]
    assert _data_type(cfg.input[0], cfg.input[0].data_type) == "TYPE_FP32"
    assert _data_type(cfg.output[0], cfg.output[0].data_type) == "TYPE_FP32"
    assert list(cfg.input[0].dims) == [3, 32, 32] and list(cfg.output[0].dims) == [10]
    assert cfg.HasField("dynamic_batching")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [1, 4, 8]  # sorted, deduplicated, 64 > 16 dropped
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 250
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 1
    assert _kind(cfg.instance_group[0], cfg.instance_group[0].kind) == "KIND_CPU"
    assert not cfg.HasField("optimization")
    # stable text: the same call writes the same bytes
    assert text == triton_config("tiny_fp32", _classifier(), max_batch_size=16, preferred_batch_sizes=[1, 4, 8, 64], max_queue_delay_us=250)


def test_config_no_preferred_sizes_left():
    cfg = _parse(triton_config("m", _classifier(), max_batch_size=2, preferred_batch_sizes=[4, 8]))
    assert cfg.HasField("dynamic_batching") and list(cfg.dynamic_batching.preferred_batch_size) == []
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100


def test_config_static_batch():
    cfg = _parse(triton_config("tiny_b1", _classifier(batch=1), max_batch_size=8, preferred_batch_sizes=[4, 8]))
    assert cfg.max_batch_size == 0
    assert list(cfg.input[0].dims) == [1, 3, 32, 32] and list(cfg.output[0].dims) == [1, 10]
    assert not cfg.HasField("dynamic_batching")


def test_config_dynamic_model_served_unbatched():
    cfg = _parse(triton_config("m", _classifier(), max_batch_size=0, preferred_batch_sizes=[4]))
    assert cfg.max_batch_size == 0
    assert list(cfg.input[0].dims) == [-1, 3, 32, 32] and list(cfg.output[0].dims) == [-1, 10]
    assert not cfg.HasField("dynamic_batching")


def test_config_fp16():
    cfg = _parse(triton_config("tiny_fp16", _classifier(elem=TensorProto.FLOAT16), max_batch_size=4, preferred_batch_sizes=[4]))
    assert _data_type(cfg.input[0], cfg.input[0].data_type) == "TYPE_FP16"
    assert _data_type(cfg.output[0], cfg.output[0].data_type) == "TYPE_FP16"


def test_config_batch_only_tensor_gets_reshape():
    model = _classifier()
    model.graph.node.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
    model.graph.output.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]))
    cfg = _parse(triton_config("m", model, max_batch_size=4, preferred_batch_sizes=[]))
    label = cfg.output[1]
    assert label.name == "label" and _data_type(label, label.data_type) == "TYPE_INT64"
    assert list(label.dims) == [1] and label.HasField("reshape") and list(label.reshape.shape) == []


def test_config_gpu_instances():
    cfg = _parse(triton_config("m", _classifier(), max_batch_size=8, preferred_batch_sizes=[8], kind="gpu", instance_count=2))
    group = cfg.instance_group[0]
    assert group.count == 2 and _kind(group, group.kind) == "KIND_GPU"


def test_config_tensorrt_winner():
    accelerator = {"name": "tensorrt", "precision_mode": "FP16", "max_workspace_size_bytes": "1073741824", "trt_engine_cache_enable": "1", "trt_engine_cache_path": "/cache/trt"}
    cfg = _parse(triton_config("tiny_trt", _classifier(), max_batch_size=8, preferred_batch_sizes=[8], kind="gpu", accelerator=accelerator))
    gpu = cfg.optimization.execution_accelerators.gpu_execution_accelerator
    assert len(gpu) == 1 and gpu[0].name == "tensorrt"
    assert gpu[0].parameters["precision_mode"] == "FP16"
    assert dict(gpu[0].parameters) == {k: v for k, v in accelerator.items() if k != "name"}
    assert len(cfg.optimization.execution_accelerators.cpu_execution_accelerator) == 0


def test_config_openvino():
    cfg = _parse(triton_config("tiny_ov", _classifier(), max_batch_size=8, preferred_batch_sizes=[8], kind="cpu", accelerator={"name": "openvino"}))
    cpu = cfg.optimization.execution_accelerators.cpu_execution_accelerator
    assert len(cpu) == 1 and cpu[0].name == "openvino" and len(cpu[0].parameters) == 0
    assert len(cfg.optimization.execution_accelerators.gpu_execution_accelerator) == 0


def test_config_escapes_tensor_names():
    model = _classifier()
    odd = 'in"put\\x'
    model.graph.input[0].name = odd
    model.graph.node[0].input[0] = odd
    cfg = _parse(triton_config("m", model, max_batch_size=1, preferred_batch_sizes=[1]))
    assert cfg.input[0].name == odd


@pytest.mark.parametrize("name", ["", "has space", "a/b", "..", ".", "x" * 256, "naïve", "semi;colon"])
def test_config_bad_name(name):
    with pytest.raises(BadInputError) as info:
        triton_config(name, _classifier(), max_batch_size=4, preferred_batch_sizes=[4])
    assert info.value.hint


@pytest.mark.parametrize("name", ["resnet50", "tiny-fp16.v2", "A_1"])
def test_config_good_name(name):
    assert _parse(triton_config(name, _classifier(), max_batch_size=4, preferred_batch_sizes=[4])).name == name


@pytest.mark.parametrize(
    "accelerator, kind, match",
    [
        ({"name": "cuda-graphs"}, "gpu", "unknown Triton execution accelerator"),
        ({"precision_mode": "FP16"}, "gpu", "no 'name'"),
        ({"name": "tensorrt", "precision_mode": "FP16"}, "cpu", "GPU instances"),
        ({"name": "tensorrt", "precision_mode": "FP8"}, "gpu", "precision_mode"),
        ({"name": "tensorrt", "segment_size": "3"}, "gpu", "segment_size"),
        ({"name": "tensorrt", "trt_engine_cache_enable": True}, "gpu", "string"),
    ],
)
def test_config_bad_accelerator(accelerator, kind, match):
    with pytest.raises(BadInputError, match=match):
        triton_config("m", _classifier(), max_batch_size=4, preferred_batch_sizes=[4], kind=kind, accelerator=accelerator)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch_size": -1},
        {"instance_count": 0},
        {"kind": "tpu"},
        {"max_queue_delay_us": -5},
        {"preferred_batch_sizes": [0, 4]},
        {"max_batch_size": True},
    ],
)
def test_config_bad_arguments(kwargs):
    args = {"max_batch_size": 4, "preferred_batch_sizes": [4], **kwargs}
    with pytest.raises(BadInputError):
        triton_config("m", _classifier(), **args)


def test_config_self_check_failure_is_a_bug(monkeypatch):
    pytest.importorskip("tritonclient")
    monkeypatch.setattr(triton, "_KINDS", {"cpu": "KIND_NO_SUCH"})
    with pytest.raises(RuntimeError, match="schema refuses"):
        triton_config("m", _classifier(), max_batch_size=4, preferred_batch_sizes=[4])


# --------------------------------------------------------------------------------------------------------------
# write_repository


def test_write_repository(tmp_path):
    src = tmp_path / "best.onnx"
    onnx.save(_classifier(), str(src))
    text = triton_config("tiny", _classifier(), max_batch_size=8, preferred_batch_sizes=[4, 8])
    root = tmp_path / "pkg" / "triton"
    files = write_repository(root, "tiny", src, text)
    assert files == [root / "tiny" / "config.pbtxt", root / "tiny" / "1" / "model.onnx"]
    assert (root / "tiny" / "config.pbtxt").read_text(encoding="utf-8") == text
    copied = root / "tiny" / "1" / "model.onnx"
    assert copied.read_bytes() == src.read_bytes()
    onnx.checker.check_model(onnx.load(str(copied)))
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == ["tiny/1/model.onnx", "tiny/config.pbtxt"]


def test_write_repository_into_empty_folder(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_classifier(batch=1), str(src))
    root = tmp_path / "repo"
    root.mkdir()
    files = write_repository(root, "m", src, triton_config("m", onnx.load(str(src)), max_batch_size=0, preferred_batch_sizes=[]))
    assert all(p.is_file() for p in files)


def test_write_repository_external_data(tmp_path):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = src_dir / "big.onnx"
    onnx.save_model(_classifier(), str(src), save_as_external_data=True, all_tensors_to_one_file=True, location="big.onnx.data", size_threshold=0)
    assert (src_dir / "big.onnx.data").is_file()
    root = tmp_path / "repo"
    files = write_repository(root, "big", src, triton_config("big", onnx.load(str(src), load_external_data=False), max_batch_size=4, preferred_batch_sizes=[4]))
    version = root / "big" / "1"
    assert files == [root / "big" / "config.pbtxt", version / "model.onnx", version / "big.onnx.data"]
    assert (version / "model.onnx").read_bytes() == src.read_bytes()
    assert (version / "big.onnx.data").read_bytes() == (src_dir / "big.onnx.data").read_bytes()
    loaded = onnx.load(str(version / "model.onnx"))  # reads the external data from 1/
    weights = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
    expected = {t.name: numpy_helper.to_array(t) for t in _classifier().graph.initializer}
    assert weights.keys() == expected.keys() and all(np.array_equal(weights[k], expected[k]) for k in expected)


def test_write_repository_refuses_non_empty_root(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_classifier(), str(src))
    text = triton_config("m", _classifier(), max_batch_size=4, preferred_batch_sizes=[4])
    root = tmp_path / "repo"
    root.mkdir()
    (root / "other").write_text("x")
    with pytest.raises(OutputExistsError):
        write_repository(root, "m", src, text)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputExistsError):
        write_repository(a_file, "m", src, text)


def test_write_repository_checks_name_and_config(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(_classifier(), str(src))
    text = triton_config("m", _classifier(), max_batch_size=4, preferred_batch_sizes=[4])
    with pytest.raises(BadInputError):
        write_repository(tmp_path / "r1", "../escape", src, text)
    pytest.importorskip("tritonclient")
    with pytest.raises(BadInputError, match="folder is 'other'"):
        write_repository(tmp_path / "r2", "other", src, text)
    with pytest.raises(BadInputError, match="does not parse"):
        write_repository(tmp_path / "r3", "m", src, "max_batch_size: [")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_write_repository_bad_onnx_leaves_nothing(tmp_path):
    src = tmp_path / "bad.onnx"
    src.write_bytes(b"")
    text = triton_config("m", _classifier(), max_batch_size=4, preferred_batch_sizes=[4])
    with pytest.raises(BadInputError):
        write_repository(tmp_path / "repo", "m", src, text)
    assert not (tmp_path / "repo").exists()


def test_deploys_config_with_the_default_batch_lets_triton_batch_up_to_8(tmp_path):
    """deploy's default --batch is 1 alone: Triton's max_batch_size is still at least 8 (a dynamic-batch model
    served with max_batch_size 1 could never batch requests), and the largest benchmarked size above 8."""
    from deployinc.deploy.package import triton_text
    from deployinc.deploy.request import DeployRequest

    path = tmp_path / "m.onnx"
    onnx.save(_classifier(), str(path))
    req = DeployRequest(model="m")
    req.check()
    assert list(req.batches) == [1]
    chosen = {"backend": "ort-cpu", "precision": "fp32", "timing": {"1": {"images_per_s": 100.0}}}
    cfg = _parse(triton_text("m", path, chosen, list(req.batches)))
    assert cfg.max_batch_size == 8 and list(cfg.dynamic_batching.preferred_batch_size) == [1]
    chosen["timing"]["32"] = {"images_per_s": 400.0}
    assert _parse(triton_text("m", path, chosen, [1, 32])).max_batch_size == 32
    assert _parse(triton_text("m", path, chosen, [4])).max_batch_size == 8


def test_deploys_config_says_which_batches_were_timed(tmp_path):
    """The config's comments give the batch sizes deploy timed and their p50, and say when the dynamic batcher may
    form larger batches than any timed; a static-batch model (served unbatched) gets no such line."""
    from deployinc.deploy.package import triton_text

    path = tmp_path / "m.onnx"
    onnx.save(_classifier(), str(path))
    chosen = {"backend": "openvino", "precision": "int8", "timing": {"1": {"images_per_s": 350.0, "p50_ms": 2.784}}}
    text = triton_text("m", path, chosen, [1])
    line = next(x for x in text.splitlines() if x.startswith("# deploy timed"))
    assert "on openvino at batch 1: p50 2.78 ms" in line
    assert "batches up to 8, which were not timed (deploy --batch 1,8 times them)" in line
    chosen["timing"]["8"] = {"images_per_s": 900.0, "p50_ms": 8.9}
    line = next(x for x in triton_text("m", path, chosen, [1, 8]).splitlines() if x.startswith("# deploy timed"))
    assert line == "# deploy timed it on openvino at batch 1: p50 2.78 ms, batch 8: p50 8.90 ms"
    static = tmp_path / "static.onnx"
    onnx.save(_classifier(batch=1), str(static))
    assert "# deploy timed" not in triton_text("m", static, chosen, [1])
