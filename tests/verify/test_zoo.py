"""Issue 3's acceptance: every model in export_configs/ verifies with its reference rebuilt from the metadata
alone, at batch 1 and 8, on ONNX Runtime's CPU provider. Slow (it exports the whole zoo); shares the session's
exports with test_zoo_export."""

from __future__ import annotations

import pytest

from deployinc.config import bundled_configs


@pytest.mark.slow
@pytest.mark.parametrize("name", bundled_configs())
def test_zoo_model_verifies_from_metadata(zoo_onnx, name):
    from deployinc.verify.core import verify

    # the session's cache: the reference reuses the BatchNorm statistics the export stored (a cache miss is
    # tested in tests/verify/test_any_classifier.py)
    report = verify(zoo_onnx(name, "dynamo"), providers="cpu", batches=[1, 8], threads=2)
    assert report.reference.kind == "provenance"
    assert report.batches == [1, 8]
    assert report.passed, report.failures()
