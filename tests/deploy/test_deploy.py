"""deployinc deploy: bad input refused before any work, the plan and the choice, a whole package from a small
model (report, manifest, Triton repository), no candidate passing, and a kill -9 resumed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from deployinc.deploy.plan import Candidate, choose, plan
from deployinc.deploy.request import DeployRequest
from deployinc.errors import BadInputError
from tests.conftest import files_in, invoke

FAST = ["--backends", "ort-cpu", "--no-compile", "--no-search", "--iters", "5", "--warmup", "1", "--samples", "4"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(path))
    return path


# --------------------------------------------------------------------------------------------------------------------
# Bad input: exit 2, one line and a hint, nothing written


@pytest.mark.parametrize(
    "args, says",
    [
        (["--precisions", "fp8"], "unknown precision 'fp8'"),
        (["--backends", "onnx-magic"], "unknown backend 'onnx-magic'"),
        (["--backends", "torch"], "eager baseline, not an artifact"),
        (["--objective", "fastest"], "unknown objective 'fastest'"),
        (["--target", "tpu"], "unknown target 'tpu'"),
        (["--require-backend", "ort-cuda"], "ort-cuda cannot run here"),
        (["--min-top1-agreement", "1.5"], "--min-top1-agreement 1.5 is above the maximum"),
        (["--batch", "0"], "--batch"),
        (["--fallback", "always"], "unknown --fallback value 'always'"),
        (["--max-accuracy-drop", "-1"], "--max-accuracy-drop"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(cli_runner, tmp_path: Path, cache: Path, args: list[str], says: str) -> None:
    os.chdir(tmp_path)
    r = invoke(cli_runner, ["deploy", "inception_cifar", *args])
    assert r.exit_code == 2, r.output
    assert says in r.output
    assert "Traceback" not in r.output
    assert "hint" in r.output.lower()
    assert not (tmp_path / "inception_cifar.deploy").exists()
    assert not list(cache.glob("deploy/*/fp32.onnx")), "no export before the options were checked"


def test_data_folder_without_images(cli_runner, tmp_path: Path, cache: Path) -> None:
    empty = tmp_path / "calib"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    r = invoke(cli_runner, ["deploy", "inception_cifar", "--data", str(empty), "--out", str(tmp_path / "p.deploy")])
    assert r.exit_code == 2 and "holds no images" in r.output, r.output
    assert not (tmp_path / "p.deploy").exists()


def test_accuracy_data_without_labels(cli_runner, tmp_path: Path, cache: Path) -> None:
    from PIL import Image

    flat = tmp_path / "val"
    flat.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(flat / "a.png")
    r = invoke(cli_runner, ["deploy", "inception_cifar", "--accuracy-data", str(flat), "--out", str(tmp_path / "p.deploy")])
    assert r.exit_code == 2 and "no class sub-folders" in r.output, r.output


def test_existing_package_without_force(cli_runner, tmp_path: Path, cache: Path) -> None:
    pkg = tmp_path / "p.deploy"
    pkg.mkdir()
    (pkg / "keep.txt").write_text("mine")
    r = invoke(cli_runner, ["deploy", "inception_cifar", "--out", str(pkg)])
    assert r.exit_code == 2 and "already exists" in r.output and "--force" in r.output, r.output
    assert files_in(pkg) == ["keep.txt"]


# --------------------------------------------------------------------------------------------------------------------
# The plan and the choice


def _problem(available: set[str]):
    return lambda b: None if b in available else f"{b} is not here"


def test_plan_cpu_without_openvino_leaves_it_out_with_the_reason() -> None:
    req = DeployRequest(model="x")
    req.check()
    cands, left, target, why = plan(req, _problem({"ort-cpu"}), bf16_native=True, cpus=2)
    assert target == "cpu" and "auto" in why
    ids = [c.id for c in cands]
    assert ids == ["fp32-ort-cpu", "fp32-ort-cpu-threads1", "fp16-ort-cpu", "int8-ort-cpu", "int8-ort-cpu-minmax", "int8-ort-cpu-threads1",
                   "int8-ort-cpu-mixed", "int8-ort-cpu-mixed-threads1"]  # fmt: skip
    assert {c.artifact for c in cands if c.precision == "int8"} == {"int8-cpu", "int8-cpu-minmax", "int8-cpu-mixed"}
    req = DeployRequest(model="x", fallback="none")
    req.check()
    assert not [c for c in plan(req, _problem({"ort-cpu"}), bf16_native=True, cpus=2)[0] if "mixed" in c.id]
    assert left == [{"backend": "ort-openvino", "reason": "ort-openvino is not here"}, {"backend": "openvino", "reason": "openvino is not here"}]


def test_plan_the_openvino_mixed_candidate_runs_the_twin_that_keeps_int8_weights() -> None:
    """OpenVINO runs a layer reading dequantized input and weights in int8 even when its output stays float; ORT
    computes it in float. The mixed candidate of each runs the form its runtime is fastest on."""
    req = DeployRequest(model="x")
    req.check()
    cands, _, _, _ = plan(req, _problem({"ort-cpu", "openvino"}), bf16_native=True, cpus=2)
    mixed = {c.id: c.artifact for c in cands if "mixed" in c.id}
    assert mixed == {"int8-ort-cpu-mixed": "int8-cpu-mixed", "int8-ort-cpu-mixed-threads1": "int8-cpu-mixed", "int8-openvino-mixed": "int8-cpu-mixed-qdq",
                     "int8-openvino-mixed-float-bf16": "int8-cpu-mixed-qdq-bf16"}  # its set made to hold in that form  # fmt: skip
    assert [c.id for c in cands if c.backend == "openvino" and "mixed" in c.id] == ["int8-openvino-mixed", "int8-openvino-mixed-float-bf16"]  # ids unchanged


def test_plan_bf16_only_where_the_cpu_has_it() -> None:
    req = DeployRequest(model="x", precisions=["fp32", "bf16"], search=False)
    req.check()
    cands, _, _, _ = plan(req, _problem({"ort-cpu", "ort-openvino"}), bf16_native=True, cpus=1)
    assert [c.id for c in cands] == ["fp32-ort-cpu", "fp32-ort-openvino", "bf16-ort-openvino"]
    cands, left, _, _ = plan(req, _problem({"ort-cpu", "ort-openvino"}), bf16_native=False, cpus=1)
    assert "bf16-ort-openvino" not in [c.id for c in cands]
    assert any("no native bf16" in d["reason"] for d in left)


def test_plan_says_a_onednn_cap_hid_the_cpus_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    from deployinc.deploy import plan as P

    monkeypatch.setattr(P, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    monkeypatch.setattr(P, "isa_cap", lambda: "ONEDNN_MAX_CPU_ISA=AVX2")
    req = DeployRequest(model="x", precisions=["fp32", "bf16"], search=False)
    req.check()
    _, left, _, why = plan(req, _problem({"ort-cpu", "openvino"}), bf16_native=False, cpus=1)
    assert why == "auto: ORT CUDA cannot run here: ort-cuda is not here", why  # the target's reason, not the bf16 one
    assert {"backend": "openvino", "reason": "bf16: ONEDNN_MAX_CPU_ISA=AVX2 hides this CPU's native bf16 from OpenVINO; it would be emulated"} in left


def test_plan_auto_picks_cuda_where_it_runs_and_int8_goes_to_tensorrt_symmetric() -> None:
    req = DeployRequest(model="x")
    req.check()
    cands, left, target, _ = plan(req, _problem({"ort-cpu", "ort-cuda", "ort-trt"}), bf16_native=False, cpus=8)
    assert target == "cuda"
    ids = [c.id for c in cands]
    assert "fp32-ort-cuda" in ids and "fp32-ort-cuda-cuda_graph" in ids and "fp16-ort-trt" in ids
    assert {c.artifact for c in cands if c.precision == "int8"} == {"int8-trt", "int8-trt-minmax"}
    assert [d["backend"] for d in left] == ["trt-engine"]


def test_plan_listed_backend_that_cannot_run_is_bad_input() -> None:
    req = DeployRequest(model="x", backends=["ort-cuda"])
    req.check()
    with pytest.raises(BadInputError, match="ort-cuda cannot run here"):
        plan(req, _problem({"ort-cpu"}), bf16_native=False, cpus=2)


def _res(cid: str, precision: str, backend: str, p50: float, verdict: str = "pass", agree: float = 1.0) -> dict:
    return {"id": cid, "precision": precision, "backend": backend, "verdict": verdict, "metrics": {"top1_agreement": agree},
            "timing": {"1": {"p50_ms": p50, "images_per_s": 1000 / p50}}}


def test_choose_fastest_passing_ties_to_fp32_and_requirements() -> None:
    req = DeployRequest(model="x")
    req.check()
    results = [
        _res("fp32-ort-cpu", "fp32", "ort-cpu", 10.0),
        _res("int8-ort-cpu", "int8", "ort-cpu", 4.0),
        _res("bf16-ort-openvino", "bf16", "ort-openvino", 3.0, verdict="fail"),
    ]
    pick, why = choose(results, req)
    assert pick["id"] == "int8-ort-cpu" and "fastest" in why  # the failing one is faster, and not chosen
    results.append(_res("fp32-ort-openvino", "fp32", "ort-openvino", 4.05))  # within 3 %: a tie, fp32 wins it
    pick, why = choose(results, req)
    assert pick["id"] == "fp32-ort-openvino" and "ties go to fp32" in why
    req.require_backend = "ort-cpu"
    assert choose(results, req)[0]["id"] == "int8-ort-cpu"
    req.require_backend, req.min_top1_agreement = None, 0.999
    results[1]["metrics"]["top1_agreement"] = 0.99
    results[3]["metrics"]["top1_agreement"] = 0.99
    assert choose(results, req)[0]["id"] == "fp32-ort-cpu"
    req.min_top1_agreement = 1.0
    req.require_precision = "fp16"
    pick, why = choose(results, req)
    assert pick is None and "met the requirements" in why


def test_choose_says_when_nothing_can_be_verified() -> None:
    req = DeployRequest(model="x")
    req.check()
    results = [_res("fp32-ort-cpu", "fp32", "ort-cpu", 10.0, verdict="inconclusive"), _res("fp16-ort-cpu", "fp16", "ort-cpu", 9.0, verdict="inconclusive"),
               {"id": "fp32-ort-cuda", "precision": "fp32", "backend": "ort-cuda", "verdict": "skipped"}]
    pick, why = choose(results, req)
    assert pick is None and why.startswith("no candidate can be verified: the reference gives the same output for every image")
    results[0]["verdict"] = "fail"  # one that failed: the plain reason
    assert choose(results, req) == (None, "no candidate passed")


def test_candidate_ids_are_stable() -> None:
    assert Candidate("int8", "ort-cpu", "int8-cpu", {"threads": 1}).id == "int8-ort-cpu-threads1"
    assert Candidate("fp16", "ort-cuda", "fp16", {"cuda_graph": True}).id == "fp16-ort-cuda-cuda_graph"
    assert Candidate("int8", "ort-cpu", "int8-cpu-minmax", {"calibration": "minmax"}).id == "int8-ort-cpu-minmax"


def test_simulated_tensorrt_winner_gets_the_accelerator_block(tmp_path: Path) -> None:
    import onnx
    from google.protobuf import text_format
    from onnx import TensorProto, helper

    from deployinc.deploy.package import triton_text
    from deployinc.deploy.triton import model_config_schema

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 8, 8])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y]))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    chosen = {"backend": "ort-trt", "precision": "fp16", "timing": {"1": {"images_per_s": 100.0}, "64": {"images_per_s": 5000.0}}}
    cfg = text_format.Parse(triton_text("m", path, chosen, [1, 64]), model_config_schema()())
    assert cfg.max_batch_size == 64
    assert list(cfg.dynamic_batching.preferred_batch_size) == [64]
    assert cfg.instance_group[0].kind == cfg.instance_group[0].KIND_GPU
    acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16" and acc.parameters["trt_engine_cache_enable"] == "1"


# --------------------------------------------------------------------------------------------------------------------
# A whole deploy of a small model


@pytest.mark.slow
def test_deploy_writes_a_complete_package(cli_runner, tmp_path: Path, cache: Path) -> None:
    from google.protobuf import text_format

    from deployinc.deploy.plan import score, unsteady
    from deployinc.deploy.triton import model_config_schema

    pkg = tmp_path / "ic.deploy"
    r = invoke(cli_runner, ["deploy", "inception_cifar", "--out", str(pkg), "--precisions", "fp32,fp16,int8", *FAST])
    assert r.exit_code == 0, r.output
    assert "chosen:" in r.output
    rep = json.loads((pkg / "report.json").read_text())
    ids = [c["id"] for c in rep["candidates"]]
    n = len(ids)
    assert f"[1/{n}] " in r.output and f"[{n}/{n}] " in r.output  # a progress line per candidate, then its verdict
    assert re.search(r"\n {6}(PASS|FAIL)", r.output)
    assert {"fp32-ort-cpu", "fp16-ort-cpu", "int8-ort-cpu"} <= set(ids)
    assert all(c["verdict"] in ("pass", "fail", "skipped", "error") for c in rep["candidates"])
    passing = [c for c in rep["candidates"] if c["verdict"] == "pass"]
    steady = [c for c in passing if not unsteady(c, "latency", [1])]  # unsteady timings are ranked only when nothing else passed
    fastest = max(score(c, "latency", [1]) for c in (steady or passing))
    chosen = next(c for c in rep["candidates"] if c["id"] == rep["chosen"])
    assert chosen["verdict"] == "pass" and score(chosen, "latency", [1]) >= fastest * 0.97  # the fastest, or tied with it
    for c in rep["candidates"]:
        if c["verdict"] == "skipped":  # the mixed int8 where the whole model passes: "not needed", never made
            assert "not needed" in c["reason"] and "mixed" in c["id"]
            continue
        assert c["speedup"]["1"]["vs_torch"] > 0 and c["metrics"]["cosine"] is not None
    md = (pkg / "report.md").read_text()
    assert "| candidate | verdict |" in md and rep["chosen"] in md and "Where the numbers come from" in md
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert set(manifest["files"]) == set(files_in(pkg)) - {"manifest.json"}
    for rel, entry in manifest["files"].items():
        assert hashlib.sha256((pkg / rel).read_bytes()).hexdigest() == entry["sha256"]
    assert (pkg / "model.onnx").read_bytes() == (pkg / "triton/inception_cifar/1/model.onnx").read_bytes()
    text = (pkg / "triton/inception_cifar/config.pbtxt").read_text()
    cfg = text_format.Parse(text, model_config_schema()())
    assert cfg.name == "inception_cifar" and cfg.platform == "onnxruntime_onnx"
    assert [i.name for i in cfg.input] == ["input"] and list(cfg.input[0].dims) == [3, 32, 32]
    assert list(cfg.output[0].dims) == [10] and "data_type: TYPE_FP32" in text and cfg.max_batch_size >= 1
    assert (pkg / "latency.png").read_bytes()[:4] == b"\x89PNG"
    # the same command again reuses everything, and replaces the package only with --force
    again = invoke(cli_runner, ["deploy", "inception_cifar", "--out", str(pkg), "--precisions", "fp32,fp16,int8", *FAST])
    assert again.exit_code == 2 and "already exists" in again.output
    forced = invoke(cli_runner, ["deploy", "inception_cifar", "--out", str(pkg), "--precisions", "fp32,fp16,int8", "--force", *FAST])
    assert forced.exit_code == 0, forced.output
    assert "reused from an earlier run" in forced.output
    assert set(json.loads((pkg / "report.json").read_text())["reused"]) >= {"baseline", *ids}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no working folder left behind"


def _faulty_copy(src: Path, dst: Path) -> None:
    """The same file with one convolution's weights x3: every candidate computes something else."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    name = convs[len(convs) // 2].input[1]
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 3, name))
    onnx.save(model, str(dst))


@pytest.mark.slow
def test_no_candidate_passes_exit_1_with_the_table(cli_runner, tmp_path: Path, cache: Path, zoo_onnx) -> None:
    bad = tmp_path / "bad.onnx"
    _faulty_copy(zoo_onnx("inception_cifar"), bad)
    r = invoke(cli_runner, ["deploy", str(bad), "--precisions", "fp32", "--no-search", "--out", str(tmp_path / "bad.deploy"), *FAST])
    assert r.exit_code == 1, r.output
    assert "no candidate passed" in r.output and "FAIL" in r.output and "max_rel" in r.output
    assert "first departure" in r.output  # the localisation is in the table's note
    assert not (tmp_path / "bad.deploy").exists()


@pytest.mark.slow
def test_kill_9_then_the_same_command_completes_reusing_finished_candidates(tmp_path: Path, cache: Path) -> None:
    pkg = tmp_path / "k.deploy"
    cmd = [sys.executable, "-m", "deployinc", "deploy", "inception_cifar", "--out", str(pkg), "--precisions", "fp32,int8", *FAST]
    env = {**os.environ, "DEPLOYINC_CACHE_DIR": str(cache)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            done = [p for p in cache.glob("deploy/*/results/*.json") if p.name != "baseline.json"]
            if done:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "deploy finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert not pkg.exists(), "a killed deploy leaves no package"
    finished = {p.stem for p in cache.glob("deploy/*/results/*.json")}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    rep = json.loads((pkg / "report.json").read_text())
    assert finished - {"baseline"} <= set(rep["reused"])
    assert len(rep["candidates"]) > len(finished - {"baseline"}), "the rest ran after the restart"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_foreign_onnx_file_is_refused_before_any_work(cli_runner, tmp_path: Path, cache: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 8, 8])
    path = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y])), str(path))
    r = invoke(cli_runner, ["deploy", str(path), "--out", str(tmp_path / "f.deploy")])
    assert r.exit_code == 2 and "no deployinc provenance" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "f.deploy").exists()


def test_a_file_naming_code_needs_trust(cli_runner, tmp_path: Path, cache: Path, zoo_onnx) -> None:
    import onnx

    from deployinc.metadata import read_provenance, write_provenance

    model = onnx.load(str(zoo_onnx("inception_cifar")))
    prov = read_provenance(model)
    prov.model_spec = "evilmod:build"
    write_provenance(model, prov)
    path = tmp_path / "evil.onnx"
    onnx.save(model, str(path))
    r = invoke(cli_runner, ["deploy", str(path), "--out", str(tmp_path / "e.deploy")])
    assert r.exit_code == 2 and "evilmod:build" in r.output and "--trust-model-code" in r.output, r.output
    assert "evilmod" not in sys.modules
