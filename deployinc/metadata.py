"""Provenance in ONNX ``metadata_props``: what a file was made from, so it can be checked on its own later.

``deployinc verify model.onnx`` rebuilds its reference from these fields alone: the model spec, the weights (and
their sha256), the seed of a random initialisation and whether BatchNorm statistics were recalibrated, the input
shape, mean/std, class count and the passes applied. Keys are ``deployinc.<field>``; values are JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    import onnx

PREFIX = "deployinc."
FORMAT_VERSION = 1


@dataclass
class Provenance:
    """Where an exported model came from.

    Attributes:
        model_spec: Registry name, ``timm/<name>`` or ``package.module:function``.
        weights: ``none`` (seeded random init), a torchvision weights name, or the checkpoint path used.
        weights_sha256: sha256 of the checkpoint file (None for random or torchvision-named weights).
        state_sha256: sha256 over the loaded state dict (names, shapes, bytes): proves a rebuild is identical.
        seed: Seed of the random initialisation and of BN recalibration.
        bn_recalibrated: Whether BatchNorm running statistics were recalibrated (random weights).
        num_classes: Logit count.
        input_shape: N, C, H, W of the export example (N=1).
        mean: Input normalisation mean.
        std: Input normalisation std.
        passes: Prepare and simplify passes applied, in order.
        exporter: ``dynamo`` or ``torchscript``: the exporter that produced the file (after any fallback).
        opset: ai.onnx opset of the file.
        dynamic_batch: Whether the batch dimension is symbolic.
        family: Model family (inception, resnet, mobilenet...).
        config: Name of the export config used, if any.
        tolerances: Parity tolerance overrides from the export config.
        versions: deployinc, torch, torchvision, onnx, onnxruntime versions at export.
        aux_heads: Auxiliary heads removed.
        export_path: The export paths tried, in order: ``{"exporter", "opset", "error"}`` each, ``error`` None for
            the one that produced the file (empty in files from before fallbacks were recorded).
        fallback: Why the file comes from another path than the one asked for, in words (None when it does not).
        opset_pinned: Whether the user chose the opset (then no other was tried); None in older files.
    """

    model_spec: str
    weights: str = "none"
    weights_sha256: str | None = None
    state_sha256: str | None = None
    seed: int = 0
    bn_recalibrated: bool = False
    num_classes: int = 1000
    input_shape: list[int] = field(default_factory=lambda: [1, 3, 224, 224])
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    passes: list[str] = field(default_factory=list)
    exporter: str = "dynamo"
    opset: int = 17
    dynamic_batch: bool = True
    family: str = "other"
    config: str | None = None
    tolerances: dict[str, Any] | None = None
    versions: dict[str, str] = field(default_factory=dict)
    aux_heads: list[str] = field(default_factory=list)
    export_path: list[dict[str, Any]] = field(default_factory=list)
    fallback: str | None = None
    opset_pinned: bool | None = None
    format: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_provenance(model: onnx.ModelProto, prov: Provenance) -> None:
    """Store ``prov`` in ``model.metadata_props`` (replacing earlier deployinc entries)."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith(PREFIX)]
    del model.metadata_props[:]
    for k, v in keep:
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    for k, v in prov.to_dict().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = PREFIX + k, json.dumps(v)
    model.producer_name = "deployinc"

    model.producer_version = __version__


def read_provenance(model: onnx.ModelProto) -> Provenance | None:
    """The provenance stored by :func:`write_provenance`, or ``None`` when the file has none.

    Unknown keys (from a newer deployinc) are ignored; values that are not JSON are ignored too.
    """
    raw: dict[str, Any] = {}
    for p in model.metadata_props:
        # A damaged file can carry a key or value that is not valid UTF-8 (protobuf then hands out bytes).
        if not isinstance(p.key, str) or not isinstance(p.value, str):
            continue
        if p.key.startswith(PREFIX):
            try:
                raw[p.key[len(PREFIX) :]] = json.loads(p.value)
            except (ValueError, RecursionError):  # not JSON, or nested beyond what the parser takes
                continue
    if "model_spec" not in raw:
        return None
    known = {f.name for f in fields(Provenance)}
    return Provenance(**{k: v for k, v in raw.items() if k in known})


def versions() -> dict[str, str]:
    """Versions of the libraries that shape an export."""
    import importlib.metadata as md

    out = {"deployinc": __version__}
    for dist in ("torch", "torchvision", "onnx", "onnxscript", "onnxsim", "onnxslim", "onnxruntime", "onnxruntime-gpu", "timm"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return out
