"""The int8 recipe per CPU (deployinc.precision.recipe): the CPU's int8 path from its flags, and the QDQ settings."""

from __future__ import annotations

import pytest

from deployinc.errors import BadInputError
from deployinc.precision.recipe import CPU_PATHS, cpu_int8_path, recipe_for, recipe_named

# /proc/cpuinfo flag sets of the machines this project runs on, trimmed to what matters.
ZEN3 = {"sse4_2", "avx", "avx2", "fma", "f16c"}  # AMD EPYC Zen 3: AVX2 only
ZEN4 = ZEN3 | {"avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}  # AMD EPYC Zen 4
SPR = ZEN3 | {"avx512f", "avx512bw", "avx512_vnni", "amx_int8", "amx_bf16", "amx_tile"}  # Intel Xeon Sapphire Rapids
SKX = ZEN3 | {"avx512f", "avx512bw"}  # Intel Skylake-SP: AVX-512 without VNNI
ADL = ZEN3 | {"avx_vnni"}  # Intel Alder Lake: AVX-VNNI


@pytest.mark.parametrize(
    ("flags", "machine", "path"),
    [(ZEN3, "x86_64", "avx2"), (ZEN4, "x86_64", "avx512-vnni"), (SPR, "x86_64", "amx-int8"), (SKX, "x86_64", "avx512"),
     (ADL, "x86_64", "avx-vnni"), ({"asimd", "asimddp"}, "aarch64", "arm-dot"), ({"asimd"}, "aarch64", "generic"), (set(), "x86_64", "generic")],
)  # fmt: skip
def test_the_int8_path_from_the_cpu_flags(flags, machine, path):
    assert cpu_int8_path(flags, machine) == path and path in CPU_PATHS


def test_without_vnni_the_weights_are_7_bit():
    for path in ("avx2", "avx512"):
        r = recipe_for("cpu", path)
        assert r.name == "u8s8-reduce-range" and r.reduce_range and r.activation == "uint8" and "saturat" in r.reason


def test_a_onednn_cap_below_vnni_chooses_7_bit_weights_and_says_why(monkeypatch):
    """On a VNNI machine, ONEDNN_MAX_CPU_ISA=AVX2 puts OpenVINO on the saturating path: the detected recipe follows
    it and names the cap; an explicit path is taken as given."""
    from deployinc.core import env

    monkeypatch.setattr(env, "cpu_flags", lambda: set(ZEN4))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    r = recipe_for("cpu")
    assert (r.name, r.cpu_path) == ("u8s8-reduce-range", "avx2") and "ONEDNN_MAX_CPU_ISA=AVX2 leaves OpenVINO's oneDNN kernels the avx2 path" in r.reason
    assert recipe_for("cpu", "avx512-vnni").name == "u8s8"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert recipe_for("cpu").name == "u8s8"


def test_with_vnni_amx_or_dot_product_full_8_bit():
    for path in ("avx512-vnni", "avx-vnni", "amx-int8", "arm-dot"):
        r = recipe_for("cpu", path)
        assert r.name == "u8s8" and not r.reduce_range and not r.symmetric_activations


def test_tensorrt_is_symmetric_whatever_the_cpu():
    for path in ("avx2", "amx-int8"):
        r = recipe_for("tensorrt", path)
        assert r.name == "s8s8" and r.symmetric_activations and r.activation == "int8" and not r.reduce_range


def test_the_recipe_is_described_and_recorded():
    r = recipe_for("cpu", "avx2", per_channel=False)
    assert r.describe() == "u8s8-reduce-range: uint8 activations, int8 weights with reduce_range (7-bit), per-tensor"
    d = r.to_dict()
    assert d["cpu_path"] == "avx2" and d["reduce_range"] is True and d["per_channel"] is False


def test_named_recipes_and_an_unknown_one():
    assert recipe_named("s8s8", "avx2").symmetric_activations
    assert recipe_named("u8s8-reduce-range", "amx-int8").reduce_range
    with pytest.raises(BadInputError, match="unknown int8 recipe"):
        recipe_named("u4s4")


def test_quantize_applies_the_recipe(tmp_path):
    """reduce_range halves the weights' range: every int8 weight lies in [-64, 63]."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from deployinc.core.images import natural_images
    from deployinc.precision.int8 import quantize_int8
    from tests.precision.test_fallback import MEAN, STD, export, planted_net

    path = export(planted_net(), tmp_path / "p.onnx")
    cal = natural_images(8, (3, 32, 32), MEAN, STD, seed=1)
    for name, bound in (("u8s8-reduce-range", 64), ("u8s8", 128)):
        q = quantize_int8(path, cal, target="cpu", recipe=recipe_named(name, "avx2")).model
        w = [numpy_helper.to_array(t) for t in q.graph.initializer if t.name.endswith("weight_quantized")]
        assert w and all(a.dtype == np.int8 for a in w)
        peak = max(int(np.abs(a.astype(np.int32)).max()) for a in w)
        assert (peak <= bound) and (name == "u8s8-reduce-range" or peak > 64), (name, peak)
        meta = {p.key: p.value for p in q.metadata_props}
        assert name in meta["deployinc.int8"]
    assert onnx.checker.check_model(q) is None
