"""``deployinc.subject.Subject``: a file read once, and its torch reference built once and shared only where it is the
same reference (the whole deploy is counted in tests/deploy/test_run.py)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from deployinc.subject import Subject


def test_the_reference_is_shared_only_with_a_file_of_the_same_reference(zoo_onnx) -> None:
    subject = Subject.open(zoo_onnx("inception_cifar"))
    prov = subject.provenance
    assert subject.precision == "fp32" and subject.image.chw == (3, 32, 32)
    made_from_it = copy.deepcopy(prov)
    made_from_it.passes = [*prov.passes, "quantize"]  # how the file was made: the same reference
    assert subject.stands_for(made_from_it)
    for field, value in (("seed", prov.seed + 1), ("state_sha256", "0" * 64), ("model_spec", "resnet_cifar"), ("num_classes", 7)):
        other = copy.deepcopy(prov)
        setattr(other, field, value)
        assert not subject.stands_for(other), field
    assert not subject.stands_for(prov, weights="moved.pt") and not subject.stands_for(prov, use_cache=False)
    assert not subject.stands_for(None)


def test_the_reference_and_its_outputs_are_built_once(zoo_onnx, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path))
    subject = Subject.open(zoo_onnx("inception_cifar"))
    said: list[str] = []
    ref = subject.reference(said.append)
    assert subject.reference(said.append) is ref and len(said) == 1 and subject.reference_built
    runs: list[int] = []

    def run() -> dict[str, Any]:
        runs.append(1)
        return {"logits": np.ones((2, 10), np.float32)}

    x = np.zeros((2, 3, 32, 32), np.float32)
    first = subject.reference_outputs(x, 2, 1, "logits", run)
    assert subject.reference_outputs(x.copy(), 2, 1, "logits", run)["logits"] is first["logits"] and len(runs) == 1
    subject.reference_outputs(x, 2, 2, "logits", run)  # other threads, other inputs: run again
    subject.reference_outputs(x + 1, 2, 1, "logits", run)
    assert len(runs) == 3
    with pytest.raises(ValueError):  # shared: nobody changes it in place
        first["logits"][0, 0] = 2
