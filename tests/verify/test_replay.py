"""verify's tensors and verdicts a new user meets: saved inputs/outputs replayed without torch give the same
numbers; accuracy on a labelled folder matches a plain torch loop; a looser --precision than the file's is refused;
a random-weight --reference says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import invoke

SHAPE = (1, 3, 16, 16)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "deployinc-cache"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tinynets_dir) -> Path:
    from deployinc.export import export_pipeline

    out = tmp_path_factory.mktemp("replay") / "tiny.onnx"
    export_pipeline("tinynets:build", out=out, exporter="torchscript", input_shape=SHAPE, num_classes=3, threads=2)
    return out


def test_a_saved_run_replays_to_the_same_numbers_without_torch(cli_runner, tiny, tmp_path):
    saved, first, second = tmp_path / "run.npz", tmp_path / "a.json", tmp_path / "b.json"
    r = invoke(cli_runner, ["verify", str(tiny), "--trust-model-code", "--save-outputs", str(saved), "--save-inputs", str(tmp_path / "in.npz"), "--json", str(first)])
    assert r.exit_code == 0, r.stdout + r.stderr
    with np.load(saved) as z:
        assert {"input", "reference/logits", "ort-cpu/b1/logits", "ort-cpu/b8/logits"} <= set(z.files)
    r = invoke(cli_runner, ["verify", str(tiny), "--load-outputs", str(saved), "--json", str(second)])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "replayed; no torch" in r.stdout
    a, b = (json.loads(p.read_text()) for p in (first, second))
    for ra, rb in zip(a["backends"][0]["results"], b["backends"][0]["results"]):
        assert ra["outputs"][0]["max_abs"] == rb["outputs"][0]["max_abs"]
        assert ra["outputs"][0]["cosine"] == rb["outputs"][0]["cosine"]
    # saved inputs feed another run as --inputs
    r = invoke(cli_runner, ["verify", str(tiny), "--trust-model-code", "--inputs", str(tmp_path / "in.npz")])
    assert r.exit_code == 0, r.stdout + r.stderr
    # refusing to overwrite without --force, before any work
    r = invoke(cli_runner, ["verify", str(tiny), "--trust-model-code", "--save-outputs", str(saved)])
    assert r.exit_code == 2 and "--force" in r.stderr


def test_accuracy_on_a_labelled_folder_matches_a_plain_torch_loop(cli_runner, tiny, tmp_path):
    import torch

    from deployinc.models.loading import load_from_provenance
    from deployinc.io import load_onnx
    from deployinc.metadata import read_provenance
    from deployinc.core.images import load_image, normalize

    rng = np.random.default_rng(0)
    data = tmp_path / "val"
    for c, cls in enumerate(["cat", "dog", "eel"]):
        (data / cls).mkdir(parents=True)
        for i in range(5):
            base = np.zeros((20, 20, 3), np.uint8)
            base[..., c] = 200
            Image.fromarray((base + rng.integers(0, 55, (20, 20, 3))).astype(np.uint8)).save(data / cls / f"{i}.png")
    out = tmp_path / "acc.json"
    r = invoke(cli_runner, ["verify", str(tiny), "--trust-model-code", "--data", str(data), "--labels", "--json", str(out)])
    assert r.exit_code == 0, r.stdout + r.stderr
    acc = json.loads(out.read_text())["accuracy"]
    assert acc["images"] == 15 and acc["classes"] == 3
    # the plain loop: the same model, the same images, the same preprocessing rule
    prov = read_provenance(load_onnx(tiny).model)
    model = load_from_provenance(prov, trust_code=True).module.eval()
    hits = 0
    for c, cls in enumerate(["cat", "dog", "eel"]):
        for i in range(5):
            x = normalize(load_image(data / cls / f"{i}.png", (16, 16))[None], prov.mean, prov.std)
            with torch.no_grad():
                hits += int(model(torch.from_numpy(x)).argmax(1).item() == c)
    assert acc["rows"]["reference"]["top1"] == pytest.approx(hits / 15)
    assert acc["rows"]["ort-cpu/b1"]["top1"] == pytest.approx(hits / 15)
    assert "top-1" in r.stdout
    r = invoke(cli_runner, ["verify", str(tiny), "--trust-model-code", "--labels"])
    assert r.exit_code == 2 and "--labels needs --data" in r.stderr


def test_a_looser_precision_than_the_file_is_refused(cli_runner, tiny):
    r = invoke(cli_runner, ["verify", str(tiny), "--trust-model-code", "--precision", "fp16"])
    assert r.exit_code == 2, r.stdout + r.stderr
    assert "computes in fp32" in r.stderr and "deployinc convert" in r.stderr


def test_a_random_weight_reference_says_it_cannot_match_a_trained_file(cli_runner, tiny, tmp_path, tinynets_dir):
    import onnx
    import torch

    from deployinc.export import export_pipeline

    torch.manual_seed(5)
    ckpt = tmp_path / "trained.pt"
    import importlib

    torch.save(importlib.import_module("tinynets").build(num_classes=3).state_dict(), ckpt)
    trained = tmp_path / "trained.onnx"
    export_pipeline("tinynets:build", out=trained, weights=str(ckpt), exporter="torchscript", input_shape=SHAPE, num_classes=3)
    m = onnx.load(str(trained))
    del m.metadata_props[:]  # a foreign file: no provenance
    foreign = tmp_path / "foreign.onnx"
    onnx.save(m, str(foreign))
    r = invoke(cli_runner, ["verify", str(foreign), "--reference", "tinynets:build", "--no-localize"])
    # a factory's own weights are the model (nothing re-initialised), but not the checkpoint's
    assert "the weights its factory returns (no --weights)" in r.stdout and "pass --weights CHECKPOINT" in r.stdout
    if r.exit_code == 1:
        assert "say nothing about the export" in r.stdout


def test_non_finite_inputs_are_named_not_judged(cli_runner, tiny, tmp_path):
    x = np.full((2, 3, 16, 16), np.nan, np.float32)
    np.save(tmp_path / "nan.npy", x)
    r = invoke(cli_runner, ["verify", str(tiny), "--trust-model-code", "--inputs", str(tmp_path / "nan.npy")])
    assert r.exit_code == 2, r.stdout + r.stderr
    assert "non-finite values (1536 NaN, 0 Inf" in r.stderr and "hint:" in r.stderr
