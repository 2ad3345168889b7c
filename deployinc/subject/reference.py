"""The torch reference of a model: the *original* eager model in eval mode with auxiliary heads removed, which is
what the user had, not deployinc's prepared (folded) copy: a fold that changed the numbers must show up as a failure.

Two ways to build it, for every stage that needs one (verify, bench's torch rows, deploy's oracle):

- from a file's provenance metadata alone (:func:`from_provenance`): the model spec, weights, seed and BatchNorm
  recalibration recorded at export rebuild exactly the weights that were exported;
- from a ``package.module:function`` spec and a checkpoint (:func:`from_spec`), for files deployinc did not write.

Rebuilding a randomly initialised model recalibrates its BatchNorm statistics on seeded batches, which costs
several seconds for a GoogLeNet on two CPU cores. The recalibrated statistics (BatchNorm buffers only, never
weights) are cached under ``$DEPLOYINC_CACHE_DIR/references`` (default ``~/.cache/deployinc``), keyed by every
provenance field that determines them and the torch version; a rebuild from the cache still checks the rebuilt
initial weights against the recorded ``state_sha256``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..models import loading
from ..models.bn_cache import _bn_buffers, _copy_buffers, _load_bn_stats, store_bn_stats


@dataclass
class Reference:
    """What the ONNX file is compared with.

    Attributes:
        kind: ``provenance`` (rebuilt from metadata), ``spec`` (``--reference``), or ``onnx`` (``--against``).
        description: One line for reports.
        module: The torch module (eval mode, aux heads removed), or None for an ONNX reference.
        onnx_path: The reference ONNX file, for ``onnx``.
        info: The registry's :class:`~deployinc.models.registry.ModelInfo` (torch references).
        cache: ``hit``, ``miss``, ``off`` or None (not applicable).
        notes: What was done to build it.
        seconds: Time to build it.
    """

    kind: str
    description: str
    module: Any = None
    onnx_path: Path | None = None
    info: Any = None
    spec: str | None = None
    weights: str | None = None
    cache: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "spec": self.spec,
            "weights": self.weights,
            "onnx": str(self.onnx_path) if self.onnx_path else None,
            "bn_stats_cache": self.cache,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


# references -------------------------------------------------------------------------------------------------------


def _finish_module(module: Any, aux_heads: tuple[str, ...]) -> tuple[Any, list[str]]:
    """Eval mode and auxiliary heads removed, as a user runs the model for inference."""
    from ..prepare.passes import eval_mode, remove_aux_heads  # lazy: passes imports torch at import; verify --against needs no torch

    eval_mode(module)
    rec = remove_aux_heads(module, aux_heads)
    notes = [f"auxiliary heads removed: {', '.join(rec.changed)}"] if rec.changed else []
    module.eval()
    return module, notes


#: The provenance fields that decide the rebuilt torch reference (the others say how the file was made from it).
REFERENCE_FIELDS = ("model_spec", "weights", "weights_sha256", "state_sha256", "seed", "bn_recalibrated", "num_classes",
                    "input_shape", "mean", "std", "aux_heads")  # fmt: skip


def reference_key(prov: Any) -> tuple[Any, ...]:
    """What :func:`from_provenance` rebuilds from ``prov``: two files with the same key have the same reference."""
    return tuple(repr(getattr(prov, name, None)) for name in REFERENCE_FIELDS)


def from_provenance(prov: Any, weights: str | None = None, use_cache: bool = True, trust_code: bool = False) -> Reference:
    """Rebuild the torch model an ONNX file was exported from, from its provenance alone.

    Args:
        prov: The file's :class:`~deployinc.metadata.Provenance`.
        weights: A checkpoint to use instead of the recorded one (it moved).
        use_cache: Use (and fill) the BatchNorm-statistics cache for random-weight models.
        trust_code: The user confirmed a ``module:function`` spec recorded in the file (see
            :func:`~deployinc.models.loading.require_trusted_spec`); registry names need no confirmation.

    Raises:
        UntrustedCodeError: The file names code and the user did not confirm it; nothing was imported.
        ModelSpecError, WeightsError: The model or its weights cannot be rebuilt as exported.
    """
    loading.require_trusted_spec(prov.model_spec, trust_code)

    t0 = time.perf_counter()
    cache = "off"
    loaded = None
    cached = None
    random_recal = bool(prov.bn_recalibrated) and (weights is None) and prov.weights in (None, "", "none")
    if use_cache and random_recal:
        cached = _load_bn_stats(prov)
        cache = "miss" if cached is None else "hit"
    if cached is not None:
        loaded = loading.load_model(prov.model_spec, weights=None, calibrate_bn=False, **loading.provenance_shape(prov))
        if not loaded.matches_export(prov.state_sha256):
            raise WeightsError(
                f"the rebuilt {prov.model_spec} weights differ from those exported "
                f"(state sha256 {loaded.state_sha256[:12]} vs {prov.state_sha256[:12]})",
                hint="random initialisation differs between torch versions; verify with the torch version used at "
                f"export ({prov.versions.get('torch', '?')}) or export from a checkpoint",
            )
        own = loaded.module.state_dict()
        usable = {k: v for k, v in cached.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
        if len(usable) != len(cached) or len(usable) != len(_bn_buffers(loaded.module)):
            cached = None  # stale entry: rebuild below
            cache = "miss"
        else:
            _copy_buffers(loaded.module, usable)
            loaded.bn_recalibrated = True
    if loaded is None:
        loaded = loading.load_from_provenance(prov, weights=weights, trust_code=trust_code)
        if use_cache and random_recal:
            store_bn_stats(prov, loaded.module)
    module, notes = _finish_module(loaded.module, tuple(prov.aux_heads or ()))
    w = loading.weights_text(prov.model_spec, loaded.weights, prov.seed)
    desc = f"{prov.model_spec} ({w}"
    if loaded.bn_recalibrated:
        desc += ", BatchNorm recalibrated"
    desc += ") rebuilt from the file's metadata"
    if cache == "hit":
        notes.append("BatchNorm statistics from the reference cache (initial weights checked against state_sha256)")
    return Reference(
        kind="provenance",
        description=desc,
        module=module,
        info=loaded.info,
        spec=prov.model_spec,
        weights=loaded.weights,
        cache=cache if random_recal else None,
        notes=list(loaded.notes) + notes,
        seconds=time.perf_counter() - t0,
    )


def from_spec(
    spec: str,
    weights: str | None,
    input_chw: tuple[int, ...],
    num_classes: int | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    seed: int = 0,
) -> Reference:
    """Build the reference from ``--reference SPEC [--weights FILE]`` (a registry name or ``module:function``)."""
    t0 = time.perf_counter()
    loaded = loading.load_model(
        spec,
        weights=weights,
        num_classes=num_classes,
        input_shape=(1, *input_chw),
        mean=mean,
        std=std,
        seed=seed,
    )
    module, notes = _finish_module(loaded.module, tuple(loaded.info.aux_heads))
    w = loading.weights_text(spec, loaded.weights, seed)
    notes = list(loaded.notes) + notes
    if loading.seeded_init(loaded.info.source, loaded.weights):  # the warning first, before the loader's notes
        notes.insert(0, f"warning: the reference {spec} has random weights (no --weights): a file exported from trained "
                        "weights cannot match it; pass --weights CHECKPOINT")
    elif loaded.weights in (None, "", "none"):
        notes.insert(0, f"warning: the reference {spec} has the weights its factory returns (no --weights): a file exported "
                        "from a checkpoint cannot match it; pass --weights CHECKPOINT")
    return Reference(
        kind="spec",
        description=f"{spec} ({w}) from --reference",
        module=module,
        info=loaded.info,
        spec=spec,
        weights=loaded.weights,
        notes=notes,
        seconds=time.perf_counter() - t0,
    )
