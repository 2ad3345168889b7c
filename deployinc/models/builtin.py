"""Built-in architectures from the Inception literature, small enough to train and test on a CPU.

Building blocks:

- :class:`ConvBNReLU` — conv (no bias) + BatchNorm + ReLU, the unit the Conv+BN fold works on.
- :class:`InceptionV1Block` — GoogLeNet's module: 1x1; 1x1 reduce then 3x3; 1x1 reduce then 5x5; 3x3 max-pool then
  1x1 projection; concatenated on channels. (Here with BN after every conv, as in BN-Inception.)
- :class:`InceptionV3Block` — factorized convolutions (3x3 as 1x3 then 3x1), average-pool branch, BN everywhere.
- :class:`GridReduction` — Inception v3's grid reduction: parallel stride-2 conv and pool branches.
- :class:`Bottleneck` — ResNet's 1x1 reduce / 3x3 / 1x1 expand with a projection shortcut when the shape changes.
- :class:`DepthwiseSeparable` — depthwise k x k (groups = in channels) then pointwise 1x1 (MobileNet, Xception).

Registered models (``deployinc models`` lists them): ``inception_cifar``, ``inception_v3_cifar``,
``resnet_cifar``, ``depthwise_cifar`` (3 x 32 x 32 inputs, 10 classes, mean = std = 0.5) and
``inception_v1_block`` (one v1 module on a 256 x 28 x 28 feature map with a small classifier head, for
``deployinc profile inception_v1_block --compare-naive``).

Every block exposes ``out_channels`` so networks thread real widths instead of hard-coding them (the CIFAR
network of the tutorials did, and its widths did not add up).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import torch
from torch import nn

from .registry import register_model

CIFAR_MEAN = (0.5, 0.5, 0.5)
CIFAR_STD = (0.5, 0.5, 0.5)

__all__ = [
    "Bottleneck",
    "ConvBNReLU",
    "DepthwiseSeparable",
    "GridReduction",
    "InceptionAuxOutputs",
    "InceptionCifar",
    "InceptionV1Block",
    "InceptionV3Block",
    "InceptionV3Cifar",
    "ResNetCifar",
    "DepthwiseCifar",
    "BlockClassifier",
]


class InceptionAuxOutputs(NamedTuple):
    """Training-mode output of a network with an auxiliary head (as torchvision's ``InceptionOutputs``)."""

    logits: torch.Tensor
    aux_logits: torch.Tensor | None


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + ReLU; children are ``conv``, ``bn``, ``relu``.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        kernel_size: Kernel size, an int or (kh, kw).
        stride: Stride.
        padding: Padding, an int or (ph, pw).
        groups: Convolution groups (``in_ch`` for a depthwise convolution).
        relu: Whether to end with a ReLU (the last conv of a residual branch does not).
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int | tuple[int, int] = 1,
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        groups: int = 1,
        relu: bool = True,
    ):
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, groups=groups, bias=False),
            bn=nn.BatchNorm2d(out_ch),
        )
        if relu:
            layers["relu"] = nn.ReLU(inplace=True)
        super().__init__(layers)
        self.out_channels = out_ch


class InceptionV1Block(nn.Module):
    """The Inception v1 (GoogLeNet) module, with BN after each convolution.

    Four branches on the same input, concatenated on channels:
    ``branch1`` 1x1; ``branch2`` 1x1 reduce then 3x3 (padding 1); ``branch3`` 1x1 reduce then 5x5 (padding 2);
    ``branch4`` 3x3 max-pool (stride 1, padding 1) then 1x1 projection. Spatial size is kept.

    Args:
        in_ch: Input channels.
        n1x1: Output channels of the 1x1 branch.
        n3x3_reduce: Channels of the 1x1 reduction before the 3x3.
        n3x3: Output channels of the 3x3 branch.
        n5x5_reduce: Channels of the 1x1 reduction before the 5x5.
        n5x5: Output channels of the 5x5 branch.
        pool_proj: Output channels of the pool branch's 1x1 projection.
    """

    def __init__(
        self, in_ch: int, n1x1: int, n3x3_reduce: int, n3x3: int, n5x5_reduce: int, n5x5: int, pool_proj: int
    ):
        super().__init__()
        self.in_channels = in_ch
        self.config = (in_ch, n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj)
        self.branch1 = nn.Sequential(ConvBNReLU(in_ch, n1x1, 1))
        self.branch2 = nn.Sequential(ConvBNReLU(in_ch, n3x3_reduce, 1), ConvBNReLU(n3x3_reduce, n3x3, 3, padding=1))
        self.branch3 = nn.Sequential(ConvBNReLU(in_ch, n5x5_reduce, 1), ConvBNReLU(n5x5_reduce, n5x5, 5, padding=2))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), ConvBNReLU(in_ch, pool_proj, 1)
        )
        self.out_channels = n1x1 + n3x3 + n5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x in_ch x H x W -> N x (n1x1 + n3x3 + n5x5 + pool_proj) x H x W
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionV3Block(nn.Module):
    """An Inception v3 module with factorized convolutions and an average-pool branch, BN everywhere.

    ``branch1`` 1x1; ``branch2`` 1x1 reduce, then a 3x3 factorized as 1x3 then 3x1; ``branch3`` 1x1 reduce, then
    two stacked factorized 3x3s (the v2/v3 replacement of the 5x5); ``branch4`` 3x3 average pool (stride 1,
    padding 1) then 1x1 projection. Factorizing n x n into 1 x n + n x 1 costs 2n instead of n^2 multiply-adds per
    output channel and input channel, and works best on mid-sized maps (12-20 px).

    Args:
        in_ch: Input channels.
        n1x1: Output channels of the 1x1 branch.
        n3x3_reduce: Channels of the reduction before the factorized 3x3.
        n3x3: Output channels of the factorized 3x3 branch.
        n3x3dbl_reduce: Channels of the reduction before the double factorized 3x3.
        n3x3dbl: Output channels of the double 3x3 branch.
        pool_proj: Output channels of the average-pool branch's projection.
    """

    def __init__(
        self,
        in_ch: int,
        n1x1: int,
        n3x3_reduce: int,
        n3x3: int,
        n3x3dbl_reduce: int,
        n3x3dbl: int,
        pool_proj: int,
    ):
        super().__init__()
        self.in_channels = in_ch
        self.branch1 = nn.Sequential(ConvBNReLU(in_ch, n1x1, 1))
        self.branch2 = nn.Sequential(
            ConvBNReLU(in_ch, n3x3_reduce, 1),
            ConvBNReLU(n3x3_reduce, n3x3_reduce, (1, 3), padding=(0, 1)),
            ConvBNReLU(n3x3_reduce, n3x3, (3, 1), padding=(1, 0)),
        )
        self.branch3 = nn.Sequential(
            ConvBNReLU(in_ch, n3x3dbl_reduce, 1),
            ConvBNReLU(n3x3dbl_reduce, n3x3dbl_reduce, (1, 3), padding=(0, 1)),
            ConvBNReLU(n3x3dbl_reduce, n3x3dbl, (3, 1), padding=(1, 0)),
            ConvBNReLU(n3x3dbl, n3x3dbl, (1, 3), padding=(0, 1)),
            ConvBNReLU(n3x3dbl, n3x3dbl, (3, 1), padding=(1, 0)),
        )
        self.branch4 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), ConvBNReLU(in_ch, pool_proj, 1)
        )
        self.out_channels = n1x1 + n3x3 + n3x3dbl + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x in_ch x H x W -> N x (n1x1 + n3x3 + n3x3dbl + pool_proj) x H x W
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GridReduction(nn.Module):
    """Inception v3 grid reduction: a stride-2 conv branch beside a stride-2 max-pool branch, concatenated.

    Halving the grid with parallel branches avoids both the representational bottleneck of pooling first and the
    cost of convolving at full size first.

    Args:
        in_ch: Input channels.
        reduce: Channels of the 1x1 reduction before the stride-2 3x3.
        out: Output channels of the stride-2 3x3.
    """

    def __init__(self, in_ch: int, reduce: int, out: int):
        super().__init__()
        self.branch1 = nn.Sequential(ConvBNReLU(in_ch, reduce, 1), ConvBNReLU(reduce, out, 3, stride=2, padding=1))
        self.branch2 = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1))
        self.out_channels = out + in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # N x in_ch x H x W -> N x (out + in_ch) x H/2 x W/2
        return torch.cat([self.branch1(x), self.branch2(x)], 1)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce to out/4, 3x3 (stride ``stride``), 1x1 expand; BN after each conv.

    ReLU after the first two convs and after the residual sum. The shortcut is the identity, or a projection
    (1x1 conv with the block's stride + BN) when the channel count or the spatial size changes.

    Args:
        in_ch: Input channels.
        out_ch: Output channels (a multiple of 4).
        stride: Stride of the 3x3 convolution.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        mid = out_ch // 4
        self.conv1 = ConvBNReLU(in_ch, mid, 1)
        self.conv2 = ConvBNReLU(mid, mid, 3, stride=stride, padding=1)
        self.conv3 = ConvBNReLU(mid, out_ch, 1, relu=False)
        self.shortcut: nn.Module = (
            ConvBNReLU(in_ch, out_ch, 1, stride=stride, relu=False)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(self.conv2(self.conv1(x)))  # N x out_ch x H/s x W/s
        return self.relu(out + self.shortcut(x))


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k convolution (groups = in channels) then pointwise 1x1, each with BN + ReLU.

    Costs ``H*W*C_in*(k*k + C_out)`` multiply-adds instead of ``H*W*C_in*k*k*C_out`` for a full convolution.

    Args:
        in_ch: Input channels.
        out_ch: Output channels.
        stride: Stride of the depthwise convolution.
        kernel_size: Depthwise kernel size.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, kernel_size: int = 3):
        super().__init__()
        self.depthwise = ConvBNReLU(in_ch, in_ch, kernel_size, stride=stride, padding=kernel_size // 2, groups=in_ch)
        self.pointwise = ConvBNReLU(in_ch, out_ch, 1)
        self.out_channels = out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))  # N x out_ch x H/s x W/s


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# Networks ---------------------------------------------------------------------------------------------------------


class InceptionCifar(nn.Module):
    """The CIFAR-10 Inception network of the tutorials, with its channel widths threaded correctly.

    Stem conv 3->64 + BN + ReLU + 2x2 max-pool; two v1 modules (64 -> 64 -> 88); 2x2 max-pool; one v1 module
    (88 -> 128); global average pool; linear 128 -> ``num_classes``.

    Args:
        num_classes: Number of logits.
        dropout: Dropout before the classifier (removed for deployment).
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        self.stem = ConvBNReLU(3, 64, 3, padding=1)
        self.pool1 = nn.MaxPool2d(2)
        self.inception1 = InceptionV1Block(64, 16, 16, 24, 8, 16, 8)
        self.inception2 = InceptionV1Block(self.inception1.out_channels, 24, 24, 32, 8, 16, 16)
        self.pool2 = nn.MaxPool2d(2)
        self.inception3 = InceptionV1Block(self.inception2.out_channels, 32, 48, 64, 8, 16, 16)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.inception3.out_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.stem(x))  # N x 64 x 16 x 16
        x = self.inception1(x)  # N x 64 x 16 x 16
        x = self.inception2(x)  # N x 88 x 16 x 16
        x = self.pool2(x)  # N x 88 x 8 x 8
        x = self.inception3(x)  # N x 128 x 8 x 8
        x = torch.flatten(self.avgpool(x), 1)  # N x 128
        return self.fc(self.dropout(x))  # N x num_classes


class InceptionV3Cifar(nn.Module):
    """A small Inception v3 for 32x32 inputs: factorized modules, a grid reduction and an auxiliary head.

    Like torchvision's ``Inception3`` it has an ``AuxLogits`` head and an ``aux_logits`` switch: in training mode
    (with the switch on) ``forward`` returns :class:`InceptionAuxOutputs`, in eval mode the logits alone.

    Args:
        num_classes: Number of logits.
        aux_logits: Build the auxiliary classifier (used in training only).
        dropout: Dropout before the classifier.
    """

    def __init__(self, num_classes: int = 10, aux_logits: bool = True, dropout: float = 0.2):
        super().__init__()
        self.aux_logits = aux_logits
        self.stem = nn.Sequential(ConvBNReLU(3, 32, 3, padding=1), ConvBNReLU(32, 48, 3, padding=1), nn.MaxPool2d(2))
        self.mixed1 = InceptionV3Block(48, 16, 16, 24, 8, 16, 8)
        self.mixed2 = InceptionV3Block(self.mixed1.out_channels, 24, 24, 32, 16, 24, 16)
        self.reduction = GridReduction(self.mixed2.out_channels, 32, 48)
        self.mixed3 = InceptionV3Block(self.reduction.out_channels, 32, 32, 48, 16, 32, 16)
        self.AuxLogits: nn.Module | None = (
            nn.Sequential(
                nn.AdaptiveAvgPool2d(4),
                ConvBNReLU(self.mixed2.out_channels, 32, 1),
                nn.Flatten(),
                nn.Linear(32 * 4 * 4, num_classes),
            )
            if aux_logits
            else None
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.mixed3.out_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor | InceptionAuxOutputs:
        x = self.stem(x)  # N x 48 x 16 x 16
        x = self.mixed1(x)  # N x 64 x 16 x 16
        x = self.mixed2(x)  # N x 96 x 16 x 16
        aux = None
        if self.training and self.aux_logits and self.AuxLogits is not None:
            aux = self.AuxLogits(x)  # N x num_classes
        x = self.reduction(x)  # N x 144 x 8 x 8
        x = self.mixed3(x)  # N x 128 x 8 x 8
        x = torch.flatten(self.avgpool(x), 1)  # N x 128
        x = self.fc(self.dropout(x))  # N x num_classes
        if self.training and self.aux_logits and self.AuxLogits is not None:
            return InceptionAuxOutputs(x, aux)
        return x


class ResNetCifar(nn.Module):
    """A small bottleneck ResNet for 32x32 inputs.

    Stem conv 3->32; bottlenecks 32->64 (projection), 64->64, 64->128 (stride 2), 128->256 (stride 2); global
    average pool; linear.

    Args:
        num_classes: Number of logits.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = ConvBNReLU(3, 32, 3, padding=1)
        blocks = [Bottleneck(32, 64), Bottleneck(64, 64), Bottleneck(64, 128, stride=2), Bottleneck(128, 256, stride=2)]
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(blocks[-1].out_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # N x 32 x 32 x 32
        x = self.layers(x)  # N x 256 x 8 x 8
        x = torch.flatten(self.avgpool(x), 1)  # N x 256
        return self.fc(x)  # N x num_classes


class DepthwiseCifar(nn.Module):
    """A small depthwise-separable network (MobileNet v1 / Xception style) for 32x32 inputs.

    Args:
        num_classes: Number of logits.
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = ConvBNReLU(3, 32, 3, padding=1)
        blocks = [
            DepthwiseSeparable(32, 64),
            DepthwiseSeparable(64, 128, stride=2),
            DepthwiseSeparable(128, 128),
            DepthwiseSeparable(128, 256, stride=2),
            DepthwiseSeparable(256, 256),
        ]
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(blocks[-1].out_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # N x 32 x 32 x 32
        x = self.layers(x)  # N x 256 x 8 x 8
        x = torch.flatten(self.avgpool(x), 1)  # N x 256
        return self.fc(x)  # N x num_classes


class BlockClassifier(nn.Module):
    """One Inception v1 module on a feature map, with a global-average-pool + linear head so it is a classifier.

    Args:
        block: The module to wrap (its ``out_channels`` sizes the head).
        num_classes: Number of logits.
    """

    def __init__(self, block: nn.Module, num_classes: int = 10):
        super().__init__()
        self.inception = block
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(block.out_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inception(x)  # N x out_channels x H x W
        x = torch.flatten(self.avgpool(x), 1)  # N x out_channels
        return self.fc(x)  # N x num_classes


# Registration -----------------------------------------------------------------------------------------------------

#: The module of SEEDS.md's cost arithmetic: 1x1 128; 64 -> 3x3 192; 64 -> 5x5 96; pool -> 64 (on 28x28x256).
V1_BLOCK_CONFIG = (256, 128, 64, 192, 64, 96, 64)


@register_model(
    "inception_cifar",
    family="inception",
    input_size=(3, 32, 32),
    num_classes=10,
    mean=CIFAR_MEAN,
    std=CIFAR_STD,
    description="CIFAR-10 Inception v1 network of the tutorials, widths 64 -> 64 -> 88 -> 128 -> linear",
)
def inception_cifar(num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """CIFAR-10 Inception v1 network (stem, three v1 modules, global average pool, linear)."""
    return InceptionCifar(num_classes=num_classes, **kwargs)


@register_model(
    "inception_v3_cifar",
    family="inception",
    input_size=(3, 32, 32),
    num_classes=10,
    mean=CIFAR_MEAN,
    std=CIFAR_STD,
    aux_heads=("AuxLogits",),
    description="small Inception v3 for 32x32: factorized 1x3/3x1 modules, grid reduction, aux head",
)
def inception_v3_cifar(num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Small Inception v3 network with factorized convolutions and an auxiliary head."""
    return InceptionV3Cifar(num_classes=num_classes, **kwargs)


@register_model(
    "resnet_cifar",
    family="resnet",
    input_size=(3, 32, 32),
    num_classes=10,
    mean=CIFAR_MEAN,
    std=CIFAR_STD,
    description="small bottleneck ResNet for 32x32 inputs (projection shortcuts)",
)
def resnet_cifar(num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Small bottleneck ResNet for CIFAR-size inputs."""
    return ResNetCifar(num_classes=num_classes, **kwargs)


@register_model(
    "depthwise_cifar",
    family="depthwise",
    input_size=(3, 32, 32),
    num_classes=10,
    mean=CIFAR_MEAN,
    std=CIFAR_STD,
    description="small depthwise-separable network (MobileNet v1 / Xception style) for 32x32 inputs",
)
def depthwise_cifar(num_classes: int = 10, **kwargs: Any) -> nn.Module:
    """Small depthwise-separable network for CIFAR-size inputs."""
    return DepthwiseCifar(num_classes=num_classes, **kwargs)


@register_model(
    "inception_v1_block",
    family="inception",
    input_size=(256, 28, 28),
    num_classes=10,
    mean=(0.0,) * 256,
    std=(1.0,) * 256,
    description="one Inception v1 module (256 -> 128 + 192 + 96 + 64 on 28x28) with a pool + linear head",
)
def inception_v1_block(num_classes: int = 10, config: tuple[int, ...] = V1_BLOCK_CONFIG) -> nn.Module:
    """One Inception v1 module with a global-average-pool + linear head (SEEDS.md's cost example)."""
    return BlockClassifier(InceptionV1Block(*config), num_classes=num_classes)
