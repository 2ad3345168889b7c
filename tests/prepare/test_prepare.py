"""deployinc.prepare: the fold math, each pass, and the prepared model's agreement with the original."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deployinc.prepare import PASSES, fold_conv_bn_weights, prepare
from deployinc.prepare import passes as P
from deployinc.core.images import natural_images


@pytest.mark.parametrize("groups, bias", [(1, True), (1, False), (4, True), (8, False)])
def test_fold_math_matches_conv_then_bn(groups, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=groups, bias=bias)
    bn = nn.BatchNorm2d(8)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    bn.eval()
    x = torch.randn(2, 8, 10, 10)
    w, b = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    fused = nn.functional.conv2d(x, w, b, padding=1, groups=groups)
    with torch.no_grad():
        ref = bn(conv(x))
    assert torch.allclose(fused, ref, atol=1e-5, rtol=1e-5)
    assert w.dtype == conv.weight.dtype


def test_fold_math_keeps_eps_where_it_dominates_the_variance():
    # running_var (1e-6) is far below eps (1e-3): 1/sqrt(var + eps) is about 31.6, 1/sqrt(var) is 1000, so a fold
    # that drops eps is off by a factor of about 30 and cannot pass; one that keeps it matches eval-mode BatchNorm.
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    bn = nn.BatchNorm2d(6, eps=1e-3)
    bn.running_mean.uniform_(-0.1, 0.1)
    bn.running_var.fill_(1e-6)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    bn.eval()
    x = torch.randn(2, 4, 8, 8)
    w, b = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    with torch.no_grad():
        ref = bn(conv(x))
        fused = nn.functional.conv2d(x, w, b, padding=1)
    assert torch.allclose(fused, ref, atol=1e-4, rtol=1e-4)
    scale = bn.weight.detach().double() / torch.sqrt(torch.tensor(1e-6 + 1e-3, dtype=torch.float64))
    expected_w = conv.weight.detach().double() * scale.reshape(-1, 1, 1, 1)
    assert torch.allclose(w.double(), expected_w, rtol=1e-5)


def test_fold_math_without_affine():
    conv = nn.Conv2d(3, 4, 1)
    bn = nn.BatchNorm2d(4, affine=False).eval()
    bn.running_mean.fill_(0.5)
    bn.running_var.fill_(4.0)
    x = torch.randn(1, 3, 4, 4)
    w, b = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, None, None)
    with torch.no_grad():
        assert torch.allclose(nn.functional.conv2d(x, w, b), bn(conv(x)), atol=1e-6)


def _tiny(tinynets_dir, name="build"):
    import importlib

    mod = importlib.import_module("tinynets")
    torch.manual_seed(0)
    m = getattr(mod, name)()
    # non-trivial running statistics
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_fold_pass_folds_plain_grouped_and_depthwise(tinynets_dir):
    m = _tiny(tinynets_dir)
    x = torch.from_numpy(natural_images(2, (3, 16, 16)))
    with torch.no_grad():
        ref = m(x)
    rec = P.fold_conv_bn(m, x)
    assert sorted(rec.changed) == sorted(["stem.0 <- stem.1", "grouped <- gbn", "dw <- dwbn", "pw <- pwbn"])
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in m.modules())
    with torch.no_grad():
        assert torch.allclose(m(x), ref, atol=1e-5)


def test_fold_pass_skips_with_reasons():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.other = nn.Conv2d(4, 4, 1)
            self.bn2 = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + self.other(y), self.bn2(x.repeat(1, 2, 1, 1)[:, :4])

    m = Shared().eval()
    rec = P.fold_conv_bn(m, torch.randn(1, 3, 8, 8))
    reasons = dict(rec.skipped)
    assert "also read by other" in reasons["bn"]
    assert "not the output of a convolution" in reasons["bn2"]
    assert rec.changed == []

    m.train()
    assert P.fold_conv_bn(m, torch.randn(2, 3, 8, 8)).skipped == [("<root>", "model is in training mode")]


def test_remove_aux_heads_googlenet_style_and_by_name(tinynets_dir):
    import importlib

    m = importlib.import_module("tinynets").build_aux().eval()
    prepared, report = prepare(m, (1, 3, 16, 16), aux_heads=("aux_head",))
    assert report.get("remove_aux_heads").changed == ["aux_head"]
    assert "single_output" in report.applied
    out = prepared(torch.randn(2, 3, 16, 16))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


def test_remove_dropout_and_eval():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout2d(0.3), nn.Flatten(), nn.Dropout(0.5), nn.LazyLinear(2))
    m(torch.randn(1, 3, 8, 8))
    m.train()
    assert P.eval_mode(m).changed
    rec = P.remove_dropout(m)
    assert rec.changed == ["1", "3"]
    assert not any(isinstance(x, nn.Dropout) for x in m.modules())


def test_prepare_is_not_inplace_by_default(tinynets_dir):
    m = _tiny(tinynets_dir)
    prepared, _ = prepare(m, (1, 3, 16, 16))
    assert any(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    assert not any(isinstance(x, nn.BatchNorm2d) for x in prepared.modules())


def test_unknown_skip_pass():
    from deployinc.errors import BadInputError

    with pytest.raises(BadInputError, match="unknown prepare pass"):
        prepare(nn.Linear(2, 2), (1, 3, 4, 4), skip=("fold",))
    assert "fold_conv_bn" in PASSES


@pytest.mark.parametrize("name", ["googlenet", "mobilenet_v3_small", "resnet18"])
def test_prepared_zoo_models_agree_with_original(name):
    from deployinc.models.loading import load_model

    loaded = load_model(name)
    prepared, report = prepare(loaded.module, loaded.input_shape, mean=loaded.info.mean, std=loaded.info.std)
    assert report.get("fold_conv_bn").changed and not report.get("fold_conv_bn").skipped
    x = torch.from_numpy(natural_images(2, loaded.info.input_size, loaded.info.mean, loaded.info.std, seed=5))
    with torch.no_grad():
        ref = loaded.module.eval()(x).numpy()
        out = prepared(x).numpy()
    assert np.abs(out - ref).max() / np.abs(ref).max() <= 1e-5
    if name == "googlenet":
        assert report.get("remove_aux_heads").changed == ["aux1", "aux2"]
        assert any("transform_input=False" in n for n in report.get("remove_aux_heads").notes)


def test_fold_never_pairs_a_batchnorm_with_a_convolution_whose_output_reused_a_freed_tensor_id():
    """RepViT's token mixer normalises a sum, bn(conv(x) + conv1(x) + x): the sum is freed after the BN, and a
    later convolution's output could get its id. Found by the zoo sweep on timm/repvit_m0_9 (max_rel 13)."""
    import copy

    import torch
    from torch import nn

    from deployinc.prepare import passes as P

    class Mixer(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1, groups=c)
            self.conv1 = nn.Conv2d(c, c, 1, groups=c)
            self.bn = nn.BatchNorm2d(c)

        def forward(self, x):
            return self.bn(self.conv(x) + self.conv1(x) + x)

    torch.manual_seed(0)
    net = nn.Sequential(*[Mixer(8) for _ in range(12)]).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        ref = net(x)
    folded = copy.deepcopy(net)
    rec = P.fold_conv_bn(folded, x)
    assert rec.changed == []  # no BN here normalises a convolution's own output
    assert all("not the output of a convolution" in why for _, why in rec.skipped)
    with torch.no_grad():
        assert torch.allclose(folded(x), ref)


def test_a_pair_the_fold_analysis_misses_is_skipped_by_the_self_check_and_the_rest_folded(monkeypatch):
    """The self-check is the last word, per pair: when a fold the analysis allowed changes the output (here the
    analysis is told every pair is fine, and the first conv's output is also added to the result), that pair alone
    is left unfolded with the reason, the others are folded, and the model is not refused."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
            self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

        def forward(self, x):
            y = self.c1(x)
            z = torch.relu(self.b1(y)) + y
            return torch.relu(self.b2(self.c2(z))).mean((2, 3))

    torch.manual_seed(0)
    net = Net().eval()
    for bn in (net.b1, net.b2):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    monkeypatch.setattr(P, "_pair_problem", lambda *a: None)
    prepared, report = prepare(net, (1, 3, 12, 12))
    assert report.folds == [("c2", "b2")]
    reasons = dict(report.get("fold_conv_bn").skipped)
    assert "folding it into c1 changes the model's output" in reasons["b1"]
    assert any("BatchNorm b1 not folded" in line for line in report.notes())
    x = torch.from_numpy(natural_images(2, (3, 12, 12), seed=9))
    with torch.no_grad():
        assert torch.allclose(prepared(x), net(x), atol=1e-5)


def test_fold_reasons_for_readers_the_modules_do_not_show():
    """A second reader that is a torch call (an add), an in-place change, a conv subclass with its own forward: each
    pair is skipped with its reason; an Identity between conv and BN is no reader (the pair folds)."""

    class Sub(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
            self.c2, self.b2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
            self.c3, self.b3 = Sub(4, 4, 1), nn.BatchNorm2d(4)
            self.c4, self.idn, self.b4 = nn.Conv2d(4, 4, 1), nn.Identity(), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.c1(x)
            y = torch.cat([self.b1(y), y], 1)[:, :4]
            y = self.c2(y)
            y.mul_(2)
            y = self.b3(self.c3(self.b2(y)))
            return self.b4(self.idn(self.c4(y)))

    m = Net().eval()
    rec = P.fold_conv_bn(m, torch.randn(2, 3, 6, 6))
    reasons = dict(rec.skipped)
    assert "also read by torch.cat (outside a module)" in reasons["b1"]
    assert "also read by torch.mul_" in reasons["b2"]
    assert "Sub is a Conv2d subclass with its own forward" in reasons["b3"]
    assert rec.changed == ["c4 <- b4"]
