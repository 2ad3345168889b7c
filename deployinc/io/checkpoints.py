"""Checkpoints and hashes: state dicts load only through ``torch.load(weights_only=True)`` (explicit, so that
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off) or safetensors; there is no fallback to unsafe loading."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from .atomic import atomic_write_bytes

# Hashing -------------------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


# Checkpoints ---------------------------------------------------------------------------------------------------


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            # Checkpoints saved from DataParallel / torch.compile carry a prefix on every key.
            for prefix in ("module.", "_orig_mod."):
                if all(k.startswith(prefix) for k in tensors):
                    tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
            return tensors
    raise WeightsError(
        f"{path} is not a state dict (found {type(obj).__name__} with no tensors)",
        hint="save weights with torch.save(model.state_dict(), path), or a dict holding 'state_dict' or 'model'",
    )


#: Prefixes of pickled classes that are models (torch.nn modules, torchvision/timm models, a script's own class).
_MODEL_GLOBALS = ("torch.nn.modules.", "torchvision.models.", "timm.models.", "timm.layers.", "__main__.")
#: Tensors named in a non-finite-weights error before "and N more".
NONFINITE_SHOWN = 5


def refused_pickle_error(path: Path, text: str) -> WeightsError:
    """The error for a file the weights-only unpickler refused: what it pickles (a whole model object, or another
    Python object), and how to save what deployinc loads. torch's own text ("you have two options...") is not
    quoted: its options are to load the file unsafely, which deployinc never does."""
    import re

    m = re.search(r"GLOBAL ([\w.]+)", text)
    found = m.group(1) if m else None
    is_model = found is not None and (
        found.startswith(_MODEL_GLOBALS) or found.rsplit(".", 1)[-1] in ("Module", "Sequential")
    )
    if is_model or (found is None and ("nn.modules" in text or "__main__" in text)):
        what = f" ({found})" if found else ""
        return WeightsError(
            f"weights file {path} pickles a whole model object{what}, not a state dict, and was refused by the "
            "weights-only loader (deployinc loads tensors only, never pickled Python objects)",
            hint="save the weights as a state dict where the model is built: torch.save(model.state_dict(), path) "
            "(or safetensors' save_file(model.state_dict(), path)), and pass that file to --weights",
        )
    what = f" ({found})" if found else ""
    return WeightsError(
        f"weights file {path} was refused by the weights-only loader: it pickles a Python object{what}, not only "
        "tensors (a whole model object, or another class beside the weights)",
        hint="if it is a whole model, save its state dict instead: torch.save(model.state_dict(), path); otherwise "
        "keep tensors and plain values only, e.g. torch.save({'state_dict': model.state_dict(), 'epoch': 3}, path)",
    )


def nonfinite_tensors(sd: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(name, NaN count, Inf count)`` of every floating-point tensor of ``sd`` holding NaN or infinity."""
    import torch

    bad = []
    for name, t in sd.items():
        if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_complex()) or t.numel() == 0:
            continue
        if bool(torch.isfinite(t).all()):
            continue
        bad.append((name, int(torch.isnan(t).sum()), int(torch.isinf(t).sum())))
    return bad


def check_finite(sd: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Refuse a state dict with NaN or infinite values, naming the tensors (the checkpoint is at fault: a run that
    diverged, or a damaged file; exported, every output would be NaN).

    Raises:
        WeightsError: ``error: weights ckpt.pt hold non-finite values: layer1.0.conv1.weight (3 NaN), ...``
    """
    bad = nonfinite_tensors(sd)
    if not bad:
        return
    raise WeightsError(
        f"weights {path} hold non-finite values: {nonfinite_summary(bad)}",
        hint="the checkpoint itself is broken (a training run that diverged, or a damaged file): "
        "use an earlier checkpoint, or train again (lower --lr); a model with NaN/Inf weights outputs NaN",
    )


def nonfinite_summary(bad: list[tuple[str, int, int]]) -> str:
    """``layer1.0.conv1.weight (3 NaN), fc.bias (1 Inf)`` for the first few of :func:`nonfinite_tensors`."""

    def counts(nan: int, inf: int) -> str:
        return ", ".join(p for p in (f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else "") if p)

    shown = ", ".join(f"{n} ({counts(nan, inf)})" for n, nan, inf in bad[:NONFINITE_SHOWN])
    return shown + (f" and {len(bad) - NONFINITE_SHOWN} more tensor(s)" if len(bad) > NONFINITE_SHOWN else "")


def load_checkpoint(path: str | os.PathLike[str], *, with_extra: bool = False) -> Any:
    """Load a state dict from ``.pt``/``.pth`` (weights-only unpickling) or ``.safetensors``.

    Args:
        path: Checkpoint file.
        with_extra: Return ``(state_dict, raw_object)`` so callers can read other entries (training records).

    Raises:
        WeightsError: Missing, empty, corrupt, refused by the weights-only unpickler (a pickled model object),
            holding no tensors, or holding NaN/infinite values (the tensors are named).
    """
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file {path} does not exist", hint="check the path given to --weights")
    if not path.is_file():
        raise WeightsError(f"weights path {path} is not a file", hint="give the checkpoint file itself")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty", hint="the download or copy was interrupted; fetch it again")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(
                f"weights file {path} is corrupt or not safetensors ({exc})", hint="re-save or re-download it"
            ) from exc
        check_finite(sd, path)
        return (sd, sd) if with_extra else sd

    import pickle
    import zipfile

    import torch

    try:
        # weights_only=True is explicit on purpose: torch then ignores TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "GLOBAL" in text or "Unsupported global" in text or "weights_only" in text.lower():
            raise refused_pickle_error(path, text) from exc
        raise WeightsError(f"weights file {path} is corrupt ({exc})", hint="re-save or re-download it") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"weights file {path} is corrupt or truncated ({first})", hint="re-save or re-download it"
        ) from exc
    sd = _unwrap_state_dict(obj, path)
    check_finite(sd, path)
    return (sd, obj) if with_extra else sd


def save_checkpoint(path: str | os.PathLike[str], obj: dict[str, Any], *, force: bool = False) -> Path:
    """``torch.save`` ``obj`` atomically (tensors and plain Python values only, so it loads weights-only)."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue(), force=force)
