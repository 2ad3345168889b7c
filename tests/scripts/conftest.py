"""The benchmark drivers under scripts/, imported as modules (they are not a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str):
    """Import ``scripts/<name>.py`` under the module name ``name``, registered in ``sys.modules`` (its dataclasses
    look their module up there) until :func:`unload_script`."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def sz():
    yield load_script("sweep_zoo")
    sys.modules.pop("sweep_zoo", None)


@pytest.fixture(scope="module")
def bi():
    yield load_script("bench_int8")
    sys.modules.pop("bench_int8", None)


@pytest.fixture(scope="module")
def dz():
    yield load_script("deploy_zoo")
    sys.modules.pop("deploy_zoo", None)


@pytest.fixture(scope="module")
def dfold():
    yield load_script("digits_folder")
    sys.modules.pop("digits_folder", None)


@pytest.fixture(scope="module")
def isa():
    yield load_script("int8_openvino_isa")
    sys.modules.pop("int8_openvino_isa", None)


@pytest.fixture(scope="module")
def sens():
    yield load_script("int8_sensitivity")
    sys.modules.pop("int8_sensitivity", None)
