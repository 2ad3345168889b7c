"""Models no other test names, and the bugs they found: torchvision's MNASNet refuses a state dict without its
version metadata (the BatchNorm-statistics cache and safetensors checkpoints have none)."""

from __future__ import annotations

import pytest

SHAPE = (1, 3, 32, 32)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path / "cache"))


def _provenance(loaded):
    from deployinc.metadata import Provenance

    return Provenance(
        model_spec=loaded.spec, weights="none", weights_sha256=None, state_sha256=loaded.state_sha256,
        seed=loaded.seed, bn_recalibrated=loaded.bn_recalibrated, num_classes=loaded.info.num_classes,
        input_shape=list(SHAPE), mean=list(loaded.info.mean), std=list(loaded.info.std), passes=[],
        exporter="dynamo", opset=17,
    )  # fmt: skip


def test_mnasnet_reference_rebuilds_from_the_batchnorm_cache():
    import torch

    from deployinc.models.loading import load_model
    from deployinc.verify import reference as R

    loaded = load_model("mnasnet0_5", input_shape=SHAPE)
    prov = _provenance(loaded)
    assert R.store_bn_stats(prov, loaded.module) is not None
    ref = R.from_provenance(prov)  # torchvision raised "version should be set to 1 or 2" here
    assert ref.cache == "hit"
    want = dict(loaded.module.named_buffers())
    for name, buf in ref.module.named_buffers():
        assert torch.equal(buf, want[name]), name


def test_mnasnet_loads_a_safetensors_checkpoint(tmp_path):
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = torchvision.models.mnasnet0_5(num_classes=10)
    ckpt = tmp_path / "mnas.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ckpt))  # no version metadata

    from deployinc.models.loading import load_model

    loaded = load_model("mnasnet0_5", weights=str(ckpt), num_classes=10, input_shape=SHAPE)
    assert torch.equal(loaded.module.layers[0].weight, net.layers[0].weight)
