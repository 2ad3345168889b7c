"""What the runners hand the benchmark harness: bare steps on the CPU, IO binding and CUDA graphs on a GPU.

The GPU tests are marked ``gpu`` and skip with the reason where there is no usable CUDA device.
"""

from __future__ import annotations

import numpy as np
import pytest

from deployinc.errors import BackendUnavailable


def _onnx_bytes() -> bytes:
    """input [N, 3, 8, 8] -> mean over H, W -> MatMul [3, 4] -> logits [N, 4]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4) / 10, "w")
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    g = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["pooled"], keepdims=0), helper.make_node("MatMul", ["pooled", "w"], ["logits"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
        [w, axes],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    onnx.checker.check_model(m)
    return m.SerializeToString()


def _x(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 8, 8)).astype(np.float32)


def _module():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def _gpu_problem() -> str | None:
    from deployinc.runners.ort import cuda_driver_problem

    return cuda_driver_problem()


def test_ort_cpu_steps_are_the_bare_session_run():
    from deployinc.runners.ort import OrtRunner

    with OrtRunner(_onnx_bytes(), "cpu", threads=1) as r:
        feeds = {"input": _x()}
        steps = r.bench_steps(feeds)
        assert steps.compute is None and steps.sync is None and list(steps.modes()) == ["e2e"]
        assert steps.e2e.func == r.session.run and steps.e2e.args == (None, feeds)
        np.testing.assert_allclose(steps.e2e()[0], r.session.run(None, feeds)[0])


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_ort_gpu_provider_without_gpu_is_unavailable_with_reason(provider):
    from deployinc.runners.ort import OrtRunner

    problem = _gpu_problem()
    if problem is None:
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendUnavailable) as e:
        OrtRunner(_onnx_bytes(), provider).activate()
    assert problem in e.value.message and e.value.hint


def test_torch_cpu_steps_match_eager_and_refuse_cuda_graph():
    import torch

    from deployinc.runners.torch_runner import TorchRunner

    x = _x()
    m = _module().eval()
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    with TorchRunner(m, "cpu", threads=1) as r:
        steps = r.bench_steps(x)
        assert steps.compute is None and steps.sync is None
        np.testing.assert_allclose(steps.e2e(), ref, rtol=1e-6, atol=1e-6)
        with pytest.raises(BackendUnavailable, match="CUDA graphs need a CUDA device"):
            r.bench_steps(x, cuda_graph=True)


# GPU -----------------------------------------------------------------------------------------------------------------


def _need_ort_cuda() -> None:
    problem = _gpu_problem()
    if problem is not None:
        pytest.skip(f"no GPU: {problem}")


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_ort_cuda_io_binding_compute_and_e2e(cuda_graph):
    _need_ort_cuda()
    from deployinc.runners.ort import OrtRunner

    x = _x(4)
    with OrtRunner(_onnx_bytes(), "cpu", threads=1) as cpu:
        ref = cpu.session.run(None, {"input": x})[0]
    opts = {"enable_cuda_graph": "1" if cuda_graph else "0"}
    with OrtRunner(_onnx_bytes(), "cuda", provider_options=opts) as r:
        assert r.cuda_graph is cuda_graph
        steps = r.bench_steps({"input": x})
        assert list(steps.modes()) == ["compute", "e2e"] and steps.sync is not None
        for _ in range(3):  # with a CUDA graph: the first run captures, the others replay
            steps.compute()
        out = steps.e2e()
        np.testing.assert_allclose(out[0], ref, rtol=1e-4, atol=1e-5)
        # e2e copies new host data into the same device buffer (update_inplace), as graph replay needs
        steps.close()


@pytest.mark.gpu
def test_torch_cuda_graph_replay_matches_eager():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    from deployinc.runners.torch_runner import TorchRunner

    x = _x(4)
    m = _module().eval()
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    with TorchRunner(m, "cuda") as r:
        for graph in (False, True):
            steps = r.bench_steps(x, cuda_graph=graph)
            steps.compute()
            steps.sync()
            np.testing.assert_allclose(steps.e2e(), ref, rtol=1e-3, atol=1e-4)
            if steps.close:
                steps.close()


def test_torch_runner_leaves_the_callers_module_untouched():
    """A runner casts (fp16) or moves (CUDA) a copy: the same module is shared with other backends and with
    prepare's CPU self-check, which failed on GPU machines when an earlier runner had moved it in place."""
    import torch

    from deployinc.runners.torch_runner import TorchRunner

    m = _module().eval()
    with TorchRunner(m, "cpu", precision="fp16") as r:
        r.infer({"input": _x(2)})
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in m.parameters())


def test_ort_cuda_runner_asks_for_true_fp32_unless_told():
    from deployinc.runners.ort import OrtRunner

    assert OrtRunner(b"", "cuda").provider_options["use_tf32"] == "0"
    assert OrtRunner(b"", "cuda", provider_options={"use_tf32": "1"}).provider_options["use_tf32"] == "1"
    assert "use_tf32" not in OrtRunner(b"", "cpu").provider_options


def test_verify_tensorrt_profile_covers_every_batch():
    from deployinc.trt.profiles import parse_batch_range
    from deployinc.verify.backends import trt_batch_range

    assert trt_batch_range([1, 8], static=False) == "1,8,8"
    assert trt_batch_range([4], static=False) == "4,4,4"
    assert trt_batch_range([1, 8], static=True) is None
    r = parse_batch_range(trt_batch_range([8, 1, 32], static=False))
    assert (r.min, r.opt, r.max) == (1, 32, 32)


def test_tf32_flags_come_back_whatever_order_runners_deactivate_in(monkeypatch):
    import torch

    from deployinc.runners.torch_runner import _TF32, _tf32_apply, _tf32_enter, _tf32_exit

    monkeypatch.setitem(_TF32, "active", 0)  # whatever happens here, later tests get the count back
    monkeypatch.setitem(_TF32, "saved", None)

    flags = lambda: (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)  # noqa: E731
    original = flags()
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True  # torch's conv default
        _tf32_enter(False)  # runner A (fp32 means fp32)
        _tf32_enter(True)  # runner B asks for TF32
        assert flags() == (True, True)
        _tf32_apply(False)  # A's infer re-applies its own choice
        assert flags() == (False, False)
        _tf32_exit()  # A deactivates first: B is still active, nothing restored yet
        assert _TF32["active"] == 1
        _tf32_exit()  # B, the last one: the flags from before A
        assert flags() == (True, True) and _TF32["active"] == 0
        _tf32_exit()  # an extra exit is harmless
        assert flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = original
