"""``deployinc.verify.reference``: the torch (or ONNX, or saved) reference a file is verified against.

A tiny user model file is written to ``tmp_path`` for each test (``path/nets.py:build`` specs): a conv, a
BatchNorm, a classifier and a GoogLeNet-style ``aux1`` head. Importing it drops a marker file next to it, so a test
can tell whether deployinc ran the code at all. The BatchNorm-statistics cache goes to ``tmp_path``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from deployinc.errors import BadInputError, UntrustedCodeError, WeightsError
from deployinc.metadata import Provenance
from deployinc.models.loading import load_model
from deployinc.models.registry import IMAGENET_MEAN, IMAGENET_STD
from deployinc.verify import reference as R

NETS = textwrap.dedent(
    '''
    import pathlib

    import torch
    from torch import nn

    pathlib.Path(__file__).with_name("imported.marker").write_text("imported")


    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4, num_classes)
            self.aux1 = nn.Linear(4, num_classes)

        def forward(self, x):
            z = torch.relu(self.bn(self.conv(x))).mean((2, 3))
            out = self.fc(z)
            if self.aux1 is not None:
                return out, self.aux1(z)
            return out


    def build(num_classes=10):
        return Net(num_classes)
    '''
)
CHW = (3, 16, 16)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYINC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def nets(tmp_path) -> Path:
    d = tmp_path / "user"
    d.mkdir()
    (d / "nets.py").write_text(NETS)
    return d / "nets.py"


def _provenance(loaded, **kw) -> Provenance:
    """The provenance export would record for ``loaded`` (random weights)."""
    fields = dict(
        model_spec=loaded.spec, weights="none", state_sha256=loaded.state_sha256, seed=loaded.seed, bn_recalibrated=loaded.bn_recalibrated,
        num_classes=loaded.info.num_classes, input_shape=[1, *CHW], mean=list(loaded.info.mean), std=list(loaded.info.std),
    )  # fmt: skip
    fields.update(kw)
    return Provenance(**fields)


def _buffers(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.named_buffers()}


# small pieces -----------------------------------------------------------------------------------------------------


def test_to_dict_names_every_field():
    ref = R.Reference(kind="onnx", description="other.onnx on ONNX Runtime CPU", onnx_path=Path("/x/other.onnx"), spec=None, weights=None,
                      cache="hit", notes=["n"], seconds=1.23456)
    assert ref.to_dict() == {"kind": "onnx", "description": "other.onnx on ONNX Runtime CPU", "spec": None, "weights": None, "onnx": "/x/other.onnx",
                             "bn_stats_cache": "hit", "notes": ["n"], "seconds": 1.235}
    assert R.Reference("spec", "d").to_dict()["onnx"] is None


def test_no_reference_error_names_both_ways_forward():
    err = R.no_reference_error("models/bare.onnx")
    assert isinstance(err, BadInputError)
    assert err.message == "models/bare.onnx carries no deployinc provenance metadata, so its reference cannot be rebuilt"
    assert "--reference package.module:function" in err.hint and "--weights" in err.hint and "--against other.onnx" in err.hint


def test_from_saved_is_a_replay_without_torch(tmp_path):
    ref = R.from_saved(tmp_path / "run.npz")
    assert ref.kind == "saved" and ref.module is None and ref.weights is None
    assert ref.description == f"outputs saved in {tmp_path / 'run.npz'} (replayed; no torch)"


def test_from_onnx_reads_and_checks_the_file(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from deployinc.errors import OnnxFileError

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    p = tmp_path / "other.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(p))
    ref, model = R.from_onnx(p)
    assert ref.kind == "onnx" and ref.module is None and Path(ref.onnx_path) == p
    assert ref.description.endswith(" on ONNX Runtime CPU (fp32 reference)") and str(p) in ref.description
    assert ref.to_dict()["onnx"] == str(ref.onnx_path)
    assert [n.op_type for n in model.graph.node] == ["Relu"]
    with pytest.raises(OnnxFileError, match="does not exist"):
        R.from_onnx(tmp_path / "missing.onnx")


# from_spec --------------------------------------------------------------------------------------------------------


def test_from_spec_factory_weights_is_eval_without_aux_heads_and_warns(nets):
    spec = f"{nets}:build"
    ref = R.from_spec(spec, None, CHW, num_classes=5, mean=None, std=None, seed=3)
    assert ref.kind == "spec" and ref.spec == spec and ref.weights == "none"
    assert ref.description == f"{spec} (the factory's own weights) from --reference"
    assert ref.notes[0].startswith(f"warning: the reference {spec} has the weights its factory returns (no --weights)"), ref.notes
    assert "auxiliary heads removed: aux1" in ref.notes
    assert not any("recalibrated" in n for n in ref.notes)  # the factory's weights are the model
    assert ref.module.aux1 is None and not any(m.training for m in ref.module.modules())
    # a user spec without mean/std gets ImageNet's; the input size and class count are the ones asked for
    assert ref.info.mean == IMAGENET_MEAN and ref.info.std == IMAGENET_STD
    assert ref.info.input_size == CHW and ref.info.num_classes == 5
    with torch.no_grad():
        out = ref.module(torch.zeros(2, *CHW))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 5)


def test_from_spec_probes_the_class_count_and_keeps_given_normalisation(nets):
    ref = R.from_spec(f"{nets}:build", None, CHW, num_classes=None, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert ref.info.num_classes == 10  # the factory's default, read from the output
    assert ref.info.mean == (0.5, 0.5, 0.5) and ref.info.std == (0.25, 0.25, 0.25)


def test_from_spec_with_a_checkpoint_loads_it_and_does_not_warn(nets, tmp_path):
    import importlib.util

    spec_obj = importlib.util.spec_from_file_location("nets_for_ckpt", nets)
    mod = importlib.util.module_from_spec(spec_obj)
    spec_obj.loader.exec_module(mod)
    torch.manual_seed(11)
    trained = mod.build(num_classes=4)
    with torch.no_grad():
        trained.bn.running_mean.fill_(0.25)
    ckpt = tmp_path / "w.pt"
    torch.save(trained.state_dict(), ckpt)

    ref = R.from_spec(f"{nets}:build", str(ckpt), CHW, num_classes=4, mean=None, std=None)
    assert ref.weights == str(ckpt.resolve())
    assert ref.description == f"{nets}:build ({ckpt.resolve()}) from --reference"
    assert not any(n.startswith("warning") for n in ref.notes)
    assert torch.equal(ref.module.conv.weight, trained.conv.weight)
    assert torch.equal(ref.module.bn.running_mean, torch.full((4,), 0.25))  # not recalibrated: the checkpoint's statistics


def test_from_spec_with_a_checkpoint_of_another_class_count(nets, tmp_path):
    import importlib.util

    spec_obj = importlib.util.spec_from_file_location("nets_for_ckpt2", nets)
    mod = importlib.util.module_from_spec(spec_obj)
    spec_obj.loader.exec_module(mod)
    ckpt = tmp_path / "w7.pt"
    torch.save(mod.build(num_classes=7).state_dict(), ckpt)
    with pytest.raises(WeightsError, match="'fc.weight' has shape"):
        R.from_spec(f"{nets}:build", str(ckpt), CHW, num_classes=3, mean=None, std=None)


# from_provenance --------------------------------------------------------------------------------------------------


def test_from_provenance_refuses_code_without_trust_and_imports_nothing(nets):
    spec = f"{nets}:build"
    prov = Provenance(model_spec=spec, input_shape=[1, *CHW], num_classes=5)
    with pytest.raises(UntrustedCodeError) as info:
        R.from_provenance(prov)
    assert repr(spec) in info.value.message and "--trust-model-code" in info.value.hint
    assert not (nets.parent / "imported.marker").exists()  # the file's code never ran


def test_from_provenance_with_trust_rebuilds_exactly_what_was_exported(nets):
    spec = f"{nets}:build"
    exported = load_model(spec, num_classes=5, input_shape=(1, *CHW), seed=4)
    assert (nets.parent / "imported.marker").exists()
    prov = _provenance(exported, aux_heads=["aux1"])
    ref = R.from_provenance(prov, use_cache=False, trust_code=True)
    assert ref.kind == "provenance" and ref.spec == spec and ref.weights == "none"
    assert ref.description == f"{spec} (the factory's own weights) rebuilt from the file's metadata"
    assert ref.cache is None  # nothing deployinc initialised, so no BatchNorm statistics to cache
    assert "auxiliary heads removed: aux1" in ref.notes
    assert ref.module.aux1 is None and not ref.module.training
    want = exported.module.state_dict()
    for k, v in ref.module.state_dict().items():
        assert torch.equal(v, want[k]), k


def test_a_file_whose_factory_model_had_its_statistics_re_estimated_is_refused(nets):
    """An earlier deployinc re-estimated a factory model's BatchNorm statistics: that file does not compute the
    user's model, and rebuilding the same alteration would only hide it."""
    exported = load_model(f"{nets}:build", num_classes=5, input_shape=(1, *CHW), seed=2)
    prov = _provenance(exported, bn_recalibrated=True)
    with pytest.raises(WeightsError, match="re-estimated the BatchNorm statistics") as e:
        R.from_provenance(prov, trust_code=True)
    assert "export it again" in e.value.hint


def test_from_provenance_fills_then_reads_the_batchnorm_cache(nets):
    """Only deployinc's own seeded initialisation is recalibrated (a registry model with no weights), and cached."""
    exported = load_model("inception_cifar", num_classes=5, input_shape=(1, 3, 32, 32), seed=2)
    assert exported.bn_recalibrated
    prov = _provenance(exported, input_shape=[1, 3, 32, 32])
    first = R.from_provenance(prov, trust_code=True)
    assert first.cache == "miss"
    assert not any("reference cache" in n for n in first.notes)
    second = R.from_provenance(prov, trust_code=True)
    assert second.cache == "hit"
    assert "BatchNorm statistics from the reference cache (initial weights checked against state_sha256)" in second.notes
    assert "BatchNorm recalibrated" in second.description
    a, b = _buffers(first.module), _buffers(second.module)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert second.to_dict()["bn_stats_cache"] == "hit"


def test_from_provenance_refuses_other_initial_weights(nets):
    exported = load_model(f"{nets}:build", num_classes=5, input_shape=(1, *CHW), seed=1)
    prov = _provenance(exported)
    R.from_provenance(prov, trust_code=True)  # fills the cache for this provenance
    wrong = _provenance(exported, state_sha256="0" * 64)
    for use_cache in (False, True):
        with pytest.raises(WeightsError, match="weights differ from those exported"):
            R.from_provenance(wrong, use_cache=use_cache, trust_code=True)


def test_registry_names_need_no_trust_and_a_fixed_checkpoint_has_no_cache(tmp_path):
    from deployinc.models import create_model

    prov = Provenance(model_spec="depthwise_cifar", num_classes=3, input_shape=[1, 3, 32, 32], mean=[0.5] * 3, std=[0.5] * 3)
    ref = R.from_provenance(prov)  # trust_code False: a registry name runs no code of the file's
    assert ref.description == "depthwise_cifar (seeded random init (seed 0)) rebuilt from the file's metadata"
    assert ref.cache is None  # nothing was recalibrated, so nothing could be cached

    torch.manual_seed(5)
    net = create_model("depthwise_cifar", num_classes=3)
    ckpt = tmp_path / "d.pt"
    torch.save(net.state_dict(), ckpt)
    moved = R.from_provenance(prov, weights=str(ckpt))
    assert moved.cache is None and moved.weights == str(ckpt.resolve())
    assert f"({ckpt.resolve()}) rebuilt from the file's metadata" in moved.description
    x = torch.from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    with torch.no_grad():
        assert torch.equal(moved.module(x), net.eval()(x))
