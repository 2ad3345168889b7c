"""The environment record (deployinc.core.env): versions, providers, thread counts, CPU; cheap and torch-free."""

from __future__ import annotations

import json
import subprocess
import sys


def test_environment_record_is_complete_and_serialisable():
    from deployinc.core.env import environment

    env = environment(ort_threads=2)
    json.dumps(env)
    assert env["versions"]["deployinc"] and env["versions"]["numpy"]
    assert "onnxruntime" in env["versions"] or "onnxruntime-gpu" in env["versions"]
    assert "CPUExecutionProvider" in env["ort_providers"]["available"]
    assert env["cpu"]["model"] and env["cpu"]["logical_cpus"] >= 1 and env["cpu"]["usable_cpus"] >= 1
    assert env["threads"]["ort_intra_op"] == 2 and isinstance(env["threads"]["env"], dict)
    assert env["python"] and env["platform"] and env["host"]
    assert env["gpu_problem"] is None or isinstance(env["gpu_problem"], str)


def test_environment_does_not_import_torch():
    code = "import sys, deployinc.core.env as e; e.environment(); print('TORCH', 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TORCH False" in out


def test_torch_threads_recorded_when_torch_is_loaded():
    import torch

    from deployinc.core.env import thread_counts

    torch.set_num_threads(1)
    try:
        assert thread_counts()["torch_intra_op"] == 1
    finally:
        torch.set_num_threads(2)


def test_speed_flags_keep_only_the_int8_and_bf16_features_in_a_fixed_order(monkeypatch):
    from deployinc.core import env

    monkeypatch.setattr(env, "cpu_flags", lambda: {"sse2", "amx_bf16", "avx512_vnni", "amx_int8", "avx2"})
    assert env.speed_flags() == ["avx512_vnni", "amx_int8", "amx_bf16"]
    monkeypatch.setattr(env, "cpu_flags", lambda: {"sse2", "avx2"})
    assert env.speed_flags() == []
    monkeypatch.setattr(env, "cpu_flags", lambda: {"avx_vnni", "avx512_bf16"})
    rec = env.environment()
    assert rec["cpu"]["int8_flags"] == ["avx_vnni"] and rec["cpu"]["bf16_flags"] == ["avx512_bf16"]
