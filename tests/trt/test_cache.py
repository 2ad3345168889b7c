"""Engine cache: private folder, keys over everything an engine depends on, manifests, invalidation.

Also the cache side of native TensorRT's build_or_load (hit, deserialization failure -> rebuild) with a minimal
stand-in for the ``tensorrt`` module: it exercises deployinc's decisions, not TensorRT.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import types

import numpy as np
import pytest

from deployinc.errors import BadInputError
from deployinc.trt.cache import (
    ENV_CACHE_DIR,
    EngineCache,
    EngineKey,
    default_cache_dir,
    ensure_private_dir,
    onnx_fingerprint,
)


def tiny_model(value: float = 1.0, out_channels: int = 4):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((out_channels, 3, 3, 3), value, np.float32), "w")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_channels, 6, 6])
    g = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["y"], name="conv")], "g", [x], [y], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def key(**kw) -> EngineKey:
    base = dict(
        onnx_sha256="a" * 64,
        trt_version="10.8.0",
        compute_capability="9.0",
        builder_flags={"precision": "fp16", "builder_optimization_level": 3, "strongly_typed": False},
        profiles=[{"input": {"min": [1, 3, 8, 8], "opt": [8, 3, 8, 8], "max": [32, 3, 8, 8]}}],
        deployinc_version="0.1.0",
    )
    base.update(kw)
    return EngineKey(**base)


# folder ------------------------------------------------------------------------------------------------------------


def test_default_cache_dir_order(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_CACHE_DIR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "deployinc"
    assert not str(default_cache_dir()).startswith("/tmp/deployinc")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "deployinc"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "deployinc"
    monkeypatch.setenv(ENV_CACHE_DIR, str(tmp_path / "explicit"))
    assert default_cache_dir() == tmp_path / "explicit"


def test_private_dir_created_0700_and_repaired(tmp_path):
    d, warnings = ensure_private_dir(tmp_path / "a" / "cache")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700 and warnings == []
    os.chmod(d, 0o755)
    d, warnings = ensure_private_dir(d)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert warnings and "0755" in warnings[0] and "repaired" in warnings[0]


def test_private_dir_refuses_symlink_and_file(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(BadInputError, match="symlink"):
        ensure_private_dir(tmp_path / "link")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="not a directory"):
        ensure_private_dir(tmp_path / "file")


# keys ----------------------------------------------------------------------------------------------------------------


def test_key_digest_is_stable_and_order_independent():
    a = key(builder_flags={"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}})
    b = key(builder_flags={"z": {"a": 2, "b": 1}, "y": (1, 2), "x": 1})
    assert a.digest() == b.digest() and len(a.digest()) == 64
    assert EngineKey.from_dict(a.to_dict()).digest() == a.digest()


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "b" * 64},
        {"trt_version": "10.9.0"},
        {"compute_capability": "8.6"},
        {"builder_flags": {"precision": "fp32", "builder_optimization_level": 3, "strongly_typed": False}},
        {"builder_flags": {"precision": "fp16", "builder_optimization_level": 5, "strongly_typed": False}},
        {"builder_flags": {"precision": "fp16", "builder_optimization_level": 3, "strongly_typed": True}},
        {"profiles": [{"input": {"min": [1, 3, 8, 8], "opt": [8, 3, 8, 8], "max": [64, 3, 8, 8]}}]},
        {"deployinc_version": "0.2.0"},
    ],
)
def test_every_key_field_changes_the_digest(change):
    assert key(**change).digest() != key().digest()


def test_key_refuses_unhashable_values():
    with pytest.raises(ValueError, match="not allowed"):
        key(builder_flags={"obj": object()}).digest()
    with pytest.raises(ValueError, match="non-finite"):
        key(builder_flags={"f": float("nan")}).digest()


def test_fingerprint_covers_bytes_and_external_data(tmp_path):
    from deployinc.io import save_onnx

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    save_onnx(tiny_model(1.0), a)
    save_onnx(tiny_model(2.0), b)  # same structure, other weights: must not share an engine (ORT #6455)
    assert onnx_fingerprint(a) != onnx_fingerprint(b)
    ext = tmp_path / "ext" / "m.onnx"
    ext.parent.mkdir()
    save_onnx(tiny_model(1.0, out_channels=64), ext, external_data=True)  # 6.9 kB: external
    data = ext.with_name("m.onnx.data")
    assert data.exists()
    before = onnx_fingerprint(ext)
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF
    data.write_bytes(bytes(raw))
    assert onnx_fingerprint(ext) != before


# store / lookup --------------------------------------------------------------------------------------------------------


def test_store_then_hit_private_files(tmp_path):
    cache = EngineCache(tmp_path / "c")
    k = key()
    assert cache.lookup(k).reason == "miss"
    path = cache.store(k, b"ENGINE" * 100, extra={"build_seconds": 1.5})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache.manifest_path(k)).st_mode) == 0o600
    manifest = json.loads(cache.manifest_path(k).read_text())
    assert manifest["engine_bytes"] == 600 and manifest["key"] == k.to_dict()
    found = cache.lookup(k)
    assert found.hit and found.engine == b"ENGINE" * 100 and found.warnings == []
    assert not [p for p in cache.dir.iterdir() if "deployinc-tmp" in p.name]


def test_truncated_engine_is_rebuilt_with_warning(tmp_path):
    cache = EngineCache(tmp_path)
    k = key()
    path = cache.store(k, b"x" * 1000)
    path.write_bytes(b"x" * 400)
    found = cache.lookup(k)
    assert found.engine is None and found.reason == "stale"
    assert any("truncated" in w and "400" in w and "1000" in w for w in found.warnings)
    assert not path.exists()  # removed, so the rebuild replaces it


def test_corrupt_engine_and_bad_manifest(tmp_path):
    cache = EngineCache(tmp_path)
    k = key()
    path = cache.store(k, b"y" * 64)
    path.write_bytes(b"z" * 64)
    assert any("sha256" in w for w in cache.lookup(k).warnings)
    cache.store(k, b"y" * 64)
    cache.manifest_path(k).write_text("{not json")
    assert any("unreadable" in w for w in cache.lookup(k).warnings)
    cache.store(k, b"y" * 64)
    cache.manifest_path(k).unlink()
    assert any("no manifest" in w for w in cache.lookup(k).warnings)


def test_manifest_for_another_configuration_is_rejected(tmp_path):
    cache = EngineCache(tmp_path)
    k = key()
    cache.store(k, b"e" * 10)
    m = json.loads(cache.manifest_path(k).read_text())
    m["key"]["trt_version"] = "9.3.0"
    cache.manifest_path(k).write_text(json.dumps(m))
    found = cache.lookup(k)
    assert found.engine is None
    assert any("trt_version" in w and "9.3.0" in w for w in found.warnings)


def test_engine_of_another_tensorrt_version_is_removed_with_warning(tmp_path):
    cache = EngineCache(tmp_path)
    old = key(trt_version="10.3.0")
    cache.store(old, b"old" * 10)
    other_precision = key(trt_version="10.3.0", builder_flags={"precision": "fp32"})
    cache.store(other_precision, b"o" * 10)
    found = cache.lookup(key(trt_version="10.8.0"))
    assert found.engine is None and found.reason == "stale"
    assert any("TensorRT '10.3.0'" in w for w in found.warnings)
    assert not cache.engine_path(old).exists() and not cache.manifest_path(old).exists()
    assert cache.engine_path(other_precision).exists()  # a different configuration is not stale


def test_invalidate_removes_entry(tmp_path):
    cache = EngineCache(tmp_path)
    k = key()
    cache.store(k, b"q" * 8)
    msg = cache.invalidate(k, "TensorRT could not deserialize it")
    assert "deserialize" in msg and not cache.engine_path(k).exists()


# build_or_load's cache decisions, with a stand-in tensorrt module ----------------------------------------------------


class _FakeRuntime:
    def __init__(self, logger):
        pass

    def deserialize_cuda_engine(self, data):
        return None if data.startswith(b"BAD") else types.SimpleNamespace(data=data)


def _fake_trt(version="10.8.0"):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.BuilderFlag = types.SimpleNamespace(FP16=0, INT8=1, TF32=6)
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=None: None})
    trt.Runtime = _FakeRuntime
    return trt


@pytest.fixture
def fake_trt(monkeypatch):
    trt = _fake_trt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    import deployinc.trt.engine as E

    monkeypatch.setattr(E, "compute_capability", lambda: "9.0")
    built = []

    def fake_build(trt_mod, logger, onnx_path, model, plan, profiles, level, ws, timing_root, cc):
        built.append(plan)
        return b"NEW-ENGINE", 0.25

    monkeypatch.setattr(E, "_build", fake_build)
    return built


def test_build_or_load_builds_caches_then_hits(tmp_path, fake_trt):
    from deployinc.io import save_onnx
    from deployinc.trt.engine import build_or_load

    onnx_path = tmp_path / "m.onnx"
    save_onnx(tiny_model(), onnx_path)
    first = build_or_load(onnx_path, precision="fp16", batch="1,4,8", cache_dir=tmp_path / "cache")
    assert not first.from_cache and first.build_seconds == 0.25 and len(fake_trt) == 1
    assert first.plan.set_flags == ("FP16",) and not first.plan.strongly_typed
    second = build_or_load(onnx_path, precision="fp16", batch="1,4,8", cache_dir=tmp_path / "cache")
    assert second.from_cache and second.engine is not None and len(fake_trt) == 1
    third = build_or_load(onnx_path, precision="fp32", batch="1,4,8", cache_dir=tmp_path / "cache")
    assert not third.from_cache and third.key.digest() != first.key.digest()


def test_undeserializable_cached_engine_is_rebuilt_with_warning(tmp_path, fake_trt):
    from deployinc.io import save_onnx
    from deployinc.trt.cache import EngineCache
    from deployinc.trt.engine import build_or_load

    onnx_path = tmp_path / "m.onnx"
    save_onnx(tiny_model(), onnx_path)
    first = build_or_load(onnx_path, precision="fp32", cache_dir=tmp_path / "cache")
    # Same bytes length and manifest, but content TensorRT refuses (e.g. written by another TensorRT build).
    cache = EngineCache(tmp_path / "cache")
    cache.store(first.key, b"BAD-ENGINE")
    seen: list[str] = []
    again = build_or_load(onnx_path, precision="fp32", cache_dir=tmp_path / "cache", on_warning=seen.append)
    assert not again.from_cache and len(fake_trt) == 2
    assert any("could not deserialize" in w for w in seen)
    assert cache.lookup(first.key).engine == b"NEW-ENGINE"


def test_engine_from_another_tensorrt_version_is_rebuilt(tmp_path, fake_trt, monkeypatch):
    from deployinc.io import save_onnx
    from deployinc.trt.engine import build_or_load

    onnx_path = tmp_path / "m.onnx"
    save_onnx(tiny_model(), onnx_path)
    build_or_load(onnx_path, precision="fp32", cache_dir=tmp_path / "cache")
    sys.modules["tensorrt"].__version__ = "10.9.0"  # the user upgraded TensorRT
    seen: list[str] = []
    again = build_or_load(onnx_path, precision="fp32", cache_dir=tmp_path / "cache", on_warning=seen.append)
    assert not again.from_cache
    assert any("10.8.0" in w and "10.9.0" in w for w in seen)
