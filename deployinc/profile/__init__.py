"""Parameters and multiply-adds per module and per Inception branch, before and after deployinc's fusions.

:func:`profile_model` runs one forward pass with hooks (see :mod:`deployinc.profile.counting` for what is counted;
the convention reproduces torchvision's published GFLOPS) and returns a :class:`ProfileReport`:

- ``loaded``: the profiled model (eval mode): totals, every submodule, every Inception module and its branches.
  By default this is the *deploy-time* model: auxiliary heads removed, as ``deployinc export`` prepares it (and as
  torchvision counts GoogLeNet's 6.6 M parameters); with ``training=True`` it is the model as given, auxiliary
  heads included (``params_training`` holds that count in both cases);
- ``fused``: the same after :func:`deployinc.prepare.prepare` (auxiliary heads and dropout removed, Conv+BN folded:
  each folded BN's weight and bias disappear, its convolution gains a bias, the BN's elementwise work is gone);
- ``naive``: with ``compare_naive``, each Inception module's convolution cost without its 1x1 reductions and pool
  projections, and the saving in per cent (see :func:`naive_comparison`).

Multiply-adds are for the whole profiled input (N samples); with N = 1 they are per image, as published figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import BadInputError, DeployincError
from ..prepare import prepare
from ..prepare.passes import remove_aux_heads
from .counting import _PASS_THROUGH, _POOL, BlockCost, count, find_blocks, rollup, rollup_paths

__all__ = ["NaiveComparison", "Profile", "ProfileReport", "naive_comparison", "profile_model"]

#: Submodule names of auxiliary heads that deployment drops (torchvision's and deployinc's built-ins).
AUX_HEAD_NAMES = ("aux1", "aux2", "AuxLogits", "aux_classifier")


@dataclass
class Profile:
    """Counts of one state of a model (as loaded, or fused).

    Attributes:
        total: Whole-model roll-up (``params`` counts every parameter the module holds).
        modules: Roll-up of every submodule that holds parameters or does multiply-adds, in module order.
        blocks: Inception modules: path -> :class:`~deployinc.profile.counting.BlockCost`.
    """

    total: Any
    modules: list[Any] = field(default_factory=list)
    blocks: dict[str, Any] = field(default_factory=dict)

    def module(self, path: str) -> Any | None:
        """The roll-up of ``path``, or None."""
        return next((m for m in self.modules if m.path == path), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total.to_dict(),
            "modules": [m.to_dict() for m in self.modules],
            "blocks": {k: v.to_dict() for k, v in self.blocks.items()},
        }


@dataclass
class NaiveComparison:
    """One Inception module's convolution cost with and without its 1x1 reductions.

    The naive module feeds every spatial convolution the module's full input and concatenates the pooled input
    without a projection. Only convolutions are compared (weights, no biases or BN), as in the literature.

    Attributes:
        path: The module's path.
        in_channels: Channels of the module's input.
        macs: Multiply-adds of the module's convolutions as built.
        naive_macs: The same without reductions and projections.
        params: Convolution weights as built.
        naive_params: Convolution weights without reductions and projections.
        out_channels: Output channels as built.
        naive_out_channels: Output channels of the naive module (the pool branch passes all input channels).
        reductions: 1x1 convolutions that reduce the input of a larger convolution -> the convolutions they feed.
        projections: 1x1 convolutions after a pool of the module's input.
    """

    path: str
    in_channels: int
    macs: int
    naive_macs: int
    params: int
    naive_params: int
    out_channels: int
    naive_out_channels: int
    reductions: dict[str, list[str]] = field(default_factory=dict)
    projections: list[str] = field(default_factory=list)

    @property
    def saving_pct(self) -> float:
        """Multiply-adds saved by the reductions, in per cent of the naive cost."""
        return 100.0 * (1.0 - self.macs / self.naive_macs) if self.naive_macs else 0.0

    @property
    def params_saving_pct(self) -> float:
        """Convolution weights saved by the reductions, in per cent of the naive count."""
        return 100.0 * (1.0 - self.params / self.naive_params) if self.naive_params else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "in_channels": self.in_channels,
            "macs": self.macs,
            "naive_macs": self.naive_macs,
            "saving_pct": round(self.saving_pct, 2),
            "params": self.params,
            "naive_params": self.naive_params,
            "params_saving_pct": round(self.params_saving_pct, 2),
            "out_channels": self.out_channels,
            "naive_out_channels": self.naive_out_channels,
            "reductions": self.reductions,
            "projections": self.projections,
        }


@dataclass
class ProfileReport:
    """What :func:`profile_model` found.

    Attributes:
        model: Model name (for display).
        input_shape: N, C, H, W of the profiled input.
        loaded: Counts of the profiled model: the deploy-time one (auxiliary heads removed) unless ``training``.
        params_inference: Parameters without auxiliary heads (what an exported model keeps before fusion).
        aux_heads: Paths of the auxiliary heads found (removed from ``loaded`` unless ``training``).
        training: Whether ``loaded`` is the training-time model (auxiliary heads kept).
        params_training: Parameters of the model as given, auxiliary heads included.
        fused: Counts after :func:`deployinc.prepare.prepare`, or None (see ``fused_note``).
        fused_note: What the fusion did, or why it is missing.
        naive: Naive comparisons, when asked for.
    """

    model: str
    input_shape: tuple[int, ...]
    loaded: Profile
    params_inference: int
    aux_heads: list[str] = field(default_factory=list)
    fused: Profile | None = None
    fused_note: str = ""
    naive: list[NaiveComparison] = field(default_factory=list)
    training: bool = False
    params_training: int | None = None

    @property
    def state(self) -> str:
        """``deploy`` (auxiliary heads removed) or ``training`` (the model as given)."""
        return "training" if self.training else "deploy"

    @property
    def params(self) -> int:
        """Every parameter of the profiled model (deploy-time unless ``training``)."""
        return self.loaded.total.params

    @property
    def macs(self) -> int:
        """Multiply-adds of the profiled model, on the profiled input."""
        return self.loaded.total.macs

    @property
    def gmacs(self) -> float:
        """Multiply-adds in units of 1e9 (torchvision's "GFLOPS")."""
        return self.macs / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "state": self.state,
            "params": self.params,
            "params_inference": self.params_inference,
            "params_training": self.params_training,
            "macs": self.macs,
            "gmacs": round(self.gmacs, 6),
            "aux_heads": self.aux_heads,
            "loaded": self.loaded.to_dict(),
            "fused": self.fused.to_dict() if self.fused is not None else None,
            "fused_note": self.fused_note,
            "naive": [n.to_dict() for n in self.naive],
        }


def _profile(model: Any, counts: Any) -> Profile:
    total = rollup(counts, "", type(model).__name__)
    modules = []
    for path, _ in model.named_modules():
        if not path:
            continue
        cost = rollup(counts, path)
        if cost.params or cost.macs:
            modules.append(cost)
    blocks = {}
    for path, groups in find_blocks(model).items():
        blocks[path] = BlockCost(
            total=rollup(counts, path),
            branches={name: rollup_paths(counts, paths, name) for name, paths in groups.items()},
        )
    return Profile(total=total, modules=modules, blocks=blocks)


def naive_comparison(model: Any, counts: Any, block: str) -> NaiveComparison:
    """The cost of Inception module ``block`` without its 1x1 reductions and pool projections.

    A *reduction* is a 1x1 convolution that reads the module's input and whose output (through BN and activations)
    feeds convolutions with a larger kernel; the naive module drops it and gives those convolutions the module's
    full input. A *projection* is a 1x1 convolution after a pooling of the module's input; the naive module drops it
    and concatenates the pooled input as it is. Every other convolution counts as built.

    Args:
        model: The profiled model.
        counts: :func:`~deployinc.profile.counting.count` of it with ``track_flow=True``.
        block: Path of the module.
    """
    if block not in counts.block_inputs:
        raise BadInputError(f"module {block!r} is not an Inception module that ran", hint="see the table for module paths")
    in_id = counts.block_inputs[block]
    in_ch = counts.block_in_channels[block]
    leaves = dict(model.named_modules())

    def resolve(path: str | None) -> str | None:
        """Walk back from a leaf through BN/activation layers to the conv or pool that produced the tensor."""
        seen = set()
        while path is not None and path not in seen and isinstance(leaves.get(path), _PASS_THROUGH):
            seen.add(path)
            path = counts.producers.get(counts.pass_inputs.get(path, -1))
        return path

    convs = [c for c in counts.conv_calls if c.path.startswith(block + ".")]
    reads_input = {c.path for c in convs if counts.pass_inputs.get(c.path) == in_id}
    consumers: dict[str, list[Any]] = {}
    for c in convs:
        src = resolve(c.source)
        if src is not None:
            consumers.setdefault(src, []).append(c)
    reductions: dict[str, list[str]] = {}
    projections: list[str] = []
    for c in convs:
        if c.kernel != 1 or c.groups != 1 or c.path not in reads_input:
            src = resolve(c.source)
            pool = leaves.get(src) if src is not None else None
            if c.kernel == 1 and c.groups == 1 and isinstance(pool, _POOL) and counts.pass_inputs.get(src) == in_id:
                projections.append(c.path)
            continue
        fed = [d for d in consumers.get(c.path, []) if d.kernel > 1 and d.groups == 1]
        if fed:
            reductions[c.path] = [d.path for d in fed]
    fed_by_reduction = {p for ps in reductions.values() for p in ps}
    macs = naive_macs = params = naive_params = 0
    removed_out = 0
    for c in convs:
        weight = c.module.weight.numel()
        cost = c.out_elements * (c.in_channels // c.groups) * c.kernel
        macs += cost
        params += weight
        if c.path in reductions or c.path in projections:
            if c.path in projections:
                removed_out += c.module.out_channels
            continue
        if c.path in fed_by_reduction:
            naive_macs += c.out_elements * in_ch * c.kernel
            naive_params += in_ch * c.module.out_channels * c.kernel
        else:
            naive_macs += cost
            naive_params += weight
    out_ch = counts.block_out_channels.get(block, 0)
    return NaiveComparison(
        path=block,
        in_channels=in_ch,
        macs=macs,
        naive_macs=naive_macs,
        params=params,
        naive_params=naive_params,
        out_channels=out_ch,
        naive_out_channels=out_ch - removed_out + in_ch * len(projections),
        reductions=reductions,
        projections=projections,
    )


def _aux_paths(model: Any, extra: tuple[str, ...]) -> list[str]:
    found = []
    for path, module in model.named_modules():
        for name in AUX_HEAD_NAMES:
            if getattr(module, name, None) is not None and hasattr(getattr(module, name), "parameters"):
                found.append(f"{path}.{name}" if path else name)
    for p in extra:
        if p not in found:
            try:
                model.get_submodule(p)
            except AttributeError:
                continue
            found.append(p)
    return found


def _deploy_copy(model: Any, aux_heads: tuple[str, ...]) -> tuple[Any, list[str]]:
    """A copy of ``model`` without its auxiliary heads, removed as :func:`deployinc.prepare.prepare` removes them,
    and their paths; ``model`` itself when it has none (it is never changed)."""
    import copy

    if not _aux_paths(model, aux_heads):
        return model, []
    deployed = copy.deepcopy(model)
    return deployed, remove_aux_heads(deployed, tuple(aux_heads)).changed


def profile_model(
    model: Any,
    input_shape: tuple[int, ...],
    *,
    name: str | None = None,
    aux_heads: tuple[str, ...] = (),
    fused: bool = True,
    compare_naive: bool = False,
    modules: tuple[str, ...] = (),
    training: bool = False,
) -> ProfileReport:
    """Count parameters and multiply-adds of ``model`` on an input of ``input_shape``.

    The model is profiled in eval mode, as deployed: by default without its auxiliary heads (removed from a copy,
    as ``deployinc export`` prepares it); ``training=True`` keeps them (they do not run in eval mode, but their
    parameters count). The model is not modified.

    Args:
        model: The ``nn.Module``.
        input_shape: N, C, H, W (or any shape the model takes).
        name: Display name.
        aux_heads: Extra auxiliary-head paths (torchvision's are found by name).
        fused: Also profile the model after :func:`deployinc.prepare.prepare`.
        compare_naive: Compare each Inception module (or those in ``modules``) with its naive version.
        modules: Restrict ``compare_naive`` to these module paths.
        training: Profile the training-time model (auxiliary heads kept) instead of the deploy-time one.

    Raises:
        BadInputError: The model rejects the input shape, or ``modules`` names no Inception module.
    """
    import torch

    shape = tuple(int(v) for v in input_shape)
    params_training = sum(p.numel() for p in model.parameters())
    if training:
        subject, aux = model, _aux_paths(model, aux_heads)
    else:
        subject, aux = _deploy_copy(model, aux_heads)
    was_training = subject.training
    subject.eval()
    example = torch.zeros(shape)
    try:
        counts = count(subject, example, track_flow=compare_naive)
    except RuntimeError as exc:
        raise BadInputError(
            f"the model rejects input shape {list(shape)}: {str(exc).strip().splitlines()[0][:200]}",
            hint="pass --input-shape N,C,H,W that the model accepts",
        ) from exc
    finally:
        subject.train(was_training)
    loaded = _profile(subject, counts)
    aux_params = sum(n for p, n in counts.params.items() if any(p.startswith(a + ".") for a in aux))
    report = ProfileReport(
        model=name or type(model).__name__,
        input_shape=shape,
        loaded=loaded,
        params_inference=loaded.total.params - aux_params,
        aux_heads=aux,
        training=training,
        params_training=params_training,
    )
    if compare_naive:
        blocks = list(find_blocks(subject))
        wanted = list(modules) or blocks
        unknown = [m for m in wanted if m not in blocks]
        if unknown:
            hint = f"Inception modules here: {', '.join(blocks[:8])}" + (" ..." if len(blocks) > 8 else "") if blocks else "this model has no Inception module (children named branch*)"
            raise BadInputError(f"module {unknown[0]!r} is not an Inception module of {report.model}", hint=hint)
        if not wanted:
            raise BadInputError(
                f"{report.model} has no Inception module to compare", hint="--compare-naive needs modules with branch* children"
            )
        report.naive = [naive_comparison(subject, counts, b) for b in wanted if b in counts.block_inputs]
    if fused:
        report.fused, report.fused_note = _fused_profile(model, shape, aux_heads)
    return report


def _fused_profile(model: Any, shape: tuple[int, ...], aux_heads: tuple[str, ...]) -> tuple[Profile | None, str]:
    import torch

    try:
        prepared, rep = prepare(model, input_shape=shape, aux_heads=aux_heads)
    except DeployincError as exc:
        return None, f"not fused: prepare failed: {exc.message}"
    inner = getattr(prepared, "model", None)
    if type(prepared).__name__ == "SelectOutput" and inner is not None:
        prepared = inner  # keep the module paths of the original
    counts = count(prepared.eval(), torch.zeros(shape))
    return _profile(prepared, counts), rep.summary()
