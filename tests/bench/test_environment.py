"""bench's environment record: the GPU fields nvidia-smi gives in its lines, thread settings, the CPU line.

nvidia-smi and nvpmodel are faked on PATH, so these run anywhere.
"""

from __future__ import annotations

import os

import pytest

from deployinc.bench.environment import bench_environment, environment_lines
from deployinc.core import hardware
from tests.core.test_hardware import _fake_tool


def test_nvidia_smi_fields(tmp_path, monkeypatch):
    _fake_tool(tmp_path, "nvidia-smi", 'echo "NVIDIA H100 80GB HBM3, 570.86.15, 81559, 1980, 2619, 1980, 2619, [N/A], 700.00, Enabled, P0, 9.0"\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gpus = hardware.nvidia_gpus()
    assert gpus == [
        {
            "name": "NVIDIA H100 80GB HBM3", "driver_version": "570.86.15", "memory.total": "81559", "clocks.sm": "1980",
            "clocks.mem": "2619", "clocks.max.sm": "1980", "clocks.max.mem": "2619", "power.limit": "700.00",
            "persistence_mode": "Enabled", "pstate": "P0", "compute_cap": "9.0",
        }
    ]  # fmt: skip
    env = bench_environment(2)
    text = "\n".join(environment_lines(env))
    assert "NVIDIA H100 80GB HBM3" in text and "driver 570.86.15" in text and "SM clock 1980/1980 MHz" in text


def test_thread_record_and_cpu():
    pytest.importorskip("torch")
    import torch

    torch.set_num_threads(2)
    env = bench_environment(2)
    assert env["threads"]["torch_intra_op"] == 2 and env["threads"]["ort_intra_op"] == 2
    assert env["cpu_bench"]["usable_cpus"] >= 1 and env["cpu_bench"]["model"]
    assert "versions" in env and "onnxruntime-gpu" in env["versions"] or "onnxruntime" in env["versions"]


def test_cpu_line_names_the_int8_and_bf16_features():
    env = {"cpu_bench": {"model": "Some CPU", "usable_cpus": 2, "logical_cpus": 4}, "cpu": {"int8_flags": ["amx_int8", "avx512_vnni"], "bf16_flags": []}}
    first = environment_lines(env)[0]
    assert first == "CPU: Some CPU, 2 usable of 4 logical CPUs; int8 amx_int8, avx512_vnni"
    env["cpu"] = {}
    assert environment_lines(env)[0] == "CPU: Some CPU, 2 usable of 4 logical CPUs"
