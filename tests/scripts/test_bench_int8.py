"""scripts/bench_int8.py: argument defaults (full and --quick), the gates, the ratios and the report, on hand-built
results. Nothing is exported, quantized, verified or benched here (a real run takes minutes even with --quick)."""

from __future__ import annotations

import json

import pytest



def summary(cos: float, top1: float, verdict: str = "pass", accuracy: float | None = None) -> dict:
    s = {
        "verdict": verdict, "precision": "int8", "backend": "ort-cpu", "status": "ran", "reason": None, "failures": [],
        "reference": "resnet50 (seeded random init (seed 0), BatchNorm recalibrated) rebuilt from the file's metadata",
        "inputs": {}, "preset": "int8", "tolerance": {"name": "int8", "min_cosine": 0.99, "min_top1": 0.95, "min_top5": 0.99},
        "batch": 8, "samples": 32, "min_cosine": cos, "top1_agreement": top1, "top1_tie_aware": top1, "top5": 1.0, "max_abs": 0.5, "max_rel": 0.05,
    }  # fmt: skip
    if accuracy is not None:
        s["accuracy"] = {"images": 1000, "reference_top1": 1.0, "top1": accuracy, "source": "labels"}
    return s


def lat(p50s: list[float]) -> dict:
    return {"round_p50_ms": p50s, "p50_ms": sorted(p50s)[len(p50s) // 2], "p90_ms": max(p50s), "p99_ms": max(p50s), "min_ms": min(p50s), "samples": 20 * len(p50s)}


def variant(target: str, cos: float, speedup: float, kept: int = 0) -> dict:
    return {"target": target, "quantize": {"fp32_nodes_kept": kept}, "verify": summary(cos, 0.9), "latency": lat([140 / speedup] * 3),
            "speedup_vs_fp32": speedup, "speedup_vs_torch": speedup * 1.1}


def resnet(bi, all_cos: float = 0.984, stem_cos: float = 0.992, stem_speed: float = 2.3) -> dict:
    labels = [v[0] for v in bi.RESNET_VARIANTS]
    return {
        "model": "resnet50", "onnx": "x.onnx", "calibration": "64 images", "test_images": 32, "test_seed": 404, "keep_fp32_before": "/layer2/layer2.0/conv1/Conv",
        "reference": "resnet50 rebuilt", "fp32": {"verify": summary(1.0, 1.0), "latency": lat([140.0, 141.0, 139.0]), "speedup_vs_torch": 1.1},
        "torch": {"latency": lat([150.0, 155.0, 152.0]), "speedup_vs_fp32": 0.92},
        "latency": {"configs": [{"load_average": {"before": [1.0, 1.0, 1.0], "after": [2.0, 2.0, 2.0]}}]},
        "variants": {labels[0]: variant("cpu", all_cos, 3.2), labels[1]: variant("cpu", stem_cos, stem_speed, kept=25), labels[2]: variant("tensorrt", 0.979, 1.3)},
    }  # fmt: skip


def inception(bi, top1: float = 1.0) -> dict:
    labels = [v[0] for v in bi.INCEPTION_VARIANTS]
    v = {lab: {"target": t, "verify": summary(0.996, top1, accuracy=1.0), "latency": lat([0.2, 0.2]), "speedup_vs_fp32": 1.6, "speedup_vs_torch": 10.0}
         for lab, t in zip(labels, ("cpu", "tensorrt"))}
    return {"checkpoint": "c.pt", "heldout": "held/", "onnx": "i.onnx", "calibration": "256 draws", "record": {"arch": "inception_cifar", "data": "synthetic:shapes", "epochs": 24},
            "fp32": {"verify": summary(1.0, 1.0, accuracy=1.0), "latency": lat([0.3, 0.3])}, "variants": v}


def data(bi, res: dict, inc: dict) -> dict:
    args = bi.parse_args(["--out-md", "/tmp/x.md"])
    return {"format": bi.FORMAT, "created": "2026-01-01T00:00:00+00:00", "command": "python scripts/bench_int8.py", "quick": False, "args": vars(args),
            "environment": {"cpu_bench": {"model": "Test CPU 9000", "usable_cpus": 2, "logical_cpus": 2}, "threads": {}, "versions": {"deployinc": "0"}},
            "int8_flags_checked": ["avx512_vnni"], "int8_cpu_flags": ["avx512_vnni"], "resnet50": res, "inception_cifar": inc, "gates": bi.gates(res, inc)}


def test_defaults_and_quick(bi):
    full = bi.parse_args([])
    assert (full.calib, full.test, full.rounds, full.iters, full.warmup, full.inception_epochs) == (64, 32, 5, 20, 5, 24)
    assert full.out_md.endswith("docs/benchmarks/int8-cpu.md") and full.out_json.endswith("docs/benchmarks/int8-cpu.json")
    assert not full.sensitivity  # opt-in
    q = bi.parse_args(["--quick", "--out-md", "/tmp/q.md", "--iters", "6"])
    assert q.iters == 6 and q.calib == bi.QUICK["calib"] and q.inception_epochs == 1 and q.inception_limit_train == bi.QUICK["inception_limit_train"]
    assert q.out_json == "/tmp/q.json"
    with pytest.raises(SystemExit):
        bi.parse_args(["--rounds", "5", "--iters", "0"])


def test_gates_pick_the_passing_cpu_variant(bi):
    g = bi.gates(resnet(bi), inception(bi))
    assert [x["pass"] for x in g] == [True, True, True]
    assert "stem + layer1" in g[0]["gate"] and g[0]["value"] == "min 0.9920" and g[1]["value"] == "2.30x"


def test_gates_fail_and_not_run(bi):
    g = bi.gates(resnet(bi, stem_speed=1.7), inception(bi, top1=0.98))
    # no cpu variant passes both: the most accurate one is judged
    assert [x["pass"] for x in g] == [True, False, False]
    g = bi.gates({}, {"skipped": "--skip-inception"})
    assert [x["pass"] for x in g] == [None, None]


def test_round_ratio(bi):
    rows = {"a": {"round_p50_ms": [10.0, 12.0, None]}, "b": {"round_p50_ms": [5.0, 3.0, 2.0]}}
    assert bi.round_ratio(rows, "a", "b") == pytest.approx(3.0)  # median of 2 and 4; the failed round is left out
    assert bi.round_ratio(rows, "a", "missing") is None


def test_verify_summary_reads_the_report(bi):
    out = {"cosine": 0.995, "top1_raw": 0.96, "top1": 1.0, "top5": 1.0, "max_abs": 0.1, "max_rel": 0.01}
    d = {"verdict": "pass", "precision": "int8", "failures": [], "reference": {"description": "ref"}, "inputs": {"samples": 8},
         "backends": [{"backend": "ort-cpu", "status": "ran", "tolerance": {"name": "int8"}, "results": [{"batch": 8, "samples": 8, "outputs": [out]}]}],
         "accuracy": {"images": 8, "source": "labels", "rows": {"reference": {"top1": 1.0}, "ort-cpu/b8": {"top1": 0.875}}}}
    s = bi.verify_summary(d)
    assert (s["min_cosine"], s["top1_agreement"], s["top1_tie_aware"], s["preset"]) == (0.995, 0.96, 1.0, "int8")
    assert s["accuracy"] == {"images": 8, "reference_top1": 1.0, "top1": 0.875, "source": "labels"}
    assert "PASS" in bi.verify_line(s)


def test_report_and_atomic_outputs(bi, tmp_path):
    d = data(bi, resnet(bi), inception(bi))
    md = bi.markdown(d)
    assert "Test CPU 9000" in md and "Thread count: 2" in md and "every number below was printed by that run" in md.lower()
    assert "| int8, stem + layer1 fp32 (cpu: u8 activations) | 25 | pass | 0.9920 |" in md
    assert "Where the int8 error comes from" not in md  # no --sensitivity
    d["resnet50"]["sensitivity"] = [{"conv": "/conv1/Conv", "verify": summary(0.986, 0.9)}]
    d["inception_cifar"] = {"skipped": "no checkpoint"}
    d["gates"] = bi.gates(d["resnet50"], d["inception_cifar"])
    md = bi.markdown(d)
    assert "| `/conv1/Conv` | 0.98600 |" in md and "Not measured in this run: no checkpoint." in md
    bi.write_outputs(d, tmp_path / "r.md", tmp_path / "r.json")
    assert (tmp_path / "r.md").read_text() == md
    assert json.loads((tmp_path / "r.json").read_text())["gates"][-1]["pass"] is None
    bi.main(["--render", str(tmp_path / "r.json"), "--out-md", str(tmp_path / "again.md")])
    assert (tmp_path / "again.md").read_text() == md
