"""The model registry and loading: names, timm, user factories, weights, BN recalibration, provenance rebuild."""

from __future__ import annotations

import pytest
import torch

from deployinc.errors import ModelSpecError, WeightsError
from deployinc.models import get_model_info, list_models, load_from_provenance, load_model
from deployinc.models.registry import register_model


def test_registry_has_torchvision_classifiers():
    names = list_models()
    for n in ("googlenet", "inception_v3", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
              "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "vgg11", "alexnet"):
        assert n in names
    assert get_model_info("inception_v3").input_size == (3, 299, 299)
    assert get_model_info("googlenet").aux_heads == ("aux1", "aux2")
    assert get_model_info("mobilenet_v2").family == "mobilenet"
    assert get_model_info("resnet50").num_params == 25557032


def test_duplicate_registration_raises(monkeypatch):
    from deployinc.models import registry

    monkeypatch.setattr(registry, "_BUILTIN", dict(registry._BUILTIN))  # the test's model leaves with the test

    @register_model("dup_test_model", family="other", input_size=(3, 8, 8), num_classes=2)
    def _a(num_classes=2):
        return torch.nn.Linear(2, num_classes)

    with pytest.raises(ValueError, match="already registered"):
        register_model("dup_test_model", family="other", input_size=(3, 8, 8), num_classes=2)(_a)


def test_unknown_name_suggests():
    with pytest.raises(ModelSpecError) as info:
        get_model_info("resnet5")
    assert "resnet50" in info.value.hint or "resnet18" in info.value.hint


def test_timm_models_by_prefix():
    pytest.importorskip("timm")
    loaded = load_model("timm/resnet18", num_classes=10)
    assert loaded.info.source == "timm" and loaded.module.fc.out_features == 10
    with pytest.raises(ModelSpecError, match="unknown timm model"):
        get_model_info("timm/resnet_does_not_exist")


def test_random_weights_are_seeded_and_bn_recalibrated():
    a = load_model("mobilenet_v3_small", seed=1)
    b = load_model("mobilenet_v3_small", seed=1)
    c = load_model("mobilenet_v3_small", seed=2)
    assert a.state_sha256 == b.state_sha256 != c.state_sha256
    assert a.bn_recalibrated
    bn = next(m for m in a.module.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))


def test_recalibration_gives_realistic_logits():
    """inception_v3 at random init with 0/1 BN statistics gives huge logits; recalibrated, a sane scale."""
    from deployinc.core.images import natural_images

    raw = load_model("inception_v3", calibrate_bn=False).module.eval()
    cal = load_model("inception_v3").module.eval()
    x = torch.from_numpy(natural_images(2, (3, 299, 299), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    with torch.no_grad():
        big, sane = raw(x).abs().max().item(), cal(x).abs().max().item()
    assert big > 1e3 * sane and sane < 100


def test_rebuild_from_provenance_checks_weights(tmp_path, tinynets_dir):
    from deployinc.export import export_pipeline

    torch.manual_seed(0)
    import importlib

    ckpt = tmp_path / "w.pt"
    torch.save(importlib.import_module("tinynets").build().state_dict(), ckpt)
    r = export_pipeline("tinynets:build", weights=str(ckpt), input_shape=(1, 3, 16, 16), exporter="torchscript")
    again = load_from_provenance(r.provenance, trust_code=True)
    assert again.state_sha256 == r.provenance.state_sha256
    torch.save({k: v + 1 for k, v in importlib.import_module("tinynets").build().state_dict().items()}, ckpt)
    with pytest.raises(WeightsError, match="changed since export"):
        load_from_provenance(r.provenance, trust_code=True)
    ckpt.unlink()
    with pytest.raises(WeightsError, match="not there any more"):
        load_from_provenance(r.provenance, trust_code=True)
