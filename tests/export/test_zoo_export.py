"""Issue 2's acceptance: every model in export_configs/ exports with both exporters to the promised contract."""

from __future__ import annotations

import onnx
import pytest

from deployinc.config import CONFIG_DIR, bundled_configs, load_config
from deployinc.metadata import read_provenance


def prov_classes(model) -> int:
    return read_provenance(model).num_classes


@pytest.mark.slow
@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", bundled_configs())
def test_zoo_model_exports_to_contract(zoo_onnx, name, exporter):
    cfg = load_config(CONFIG_DIR / f"{name}.toml")
    path = zoo_onnx(name, exporter)
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == cfg.opset
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(cfg.input_shape[1:])
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param
    assert out_dims[1].dim_value == (cfg.num_classes or prov_classes(model))
    ops = {n.op_type for n in model.graph.node}
    assert not ops & {"BatchNormalization", "Dropout"}, ops
    assert not any("aux" in i.name.lower() for i in model.graph.initializer)
    prov = read_provenance(model)
    assert prov is not None and prov.model_spec == cfg.model and prov.exporter == exporter
    assert prov.input_shape == list(cfg.input_shape) and prov.opset == cfg.opset
    assert "fold_conv_bn" in prov.passes and prov.versions["torch"]
