"""deployinc.core.hardware: what nvidia-smi and a Jetson's files say, read without raising.

nvidia-smi and nvpmodel are faked on PATH, so these run anywhere.
"""

from __future__ import annotations

import os
import stat

from deployinc.core import hardware


def _fake_tool(tmp_path, name: str, body: str) -> None:
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)


def test_no_nvidia_smi_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert hardware.nvidia_gpus() is None


def test_jetson_power_mode(tmp_path, monkeypatch):
    _fake_tool(tmp_path, "nvpmodel", 'echo "NV Power Mode: MAXN"\necho 0\n')
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    files = {"/etc/nv_tegra_release": "# R36 (release), REVISION: 4.0", "/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00"}
    monkeypatch.setattr(hardware, "_read", lambda p: files.get(str(p)))
    j = hardware.jetson()
    assert j is not None
    assert j["model"] == "NVIDIA Jetson AGX Orin Developer Kit" and j["l4t"].startswith("# R36")
    assert j["power_mode"] == "NV Power Mode: MAXN 0"


def test_not_a_jetson(monkeypatch):
    monkeypatch.setattr(hardware, "_read", lambda p: None)
    assert hardware.jetson() is None
