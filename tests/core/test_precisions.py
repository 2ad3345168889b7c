"""The precision table: the names every stage refers to, and what the reports print from it."""

from __future__ import annotations

from deployinc.core import precisions as P
from deployinc.core.floor import RELATIVE_TO
from deployinc.core.metrics import PRECISIONS, PRESETS


def test_the_table_lists_the_precisions_options_take_in_order():
    assert P.PRECISIONS == ("fp32", "fp16", "bf16", "int8") == PRECISIONS
    assert P.TRT_PRECISIONS == ("fp32", "fp16", "int8")
    assert P.DETECTED_PRECISIONS == ("fp32", "fp16", "int8")


def test_every_precision_has_a_preset_per_backend_family_and_a_reference_text():
    for name in P.PRECISIONS:
        assert {fam for (p, fam) in PRESETS if p == name} == {"cpu", "cuda", "tensorrt"}
        assert RELATIVE_TO[name] == P.TABLE[name].relative_to
    assert "{k:g}" in RELATIVE_TO[P.FP32] and "floor does not apply" in RELATIVE_TO[P.BF16]


def test_the_deploy_artifacts_are_named_from_the_recipe_and_its_variant():
    assert P.INT8_ARTIFACTS == ("int8-cpu", "int8-cpu-minmax", "int8-trt", "int8-trt-minmax")
    assert P.INT8_CPU_MIXED == P.variant(P.INT8_CPU, P.MIXED) == "int8-cpu-mixed"
    assert P.NAMES >= {*P.PRECISIONS, *P.INT8_ARTIFACTS, P.INT8_CPU_MIXED}
