"""``deployinc.subject.inputs``: the image input of an ONNX classifier, read one way for every stage (verify, bench,
deploy, convert, quantize), and saved inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from deployinc.errors import BadInputError
from deployinc.subject.inputs import IMAGENET_MEAN, input_spec, load_inputs, sample_images


def _model(dims, elem=TensorProto.FLOAT, meta=None):
    x = helper.make_tensor_value_info("input", elem, dims)
    y = helper.make_tensor_value_info("y", elem, dims)
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["y"])], "g", [x], [y]))
    for k, v in (meta or {}).items():
        e = m.metadata_props.add()
        e.key, e.value = k, json.dumps(v)
    return m


def test_the_spec_reads_shape_batch_and_normalisation_from_the_file():
    spec = input_spec(_model(["batch", 3, 8, 8], meta={"deployinc.mean": [0.5, 0.5, 0.5]}))
    assert (spec.name, spec.chw, spec.static_batch, spec.dynamic_batch) == ("input", (3, 8, 8), None, True)
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std != spec.mean  # std: ImageNet's default
    given = input_spec(_model([2, 3, 8, 8]), mean=(0.1, 0.2, 0.3), std=(1, 1, 1))
    assert given.static_batch == 2 and given.mean == (0.1, 0.2, 0.3)
    assert input_spec(_model([1, 3, 8, 8])).mean == IMAGENET_MEAN


@pytest.mark.parametrize("dims, elem, says", [(["b", 3, "h", 8], TensorProto.FLOAT, "static C, H, W"), ([1, 3, 8, 8], TensorProto.INT64, "not a float image")])
def test_a_non_image_input_is_refused(dims, elem, says):
    with pytest.raises(BadInputError, match=says):
        input_spec(_model(dims, elem))


def test_sample_images_are_seeded_and_normalised():
    spec = input_spec(_model([1, 3, 8, 8]))
    a, b = sample_images(spec, 2, seed=3), sample_images(spec, 2, seed=3)
    assert a.shape == (2, 3, 8, 8) and a.dtype == np.float32 and np.array_equal(a, b)


def test_saved_inputs_are_read_and_a_file_without_them_is_refused(tmp_path):
    good, bad = tmp_path / "in.npz", tmp_path / "other.npz"
    np.savez(good, input=np.ones((2, 3, 4, 4), np.float32))
    np.savez(bad, something=np.ones(2))
    assert load_inputs(good).shape == (2, 3, 4, 4)
    with pytest.raises(BadInputError, match="holds no 'input' array"):
        load_inputs(bad)
