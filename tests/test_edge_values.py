"""Numbers checked at the edge (issue 16, parts 3 and 5): NaN, infinity, out-of-range values and requests that
cannot fit in memory are refused by every command with ``error:`` + ``hint:`` (the allowed range, or the memory
figure), exit 2, no traceback, nothing written, and before any model is loaded or any input is generated.

"Before any model is loaded" is asserted, not timed: the entry points that do the heavy work are replaced by
tripwires for each case. Memory checks run against a fixed 8 GiB (``available_memory`` patched), so they refuse
the same requests on every machine.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from deployinc.core import limits
from deployinc.errors import BadInputError

from tests.conftest import files_in, invoke

GiB = 1024**3

#: Entry points that load a model, read images, generate inputs or start a run.
HEAVY = [
    "deployinc.export.export_pipeline",
    "deployinc.models.load_model",
    "deployinc.models.loading.load_model",
    "deployinc.verify.core.verify",
    "deployinc.api.resolve_model",
    "deployinc.bench.harness.benchmark",
    "deployinc.train.train",
    "deployinc.precision.fp16.convert_to_fp16",
    "deployinc.subject.inputs.sample_images",
    "deployinc.precision.int8.quantize_int8",
    "deployinc.core.images.load_image_folder_with_report",
]


@pytest.fixture
def tripwires(monkeypatch):
    """Heavy entry points fail loudly; the machine has 8 GiB available."""

    def boom(*_a, **_k):
        raise RuntimeError("TRIPWIRE: heavy work started before the bad value was refused")

    for target in HEAVY:
        monkeypatch.setattr(target, boom)
    monkeypatch.setattr(limits, "available_memory", lambda: (8 * GiB, "test"))


@pytest.fixture(scope="module")
def tiny_onnx(tinynets_dir, tmp_path_factory) -> Path:
    """tinynets:build at 16x16 (TorchScript exporter; its spec is user code, so verify/bench need --trust-model-code)."""
    from deployinc.export import export_pipeline

    out = tmp_path_factory.mktemp("edge") / "tiny.onnx"
    export_pipeline("tinynets:build", out=out, exporter="torchscript", input_shape=(1, 3, 16, 16), threads=2, quick_check=False)
    return out


def assert_refused(r, match: str) -> None:
    """Exit 2, one ``error:`` line (containing ``match``) then one ``hint:`` line, no traceback."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out and "TRIPWIRE" not in out, out
    assert r.exit_code == 2, out
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(("error:", "hint:"))]
    assert [ln.split(":")[0] for ln in lines] == ["error", "hint"], r.stderr
    assert match in lines[0], r.stderr


# the CLI, no file needed ---------------------------------------------------------------------------------------------

EXPORT = ["export", "tinynets:build", "--exporter", "torchscript"]
TRAIN = ["train", "inception_cifar", "--data", "synthetic:shapes"]

CASES = [
    # export: model options, opset, seed, class count, shape, memory
    (EXPORT + ["--std", "inf,inf,inf"], "--std holds inf, not a finite number", "> 0"),
    (EXPORT + ["--std", "0.2,nan,0.2"], "--std holds nan", "finite"),
    (EXPORT + ["--std", "0.2,-1,0.2"], "every value must be > 0", "> 0"),
    (EXPORT + ["--mean", "nan"], "--mean holds nan", "finite"),
    (EXPORT + ["--std", ","], "--std is empty", "one or more"),
    (EXPORT + ["--input-shape", "1,3,-5,224"], "H = -5 must be at least 1", "N,C,H,W"),
    (EXPORT + ["--input-shape", "1,3,224"], "must be N,C,H,W (four values)", "e.g. 1,3,224,224"),
    (EXPORT + ["--input-shape", "1,3,100000,100000"], "H = 100000 is above the maximum 16384", "H and W <= 16384"),
    (EXPORT + ["--input-shape", "64,3,2048,2048"], "needs at least 24.0 GiB", "N=1 is enough"),
    (EXPORT + ["--opset", "99"], "opset 99 is not supported", "between 13 and 21"),
    (EXPORT + ["--opset", "12"], "opset 12 is not supported", "between 13 and 21"),
    (EXPORT + ["--seed", "99999999999999999999"], "--seed 99999999999999999999 is above the maximum 4294967295", "0 to 4294967295"),
    (EXPORT + ["--seed", "-1"], "--seed -1 is below the minimum 0", "0 to 4294967295"),
    (EXPORT + ["--num-classes", "2000000000"], "--num-classes 2000000000 is above the maximum 1000000", "1 to 1000000"),
    (EXPORT + ["--num-classes", "0"], "--num-classes 0 is below the minimum 1", "1 to 1000000"),
    (EXPORT + ["--threads", "-3"], "--threads -3 is below the minimum 1", "1 to 1024"),
    # profile: the same model options, and its own memory check
    (["profile", "googlenet", "--input-shape", "1,3,100000,100000"], "above the maximum 16384", "H and W <= 16384"),
    (["profile", "googlenet", "--input-shape", "1,3,224"], "must be N,C,H,W", "e.g. 1,3,224,224"),
    (["profile", "googlenet", "--input-shape", "512,3,1024,1024"], "needs at least", "fit here"),
    (["profile", "googlenet", "--num-classes", "2000000000"], "above the maximum 1000000", "1 to 1000000"),
    (["profile", "googlenet", "--num-classes", "900000"], "a Linear head", "classes fit here"),
    (["profile", "googlenet", "--threads", "0"], "--threads 0", "1 to 1024"),
    # verify: budgets, counts, seeds (no file needed: options are checked while parsing)
    (["verify", "x.onnx", "--max-rel", "nan"], "--max-rel nan is not a finite number", ">= 0"),
    (["verify", "x.onnx", "--max-abs", "inf"], "--max-abs inf is not a finite number", ">= 0"),
    (["verify", "x.onnx", "--max-abs", "-1"], "--max-abs -1 is below the minimum 0", ">= 0"),
    (["verify", "x.onnx", "--min-cosine", "-5"], "--min-cosine -5 is below the minimum -1", "[-1, 1]"),
    (["verify", "x.onnx", "--min-top1", "2"], "--min-top1 2 is above the maximum 1", "[0, 1]"),
    (["verify", "x.onnx", "--min-top5", "nan"], "--min-top5 nan", "[0, 1]"),
    (["verify", "x.onnx", "--threads", "-3"], "--threads -3", "1 to 1024"),
    (["verify", "x.onnx", "--samples", "0"], "--samples 0 is below the minimum 1", "1 to"),
    (["verify", "x.onnx", "--batch", "1,0"], "--batch '1,0': 0 is out of range", "integers from 1"),
    (["verify", "x.onnx", "--seed", "-1"], "--seed -1", "0 to 4294967295"),
    (["verify", "x.onnx", "--input-shape", "1,3,224"], "must be N,C,H,W", "e.g. 1,3,224,224"),
    (["verify", "x.onnx", "--std", "0,1,1"], "every value must be > 0", "> 0"),
    (["verify", "x.onnx", "--num-classes", "-1"], "--num-classes -1", "1 to 1000000"),
    # bench: counts and times
    (["bench", "x.onnx", "--max-time", "nan"], "--max-time nan is not a finite number", "(0, 86400]"),
    (["bench", "x.onnx", "--max-time", "0"], "--max-time 0 must be above 0", "(0, 86400]"),
    (["bench", "x.onnx", "--iters", "1000000000000"], "--iters 1000000000000 is above the maximum 10000000", "1 to 10000000"),
    (["bench", "x.onnx", "--warmup", "10000000"], "--warmup 10000000 is above the maximum", "1 to 1000000"),
    (["bench", "x.onnx", "--max-slowdown", "nan", "--baseline", "b.json"], "--max-slowdown nan", "[1, 1000]"),
    (["bench", "x.onnx", "--threads", "5000"], "--threads 5000 is above the maximum 1024", "1 to 1024"),
    # train
    (TRAIN + ["--aux-weight", "nan"], "--aux-weight nan is not a finite number", ">= 0"),
    (TRAIN + ["--weight-decay", "-1"], "--weight-decay -1 is below the minimum 0", ">= 0"),
    (TRAIN + ["--lr", "inf"], "--lr inf is not a finite number", "> 0"),
    (TRAIN + ["--label-smoothing", "1"], "--label-smoothing 1 must be below 1", "[0, 1)"),
    (TRAIN + ["--val-split", "nan"], "--val-split nan", "(0, 1)"),
    (TRAIN + ["--image-size", "100000"], "--image-size 100000 is above the maximum 16384", "8 to 16384"),
    (TRAIN + ["--image-size", "4096"], "needs at least", "--limit-train"),
    (TRAIN + ["--batch-size", "100000000"], "--batch-size 100000000 needs at least", "smaller --batch-size"),
    (TRAIN + ["--epochs", "0"], "--epochs 0 is below the minimum 1", "1 to 100000"),
    (TRAIN + ["--seed", "4294967296"], "--seed 4294967296 is above the maximum", "0 to 4294967295"),
    # convert / quantize: options first (the file is not even opened)
    (["convert", "x.onnx", "--samples", "0"], "--samples 0 is below the minimum 1", "1 to"),
    (["convert", "x.onnx", "--std", "inf"], "--std holds inf", "> 0"),
    (["quantize", "x.onnx", "--data", "d", "--limit", "0"], "--limit 0 is below the minimum 1", ">= 1"),
    (["quantize", "x.onnx", "--data", "d", "--percentile", "nan"], "--percentile nan", "(0, 100]"),
    (["quantize", "x.onnx", "--data", "d", "--percentile", "0"], "--percentile 0 must be above 0", "(0, 100]"),
]


@pytest.mark.parametrize("args, match, hint", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_bad_number_is_refused_before_any_work(cli_runner, tinynets_dir, tripwires, tmp_path, monkeypatch, args, match, hint):
    monkeypatch.chdir(tmp_path)  # relative outputs (x.onnx.fp16, ./build.onnx) would land here
    if args[0] == "export":
        args = [*args, "--out", str(tmp_path / "out.onnx")]
    r = invoke(cli_runner, args)
    assert_refused(r, match)
    assert hint in r.stderr.splitlines()[-1], r.stderr
    assert files_in(tmp_path) == []


# config files --------------------------------------------------------------------------------------------------------

CONFIGS = [
    ("[parity]\nmax_rel = nan\n", "parity.max_rel nan is not a finite number", ">= 0"),
    ("[parity]\nmin_cosine = inf\n", "parity.min_cosine inf is not a finite number", "[-1, 1]"),
    ("[parity]\nmin_top1 = 2\n", "parity.min_top1 2 is above the maximum 1", "[0, 1]"),
    ("[parity]\nmax_abs = -1e-3\n", "parity.max_abs -0.001 is below the minimum 0", ">= 0"),
    ("[input]\nstd = []\n", "input.std is empty", "one or more"),
    ("[input]\nstd = [0.2, inf, 0.2]\n", "input.std holds inf", "> 0"),
    ("[input]\nmean = [nan]\n", "input.mean holds nan", "finite"),
    ("[input]\nshape = [1, 3, 32, 32]\nmean = [0.1, 0.2]\n", "input.mean has 2 values for 3 input channels", "one value per channel"),
    ("[input]\nshape = [1, 3, 1e6, 1e6]\n", "input.shape must be a list of integers", "[1, 3, 224, 224]"),
    ("[input]\nshape = [1, 3, 1000000, 1000000]\n", "input.shape 1,3,1000000,1000000: H = 1000000 is above the maximum 16384", "H and W <= 16384"),
    ("[input]\nshape = [3, 224, 224]\n", "input.shape must be N,C,H,W", "N,C,H,W"),
    ("[input]\nshape = [100000, 3, 4096, 4096]\n", "input.shape 100000,3,4096,4096 needs at least", "fit here"),
    ("[export]\nopset = 99\n", "export.opset 99 is above the maximum 21", "13 to 21"),
    ("[model]\nseed = -1\n", "model.seed -1 is below the minimum 0", "0 to 4294967295"),
    ("[model]\nnum_classes = 2000000000\n", "model.num_classes 2000000000 is above the maximum", "1 to 1000000"),
]


@pytest.mark.parametrize("body, match, hint", CONFIGS, ids=[c[1].split(" ")[0] + "-" + str(i) for i, c in enumerate(CONFIGS)])
def test_bad_config_value_names_the_key(cli_runner, tinynets_dir, tripwires, tmp_path, body, match, hint):
    text = '[model]\nname = "tinynets:build"\n' + body
    if body.startswith("[model]"):
        text = '[model]\nname = "tinynets:build"\n' + body.split("\n", 1)[1]
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    r = invoke(cli_runner, ["export", "--config", str(cfg), "--out", str(out / "m.onnx")])
    assert_refused(r, match)
    assert str(cfg) in r.stderr.splitlines()[-2]  # the file is named
    assert hint in r.stderr.splitlines()[-1], r.stderr
    assert files_in(out) == []


# the CLI, with an ONNX file: memory checks that need the file's input size ----------------------------------------


@pytest.mark.parametrize(
    "args, match",
    [
        (["verify", "--trust-model-code", "F", "--batch", "100000000"], "--batch 100000000 needs at least 572.2 GiB"),
        (["verify", "--trust-model-code", "F", "--samples", "1000000000"], "--samples 1000000000 needs at least 5.6 TiB"),
        (["verify", "--trust-model-code", "F", "--batch", "1,4000000", "--input-shape", "1,3,16,16"], "needs at least"),
        (["bench", "--trust-model-code", "F", "--batch", "100000000"], "--batch 100000000 needs at least"),
        (["bench", "--trust-model-code", "F", "--batch", "1,2,3", "--max-time", "nan"], "--max-time nan"),
        (["convert", "F", "--samples", "100000000"], "--samples 100000000 needs at least"),
    ],
)
def test_inputs_that_cannot_fit_are_refused_with_the_figure(cli_runner, tiny_onnx, tripwires, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    args = [str(tiny_onnx) if a == "F" else a for a in args]
    if args[0] == "convert":
        args += ["--out", str(tmp_path / "t16.onnx")]
    before = files_in(tiny_onnx.parent)
    r = invoke(cli_runner, args)
    assert_refused(r, match)
    assert "this machine has 8.0 GiB available" in r.stderr or "nan" in match
    assert files_in(tmp_path) == [] and files_in(tiny_onnx.parent) == before


def test_a_request_that_fits_is_not_refused(tiny_onnx, monkeypatch):
    from deployinc.cli.options import check_onnx_input_memory

    monkeypatch.setattr(limits, "available_memory", lambda: (8 * GiB, "test"))
    check_onnx_input_memory(str(tiny_onnx), [("--batch", "1,100000", 100000)])  # 293 MiB x 2
    limits.check_model_memory("--input-shape", "1,3,224,224", (1, 3, 224, 224))
    limits.check_head_memory("--num-classes", 21841)
    with pytest.raises(BadInputError, match="needs at least"):
        check_onnx_input_memory(str(tiny_onnx), [("--batch", "2000000", 2_000_000)])


# the pure checks -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "1", True])
def test_check_float_refuses_non_finite_and_non_numbers(value):
    with pytest.raises(BadInputError) as e:
        limits.check_float("--x", value, 0, 1)
    assert "[0, 1]" in e.value.hint


def test_check_int_and_float_ranges():
    assert limits.check_int("--n", 5, 1, 10) == 5
    assert limits.check_int("--n", 5.0, 1, 10) == 5
    for bad in (0, 11, 2.5, True, None):
        with pytest.raises(BadInputError, match="--n") as e:
            limits.check_int("--n", bad, 1, 10)
        assert e.value.hint and "1 to 10" in e.value.hint
    assert limits.check_float("--p", 100, 0, 100, lo_open=True) == 100.0
    with pytest.raises(BadInputError, match="must be above 0"):
        limits.check_float("--p", 0, 0, 100, lo_open=True)


def test_check_shape():
    assert limits.check_shape("s", [2, 3, 8, 8]) == (2, 3, 8, 8)
    for bad, match in (([3, 8, 8], "four values"), ([1, 3, 0, 8], "H = 0"), ([1, 3, 8, 20000], "W = 20000"), ([1, 3, 8.0, 8], "not an integer")):
        with pytest.raises(BadInputError, match=match):
            limits.check_shape("s", bad)


def test_seed_range_is_what_torch_and_numpy_take():
    import numpy as np
    import torch

    for s in (0, limits.SEED_MAX):
        torch.manual_seed(s)
        np.random.default_rng(s)
        assert limits.check_seed("--seed", s) == s


def test_opset_range_matches_the_exporters():
    from deployinc.export import SUPPORTED_OPSETS

    for ok in SUPPORTED_OPSETS.values():
        assert (ok[0], ok[-1]) == (limits.OPSET_MIN, limits.OPSET_MAX)


def test_tolerance_keys_match_the_config_schema():
    from deployinc.config import _SCHEMA

    assert set(_SCHEMA["parity"]) == set(limits.TOLERANCE_RANGES)


def test_available_memory_and_byte_figures():
    avail, source = limits.available_memory()
    assert avail > 0 and source
    assert limits.tensor_bytes(100_000_000, (3, 224, 224)) == 100_000_000 * 3 * 224 * 224 * 4
    assert limits.fmt_bytes(56.1 * GiB) == "56.1 GiB" and limits.fmt_bytes(3.64 * 1024**4) == "3.6 TiB"
    assert limits.head_bytes(1000, 1024) == 1025 * 1000 * 4


def test_every_backend_name_means_the_same_in_verify_and_bench():
    """One table (deployinc.backends): verify --providers X and bench --backends X name the same backend."""
    from deployinc.backends import ALIASES, BACKENDS
    from deployinc.cli.bench import parse_bench_backends
    from deployinc.verify.backends import parse_providers

    for name in [*BACKENDS, *ALIASES]:
        assert parse_providers(name) == parse_bench_backends(name), name
    assert parse_providers("tensorrt") == ["ort-trt"] and parse_providers("trt-engine") == ["trt-engine"]
    with pytest.raises(BadInputError, match="did you mean 'cuda'"):
        parse_providers("gpu")
