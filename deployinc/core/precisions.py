"""The precision table: every precision name deployinc knows, what each computes, and the deploy artifacts made
for them.

Code elsewhere refers to these names (``P.FP32``, ``P.INT8_CPU``...) instead of writing them:
``tests/test_layout.py`` counts the precision-name string literals left outside this module and
``deployinc/backends/`` (whose records declare the precisions each backend computes and from which artifact).
This module imports nothing of deployinc's, so every layer can read it.
"""

from __future__ import annotations

from dataclasses import dataclass

FP32 = "fp32"
FP16 = "fp16"
BF16 = "bf16"
INT8 = "int8"


@dataclass(frozen=True)
class Precision:
    """One precision.

    Attributes:
        name: What every option, report and record calls it.
        computes: What the numbers are, in words.
        relative_to: What verify judges it against (printed with the verdict).
        trt: TensorRT builds engines at it (native engines and the ORT TensorRT provider).
        detected: A file's graph can say it (metadata, Q/DQ nodes, float16 weights).
    """

    name: str
    computes: str
    relative_to: str
    trt: bool = True
    detected: bool = True


TABLE: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision(
            FP32, "float32 weights and activations",
            "torch fp32 on the same inputs; max_rel budget max(preset, {k:g} x torch fp32's own error vs float64), "
            "and where a backend is over it against torch fp32, its own error against the float64 answer, same budget",
        ),
        Precision(
            FP16, "float16 weights and activations (11-bit mantissa)",
            "torch fp32 on the same inputs (fp16's 11-bit mantissa: ~1e-3 per op); the fp32 floor does not apply",
        ),
        Precision(
            BF16, "bfloat16 compute from the fp32 file (8-bit mantissa), where the backend and CPU have it",
            "torch fp32 on the same inputs (bf16's 8-bit mantissa); the fp32 floor does not apply",
            trt=False, detected=False,
        ),
        Precision(
            INT8, "int8 static quantization: Q/DQ nodes around the quantized operators, calibrated on images",
            "torch fp32 on the same inputs, by agreement (cosine, top-1/top-5); no element budget",
        ),
    )
}  # fmt: skip

#: Every precision, in the order options list them.
PRECISIONS: tuple[str, ...] = tuple(TABLE)
#: The precisions TensorRT builds (engines and the ORT TensorRT provider).
TRT_PRECISIONS: tuple[str, ...] = tuple(p.name for p in TABLE.values() if p.trt)
#: The precisions a file's graph or metadata can say.
DETECTED_PRECISIONS: tuple[str, ...] = tuple(p.name for p in TABLE.values() if p.detected)

# Deploy artifacts: the file a candidate runs. fp32 and fp16 are the precision's own name; int8 has one per
# quantization recipe (the CPU's, TensorRT's), each with a minmax-calibrated variant and (CPU) a mixed one.
#: Calibration method of the second int8 candidate, and the suffix of its artifact.
MINMAX = "minmax"
#: The layer-fallback mode (a few layers kept in float), and the suffix of its artifact.
MIXED = "mixed"
INT8_CPU = "int8-cpu"
INT8_TRT = "int8-trt"
INT8_CPU_MINMAX = f"{INT8_CPU}-{MINMAX}"
INT8_TRT_MINMAX = f"{INT8_TRT}-{MINMAX}"
INT8_CPU_MIXED = f"{INT8_CPU}-{MIXED}"
#: The suffix of a mixed artifact whose carried-along layers keep their weights behind DequantizeLinear.
QDQ = "qdq"
INT8_CPU_MIXED_QDQ = f"{INT8_CPU_MIXED}-{QDQ}"
#: That file's set widened until it passes with its float layers in bf16 (the form OpenVINO runs it in on a CPU with
#: native bf16): ``int8-cpu-mixed-qdq-bf16``.
INT8_CPU_MIXED_BF16 = f"{INT8_CPU_MIXED_QDQ}-{BF16}"
#: The whole-model int8 artifacts, in the order deploy's report lists their calibration.
INT8_ARTIFACTS: tuple[str, ...] = (INT8_CPU, INT8_CPU_MINMAX, INT8_TRT, INT8_TRT_MINMAX)


#: Every name this table defines: what ``tests/test_layout.py`` counts when written elsewhere.
NAMES: frozenset[str] = frozenset((*PRECISIONS, *INT8_ARTIFACTS, INT8_CPU_MIXED, MIXED, INT8_CPU_MIXED_QDQ, INT8_CPU_MIXED_BF16))


def variant(artifact: str, suffix: str) -> str:
    """``int8-cpu`` + ``minmax`` -> ``int8-cpu-minmax``."""
    return f"{artifact}-{suffix}"
