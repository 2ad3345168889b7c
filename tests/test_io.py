"""deployinc.io: atomic writes, weights-only checkpoint loading, checked ONNX reading and writing."""

from __future__ import annotations

import os
import pickle

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from deployinc import io as dio
from deployinc.errors import BadInputError, OnnxFileError, OutputExistsError, WeightsError

from .conftest import files_in


# atomic writes ----------------------------------------------------------------------------------------------------


def test_atomic_write_creates_and_refuses_overwrite(tmp_path):
    p = tmp_path / "a.bin"
    dio.atomic_write_bytes(p, b"one")
    assert p.read_bytes() == b"one"
    with pytest.raises(OutputExistsError, match="exists"):
        dio.atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"one"
    dio.atomic_write_bytes(p, b"two", force=True)
    assert p.read_bytes() == b"two"
    assert files_in(tmp_path) == ["a.bin"]


def test_exception_mid_write_keeps_old_file_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with dio.atomic_open(p, force=True) as f:
            f.write(b"half")
            raise RuntimeError("killed")
    assert p.read_bytes() == b"old"
    assert files_in(tmp_path) == ["model.onnx"]


def test_missing_or_unwritable_directory(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        dio.atomic_write_bytes(tmp_path / "nope" / "x.onnx", b"x")
    with pytest.raises(BadInputError, match="cannot write to directory"):
        dio.atomic_write_bytes("/proc/deployinc-test.onnx", b"x")


def test_stale_named_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / f".x.onnx.deployinc-tmp-{2**22 + 12345}-abcd1234"
    dead.write_bytes(b"junk")
    mine = tmp_path / f".x.onnx.deployinc-tmp-{os.getpid()}-abcd1234"
    mine.write_bytes(b"in progress")
    dio.atomic_write_bytes(tmp_path / "x.onnx", b"new")
    assert not dead.exists() and mine.exists()


def test_write_many_replaces_in_order(tmp_path):
    dio.atomic_write_many([(tmp_path / "m.onnx.data", b"D"), (tmp_path / "m.onnx", b"M")])
    assert (tmp_path / "m.onnx").read_bytes() == b"M" and (tmp_path / "m.onnx.data").read_bytes() == b"D"


# checkpoints ------------------------------------------------------------------------------------------------------


def _sd():
    return torch.nn.Linear(3, 2).state_dict()


@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "module_prefix"])
def test_load_checkpoint_state_dict_variants(tmp_path, wrap):
    sd = _sd()
    obj = sd
    if wrap == "module_prefix":
        obj = {f"module.{k}": v for k, v in sd.items()}
    elif wrap:
        obj = {wrap: sd, "epoch": 3}
    p = tmp_path / "w.pt"
    torch.save(obj, p)
    loaded = dio.load_checkpoint(p)
    assert set(loaded) == {"weight", "bias"}
    assert torch.equal(loaded["weight"], sd["weight"])


def test_load_safetensors(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "w.safetensors"
    save_file(_sd(), str(p))
    assert set(dio.load_checkpoint(p)) == {"weight", "bias"}


def test_corrupt_safetensors(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match="corrupt"):
        dio.load_checkpoint(p)


class _Payload:
    """Unpickling this runs `touch <marker>`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_code_payload_is_refused_and_not_run(tmp_path, fmt, monkeypatch):
    marker = tmp_path / "PWNED"
    p = tmp_path / "evil.pt"
    if fmt == "torch_zip":
        torch.save({"weight": torch.zeros(1), "x": _Payload(marker)}, p)
    else:
        p.write_bytes(pickle.dumps(_Payload(marker)))
    # Even with the variable that turns weights-only loading off for callers that do not ask for it.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(WeightsError, match="refused by the weights-only loader|corrupt"):
        dio.load_checkpoint(p)
    assert not marker.exists()


def test_pickled_whole_model_gets_state_dict_hint(tmp_path):
    p = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), p)
    with pytest.raises(WeightsError) as info:
        dio.load_checkpoint(p)
    assert "state_dict" in info.value.hint


def test_truncated_empty_missing_and_not_state_dict(tmp_path):
    p = tmp_path / "w.pt"
    torch.save(_sd(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=f"{p}.*corrupt"):
        dio.load_checkpoint(p)
    p.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        dio.load_checkpoint(p)
    with pytest.raises(WeightsError, match="does not exist"):
        dio.load_checkpoint(tmp_path / "nope.pt")
    torch.save({"epoch": 3, "lr": 0.1}, p)
    with pytest.raises(WeightsError, match="not a state dict"):
        dio.load_checkpoint(p)


def test_save_checkpoint_round_trip_is_weights_only_loadable(tmp_path):
    p = tmp_path / "ckpt.pt"
    dio.save_checkpoint(p, {"state_dict": _sd(), "record": {"epochs": 2, "acc": 0.9}})
    sd, raw = dio.load_checkpoint(p, with_extra=True)
    assert raw["record"]["epochs"] == 2 and "weight" in sd


# ONNX files -------------------------------------------------------------------------------------------------------


def _model(big: bool = False):
    w = np.arange(4096 if big else 4, dtype=np.float32)
    init = numpy_helper.from_array(w, "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [len(w)])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(w)])
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [init])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_round_trip_and_external_data(tmp_path):
    p = tmp_path / "m.onnx"
    written = dio.save_onnx(_model(big=True), p, external_data=True)
    assert [w.name for w in written] == ["m.onnx.data", "m.onnx"]
    f = dio.load_onnx(p)
    assert f.has_external_data
    assert numpy_helper.to_array(f.model.graph.initializer[0])[-1] == 4095
    # A re-export without external data starts fresh: the stale .data file goes.
    dio.save_onnx(_model(big=True), p, force=True)
    assert not (tmp_path / "m.onnx.data").exists()


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "Git LFS pointer"),
        (b"\xff\xfe this is not protobuf at all \x00\x01", "not a valid ONNX model"),
    ],
)
def test_bad_onnx_files(tmp_path, content, match):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(OnnxFileError, match=match):
        dio.load_onnx(p)


def test_truncated_onnx(tmp_path):
    p = tmp_path / "m.onnx"
    dio.save_onnx(_model(big=True), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(OnnxFileError):
        dio.load_onnx(p)


def _with_location(tmp_path, location: str):
    p = tmp_path / "m.onnx"
    dio.save_onnx(_model(big=True), p, external_data=True, force=True)
    m = onnx.load_model(str(p), load_external_data=False)
    for e in m.graph.initializer[0].external_data:
        if e.key == "location":
            e.value = location
    p.write_bytes(m.SerializeToString())
    return p


def test_external_data_escaping_the_folder_is_refused(tmp_path):
    for loc, match in [("/etc/passwd", "absolute"), ("../outside.data", "leaves the model's folder")]:
        with pytest.raises(OnnxFileError, match=match):
            dio.load_onnx(_with_location(tmp_path, loc))


def test_external_data_symlink_and_hardlink_are_refused(tmp_path):
    p = _with_location(tmp_path, "m.onnx.data")
    real = tmp_path / "m.onnx.data"
    target = tmp_path / "elsewhere.bin"
    os.replace(real, target)
    os.symlink(target, real)
    with pytest.raises(OnnxFileError, match="symlink"):
        dio.load_onnx(p)
    real.unlink()
    os.link(target, real)
    with pytest.raises(OnnxFileError, match="hardlink"):
        dio.load_onnx(p)


def test_external_data_missing_or_short_names_the_tensor(tmp_path):
    p = _with_location(tmp_path, "m.onnx.data")
    data = tmp_path / "m.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(OnnxFileError, match="'w' is shorter than declared"):
        dio.load_onnx(p)
    data.unlink()
    with pytest.raises(OnnxFileError, match="of tensor 'w' is missing"):
        dio.load_onnx(p)
