"""Count parameters and multiply-adds of a model with forward hooks, and roll them up per Inception module.

What is counted (the convention of torchvision's published ``_ops`` figures, which this reproduces exactly for
googlenet, inception_v3, resnet50, mobilenet_v2 and mobilenet_v3_large):

- convolution: ``output elements * in_channels / groups * kh * kw`` (per output element, one multiply-add per
  weight it sees; the bias add is not counted);
- transposed convolution: ``input elements * out_channels / groups * kh * kw``;
- linear: ``in_features * out_features`` per output row (per sample for a 2-D input).

BatchNorm, activations, pooling and additions are not multiply-adds in this convention. The elements that
BatchNorm layers normalise are counted separately (``bn_elements``), because the Conv+BN fold removes exactly that
work.

Inception modules are found by structure: a module with two or more direct children whose names start with
``branch``. Children are grouped into branches by name, without a trailing ``_<n>`` / ``_<n><letter>`` step suffix
(torchvision's ``branch3x3dbl_1``, ``_2``, ``_3a`` are one branch).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_POOL = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
)
#: Modules that pass one tensor through without changing which conv it came from (for the naive comparison).
_PASS_THROUGH = (
    *_BN,
    nn.ReLU,
    nn.ReLU6,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.SiLU,
    nn.GELU,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
)
_BRANCH_STEP = re.compile(r"_\d+[a-z]?$")


@dataclass
class ModuleCost:
    """The cost of one module (a leaf, or a roll-up of the leaves under a path).

    Attributes:
        path: Dotted submodule path (``""`` for the whole model).
        type: Class name of the module.
        params: Parameters under this path (every parameter the module owns, used in the forward or not).
        macs: Multiply-adds of the forward pass on the profiled input (all N samples).
        bn_elements: Elements normalised by BatchNorm layers under this path.
    """

    path: str
    type: str
    params: int = 0
    macs: int = 0
    bn_elements: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "params": self.params, "macs": self.macs, "bn_elements": self.bn_elements}


@dataclass
class BlockCost:
    """An Inception module and its branches.

    Attributes:
        total: The module's roll-up.
        branches: Branch name -> roll-up of the children in that branch.
    """

    total: ModuleCost
    branches: dict[str, ModuleCost] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.total.to_dict(), "branches": {k: v.to_dict() for k, v in self.branches.items()}}


@dataclass
class ConvCall:
    """One convolution call seen during the forward pass (for the naive comparison)."""

    path: str
    module: nn.Module
    in_channels: int
    out_elements: int  # output elements of the call (all N samples)
    kernel: int  # kh * kw (* kd)
    groups: int
    source: str | None  # path of the leaf module that returned its input; None for a functional op or the input


@dataclass
class Counts:
    """Raw per-leaf counts of one forward pass."""

    leaf_macs: dict[str, int]
    leaf_bn: dict[str, int]
    params: dict[str, int]  # parameter name -> numel
    types: dict[str, str]  # module path -> class name
    conv_calls: list[ConvCall]
    block_inputs: dict[str, int]  # block path -> id of its input tensor
    producers: dict[int, str]  # id(tensor) -> path of the leaf module that returned it
    pass_inputs: dict[str, int]  # path of pass-through / pool leaf -> id of its input
    block_in_channels: dict[str, int]
    block_out_channels: dict[str, int]


def conv_macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one convolution call: output elements x (in_channels / groups) x kernel volume."""
    k = 1
    for s in module.kernel_size:
        k *= int(s)
    return int(out.numel()) * (module.in_channels // module.groups) * k


def conv_transpose_macs(module: nn.Module, inp: torch.Tensor) -> int:
    """Multiply-adds of one transposed convolution: input elements x (out_channels / groups) x kernel volume."""
    k = 1
    for s in module.kernel_size:
        k *= int(s)
    return int(inp.numel()) * (module.out_channels // module.groups) * k


def linear_macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one linear call: in_features x out_features per output row."""
    rows = int(out.numel()) // module.out_features
    return rows * module.in_features * module.out_features


def find_blocks(model: nn.Module) -> dict[str, dict[str, list[str]]]:
    """Inception modules of ``model``: path -> {branch name: [child paths]}, in module order."""
    blocks: dict[str, dict[str, list[str]]] = {}
    for path, module in model.named_modules():
        children = [n for n, c in module.named_children() if c is not None]
        branch_children = [n for n in children if n.startswith("branch")]
        if len(branch_children) < 2:
            continue
        groups: dict[str, list[str]] = {}
        for n in branch_children:
            groups.setdefault(_BRANCH_STEP.sub("", n), []).append(f"{path}.{n}" if path else n)
        blocks[path] = groups
    return blocks


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    if isinstance(obj, dict):
        for o in obj.values():
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def count(model: nn.Module, example: torch.Tensor, track_flow: bool = False) -> Counts:
    """Run one forward pass of ``model`` on ``example`` (no grad, the model's current mode) and count.

    Args:
        model: The module.
        example: The input.
        track_flow: Also record which module produced each convolution's input (for the naive comparison). Keeps
            every leaf output alive until the pass ends.
    """
    leaves = {p: m for p, m in model.named_modules() if not any(True for _ in m.children())}
    blocks = find_blocks(model) if track_flow else {}
    leaf_macs: dict[str, int] = {}
    leaf_bn: dict[str, int] = {}
    conv_calls: list[ConvCall] = []
    producers: dict[int, str] = {}
    pass_inputs: dict[str, int] = {}
    block_inputs: dict[str, int] = {}
    block_in_channels: dict[str, int] = {}
    block_out_channels: dict[str, int] = {}
    keep: list[Any] = []  # tensors whose id() is a key: kept alive so ids stay unique
    handles = []

    def leaf_hook(path: str):
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            inp = _first_tensor(args)
            t_out = _first_tensor(out)
            macs = 0
            if isinstance(mod, _CONV) and t_out is not None:
                macs = conv_macs(mod, t_out)
            elif isinstance(mod, _CONV_T) and inp is not None:
                macs = conv_transpose_macs(mod, inp)
            elif isinstance(mod, nn.Linear) and t_out is not None:
                macs = linear_macs(mod, t_out)
            elif isinstance(mod, _BN) and t_out is not None:
                leaf_bn[path] = leaf_bn.get(path, 0) + int(t_out.numel())
            if macs:
                leaf_macs[path] = leaf_macs.get(path, 0) + macs
            if not track_flow:
                return
            if isinstance(mod, _CONV) and t_out is not None and inp is not None:
                k = 1
                for s in mod.kernel_size:
                    k *= int(s)
                conv_calls.append(
                    ConvCall(
                        path=path,
                        module=mod,
                        in_channels=mod.in_channels,
                        out_elements=int(t_out.numel()),
                        kernel=k,
                        groups=mod.groups,
                        source=producers.get(id(inp)),
                    )
                )
                keep.append(inp)
                pass_inputs[path] = id(inp)
            elif inp is not None and isinstance(mod, (*_PASS_THROUGH, *_POOL)):
                pass_inputs[path] = id(inp)
                keep.append(inp)
            if t_out is not None and t_out is not inp:  # an in-place op keeps the tensor's real producer
                keep.append(t_out)
                producers[id(t_out)] = path

        return hook

    def block_hook(path: str):
        def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
            inp = _first_tensor(args)
            if inp is not None:
                keep.append(inp)
                block_inputs[path] = id(inp)
                block_in_channels[path] = int(inp.shape[1]) if inp.dim() > 1 else 0

        return hook

    def block_out_hook(path: str):
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            t = _first_tensor(out)
            if t is not None:
                block_out_channels[path] = int(t.shape[1]) if t.dim() > 1 else 0

        return hook

    try:
        for path, mod in leaves.items():
            handles.append(mod.register_forward_hook(leaf_hook(path)))
        for path in blocks:
            block = model.get_submodule(path)
            handles.append(block.register_forward_pre_hook(block_hook(path)))
            handles.append(block.register_forward_hook(block_out_hook(path)))
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    params = {n: int(p.numel()) for n, p in model.named_parameters()}
    types = {p: type(m).__name__ for p, m in model.named_modules()}
    result = Counts(
        leaf_macs=leaf_macs,
        leaf_bn=leaf_bn,
        params=params,
        types=types,
        conv_calls=conv_calls,
        block_inputs=block_inputs,
        producers=producers,
        pass_inputs=pass_inputs,
        block_in_channels=block_in_channels,
        block_out_channels=block_out_channels,
    )
    keep.clear()
    return result


def _under(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + ".")


def rollup(counts: Counts, prefix: str, type_name: str | None = None) -> ModuleCost:
    """Sum the counts of everything under ``prefix`` (``""`` is the whole model)."""
    return ModuleCost(
        path=prefix,
        type=type_name if type_name is not None else counts.types.get(prefix, "?"),
        params=sum(n for p, n in counts.params.items() if prefix == "" or p.startswith(prefix + ".")),
        macs=sum(n for p, n in counts.leaf_macs.items() if _under(p, prefix)),
        bn_elements=sum(n for p, n in counts.leaf_bn.items() if _under(p, prefix)),
    )


def rollup_paths(counts: Counts, paths: list[str], name: str) -> ModuleCost:
    """Sum the roll-ups of several sibling paths (one Inception branch made of several children)."""
    out = ModuleCost(path=name, type="branch")
    for p in paths:
        c = rollup(counts, p)
        out.params += c.params
        out.macs += c.macs
        out.bn_elements += c.bn_elements
    if len(paths) == 1:
        out.type = counts.types.get(paths[0], "branch")
    return out
