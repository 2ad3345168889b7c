"""The int8 recipe for the CPU at hand: which QDQ types and options are accurate and fast on its int8 path.

ONNX Runtime's quantized CPU kernels take a different instruction path per CPU, and the path decides what is safe:

========================  ================================================  ===========================================
CPU int8 path             how ORT multiplies u8 x s8                          recipe
========================  ================================================  ===========================================
``amx-int8``              AMX tiles (Xeon Sapphire Rapids and newer)          u8 activations, s8 weights, per channel
``avx512-vnni``           VPDPBUSD: u8 x s8 summed into int32, exact          u8 activations, s8 weights, per channel
``avx-vnni``              the same instruction on 256-bit registers           u8 activations, s8 weights, per channel
``avx512`` / ``avx2``     VPMADDUBSW: u8 x s8 pairs summed into *int16*,      u8 activations, s8 weights with
                          which saturates when both are near their range      ``reduce_range`` (7-bit weights: a pair
                                                                              sum stays within int16), per channel
``arm-dot``               SDOT/UDOT (ARMv8.2 dot product), exact              u8 activations, s8 weights, per channel
``generic``               a plain C path                                      the VNNI recipe (exact, slow)
========================  ================================================  ===========================================

ONNX Runtime's quantization guide names the saturation of ``VPMADDUBSW`` on x86 without VNNI and advises
``reduce_range`` there. OpenVINO's CPU plugin (oneDNN) takes the same instruction on those CPUs and saturates alike:
capped with ``ONEDNN_MAX_CPU_ISA=AVX2`` on a VNNI machine, a u8s8 googlenet fell from a worst-image cosine of 0.9866
to 0.9501 on OpenVINO (resnet50: 0.9863 to 0.9749), while its reduce_range file gave 0.9863 (resnet50: 0.9853)
capped or not (``scripts/int8_openvino_isa.py``, ``docs/benchmarks/int8-openvino-isa-*.md``). deployinc reads such a cap (:func:`deployinc.core.env.runtime_flags`): the path
below is the one the runtimes may take, so a capped OpenVINO gets the recipe of a CPU without VNNI. On the AMD EPYC (Zen 3, AVX2 only) machines this project runs on, googlenet quantized
u8s8 gave a minimum cosine of 0.956 against fp32, with ``reduce_range`` 0.977; on the Intel Xeon (VNNI) the unchanged
recipe gave 0.987. What the alternatives measure on a given machine is in ``docs/benchmarks/int8-recipes-*.md``
(``scripts/int8_recipes.py``).

The recipe is recorded in the quantized file's metadata (``deployinc.int8``) and in every report, with the reason.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import Any

from ..core import env
from ..errors import BadInputError

#: CPU int8 paths, fastest first; each maps to a recipe below.
CPU_PATHS = ("amx-int8", "avx512-vnni", "avx-vnni", "arm-dot", "avx512", "avx2", "generic")
#: Paths where ORT multiplies u8 x s8 without an int16 intermediate (no saturation).
EXACT_PATHS = ("amx-int8", "avx512-vnni", "avx-vnni", "arm-dot", "generic")


@dataclass(frozen=True)
class Int8Recipe:
    """The QDQ settings of an int8 model: types, ``reduce_range``, per-channel weights, and why."""

    name: str  # u8s8, u8s8-reduce-range, s8s8 (symmetric, TensorRT)
    activation: str  # uint8 | int8
    weight: str  # int8
    reduce_range: bool
    per_channel: bool
    symmetric_activations: bool
    cpu_path: str
    reason: str

    def describe(self) -> str:
        acts = f"{self.activation} activations" + (" (symmetric)" if self.symmetric_activations else "")
        weights = f"{self.weight} weights" + (" with reduce_range (7-bit)" if self.reduce_range else "")
        return f"{self.name}: {acts}, {weights}, {'per-channel' if self.per_channel else 'per-tensor'}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cpu_int8_path(flags: set[str] | None = None, machine: str | None = None) -> str:
    """The int8 instruction path ONNX Runtime and OpenVINO take on this CPU (``flags``: ``/proc/cpuinfo`` flags,
    read when None, less what an ``ONEDNN_MAX_CPU_ISA`` cap hides from OpenVINO; ``machine``: ``platform.machine()``)."""
    flags = env.runtime_flags() if flags is None else set(flags)
    machine = (machine or platform.machine() or "").lower()
    if machine in ("aarch64", "arm64"):
        return "arm-dot" if {"asimddp", "dotprod"} & flags else "generic"
    if "amx_int8" in flags:
        return "amx-int8"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx512bw" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "generic"


def recipe_for(target: str = "cpu", path: str | None = None, per_channel: bool = True) -> Int8Recipe:
    """The recipe for ``target`` (``cpu``: ORT's CPU kernels on the CPU ``path``, detected when None;
    ``tensorrt``: symmetric int8, which TensorRT requires)."""
    cap = env.isa_cap() if path is None else None
    path = cpu_int8_path() if path is None else path
    if target == "tensorrt":
        return Int8Recipe("s8s8", "int8", "int8", False, per_channel, True, path,
                          "TensorRT takes symmetric int8 activations and weights (zero points 0) only")  # fmt: skip
    if path in EXACT_PATHS:
        how = {"amx-int8": "AMX int8 tiles", "avx512-vnni": "AVX512-VNNI (VPDPBUSD)", "avx-vnni": "AVX-VNNI (VPDPBUSD)",
               "arm-dot": "the ARM dot-product instructions", "generic": "a plain path"}[path]  # fmt: skip
        return Int8Recipe("u8s8", "uint8", "int8", False, per_channel, False, path,
                          f"{how} multiply u8 x s8 into int32 without saturation: full 8-bit weights, uint8 activations")  # fmt: skip
    if cap:
        why = (f"{cap} leaves OpenVINO's oneDNN kernels the {path} path, without VNNI: their u8 x s8 instruction (VPMADDUBSW) sums "
               "pairs in int16 and saturates; 7-bit weights (reduce_range) keep the sums in range (ONNX Runtime ignores the cap "
               "and computes the same numbers with them)")  # fmt: skip
    else:
        why = (f"no VNNI on this {path} CPU: the u8 x s8 kernels of ORT and of OpenVINO's oneDNN (VPMADDUBSW) sum pairs in int16 "
               "and saturate; 7-bit weights (reduce_range) keep the sums in range, as ONNX Runtime's quantization guide advises")  # fmt: skip
    return Int8Recipe("u8s8-reduce-range", "uint8", "int8", True, per_channel, False, path, why)


def recipe_named(name: str, path: str | None = None, per_channel: bool = True) -> Int8Recipe:
    """A recipe by name (``u8s8``, ``u8s8-reduce-range``, ``s8s8``), for measuring the alternatives."""
    path = cpu_int8_path() if path is None else path
    table = {
        "u8s8": ("uint8", False, False),
        "u8s8-reduce-range": ("uint8", True, False),
        "s8s8": ("int8", False, True),
        "s8s8-reduce-range": ("int8", True, True),
    }
    if name not in table:
        raise BadInputError(f"unknown int8 recipe {name!r}", hint=f"use one of {', '.join(table)}")
    act, reduce, sym = table[name]
    return Int8Recipe(name, act, "int8", reduce, per_channel, sym, path, f"asked for by name ({name})")
