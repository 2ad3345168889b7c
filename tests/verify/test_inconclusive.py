"""A comparison that proves nothing is not a PASS: when the reference's output is the same for every different
input image (a classifier initialised to zero outputs zeros from any features), verify says so and exits 3."""

from __future__ import annotations

import json

import numpy as np
import torch

from deployinc.verify.core import input_blind_outputs
from tests.conftest import invoke
from tests.verify.test_verify import _cache_dir, exports_dir  # noqa: F401 - fixtures


def test_input_blind_outputs_unit():
    x = np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32)
    assert input_blind_outputs({"logits": np.zeros((4, 10), np.float32)}, x) == [
        "the reference's 'logits' is the same for all 4 different input images (all 0), so the comparison cannot tell a "
        "correct export from a wrong one"
    ]
    same = np.tile(np.arange(10, dtype=np.float32), (4, 1))  # one non-constant row, repeated: still blind
    assert "the same values" in input_blind_outputs({"logits": same}, x)[0]
    varied = same.copy()
    varied[2, 3] += 1e-6  # one sample differs by a hair: the output depends on the input
    assert input_blind_outputs({"logits": varied}, x) == []
    # another output that follows the input still tests the computation; integer outputs (a label) are not judged
    assert input_blind_outputs({"logits": np.zeros((4, 10), np.float32), "features": x.reshape(4, -1)}, x) == []
    assert len(input_blind_outputs({"logits": np.zeros((4, 10), np.float32), "label": np.zeros(4, np.int64)}, x)) == 1
    assert input_blind_outputs({"label": np.zeros(4, np.int64)}, x) == []
    # one image, or the same image four times: nothing can be concluded from equal outputs, and nothing is claimed
    assert input_blind_outputs({"logits": np.zeros((1, 10))}, x[:1]) == []
    assert input_blind_outputs({"logits": np.zeros((4, 10))}, np.repeat(x[:1], 4, axis=0)) == []


def test_a_zeroed_classifier_is_inconclusive_exit_3(cli_runner, tinynets_dir, exports_dir, tmp_path):  # noqa: F811
    import tinynets

    model = tinynets.build()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
    ckpt = tmp_path / "zero-head.pt"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "zero.onnx"
    r = invoke(cli_runner, ["export", "tinynets:build", "--weights", str(ckpt), "--input-shape", "1,3,16,16", "--exporter", "torchscript", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    report = tmp_path / "zero.json"
    r = invoke(cli_runner, ["verify", str(out), "--trust-model-code", "--json", str(report)])
    assert r.exit_code == 3, r.stdout + r.stderr
    assert "error: what ran passed, but it proves nothing: the reference's" in r.stderr and "hint: a model whose output ignores its input" in r.stderr
    assert "INCONCLUSIVE:" in r.stdout and "  inconclusive: the reference's" in r.stdout
    data = json.loads(report.read_text())
    assert data["verdict"] == "inconclusive" and data["complete"] is False and len(data["inconclusive"]) == 1
    # --allow-skip waives backends that cannot run, not a comparison that proves nothing
    r = invoke(cli_runner, ["verify", str(out), "--trust-model-code", "--allow-skip"])
    assert r.exit_code == 3


def test_a_trained_looking_model_is_not_inconclusive(cli_runner, tinynets_dir, exports_dir, tmp_path):  # noqa: F811
    out = tmp_path / "plain.onnx"
    r = invoke(cli_runner, ["export", "tinynets:build", "--input-shape", "1,3,16,16", "--exporter", "torchscript", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    r = invoke(cli_runner, ["verify", str(out), "--trust-model-code"])
    assert r.exit_code == 0 and "inconclusive" not in r.stdout, r.stdout + r.stderr
