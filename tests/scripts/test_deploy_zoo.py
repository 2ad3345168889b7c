"""scripts/deploy_zoo.py: the trained-model evidence (accuracy against fp32, agreement, the rule, the recipe, the
layers kept in float, the speedup, the CPU), and the options every deploy is given (threads, calibration images).

Nothing here runs deploy: results are built as deploy returns them (DeployResult's fields), and ``deploy`` itself is
replaced where the options it gets are checked."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def _result(chosen_id: str | None = "int8-ort-cpu-mixed"):
    env = {"cpu": {"model": "Test CPU 9000", "int8_flags": ["avx512_vnni"], "bf16_flags": []}}
    fp32 = {"id": "fp32-ort-cpu", "precision": "fp32", "backend": "ort-cpu", "artifact": "fp32", "verdict": "pass", "rule": "preset fp32",
            "metrics": {"top1_reference": 0.95, "top1_accuracy": 0.95, "top1_agreement": 1.0}, "timing": {"1": {"p50_ms": 8.0}},
            "speedup": {"1": {"vs_ort_fp32": 1.0}}}  # fmt: skip
    whole = {"id": "int8-ort-cpu", "precision": "int8", "backend": "ort-cpu", "artifact": "int8-cpu", "verdict": "fail",
             "failures": ["accuracy 0.80 is 15.0 points below fp32's 0.95 (allowed 1)"],
             "metrics": {"top1_reference": 0.95, "top1_accuracy": 0.80, "top1_agreement": 0.82}, "timing": {"1": {"p50_ms": 3.0}}}  # fmt: skip
    mixed = {"id": "int8-ort-cpu-mixed", "precision": "int8", "backend": "ort-cpu", "artifact": "int8-cpu-mixed", "verdict": "pass",
             "rule": "task: accuracy drop <= 1 point(s), top-1 agreement >= 0.99",
             "metrics": {"top1_reference": 0.95, "top1_accuracy": 0.9475, "top1_agreement": 0.9925, "cosine": 0.999},
             "timing": {"1": {"p50_ms": 4.0}}, "speedup": {"1": {"vs_ort_fp32": 2.0}}}  # fmt: skip
    artifacts = {"int8-cpu-mixed": {"recipe": {"name": "u8s8"}, "fallback": {"layers": [{"module": "layer4.1.conv2", "node": "/layer4/layer4.1/conv2/Conv", "gain": 0.1}]}}}
    results = [fp32, whole, mixed]
    chosen = next((r for r in results if r["id"] == chosen_id), None)
    return SimpleNamespace(request=SimpleNamespace(batches=[1]), results=results, artifacts=artifacts, chosen=chosen, baseline={"environment": env})


def test_evidence_of_a_mixed_int8_choice(dz):
    ev = dz.evidence(_result())
    c = ev["chosen"]
    assert ev["fp32_top1_accuracy"] == 0.95 and c["top1_accuracy"] == 0.9475 and c["top1_agreement"] == 0.9925
    assert c["rule"].startswith("task:") and c["recipe"] == "u8s8" and c["vs_ort_fp32"] == 2.0
    assert c["float_layers"] == [{"module": "layer4.1.conv2", "node": "/layer4/layer4.1/conv2/Conv"}]
    assert "Test CPU 9000" in ev["cpu"] and "avx512_vnni" in ev["cpu"]
    assert [x["id"] for x in ev["lower"]] == ["int8-ort-cpu", "int8-ort-cpu-mixed"]
    assert "15.0 points below" in ev["lower"][0]["reason"]
    row = " | ".join(dz.evidence_row("resnet18 (trained)", ev))
    for text in ("int8-ort-cpu-mixed", "task:", "95.00%", "94.75%", "0.9925", "2.00x", "p50 4.00 vs 8.00 ms", "u8s8", "`layer4.1.conv2`", "Test CPU 9000"):
        assert text in row


def test_evidence_when_fp32_is_shipped_and_when_nothing_passed(dz):
    ev = dz.evidence(_result("fp32-ort-cpu"))
    assert ev["chosen"]["precision"] == "fp32" and ev["chosen"]["recipe"] is None and ev["chosen"]["float_layers"] == []
    assert dz.evidence_row("m", ev)[7:9] == ["-", "-"]  # no recipe, no float layers: dashes, not made-up values
    none = dz.evidence(_result(None))
    assert none["chosen"] is None and none["fp32_top1_accuracy"] == 0.95
    assert "none passed" in dz.evidence_row("m", none)


def test_evidence_lines_only_for_models_with_heldout_images(dz):
    rec = {"label": "r18 (trained)", "result": _result(), "accuracy_data": "held/"}
    lines = dz.evidence_lines([rec, {"label": "googlenet", "result": _result()}])
    text = "\n".join(lines)
    assert text.count("| r18 (trained) |") == 1 and "googlenet" not in text
    assert "Lower-precision candidates of r18 (trained)" in text and "int8-ort-cpu: FAIL" in text
    assert dz.evidence_lines([{"label": "googlenet", "result": _result()}]) == []


def test_run_passes_threads_and_calibration_images_to_every_deploy(dz, tmp_path, monkeypatch):
    import deployinc.deploy.run as deploy_run

    seen = []
    monkeypatch.setattr(deploy_run, "deploy", lambda model, **kw: seen.append((model, kw)) or _result())
    entries = [{"model": "resnet18", "weights": "w.pt", "accuracy_data": "held", "data": "cal", "num_classes": 10}]
    out = dz.run(entries, tmp_path, 7, lambda _s: None, {"threads": 1, "calibration_images": 128, "torch_compile": False})
    (model, kw), = seen
    assert model == "resnet18" and kw["threads"] == 1 and kw["calibration_images"] == 128 and kw["iters"] == 7 and kw["torch_compile"] is False
    assert kw["accuracy_data"] == "held" and kw["data"] == "cal" and kw["num_classes"] == 10
    assert out[0]["label"] == "resnet18 (trained: w)"
    dz.run([dict(entries[0], weights="other.pt")], tmp_path, 7, lambda _s: None, {})
    assert seen[0][1]["out"] != seen[1][1]["out"]  # two checkpoints of one architecture: two packages, not one overwritten
    dz.run([{"model": "googlenet"}], tmp_path, 7, lambda _s: None, {"threads": None})
    assert "threads" not in seen[-1][1]  # not given: deploy's own default


@pytest.mark.parametrize("spec", ["resnet18", "=x.pt"])
def test_bad_trained_spec_is_refused(dz, spec):
    with pytest.raises(SystemExit):
        dz._parse_trained(spec)


def test_the_page_is_titled_with_the_machine_it_ran_on(dz):
    text = dz.render([], "amd-epyc-2cpu", "2026-12-07 04:22 UTC", 10.0)
    assert text.startswith("# deploy on amd-epyc-2cpu\n")


def test_the_page_names_the_layers_a_mixed_artifact_keeps_in_float(dz):
    res = _result()
    res.artifacts["int8-cpu-mixed"]["fallback"].update({"candidates": 21, "evaluations": 30, "seconds": 12.5, "float_share": 0.05})
    res.artifacts["int8-cpu-mixed"]["recipe"].update({"cpu_path": "avx512-vnni", "reason": "VNNI multiplies u8 by s8 without saturating"})
    text = "\n".join(dz.made_lines(res))
    assert "How `int8-cpu-mixed` was made (the shipped artifact):" in text
    assert "1 of 21 layers kept in float, 5.0% of the layers' multiply-adds" in text and "`layer4.1.conv2`" in text
    assert "p50 4.00 ms against 3.00 ms for the whole-model int8 (1.33x)" in text  # the fallback's cost, from the same run
    assert text.count("How `") == 1  # the whole-model int8 artifact has no recipe recorded here: no empty heading
    assert dz.made_lines(_result("fp32-ort-cpu")).count("How `int8-cpu-mixed` was made:") == 1  # not shipped, still named


def test_the_page_says_what_the_second_look_gave(dz):
    res = _result()
    res.second_look = {"samples": 16, "seed": 100, "verdict": "pass", "cosine": 0.9931, "top1_agreement": 0.9375}
    text = "\n".join(dz.model_notes(res))
    assert text.startswith("Judged again on 16 other generated images (seed 100") and "PASS (cosine 0.993100" in text
    assert text.index("Judged again") < text.index("How `int8-cpu-mixed` was made")
