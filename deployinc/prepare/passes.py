"""Torch-level deployment passes: eval mode, auxiliary heads, dropout, Conv+BatchNorm folding.

Each pass is a small function ``pass(model, ...) -> PassRecord`` that changes the model in place and records
what it changed, and what it skipped and why. :func:`deployinc.prepare.prepare` deep-copies the model first
(``inplace=False``), runs them in order, and checks the result against the original.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .fusion import fold_conv_bn_weights
from .records import PassRecord

#: Attribute names of auxiliary classifiers in torchvision and common user code.
AUX_HEAD_NAMES = ("aux1", "aux2", "AuxLogits", "aux_classifier")
#: Boolean attributes that switch auxiliary outputs on.
AUX_FLAGS = ("aux_logits",)
DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
PLAIN_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _set_submodule(root: nn.Module, path: str, new: nn.Module | None) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    if isinstance(parent, (nn.Sequential, nn.ModuleList)) and attr.isdigit():
        parent[int(attr)] = new if new is not None else nn.Identity()
    else:
        setattr(parent, attr, new)


class DroppedHead(nn.Module):
    """Stands in for a removed auxiliary head whose caller does not check for ``None``; returns ``None``."""

    def forward(self, *args: Any, **kwargs: Any) -> None:  # noqa: D102
        return None


class SelectOutput(nn.Module):
    """Keeps only the main output of a model that returns a tuple, list, namedtuple or dict."""

    def __init__(self, model: nn.Module, index: int | str = 0):
        super().__init__()
        self.model = model
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.model(x)
        if isinstance(out, dict):
            return out[self.index] if isinstance(self.index, str) else next(iter(out.values()))
        if isinstance(out, (tuple, list)):
            return out[self.index if isinstance(self.index, int) else 0]
        return out


def eval_mode(model: nn.Module) -> PassRecord:
    """Put every module in eval mode (BatchNorm uses running statistics, dropout is off)."""
    rec = PassRecord("eval")
    rec.changed = [n or "<root>" for n, m in model.named_modules() if m.training]
    model.eval()
    return rec


def remove_aux_heads(model: nn.Module, names: tuple[str, ...] = ()) -> PassRecord:
    """Drop auxiliary classifiers (GoogLeNet aux1/aux2, Inception v3 AuxLogits, and ``names``).

    Known heads are set to ``None`` with their ``aux_logits`` switch off, which torchvision's forward supports.
    Heads named by the user are replaced by :class:`DroppedHead`. The output is reduced to one tensor by
    :func:`single_output`.
    """
    rec = PassRecord("remove_aux_heads")
    for path, module in list(model.named_modules()):
        owner_attrs = [a for a in AUX_HEAD_NAMES if isinstance(getattr(module, a, None), nn.Module)]
        for attr in owner_attrs:
            setattr(module, attr, None)
            rec.changed.append(f"{path}.{attr}" if path else attr)
        for flag in AUX_FLAGS:
            if isinstance(getattr(module, flag, None), bool) and getattr(module, flag):
                setattr(module, flag, False)
                rec.notes.append(f"{path or '<root>'}.{flag} = False")
    for name in names:
        if name in rec.changed:
            continue
        try:
            model.get_submodule(name)
        except AttributeError:
            rec.skipped.append((name, "no such submodule"))
            continue
        _set_submodule(model, name, DroppedHead())
        rec.changed.append(name)
    if hasattr(model, "transform_input"):
        rec.notes.append(
            f"transform_input={bool(model.transform_input)} kept"
            + (" (re-normalises ImageNet inputs inside the model)" if model.transform_input else "")
        )
    if not rec.changed:
        rec.notes.append("no auxiliary heads found")
    return rec


def remove_dropout(model: nn.Module) -> PassRecord:
    """Replace dropout layers (and timm's DropPath) by Identity; in eval mode they already are identities."""
    rec = PassRecord("remove_dropout")
    for path, module in list(model.named_modules()):
        if path and (isinstance(module, DROPOUT_TYPES) or type(module).__name__ in ("DropPath", "DropBlock2d")):
            _set_submodule(model, path, nn.Identity())
            rec.changed.append(path)
    return rec


def _bn_replacement(bn: nn.Module) -> nn.Module | None:
    """What replaces a folded BN: Identity, or the activation a BN+act module (timm BatchNormAct2d) carries."""
    if type(bn) in PLAIN_BN_TYPES:
        return nn.Identity()
    if type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act"):
        return nn.Sequential(getattr(bn, "drop", nn.Identity()), bn.act)
    return None


def fold_conv_bn(model: nn.Module, example: torch.Tensor) -> PassRecord:
    """Fold each BatchNorm into the convolution whose output it normalises.

    The pairs are found by running ``example`` once with hooks and matching the tensor a BN receives with the
    tensor a convolution produced. Preconditions, each reported when not met: the model is in eval mode; the BN
    has running statistics; the BN is a plain BatchNorm (or timm's BatchNormAct2d); the convolution and the BN
    run once per forward; no other module reads the convolution's output.
    """
    rec = PassRecord("fold_conv_bn")
    if model.training:
        rec.skipped.append(("<root>", "model is in training mode"))
        return rec
    names = {id(m): n for n, m in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    calls: dict[str, int] = {}
    consumers: dict[int, list[str]] = {}
    bn_input: dict[str, int] = {}
    handles = []

    def count(name: str) -> None:
        calls[name] = calls.get(name, 0) + 1

    def conv_hook(mod: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
        count(names[id(mod)])
        if isinstance(out, torch.Tensor):
            produced[id(out)] = (names[id(mod)], out)

    def pre_hook(mod: nn.Module, inputs: tuple[Any, ...]) -> None:
        name = names[id(mod)]
        for t in inputs:
            # Only convolution outputs are kept alive (in `produced`), so only their ids are unique: an id of
            # any other tensor may be reused after it is freed.
            if isinstance(t, torch.Tensor) and id(t) in produced:
                consumers.setdefault(id(t), []).append(name)
        if isinstance(mod, _BatchNorm):
            count(name)
            if inputs and isinstance(inputs[0], torch.Tensor):
                # Matched now, while the tensor is alive: the id of a tensor that is not a kept convolution
                # output (a sum, say) can be reused by a later convolution's output once it is freed.
                t0 = inputs[0]
                bn_input[name] = id(t0) if id(t0) in produced and produced[id(t0)][1] is t0 else -1

    for name, m in model.named_modules():
        if isinstance(m, CONV_TYPES):
            handles.append(m.register_forward_hook(conv_hook))
        if not list(m.children()) or isinstance(m, _BatchNorm):
            handles.append(m.register_forward_pre_hook(pre_hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()

    for bn_name, tid in bn_input.items():
        bn = model.get_submodule(bn_name)
        if tid not in produced:
            rec.skipped.append((bn_name, "its input is not the output of a convolution"))
            continue
        conv_name, _ = produced[tid]
        conv = model.get_submodule(conv_name)
        others = [c for c in consumers.get(tid, []) if c != bn_name]
        reason = None
        if calls.get(conv_name, 0) != 1 or calls.get(bn_name, 0) != 1:
            reason = f"{conv_name} or {bn_name} runs more than once per forward (shared weights)"
        elif others:
            reason = f"the output of {conv_name} is also read by {others[0]}"
        elif not bn.track_running_stats or bn.running_mean is None:
            reason = "BatchNorm has no running statistics"
        elif _bn_replacement(bn) is None:
            reason = f"{type(bn).__name__} is a BatchNorm subclass with its own forward"
        elif conv.out_channels != bn.num_features:
            reason = f"channel counts differ ({conv.out_channels} vs {bn.num_features})"
        if reason:
            rec.skipped.append((bn_name, reason))
            continue
        w, b = fold_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )
        conv.weight = nn.Parameter(w, requires_grad=conv.weight.requires_grad)
        conv.bias = nn.Parameter(b, requires_grad=False)
        _set_submodule(model, bn_name, _bn_replacement(bn))
        rec.changed.append(f"{conv_name} <- {bn_name}")
    unseen = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and n not in bn_input]
    for n in unseen:
        rec.skipped.append((n, "not run by the forward pass (unused in eval mode)"))
    return rec


def single_output(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, PassRecord]:
    """Wrap the model so it returns one tensor when, after removing aux heads, it still returns several."""
    rec = PassRecord("single_output")
    with torch.no_grad():
        out = model(example)
    if isinstance(out, torch.Tensor):
        return model, rec
    if isinstance(out, dict):
        key = "logits" if "logits" in out else next(iter(out))
        rec.changed.append(f"output dict -> {key!r}")
        return SelectOutput(model, key), rec
    if isinstance(out, (tuple, list)):
        rec.changed.append(f"output {type(out).__name__} of {len(out)} -> element 0")
        return SelectOutput(model, 0), rec
    rec.skipped.append(("<root>", f"unexpected output type {type(out).__name__}"))
    return model, rec
