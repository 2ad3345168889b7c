"""Issue 2's acceptance: every model in export_configs/ exports with both exporters to the promised contract (see LEFT_OUT)."""

from __future__ import annotations

import onnx
import pytest

from deployinc.config import CONFIG_DIR, bundled_configs, load_config
from deployinc.metadata import read_provenance


def prov_classes(model) -> int:
    return read_provenance(model).num_classes


#: Left out of CI for its 10-minute budget (about 8 s each on a 2-core VM): the legacy exporter on the two largest
#: models. Their dynamo exports are checked here, the same torchvision code by the legacy exporter at resnet18, and
#: inception_v3's legacy export by the kill -9 test (tests/io/test_kill_during_export.py), which checks its file.
LEFT_OUT = {("inception_v3", "torchscript"), ("resnet50", "torchscript")}


@pytest.mark.slow
@pytest.mark.parametrize("name, exporter", [(n, e) for n in bundled_configs() for e in ("dynamo", "torchscript") if (n, e) not in LEFT_OUT])
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
