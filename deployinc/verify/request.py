"""What ``deployinc verify`` is asked: one dataclass shared by the CLI and the library, checked before any work.

The stages that follow it live in :mod:`deployinc.verify.core`: request -> subject (the file, its provenance,
geometry and batch sizes) -> inputs -> reference -> reference outputs (and the float32 noise floor) -> backends
run and compared -> preprocessing check -> localisation -> report.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..backends import COMPUTE_PRECISION_BACKENDS, float_precision_problem, precision_problem
from ..core import limits
from ..core.metrics import PRECISIONS
from ..errors import BadInputError
from .backends import parse_providers

DEFAULT_SAMPLES = 8
INPUT_KINDS = ("natural", "uniform", "normal")
LOCALIZE_METHODS = ("auto", "all", "bisect")


@dataclass
class VerifyRequest:
    """Everything verify is asked; see :func:`deployinc.verify.core.verify` for each field.

    ``model`` is the ONNX file. Budgets in ``tolerance`` (max_rel, max_abs, min_cosine, min_top1, min_top5) are
    the user's and always apply.
    """

    model: str | os.PathLike[str]
    reference: str | None = None
    weights: str | None = None
    against: str | os.PathLike[str] | None = None
    providers: str | Sequence[str] = "cpu"
    precision: str | None = None
    float_precision: str | None = None
    batches: Sequence[int] | None = None
    samples: int = DEFAULT_SAMPLES
    data: str | os.PathLike[str] | None = None
    labels: bool | str = False
    inputs: str = "natural"
    seed: int = 0
    input_shape: Sequence[int] | None = None
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    num_classes: int | None = None
    tolerance: dict[str, float | None] | None = None
    localize: bool | None = None
    localize_method: str = "auto"
    threads: int | None = None
    use_cache: bool = True
    isolate: bool | None = None
    trust_model_code: bool = False
    file_tolerances: bool = False
    fp64_floor: bool = True
    timeout: float | None = None
    allow_skip: bool = False
    save_inputs: str | os.PathLike[str] | None = None
    save_outputs: str | os.PathLike[str] | None = None
    load_outputs: str | os.PathLike[str] | None = None
    force: bool = False
    log: Callable[[str], None] | None = None

    def backend_names(self) -> list[str]:
        return parse_providers(self.providers if isinstance(self.providers, str) else ",".join(self.providers))

    def check(self) -> list[str]:
        """Refuse contradictory or out-of-range requests before any heavy work; returns the backend names.

        Raises:
            BadInputError: With the problem and a hint.
        """
        names = self.backend_names()
        if self.precision is not None and self.precision not in PRECISIONS:
            raise BadInputError(f"unknown precision {self.precision!r}", hint=f"use one of {', '.join(PRECISIONS)}")
        if self.precision is not None:
            problem = precision_problem(self.precision, names)
            if problem is not None:  # bf16 is a compute precision: a backend that cannot compute it would run fp32
                able = COMPUTE_PRECISION_BACKENDS[self.precision]
                raise BadInputError(
                    f"--precision {problem}",
                    hint=f"{self.precision} runs on {', '.join(able)}: --providers {able[0]} --precision {self.precision}",
                )
        fp = float_precision_problem(self.float_precision, self.precision, names)
        if fp is not None:
            raise BadInputError(fp[0], hint=fp[1])
        given = [n for n, v in (("--reference", self.reference), ("--against", self.against), ("--load-outputs", self.load_outputs)) if v is not None]
        if len(given) > 1:
            raise BadInputError(f"{' and '.join(given)} were all given", hint="use one reference: a torch model, an ONNX file, or saved outputs")
        if self.weights is not None and self.reference is None and self.against is not None:
            raise BadInputError("--weights goes with --reference, not --against", hint="drop --weights")

        limits.check_int("--samples", self.samples, 1, limits.SAMPLES_MAX, example="16")
        for b in self.batches or ():
            limits.check_int("--batch", b, 1, limits.BATCH_MAX, example="1,8")
        limits.check_seed("--seed", self.seed)
        if self.num_classes is not None:
            limits.check_num_classes("--num-classes", self.num_classes)
        if self.inputs not in INPUT_KINDS and not str(self.inputs).endswith((".npy", ".npz")):
            raise BadInputError(f"unknown --inputs {self.inputs!r}", hint="use natural, uniform, normal, or a .npy / .npz file")
        if self.data is not None and self.inputs != "natural":
            raise BadInputError("--data and --inputs were both given", hint="images from --data, or --inputs, not both")
        if self.labels and self.data is None:
            raise BadInputError("--labels needs --data", hint="point --data at a labelled folder: one sub-folder per class")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and math.isfinite(self.timeout) and self.timeout > 0):
            raise BadInputError(f"--timeout {self.timeout} must be a positive number of seconds", hint="e.g. --timeout 600")
        if self.localize_method not in LOCALIZE_METHODS:
            raise BadInputError(f"unknown localisation method {self.localize_method!r}", hint="use auto, all or bisect")
        if self.threads is not None:
            limits.check_threads("--threads", self.threads)
        for key, value in (self.tolerance or {}).items():
            if key not in limits.TOLERANCE_RANGES:
                raise BadInputError(f"unknown budget {key!r}", hint=f"known: {', '.join(sorted(limits.TOLERANCE_RANGES))}")
            if value is not None:
                limits.check_tolerance("--" + key.replace("_", "-"), key, value)
        return names
