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


def test_the_machine_record_is_typed_and_is_the_environments_cpu_block(monkeypatch):
    from deployinc.core import env

    monkeypatch.setattr(env, "cpu_flags", lambda: {"avx2", "amx_bf16", "avx512_vnni"})
    monkeypatch.setattr(env, "gpu_name", lambda: None)
    m = env.machine()
    assert m.int8_flags == ("avx512_vnni",) and m.bf16_flags == ("amx_bf16",) and m.speed_flags == ["avx512_vnni", "amx_bf16"]
    assert m.usable_cpus and m.usable_cpus >= 1 and m.versions["deployinc"] and m.gpu is None
    rec = env.environment()
    assert rec["cpu"] == m.cpu_record() and rec["gpu"] is None and rec["host"] == m.host and rec["machine"] == m.arch


def test_the_machine_slug_names_the_cpu_family_its_cpus_and_the_gpu():
    from deployinc.core.env import Machine

    amd = Machine("AMD EPYC 7B13", 4, 2)
    assert (amd.slug(), amd.slug(cpus=False), amd.slug(accelerator=True)) == ("amd-epyc-2cpu", "amd-epyc", "cpu-amd-epyc-2cpu")
    xeon = Machine("Intel(R) Xeon(R) CPU @ 2.20GHz", 2, 2)
    assert xeon.slug() == "intel-xeon-2cpu"
    h100 = Machine("AMD EPYC 9454 48-Core Processor", 96, 16, gpu="NVIDIA H100 80GB HBM3")
    assert h100.slug(accelerator=True) == "nvidia-h100-80gb-hbm3-amd-epyc-16cpu" and h100.slug() == "amd-epyc-16cpu"
    assert Machine("", None, None).slug() == "cpu-1cpu"


def test_the_gpu_is_a_jetsons_board_or_nvidia_smis_first_gpu(monkeypatch):
    from deployinc.core import env, hardware

    monkeypatch.setattr(hardware, "jetson", lambda: None)
    monkeypatch.setattr(hardware, "nvidia_gpus", lambda: [{"name": "NVIDIA L4"}, {"name": "NVIDIA A10"}])
    assert env.gpu_name() == "NVIDIA L4"
    monkeypatch.setattr(hardware, "nvidia_gpus", lambda: None)
    assert env.gpu_name() is None
    monkeypatch.setattr(hardware, "jetson", lambda: {"model": "NVIDIA Jetson AGX Orin"})
    assert env.gpu_name() == "NVIDIA Jetson AGX Orin"


def test_a_onednn_cap_hides_the_features_openvino_may_not_use(monkeypatch):
    from deployinc.core import env

    hw = {"avx2", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16"}
    monkeypatch.setattr(env, "cpu_flags", lambda: set(hw))
    for var in env.ISA_CAP_VARS:
        monkeypatch.delenv(var, raising=False)
    assert env.isa_cap() is None and env.runtime_flags() == hw
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert env.isa_cap() == "ONEDNN_MAX_CPU_ISA=AVX2" and env.runtime_flags() == {"avx2"} and env.speed_flags() == []
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert env.runtime_flags() == {"avx2", "avx512bw"}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert env.speed_flags() == ["avx512_vnni"]
    m = env.machine(gpu=False)
    assert m.isa_cap == "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI" and m.cpu_record()["isa_cap"] == m.isa_cap
    assert m.features == "avx512_vnni (ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI: OpenVINO's oneDNN kernels capped there; ONNX Runtime ignores the cap)"
    for value in ("ALL", "AVX512_CORE_AMX", "no-such-isa"):  # caps nothing here, or oneDNN does not know it
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", value)
        assert env.isa_cap() is None and env.runtime_flags() == hw
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX10_1_512")  # oneDNN's current name for AVX512_CORE_FP16: AMX hidden
    assert env.isa_cap() == "ONEDNN_MAX_CPU_ISA=AVX10_1_512" and env.speed_flags() == ["avx512_vnni", "avx_vnni", "avx512_bf16"]
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "AVX2")  # oneDNN's older name
    assert env.isa_cap() == "DNNL_MAX_CPU_ISA=AVX2"
    monkeypatch.setattr(env, "cpu_flags", lambda: {"avx2", "fma"})  # a Zen 3: an AVX2 cap hides nothing it has
    assert env.isa_cap() is None and env.features_text(env.speed_flags(), env.isa_cap()) == "none"
