"""Native TensorRT and ONNX Runtime's TensorRT provider, end to end: run wherever ``tensorrt`` is importable and a
CUDA GPU is visible; skipped with the reason everywhere else (none of deployinc's own machines can install
TensorRT's runtime libraries, so these have not run in this project's CI)."""

from __future__ import annotations

import numpy as np
import pytest

from deployinc.lazy import available


def _skip_reason() -> str | None:
    if not available("tensorrt"):
        try:
            import tensorrt  # noqa: F401
        except Exception as exc:  # noqa: BLE001
            return f"tensorrt is not importable: {str(exc).splitlines()[0][:120]}"
        return "tensorrt is not importable"
    try:
        import torch

        if not torch.cuda.is_available():
            return "no CUDA GPU visible"
    except Exception as exc:  # noqa: BLE001
        return f"torch/CUDA unavailable: {exc}"
    return None


_REASON = _skip_reason()
pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


@pytest.fixture
def model(tmp_path):
    from deployinc.io import save_onnx
    from tests.precision.test_fp16 import convnet

    p = tmp_path / "net.onnx"
    save_onnx(convnet(), p)
    return p


def _reference(path, x):
    from deployinc.io import load_onnx
    from deployinc.precision._common import cpu_session

    return cpu_session(load_onnx(path).model).run(None, {"input": x})[0]


@pytest.mark.parametrize("precision,rtol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_native_engine_matches_ort_cpu_and_is_cached(tmp_path, model, precision, rtol):
    from deployinc.trt.runner import TensorRTRunner
    from tests.precision.test_fp16 import images

    x = images(4)
    ref = _reference(model, x)
    with TensorRTRunner(model, precision=precision, batch="1,4,8", cache_dir=tmp_path / "cache") as r:
        out = r.infer({"input": x})["logits"]
        assert r.details["engine_from_cache"] is False and r.details["engine_build_seconds"] > 0
    assert np.abs(out - ref).max() <= rtol * max(1.0, np.abs(ref).max())
    with TensorRTRunner(model, precision=precision, batch="1,4,8", cache_dir=tmp_path / "cache") as r:
        again = r.infer({"input": x})["logits"]
        assert r.details["engine_from_cache"] is True and r.details["engine_build_seconds"] is None
    np.testing.assert_allclose(again, out, rtol=1e-6, atol=1e-6)


def test_truncated_cached_engine_is_rebuilt(tmp_path, model):
    from deployinc.trt.runner import TensorRTRunner

    with TensorRTRunner(model, cache_dir=tmp_path / "cache") as r:
        path = r.details["engine_path"]
    with open(path, "r+b") as f:
        f.truncate(100)
    with TensorRTRunner(model, cache_dir=tmp_path / "cache") as r:
        assert r.details["engine_from_cache"] is False
        assert any("truncated" in w for w in r.details["warnings"])


def test_shape_outside_profile_is_refused(tmp_path, model):
    from deployinc.errors import BadInputError
    from deployinc.trt.runner import TensorRTRunner
    from tests.precision.test_fp16 import images

    with TensorRTRunner(model, batch="1,2,4", cache_dir=tmp_path / "cache") as r:
        with pytest.raises(BadInputError, match="outside the engine's profile"):
            r.infer({"input": images(8)})


def test_int8_from_qdq_model(tmp_path, model):
    from deployinc.precision.int8 import quantize_int8, write_int8
    from deployinc.trt.runner import TensorRTRunner
    from tests.precision.test_fp16 import images

    res = quantize_int8(model, images(32, seed=1), target="tensorrt")
    q = tmp_path / "net.int8.onnx"
    write_int8(res, q)
    x = images(4, seed=3)
    ref = _reference(model, x)
    with TensorRTRunner(q, precision="int8", batch="1,4,4", cache_dir=tmp_path / "cache") as r:
        out = r.infer({"input": x})["logits"]
    cos = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(ref, out)]
    assert min(cos) > 0.98


def test_parser_error_names_the_node(tmp_path):
    from onnx import TensorProto, helper

    from deployinc.io import save_onnx
    from deployinc.trt.engine import TensorRTParseError, build_or_load

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    node = helper.make_node("NoSuchOp", ["input"], ["y"], name="/bad/NoSuchOp", domain="com.example")
    m = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    m.ir_version = 8
    p = tmp_path / "bad.onnx"
    save_onnx(m, p)
    with pytest.raises(TensorRTParseError) as info:
        build_or_load(p, cache_dir=tmp_path / "cache")
    assert "/bad/NoSuchOp" in info.value.message or "NoSuchOp" in info.value.message
    assert info.value.errors


def test_ort_tensorrt_provider_with_deployinc_options(tmp_path, model):
    import onnxruntime as ort

    from deployinc.trt.ort_options import tensorrt_provider_config
    from tests.precision.test_fp16 import images

    cfg = tensorrt_provider_config(model, precision="fp16", batch="1,4,8", cache_dir=tmp_path / "cache")
    so = ort.SessionOptions()
    sess = ort.InferenceSession(str(model), so, providers=[("TensorrtExecutionProvider", cfg.options), "CPUExecutionProvider"])
    if sess.get_providers()[0] != "TensorrtExecutionProvider":
        pytest.skip(f"ORT fell back to {sess.get_providers()} (its TensorRT provider could not load TensorRT)")
    x = images(4)
    out = sess.run(None, {"input": x})[0]
    ref = _reference(model, x)
    assert np.abs(out - ref).max() <= 2e-2 * max(1.0, np.abs(ref).max())
    assert any(cfg.engine_cache_dir.iterdir())  # the provider wrote its engine into deployinc's keyed folder
