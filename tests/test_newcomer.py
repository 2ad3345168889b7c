"""What a newcomer meets first: broken weights named as such, `--out DIR/`, `--config NAME`, progress lines, the
quantize accuracy line and target choice, and the messages of the first mistakes (`--providers gpu`, `--debug`
after the command, a pickled model, "1 epochs", the default input shape of a user model)."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import torch

from deployinc.errors import BadInputError, ConfigError, WeightsError

from tests.conftest import files_in, invoke


def _tiny(num_classes: int = 10):
    return importlib.import_module("tinynets").build(num_classes)


def _one_error(r) -> list[str]:
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert lines[-2].startswith("error: ") and lines[-1].startswith("hint: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines


# 1. NaN / Inf weights: the checkpoint is at fault, and its tensors are named ------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_nonfinite_checkpoint_names_the_tensors(tinynets_dir, tmp_path, suffix):
    from deployinc.io import load_checkpoint

    sd = _tiny().state_dict()
    sd["stem.0.weight"].view(-1)[:3] = float("nan")
    sd["fc.bias"][0] = float("inf")
    p = tmp_path / f"ckpt{suffix}"
    if suffix == ".pt":
        torch.save(sd, p)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(p))
    with pytest.raises(WeightsError) as info:
        load_checkpoint(p)
    msg = info.value.message
    assert f"weights {p} hold non-finite values" in msg
    assert "stem.0.weight (3 NaN)" in msg and "fc.bias (1 Inf)" in msg
    assert "skip-pass" not in msg + info.value.hint


def test_export_of_nonfinite_checkpoint_is_bad_input_not_a_fold_bug(cli_runner, tinynets_dir, tmp_path):
    sd = _tiny().state_dict()
    sd["pw.weight"][0, 0] = float("nan")
    p = tmp_path / "ckpt.pt"
    torch.save(sd, p)
    r = invoke(cli_runner, ["export", "tinynets:build", "--weights", str(p), "--input-shape", "1,3,16,16", "--out", str(tmp_path / "t.onnx")])
    lines = _one_error(r)
    assert "hold non-finite values: pw.weight (1 NaN)" in lines[-2]
    assert "fold" not in r.stderr and "skip-pass" not in r.stderr
    assert not (tmp_path / "t.onnx").exists()


def test_prepare_names_nonfinite_parameters_of_a_built_model(tinynets_dir):
    from deployinc.prepare import prepare

    net = _tiny().eval()
    with torch.no_grad():
        net.gbn.weight[2] = float("nan")
    with pytest.raises(WeightsError, match=r"gbn\.weight \(1 NaN\)") as info:
        prepare(net, (1, 3, 16, 16))
    assert "skip-pass" not in info.value.message and "no --skip-pass helps" in info.value.hint


# 2. a dtype the model does not have: refused, not cast --------------------------------------------------------------


def test_safetensors_int_header_for_a_float_weight_is_refused(tinynets_dir, tmp_path):
    from safetensors.torch import save_file

    from deployinc.models.loading import load_model

    sd = _tiny().state_dict()
    sd["fc.weight"] = torch.ones_like(sd["fc.weight"], dtype=torch.int32)
    p = tmp_path / "w.safetensors"
    save_file(sd, str(p))
    with pytest.raises(WeightsError) as info:
        load_model("tinynets:build", weights=str(p), input_shape=(1, 3, 16, 16))
    msg = info.value.message
    assert "'fc.weight'" in msg and "int32" in msg and "I32" in msg and "float32" in msg
    # float16 weights for a float32 model are the same family: they load.
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in _tiny().state_dict().items()}
    save_file(sd, str(p))
    load_model("tinynets:build", weights=str(p), input_shape=(1, 3, 16, 16))


# 3 + 5 + 7e. --out DIR/ creates the folder; stage lines; the default input shape of a user model -----------------


def test_out_dir_with_slash_is_created_and_stages_are_printed(cli_runner, tinynets_dir, tmp_path):
    out = tmp_path / "models"
    r = invoke(cli_runner, ["export", "tinynets:build", "--exporter", "torchscript", "--out", f"{out}/"])
    assert r.exit_code == 0, r.stderr
    assert files_in(tmp_path) == ["models/build.onnx"]
    err = r.stderr
    assert f"created folder {out}/ for build.onnx" in err
    assert "note: no --input-shape: exporting at 1,3,224,224 (the default for user models)" in err
    stages = ("load", "prepare", "export", "simplify", "check", "write")  # a factory's weights: nothing recalibrated
    assert "recalibrate BatchNorm" not in err
    starts = [err.index(f"{s} (") for s in stages]
    assert starts == sorted(starts), err
    for stage in stages:
        assert re.search(rf"^{stage} done in \d+\.\d s$", err, re.M), (stage, err)
    assert "prepare: eval" in err and "quick check (ORT CPU vs torch" in err  # the summaries stay
    assert re.search(r"wrote .*build\.onnx .* in \d+\.\d s", r.stdout)


def test_out_dir_with_slash_needs_its_parent_and_is_removed_on_failure(cli_runner, tinynets_dir, tmp_path):
    r = invoke(cli_runner, ["export", "tinynets:build", "--input-shape", "1,3,16,16", "--out", f"{tmp_path}/a/b/"])
    lines = _one_error(r)
    assert "neither" in lines[-2] and "mkdir -p" in lines[-1]
    assert not (tmp_path / "a").exists()
    r = invoke(cli_runner, ["export", "tinynets:build", "--input-shape", "1,3,16,16", "--weights", str(tmp_path / "no.pt"), "--out", f"{tmp_path}/m/"])
    _one_error(r)
    assert not (tmp_path / "m").exists()  # the folder made for the export went with it


# 4. --config NAME, and export_configs/NAME.toml from any folder -----------------------------------------------------


def test_config_accepts_a_bundled_name_and_falls_back_from_the_checkout_path(tmp_path, monkeypatch):
    from deployinc.cli.export import config_path
    from deployinc.config import bundled_config_path

    monkeypatch.chdir(tmp_path)
    bundled = str(bundled_config_path("mobilenet_v2"))
    assert config_path("mobilenet_v2") == bundled
    notes: list[str] = []
    assert config_path("export_configs/mobilenet_v2.toml", notes.append) == bundled
    assert notes and "using the bundled mobilenet_v2 config" in notes[0]
    mine = tmp_path / "export_configs" / "mobilenet_v2.toml"
    mine.parent.mkdir()
    mine.write_text('[model]\nname = "mobilenet_v2"\n')
    assert config_path("export_configs/mobilenet_v2.toml") == "export_configs/mobilenet_v2.toml"  # a file wins
    with pytest.raises(ConfigError, match="no bundled config named 'mobilenet_v9'") as info:
        config_path("mobilenet_v9")
    assert "did you mean mobilenet_v2" in info.value.hint


def test_cli_config_name_is_loaded(cli_runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(cli_runner, ["export", "--config", "mobilenet_v2", "--weights", str(tmp_path / "no.pt"), "--out", str(tmp_path / "m.onnx")])
    lines = _one_error(r)
    assert "weights file" in lines[-2] and "does not exist" in lines[-2]  # got past the config: it loaded


# 6. quantize: the accuracy line, and --target auto ---------------------------------------------------------------


def test_choose_target(monkeypatch):
    from deployinc.precision import int8

    monkeypatch.setattr(int8, "tensorrt_problem", lambda: "no NVIDIA driver here (libcuda.so.1 cannot be loaded)")
    target, note, warn = int8.choose_target("auto")
    assert target == "cpu" and "TensorRT is not usable here: no NVIDIA driver" in note and warn is None
    target, note, warn = int8.choose_target("tensorrt")
    assert target == "tensorrt" and note is None and "slower than the fp32 model" in warn
    assert int8.choose_target("cpu") == ("cpu", None, None)
    monkeypatch.setattr(int8, "tensorrt_problem", lambda: None)
    target, note, _ = int8.choose_target("auto")
    assert target == "tensorrt" and "TensorRT are usable here" in note
    with pytest.raises(BadInputError):
        int8.choose_target("gpu")


def test_quantize_prints_the_int8_vs_fp32_line_and_the_target(cli_runner, tmp_path, monkeypatch):
    from deployinc.io import save_onnx
    from deployinc.precision import int8
    from tests.precision.test_fp16 import convnet
    from tests.precision.test_int8 import write_pngs

    monkeypatch.setattr(int8, "tensorrt_problem", lambda: "no NVIDIA driver here")
    src = tmp_path / "net.onnx"
    m = convnet()
    for k, v in (("deployinc.mean", "[0.5, 0.5, 0.5]"), ("deployinc.std", "[0.25, 0.25, 0.25]")):
        e = m.metadata_props.add()
        e.key, e.value = k, v
    save_onnx(m, src)
    data = write_pngs(tmp_path / "calib", 12, size=16)
    r = invoke(cli_runner, ["quantize", str(src), "--data", str(data)])
    assert r.exit_code == 0, r.output
    assert "target cpu (auto: TensorRT is not usable here: no NVIDIA driver here)" in r.stdout
    line = next(l for l in r.stdout.splitlines() if l.startswith("int8 vs fp32 on ORT CPU"))
    assert re.search(r"\(12 of the 12 calibration image\(s\)\): (PASS|FAIL) cosine [\d.]+, top-1 agreement [\d.]+, max_rel ", line), line
    assert "[int8 preset: cos>=0.99 top1>=0.95" in line
    report = json.loads((tmp_path / "net.int8.calibration.json").read_text())
    assert report["target"] == "cpu" and report["fp32_comparison"]["images"] == 12
    r = invoke(cli_runner, ["quantize", str(src), "--data", str(data), "--target", "tensorrt", "--force", "--no-check"])
    assert r.exit_code == 0, r.output
    assert "warning: --target tensorrt: TensorRT is not usable here" in r.stderr and "slower than the fp32 model" in r.stderr
    assert "int8 vs fp32" not in r.stdout


# 7. messages ----------------------------------------------------------------------------------------------------


def test_providers_gpu_suggests_cuda():
    from deployinc.verify.backends import parse_providers

    with pytest.raises(BadInputError, match=r"unknown backend 'gpu' in --providers \(did you mean 'cuda'\?\)"):
        parse_providers("cpu,gpu")
    with pytest.raises(BadInputError, match=r"did you mean 'cpu'"):
        parse_providers("cpuu")


def test_debug_is_accepted_after_the_command(cli_runner, tmp_path):
    r = invoke(cli_runner, ["verify", str(tmp_path / "x.onnx"), "--debug"])
    assert r.exit_code == 2, r.stderr
    assert "No such option" not in r.stderr
    assert "error: ONNX file" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" in r.stderr  # what --debug is for


def test_pickled_whole_model_message_says_what_to_save(tmp_path):
    from deployinc.io import load_checkpoint

    p = tmp_path / "model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), p)
    with pytest.raises(WeightsError) as info:
        load_checkpoint(p)
    msg, hint = info.value.message, info.value.hint
    assert "pickles a whole model object (torch.nn.modules.container.Sequential)" in msg
    assert "two options" not in msg + hint
    assert "torch.save(model.state_dict(), path)" in hint


def test_epoch_counts_are_singular_for_one():
    from deployinc.train.loop import epochs_text

    assert epochs_text(1) == "1 epoch" and epochs_text(3) == "3 epochs"
