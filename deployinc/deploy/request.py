"""What ``deployinc deploy`` is asked: one dataclass shared by the CLI and the library, checked before any work.

Everything a user can get wrong is refused here, with one line and a hint, before a model is loaded or a file is
written: unknown precisions, backends, objectives and targets; a ``--data`` folder without images; an
``--accuracy-data`` folder without class sub-folders; an existing package without ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import backends as B
from .._version import __version__
from ..core import limits
from ..core import graph as G
from ..core.cache import read_regular
from ..core.env import isa_cap
from ..core.images import IMAGE_EXTENSIONS, list_images, load_image
from ..core.metrics import MAX_ACCURACY_DROP
from ..errors import BadInputError, DeployincError
from ..io import load_onnx, sha256_file
from ..models.registry import get_model_info
from ..precision.recipe import cpu_int8_path
from ..core.precisions import PRECISIONS

#: Precisions a candidate can compute in. bf16 is a compute precision of a backend (OpenVINO on AMX), not a file.
DEPLOY_PRECISIONS = PRECISIONS
OBJECTIVES = ("latency", "throughput")
TARGETS = ("auto", "cpu", "cuda", "tensorrt")
#: Backends deploy can ship: the ONNX ones (a torch row is the baseline, not an artifact).
SHIPPABLE = tuple(B.ONNX_BACKENDS)
PACKAGE_SUFFIX = ".deploy"
#: The file deploy writes last in a package, listing every other file: what tells a package from another folder.
MANIFEST = "manifest.json"
#: Request fields that change no candidate's artifact, verdict or timing, so finished candidates are reused across
#: them: where the package goes and whether it replaces one (out, force), what goes in it (keep_variants), the
#: choice among finished candidates (objective, require_*, min_top1_agreement: choose() runs every time), and
#: where messages go (log).
NOT_IN_KEY = ("out", "force", "keep_variants", "log", "require_backend", "require_precision", "min_top1_agreement", "objective")
#: Bumped whenever how an artifact is made or a candidate judged changes, so that finished work cached by an earlier
#: deployinc is not reused for a different recipe. 3: the int8 recipe per CPU, float graph outputs, the task rule;
#: 4: GPTQ weight rounding; 5: GPTQ act-order, the cheapest passing fallback set; 6: its cost counts the layers
#: carried into float; 7: carried layers read constant float weights (ORT), the -qdq twin (OpenVINO). 8 and 9
#: judged the search on other images (tried, not kept: docs/benchmarks/verdict-stability-amd-epyc.md); 10: the
#: second look. 11: int8 top-1 ties sized by the cosine budget (core.metrics.tie_cap); the search judges verify's
#: images and more sets of as many (96 images at least), each on its own. 12: ties by the logits' spread, never
#: wider than at cosine 0.99; a whole model verify's own judge passes is not searched.
#: 13: an int8 graph's points whose ReLU or Clip the quantizer folded into a QuantizeLinear (its file records which)
#: are localised after that clamp;
#: points over budget whose error a pooling averages back are said so (not "dropped (mapping)").
#: 14: the layer search also grows and bisects by gain per multiply-add and keeps the cheaper passing prefix;
#: the int8 recipe follows an ONEDNN_MAX_CPU_ISA cap (OpenVINO's kernels).
#: 15: the OpenVINO twin of a mixed file keeps its own set: the passing one of least work OpenVINO computes in float.
#: 16: a mixed file run with its float layers in bf16 (OpenVINO) keeps the search's margin on the search's images.
#: 17: that form is its own artifact (int8-cpu-mixed-qdq-bf16), its set widened by the ranking until it keeps the margin.
RECIPE = 17
#: What ``--fallback`` takes: ``auto`` adds a mixed candidate (a few layers kept in float) where whole-model
#: lower precision fails; ``none`` does not.
FALLBACKS = ("auto", "none")


def _one_of(value: str, known: Sequence[str], what: str) -> str:
    v = value.strip().lower()
    if v not in known:
        raise BadInputError(f"unknown {what} {value!r}", hint=f"use one of {', '.join(known)}")
    return v


def check_image_folder(path: str, option: str, labelled: bool) -> None:
    """Refuse a folder that is missing, holds no images, holds no image that decodes (zero-byte or damaged files
    only), or (``labelled``) has no class sub-folders with images."""
    p = Path(path)
    if not p.is_dir():
        raise BadInputError(f"{option} {path} is not a folder", hint="point it at a folder of images" + (" (one sub-folder per class)" if labelled else ""))
    files = list_images(p)  # the rule the loaders use: recursive, by extension
    if labelled:
        files = [f for f in files if len(f.relative_to(p).parts) > 1]
        if not files:
            raise BadInputError(
                f"{option} {path} has no class sub-folders with images, so its images carry no labels",
                hint="lay it out as DIR/<class>/<image> (ImageFolder), one sub-folder per class",
            )
    elif not files:
        raise BadInputError(f"{option} {path} holds no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...)", hint="point it at a folder of images")
    for f in files:  # the first that decodes is enough here; the loaders skip (and report) the others
        try:
            load_image(f, (8, 8))
            return
        except Exception:  # noqa: BLE001 - PIL raises many types for a bad file; the loaders skip them the same way
            continue
    raise BadInputError(
        f"{option} {path} holds {len(files)} image file(s), and none can be read (empty or damaged files)",
        hint="point it at a folder of readable images (" + ", ".join(IMAGE_EXTENSIONS[:4]) + ", ...)",
    )


def package_problem(folder: Path) -> str | None:
    """Why ``--force`` may not replace ``folder`` (None: an empty folder, or a package deploy wrote, holding only the
    files its manifest lists)."""
    try:
        if not any(folder.iterdir()):
            return None
        data = json.loads(read_regular(folder / MANIFEST, limit=16 << 20))
    except (OSError, ValueError):
        return f"it holds no readable {MANIFEST}"
    listed = data.get("files") if isinstance(data, dict) else None
    if not isinstance(listed, dict) or "package" not in data:
        return f"its {MANIFEST} is not a deploy package's"
    for top, dirs, files in os.walk(folder):  # symbolic links are not followed: a link is one entry
        for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(top, d)))]:
            rel = Path(top, name).relative_to(folder).as_posix()
            if rel != MANIFEST and rel not in listed:
                return f"it holds {rel}, which deploy did not write"
    return None


def folder_digest(path: str | None) -> str | None:
    """A digest of what a data folder holds, cheap to take: every image's path, size and modification time (the
    loaders' rule: recursive, by extension). A folder whose images change gets another digest."""
    if path is None:
        return None
    h = hashlib.sha256()
    root = Path(path)
    for f in list_images(root):
        try:
            st = f.stat()
        except OSError:
            continue
        h.update(json.dumps([f.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()


@dataclass
class DeployRequest:
    """Everything deploy is asked; see :func:`deployinc.deploy.run.deploy`."""

    model: str
    weights: str | None = None
    num_classes: int | None = None
    input_shape: Sequence[int] | None = None
    out: str | None = None
    data: str | None = None
    accuracy_data: str | None = None
    target: str = "auto"
    precisions: Sequence[str] | None = None
    backends: Sequence[str] | None = None
    batches: Sequence[int] = (1,)
    objective: str = "latency"
    min_top1_agreement: float | None = None
    require_backend: str | None = None
    require_precision: str | None = None
    keep_variants: bool = False
    force: bool = False
    warmup: int = 5
    iters: int = 50
    threads: int | None = None
    samples: int = 16
    calibration_images: int = 64
    torch_compile: bool = True
    search: bool = True
    fallback: str = "auto"
    max_accuracy_drop: float = MAX_ACCURACY_DROP
    trust_model_code: bool = False
    log: Callable[[str], None] | None = field(default=None, repr=False, compare=False)

    def check(self) -> None:
        """Normalise and refuse bad values before any work.

        Raises:
            BadInputError: With the problem and a hint.
        """
        self.target = _one_of(self.target, TARGETS, "target")
        self.objective = _one_of(self.objective, OBJECTIVES, "objective")
        self.fallback = _one_of(self.fallback, FALLBACKS, "--fallback value")
        limits.check_float("--max-accuracy-drop", self.max_accuracy_drop, 0, 100, example="1.0")
        if self.precisions is not None:
            self.precisions = list(dict.fromkeys(_one_of(p, DEPLOY_PRECISIONS, "precision") for p in self.precisions if p.strip()))
            if not self.precisions:
                raise BadInputError("no precision given", hint=f"use some of {', '.join(DEPLOY_PRECISIONS)}")
        if self.backends is not None:
            self.backends = [self._shippable(b, "--backends") for b in self.backends if b.strip()]
            if not self.backends:
                raise BadInputError("no backend given", hint=f"use some of {', '.join(SHIPPABLE)}")
        if self.require_backend is not None:
            self.require_backend = self._shippable(self.require_backend, "--require-backend")
        if self.require_precision is not None:
            self.require_precision = _one_of(self.require_precision, DEPLOY_PRECISIONS, "precision")
        self.batches = list(dict.fromkeys(self.batches)) or [1]
        for b in self.batches:
            limits.check_int("--batch", b, 1, limits.BATCH_MAX, example="1,8")
        if len(self.batches) > limits.DEPLOY_BATCH_SIZES_MAX:
            raise BadInputError(
                f"--batch lists {len(self.batches)} batch sizes; deploy times every candidate at each of them",
                hint=f"give at most {limits.DEPLOY_BATCH_SIZES_MAX}, e.g. --batch 1,8,32,128 (the first is the latency one)",
            )
        if self.min_top1_agreement is not None:
            limits.check_float("--min-top1-agreement", self.min_top1_agreement, 0, 1, example="0.995")
        limits.check_int("--iters", self.iters, 1, 100_000, example="50")
        limits.check_int("--warmup", self.warmup, 0, 100_000, example="5")
        limits.check_int("--samples", self.samples, 1, limits.SAMPLES_MAX, example="16")
        limits.check_int("--calibration-images", self.calibration_images, 1, 100_000, example="64")
        if self.threads is not None:
            limits.check_threads("--threads", self.threads)
        for path, option, labelled in ((self.data, "--data", False), (self.accuracy_data, "--accuracy-data", True)):
            if path is not None:
                check_image_folder(path, option, labelled)
        if self.weights is not None and (os.sep in self.weights or self.weights.endswith((".pt", ".pth", ".safetensors"))) and not Path(self.weights).is_file():
            raise BadInputError(f"--weights {self.weights} does not exist", hint="give the path of a .pth / .safetensors checkpoint")
        self.check_package()

    @staticmethod
    def _shippable(name: str, option: str) -> str:
        canon = B.canonical(name)
        if canon is None:
            raise BadInputError(f"unknown backend {name!r} in {option}", hint=f"deploy ships one of {', '.join(SHIPPABLE)}")
        if canon not in SHIPPABLE:
            raise BadInputError(f"{option} {name}: {canon} is the eager baseline, not an artifact to ship", hint=f"use one of {', '.join(SHIPPABLE)}")
        return canon

    def model_name(self) -> str:
        """The package's name: the file's stem, or the model spec's last part (``timm/resnet18`` -> resnet18)."""
        raw = Path(self.model).stem if self.model.endswith(".onnx") else self.model.replace(":", "_").split("/")[-1]
        safe = "".join(c if c.isalnum() or c in "_-." else "_" for c in raw).strip("._") or "model"
        return safe

    def package_path(self) -> Path:
        return Path(self.out) if self.out else Path(f"{self.model_name()}{PACKAGE_SUFFIX}")

    def check_package(self) -> None:
        """Refuse a destination deploy may not write: the current folder or one above it, an existing path without
        ``--force``, and with it anything but a deploy package (or an empty folder): nothing of the user's is lost."""
        target = self.package_path()
        here = Path.cwd().resolve()
        where = target.resolve()
        if where == here or where in here.parents:
            raise BadInputError(
                f"--out {target} is the current folder or one above it; deploy replaces its --out folder as a whole",
                hint="give the package a folder of its own, e.g. --out " + f"{self.model_name()}{PACKAGE_SUFFIX}",
            )
        if (target.exists() or target.is_symlink()) and not self.force:
            raise BadInputError(f"{target} already exists", hint="give --force to replace it (only once the new package is complete), or --out elsewhere")
        if target.exists() and not target.is_dir():
            raise BadInputError(f"{target} exists and is not a package folder", hint="choose another --out")
        if target.is_dir():
            problem = package_problem(target)
            if problem is not None:
                raise BadInputError(
                    f"--force replaces a package deploy wrote, and {target} is not one: {problem}",
                    hint="choose another --out (or move your files out of it first)",
                )
        parent = target.parent if str(target.parent) else Path(".")
        if not parent.is_dir():
            raise BadInputError(f"the folder of {target} does not exist", hint=f"create {parent} first, or choose another --out")

    def key(self, model_digest: str) -> str:
        """What the finished candidates are keyed by: the model's bytes (and weights), what the data folders hold,
        and every option that changes a candidate's artifact, verdict or timing (:data:`NOT_IN_KEY` are the others)."""
        fields = asdict(self)
        for k in NOT_IN_KEY:
            fields.pop(k, None)
        fields["data"] = {"path": self.data, "contents": folder_digest(self.data)}
        fields["accuracy_data"] = {"path": self.accuracy_data, "contents": folder_digest(self.accuracy_data)}
        fields["model_digest"] = model_digest
        fields["deployinc"] = __version__
        fields["recipe"] = RECIPE
        fields["cpu_int8_path"] = cpu_int8_path()  # the int8 recipe and its speed follow the CPU
        fields["isa_cap"] = isa_cap()  # and OpenVINO's and torch's speed follow a oneDNN cap
        blob = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def known_chw(self) -> tuple[int, ...] | None:
        """C, H, W of one input where it can be told before any export: ``--input-shape``, an ONNX file's input
        (refusing an ``--input-shape`` that it does not take, as verify does), or a registry model's size."""
        if self.model.endswith(".onnx") and Path(self.model).is_file():
            gi = G.image_input(load_onnx(self.model, load_external=False).model, self.model)
            if self.input_shape is not None and (gi.chw is None or tuple(gi.chw) != tuple(self.input_shape)[1:]):
                raise BadInputError(
                    f"--input-shape {','.join(map(str, self.input_shape))} does not fit {self.model}: its input {gi.name!r} is {gi.shape_text()}, and deploy does not re-export an ONNX file",
                    hint="leave --input-shape out (it is read from the file), or deploy the model by name with it",
                )
            return tuple(gi.chw) if gi.chw is not None else None
        if self.input_shape is not None:
            return tuple(int(v) for v in self.input_shape)[1:]
        try:
            return tuple(get_model_info(self.model).input_size)
        except DeployincError:  # a module:function, or a name the export will refuse with its own message
            return None

    def check_memory(self, chw: tuple[int, ...] | None) -> None:
        """Refuse batch sizes whose inputs cannot fit: bench holds the inputs of every batch size at once."""
        if chw is not None:
            limits.check_input_memory("--batch", ",".join(map(str, self.batches)), sum(self.batches), chw)

    def say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)


def model_digest(req: DeployRequest) -> str:
    """The digest that keys the model: an ONNX file's bytes, or a model spec with its checkpoint's bytes."""
    parts: list[Any] = []
    if req.model.endswith(".onnx") and Path(req.model).is_file():
        parts.append(sha256_file(req.model))
    else:
        parts.append(req.model)
    if req.weights is not None:
        parts.append(sha256_file(req.weights))
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()
