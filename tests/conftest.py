"""Shared fixtures: a tiny user model package written to a temp folder, a CLI runner, thread settings."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

TINYNETS = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class Tiny(nn.Module):
        """Conv+BN (with and without bias), a grouped and a depthwise conv, dropout, an optional aux head."""

        def __init__(self, num_classes=10, aux=False):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=2)
            self.gbn = nn.BatchNorm2d(16)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
            self.dwbn = nn.BatchNorm2d(16)
            self.pw = nn.Conv2d(16, 24, 1)
            self.pwbn = nn.BatchNorm2d(24)
            self.drop = nn.Dropout(0.5)
            self.fc = nn.Linear(24, num_classes)
            self.aux_head = nn.Linear(16, num_classes) if aux else None

        def forward(self, x):
            x = self.stem(x)                                  # N x 8 x H x W
            x = torch.relu(self.gbn(self.grouped(x)))         # N x 16 x H x W
            y = torch.relu(self.dwbn(self.dw(x)))
            z = torch.relu(self.pwbn(self.pw(y)))             # N x 24 x H x W
            out = self.fc(self.drop(z.mean((2, 3))))
            if self.aux_head is not None:
                return out, self.aux_head(y.mean((2, 3)))
            return out


    def build(num_classes=10):
        return Tiny(num_classes)


    def build_aux(num_classes=10):
        return Tiny(num_classes, aux=True)


    def build_trained(num_classes=10):
        """A stand-in for a user's trained model: BatchNorm statistics estimated (a cumulative average) on
        ImageNet-normalised natural-statistics images, as training leaves them; the factory returns it as it is."""
        from deployinc.core.images import natural_images

        torch.manual_seed(0)
        m = Tiny(num_classes).train()
        bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
        for b in bns:
            b.reset_running_stats()
            b.momentum = None
        x = torch.from_numpy(natural_images(64, (3, 32, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), seed=11))
        with torch.no_grad():
            for chunk in x.split(16):
                m(chunk)
        for b in bns:
            b.momentum = 0.1
        return m.eval()


    def hardswish_net(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Hardswish(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, num_classes))


    def only_32(num_classes=10):
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, num_classes))


    def not_a_module():
        return 42


    def broken():
        raise RuntimeError("factory exploded")
    '''
)


@pytest.fixture(scope="session")
def tinynets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("userpkg")
    (d / "tinynets.py").write_text(TINYNETS)
    sys.path.insert(0, str(d))
    return d


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory):
    """One private cache for the whole session (BatchNorm statistics, deploy state): the suite never writes the
    user's ~/.cache, and a model exported by one test is not recalibrated again by the next that verifies it.
    Tests that need an empty cache set ``DEPLOYINC_CACHE_DIR`` themselves."""
    import os

    old = os.environ.get("DEPLOYINC_CACHE_DIR")
    os.environ["DEPLOYINC_CACHE_DIR"] = str(tmp_path_factory.getbasetemp() / "session-cache")
    yield
    if old is None:
        os.environ.pop("DEPLOYINC_CACHE_DIR", None)
    else:
        os.environ["DEPLOYINC_CACHE_DIR"] = old


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    import torch

    torch.set_num_threads(2)


@pytest.fixture
def cli_runner():
    from click.testing import CliRunner

    return CliRunner()


def invoke(runner, args: list[str]):
    """Run the deployinc CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from deployinc.cli.main import cli

    return runner.invoke(cli, args, catch_exceptions=False)


def files_in(path: Path) -> list[str]:
    """Every file under ``path`` (hidden temporaries included), relative, sorted."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


_ZOO_CACHE: dict[tuple[str, str], Path] = {}


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture(scope="session")
def zoo_onnx(zoo_dir: Path):
    """``zoo_onnx(name, exporter="dynamo") -> Path``: export a bundled-config model once per session."""
    from deployinc.export import export_pipeline

    def get(name: str, exporter: str = "dynamo") -> Path:
        key = (name, exporter)
        if key not in _ZOO_CACHE:
            out = zoo_dir / f"{name}-{exporter}.onnx"
            export_pipeline(name, out=out, exporter=exporter, threads=2)
            _ZOO_CACHE[key] = out
        return _ZOO_CACHE[key]

    return get
