"""What a benchmark runs: an ONNX file (exported on the fly from a model name when needed), its image input, and
the PyTorch modules it came from (rebuilt from the provenance in the file) for the eager baselines.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, BadInputError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BenchModel:
    """The model under test.

    Attributes:
        path: The ONNX file.
        name: Model name for reports (the provenance's model spec, else the file's stem).
        onnx: The loaded ``onnx.ModelProto``.
        input_name: Name of the single image input.
        chw: Channels, height, width of the input.
        static_batch: The fixed batch size of a static model, or None for a dynamic batch.
        mean: Input normalisation mean.
        std: Input normalisation std.
        file_precision: What the file computes in (``fp32``, or ``fp16``/``int8`` from deployinc's converters).
        provenance: The deployinc provenance of the file, or None.
        sha256: sha256 of the file.
        exported_from: The model name when the file was exported for this benchmark.
        modules: Provided PyTorch modules by backend (``torch``, ``torch-fused``), bypassing the provenance.
        trust_code: Rebuild a ``module:function`` spec recorded in the file (the user named it, or passed
            ``--trust-model-code``); registry names need no confirmation.
    """

    path: Path
    name: str
    onnx: Any
    input_name: str
    chw: tuple[int, int, int]
    static_batch: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    file_precision: str
    provenance: Any
    sha256: str
    exported_from: str | None = None
    modules: dict[str, Any] = field(default_factory=dict)
    trust_code: bool = False
    _inputs: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _loaded: Any = field(default=None, repr=False)
    _torch_error: BackendUnavailable | None = field(default=None, repr=False)

    # inputs -------------------------------------------------------------------------------------------------------
    def check_batches(self, batches: list[int]) -> None:
        """Refuse batch sizes a static model cannot take (before anything runs).

        Raises:
            BadInputError: A batch size differs from the static batch of the model's input.
        """
        if self.static_batch is None:
            return
        bad = [b for b in batches if b != self.static_batch]
        if bad:
            raise BadInputError(
                f"batch size {bad[0]} does not fit {self.path.name}: its input {self.input_name!r} has a static "
                f"batch of {self.static_batch}",
                hint=f"use --batch {self.static_batch}, or export with a dynamic batch (deployinc export "
                f"{self.name} --dynamic-batch)",
            )

    def inputs(self, batch: int) -> np.ndarray:
        """A seeded batch of normalised natural-image-statistics inputs (the same on every machine)."""
        if batch not in self._inputs:
            from ..verify.inputs import natural_images

            # Up to 8 distinct images, repeated for bigger batches (content does not change a dense CNN's speed).
            base = natural_images(min(batch, 8), self.chw, self.mean, self.std, seed=0)
            reps = -(-batch // len(base))
            self._inputs[batch] = np.ascontiguousarray(np.concatenate([base] * reps)[:batch])
        return self._inputs[batch]

    def info(self) -> dict[str, Any]:
        """What goes in the report about the model."""
        prov = self.provenance
        return {
            "name": self.name,
            "path": str(self.path) if self.exported_from is None else None,
            "exported_from": self.exported_from,
            "sha256": self.sha256,
            "input_name": self.input_name,
            "input_chw": list(self.chw),
            "static_batch": self.static_batch,
            "file_precision": self.file_precision,
            "provenance": prov.to_dict() if prov is not None else None,
        }

    # PyTorch modules ----------------------------------------------------------------------------------------------
    def _load(self) -> Any:
        if self._loaded is not None:
            return self._loaded
        if self._torch_error is not None:
            raise self._torch_error
        if self.provenance is None:
            self._torch_error = BackendUnavailable(
                f"{self.path.name} carries no deployinc provenance, so the PyTorch model cannot be rebuilt",
                hint="export it with deployinc export, or bench the model by name (deployinc bench googlenet)",
            )
            raise self._torch_error
        from ..errors import DeployincError
        from ..models.loading import load_from_provenance

        try:
            self._loaded = load_from_provenance(self.provenance, trust_code=self.trust_code)
        except DeployincError as exc:
            self._torch_error = BackendUnavailable(f"cannot rebuild the PyTorch model: {exc.message}", hint=exc.hint)
            raise self._torch_error from exc
        return self._loaded

    def torch_module(self, fused: bool) -> Any:
        """The eager module as the user has it (``fused=False``), or after deployinc's prepare passes.

        Raises:
            BackendUnavailable: No provenance, or the model cannot be rebuilt (weights moved...).
        """
        key = "torch-fused" if fused else "torch"
        if key in self.modules:
            return self.modules[key]
        if fused and "torch" in self.modules and self.provenance is None:
            from ..prepare import prepare

            self.modules[key] = prepare(self.modules["torch"], (1, *self.chw), mean=self.mean, std=self.std)[0]
            return self.modules[key]
        loaded = self._load()
        if not fused:
            self.modules[key] = loaded.module.eval()
            return self.modules[key]
        from ..prepare import prepare

        aux = tuple(self.provenance.aux_heads or ()) + tuple(loaded.info.aux_heads)
        prepared, _ = prepare(loaded.module, (1, *self.chw), aux_heads=tuple(dict.fromkeys(aux)), mean=self.mean, std=self.std)
        self.modules[key] = prepared
        return prepared


def _file_precision(model: Any) -> str:
    meta = {p.key: p.value for p in model.metadata_props}
    value = meta.get("deployinc.precision", "").strip('"').lower()
    if value in PRECISIONS:
        return value
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in model.graph.node):
        return "int8"
    return "fp32"


def open_onnx(path: str | os.PathLike[str], exported_from: str | None = None, trust_code: bool = False) -> BenchModel:
    """Read and check an ONNX file and its single image input.

    Raises:
        OnnxFileError: The file cannot be read safely.
        BadInputError: Not one N x C x H x W input with static C, H, W.
    """
    from ..io import load_onnx, sha256_file
    from ..metadata import read_provenance
    from ..precision._common import input_spec

    f = load_onnx(path)
    spec = input_spec(f.model)
    prov = read_provenance(f.model)
    name = prov.model_spec if prov is not None else Path(path).stem
    return BenchModel(
        path=Path(path),
        name=name,
        onnx=f.model,
        input_name=spec.name,
        chw=spec.chw,
        static_batch=spec.static_batch,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        file_precision=_file_precision(f.model),
        provenance=prov,
        sha256=sha256_file(path),
        exported_from=exported_from,
        trust_code=trust_code,
    )


def looks_like_onnx_path(text: str) -> bool:
    """Whether the MODEL argument names a file rather than a model to export."""
    return text.endswith(".onnx") or os.sep in text or Path(text).is_file()


@contextlib.contextmanager
def resolve_model(model: str, threads: int | None = None, log: Any = None, trust_code: bool = False) -> Any:
    """Yield a :class:`BenchModel` for an ``.onnx`` path, or for a model name exported into a temporary folder
    through :func:`deployinc.export.export_pipeline` (its bundled export config applies) and removed afterwards."""
    if looks_like_onnx_path(model):
        yield open_onnx(model, trust_code=trust_code)
        return
    from ..export import export_pipeline

    from ..io import scratch_dir

    with scratch_dir("bench") as tmp:  # a killed run's folder is removed by the next run
        if log:
            log(f"exporting {model} (deployinc export {model}) into a temporary folder")
        result = export_pipeline(model, out=Path(tmp) / "model.onnx", threads=threads, quick_check=False, log=log)
        assert result.path is not None
        yield open_onnx(result.path, exported_from=model, trust_code=True)  # the user named this model
