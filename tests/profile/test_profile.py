"""`deployinc profile`: the 1x1-convolution arithmetic of SEEDS.md, torchvision's published figures, fused counts."""

from __future__ import annotations

import json

import pytest
from torch import nn

from deployinc.models import create_model, get_model_info
from deployinc.profile import profile_model

from tests.conftest import files_in, invoke


def _macs(model: nn.Module, shape) -> int:
    return profile_model(model, shape, fused=False).macs


def _params(model: nn.Module) -> int:
    first = model[0] if isinstance(model, nn.Sequential) else model
    return profile_model(model, (1, first.in_channels, 8, 8), fused=False).params


def test_direct_5x5_versus_1x1_reduction():
    direct = nn.Conv2d(256, 64, 5, padding=2)
    assert _macs(direct, (1, 256, 28, 28)) == 321_126_400
    reduced = nn.Sequential(nn.Conv2d(256, 32, 1), nn.Conv2d(32, 64, 5, padding=2))
    rep = profile_model(reduced, (1, 256, 28, 28), fused=False)
    assert rep.loaded.module("0").macs == 6_422_528
    assert rep.loaded.module("1").macs == 40_140_800
    assert rep.macs == 46_563_328
    assert rep.macs / 321_126_400 == pytest.approx(0.145, abs=0.001)


def test_per_pixel_3x3_with_and_without_reduction():
    assert _macs(nn.Conv2d(256, 256, 3, padding=1), (1, 256, 1, 1)) == 589_824
    reduced = nn.Sequential(nn.Conv2d(256, 64, 1), nn.Conv2d(64, 256, 3, padding=1))
    rep = profile_model(reduced, (1, 256, 1, 1), fused=False)
    assert (rep.loaded.module("0").macs, rep.loaded.module("1").macs) == (16_384, 147_456)
    assert rep.macs == 163_840
    assert round(100 * (1 - 163_840 / 589_824)) == 72


def test_parameter_arithmetic():
    assert _params(nn.Conv2d(192, 128, 3, bias=False)) == 221_184
    assert _params(nn.Sequential(nn.Conv2d(192, 96, 1, bias=False), nn.Conv2d(96, 128, 3, bias=False))) == 129_024
    assert _params(nn.Conv2d(256, 64, 1)) == 16_448
    linear = profile_model(nn.Linear(256, 64), (1, 256), fused=False)  # a 1x1 conv is a linear layer per pixel
    assert linear.params == 16_448 and linear.macs == 256 * 64


def test_naive_inception_module():
    model = create_model("inception_v1_block")
    rep = profile_model(model, (1, 256, 28, 28), compare_naive=True)
    (n,) = rep.naive
    assert n.path == "inception" and n.in_channels == 256
    assert n.naive_macs == 25_690_112 + 346_816_512 + 481_689_600 == 854_196_224
    assert n.macs == 271_351_808
    assert round(n.saving_pct) == 68
    assert sorted(n.reductions) == ["inception.branch2.0.conv", "inception.branch3.0.conv"]
    assert n.projections == ["inception.branch4.1.conv"]
    assert (n.out_channels, n.naive_out_channels) == (128 + 192 + 96 + 64, 128 + 192 + 96 + 256)
    block = rep.loaded.blocks["inception"]
    assert list(block.branches) == ["branch1", "branch2", "branch3", "branch4"]
    assert block.branches["branch1"].macs == 25_690_112
    assert sum(b.macs for b in block.branches.values()) == block.total.macs == 271_351_808
    # the fold: every BN's weight and bias go, each conv (bias-free) gains a bias; multiply-adds stay
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert rep.fused is not None
    assert rep.fused.total.params == rep.params - sum(bn.num_features for bn in bns)
    assert rep.fused.total.macs == rep.macs and rep.fused.total.bn_elements == 0
    assert rep.loaded.total.bn_elements == 28 * 28 * (128 + 64 + 192 + 64 + 96 + 64)


PUBLISHED = ["googlenet", "inception_v3", "resnet50", "mobilenet_v2", "mobilenet_v3_large"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_matches_torchvision_published_figures(name):
    import torchvision.models as tvm

    meta = tvm.get_model_weights(name).DEFAULT.meta
    info = get_model_info(name)
    kwargs = {"init_weights": False} if name in ("googlenet", "inception_v3") else {}
    model = create_model(name, **kwargs)  # aux heads built, as the registry builds them
    # googlenet's published count is without its aux heads (the deploy-time model, profiled by default);
    # inception_v3's weights ship with AuxLogits (the training-time model)
    rep = profile_model(model, (1, *info.input_size), fused=False, aux_heads=info.aux_heads, training=name == "inception_v3")
    assert rep.gmacs == pytest.approx(meta["_ops"], rel=0.01)
    assert rep.gmacs == pytest.approx(meta["_ops"], abs=0.0005)  # in fact to the published 3 decimals
    assert rep.params == meta["num_params"]


def test_torchvision_inception_branches():
    model = create_model("googlenet", init_weights=False)
    rep = profile_model(model, (1, 3, 224, 224), fused=False, compare_naive=True)
    assert len(rep.loaded.blocks) == 9 and len(rep.naive) == 9
    b = rep.loaded.blocks["inception3a"]
    assert list(b.branches) == ["branch1", "branch2", "branch3", "branch4"]
    assert b.branches["branch1"].macs == 28 * 28 * 192 * 64
    assert rep.params_training - rep.params == sum(p.numel() for p in model.aux1.parameters()) + sum(
        p.numel() for p in model.aux2.parameters())
    assert rep.params == rep.params_inference and "aux1" not in {m.path for m in rep.loaded.modules}
    assert all(n.saving_pct > 40 for n in rep.naive)


def test_googlenet_profile_is_the_deploy_time_model_unless_training():
    model = create_model("googlenet", init_weights=False)
    assert model.aux1 is not None and model.aux_logits  # the registry builds the heads (random init, no weights)
    rep = profile_model(model, (1, 3, 64, 64), fused=False)
    assert rep.state == "deploy" and rep.aux_heads == ["aux1", "aux2"]
    assert rep.params == rep.loaded.total.params == 6_624_904  # torchvision's published figure
    assert rep.params_training == 13_004_888
    assert model.aux1 is not None and model.aux_logits  # profiled a copy
    train = profile_model(model, (1, 3, 64, 64), fused=False, training=True)
    assert train.state == "training" and train.params == 13_004_888 and train.params_inference == 6_624_904
    assert train.macs == rep.macs  # the heads do not run in eval mode


def test_cli_profile_googlenet_deploy_and_training(cli_runner, monkeypatch, tmp_path):
    import deployinc.profile.render as render

    monkeypatch.setattr(render, "available", lambda name: False)
    base = ["profile", "googlenet", "--input-shape", "1,3,64,64", "--no-fused"]
    r = invoke(cli_runner, [*base, "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 0, r.stderr
    total = next(line for line in r.stdout.splitlines() if line.startswith("total"))
    assert "6,624,904" in total
    assert "googlenet: 6,624,904 parameters" in r.stdout
    assert "training-time, with them (--training): 13,004,888 parameters" in r.stdout
    data = json.loads((tmp_path / "p.json").read_text())
    assert (data["state"], data["params"], data["params_training"]) == ("deploy", 6_624_904, 13_004_888)
    r = invoke(cli_runner, [*base, "--training"])
    assert r.exit_code == 0, r.stderr
    total = next(line for line in r.stdout.splitlines() if line.startswith("total"))
    assert "13,004,888" in total and "deploy-time, without them: 6,624,904 parameters" in r.stdout
    assert any(line.startswith("aux1") for line in r.stdout.splitlines())


def test_cli_profile_compare_naive_and_json(cli_runner, tmp_path):
    out = tmp_path / "p.json"
    r = invoke(cli_runner, ["profile", "inception_v1_block", "--input-shape", "1,256,28,28", "--compare-naive",
                            "--json", str(out)])
    assert r.exit_code == 0, r.stderr
    assert "854,196,224" in r.stdout and "271,351,808" in r.stdout and "-68.2%" in r.stdout
    assert "branch2" in r.stdout
    data = json.loads(out.read_text())
    assert data["naive"][0]["naive_macs"] == 854_196_224 and data["naive"][0]["macs"] == 271_351_808
    assert data["fused"]["total"]["bn_elements"] == 0
    assert data["loaded"]["blocks"]["inception"]["branches"]["branch1"]["macs"] == 25_690_112
    # the JSON is not overwritten without --force, and nothing else is written
    before = files_in(tmp_path)
    r = invoke(cli_runner, ["profile", "inception_v1_block", "--json", str(out)])
    assert r.exit_code == 2 and "error:" in r.stderr and files_in(tmp_path) == before


def test_cli_profile_plain_table(cli_runner, monkeypatch):
    import deployinc.profile.render as render

    monkeypatch.setattr(render, "available", lambda name: False)
    r = invoke(cli_runner, ["profile", "inception_cifar", "--depth", "2"])
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["module", "type", "params"]
    assert any(line.strip().startswith("inception3") for line in lines)
    assert any("branch4" in line for line in lines)
    total = next(line for line in lines if line.startswith("total"))
    model = create_model("inception_cifar")
    assert f"{sum(p.numel() for p in model.parameters()):,}" in total


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["inception_cifar", "--compare-naive", "--module", "stem"], r"'stem' is not an Inception module"),
        (["resnet_cifar", "--compare-naive"], r"has no Inception module"),
        (["inception_cifar", "--input-shape", "1,3,2,2"], r"rejects input shape"),
        (["no_such_model"], r"unknown model"),
    ],
)
def test_cli_profile_bad_input(cli_runner, tmp_path, args, pattern):
    import re

    r = invoke(cli_runner, ["profile", *args, "--json", str(tmp_path / "p.json")])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert re.search(pattern, r.stderr), r.stderr
    assert r.stderr.strip().splitlines()[-2].startswith("error: ")
    assert files_in(tmp_path) == []
