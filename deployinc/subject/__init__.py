"""The subject: what every stage works on, below the stages so that each reads it one way.

- :mod:`.inputs`: the image input of an ONNX classifier (name, C x H x W, batch, normalisation: the flag, else the
  file's metadata, else ImageNet's), sample images for it, saved inputs;
- :mod:`.reference`: the torch reference (the original eager model, eval mode, auxiliary heads removed), from a
  file's provenance or a model spec;
- :class:`Subject`: one file with its provenance, image input and precision, and its torch reference built on first
  use and kept, with its outputs per input batch, so that a caller running several stages on one model (deploy: an
  oracle, a verify per candidate, the eager baseline) builds the reference and runs it once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.graph import detect_precision
from ..io import load_onnx
from ..metadata import read_provenance
from .inputs import InputSpec, input_spec
from .reference import Reference, from_provenance, reference_key


@dataclass
class Subject:
    """An ONNX file and what every stage reads from it, with its torch reference built once.

    Attributes:
        path: The ONNX file.
        model: Its ``onnx.ModelProto`` (external data not loaded).
        provenance: Its deployinc provenance, or None.
        precision: What it computes in (:func:`deployinc.core.graph.detect_precision`), and ``precision_why``.
        weights: A checkpoint to rebuild the provenance's model from instead of the recorded one (it moved).
        trust_code: Rebuild a ``module:function`` spec recorded in the file (the user confirmed it).
        use_cache: Use the BatchNorm-statistics cache for a random-weight reference.
    """

    path: Path
    model: Any
    provenance: Any
    precision: str
    precision_why: str
    weights: str | None = None
    trust_code: bool = False
    use_cache: bool = True
    _reference: Reference | None = field(default=None, repr=False)
    _outputs: dict[tuple[Any, ...], dict[str, Any]] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, weights: str | None = None, trust_code: bool = False, use_cache: bool = True) -> Subject:
        """Read ``path`` (its graph and metadata; nothing is built).

        Raises:
            OnnxFileError: The file cannot be read safely.
        """
        f = load_onnx(path, load_external=False)
        precision, why = detect_precision(f.model)
        return cls(Path(path), f.model, read_provenance(f.model), precision, why, weights, trust_code, use_cache)

    @property
    def image(self) -> InputSpec:
        """The single image input (:func:`deployinc.subject.inputs.input_spec`)."""
        return input_spec(self.model)

    @property
    def reference_built(self) -> bool:
        return self._reference is not None

    def stands_for(self, provenance: Any, weights: str | None = None, use_cache: bool = True) -> bool:
        """Whether this subject's torch reference is the one a file with ``provenance`` is verified against with
        ``weights`` and ``use_cache``: the same model, weights, seed and statistics (an fp16 or int8 file made from
        this one keeps its provenance)."""
        if self.provenance is None or provenance is None:
            return False
        same = (weights, use_cache) == (self.weights, self.use_cache)
        return same and reference_key(provenance) == reference_key(self.provenance)

    def reference(self, say: Callable[[str], None] | None = None) -> Reference:
        """The torch reference rebuilt from the provenance, on the first call; the same object afterwards.

        Raises:
            UntrustedCodeError, ModelSpecError, WeightsError: See :func:`deployinc.subject.reference.from_provenance`.
        """
        if self._reference is None:
            if say is not None:
                say(f"rebuilding the reference {self.provenance.model_spec} from the file's metadata")
            self._reference = from_provenance(self.provenance, weights=self.weights, use_cache=self.use_cache, trust_code=self.trust_code)
        return self._reference

    def reference_outputs(self, x: Any, batch: int, threads: int | None, output_name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The reference's outputs on inputs ``x`` run at ``batch`` with ``threads`` (``run()`` computes them the first
        time; the same inputs, batch and threads give the same arrays afterwards)."""
        key = (hashlib.sha256(x.tobytes()).hexdigest(), x.shape, str(x.dtype), batch, threads, output_name)
        if key not in self._outputs:
            outs = run()
            for v in outs.values():  # shared by every caller: a change in place would be a wrong reference for the next
                v.setflags(write=False)
            self._outputs[key] = outs
        return dict(self._outputs[key])


__all__ = ["InputSpec", "Reference", "Subject", "input_spec"]
