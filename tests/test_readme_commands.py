"""Every ``deployinc`` command line of README.md's code blocks, accounted for.

Each README command line is in :data:`TABLE`, as one of

- :class:`Run`: run as written (``deployinc`` -> ``python -m deployinc``), in a fresh temporary folder outside the
  checkout, after writing the stand-in files it names (``model.onnx``, ``mypkg/``, ``calib/``...: small files the
  test makes, under the names the README uses; the command itself is never rewritten);
- :class:`Skip`: not run here, with the reason (a GPU, user data, or minutes of CPU); its command name, options and
  option values are still parsed by the CLI, so a renamed flag or a bad value in README fails here;
- :class:`XFail`: run as written and known to fail (a README bug being fixed), ``xfail(strict=True)``: the test
  fails once the command works, so the entry moves to :class:`Run`.

:func:`test_every_readme_command_is_accounted_for` fails when README gains a command line that the table lacks,
or the table keeps one that README lost. Alternatives written ``a|b|c`` inside one argument (``--target
tensorrt|ort-cpu|ort-cuda``) are README shorthand for several commands: each is run. ``cmd1 && cmd2`` runs in
order, in one folder.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
#: Seconds one README command may take here before it counts as hung.
TIMEOUT_S = 240


@dataclass(frozen=True)
class Run:
    """Run as written. ``files``: stand-ins to write first (name in the folder -> what to put there, see
    :class:`StandIns`); ``creates``: files the command must leave; ``output``: text its output must hold;
    ``slow``: marked ``slow`` (over ~15 s here; ``-m "not slow"`` leaves it out)."""

    files: tuple[tuple[str, str], ...] = ()
    creates: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    slow: bool = False


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class XFail:
    reason: str
    files: tuple[tuple[str, str], ...] = ()


_HEAVY = "heavy on a 2-core CPU VM: "
_GOOGLENET = "googlenet.onnx, a GoogLeNet export (~1 min here; tests/export/test_zoo_export.py exports the zoo, marked slow)"
_GPU = "needs a CUDA GPU"

#: README command line (comment dropped, spaces normalised) -> what this test does with it.
TABLE: dict[str, Run | Skip | XFail] = {
    # The main job
    "deployinc export googlenet --opset 17": Skip(_HEAVY + "GoogLeNet: BatchNorm recalibration, export and checks take ~1 min (tests/export/test_zoo_export.py, slow)"),
    "deployinc verify googlenet.onnx": Skip(_HEAVY + "needs " + _GOOGLENET + ", then rebuilds GoogLeNet"),
    "deployinc bench googlenet.onnx": Skip(_HEAVY + "needs " + _GOOGLENET + ", then minutes of timing per backend"),
    "deployinc models": Run(output=("inception_cifar", "googlenet", "resnet50", "models;")),
    "deployinc export resnet50 --weights path/to/resnet50.pth --out models/": Skip(
        _HEAVY + "a ResNet-50 export (25M parameters, ~1 min) from a user's checkpoint (a stand-in would be a 100 MB "
        "state dict); tests/cli/test_export.py exports user checkpoints into a folder"
    ),
    "deployinc export inception_v3 --exporter torchscript --opset 13": Skip(_HEAVY + "an Inception v3 export at 299 x 299 (~1 min)"),
    "deployinc export mypkg.nets:build_model --weights ckpt.safetensors --input-shape 1,3,64,64": Run(
        files=(("mypkg", "mypkg"), ("ckpt.safetensors", "ckpt.safetensors")), creates=("build_model.onnx",)
    ),
    # fixed: was "--config export_configs/mobilenet_v2.toml", which worked only in the checkout (an XFail here until then)
    "deployinc export --config mobilenet_v2 --no-dynamic-batch": Run(creates=("mobilenet_v2.onnx",), slow=True),
    # Verify
    "deployinc verify model.onnx --reference mypkg.nets:build --weights ckpt.pt": Run(
        files=(("mypkg", "mypkg"), ("ckpt.pt", "ckpt.pt"), ("model.onnx", "mypkg.onnx")), output=("PASS",)
    ),
    "deployinc verify a.onnx --against b.onnx": Run(files=(("a.onnx", "model.onnx"), ("b.onnx", "model.onnx")), output=("PASS",)),
    "deployinc verify googlenet.onnx --providers cpu,cuda,tensorrt --batch 1,8 --data images/ --json report.json": Skip(
        _GPU + " and TensorRT (providers cuda, tensorrt), the user's images/ and " + _GOOGLENET
    ),
    "deployinc verify googlenet.onnx --localize": Skip(
        _HEAVY + "needs " + _GOOGLENET + "; tests/verify/test_localize_real.py localises real exports"
    ),
    "deployinc verify googlenet.onnx --data val/ --labels": Skip("needs the user's labelled folder val/ and " + _GOOGLENET),
    "deployinc verify googlenet.onnx --save-outputs run.npz": Skip(_HEAVY + "needs " + _GOOGLENET + ", then rebuilds GoogLeNet"),
    # Bench
    "deployinc bench googlenet.onnx --backends torch,torch-fused,ort-cpu,ort-cuda,ort-trt,trt-engine --batch 1,8,32 --precision fp32,fp16": Skip(
        _GPU + " and TensorRT for most of its backends, and " + _GOOGLENET
    ),
    "deployinc bench resnet50 --warmup 20 --iters 200 --threads 2 --json out.json --csv out.csv --md out.md --plot out.png": Skip(
        _HEAVY + "exports ResNet-50 on the fly, then 200 timed iterations per backend (minutes); tests/cli/test_bench.py "
        "covers the reports"
    ),
    "deployinc bench googlenet.onnx --baseline last.json --max-slowdown 1.10": Skip(
        "needs last.json, an earlier bench report of the same model, and " + _GOOGLENET
    ),
    # Deploy
    "deployinc deploy googlenet": Skip(_HEAVY + "10 candidates made, verified and timed (~3 min); tests/deploy/test_deploy.py deploys a small model"),
    "deployinc deploy resnet18 --weights r18.pt --num-classes 10 --input-shape 1,3,128,128 --data calib/ --accuracy-data heldout/": Skip(
        "needs the user's checkpoint r18.pt and image folders (deployinc train --export-heldout writes such a folder); scripts/deploy_zoo.py runs it"
    ),
    "deployinc deploy model.onnx --target cuda --precisions fp32,fp16,int8 --batch 1,64 --objective throughput": Skip(_GPU),
    "deployinc deploy googlenet --min-top1-agreement 0.995 --require-backend ort-cpu": Skip(_HEAVY + "the googlenet deploy above, narrowed"),
    # Lower precision that passes its own check
    "deployinc deploy resnet50 --weights r50.pt --data calib/ --accuracy-data val/": Skip(
        "needs the user's checkpoint r50.pt and labelled folders; tests/deploy/test_run.py covers the task rule and "
        "docs/benchmarks/deploy-amd-epyc-2cpu-trained.md is a real run on trained models"
    ),
    "deployinc quantize resnet50.onnx --data calib/ --fallback auto": Skip(
        _HEAVY + "needs resnet50.onnx and a calibration folder; tests/cli/test_lower_precision.py runs quantize --fallback auto on a planted model"
    ),
    "deployinc convert model.onnx --precision fp16 --fallback auto": Run(files=(("model.onnx", "model.onnx"),), creates=("model.fp16.onnx",)),
    # TensorRT, fp16 and int8 (model.onnx: a deployinc export of a small built-in model)
    "deployinc check model.onnx --target tensorrt|ort-cpu|ort-cuda": Run(
        files=(("model.onnx", "model.onnx"),), output=("verdict: compatible",)
    ),
    "deployinc check model.onnx --target openvino": Run(
        files=(("model.onnx", "model.onnx"),), output=("the OpenVINO runtime", "verdict: compatible with openvino")
    ),
    "deployinc convert model.onnx --precision fp16": Run(files=(("model.onnx", "model.onnx"),), creates=("model.fp16.onnx",)),
    "deployinc quantize model.onnx --data calib/ --method minmax|entropy|percentile|mse": Run(
        files=(("model.onnx", "model.onnx"), ("calib", "calib")), creates=("model.int8.onnx", "model.int8.calibration.json"),
        slow=True,
    ),
    "deployinc verify model.fp16.onnx --precision fp16": Run(files=(("model.fp16.onnx", "model.fp16.onnx"),), output=("PASS",)),
    "deployinc verify model.onnx --providers trt-engine": Skip(_GPU + " and the TensorRT libraries (not installable on our machines)"),
    # Train and profile
    "deployinc train inception_cifar --data synthetic:shapes": Skip(
        _HEAVY + "5 epochs of training (minutes); tests/train/test_train.py trains one short epoch through the CLI"
    ),
    "deployinc train inception_cifar --data ~/data/cifar-10-batches-py --epochs 20 --out ckpt.pt": Skip(
        "needs the user's CIFAR-10 download, and 20 epochs (hours on a CPU); tests/train/test_train.py reads a CIFAR stand-in"
    ),
    "deployinc train googlenet --data path/to/imagefolder --num-classes 5 --aux-weight 0.3 --epochs 5 --weights init.pth": Skip(
        "needs the user's image folder and init.pth, and GoogLeNet training (hours on a CPU); tests/train/test_train.py trains "
        "GoogLeNet with aux heads on a few images"
    ),
    "deployinc export inception_cifar --weights inception_cifar.pt && deployinc verify inception_cifar.onnx --data heldout/": Run(
        files=(("inception_cifar.pt", "inception_cifar.pt"), ("heldout", "heldout")),
        creates=("inception_cifar.onnx",), output=("PASS",), slow=True,
    ),  # fmt: skip
    "deployinc profile googlenet": Skip(
        _HEAVY + "builds GoogLeNet, recalibrates its BatchNorm statistics and profiles it before and after fusion "
        "(~50 s measured); tests/profile/test_profile.py checks GoogLeNet's figures"
    ),
    "deployinc profile inception_v1_block --input-shape 1,256,28,28 --compare-naive": Run(output=("naive",)),
    # Inspect
    "deployinc inspect model.onnx": Run(files=(("model.onnx", "model.onnx"),), output=("provenance (deployinc export)",)),
    "deployinc inspect model.fp16.onnx --json model.fp16.json": Run(
        files=(("model.fp16.onnx", "model.fp16.onnx"),), creates=("model.fp16.json",), output=("fp16",)
    ),
}


# README parsing -----------------------------------------------------------------------------------------------------


def readme_code_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line in a code block: fenced (```), or indented 4 spaces after a blank line."""
    out: list[tuple[int, str]] = []
    fence: str | None = None
    in_indented = False
    prev_blank = True
    for no, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            else:
                out.append((no, line))
            prev_blank = False
            continue
        m = re.match(r"^\s*(```+|~~~+)", line)
        if m:
            fence = m.group(1)
            in_indented = False
            continue
        if line.startswith("    ") and stripped and (prev_blank or in_indented):
            in_indented = True
            out.append((no, line))
        elif stripped:
            in_indented = False
        prev_blank = not stripped
    return out


def command_key(line: str) -> str:
    """A README command line without its comment, its words separated by one space."""
    return " ".join(shlex.split(line, comments=True))


def readme_commands(text: str | None = None) -> dict[str, int]:
    """README command key -> the first line it is on."""
    text = README.read_text(encoding="utf-8") if text is None else text
    found: dict[str, int] = {}
    for no, line in readme_code_lines(text):
        if line.strip().startswith("deployinc ") or line.strip() == "deployinc":
            found.setdefault(command_key(line.strip()), no)
    return found


def expand(key: str) -> list[list[list[str]]]:
    """The runs a README command stands for: each a list of commands (``&&``), each a list of words; ``a|b|c``
    inside a word gives one run per alternative."""
    words = shlex.split(key)
    runs: list[list[list[str]]] = []
    alternatives = [w.split("|") if "|" in w and w != "|" else [w] for w in words]
    for choice in itertools.product(*alternatives):
        cmds: list[list[str]] = [[]]
        for w in choice:
            if w == "&&":
                cmds.append([])
            else:
                cmds[-1].append(w)
        runs.append(cmds)
    return runs


# stand-ins ----------------------------------------------------------------------------------------------------------

NETS = '''
from torch import nn


def build_model(num_classes=10):
    """A small classifier, as a user's package would hold one."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes),
    )


build = build_model
'''


class StandIns:
    """Small files under the names README's commands use, each made once per session (on first use) and copied
    into every folder that needs it."""

    def __init__(self, root: Path):
        self.root = root
        self.made: dict[str, Path] = {}

    def get(self, what: str) -> Path:
        if what not in self.made:
            self.made[what] = getattr(self, "_" + re.sub(r"\W", "_", what))()
        return self.made[what]

    def place(self, files: tuple[tuple[str, str], ...], folder: Path) -> None:
        for name, what in files:
            src = self.get(what)
            if src.is_dir():
                shutil.copytree(src, folder / name)
            else:
                shutil.copy(src, folder / name)

    # the makers: one per stand-in
    def _mypkg(self) -> Path:
        d = self.root / "mypkg"
        d.mkdir()
        (d / "__init__.py").write_text("")
        (d / "nets.py").write_text(NETS)
        return d

    def _state(self):  # noqa: ANN202
        import importlib.util

        import torch

        spec = importlib.util.spec_from_file_location("_readme_nets", self.get("mypkg") / "nets.py")
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        torch.manual_seed(0)
        return mod.build_model().state_dict()

    def _ckpt_pt(self) -> Path:
        import torch

        p = self.root / "ckpt.pt"
        torch.save(self._state(), p)
        return p

    def _ckpt_safetensors(self) -> Path:
        from safetensors.torch import save_file

        p = self.root / "ckpt.safetensors"
        save_file(self._state(), str(p))
        return p

    def _export(self, name: str, spec: str, **kw) -> Path:  # noqa: ANN003
        from deployinc.export import export_pipeline

        out = self.root / name
        export_pipeline(spec, out=out, exporter="torchscript", threads=2, **kw)
        return out

    def _model_onnx(self) -> Path:
        """A deployinc export of a small built-in model (verify rebuilds a registry model from the file alone)."""
        return self._export("model.onnx", "depthwise_cifar", input_shape=(1, 3, 16, 16))

    def _mypkg_onnx(self) -> Path:
        """A deployinc export of ``mypkg.nets:build`` with ckpt.pt's weights."""
        folder = self.get("mypkg").parent
        ckpt = self.get("ckpt.pt")
        before, cwd = set(sys.modules), os.getcwd()
        os.chdir(folder)  # a user's package is found in the current folder
        try:
            return self._export("mypkg.onnx", "mypkg.nets:build", weights=str(ckpt), input_shape=(1, 3, 16, 16))
        finally:
            os.chdir(cwd)
            for name in set(sys.modules) - before:
                if name == "mypkg" or name.startswith("mypkg."):
                    del sys.modules[name]

    def _model_fp16_onnx(self) -> Path:
        import onnx

        from deployinc.io import save_onnx
        from deployinc.precision.fp16 import convert_to_fp16

        out = self.root / "model.fp16.onnx"
        save_onnx(convert_to_fp16(onnx.load(str(self.get("model.onnx")))).model, out)
        return out

    def _images(self, name: str, n: int, size: int) -> Path:
        import numpy as np
        from PIL import Image

        from deployinc.core.images import natural_images

        d = self.root / name
        d.mkdir()
        for i, a in enumerate(natural_images(n, (3, size, size), seed=len(name))):
            Image.fromarray((a.transpose(1, 2, 0) * 255).astype(np.uint8)).save(d / f"img{i:03d}.png")
        return d

    def _calib(self) -> Path:
        return self._images("calib", 32, 16)  # entropy and percentile calibration need 16 images or more

    def _heldout(self) -> Path:
        return self._images("heldout", 8, 32)

    def _inception_cifar_pt(self) -> Path:
        import torch

        from deployinc.models.registry import create_model

        torch.manual_seed(0)
        p = self.root / "inception_cifar.pt"
        torch.save(create_model("inception_cifar").state_dict(), p)
        return p


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> StandIns:
    return StandIns(tmp_path_factory.mktemp("readme-standins"))


# running ------------------------------------------------------------------------------------------------------------


def run_as_written(words: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One README command, ``deployinc`` replaced by this interpreter's ``-m deployinc``, with ``~`` expanded."""
    assert words[0] == "deployinc", words
    # -P (Python 3.11+): the current folder is not put on sys.path, as for the ``deployinc`` console script
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    argv = [sys.executable, *safe_path, "-m", "deployinc", *(os.path.expanduser(w) for w in words[1:])]
    try:
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(words)} ran past {TIMEOUT_S} s\n{exc.stdout or ''}\n{exc.stderr or ''}")


def parse_as_written(words: list[str]) -> None:
    """Parse a command with the CLI itself (command name, options, values and their checks), running nothing."""
    import click

    from deployinc.cli.main import cli

    args = words[1:]
    if not args or args[0].startswith("-"):
        cli.make_context("deployinc", list(args)).close()
        return
    command = cli.get_command(click.Context(cli), args[0])
    assert command is not None, f"README names no command of deployinc: {' '.join(words)}"
    with click.Context(cli, info_name="deployinc") as parent:
        command.make_context(args[0], list(args[1:]), parent=parent).close()


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a README command: caches in the test's folder, not the user's."""
    env = dict(os.environ)
    env.update(DEPLOYINC_CACHE_DIR=str(home / "cache"), XDG_CACHE_HOME=str(home / "xdg-cache"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("DEPLOYINC_DEBUG", None)
    return env


def _cases() -> list[object]:
    cases = []
    for key, line in readme_commands().items():
        entry = TABLE.get(key)
        marks = [pytest.mark.xfail(strict=True, reason=entry.reason)] if isinstance(entry, XFail) else []
        if isinstance(entry, Run) and entry.slow:
            marks.append(pytest.mark.slow)
        cases.append(pytest.param(key, id=f"L{line}:{key[len('deployinc '):][:60]}", marks=marks))
    return cases


@pytest.mark.parametrize("key", _cases())
def test_readme_command(key: str, standins: StandIns, tmp_path: Path) -> None:
    entry = TABLE.get(key)
    if entry is None:
        pytest.skip("not in TABLE: test_every_readme_command_is_accounted_for fails for it")
    runs = expand(key)
    for cmds in runs:
        for words in cmds:
            parse_as_written(words)
    if isinstance(entry, Skip):
        pytest.skip(entry.reason)
    files = entry.files
    env = clean_env(tmp_path)
    for i, cmds in enumerate(runs):
        folder = tmp_path / f"run{i}"
        folder.mkdir()
        standins.place(files, folder)
        for words in cmds:
            r = run_as_written(words, folder, env)
            shown = " ".join(words)
            assert r.returncode == 0, f"{shown} (in {folder}) exited {r.returncode}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
            assert "Traceback" not in r.stderr, r.stderr
        if isinstance(entry, Run):
            for name in entry.creates:
                assert (folder / name).exists(), f"{' && '.join(' '.join(c) for c in cmds)} did not write {name}"
            for needle in entry.output:
                assert needle in r.stdout + r.stderr, f"{shown}: no {needle!r} in its output\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


def test_every_readme_command_is_accounted_for() -> None:
    found = readme_commands()
    assert len(found) >= 20, f"the README parser found only {len(found)} command lines; did the README's layout change?"
    missing = [f"README.md:{line}: {key}" for key, line in found.items() if key not in TABLE]
    stale = [key for key in TABLE if key not in found]
    assert not missing, "README command lines this test neither runs nor lists (add them to TABLE):\n" + "\n".join(missing)
    assert not stale, "TABLE entries README no longer has (remove or update them):\n" + "\n".join(stale)


def test_parser() -> None:
    text = "\n".join(
        [
            "Intro `deployinc inline` is prose.",
            "",
            "    deployinc a --x 1        # a comment",
            "    deployinc b && deployinc c",
            "",
            "```bash",
            "deployinc d --t p|q",
            "```",
            "",
            "- a list item",
            "  deployinc not-code",
        ]
    )
    assert readme_commands(text) == {"deployinc a --x 1": 3, "deployinc b && deployinc c": 4, "deployinc d --t p|q": 7}
    assert expand("deployinc b && deployinc c") == [[["deployinc", "b"], ["deployinc", "c"]]]
    assert expand("deployinc d --t p|q") == [[["deployinc", "d", "--t", "p"]], [["deployinc", "d", "--t", "q"]]]


def test_shell_completion_lines() -> None:
    """README's shell-completion lines print their shell's script, and the bash one defines the completion."""
    text = README.read_text(encoding="utf-8")
    shells = sorted(set(re.findall(r"_DEPLOYINC_COMPLETE=(\w+)_source deployinc", text)))
    assert shells == ["bash", "fish", "zsh"], shells
    for shell in shells:
        env = dict(os.environ, _DEPLOYINC_COMPLETE=f"{shell}_source")
        r = subprocess.run([sys.executable, "-m", "deployinc"], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "_DEPLOYINC_COMPLETE" in r.stdout and "deployinc" in r.stdout, (shell, r.stderr)
        if shell == "bash" and shutil.which("bash"):
            check = subprocess.run(["bash", "-c", r.stdout + "\ncomplete -p deployinc"], capture_output=True, text=True, timeout=30)
            assert check.returncode == 0 and "_deployinc_completion" in check.stdout, check.stderr
