"""scripts/int8_openvino_isa.py end to end on a small model: each recipe's file verified and timed on OpenVINO under
each oneDNN cap, in its own process, and the page says which recipe deployinc chooses under each cap."""

from __future__ import annotations

import json
import platform

import pytest

import deployinc.backends as B

PROBLEM = B.backend_problem("openvino")


@pytest.mark.skipif(PROBLEM is not None, reason=f"the OpenVINO runtime cannot run here: {PROBLEM}")
@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's ISA caps are x86 settings")
def test_every_recipe_under_every_cap(isa, tmp_path):
    from deployinc.precision.recipe import recipe_for

    out = tmp_path / "isa.md"
    assert isa.main(["--models", "inception_cifar", "--samples", "8", "--iters", "3", "--calibration", "16",
                     "--work", str(tmp_path / "w"), "--out", str(out)]) == 0  # fmt: skip
    text = out.read_text()
    rows = [r.split("|")[1:-1] for r in text.splitlines() if r.startswith("| inception_cifar |")]
    assert [(r[1].strip(), r[3].strip()) for r in rows] == [(c, f) for c in isa.CAPS for f in ("fp32", *isa.RECIPES)]
    assert {r[2].strip() for r in rows if r[1].strip() == "AVX2"} == {"avx2"}  # what deployinc sees under the cap
    assert all(r[8].strip().endswith("x") and r[7].strip() != "-" for r in rows), rows  # every file timed by deployinc.bench
    assert f"none: {recipe_for('cpu').name}; AVX512_CORE: u8s8-reduce-range; AVX2: u8s8-reduce-range" in text
    data = json.loads(out.with_suffix(".json").read_text())
    cos = {cap: data[0]["caps"][cap]["files"]["u8s8-reduce-range"]["verify"]["min_cosine"] for cap in isa.CAPS}
    assert max(cos.values()) - min(cos.values()) < 1e-4, cos  # 7-bit weights: the same integers on every path
