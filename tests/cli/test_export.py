"""`deployinc export` and `deployinc models` through the CLI: success, and every bad input of issue 2."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch

from tests.conftest import files_in, invoke


def test_help_lists_commands_and_does_not_import_torch():
    code = "import sys; from deployinc.cli.main import main; sys.argv=['deployinc','--help']\ntry:\n main()\nexcept SystemExit: pass\nprint('TORCH', 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "export" in out and "models" in out and "TORCH False" in out


def test_python_dash_m(tmp_path):
    r = subprocess.run([sys.executable, "-m", "deployinc", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "deployinc" in r.stdout


def test_export_user_factory(cli_runner, tinynets_dir, tmp_path):
    out = tmp_path / "t.onnx"
    r = invoke(cli_runner, ["export", "tinynets:build", "--input-shape", "1,3,32,32", "--exporter", "torchscript", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    assert "wrote" in r.stdout and "quick check" in r.stderr and "PASS" in r.stderr
    assert files_in(tmp_path) == ["t.onnx"]
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


def test_export_into_directory_and_force(cli_runner, tinynets_dir, tmp_path):
    args = ["export", "tinynets:build", "--input-shape", "1,3,16,16", "--exporter", "torchscript", "--out", str(tmp_path) + "/"]
    assert invoke(cli_runner, args).exit_code == 0
    assert files_in(tmp_path) == ["build.onnx"]
    before = (tmp_path / "build.onnx").read_bytes()
    r = invoke(cli_runner, args)
    assert r.exit_code == 2 and "exists" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "build.onnx").read_bytes() == before
    assert invoke(cli_runner, [*args, "--force", "--seed", "1"]).exit_code == 0
    assert (tmp_path / "build.onnx").read_bytes() != before


def _weights(tmp_path, kind):
    import importlib

    net = importlib.import_module("tinynets").build()
    p = tmp_path / "w.pt"
    if kind == "missing":
        return tmp_path / "nope.pt"
    if kind == "corrupt":
        torch.save(net.state_dict(), p)
        p.write_bytes(p.read_bytes()[:200])
    elif kind == "not_state_dict":
        torch.save({"epoch": 1}, p)
    elif kind == "keys":
        torch.save({"foo.weight": torch.zeros(2)}, p)
    elif kind == "classes":
        torch.save(importlib.import_module("tinynets").build(num_classes=5).state_dict(), p)
    return p


@pytest.mark.parametrize(
    "case, extra, match",
    [
        ("unknown model", ["googlenett"], "unknown model 'googlenett'.*\nhint: did you mean googlenet"),
        ("weights missing", ["tinynets:build", "--weights", "W:missing"], "does not exist"),
        ("weights corrupt", ["tinynets:build", "--weights", "W:corrupt"], "corrupt or truncated"),
        ("not a state dict", ["tinynets:build", "--weights", "W:not_state_dict"], "not a state dict"),
        ("keys mismatch", ["tinynets:build", "--weights", "W:keys"], "missing 'stem.0.weight'.*unexpected 'foo.weight'"),
        ("class count", ["tinynets:build", "--weights", "W:classes"], "pass --num-classes 5"),
        ("opset", ["tinynets:build", "--opset", "9"], "opset 9 is not supported by the dynamo exporter"),
        ("module import", ["nosuchpkg.nets:build"], "cannot import module 'nosuchpkg.nets'"),
        ("no function", ["tinynets:buld"], "has no function 'buld'.*did you mean build"),
        ("not a module", ["tinynets:not_a_module"], "returned int, not a torch.nn.Module"),
        ("factory raises", ["tinynets:broken"], "factory exploded"),
        ("input shape", ["tinynets:only_32", "--input-shape", "1,3,64,64"], "rejects input shape"),
        ("bad shape text", ["tinynets:build", "--input-shape", "1,3,x"], "must be N,C,H,W"),
        ("1-D model shape", ["tinynets:build", "--input-shape", "1,3,64"], "deployinc exports image models: --input-shape must be N,C,H,W .*N,C,L is not supported"),
        ("bad shape number", ["tinynets:build", "--input-shape", "1,3,a,b"], "not a comma-separated list"),
        ("out dir missing", ["tinynets:build", "--out", "OUT:/nope/x.onnx"], "does not exist"),
        ("out dir unwritable", ["tinynets:build", "--out", "/proc/x.onnx"], "cannot write to directory|not writable"),
        ("config key", ["--config", "CFG"], "unknown key 'export.opsett'"),
        ("no model", [], "no model given"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(cli_runner, tinynets_dir, tmp_path, case, extra, match):
    import re

    work = tmp_path / "work"
    work.mkdir()
    args = []
    for a in extra:
        if a.startswith("W:"):
            a = str(_weights(work, a[2:]))
        elif a.startswith("OUT:"):
            a = str(tmp_path) + a[4:]
        elif a == "CFG":
            (work / "c.toml").write_text('[model]\nname = "tinynets:build"\n[export]\nopsett = 17\n')
            a = str(work / "c.toml")
        args.append(a)
    before = files_in(work)
    if "--out" not in args:
        args += ["--out", str(work / "out.onnx")]
    args += ["--input-shape", "1,3,16,16"] if "--input-shape" not in args else []
    r = invoke(cli_runner, ["export", *args])
    assert r.exit_code == 2, (case, r.stdout, r.stderr)
    assert re.search(match, r.stderr, re.S), r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), r.stderr
    assert "Traceback" not in r.stderr
    assert files_in(work) == before


def test_unknown_command_and_option(cli_runner):
    r = invoke(cli_runner, ["exprt"])
    assert r.exit_code == 2 and "unknown command 'exprt'" in r.stderr and "did you mean export" in r.stderr
    r = invoke(cli_runner, ["export", "--nope"])
    assert r.exit_code == 2 and r.stderr.startswith("error: No such option") and "hint:" in r.stderr


def test_models_lists_zoo(cli_runner):
    r = invoke(cli_runner, ["models", "--source", "torchvision"])
    assert r.exit_code == 0
    for name in ("googlenet", "inception_v3", "resnet50", "mobilenet_v3_large", "regnet_y_400mf"):
        assert name in r.stdout
    line = next(l for l in r.stdout.splitlines() if l.startswith("inception_v3 "))
    assert "3x299x299" in line and "export_configs/inception_v3.toml" in line and "27.16M" in line


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_export_with_checkpoint_records_sha(cli_runner, tinynets_dir, tmp_path, suffix):
    import importlib

    from deployinc.io import sha256_file
    from deployinc.metadata import read_provenance

    torch.manual_seed(3)
    net = importlib.import_module("tinynets").build()
    ckpt = tmp_path / f"w{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": net.state_dict(), "epoch": 4}, ckpt)
    else:
        from safetensors.torch import save_file

        save_file(net.state_dict(), str(ckpt))
    out = tmp_path / "t.onnx"
    r = invoke(cli_runner, ["export", "tinynets:build", "--weights", str(ckpt), "--input-shape", "1,3,16,16", "--exporter", "torchscript", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    prov = read_provenance(onnx.load(str(out)))
    assert prov.weights == str(ckpt.resolve()) and prov.weights_sha256 == sha256_file(ckpt)
    assert prov.bn_recalibrated is False


def test_torchvision_weight_names_come_from_the_hub_cache(cli_runner, tmp_path, monkeypatch):
    import os

    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.hub.set_dir(str(tmp_path / "torch_home" / "hub"))
    try:
        weights = torchvision.models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
        cache = tmp_path / "torch_home" / "hub" / "checkpoints" / os.path.basename(weights.url)
        # Offline and not cached: a clear error naming where to put the file.
        r = invoke(cli_runner, ["export", "mobilenet_v3_small", "--weights", "IMAGENET1K_V1", "--out", str(tmp_path / "m.onnx")])
        assert r.exit_code == 2 and "not in the torch hub cache" in r.stderr and cache.name in r.stderr
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.mobilenet_v3_small().state_dict(), cache)
        r = invoke(cli_runner, ["export", "mobilenet_v3_small", "--weights", "IMAGENET1K_V1", "--exporter", "torchscript", "--out", str(tmp_path / "m.onnx")])
        assert r.exit_code == 0, r.stderr
        r = invoke(cli_runner, ["export", "mobilenet_v3_small", "--weights", "IMAGENET1K_V9", "--out", str(tmp_path / "n.onnx")])
        assert r.exit_code == 2 and "unknown weights 'IMAGENET1K_V9'" in r.stderr and "IMAGENET1K_V1" in r.stderr
    finally:
        torch.hub.set_dir(os.path.join(os.path.expanduser("~"), ".cache", "torch", "hub"))
