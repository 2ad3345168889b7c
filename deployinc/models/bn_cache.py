"""The BatchNorm statistics of random-weight models, cached so that rebuilding a reference is fast.

Rebuilding a randomly initialised model recalibrates its BatchNorm statistics on seeded batches (several seconds
for a GoogLeNet on two CPU cores). Export stores the statistics it computed; verify and bench read them back. Only
BatchNorm buffers are cached, never weights, under ``<cache root>/references`` (private, 0700, see
:mod:`deployinc.core.cache`), keyed by every provenance field that determines them and the torch version. Each
entry carries the sha256 of its content and the key of its model, both checked on read: an altered entry is
rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..core.cache import cache_subdir
from ..io import load_checkpoint, save_checkpoint

#: Provenance fields that determine the rebuilt weights and BatchNorm statistics.
_KEY_FIELDS = (
    "model_spec",
    "weights",
    "weights_sha256",
    "state_sha256",
    "seed",
    "bn_recalibrated",
    "num_classes",
    "input_shape",
    "mean",
    "std",
)


# BatchNorm statistics cache ---------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``<cache root>/references`` (see :mod:`deployinc.core.cache`), created private (0700)."""
    return cache_subdir("references")[0]


def cache_key(prov: Any) -> str:
    """sha256 over the provenance fields that determine the rebuilt statistics, and the torch version."""
    import torch

    d = prov.to_dict() if hasattr(prov, "to_dict") else dict(prov)
    payload = {k: d.get(k) for k in _KEY_FIELDS}
    payload["torch"] = torch.__version__
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _content_sha256(buffers: dict[str, Any]) -> str:
    """sha256 over buffer names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(buffers):
        t = buffers[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _bn_buffers(module: Any) -> dict[str, Any]:
    from torch.nn.modules.batchnorm import _BatchNorm

    out = {}
    for name, m in module.named_modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            for b in ("running_mean", "running_var", "num_batches_tracked"):
                t = getattr(m, b, None)
                if t is not None:
                    out[f"{name}.{b}"] = t.detach().clone()
    return out


def store_bn_stats(prov: Any, module: Any) -> Path | None:
    """Cache the BatchNorm buffers of a model rebuilt (and recalibrated) from ``prov``; None when not written.

    The entry records the sha256 of its own content and the key of the model it belongs to (every provenance
    field that determines the statistics), both checked when it is read back. Export calls this with the model it
    just recalibrated, so that the first verify is fast too.
    """
    if not getattr(prov, "bn_recalibrated", False):
        return None
    try:
        key = cache_key(prov)
        buffers = _bn_buffers(module)
        entry = {"state_dict": buffers, "content_sha256": _content_sha256(buffers), "model_key": key}
        path = cache_dir() / f"{key}.pt"
        save_checkpoint(path, entry, force=True)
        return path
    except Exception:  # noqa: BLE001 - a cache that cannot be written only costs time
        return None


def _copy_buffers(module: Any, values: dict[str, Any]) -> None:
    """Copy cached BatchNorm buffers into ``module`` in place.

    Not through ``load_state_dict``: some models check the state dict's version metadata there (torchvision's
    MNASNet raises on a dict that has none), and these are buffers of modules we just built, not a checkpoint.
    """
    import torch

    buffers = dict(module.named_buffers())
    with torch.no_grad():
        for name, value in values.items():
            buffers[name].copy_(value)


def _load_bn_stats(prov: Any) -> dict[str, Any] | None:
    """The cached buffers for ``prov``, or None when absent, unreadable, for another model, or altered."""
    try:
        key = cache_key(prov)
        path = cache_dir() / f"{key}.pt"
        if not path.is_file() or path.is_symlink():
            return None

        _, raw = load_checkpoint(path, with_extra=True)
    except Exception:  # noqa: BLE001 - a corrupt or unreadable entry is ignored and rewritten
        return None
    if not isinstance(raw, dict) or raw.get("model_key") != key or not isinstance(raw.get("state_dict"), dict):
        return None
    buffers = raw["state_dict"]
    try:
        if _content_sha256(buffers) != raw.get("content_sha256"):
            return None  # altered since it was written: rebuild, never trust
    except Exception:  # noqa: BLE001 - non-tensor values
        return None
    return buffers


