"""What a benchmark runs: an ONNX file, its image input, and the PyTorch modules it came from (rebuilt from the
provenance in the file) for the eager baselines. A model name is exported first, above the stages
(:func:`deployinc.api.resolve_model`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.graph import detect_precision
from ..core.images import natural_images
from ..errors import BackendUnavailable, BadInputError, DeployincError
from ..io import load_onnx, sha256_file
from ..io.arrays import read_npy
from ..metadata import read_provenance
from ..models.loading import load_from_provenance
from ..prepare import prepare
from ..subject import Subject
from ..subject.inputs import input_spec, load_inputs
from ..subject.reference import from_spec
from ..core.precisions import PRECISIONS as _PRECISIONS

PRECISIONS = _PRECISIONS


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
        file_precision: What the file computes in (``fp32``, ``fp16`` or ``int8``), detected as verify does
            (:func:`deployinc.core.graph.detect_precision`: the recorded metadata, else Q/DQ nodes, else float16
            weights).
        file_precision_why: How that was told.
        provenance: The deployinc provenance of the file, or None.
        sha256: sha256 of the file.
        exported_from: The model name when the file was exported for this benchmark.
        modules: Provided PyTorch modules by backend (``torch``, ``torch-fused``), bypassing the provenance.
        trust_code: Rebuild a ``module:function`` spec recorded in the file (the user named it, or passed
            ``--trust-model-code``); registry names need no confirmation.
        weights: A checkpoint to rebuild the provenance's model from instead of the recorded one (it moved).
        reference: What the torch rows run when ``--reference`` named the model (see :meth:`use_reference`).
        given_inputs: Inputs from ``--inputs FILE`` (see :meth:`use_inputs`), else None (seeded images).
        inputs_desc: Where the inputs come from, for the report.
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
    file_precision_why: str = ""
    weights: str | None = None
    reference: dict[str, Any] | None = None
    given_inputs: np.ndarray | None = field(default=None, repr=False)
    inputs_desc: str = "seeded natural-image statistics (deployinc.core.images.natural_images, seed 0)"
    _inputs: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    _loaded: Any = field(default=None, repr=False)
    _subject: Subject | None = field(default=None, repr=False)
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
        """A batch of the given inputs (:meth:`use_inputs`), else of seeded normalised natural-image-statistics
        inputs (the same on every machine)."""
        if batch not in self._inputs:
            if self.given_inputs is not None:
                base = self.given_inputs[:batch]
            else:
                # Up to 8 distinct images, repeated for bigger batches (content does not change a dense CNN's speed).
                base = natural_images(min(batch, 8), self.chw, self.mean, self.std, seed=0)
            reps = -(-batch // len(base))
            self._inputs[batch] = np.ascontiguousarray(np.concatenate([base] * reps)[:batch])
        return self._inputs[batch]

    def use_inputs(self, path: str | os.PathLike[str]) -> None:
        """Bench on the inputs of ``path``: an ``.npz`` written by ``verify --save-inputs`` (its ``input`` array)
        or an ``.npy`` of normalised N x C x H x W float inputs; batch sizes above N repeat them.

        Raises:
            BadInputError: Missing or unreadable, not N x C x H x W of the model's C, H, W, not float, not finite.
        """
        p = os.fspath(path)
        if p.endswith(".npz"):
            arr = load_inputs(p)
        elif p.endswith(".npy"):
            arr = read_npy(p, "--inputs", "save one N x C x H x W array of normalised floats with numpy.save")
        else:
            raise BadInputError(f"--inputs {p} is not an .npz or .npy file", hint="give the .npz that verify --save-inputs wrote")
        if arr.ndim == 3:
            arr = arr[None]
        want = f"N x {' x '.join(str(d) for d in self.chw)}"
        if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(self.chw) or arr.shape[0] < 1:
            raise BadInputError(
                f"--inputs {p} holds an array of shape {list(arr.shape)}; {self.path.name} takes {want} (input {self.input_name!r})",
                hint="save inputs of the model's size (deployinc verify MODEL --save-inputs FILE.npz)",
            )
        if arr.dtype.kind != "f":
            raise BadInputError(
                f"--inputs {p} holds {arr.dtype.name} values; bench feeds normalised float images",
                hint="save float32 inputs (verify --save-inputs writes them)",
            )
        if not np.isfinite(arr).all():
            raise BadInputError(f"--inputs {p} holds NaN or infinite values", hint="save finite, normalised inputs")
        self.given_inputs = np.ascontiguousarray(arr, dtype=np.float32)
        self._inputs.clear()
        n = int(arr.shape[0])
        self.inputs_desc = f"{p}: {n} input(s) as given (--inputs; repeated to fill batch sizes above {n})"

    def use_reference(self, spec: str, weights: str | None, log: Any = None) -> None:
        """Run the torch rows on ``spec`` (``package.module:function`` or a registry name) with ``weights``, as
        ``verify --reference SPEC --weights CKPT`` builds its reference (:func:`deployinc.subject.reference.from_spec`).
        The spec the file records, named again, rebuilds exactly what was exported (confirming its code).

        Raises:
            ModelSpecError, WeightsError: The model or its checkpoint cannot be loaded.
        """
        prov = self.provenance
        if prov is not None and spec == prov.model_spec:
            self.trust_code, self.weights = True, weights
            self.reference = {"kind": "provenance", "spec": spec, "weights": weights, "description": f"{spec}, rebuilt from the file's metadata (confirmed by --reference)"}
            return

        ref = from_spec(spec, weights, self.chw, self.num_classes(), self.mean, self.std, seed=getattr(prov, "seed", 0) or 0)
        for note in ref.notes:
            if log is not None and note.startswith("warning"):
                log(note)
        self.modules = {"torch": ref.module}
        self.reference = {"kind": "spec", "spec": spec, "weights": ref.weights, "description": ref.description}

    def use_subject(self, subject: Subject) -> None:
        """Take the torch rows' model from ``subject``'s torch reference (built once, shared with the stages that judge
        against it) instead of rebuilding it here, when it stands for this file's provenance."""
        if subject.stands_for(self.provenance, self.weights):
            self._subject = subject

    def num_classes(self) -> int | None:
        """The class count of the first output (N x K), when the file says."""
        outs = list(self.onnx.graph.output)
        if not outs:
            return None
        dims = list(outs[0].type.tensor_type.shape.dim)
        if len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value > 0:
            return int(dims[1].dim_value)
        return None

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
            "file_precision_why": self.file_precision_why,
            "provenance": prov.to_dict() if prov is not None else None,
            "reference": self.reference,
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
                hint="give --reference package.module:function or a model name, with --weights CKPT, for the torch rows",
            )
            raise self._torch_error
        try:
            if self._subject is not None:
                self._loaded = self._subject.reference()  # eval mode, auxiliary heads removed
            else:
                self._loaded = load_from_provenance(self.provenance, weights=self.weights, trust_code=self.trust_code)
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
        if fused and "torch" in self.modules and (self.provenance is None or (self.reference or {}).get("kind") == "spec"):
            self.modules[key] = prepare(self.modules["torch"], (1, *self.chw), mean=self.mean, std=self.std)[0]
            return self.modules[key]
        loaded = self._load()
        if not fused:
            self.modules[key] = loaded.module.eval()
            return self.modules[key]

        aux = tuple(self.provenance.aux_heads or ()) + tuple(loaded.info.aux_heads)
        prepared, _ = prepare(loaded.module, (1, *self.chw), aux_heads=tuple(dict.fromkeys(aux)), mean=self.mean, std=self.std)
        self.modules[key] = prepared
        return prepared


def _file_precision(model: Any) -> tuple[str, str]:
    """(precision, why): what the file computes in, told as verify tells it."""
    return detect_precision(model)


def open_onnx(path: str | os.PathLike[str], exported_from: str | None = None, trust_code: bool = False) -> BenchModel:
    """Read and check an ONNX file and its single image input.

    Raises:
        OnnxFileError: The file cannot be read safely.
        BadInputError: Not one N x C x H x W input with static C, H, W.
    """
    f = load_onnx(path)
    spec = input_spec(f.model)
    prov = read_provenance(f.model)
    name = prov.model_spec if prov is not None else Path(path).stem
    precision, why = _file_precision(f.model)
    return BenchModel(
        path=Path(path),
        name=name,
        onnx=f.model,
        input_name=spec.name,
        chw=spec.chw,
        static_batch=spec.static_batch,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        file_precision=precision,
        file_precision_why=why,
        provenance=prov,
        sha256=sha256_file(path),
        exported_from=exported_from,
        trust_code=trust_code,
    )


def looks_like_onnx_path(text: str) -> bool:
    """Whether the MODEL argument names a file rather than a model to export."""
    return text.endswith(".onnx") or os.sep in text or Path(text).is_file()
