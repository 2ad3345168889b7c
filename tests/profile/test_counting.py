"""``deployinc.profile.counting``: multiply-adds and parameters of tiny modules, against figures derived by hand
in the comments, and the roll-ups per path and per Inception branch."""

from __future__ import annotations

import torch
from torch import nn

from deployinc.profile.counting import conv_macs, conv_transpose_macs, count, find_blocks, linear_macs, rollup, rollup_paths


def _out(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module(x)


# per-call formulas ------------------------------------------------------------------------------------------------


def test_conv_macs_plain_grouped_and_depthwise():
    # plain 3x3, 3 -> 8, 'same' padding on 2 x 3 x 6 x 5: 2*8*6*5 = 480 outputs x 3 inputs x 9 taps = 12960
    plain = nn.Conv2d(3, 8, 3, padding=1)
    assert conv_macs(plain, _out(plain, torch.zeros(2, 3, 6, 5))) == 12960
    # grouped, 8 -> 12 in 4 groups: each output sees 8/4 = 2 input channels; valid 3x3 on 6x6 gives 4x4:
    # 1*12*4*4 = 192 outputs x 2 x 9 = 3456
    grouped = nn.Conv2d(8, 12, 3, groups=4)
    assert conv_macs(grouped, _out(grouped, torch.zeros(1, 8, 6, 6))) == 3456
    # depthwise 5x5, 16 channels, stride 2, padding 2 on 8x8 -> 4x4: 16*4*4 = 256 outputs x 1 x 25 = 6400
    dw = nn.Conv2d(16, 16, 5, stride=2, padding=2, groups=16, bias=False)
    assert conv_macs(dw, _out(dw, torch.zeros(1, 16, 8, 8))) == 6400


def test_conv_macs_bias_does_not_count_and_kernels_of_any_rank():
    with_bias, without = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3, bias=False)
    x = torch.zeros(1, 3, 5, 5)
    # valid 3x3 on 5x5 -> 3x3: 1*4*3*3 = 36 outputs x 3 inputs x 9 taps = 972, with or without the bias
    assert conv_macs(with_bias, _out(with_bias, x)) == conv_macs(without, _out(without, x)) == 972
    # non-square 1x3 on 5x5 -> 5x3: 1*2*5*3 = 30 outputs x 3 inputs x 3 taps = 270
    rect = nn.Conv2d(3, 2, (1, 3))
    assert conv_macs(rect, _out(rect, torch.zeros(1, 3, 5, 5))) == 270
    # Conv1d k=3 on 1 x 2 x 10 -> 1 x 4 x 8: 32 outputs x 2 x 3 = 192
    c1 = nn.Conv1d(2, 4, 3)
    assert conv_macs(c1, _out(c1, torch.zeros(1, 2, 10))) == 192
    # Conv3d (1,2,3) on 1 x 2 x 4 x 4 x 4 -> 1 x 3 x 4 x 3 x 2: 72 outputs x 2 x 6 = 864
    c3 = nn.Conv3d(2, 3, (1, 2, 3))
    assert conv_macs(c3, _out(c3, torch.zeros(1, 2, 4, 4, 4))) == 864


def test_conv_transpose_macs_count_input_elements():
    # transposed 3x3, stride 2, 4 -> 6 in 2 groups: every input element is scattered into 6/2 = 3 output
    # channels x 9 taps; input 1 x 4 x 5 x 5 = 100 elements -> 2700 (the output, 11 x 11, is not what counts)
    t = nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)
    x = torch.zeros(1, 4, 5, 5)
    assert _out(t, x).shape == (1, 6, 11, 11)
    assert conv_transpose_macs(t, x) == 2700


def test_linear_macs_per_row():
    fc = nn.Linear(5, 3)
    assert linear_macs(fc, _out(fc, torch.zeros(4, 5))) == 4 * 5 * 3  # 60
    assert linear_macs(fc, _out(fc, torch.zeros(2, 7, 5))) == 14 * 5 * 3  # 210: every row of a 3-D input


# count ------------------------------------------------------------------------------------------------------------


def _small() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 0: weight 4*3*3*3 = 108, bias 4
        nn.BatchNorm2d(4),  # 1: weight 4, bias 4 (running stats are buffers)
        nn.ReLU(),  # 2
        nn.AdaptiveAvgPool2d(1),  # 3
        nn.Flatten(),  # 4
        nn.Linear(4, 2),  # 5: weight 8, bias 2
    ).eval()


def test_count_params_macs_and_bn_elements_of_a_small_sequential():
    m = _small()
    c = count(m, torch.zeros(2, 3, 8, 8))
    assert c.params == {"0.weight": 108, "0.bias": 4, "1.weight": 4, "1.bias": 4, "5.weight": 8, "5.bias": 2}
    # conv: 2*4*8*8 = 512 outputs x 3 x 9 = 13824; linear: 2 rows x 4 x 2 = 16; nothing else is a multiply-add
    assert c.leaf_macs == {"0": 13824, "5": 16}
    assert c.leaf_bn == {"1": 512}
    assert c.types[""] == "Sequential" and c.types["0"] == "Conv2d" and c.types["5"] == "Linear"
    total = rollup(c, "")
    assert (total.params, total.macs, total.bn_elements, total.type) == (130, 13840, 512, "Sequential")
    assert not m[0]._forward_hooks and not m[5]._forward_hooks  # hooks are removed
    assert c.conv_calls == [] and c.producers == {}  # no flow tracking unless asked


def test_count_scales_with_the_batch_and_adds_up_a_module_called_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1, bias=False)  # 4 params
            self.unused = nn.Linear(3, 3)  # 12 params, never called

        def forward(self, x):
            return self.conv(self.conv(x))

    m = Twice()
    one = count(m, torch.zeros(1, 2, 4, 4))
    # each call: 2*4*4 = 32 outputs x 2 inputs x 1 tap = 64; two calls = 128
    assert one.leaf_macs == {"conv": 128}
    assert sum(one.params.values()) == 16  # parameters are counted whether used or not
    assert count(m, torch.zeros(3, 2, 4, 4)).leaf_macs == {"conv": 384}


def test_track_flow_records_each_convolutions_producer():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                      nn.Conv2d(4, 2, 3, groups=2)).eval()
    c = count(m, torch.zeros(1, 3, 6, 6), track_flow=True)
    calls = {k.path: k for k in c.conv_calls}
    assert list(calls) == ["0", "3", "6"]
    assert calls["0"].source is None  # the model's input
    assert calls["3"].source == "2"  # a ReLU returning a new tensor produced it
    assert calls["6"].source == "4"  # an in-place ReLU keeps the BatchNorm as the producer
    assert (calls["6"].in_channels, calls["6"].groups, calls["6"].kernel, calls["6"].out_elements) == (4, 2, 9, 2 * 4 * 4)


# Inception blocks and roll-ups ------------------------------------------------------------------------------------


class Block(nn.Module):
    """Four branches in torchvision's naming: branch1, branch3x3_1 + _2, branch3x3dbl_3a, branch_pool."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.branch1 = nn.Conv2d(c, 2, 1, bias=False)  # 8 params
        self.branch3x3_1 = nn.Conv2d(c, 2, 1, bias=False)  # 8
        self.branch3x3_2 = nn.Conv2d(2, 2, 3, padding=1, bias=False)  # 36
        self.branch3x3dbl_3a = nn.Conv2d(c, 2, 3, padding=1, bias=False)  # 72
        self.branch_pool = nn.Conv2d(c, 2, 1, bias=False)  # 8
        self.other = nn.BatchNorm2d(8)  # 16: not a branch

    def forward(self, x):
        y = torch.cat([self.branch1(x), self.branch3x3_2(self.branch3x3_1(x)), self.branch3x3dbl_3a(x), self.branch_pool(x)], 1)
        return self.other(y)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1, bias=False)  # 12 params
        self.mixed = Block(4)
        self.mixed2 = Block(8)
        self.single = nn.Sequential()
        self.single.add_module("branch_a", nn.ReLU())  # one branch child only: no block
        self.single.add_module("tail", nn.Identity())

    def forward(self, x):
        return self.single(self.mixed2(self.mixed(self.stem(x))))


def test_find_blocks_groups_children_by_branch_name():
    blocks = find_blocks(Net())
    assert list(blocks) == ["mixed", "mixed2"]  # in module order; "single" has one branch child
    assert blocks["mixed"] == {
        "branch1": ["mixed.branch1"],
        "branch3x3": ["mixed.branch3x3_1", "mixed.branch3x3_2"],
        "branch3x3dbl": ["mixed.branch3x3dbl_3a"],
        "branch_pool": ["mixed.branch_pool"],
    }
    assert find_blocks(Block()) == {"": {"branch1": ["branch1"], "branch3x3": ["branch3x3_1", "branch3x3_2"],
                                         "branch3x3dbl": ["branch3x3dbl_3a"], "branch_pool": ["branch_pool"]}}  # a root block


def test_rollup_per_block_and_branch():
    net = Net().eval()
    c = count(net, torch.zeros(1, 3, 5, 5), track_flow=True)
    # every conv keeps the 5x5 grid: per output element, (in/groups) x taps multiply-adds
    # mixed: branch1 2*25 x 4 = 200; 3x3_1 2*25 x 4 = 200; 3x3_2 2*25 x 2*9 = 900; dbl_3a 2*25 x 4*9 = 1800; pool 200
    mixed = rollup(c, "mixed")
    assert (mixed.path, mixed.type, mixed.params, mixed.macs, mixed.bn_elements) == ("mixed", "Block", 8 + 8 + 36 + 72 + 8 + 16, 3300, 8 * 25)
    # "mixed" must not take in its sibling "mixed2" (a prefix of the name, not of the path)
    mixed2 = rollup(c, "mixed2")
    assert mixed2.params == 16 + 16 + 36 + 144 + 16 + 16 and mixed2.macs == 400 + 400 + 900 + 3600 + 400
    assert rollup(c, "").macs == 4 * 25 * 3 + mixed.macs + mixed2.macs
    branch = rollup_paths(c, ["mixed.branch3x3_1", "mixed.branch3x3_2"], "branch3x3")
    assert (branch.path, branch.type, branch.params, branch.macs) == ("branch3x3", "branch", 44, 1100)
    single = rollup_paths(c, ["mixed.branch1"], "branch1")
    assert (single.type, single.params, single.macs) == ("Conv2d", 8, 200)
    leaf = rollup(c, "mixed.branch3x3_2", type_name="conv")
    assert (leaf.type, leaf.params, leaf.macs) == ("conv", 36, 900)
    assert rollup(c, "nowhere").type == "?" and rollup(c, "nowhere").macs == 0
    assert c.block_in_channels == {"mixed": 4, "mixed2": 8} and c.block_out_channels == {"mixed": 8, "mixed2": 8}
    d = mixed.to_dict()
    assert d == {"path": "mixed", "type": "Block", "params": 148, "macs": 3300, "bn_elements": 200}


def test_rollup_of_numbered_children_does_not_take_in_longer_names():
    m = nn.Sequential(*[nn.Linear(2, 2) for _ in range(12)])
    c = count(m, torch.zeros(1, 2))
    one = rollup(c, "1")  # not "10" and "11"
    assert (one.params, one.macs) == (6, 4)
    assert rollup(c, "").params == 6 * 12 and rollup(c, "").macs == 4 * 12
