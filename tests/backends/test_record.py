"""The backend records (deployinc.backends): one registry, and every table the commands read derived from it."""

from __future__ import annotations

import pytest

import deployinc.backends as B
from deployinc.backends._record import REGISTRY, Backend, register
from deployinc.errors import BadInputError


def test_the_tables_come_from_the_records():
    assert tuple(B.BACKENDS) == tuple(REGISTRY)
    assert B.ONNX_BACKENDS == tuple(n for n, r in REGISTRY.items() if r.onnx)
    assert B.TORCH_BACKENDS == ("torch", "torch-cuda", "torch-fused", "torch-compile")
    assert set(B.GPU_BACKENDS) >= {"torch-cuda", "ort-cuda", "ort-trt", "trt-engine"}
    assert set(B.FUSING_BACKENDS) >= {"ort-trt", "trt-engine"} and "ort-cpu" not in B.FUSING_BACKENDS
    assert set(B.ISOLATED_BACKENDS) >= {"ort-cuda", "ort-trt", "trt-engine"} and "ort-cpu" not in B.ISOLATED_BACKENDS
    for alias, name in B.ALIASES.items():
        assert alias in REGISTRY[name].aliases and B.canonical(alias.upper()) == name
    assert B.get("cpu") is REGISTRY["ort-cpu"] and B.REFERENCE == "ort-cpu" and B.BASELINE == "torch"


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="already names a registered backend"):
        register(Backend("ort-cpu2", "x", "test", lambda: None, aliases=("cpu",)))
    with pytest.raises(ValueError, match="already names"):
        register(Backend("ort-cpu", "x", "test", lambda: None))
    assert "ort-cpu2" not in REGISTRY


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(BadInputError, match="unknown backend 'vulkan'") as e:
        B.get("vulkan")
    assert "ort-cpu" in (e.value.hint or "")


@pytest.mark.parametrize(
    ("precision", "backend", "artifact"),
    [
        ("fp32", "ort-cpu", "fp32"), ("fp16", "ort-cpu", "fp16"), ("int8", "ort-cpu", "int8-cpu"), ("bf16", "ort-cpu", None),
        ("fp32", "ort-openvino", "fp32"), ("bf16", "ort-openvino", "fp32"), ("fp16", "ort-openvino", None),
        ("int8", "ort-openvino", "int8-cpu"), ("fp16", "ort-cuda", "fp16"), ("int8", "ort-cuda", None),
        ("fp16", "ort-trt", "fp32"), ("int8", "ort-trt", "int8-trt"), ("fp16", "trt-engine", "fp32"), ("int8", "trt-engine", "int8-trt"),
    ],
)  # fmt: skip
def test_the_artifact_each_backend_runs_at_each_precision(precision, backend, artifact):
    """The table deploy's plan had in its own code (plan.artifact_for), now each record's."""
    from deployinc.deploy.plan import artifact_for

    assert artifact_for(precision, backend) == artifact == B.get(backend).artifact(precision)


def test_deploy_targets_ranks_and_accelerators():
    assert B.targets("cpu")[:2] == ("ort-cpu", "ort-openvino")
    assert B.targets("tensorrt") == ("ort-trt", "trt-engine")
    assert set(B.targets("cuda")) >= {"ort-cuda", "ort-trt", "trt-engine"}
    assert [B.get(n).rank for n in ("ort-cpu", "ort-cuda", "ort-trt", "trt-engine")] == [0, 1, 2, 3]
    assert B.get("ort-trt").accelerator("fp16")["precision_mode"] == "FP16"  # type: ignore[index]
    assert B.get("ort-cpu").accelerator("fp32") is None and B.get("ort-openvino").accelerator("fp32") == {"name": "openvino"}
    assert B.check_target("trt") == "tensorrt" and B.check_target("tensorrt") == "tensorrt" and B.check_target("cpu") == "ort-cpu"
    assert B.BENCH_DEFAULT == "torch,torch-fused,torch-compile,ort-cpu,ort-cuda,ort-trt,trt-engine"


def test_every_onnx_backend_builds_through_its_record_and_says_how_to_run_it():
    for name in B.ONNX_BACKENDS:
        rec = B.get(name)
        assert rec.build is not None and rec.usage is not None, name
        lines = rec.usage("fp32", 2)
        assert any("model.onnx" in ln for ln in lines), name
        assert rec.tolerance in ("cpu", "cuda", "tensorrt") and rec.device in ("cpu", "gpu")
