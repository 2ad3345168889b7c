"""Every flag of the CLI, declared once, in the group it belongs to; and the groups that turn raw values into fields.

A flag is a function returning click's decorator: its name, type and checks are written here and nowhere else, and
a command gives only what differs for it (its default, its help's wording). One name means one thing on every
command; where a spelling carries two meanings (``--data``: images to run, calibration images, training data), each
meaning is declared once under its own function. ``tests/cli/test_options.py`` reads the sources of ``deployinc/cli``
and fails when a flag name is declared in two places (aliases included) outside the meanings it lists.

A :class:`Group` bundles flags with the parse that turns their raw values into typed fields (a request's): verify's
request is built from its groups' fields, with no option written out again (:data:`VERIFY`).

Nothing here imports torch: command modules are imported to build ``deployinc --help``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

from .. import backends as B
from ..core import limits
from ..core.precisions import BF16, FP32, PRECISIONS
from .options import (
    batch_list_callback, check_with, float_in, int_in, mean_callback, num_classes_callback, parse_batches, parse_floats,
    parse_shape, seed_callback, shape_callback, std_callback, tolerance_callback,
)  # fmt: skip

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]
Callback = Callable[[click.Context, click.Parameter, Any], Any]


# outputs -------------------------------------------------------------------------------------------------------------


def force(help: str = "Overwrite existing output files.") -> Decorator:
    return click.option("--force", is_flag=True, help=help)


def json_report(help: str = "Write the full report as JSON.") -> Decorator:
    return click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help=help)


def out(help: str) -> Decorator:
    """Where the command writes what it makes (a file, or deploy's package folder)."""
    return click.option("--out", "-o", default=None, help=help)


def no_check(help: str) -> Decorator:
    """Skip the command's own check of what it wrote."""
    return click.option("--no-check", is_flag=True, help=help)


# the model and its reference -----------------------------------------------------------------------------------------


def reference(help: str = "Torch reference as package.module:function (or a registry name), for files without deployinc metadata.") -> Decorator:
    return click.option("--reference", default=None, help=help)


def weights(help: str) -> Decorator:
    """A checkpoint of the model (its own, an initial one, or the new path of the one a file records)."""
    return click.option("--weights", default=None, help=help)


def trust_model_code(help: str) -> Decorator:
    return click.option("--trust-model-code", is_flag=True, help=help)


def num_classes(help: str = f"Number of classes, 1..{limits.NUM_CLASSES_MAX} (default: the model's).") -> Decorator:
    return click.option("--num-classes", type=int, default=None, callback=num_classes_callback, help=help)


def input_shape(help: str) -> Decorator:
    return click.option("--input-shape", default=None, callback=shape_callback, help=help)


def mean(help: str = "Input normalisation mean, comma-separated.") -> Decorator:
    return click.option("--mean", default=None, callback=mean_callback, help=help)


def std(help: str = "Input normalisation std, comma-separated (each > 0).") -> Decorator:
    return click.option("--std", default=None, callback=std_callback, help=help)


def seed(help: str, default: int | None = None) -> Decorator:
    """The seed of everything random in the run (init, BN recalibration, generated inputs, shuffles)."""
    return click.option("--seed", type=int, default=default, show_default=default is not None, callback=seed_callback, help=help)


def threads() -> Decorator:
    return click.option(
        "--threads", type=int, default=None, callback=check_with(limits.check_threads),
        help=f"Intra-op threads for torch and ONNX Runtime alike (recorded); 1..{limits.THREADS_MAX}.",
    )  # fmt: skip


# inputs --------------------------------------------------------------------------------------------------------------


def samples(default: int, help: str, example: str = "16") -> Decorator:
    """How many generated (or sample) images a run uses."""
    return click.option("--samples", type=int, default=default, show_default=True, callback=int_in(1, limits.SAMPLES_MAX, example), help=help)


def image_data(help: str) -> Decorator:
    """``--data`` meaning a folder of images the model runs on (verify, convert)."""
    return click.option("--data", type=click.Path(), default=None, help=help)


def calibration_data(help: str, required: bool = False) -> Decorator:
    """``--data`` meaning the folder of int8 calibration images (quantize, deploy)."""
    return click.option("--data", required=required, type=click.Path(), default=None, help=help)


def training_data() -> Decorator:
    """``--data`` meaning a training set (train): a folder, a CIFAR-10 directory, or a synthetic set's name."""
    return click.option("--data", required=True, help="ImageFolder dir (DIR/<class>/<img>), cifar-10-batches-py dir, or synthetic:shapes.")


def inputs(help: str, default: str | None = None, type: Any = None) -> Decorator:
    """The inputs to run on: a kind of generated input, or a saved file of normalised inputs."""
    return click.option("--inputs", "inputs", type=type, default=default, show_default=default is not None, help=help)


def batch(help: str, default: str | None = None) -> Decorator:
    """Batch sizes, comma-separated, each 1..BATCH_MAX (checked while click parses)."""
    return click.option("--batch", "batch", default=default, show_default=default is not None, callback=batch_list_callback, help=help)


# backends and precisions ---------------------------------------------------------------------------------------------

#: The end of ``--backends``'s help on every command: ``--providers`` is the same option (verify's first spelling).
PROVIDERS_ALIAS = " (--providers: the same option, verify's older spelling.)"


def backends(help: str, default: str | None = None) -> Decorator:
    """Backend names from the one table (:mod:`deployinc.backends`), the same on verify, bench and deploy."""
    return click.option("--backends", "--providers", "backends", default=default, show_default=default is not None, help=help + PROVIDERS_ALIAS)


def precision(help: str, choices: Iterable[str], default: str | None = None) -> Decorator:
    """``--precision`` meaning the one precision a command works at (verify judges it, convert writes it)."""
    return click.option("--precision", type=click.Choice(list(choices)), default=default, show_default=default is not None, help=help)


def precisions(help: str) -> Decorator:
    """``--precisions`` (also ``--precision``) meaning a comma-separated list of precisions to try (bench, deploy)."""
    return click.option("--precisions", "--precision", "precisions", default=None, help=help)


def float_precision() -> Decorator:
    """``--float-precision``: what an int8 file's float layers compute in, on a backend that offers a choice."""
    able = B.names(lambda r: BF16 in r.float_precisions)
    return click.option(
        "--float-precision", type=click.Choice([FP32, BF16]), default=None,
        help=f"What an int8 file's layers left in float compute in (default fp32); bf16 on {', '.join(able) or 'no backend'}, "
        "where the CPU has native bf16 (what deploy's int8-...-float-bf16 candidates ran). The int8 preset judges it.",
    )  # fmt: skip


def fallback(default: str, help: str) -> Decorator:
    """The layer-fallback search: ``auto`` keeps the fewest layers in float that pass; ``none`` does not search."""
    return click.option("--fallback", default=default, show_default=True, help=help)


# timing --------------------------------------------------------------------------------------------------------------


def warmup(default: int, help: str, callback: Callback | None = None) -> Decorator:
    return click.option("--warmup", type=int, default=default, show_default=True, callback=callback or int_in(1, limits.WARMUP_MAX, "10"), help=help)


def iters(default: int, help: str, callback: Callback | None = None) -> Decorator:
    return click.option("--iters", type=int, default=default, show_default=True, callback=callback or int_in(1, limits.ITERS_MAX, "100"), help=help)


def rounds() -> Decorator:
    return click.option("--rounds", type=int, default=1, show_default=True, callback=int_in(1, limits.ITERS_MAX, "3"), help="Interleave backends over this many rounds (fairer ratios on a busy machine).")


def max_time() -> Decorator:
    return click.option(
        "--max-time", "max_time", type=float, default=None, callback=float_in(0, limits.MAX_TIME_S_MAX, lo_open=True, example="30"),
        help="Stop a measurement after this many seconds of samples (at least 5 samples). One call can outlast it: without --timeout, each ONNX backend measurement is then stopped after max(10 x max-time, 60 s) (in its own process, as with --timeout).",
    )  # fmt: skip


def timeout(help: str, callback: Callback | None = None) -> Decorator:
    """Seconds one backend may take before it is stopped and fails."""
    return click.option("--timeout", "timeout", type=float, default=None, callback=callback, help=help)


# parity budgets (verify) ---------------------------------------------------------------------------------------------


def budgets() -> list[Decorator]:
    return [
        click.option("--max-rel", type=float, default=None, callback=tolerance_callback("max_rel"), help="Budget: max |error| / max |reference| per output (>= 0)."),
        click.option("--max-abs", type=float, default=None, callback=tolerance_callback("max_abs"), help="Budget: max |error| per output (>= 0)."),
        click.option("--min-cosine", type=float, default=None, callback=tolerance_callback("min_cosine"), help="Budget: smallest per-sample cosine similarity (-1..1)."),
        click.option("--min-top1", type=float, default=None, callback=tolerance_callback("min_top1"), help="Budget: top-1 agreement (0..1)."),
        click.option("--min-top5", type=float, default=None, callback=tolerance_callback("min_top5"), help="Budget: reference top-1 within the model's top-5 (0..1)."),
        click.option("--file-tolerances", is_flag=True, help="Honour budgets recorded in the file even where looser than the preset (by default only stricter ones apply)."),
    ]  # fmt: skip


# groups --------------------------------------------------------------------------------------------------------------


class Group:
    """Flags that belong together, applied as one decorator, with the parse that turns their raw values (click's
    keyword arguments, by parameter name) into typed fields. Without a parse, the raw values are the fields."""

    def __init__(self, title: str, flags: Iterable[Decorator], parse: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.title = title
        self.flags = list(flags)
        self._parse = parse

        def probe() -> None: ...

        for flag in self.flags:
            flag(probe)
        self.params: list[str] = [p.name or "" for p in getattr(probe, "__click_params__", [])]

    def __call__(self, f: F) -> F:
        for flag in reversed(self.flags):
            f = flag(f)
        return f

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        """This group's fields, from (and taken out of) ``raw``."""
        values = {name: raw.pop(name) for name in self.params}
        return self._parse(values) if self._parse is not None else values


class Groups:
    """Groups composed into one command: one decorator, one parse into every field (in the order given, so a
    group's checks run in that order: cheap ones first)."""

    def __init__(self, *groups: Group) -> None:
        self.groups = groups

    def __call__(self, f: F) -> F:
        for group in reversed(self.groups):
            f = group(f)
        return f

    def parse(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Every group's fields. A raw value no group takes is a bug in the command's declaration."""
        raw = dict(raw)
        fields: dict[str, Any] = {}
        for group in self.groups:
            fields.update(group.parse(raw))
        if raw:
            raise TypeError(f"options no group parses: {', '.join(sorted(raw))}")
        return fields


MODEL = Group(
    "model",
    [
        weights("none (seeded random init), DEFAULT / IMAGENET1K_V1 (torchvision), or a .pt/.pth/.safetensors file."),
        num_classes(),
        input_shape(f"N,C,H,W of the example input, all four (default: the model's); H and W up to {limits.IMAGE_SIDE_MAX}."),
        mean(),
        std(),
        seed(f"Seed of random initialisation and BN recalibration, 0..{limits.SEED_MAX}."),
    ],
)


# verify's groups: their fields are VerifyRequest's ---------------------------------------------------------------------


def _verify_backends(v: dict[str, Any]) -> dict[str, Any]:
    B.parse_backends(v["backends"], option="--providers", default="cpu")  # verify.backends.parse_providers, without numpy
    return {
        "providers": v["backends"], "precision": v["precision"], "float_precision": v["float_precision"],
        "batches": parse_batches(v["batch"]) if v["batch"] is not None else None,
        "isolate": v["isolate"], "timeout": v["timeout"], "threads": v["threads"], "allow_skip": v["allow_skip"],
    }  # fmt: skip


def _verify_reference(v: dict[str, Any]) -> dict[str, Any]:
    use_cache, fp64_floor = not v.pop("no_cache"), not v.pop("no_fp64_floor")
    return {**v, "use_cache": use_cache, "fp64_floor": fp64_floor}


def _verify_inputs(v: dict[str, Any]) -> dict[str, Any]:
    return {
        **v, "input_shape": parse_shape(v["input_shape"]), "mean": parse_floats(v["mean"], "--mean"),
        "std": parse_floats(v["std"], "--std", positive=True), "labels": v["labels"] or False,
    }  # fmt: skip


def _verify_budgets(v: dict[str, Any]) -> dict[str, Any]:
    file_tolerances = v.pop("file_tolerances")
    return {"file_tolerances": file_tolerances, "tolerance": v}


VERIFY = Groups(
    Group(
        "backends",
        [
            backends("Comma-separated backends, the same names as on bench and deploy: " + B.names_help() + ".", default="cpu"),
            precision("Tolerance preset (and TensorRT build precision; bf16: what " + B.compute_text(BF16) + " computes in); default: what the file holds.", list(PRECISIONS)),
            float_precision(),
            batch("Batch sizes, comma-separated (default 1,8; a static batch runs at its size)."),
            click.option("--isolate/--no-isolate", default=None, help="Run each ONNX backend in its own subprocess, so a native crash or hang is that backend failing (default: GPU backends, and every backend for files deployinc did not write). An isolated backend is stopped after --timeout: 300 s by default, 1800 s for ort-trt and trt-engine."),
            timeout("Seconds one backend may take; past it the backend is stopped and fails (runs every ONNX backend in its own process). Default for a backend in its own process (--isolate): 300 s, 1800 s for ort-trt and trt-engine (engine builds)."),
            threads(),
            click.option("--allow-skip", is_flag=True, help="Exit 0 when what ran passed even if requested backends could not run here (default: exit 3)."),
        ],
        _verify_backends,
    ),
    Group(
        "reference",
        [
            reference(),
            weights("Checkpoint for --reference (or the new path of the recorded checkpoint)."),
            click.option("--against", type=click.Path(), default=None, help="Compare with another ONNX file (run on ORT CPU; no torch needed)."),
            click.option("--load-outputs", type=click.Path(dir_okay=False), default=None, help="Replay a --save-outputs file: its inputs and reference outputs, no torch needed."),
            num_classes("Classes of the --reference model (default: the file's output size)."),
            trust_model_code("Rebuild a package.module:function reference recorded in the file (imports and runs that code). Without it, name the spec yourself with --reference."),
            click.option("--no-cache", is_flag=True, help="Rebuild random-weight references without the BatchNorm-statistics cache."),
            click.option("--no-fp64-floor", is_flag=True, help="Judge fp32 by the preset alone, without measuring torch's own float32 error (a float64 run of the reference)."),
        ],
        _verify_reference,
    ),
    Group(
        "inputs",
        [
            samples(8, "Number of input samples (bounded by memory)."),
            image_data("Folder of images, resized and normalised as the metadata says."),
            click.option("--labels", default=None, is_flag=False, flag_value="folders", help="With --data in ImageFolder layout: report top-1/top-5 accuracy over every image (classes from sorted sub-folder names, or --labels FILE: one class name per line)."),
            inputs("natural (seeded natural-image statistics), uniform, normal, or an .npy file of normalised N x C x H x W inputs.", default="natural"),
            seed(f"Seed of generated inputs, 0..{limits.SEED_MAX}.", default=0),
            input_shape("N,C,H,W, all four (must agree with the model's static dims)."),
            mean("Normalisation mean, comma-separated (default: the metadata's)."),
            std("Normalisation std, comma-separated (default: the metadata's)."),
        ],
        _verify_inputs,
    ),
    Group("budgets", budgets(), _verify_budgets),
    Group(
        "localisation",
        [
            click.option("--localize/--no-localize", default=None, help="Find the first departing layer (default: when parity fails)."),
            click.option("--localize-method", type=click.Choice(["auto", "all", "bisect"]), default="auto", show_default=True, help="all intermediates at once, or bisection over truncated graphs (auto: bisection on TensorRT)."),
        ],
    ),
    Group(
        "outputs",
        [
            click.option("--save-inputs", type=click.Path(dir_okay=False), default=None, help="Write the normalised inputs to this .npz (replay them with --inputs FILE.npz)."),
            click.option("--save-outputs", type=click.Path(dir_okay=False), default=None, help="Write inputs, reference outputs and every backend's outputs to this .npz."),
            json_report(),
            force(),
        ],
    ),
)
