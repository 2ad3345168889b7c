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
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm
from torch.overrides import TorchFunctionMode

from ..core.outputs import main_key
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
    """Keeps only the main output of a model that returns a tuple, list, namedtuple or dict (by index or key).
    Takes the wrapped model's train/eval mode, so a pass that checks ``training`` sees the model's own."""

    def __init__(self, model: nn.Module, index: int | str = 0):
        super().__init__()
        self.model = model
        self.index = index
        self.train(model.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.model(x)
        if isinstance(out, (dict, tuple, list)):
            return out[self.index]
        return out


def eval_mode(model: nn.Module) -> PassRecord:
    """Put every module in eval mode (BatchNorm uses running statistics, dropout is off)."""
    rec = PassRecord("eval")
    rec.changed = [n or "<root>" for n, m in model.named_modules() if m.training]
    model.eval()
    batch_stats = [n or "<root>" for n, m in model.named_modules() if isinstance(m, _BatchNorm) and m.running_mean is None]
    if batch_stats:
        more = f" (and {len(batch_stats) - 1} more)" if len(batch_stats) > 1 else ""
        rec.notes.append(
            f"warning: BatchNorm {batch_stats[0]}{more} has no running statistics (track_running_stats=False): even in "
            "eval mode it normalises with each batch's own statistics, so an image's output depends on the other images "
            "in its batch, in torch and in the exported file alike"
        )
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


#: Tensor methods and properties that read only a tensor's metadata, never its values: calling them on a
#: convolution's output does not make a second reader of it.
_METADATA_READS = frozenset(
    "shape dtype device ndim requires_grad is_cuda layout is_leaf grad_fn names size dim numel nelement stride "
    "is_contiguous is_floating_point is_complex element_size storage_offset data_ptr __len__ __format__".split()
)


def _op_name(func: Any) -> str:
    """A readable name of what a ``__torch_function__`` call is: ``add``, ``cat``, ``relu_``, or a property."""
    name = getattr(func, "__name__", "") or repr(func)
    if name == "__get__":  # a Tensor property (getset descriptor): its own name
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return str(name)


def _weight_reparametrisations(conv: nn.Module) -> list[str]:
    """What computes the convolution's weight (or bias) from other tensors: ``torch.nn.utils.parametrize``
    parametrisations, or the old hook-based ``weight_norm``/``spectral_norm``. Folding goes through them: they are
    replaced by the weight they compute (see :func:`_bake_reparametrisations`)."""
    found = [f"parametrisation of {n}" for n in getattr(conv, "parametrizations", {})]
    for hook in conv._forward_pre_hooks.values():
        if isinstance(hook, (WeightNorm, SpectralNorm)):
            found.append(f"{type(hook).__name__} of {hook.name}")
    return found


def _bake_reparametrisations(conv: nn.Module) -> None:
    """Replace every weight reparametrisation of ``conv`` by the plain parameter it computes (in eval mode:
    spectral norm uses its stored vectors, without a power iteration)."""
    from torch.nn.utils import parametrize

    for name in list(getattr(conv, "parametrizations", {})):
        parametrize.remove_parametrizations(conv, name, leave_parametrized=True)
    for hook in list(conv._forward_pre_hooks.values()):
        if isinstance(hook, WeightNorm):
            nn.utils.remove_weight_norm(conv, hook.name)
        elif isinstance(hook, SpectralNorm):
            nn.utils.remove_spectral_norm(conv, hook.name)


def _conv_problem(conv: nn.Module) -> str | None:
    """Why ``conv`` cannot be folded as a plain convolution, or None: a subclass that computes its output its own
    way (timm's StdConv2d standardises its weight in forward, which would undo a folded scale), or hooks of its own
    other than a weight reparametrisation."""
    base = next(b for b in CONV_TYPES if isinstance(conv, b))
    for method in ("forward", "_conv_forward"):
        if getattr(type(conv), method, None) is not getattr(base, method, None):
            return f"{type(conv).__name__} is a {base.__name__} subclass with its own {method} (it may transform its weight)"
    reparam = (WeightNorm, SpectralNorm)
    own_hooks = [h for h in conv._forward_pre_hooks.values() if not isinstance(h, reparam)] + list(conv._forward_hooks.values())
    if own_hooks:
        return f"{type(conv).__name__} has forward hooks of its own"
    return None


class _FoldTrace:
    """One forward pass of a model with hooks: which convolution produced each tensor a BatchNorm receives, and
    every other reader of those tensors (modules, and torch functions called outside any module such as ``y + z``,
    ``torch.cat`` or ``F.relu(y, inplace=True)``), and whether the tensor changed in place before the BN read it."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.names = {id(m): n for n, m in model.named_modules()}
        #: id -> (conv name, the tensor, its version counter when produced). Kept alive so the ids stay unique.
        self.produced: dict[int, tuple[str, torch.Tensor, int]] = {}
        self.calls: dict[str, int] = {}
        self.readers: dict[int, list[str]] = {}
        #: bn name -> id of its input when that is a kept convolution output (else -1), and whether it changed.
        self.bn_input: dict[str, int] = {}
        self.mutated: dict[str, bool] = {}
        self.depth = 0  # > 0 while a leaf module (or a BN) runs: torch calls there belong to that module

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _kept(self, t: Any) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self.produced and self.produced[id(t)][1] is t

    def conv_hook(self, mod: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
        self._count(self.names[id(mod)])
        if isinstance(out, torch.Tensor):
            self.produced[id(out)] = (self.names[id(mod)], out, out._version)

    def pre_hook(self, mod: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.depth += 1
        name = self.names[id(mod)]
        if not isinstance(mod, nn.Identity):  # Identity hands on the same tensor: its reader is the next module
            for t in inputs:
                if self._kept(t):
                    self.readers.setdefault(id(t), []).append(name)
        if isinstance(mod, _BatchNorm):
            self._count(name)
            t0 = inputs[0] if inputs else None
            # Matched now, while the tensor is alive: the id of a tensor that is not a kept convolution output (a
            # sum, say) can be reused by a later convolution's output once it is freed.
            self.bn_input[name] = id(t0) if self._kept(t0) else -1
            if self._kept(t0):
                self.mutated[name] = t0._version != self.produced[id(t0)][2]

    def post_hook(self, mod: nn.Module, inputs: tuple[Any, ...], out: Any) -> None:
        self.depth -= 1

    def torch_call(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """A torch function called while the model runs: outside any module, a reader of the tensors it takes."""
        if self.depth or _op_name(func) in _METADATA_READS:
            return
        for t in torch.utils._pytree.tree_leaves((args, kwargs)):
            if self._kept(t):
                self.readers.setdefault(id(t), []).append(f"torch.{_op_name(func)} (outside a module)")

    def run(self, example: torch.Tensor) -> None:
        handles = []
        for m in self.model.modules():
            if isinstance(m, CONV_TYPES):
                handles.append(m.register_forward_hook(self.conv_hook))
            if not list(m.children()) or isinstance(m, _BatchNorm):
                handles.append(m.register_forward_pre_hook(self.pre_hook))
                handles.append(m.register_forward_hook(self.post_hook, always_call=True))
        trace = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                trace.torch_call(func, args, kwargs)
                return func(*args, **kwargs)

        try:
            with torch.no_grad(), Mode():
                self.model(example)
        finally:
            for h in handles:
                h.remove()


def _pair_problem(model: nn.Module, trace: _FoldTrace, conv_name: str, bn_name: str) -> str | None:
    """Why the BN ``bn_name`` cannot be folded into ``conv_name``, whose output it reads, or None."""
    bn = model.get_submodule(bn_name)
    conv = model.get_submodule(conv_name)
    tid = trace.bn_input[bn_name]
    others = [c for c in trace.readers.get(tid, []) if c != bn_name]
    if trace.calls.get(conv_name, 0) != 1 or trace.calls.get(bn_name, 0) != 1:
        return f"{conv_name} or {bn_name} runs more than once per forward (shared weights)"
    if others:
        return f"the output of {conv_name} is also read by {others[0]}"
    if trace.mutated.get(bn_name):
        return f"the output of {conv_name} is changed in place before {bn_name} reads it"
    if not bn.track_running_stats or bn.running_mean is None:
        return "BatchNorm has no running statistics (track_running_stats=False)"
    if _bn_replacement(bn) is None:
        return f"{type(bn).__name__} is a BatchNorm subclass with its own forward"
    if conv.out_channels != bn.num_features:
        return f"channel counts differ ({conv.out_channels} vs {bn.num_features})"
    return _conv_problem(conv)


def fold_pair(model: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold the BN ``bn_name`` into the convolution ``conv_name`` (through its weight reparametrisations, which
    become the plain weight they compute) and put the BN's replacement in its place."""
    conv = model.get_submodule(conv_name)
    bn = model.get_submodule(bn_name)
    _bake_reparametrisations(conv)
    w, b = fold_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    conv.weight = nn.Parameter(w, requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(b, requires_grad=False)
    _set_submodule(model, bn_name, _bn_replacement(bn))


def fold_conv_bn(model: nn.Module, example: torch.Tensor, exclude: dict[str, str] | None = None) -> PassRecord:
    """Fold each BatchNorm into the convolution whose output it normalises.

    The pairs are found by running ``example`` once with hooks (and a torch function mode, which sees the torch
    calls made outside modules) and matching the tensor a BN receives with the tensor a convolution produced.
    Each pair is folded or skipped on its own; preconditions, each reported when not met: the model is in eval
    mode; the BN has running statistics; the BN is a plain BatchNorm (or timm's BatchNormAct2d); the convolution
    is a plain one (no subclass forward, no hooks; a weight reparametrisation is folded through); both run once
    per forward; nothing else reads or changes the convolution's output. ``exclude``: BN name -> the reason it is
    not folded (pairs the self-check found wrong).
    """
    rec = PassRecord("fold_conv_bn")
    if model.training:
        rec.skipped.append(("<root>", "model is in training mode"))
        return rec
    trace = _FoldTrace(model)
    trace.run(example)
    for bn_name, tid in trace.bn_input.items():
        if tid not in trace.produced:
            rec.skipped.append((bn_name, "its input is not the output of a convolution"))
            continue
        conv_name = trace.produced[tid][0]
        reason = (exclude or {}).get(bn_name) or _pair_problem(model, trace, conv_name, bn_name)
        if reason:
            rec.skipped.append((bn_name, reason))
            continue
        reparam = _weight_reparametrisations(model.get_submodule(conv_name))
        fold_pair(model, conv_name, bn_name)
        rec.changed.append(f"{conv_name} <- {bn_name}")
        if reparam:
            rec.notes.append(f"{conv_name}: folded through its {', '.join(reparam)} (baked into a plain weight)")
    unseen = [n for n, m in model.named_modules() if isinstance(m, _BatchNorm) and n not in trace.bn_input]
    for n in unseen:
        rec.skipped.append((n, "not run by the forward pass (unused in eval mode)"))
    return rec


def _shape_text(value: Any) -> str:
    if value is None:
        return "None (a removed head)"
    shape = getattr(value, "shape", None)
    if shape is None:
        return type(value).__name__
    return "(" + ", ".join(["N", *map(str, tuple(shape)[1:])] if len(shape) else []) + ")"


def single_output(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, PassRecord]:
    """Wrap the model so it returns one tensor when, after removing aux heads, it still returns several: a dict's
    ``logits`` entry (its first when it has none), a tuple's first element (the same rule as
    :func:`deployinc.core.outputs.first_output`, which the self-check and the references use). A note names the
    output kept and every output dropped."""
    rec = PassRecord("single_output")
    with torch.no_grad():
        out = model(example)
    if isinstance(out, torch.Tensor):
        return model, rec
    if isinstance(out, dict) and out:
        key = main_key(out)
        rec.changed.append(f"output dict -> {key!r}")
        dropped = [f"{k!r} {_shape_text(v)}" for k, v in out.items() if k != key]
        kept = f"{key!r} {_shape_text(out[key])}"
        index: int | str = key
    elif isinstance(out, (tuple, list)) and out:
        rec.changed.append(f"output {type(out).__name__} of {len(out)} -> element 0")
        dropped = [f"element {i} {_shape_text(v)}" for i, v in enumerate(out) if i]
        kept = f"element 0 {_shape_text(out[0])}"
        index = 0
    else:
        rec.skipped.append(("<root>", f"unexpected output type {type(out).__name__}"))
        return model, rec
    rec.notes.append(
        f"the model returns a {type(out).__name__} of {len(out)} outputs: exporting {kept} as 'logits'"
        + (f"; not exported: {', '.join(dropped)}" if dropped else "")
    )
    return SelectOutput(model, index), rec
