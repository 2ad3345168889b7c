"""Checks besides output parity: does the preprocessing recorded in the file fit the model?

A wrong mean/std in the metadata does not change what the ONNX graph computes, so parity alone can miss it, yet
every image a deployer feeds will be normalised wrongly. Two signals:

- **the source**: the mean/std of the export config the file names (or the registry's, for a registered model
  whose config sets none) against the metadata's;
- **the model's own expectation**: the first BatchNorm's running statistics record what its input looked like
  during training (or recalibration). Inputs normalised with the metadata's mean/std should give that BN inputs
  whose per-channel means and spreads match its running statistics; the score is the mean over channels of
  ``|batch mean - running mean| / running std`` plus that of ``|ln(batch std / running std)|`` (0 for a perfect
  match; a normalisation off by a factor 2 in std adds about 0.7). When the two candidate normalisations differ, the
  one with the lower score is what the model was trained with.

A model whose BatchNorm statistics were recalibrated from the metadata's own mean/std cannot testify (the second
signal is skipped); there a mismatch shows as a parity failure from the first layer on, because the rebuilt
reference recalibrates differently from the exported model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import load_config
from ..core.images import normalize
from ..models.registry import get_model_info


@dataclass
class Check:
    """One named check: ``ok``, ``warn`` or ``fail``, with the message and the numbers behind it."""

    name: str
    status: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return True
    a, b = list(a), list(b)
    return len(a) == len(b) and bool(np.allclose(a, b, atol=1e-6, rtol=1e-5))


def expected_normalisation(prov: Any) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None, str | None]:
    """mean, std and where they come from: the export config named in the provenance, else the registry."""
    mean = std = None
    source = None
    cfg_path = getattr(prov, "config", None)
    if cfg_path:
        try:
            if Path(cfg_path).is_file():
                cfg = load_config(cfg_path)
                if cfg.model == prov.model_spec:
                    mean, std = cfg.mean, cfg.std
                    source = f"export config {cfg_path}"
        except Exception:  # noqa: BLE001 - an unreadable config is no evidence
            pass
    if mean is None or std is None:
        try:
            if ":" not in prov.model_spec:
                info = get_model_info(prov.model_spec)
                mean = tuple(mean) if mean is not None else tuple(info.mean)
                std = tuple(std) if std is not None else tuple(info.std)
                source = (source + " and " if source else "") + f"the model registry ({prov.model_spec})"
        except Exception:  # noqa: BLE001 - a user model has no registry entry
            pass
    return (tuple(mean) if mean is not None else None, tuple(std) if std is not None else None, source)


def first_bn_score(module: Any, images01: np.ndarray, mean: Any, std: Any) -> tuple[float, str] | None:
    """Mean |z| of the first BatchNorm's input channel means, for raw images in [0, 1] normalised with mean/std."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    first: list[Any] = []
    names = {id(m): n for n, m in module.named_modules()}

    def pre(mod: Any, inputs: tuple[Any, ...]) -> None:
        if not first and inputs and isinstance(inputs[0], torch.Tensor):
            first.append((names[id(mod)], inputs[0].detach().double(), mod))
            raise _Stop

    handles = [m.register_forward_pre_hook(pre) for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not handles:
        return None
    c = images01.shape[1]
    x = normalize(images01, list(mean)[:c], list(std)[:c])
    try:
        with torch.inference_mode():
            module(torch.from_numpy(x))
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if not first:
        return None
    name, t, bn = first[0]
    dims = [d for d in range(t.dim()) if d != 1]
    m = t.mean(dim=dims).cpu().numpy()
    v = t.var(dim=dims).cpu().numpy()
    rm = bn.running_mean.detach().double().cpu().numpy()
    rv = bn.running_var.detach().double().cpu().numpy() + bn.eps
    shift = np.abs(m - rm) / np.sqrt(rv)
    scale = np.abs(0.5 * np.log((v + bn.eps) / rv))
    return float(np.mean(shift) + np.mean(scale)), name


class _Stop(Exception):
    """Stops the forward pass once the first BatchNorm's input is seen."""


def preprocessing(
    prov: Any,
    used_mean: Any,
    used_std: Any,
    module: Any,
    images01: np.ndarray | None,
    recalibrated_from_metadata: bool,
) -> Check:
    """The preprocessing check (see the module docstring)."""
    exp_mean, exp_std, source = expected_normalisation(prov) if prov is not None else (None, None, None)
    details: dict[str, Any] = {
        "metadata_mean": list(prov.mean) if prov is not None else None,
        "metadata_std": list(prov.std) if prov is not None else None,
        "used_mean": list(used_mean) if used_mean is not None else None,
        "used_std": list(used_std) if used_std is not None else None,
        "expected_mean": list(exp_mean) if exp_mean is not None else None,
        "expected_std": list(exp_std) if exp_std is not None else None,
        "expected_source": source,
    }
    differs = source is not None and not (_close(used_mean, exp_mean) and _close(used_std, exp_std))
    score_used = score_exp = None
    bn_name = None
    if module is not None and images01 is not None and not recalibrated_from_metadata:
        try:
            r = first_bn_score(module, images01, used_mean, used_std)
            if r is not None:
                score_used, bn_name = r
                if differs:
                    r2 = first_bn_score(module, images01, exp_mean, exp_std)
                    score_exp = r2[0] if r2 else None
        except Exception as exc:  # noqa: BLE001 - a model that cannot run partially is no evidence either way
            details["bn_check_error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
    details.update({"first_bn": bn_name, "bn_score_used": score_used, "bn_score_expected": score_exp})
    used = f"mean {_fmt(used_mean)} std {_fmt(used_std)}"
    if differs:
        exp = f"mean {_fmt(exp_mean)} std {_fmt(exp_std)}"
        if score_used is not None and score_exp is not None and score_used > 2 * score_exp + 0.25:
            return Check(
                "preprocessing",
                "fail",
                f"preprocessing mismatch: the metadata normalises with {used}, {source} says {exp}, and the first "
                f"BatchNorm ({bn_name}) agrees with the latter (input-statistics score {score_used:.2f} vs "
                f"{score_exp:.2f}, lower is better)",
                details,
            )
        return Check(
            "preprocessing",
            "warn",
            f"preprocessing mismatch? the metadata normalises with {used}, but {source} says {exp}",
            details,
        )
    if score_used is not None and score_used > 1.0:
        return Check(
            "preprocessing",
            "warn",
            f"inputs normalised with {used} do not look like what the first BatchNorm ({bn_name}) saw in training "
            f"(input-statistics score {score_used:.2f}; about 1 or less is typical)",
            details,
        )
    msg = f"normalisation {used}"
    if source:
        msg += f" agrees with {source}"
    if score_used is not None:
        msg += f"; first BatchNorm input-statistics score {score_used:.2f}"
    return Check("preprocessing", "ok", msg, details)


def _fmt(v: Any) -> str:
    if v is None:
        return "?"
    v = list(v)
    if len(v) > 6 and len(set(v)) == 1:
        return f"[{v[0]:.4g}] x {len(v)}"
    return "[" + ", ".join(f"{x:.4g}" for x in v[:6]) + (f", ... ({len(v)} values)" if len(v) > 6 else "") + "]"
