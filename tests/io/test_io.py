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

from tests.conftest import files_in


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


# races, units, full disks (hardening round two) --------------------------------------------------------------------


def test_a_target_that_appears_while_writing_is_not_replaced_without_force(tmp_path, monkeypatch):
    from deployinc.io import atomic as A

    p = tmp_path / "out.onnx"
    real_finish = A._Pending.finish

    def finish_after_rival(self):
        name = real_finish(self)
        p.write_bytes(b"rival")  # the other writer lands between our check and our rename
        return name

    monkeypatch.setattr(A._Pending, "finish", finish_after_rival)
    with pytest.raises(OutputExistsError, match="another process wrote it meanwhile"):
        dio.atomic_write_bytes(p, b"mine")
    assert p.read_bytes() == b"rival" and files_in(tmp_path) == ["out.onnx"]


_RACER = """
import sys, time
from pathlib import Path
from deployinc.io import atomic_write_bytes
from deployinc.errors import OutputExistsError
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.0005)
try:
    atomic_write_bytes(sys.argv[1], sys.argv[3].encode() * 200000)
    print("wrote")
except OutputExistsError:
    print("exists")
"""


def test_two_writers_racing_for_one_new_file_exactly_one_wins_20_of_20(tmp_path):
    import subprocess
    import sys
    import time

    for trial in range(20):
        out, go = tmp_path / f"t{trial}.onnx", tmp_path / f"go{trial}"
        procs = [
            subprocess.Popen([sys.executable, "-c", _RACER, str(out), str(go), tag], stdout=subprocess.PIPE, text=True)
            for tag in ("A", "B")
        ]
        time.sleep(0.6)  # both are waiting at the line
        go.write_text("")
        said = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
        assert said == ["exists", "wrote"], f"trial {trial}: {said}"
        data = out.read_bytes()
        assert data in (b"A" * 200000, b"B" * 200000)  # one writer's complete file, never a mix
    assert not [n for n in files_in(tmp_path) if n.startswith(".")]


def test_a_symlink_counts_as_existing_even_when_dangling(tmp_path):
    link = tmp_path / "out.onnx"
    link.symlink_to(tmp_path / "nowhere.onnx")
    with pytest.raises(OutputExistsError, match="symlink"):
        dio.atomic_write_bytes(link, b"x")
    assert link.is_symlink() and not (tmp_path / "nowhere.onnx").exists()
    dio.atomic_write_bytes(link, b"x", force=True)  # --force replaces the link itself, not what it points at
    assert not link.is_symlink() and link.read_bytes() == b"x" and not (tmp_path / "nowhere.onnx").exists()


def test_write_many_puts_the_model_in_place_last(tmp_path, monkeypatch):
    from deployinc.io import atomic as A

    order: list[str] = []
    real_replace, real_link = A.os.replace, A.os.link

    def replace(src, dst, *a, **k):
        order.append(Path(dst).name)
        return real_replace(src, dst, *a, **k)

    def link(src, dst, *a, **k):
        if not Path(dst).name.startswith("."):
            order.append(Path(dst).name)
        return real_link(src, dst, *a, **k)

    from pathlib import Path

    monkeypatch.setattr(A.os, "replace", replace)
    monkeypatch.setattr(A.os, "link", link)
    dio.save_onnx(_model(big=True), tmp_path / "m.onnx", external_data=True, sidecars=[(tmp_path / "m.json", b"{}")])
    assert order == ["m.onnx.data", "m.json", "m.onnx"]
    order.clear()
    dio.save_onnx(_model(big=True), tmp_path / "m.onnx", external_data=True, sidecars=[(tmp_path / "m.json", b"{}")], force=True)
    assert [n for n in order if not n.startswith(".")] == ["m.onnx.data", "m.json", "m.onnx"]


def _fail_on(monkeypatch, name: str, err: int):
    import errno as _errno

    from deployinc.io import atomic as A

    real_replace, real_link = A.os.replace, A.os.link

    failed: list[str] = []

    def boom(src, dst, *a, real, **k):
        if str(dst).endswith(name) and not failed:  # once: the rollback itself must be able to run
            failed.append(str(dst))
            raise OSError(err, _errno.errorcode[err] if err in _errno.errorcode else "error")
        return real(src, dst, *a, **k)

    monkeypatch.setattr(A.os, "replace", lambda s, d, *a, **k: boom(s, d, *a, real=real_replace, **k))
    monkeypatch.setattr(A.os, "link", lambda s, d, *a, **k: boom(s, d, *a, real=real_link, **k))


def test_a_failure_while_placing_the_unit_puts_every_old_file_back(tmp_path, monkeypatch):
    import errno

    files = {"q.onnx.data": b"old data", "q.calibration.json": b"old report", "q.onnx": b"old model"}
    for n, b in files.items():
        (tmp_path / n).write_bytes(b)
    _fail_on(monkeypatch, "q.onnx", errno.ENOSPC)  # data and report are placed, then the disk is full
    with pytest.raises(BadInputError, match="no space left.*nothing was replaced"):
        dio.atomic_write_many(
            [(tmp_path / "q.onnx.data", b"new data"), (tmp_path / "q.calibration.json", b"new report"), (tmp_path / "q.onnx", b"new model")],
            force=True,
        )
    assert {n: (tmp_path / n).read_bytes() for n in files} == files
    assert files_in(tmp_path) == sorted(files)


def test_a_unit_that_cannot_complete_leaves_no_new_file(tmp_path, monkeypatch):
    (tmp_path / "q.onnx").write_bytes(b"someone else's")
    with pytest.raises(OutputExistsError):
        dio.atomic_write_many([(tmp_path / "q.onnx.data", b"D"), (tmp_path / "q.onnx", b"M")])
    assert files_in(tmp_path) == ["q.onnx"]


def test_enospc_while_writing_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    p = tmp_path / "x.onnx"
    p.write_bytes(b"old")
    with pytest.raises(BadInputError, match="no space left"):
        with dio.atomic_open(p, force=True) as f:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert p.read_bytes() == b"old" and files_in(tmp_path) == ["x.onnx"]


def test_working_folders_of_killed_runs_are_swept_by_the_next_run(tmp_path):
    dead = 2**22 + 4321
    beside = tmp_path / f".q.onnx.deployinc-work-{dead}-abcd"
    beside.mkdir()
    (beside / "model.onnx").write_bytes(b"x" * 100)
    with dio.work_dir(tmp_path / "q.onnx") as w:
        assert w.is_dir() and w.parent == tmp_path
    assert not beside.exists() and files_in(tmp_path) == []
    root = dio.scratch_root()
    assert (root.stat().st_mode & 0o777) == 0o700
    stale = root / f"int8.deployinc-work-{dead}-beef"
    stale.mkdir()
    with dio.scratch_dir("int8") as s:
        assert s.parent == root
    assert not stale.exists() and not s.exists()
