"""The built-in architectures: shapes, widths, block structure, aux heads, and that prepare + export work on them."""

from __future__ import annotations

import pytest
import torch

from deployinc.models import create_model, get_model_info, list_models
from deployinc.models.builtin import (
    Bottleneck,
    ConvBNReLU,
    DepthwiseSeparable,
    GridReduction,
    InceptionV1Block,
    InceptionV3Block,
)

BUILTINS = list_models("builtin")


def test_all_builtins_registered():
    for name in ("inception_cifar", "inception_v3_cifar", "resnet_cifar", "depthwise_cifar", "inception_v1_block"):
        assert name in BUILTINS
        info = get_model_info(name)
        assert info.source == "builtin" and info.description
    assert get_model_info("inception_cifar").input_size == (3, 32, 32)
    assert get_model_info("inception_cifar").mean == (0.5, 0.5, 0.5) == get_model_info("inception_cifar").std
    assert get_model_info("inception_v1_block").input_size == (256, 28, 28)
    assert get_model_info("resnet_cifar").family == "resnet"
    assert get_model_info("depthwise_cifar").family == "depthwise"
    assert get_model_info("inception_v3_cifar").aux_heads == ("AuxLogits",)


def test_builtin_list_is_the_registry():
    # The forward test below is parametrized over this list: it must be every registered built-in, not a hand list.
    from deployinc.models import registry

    assert BUILTINS and BUILTINS == sorted(registry._BUILTIN)
    assert all(get_model_info(n).source == "builtin" for n in BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_forward_shapes(name):
    info = get_model_info(name)
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        y = model(torch.randn(2, *info.input_size))
    assert y.shape == (2, 7)
    assert torch.isfinite(y).all()


def test_inception_v1_block_branches_and_widths():
    block = InceptionV1Block(192, 64, 96, 128, 16, 32, 32)
    assert block.out_channels == 256
    assert [n for n, _ in block.named_children()] == ["branch1", "branch2", "branch3", "branch4"]
    assert isinstance(block.branch2[1], ConvBNReLU)
    assert block.branch2[1].conv.kernel_size == (3, 3) and block.branch2[1].conv.padding == (1, 1)
    assert block.branch3[1].conv.kernel_size == (5, 5) and block.branch3[1].conv.padding == (2, 2)
    pool = block.branch4[0]
    assert isinstance(pool, torch.nn.MaxPool2d) and pool.stride == 1 and pool.padding == 1
    assert block(torch.randn(1, 192, 28, 28)).shape == (1, 256, 28, 28)


def test_inception_cifar_threads_real_widths():
    model = create_model("inception_cifar")
    assert model.inception1.out_channels == 64
    assert model.inception2.in_channels == 64 and model.inception2.out_channels == 88
    assert model.inception3.in_channels == 88 and model.inception3.out_channels == 128
    assert model.fc.in_features == 128 and model.fc.out_features == 10
    names = dict(model.named_modules())
    assert "inception3.branch2.1" in names and "inception3.branch2.1.conv" in names


def test_inception_v3_block_factorized_and_avgpool():
    block = InceptionV3Block(64, 16, 16, 24, 8, 16, 8)
    kernels = [m.kernel_size for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    assert (1, 3) in kernels and (3, 1) in kernels and (3, 3) not in kernels
    assert isinstance(block.branch4[0], torch.nn.AvgPool2d)
    bns = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    convs = [m for m in block.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(bns) == len(convs)
    assert block(torch.randn(1, 64, 16, 16)).shape == (1, block.out_channels, 16, 16)
    red = GridReduction(64, 32, 48)
    assert red(torch.randn(1, 64, 16, 16)).shape == (1, 48 + 64, 8, 8)


def test_inception_v3_cifar_aux_outputs_in_training_only():
    model = create_model("inception_v3_cifar", num_classes=5)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, tuple) and out.logits.shape == (2, 5) and out.aux_logits.shape == (2, 5)
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_bottleneck_projection_and_depthwise():
    b = Bottleneck(32, 64, stride=2)
    assert b.conv1.conv.out_channels == 16 and b.conv2.conv.stride == (2, 2)
    assert isinstance(b.shortcut, ConvBNReLU) and b.shortcut.conv.kernel_size == (1, 1)
    assert b(torch.randn(1, 32, 16, 16)).shape == (1, 64, 8, 8)
    assert isinstance(Bottleneck(64, 64).shortcut, torch.nn.Identity)
    d = DepthwiseSeparable(32, 64, stride=2)
    assert d.depthwise.conv.groups == 32 and d.pointwise.conv.kernel_size == (1, 1)
    assert d(torch.randn(1, 32, 16, 16)).shape == (1, 64, 8, 8)


def test_builtins_are_small_and_fast():
    """Small in parameters and in arithmetic (counted, not timed: a shared machine's clock says nothing here)."""
    from torch.utils.flop_counter import FlopCounterMode

    for name in ("inception_cifar", "inception_v3_cifar", "resnet_cifar", "depthwise_cifar"):
        model = create_model(name).eval()
        assert sum(p.numel() for p in model.parameters()) < 500_000
        x = torch.randn(8, 3, 32, 32)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
        assert counter.get_total_flops() < 8 * 200e6, (name, counter.get_total_flops())  # < 0.2 GFLOP per image


@pytest.mark.parametrize("name", ["inception_cifar", "inception_v3_cifar", "inception_v1_block"])
def test_prepare_folds_and_drops_aux(name):
    from deployinc.prepare import prepare

    info = get_model_info(name)
    torch.manual_seed(0)
    model = create_model(name)
    prepared, report = prepare(model, (1, *info.input_size), aux_heads=info.aux_heads)
    assert report.folds, "Conv+BN pairs were folded"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prepared.modules())
    if info.aux_heads:
        assert prepared.AuxLogits is None
