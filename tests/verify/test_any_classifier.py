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


def test_a_tampered_batchnorm_cache_entry_is_rebuilt_not_trusted(tmp_path):
    import os

    import torch

    from deployinc.io import load_checkpoint, save_checkpoint
    from deployinc.models.loading import load_model
    from deployinc.verify import reference as R

    loaded = load_model("resnet18", input_shape=SHAPE)
    prov = _provenance(loaded)
    path = R.store_bn_stats(prov, loaded.module)
    assert (os.stat(path.parent).st_mode & 0o777) == 0o700 and (os.stat(path.parent.parent).st_mode & 0o777) == 0o700
    assert R.from_provenance(prov).cache == "hit"
    _, raw = load_checkpoint(path, with_extra=True)
    raw["state_dict"]["bn1.running_var"] = raw["state_dict"]["bn1.running_var"] * 9  # the probe's edit
    save_checkpoint(path, raw, force=True)
    ref = R.from_provenance(prov)
    assert ref.cache == "miss"  # rebuilt by recalibration, not read back
    assert torch.equal(dict(ref.module.named_buffers())["bn1.running_var"], dict(loaded.module.named_buffers())["bn1.running_var"])


def test_the_cache_root_follows_xdg_and_readers_skip_fifos(tmp_path, monkeypatch):
    import os

    from deployinc.core.cache import default_cache_dir, read_regular

    monkeypatch.delenv("DEPLOYINC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "deployinc"
    fifo = tmp_path / "planted.json"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        read_regular(fifo)  # returns at once instead of blocking on a FIFO nobody writes
