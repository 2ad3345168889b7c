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


def load_checkpoint(path: str | os.PathLike[str], *, with_extra: bool = False) -> Any:
    """Load a state dict from ``.pt``/``.pth`` (weights-only unpickling) or ``.safetensors``.

    Args:
        path: Checkpoint file.
        with_extra: Return ``(state_dict, raw_object)`` so callers can read other entries (training records).

    Raises:
        WeightsError: Missing, empty, corrupt, refused by the weights-only unpickler, or holding no tensors.
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
            hint = "it pickles Python objects, not only tensors; save model.state_dict() instead of the model"
            if "__main__" in text or "nn.modules" in text or "Module" in text:
                hint = "it pickles a whole model class; save model.state_dict() and load that instead"
            first = text.strip().splitlines()[0][:200] if text.strip() else "refused"
            raise WeightsError(
                f"weights file {path} was refused by the weights-only loader: {first}", hint=hint
            ) from exc
        raise WeightsError(f"weights file {path} is corrupt ({exc})", hint="re-save or re-download it") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"weights file {path} is corrupt or truncated ({first})", hint="re-save or re-download it"
        ) from exc
    sd = _unwrap_state_dict(obj, path)
    return (sd, obj) if with_extra else sd


def save_checkpoint(path: str | os.PathLike[str], obj: dict[str, Any], *, force: bool = False) -> Path:
    """``torch.save`` ``obj`` atomically (tensors and plain Python values only, so it loads weights-only)."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue(), force=force)
