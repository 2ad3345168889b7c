"""Per-model export configuration: a typed dataclass read from ``export_configs/<model>.toml``.

A config file has four tables, every key optional except ``model.name``::

    [model]
    name = "googlenet"          # registry name, timm/<name>, or package.module:function
    weights = "none"            # none | DEFAULT | IMAGENET1K_V1 | path/to/file.pth | .safetensors
    num_classes = 1000
    seed = 0

    [input]
    shape = [1, 3, 224, 224]
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]

    [export]
    opset = 17
    exporter = "dynamo"         # or torchscript
    dynamic_batch = true
    simplifier = "onnxsim"      # onnxsim | onnxslim | none
    skip_passes = []            # prepare passes to skip by name
    aux_heads = []              # extra auxiliary heads to drop (known ones are found automatically)

    [parity]                    # tolerance overrides for deployinc verify
    max_rel = 1e-4
    min_cosine = 0.99999

CLI flags override the file. Unknown tables or keys and ill-typed values are errors that name the key, and so
are values out of range (:mod:`deployinc.core.limits`): NaN or infinity anywhere, an empty ``mean``/``std``, a std <= 0,
a shape that is not four positive integers (H, W <= 16384), a ``num_classes`` outside 1..1000000, a ``seed``
outside 0..2**32-1, an ``opset`` outside 13..21, and budgets outside their range (``max_rel``/``max_abs`` >= 0,
``min_cosine`` in [-1, 1], ``min_top1``/``min_top5`` in [0, 1]).
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .core import limits
from .errors import BadInputError, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXPORTERS = ("dynamo", "torchscript")
SIMPLIFIERS = ("onnxsim", "onnxslim", "none")
CONFIG_DIR = Path(__file__).parent / "export_configs"


@dataclass
class ExportConfig:
    """Everything ``deployinc export`` needs, with defaults; ``None`` means "from the model's registry entry"."""

    model: str
    weights: str = "none"
    num_classes: int | None = None
    seed: int = 0
    input_shape: tuple[int, ...] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    opset: int = 17
    exporter: str = "dynamo"
    dynamic_batch: bool = True
    simplifier: str = "onnxsim"
    skip_passes: tuple[str, ...] = ()
    aux_heads: tuple[str, ...] = ()
    tolerances: dict[str, float] = field(default_factory=dict)
    source: str | None = None  # the config file this came from

    def with_overrides(self, **kw: Any) -> ExportConfig:
        """A copy with the non-``None`` values of ``kw`` applied (CLI flags over the file)."""
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    @property
    def name(self) -> str:
        """A file-name-friendly name of the model (``mypkg.nets:build`` -> ``build``, ``timm/x`` -> ``x``)."""
        return self.model.split(":")[-1].split("/")[-1].replace(".", "_")


# table -> key -> (ExportConfig field, type, validator or None)
_SCHEMA: dict[str, dict[str, tuple[str, type | tuple[type, ...]]]] = {
    "model": {"name": ("model", str), "weights": ("weights", str), "num_classes": ("num_classes", int), "seed": ("seed", int)},
    "input": {"shape": ("input_shape", list), "mean": ("mean", list), "std": ("std", list)},
    "export": {
        "opset": ("opset", int),
        "exporter": ("exporter", str),
        "dynamic_batch": ("dynamic_batch", bool),
        "simplifier": ("simplifier", str),
        "skip_passes": ("skip_passes", list),
        "aux_heads": ("aux_heads", list),
    },
    "parity": {
        "max_rel": ("tolerances", (int, float)),
        "max_abs": ("tolerances", (int, float)),
        "min_cosine": ("tolerances", (int, float)),
        "min_top1": ("tolerances", (int, float)),
        "min_top5": ("tolerances", (int, float)),
    },
}


def _unknown(kind: str, name: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known {kind}s: {', '.join(known)}"
    return ConfigError(f"{where}: unknown {kind} {name!r}", hint=hint)


def _typename(t: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}
    if isinstance(t, tuple):
        return "a number"
    return names.get(t, t.__name__)


def config_from_dict(data: dict[str, Any], where: str = "<config>") -> ExportConfig:
    """Validate a parsed TOML document and build an :class:`ExportConfig`.

    Raises:
        ConfigError: Unknown table or key, wrong type, or invalid value; the message names ``table.key``.
    """
    values: dict[str, Any] = {"tolerances": {}}
    for table, content in data.items():
        if table not in _SCHEMA:
            raise _unknown("table", table, list(_SCHEMA), where)
        if not isinstance(content, dict):
            raise ConfigError(f"{where}: {table} must be a table ([{table}])", hint="see export_configs/googlenet.toml")
        for key, value in content.items():
            if key not in _SCHEMA[table]:
                raise _unknown("key", f"{table}.{key}", [f"{table}.{k}" for k in _SCHEMA[table]], where)
            target, typ = _SCHEMA[table][key]
            ok = isinstance(value, typ) and not (typ in (int, (int, float)) and isinstance(value, bool))
            if not ok:
                raise ConfigError(
                    f"{where}: {table}.{key} must be {_typename(typ)}, got {value!r}",
                    hint="fix the value in the config file",
                )
            if target == "tolerances":
                values["tolerances"][key] = float(value)
            else:
                values[target] = value
    if "model" not in values:
        raise ConfigError(f"{where}: model.name is missing", hint='add [model] name = "googlenet" (or your module:function)')
    cfg = ExportConfig(**values, source=where)
    return validate(cfg, where)


def _as_tuple(values: list[Any], key: str, where: str, kind: type, length: int | None = None) -> tuple[Any, ...]:
    def fits(v: Any) -> bool:
        if isinstance(v, bool):
            return False
        return isinstance(v, kind) or (kind is float and isinstance(v, int))

    examples = {"input.shape": "[1, 3, 224, 224] (N, C, H, W)", "input.mean": "[0.485, 0.456, 0.406]", "input.std": "[0.229, 0.224, 0.225]"}
    if not all(fits(v) for v in values):
        kinds = {int: "integers", float: "numbers", str: "strings"}.get(kind, f"{kind.__name__}s")
        raise ConfigError(
            f"{where}: {key} must be a list of {kinds}, got {values!r}",
            hint=f"e.g. {key.split('.')[-1]} = {examples[key]}" if key in examples else "fix the value",
        )
    if length is not None and len(values) != length:
        raise ConfigError(f"{where}: {key} must have {length} values, got {len(values)}", hint="fix the value")
    return tuple(kind(v) for v in values)


def _limit(where: str, check: Any, *args: Any) -> Any:
    """Run a :mod:`deployinc.core.limits` check, re-raising its error as a :class:`ConfigError` (same message and hint)."""
    try:
        return check(*args)
    except BadInputError as exc:
        raise ConfigError(exc.message, hint=exc.hint) from None


def validate(cfg: ExportConfig, where: str = "<config>") -> ExportConfig:
    """Check value ranges (finite, within :mod:`deployinc.core.limits`) and normalise list fields to tuples.

    Flags reach this too (``resolve_config`` applies them first); the CLI has checked them by then, so a failure
    here names the config key.
    """
    if cfg.exporter not in EXPORTERS:
        raise ConfigError(f"{where}: export.exporter {cfg.exporter!r} is unknown", hint=f"use one of {', '.join(EXPORTERS)}")
    if cfg.simplifier not in SIMPLIFIERS:
        raise ConfigError(
            f"{where}: export.simplifier {cfg.simplifier!r} is unknown", hint=f"use one of {', '.join(SIMPLIFIERS)}"
        )
    changes: dict[str, Any] = {}
    shape = cfg.input_shape
    if isinstance(shape, list):
        shape = _as_tuple(shape, "input.shape", where, int)
    if shape is not None:
        changes["input_shape"] = _limit(where, limits.check_shape, f"{where}: input.shape", tuple(shape), "[1, 3, 224, 224]")
    channels = changes["input_shape"][1] if shape is not None else None
    for key, value, positive in (("mean", cfg.mean, False), ("std", cfg.std, True)):
        if value is None:
            continue
        if isinstance(value, list):
            value = _as_tuple(value, f"input.{key}", where, float)
        ex = "[0.229, 0.224, 0.225]" if positive else "[0.485, 0.456, 0.406]"
        values = _limit(where, lambda n, v: limits.check_floats(n, v, positive=positive, example=ex), f"{where}: input.{key}", tuple(value))
        if channels is not None and len(values) not in (1, channels):
            raise ConfigError(
                f"{where}: input.{key} has {len(values)} values for {channels} input channels",
                hint=f"give one value per channel ({channels}), or one for all",
            )
        changes[key] = values
    if isinstance(cfg.skip_passes, list):
        changes["skip_passes"] = _as_tuple(cfg.skip_passes, "export.skip_passes", where, str)
    if isinstance(cfg.aux_heads, list):
        changes["aux_heads"] = _as_tuple(cfg.aux_heads, "export.aux_heads", where, str)
    if cfg.num_classes is not None:
        _limit(where, limits.check_num_classes, f"{where}: model.num_classes", cfg.num_classes)
    _limit(where, limits.check_seed, f"{where}: model.seed", cfg.seed)
    _limit(where, limits.check_opset, f"{where}: export.opset", cfg.opset)
    for key, value in cfg.tolerances.items():
        if key in limits.TOLERANCE_RANGES:
            _limit(where, limits.check_tolerance, f"{where}: parity.{key}", key, value)
    return replace(cfg, **changes) if changes else cfg


def load_config(path: str | os.PathLike[str]) -> ExportConfig:
    """Read and validate an export config file.

    Raises:
        ConfigError: Missing file, TOML syntax error, or invalid content.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", hint=f"bundled configs: {', '.join(bundled_configs())}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})", hint="fix the syntax") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file", hint="give a .toml export config") from exc
    return config_from_dict(data, where=str(path))


def bundled_configs() -> list[str]:
    """Names of the configs that ship with deployinc."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def bundled_config_path(name: str) -> Path | None:
    """The bundled config of a model name, if there is one."""
    p = CONFIG_DIR / f"{name}.toml"
    return p if p.is_file() else None


def config_field_names() -> list[str]:
    """Field names of :class:`ExportConfig` (for docs and tests)."""
    return [f.name for f in fields(ExportConfig)]
