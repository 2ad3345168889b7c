"""int8 static quantization with ONNX Runtime, calibrated on images, with a calibration report.

The result is a QDQ model (QuantizeLinear/DequantizeLinear pairs around the quantized operators) with per-channel
int8 weights. ONNX Runtime's CPU provider fuses the pairs into int8 kernels (VNNI where the CPU has it), and
TensorRT builds a QDQ model as an explicitly quantized int8 engine, which is the only int8 path TensorRT 10.1+ keeps
(its implicit calibrators are deprecated). Two activation schemes:

- ``target="tensorrt"`` (default): symmetric int8 activations and weights (zero points 0), which TensorRT requires
  and ORT's CPU provider runs as well;
- ``target="cpu"``: asymmetric uint8 activations, int8 weights (ORT's U8S8), for ORT CPU only; TensorRT refuses it.

Steps: ``quant_pre_process`` (shape inference and ORT's basic graph optimisations, which fold what quantization
should not see) unless disabled; calibration with ``create_calibrator`` (MinMax, Entropy, Percentile, or ``mse``: Percentile's histograms with
the range of least expected squared error picked from each, :mod:`.ranges`), fed in
chunks of a few images so the activations of a large network are never all held at once; the ranges saved as ORT's
calibration cache and handed to ``quantize_static`` (QDQ, per-channel); a smoke session on the CPU; the model and a
JSON report (per-tensor ranges and the scales/zero points the model ended up with) written atomically.

Calibration needs enough images: the histogram methods estimate a distribution, so they need more than MinMax.
Fewer than :data:`MIN_IMAGES` is an error; fewer than :data:`RECOMMENDED_IMAGES` a warning that names the count.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..core.env import tensorrt_problem  # noqa: F401 - here too, where choose_target (and tests) look it up
from ..core.graph import activation_range
from ..core.metrics import compare_outputs, preset
from ..errors import BadInputError, CheckFailed
from ..io import check_output_path, load_onnx, save_onnx, scratch_dir, sha256_file
from ..subject.inputs import InputSpec, input_spec
from ._common import batches, cpu_session
from .recipe import Int8Recipe, recipe_for
from .ranges import mse_ranges
from .rounding import apply_gptq, check_rounding
from ..core.precisions import INT8

METHODS = ("minmax", "entropy", "percentile", "mse")
TARGETS = ("tensorrt", "cpu")
#: What ``deployinc quantize --target`` takes: ``auto`` picks one of :data:`TARGETS` for this machine.
TARGET_CHOICES = ("auto", *TARGETS)
#: Images the int8-vs-fp32 comparison runs at most (the first of the calibration images).
COMPARE_IMAGES = 64
#: Fewer calibration images than this is an error.
MIN_IMAGES = {"minmax": 1, "entropy": 16, "percentile": 16, "mse": 1}
#: Fewer than this is a warning (TensorRT's and ORT's examples calibrate on hundreds of images).
RECOMMENDED_IMAGES = {"minmax": 32, "entropy": 100, "percentile": 100, "mse": 64}
#: Images per collect_data call: bounds memory (every intermediate activation of the chunk is held at once).
CHUNK_IMAGES = 4


@dataclass
class Int8Result:
    """What :func:`quantize_int8` produced."""

    model: Any
    report: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def check_image_count(n: int, method: str) -> list[str]:
    """Raise for too few calibration images for ``method``; return a warning when below the recommendation."""
    if method not in METHODS:
        raise BadInputError(f"unknown calibration method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    if n < MIN_IMAGES[method]:
        raise BadInputError(
            f"{n} calibration image(s) is fewer than {method} needs ({MIN_IMAGES[method]})",
            hint=f"add images to --data (at least {MIN_IMAGES[method]}, {RECOMMENDED_IMAGES[method]}+ recommended)"
            + (", or use --method minmax" if method != "minmax" else ""),
        )
    if n < RECOMMENDED_IMAGES[method]:
        return [
            f"calibrating {method} on {n} image(s); {RECOMMENDED_IMAGES[method]}+ representative images are "
            "recommended, ranges from fewer may not cover the deployment data"
        ]
    return []


class _ChunkReader:
    """A CalibrationDataReader over some images: batches of ``batch`` (the model's static batch, or up to 4)."""

    def __init__(self, name: str, images: np.ndarray, batch: int):
        self._it: Iterator[np.ndarray] = iter(batches(images, batch))
        self.name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._it, None)
        return None if chunk is None else {self.name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def __len__(self) -> int:  # some ORT code paths ask
        return 0


def _calibration_method(method: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    # mse collects Percentile's histograms and picks its own ranges from them (:mod:`.ranges`)
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile, "mse": CalibrationMethod.Percentile}[method]


def _scales_in(model: Any) -> dict[str, dict[str, Any]]:
    """tensor -> {scale, zero_point, type} read from the QuantizeLinear nodes of a QDQ model (activations)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    out: dict[str, dict[str, Any]] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2:
            continue
        src = node.input[0]
        if src in inits:
            continue  # a weight quantized in the graph (AddQDQPairToWeight): not an activation
        entry: dict[str, Any] = {}
        if node.input[1] in inits:
            s = numpy_helper.to_array(inits[node.input[1]])
            entry["scale"] = float(s.reshape(-1)[0]) if s.size == 1 else [float(v) for v in s.reshape(-1)]
        if len(node.input) > 2 and node.input[2] in inits:
            z = numpy_helper.to_array(inits[node.input[2]])
            entry["zero_point"] = int(z.reshape(-1)[0]) if z.size == 1 else [int(v) for v in z.reshape(-1)]
            entry["type"] = str(z.dtype)
        out[src] = entry
    return out


def quantize_int8(
    model_path: str | os.PathLike[str],
    images: np.ndarray,
    *,
    method: str = "minmax",
    target: str = "tensorrt",
    per_channel: bool = True,
    preprocess: bool = True,
    exclude_nodes: Sequence[str] = (),
    op_types: Sequence[str] | None = None,
    keep_fp32_before: str | None = None,
    percentile: float = 99.999,
    calibration_options: dict[str, Any] | None = None,
    spec: InputSpec | None = None,
    data_source: dict[str, Any] | None = None,
    recipe: Int8Recipe | None = None,
    weight_rounding: str = "gptq",
) -> Int8Result:
    """Quantize the float32 model at ``model_path`` to a QDQ int8 model calibrated on ``images``.

    Args:
        model_path: The float32 ONNX model.
        images: Calibration images, N x C x H x W float32, normalised as the model expects.
        method: ``minmax``, ``entropy``, ``percentile`` or ``mse`` (:mod:`.ranges`).
        target: ``tensorrt`` (symmetric int8 activations; runs on ORT CPU too) or ``cpu`` (uint8 activations).
        per_channel: Per-channel weight scales (per output channel of Conv/Gemm).
        preprocess: Run ORT's ``quant_pre_process`` first.
        exclude_nodes: Node names to leave in float.
        op_types: Operator types to quantize (default: every type ORT's QDQ quantizer supports).
        keep_fp32_before: Leave every node before this one (in graph order) in float: the early layers whose
            quantization error the rest of a deep network amplifies most (a stem, a first stage).
        percentile: The percentile for ``method="percentile"``.
        calibration_options: Extra options for ORT's ``create_calibrator`` (``num_bins``, ``num_quantized_bins``,
            ``moving_average``...), recorded in the report.
        spec: The model's input spec (read from the model when None).
        data_source: What the images are (folder, count, skipped files), recorded in the report.
        recipe: The QDQ types and options (default: :func:`~deployinc.precision.recipe.recipe_for` the target on
            this CPU: u8s8 where the CPU multiplies without saturation, ``reduce_range`` where it does not).
        weight_rounding: ``gptq``: each layer's int8 weights re-rounded on the quantizer's own grid to move its
            output least on the calibration images (:mod:`deployinc.precision.rounding`); ``nearest``: the
            quantizer's round-to-nearest.

    Returns:
        The quantized ``ModelProto`` (not yet written), the report, warnings (image count, preprocessing).

    Raises:
        BadInputError: Unknown method or target, too few images, images of the wrong shape.
        CheckFailed: The quantized model does not load in ONNX Runtime.
    """
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import save_tensors_data

    if target not in TARGETS:
        raise BadInputError(f"unknown quantization target {target!r}", hint=f"use one of {', '.join(TARGETS)}")
    check_rounding(weight_rounding)
    warnings = check_image_count(int(len(images)), method)
    model_path = Path(model_path)
    src = load_onnx(model_path)
    _check_opset(src.model, model_path, per_channel)
    spec = spec or input_spec(src.model)
    if images.ndim != 4 or tuple(images.shape[1:]) != spec.chw:
        raise BadInputError(
            f"calibration images have shape {tuple(images.shape)}; the model's input {spec.name!r} takes N x "
            f"{' x '.join(map(str, spec.chw))}",
            hint="check --input-size, or the images' channel count",
        )
    exclude = _excluded_nodes(src.model, exclude_nodes, keep_fp32_before)

    recipe = recipe or recipe_for(target, per_channel=per_channel)
    per_channel = recipe.per_channel
    symmetric = recipe.symmetric_activations
    act_type = QuantType.QInt8 if recipe.activation == "int8" else QuantType.QUInt8
    batch = spec.static_batch or min(CHUNK_IMAGES, len(images))
    if spec.static_batch and len(images) % spec.static_batch:
        raise BadInputError(
            f"{len(images)} calibration images do not split into the model's static batch of {spec.static_batch}",
            hint=f"use a multiple of {spec.static_batch} images (--limit)",
        )

    timings: dict[str, float] = {}

    with scratch_dir(INT8) as tmpdir:  # a killed run's folder is removed by the next run
        work = tmpdir / "model.onnx"
        if src.has_external_data:
            onnx.save_model(src.model, str(work), save_as_external_data=True, location="model.onnx.data")
        else:
            work.write_bytes(src.model.SerializeToString())
        calib_input = _preprocessed(work, tmpdir, warnings, timings) if preprocess else work

        _warn_renamed(calib_input, exclude, warnings)
        calib_options: dict[str, Any] = {"symmetric": symmetric}
        if method == "percentile":
            calib_options["percentile"] = float(percentile)
        calib_options.update(calibration_options or {})
        t0 = time.perf_counter()
        ranges = _calibrate(calib_input, tmpdir, method, calib_options, images, spec.name, batch)
        timings["calibrate_s"] = time.perf_counter() - t0
        cache = tmpdir / "calibration.json"
        save_tensors_data(ranges, cache)

        t0 = time.perf_counter()
        out = tmpdir / "quantized.onnx"
        _quantize(calib_input, out, cache, recipe, act_type, method, exclude, op_types)
        timings["quantize_s"] = time.perf_counter() - t0
        qmodel = onnx.load_model(str(out))  # loads any external data the quantizer wrote into memory
        rounding = _round_weights(qmodel, calib_input, images, spec.name, batch, weight_rounding, timings)
        kept_float = float_outputs(qmodel)
        folded = folded_activations(onnx.load_model(str(calib_input), load_external_data=False), qmodel)

    _check_loads(qmodel)
    _stamp(qmodel, src.model, method, target, len(images), recipe, exclude, rounding["weight_rounding"], folded)

    report = _report(
        qmodel, ranges, model_path, method, percentile, calib_options, target, recipe,
        calib_input.name == "pre.onnx", len(images), data_source, exclude, keep_fp32_before, op_types, timings, warnings,
    )  # fmt: skip
    report["float_outputs"] = kept_float
    report["weight_rounding"] = rounding
    return Int8Result(model=qmodel, report=report, warnings=warnings)


def _round_weights(qmodel: Any, fp32_path: Path, images: np.ndarray, input_name: str, batch: int, how: str, timings: dict[str, float]) -> dict[str, Any]:
    """``qmodel``'s int8 weights re-rounded by GPTQ (in place) when ``how`` is ``gptq``; what was done."""
    import onnx

    if how != "gptq":
        return {"weight_rounding": "nearest"}
    t0 = time.perf_counter()
    done = apply_gptq(qmodel, onnx.load_model(str(fp32_path)), images, input_name, batch)
    timings["weight_rounding_s"] = time.perf_counter() - t0
    return done


def _check_loads(qmodel: Any) -> None:
    try:
        cpu_session(qmodel, threads=1)
    except Exception as exc:  # noqa: BLE001 - any failure to load is a failed check
        raise CheckFailed(
            f"the quantized model does not load in ONNX Runtime: {str(exc).splitlines()[0][:200]}",
            hint="try --no-preprocess, or exclude the failing node with --exclude-node",
        ) from exc


def float_outputs(model: Any) -> list[str]:
    """Drop the QuantizeLinear/DequantizeLinear pair in front of each graph output (in place); returns the outputs.

    ORT's quantizer quantizes a classifier's logits too: 256 levels over their range, an error of up to half a step
    on every logit that no later layer needs (nothing reads the output but the user). Without the pair the last
    layer still runs in int8 (ORT fuses it with a float output) and the logits keep their precision.
    """
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    done = []
    for out in g.output:
        d = producer.get(out.name)
        q = producer.get(d.input[0]) if d is not None and d.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or readers.get(d.input[0], 0) != 1 or readers.get(q.input[0], 0) != 1:
            continue
        p = producer.get(q.input[0])
        if p is None or p.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        p.output[list(p.output).index(q.input[0])] = out.name
        g.node.remove(d)
        g.node.remove(q)
        done.append(out.name)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return done


def _warn_renamed(calib_input: Path, exclude: list[str], warnings: list[str]) -> None:
    """Warn when pre-processing renamed or fused nodes the user excluded (they are then quantized)."""
    if not exclude:
        return
    import onnx

    present = {n.name for n in onnx.load_model(str(calib_input), load_external_data=False).graph.node}
    gone = [n for n in exclude if n not in present]
    if gone:
        warnings.append(
            f"{len(gone)} excluded node(s) were renamed or fused by pre-processing and are not excluded "
            f"(first: {gone[0]!r}); use --no-preprocess to exclude by the original names"
        )


def _calibrate(calib_input: Path, tmpdir: Path, method: str, calib_options: dict[str, Any], images: np.ndarray, input_name: str, batch: int) -> Any:
    """Activation ranges of ``calib_input`` over ``images`` with ORT's calibrator."""
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrator = create_calibrator(
        calib_input,
        None,
        augmented_model_path=str(tmpdir / "augmented.onnx"),
        calibrate_method=_calibration_method(method),
        providers=["CPUExecutionProvider"],
        extra_options=calib_options,
    )
    # ORT's histogram collector prints progress on stdout; keep the CLI's output ours.
    with contextlib.redirect_stdout(io.StringIO()):
        for chunk in batches(images, max(CHUNK_IMAGES, batch)):
            calibrator.collect_data(_ChunkReader(input_name, chunk, batch))
        if method == "mse":  # Percentile's histograms, our ranges (its own thresholds are not computed)
            from onnxruntime.quantization.calibrate import TensorsData

            chosen = mse_ranges(calibrator.collector.get_histogram_dict(), bool(calib_options.get("symmetric")))
            ranges = TensorsData(_calibration_method(method), chosen)
        else:
            ranges = calibrator.compute_data()
    del calibrator
    return ranges


def _quantize(calib_input: Path, out: Path, cache: Path, recipe: Int8Recipe, act_type: Any, method: str, exclude: list[str], op_types: Any) -> None:
    """ORT's static QDQ quantization of ``calib_input`` into ``out`` with the cached ranges."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    # quantize_static logs a pre-processing advice through the root logger even when we did pre-process.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(calib_input),
            str(out),
            calibration_data_reader=None,
            calibration_cache_path=str(cache),
            quant_format=QuantFormat.QDQ,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=act_type,
            weight_type=QuantType.QInt8,
            calibrate_method=_calibration_method(method),
            nodes_to_exclude=exclude,
            op_types_to_quantize=list(op_types) if op_types else None,
            # TensorRT's DequantizeLinear takes int8 (not int32): leave biases float for it; it fuses them.
            extra_options={"ActivationSymmetric": recipe.symmetric_activations, "WeightSymmetric": True, "QuantizeBias": not recipe.symmetric_activations},
        )
    finally:
        root.setLevel(level)


def _check_opset(model: Any, model_path: Path, per_channel: bool) -> None:
    """QuantizeLinear appears in opset 10, its per-channel axis in 13: refuse older models with the opset needed."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    need = 13 if per_channel else 10
    if opset < need:
        raise BadInputError(
            f"{model_path} uses opset {opset}; int8 QDQ{' with per-channel scales' if per_channel else ''} needs opset {need} or newer",
            hint="export the model again with --opset 13 or newer (deployinc export MODEL --opset 17)",
        )

def _excluded_nodes(model: Any, exclude_nodes: Sequence[str], keep_fp32_before: str | None) -> list[str]:
    """The nodes to leave in float: those named, and with ``keep_fp32_before`` every node before it.

    Raises:
        BadInputError: A named node that the graph does not have.
    """
    exclude = list(exclude_nodes)
    order = [n.name for n in model.graph.node]
    names = set(order)
    missing = [n for n in exclude if n not in names]
    if missing:
        raise BadInputError(f"no node named {missing[0]!r} to exclude", hint="node names are listed by deployinc check")
    if keep_fp32_before is not None:
        if keep_fp32_before not in names:
            raise BadInputError(
                f"no node named {keep_fp32_before!r} (--keep-fp32-before)", hint="node names are listed by deployinc check"
            )
        exclude.extend(n for n in order[: order.index(keep_fp32_before)] if n and n not in exclude)
    return exclude


def _preprocessed(work: Path, tmpdir: Path, warnings: list[str], timings: dict[str, float]) -> Path:
    """ORT's ``quant_pre_process`` of ``work`` (shape inference, fusions); ``work`` itself when it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    t0 = time.perf_counter()
    pre = tmpdir / "pre.onnx"
    try:
        quant_pre_process(str(work), str(pre), skip_symbolic_shape=False)
        return pre
    except Exception as exc:  # noqa: BLE001 - preprocessing is an optimisation; go on without it
        warnings.append(f"quant_pre_process failed ({str(exc).splitlines()[0][:120]}); quantizing the model as is")
        return work
    finally:
        timings["preprocess_s"] = time.perf_counter() - t0


def folded_activations(fp32: Any, qmodel: Any) -> dict[str, list[float | None]]:
    """The Relu and Clip outputs of ``fp32`` that ``qmodel`` computes without them: ONNX Runtime's quantizer removes
    an activation whose range its QuantizeLinear covers (a Relu before a uint8 zero point of 0), and the node before
    it writes the activation's output name, unclamped, for the QuantizeLinear to clamp. Name -> [low, high] (None:
    unbounded); verify's localisation compares such a value after that clamp on both sides."""
    producers = {o: n.op_type for n in qmodel.graph.node for o in n.output}
    inits = {t.name: t for t in fp32.graph.initializer}

    out: dict[str, list[float | None]] = {}
    for n in fp32.graph.node:
        if n.op_type in ("Relu", "Clip") and n.output and producers.get(n.output[0]) not in (None, "Relu", "Clip"):
            out[n.output[0]] = list(activation_range(n, inits))
    return out


def _stamp(qmodel: Any, source: Any, method: str, target: str, n_images: int, recipe: Int8Recipe, exclude: list[str], rounding: str,
           folded: dict[str, list[float | None]] | None = None) -> None:  # fmt: skip
    """The source's provenance, then what the quantizer added, then deployinc's int8 record, in ``qmodel``."""
    # Pre-processing may drop metadata; keep the source's provenance, then what the quantizer added, then ours.
    meta = {p.key: p.value for p in source.metadata_props}
    meta.update({p.key: p.value for p in qmodel.metadata_props})
    # deployinc's metadata convention: keys deployinc.<field>, JSON values.
    meta["deployinc.precision"] = json.dumps(INT8)
    meta["deployinc.int8"] = json.dumps(
        {"method": method, "target": target, "calibration_images": int(n_images), "per_channel": bool(recipe.per_channel),
         "excluded_nodes": len(exclude), "float_nodes": list(exclude)[:500], "recipe": recipe.to_dict(), "weight_rounding": rounding,
         "folded_activations": folded or {}}
    )
    del qmodel.metadata_props[:]
    for k, v in meta.items():
        e = qmodel.metadata_props.add()
        e.key, e.value = k, v


def _report(
    qmodel: Any, ranges: Any, model_path: Path, method: str, percentile: float, calib_options: dict[str, Any], target: str,
    recipe: Int8Recipe, preprocessed: bool, n_images: int, data_source: Any, exclude: list[str],
    keep_fp32_before: str | None, op_types: Any, timings: dict[str, float], warnings: list[str],
) -> dict[str, Any]:  # fmt: skip
    """The calibration report written beside the model: what was done, every tensor's range and scale."""
    qparams = _scales_in(qmodel)
    tensors = {}
    for name, td in sorted(ranges.data.items()):
        lo, hi = td.range_value
        entry: dict[str, Any] = {"min": float(np.asarray(lo).reshape(-1)[0]), "max": float(np.asarray(hi).reshape(-1)[0])}
        entry.update(qparams.get(name, {}))
        entry["quantized"] = name in qparams
        tensors[name] = entry
    op_counts: dict[str, int] = {}
    for n in qmodel.graph.node:
        op_counts[n.op_type] = op_counts.get(n.op_type, 0) + 1
    return {
        "deployinc_version": __version__,
        "source_model": str(model_path),
        "source_sha256": sha256_file(model_path),
        "method": method,
        "percentile": float(percentile) if method == "percentile" else None,
        "calibrator_options": {k: v for k, v in calib_options.items()},
        "target": target,
        "recipe": recipe.to_dict(),
        "activation_type": "int8 (symmetric)" if recipe.symmetric_activations else f"{recipe.activation} (asymmetric)",
        "weight_type": "int8 (symmetric" + (", reduce_range: 7-bit)" if recipe.reduce_range else ")"),
        "per_channel": bool(recipe.per_channel),
        "quant_format": "QDQ",
        "preprocessed": preprocessed,
        "calibration_images": int(n_images),
        "calibration_data": data_source or {"source": "array"},
        "excluded_nodes": exclude,
        "keep_fp32_before": keep_fp32_before,
        "op_types": list(op_types) if op_types else "all supported by ORT's QDQ quantizer",
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "op_counts": op_counts,
        "warnings": warnings,
        "tensors": tensors,
    }


def choose_target(requested: str) -> tuple[str, str | None, str | None]:
    """The quantization target for ``--target requested``: ``(target, note, warning)``.

    ``auto``: ``tensorrt`` when TensorRT is usable here (:func:`tensorrt_problem`), else ``cpu``; the note says
    which and why. ``tensorrt`` where TensorRT is not usable: a warning that its symmetric model, run on ONNX
    Runtime's CPU provider, is slower than the fp32 model. ``cpu``: as asked.

    Raises:
        BadInputError: An unknown target.
    """
    if requested not in TARGET_CHOICES:
        raise BadInputError(f"unknown quantization target {requested!r}", hint=f"use one of {', '.join(TARGET_CHOICES)}")
    if requested == "cpu":
        return "cpu", None, None
    problem = tensorrt_problem()
    if requested == "auto":
        if problem is None:
            return "tensorrt", (
                "target tensorrt (auto: an NVIDIA GPU and TensorRT are usable here): symmetric int8 activations, "
                "which TensorRT needs; --target cpu makes the faster model for ONNX Runtime CPU"
            ), None
        return "cpu", (
            f"target cpu (auto: TensorRT is not usable here: {problem}): uint8 activations, the fastest int8 model "
            "for ONNX Runtime CPU; pass --target tensorrt for a model to deploy with TensorRT elsewhere"
        ), None
    if problem is not None:
        return "tensorrt", None, (
            f"--target tensorrt: TensorRT is not usable here ({problem}); its symmetric int8 model runs on ONNX "
            "Runtime CPU slower than the fp32 model. For ONNX Runtime CPU use --target cpu (or --target auto)"
        )
    return "tensorrt", None, None


def compare_with_fp32(
    fp32_model: Any, int8_model: Any, images: np.ndarray, spec: InputSpec, threads: int | None = None,
    limit: int = COMPARE_IMAGES,
) -> tuple[list[Any], str]:
    """The int8 model against the fp32 model on ONNX Runtime CPU over (the first ``limit`` of) ``images``:
    cosine, top-1 agreement and max_rel through :func:`deployinc.core.metrics.compare_outputs`, judged by the
    int8 preset ``preset("int8", "cpu")``. Returns the comparisons and one line (``PASS ...`` or ``FAIL ...``)."""
    n = min(len(images), int(limit))
    batch = spec.static_batch or min(CHUNK_IMAGES * 4, n)
    if spec.static_batch:
        n = max(spec.static_batch, n - n % spec.static_batch)
    x = images[:n]
    outs: list[dict[str, list[np.ndarray]]] = []
    for model in (fp32_model, int8_model):
        sess = cpu_session(model, threads=threads)
        names = [o.name for o in sess.get_outputs()]
        got: dict[str, list[np.ndarray]] = {k: [] for k in names}
        for chunk in batches(x, batch):
            for k, v in zip(names, sess.run(None, {spec.name: np.ascontiguousarray(chunk, dtype=np.float32)})):
                got[k].append(np.asarray(v))
        outs.append(got)
    ref, test = ({k: np.concatenate(v) for k, v in o.items()} for o in outs)
    tol = preset(INT8, "cpu")
    comps = compare_outputs(ref, test, tol)
    worst_cos = min(c.cosine for c in comps)
    worst_rel = max(c.max_rel for c in comps)
    top1s = [c.top1 for c in comps if c.top1 is not None]
    verdict = "PASS" if all(c.passed for c in comps) else "FAIL"
    line = f"{verdict} cosine {worst_cos:.4f}"
    if top1s:
        line += f", top-1 agreement {min(top1s):.3f}"
    line += f", max_rel {worst_rel:.2e} [{tol.name} preset: {tol.describe()}]"
    fails = [f for c in comps for f in c.failures]
    if fails:
        line += " failed: " + "; ".join(fails)
    return comps, line


def report_path_for(model_out: str | os.PathLike[str]) -> Path:
    """Where the calibration report goes: beside the model, ``<name>.calibration.json``."""
    p = Path(model_out)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(f"{stem}.calibration.json")


def write_int8(result: Int8Result, out: str | os.PathLike[str], *, force: bool = False) -> tuple[list[Path], Path]:
    """Write the model (through :func:`deployinc.io.save_onnx`) and its report beside it, atomically."""
    report_path = report_path_for(out)
    check_output_path(out, force)
    check_output_path(report_path, force)
    report = (json.dumps(result.report, indent=2) + "\n").encode("utf-8")
    written = save_onnx(result.model, out, force=force, sidecars=[(report_path, report)])  # one unit, model last
    return [p for p in written if p != report_path], report_path
