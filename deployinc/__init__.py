"""deployinc: take PyTorch image classifiers to production.

The public API, one entry point per stage of the data flow::

    model spec ─► load_model ─► prepare ─► export_onnx ─► simplify ─► save_onnx
                                                    └─► verify / benchmark (runners)

    >>> import deployinc
    >>> loaded = deployinc.load_model("googlenet")                 # seeded random init, BN recalibrated
    >>> prepared, report = deployinc.prepare(loaded.module, loaded.input_shape)
    >>> result = deployinc.export_pipeline("googlenet", out="googlenet.onnx")   # the whole `deployinc export`

Names are imported lazily so that ``import deployinc`` (and ``deployinc --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import (
    BackendUnavailable,
    BadInputError,
    CheckFailed,
    ConfigError,
    DeployincError,
    ExportError,
    ModelSpecError,
    OnnxFileError,
    OutputExistsError,
    WeightsError,
)

_LAZY = {
    # models
    "list_models": "deployinc.models.registry",
    "create_model": "deployinc.models.registry",
    "get_model_info": "deployinc.models.registry",
    "register_model": "deployinc.models.registry",
    "load_model": "deployinc.models.loading",
    "load_from_provenance": "deployinc.models.loading",
    # stages
    "prepare": "deployinc.prepare",
    "export_onnx": "deployinc.export",
    "export_pipeline": "deployinc.export",
    "simplify": "deployinc.simplify",
    "benchmark_model": "deployinc.api",
    # config, metadata, files
    "ExportConfig": "deployinc.config",
    "load_config": "deployinc.config",
    "Provenance": "deployinc.metadata",
    "read_provenance": "deployinc.metadata",
    "load_onnx": "deployinc.io",
    "save_onnx": "deployinc.io",
    "load_checkpoint": "deployinc.io",
    # parity
    "compare_outputs": "deployinc.core.metrics",
    "Tolerance": "deployinc.core.metrics",
    "natural_images": "deployinc.core.images",
}

__all__ = [
    "BackendUnavailable",
    "BadInputError",
    "CheckFailed",
    "ConfigError",
    "DeployincError",
    "ExportError",
    "ModelSpecError",
    "OnnxFileError",
    "OutputExistsError",
    "WeightsError",
    "__version__",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deployinc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
