"""The user's weights are the model: a ``module:function`` factory is exported with exactly the weights it returns.

Each check here is independent of deployinc's own verify: the written ONNX file runs on ONNX Runtime and is compared
with the factory's own, untouched ``eval()`` module on the same inputs (verify rebuilds the model through the same
loader, so a change made there would be made to its reference too, and it would pass).
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from deployinc.models.loading import load_model, seeded_init, weights_text

from tests.conftest import invoke

NET = textwrap.dedent(
    """
    import torch
    from torch import nn

    def _net():
        torch.manual_seed(123)
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )

    def trained():
        m = _net()
        m.load_state_dict(torch.load(__file__.replace("mynet_{tag}.py", "trained_{tag}.pt"), weights_only=True))
        return m

    def own_stats():
        # BatchNorm statistics set by the user's code (what a trained model carries), and a zero-initialised head.
        m = _net()
        g = torch.Generator().manual_seed(7)
        for bn in (m[1], m[4]):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 2.0)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 5.0 + 0.2)
            bn.weight.data.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        with torch.no_grad():
            m[8].weight.zero_()
            m[8].bias.copy_(torch.arange(10.0))
        return m
    """
)


@pytest.fixture()
def mynet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A user package ``mynet_<tag>`` whose ``trained()`` loads trained weights inside the factory (the issue's repro)."""
    tag = tmp_path.name.replace("-", "_")[-20:]
    (tmp_path / f"mynet_{tag}.py").write_text(NET.replace("{tag}", tag))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(f"mynet_{tag}")
    # "training": BatchNorm statistics and weights far from their initial values.
    m = mod._net().train()
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        x = torch.randn(16, 3, 32, 32, generator=g) * 3 + 1
        loss = torch.nn.functional.cross_entropy(m(x), torch.randint(0, 10, (16,), generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(m.state_dict(), tmp_path / f"trained_{tag}.pt")
    yield mod, f"mynet_{tag}"
    sys.modules.pop(f"mynet_{tag}", None)


def _onnx_vs_own(onnx_path: Path, own: torch.nn.Module, n: int = 8) -> tuple[float, float]:
    """max_rel and top-1 agreement of the file on ONNX Runtime against the user's own eval() module."""
    import onnxruntime as ort

    x = np.random.default_rng(3).standard_normal((n, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = own.eval()(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    return rel, float((got.argmax(1) == ref.argmax(1)).mean())


def test_a_factory_that_loads_its_trained_weights_is_exported_exactly(cli_runner, mynet, tmp_path):
    mod, name = mynet
    out = tmp_path / "t.onnx"
    r = invoke(cli_runner, ["export", f"{name}:trained", "--input-shape", "1,3,32,32", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "recalibrat" not in r.output.lower()
    rel, top1 = _onnx_vs_own(out, mod.trained())
    assert rel < 1e-5 and top1 == 1.0, (rel, top1)
    v = invoke(cli_runner, ["verify", str(out), "--reference", f"{name}:trained", "--samples", "8"])
    assert v.exit_code == 0, v.output
    assert "random weights" not in v.output


def test_a_factory_that_sets_its_own_bn_statistics_and_a_zero_head(cli_runner, mynet, tmp_path):
    mod, name = mynet
    out = tmp_path / "s.onnx"
    r = invoke(cli_runner, ["export", f"{name}:own_stats", "--input-shape", "1,3,32,32", "--out", str(out)])
    assert r.exit_code == 0, r.output
    rel, top1 = _onnx_vs_own(out, mod.own_stats())
    assert rel < 1e-5 and top1 == 1.0, (rel, top1)


def test_loading_keeps_the_factorys_weights_bit_for_bit(mynet):
    mod, name = mynet
    loaded = load_model(f"{name}:own_stats", input_shape=(1, 3, 32, 32))
    own = mod.own_stats().state_dict()
    got = loaded.module.state_dict()
    assert set(own) == set(got)
    assert all(torch.equal(own[k], got[k]) for k in own)
    assert not loaded.bn_recalibrated and not loaded.zero_init
    assert any("factory's own weights" in n for n in loaded.notes)


def test_a_registry_model_with_weights_is_exported_exactly(cli_runner, tmp_path):
    """A checkpoint given with --weights is loaded as it is (no recalibration), compared with torch's own model."""
    from deployinc.models.registry import create_model

    m = create_model("inception_cifar", num_classes=10)
    g = torch.Generator().manual_seed(5)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.5)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) * 2 + 0.5)
    ckpt = tmp_path / "w.pt"
    torch.save(m.state_dict(), ckpt)
    out = tmp_path / "r.onnx"
    r = invoke(cli_runner, ["export", "inception_cifar", "--weights", str(ckpt), "--num-classes", "10", "--out", str(out)])
    assert r.exit_code == 0, r.output
    own = create_model("inception_cifar", num_classes=10)
    own.load_state_dict(torch.load(ckpt, weights_only=True))
    rel, top1 = _onnx_vs_own(out, own)
    assert rel < 1e-5 and top1 == 1.0, (rel, top1)


def test_only_registry_models_without_weights_are_seeded():
    assert seeded_init("torchvision", "none") and seeded_init("builtin", None) and seeded_init("timm", "")
    assert not seeded_init("user", "none") and not seeded_init("user", None)
    assert not seeded_init("torchvision", "/w.pt")
    assert weights_text("pkg.nets:build", "none") == "the factory's own weights"
    assert weights_text("resnet18", None, 0) == "seeded random init (seed 0)"
    assert weights_text("resnet18", "/a/w.pt") == "/a/w.pt"


def test_a_non_rgb_user_model_gets_no_imagenet_normalisation():
    """ImageNet's three values mean nothing for a 1- or 192-channel input: without --mean/--std a user's model
    gets mean 0, std 1 per channel, and a note says so; what the user gives is kept."""
    from deployinc.models.loading import user_normalisation
    from deployinc.models.registry import ModelInfo

    def info(c):
        return ModelInfo(name="m:f", family="other", input_size=(c, 8, 8), num_classes=10, source="user")

    got, note = user_normalisation(info(1), None, None)
    assert (got.mean, got.std) == ((0.0,), (1.0,))
    assert note is not None and "no --mean and --std for a 1-channel input: no normalisation assumed" in note
    got, note = user_normalisation(info(192), (0.5,) * 192, None)
    assert got.mean == (0.5,) * 192 and got.std == (1.0,) * 192 and note is not None and "no --std" in note
    got, note = user_normalisation(info(3), None, None)
    assert len(got.mean) == 3 and got.mean[0] == pytest.approx(0.485) and note is None
