"""The TensorRT engine cache: a private folder, keys that cover everything an engine depends on, manifests.

A serialized TensorRT engine is only valid for the exact ONNX bytes (and external weights) it was built from, the
TensorRT version that built it, the GPU's compute capability, every builder flag and the optimisation-profile shapes.
ONNX Runtime issue #6455 is what happens otherwise: two models of the same structure shared a cached engine and gave
identical outputs. So the cache key is a sha256 over all of them (:class:`EngineKey`), the engine file is named by
that digest, and a JSON manifest written beside it repeats the key and records the engine's length and sha256.

:meth:`EngineCache.lookup` trusts nothing it has not checked: a missing, unreadable or mismatching manifest, an engine
whose length or hash differs from the manifest (a truncated copy, a half-written file), or an engine for the same
model left by another TensorRT version all mean *rebuild*, each with a warning that says why. A stale engine is
never used. The caller reports the warnings; a deserialization failure at run time is handed back through
:meth:`EngineCache.invalidate`, which removes the entry so the next build replaces it.

The cache folder is private: created with mode 0700, and a folder that group or others can read or write is
repaired to 0700 with a warning (or refused when it cannot be: owned by someone else, or a symlink). The default is
``$XDG_CACHE_HOME/deployinc`` or ``~/.cache/deployinc``, never a shared folder such as /tmp; ``DEPLOYINC_CACHE_DIR``
overrides it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..core.cache import ENV_CACHE_DIR, default_cache_dir, ensure_private_dir, read_regular  # noqa: F401 - ENV_CACHE_DIR re-exported
from ..io import atomic_write_bytes, load_onnx, sha256_file

#: Environment variable that overrides the cache folder.
#: Version of the key and manifest layout; a change invalidates every older entry.
SCHEMA = 1
ENGINE_SUFFIX = ".engine"
MANIFEST_SUFFIX = ".json"
#: A manifest is a small JSON object; anything larger is not one.
MANIFEST_LIMIT = 1 << 20


# --------------------------------------------------------------------------------------------------------------
# The folder


# --------------------------------------------------------------------------------------------------------------
# Fingerprints and keys


def _external_locations(model: Any) -> list[str]:
    from onnx import TensorProto
    from onnx.external_data_helper import _get_all_tensors

    locations = set()
    for t in _get_all_tensors(model):
        if t.HasField("data_location") and t.data_location == TensorProto.EXTERNAL:
            for entry in t.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return sorted(locations)


def onnx_fingerprint(path: str | os.PathLike[str]) -> str:
    """sha256 over an ONNX file's bytes and, in name order, the name and bytes of every external-data file it uses.

    The external-data references are validated by :func:`deployinc.io.load_onnx` first (nothing outside the model's
    folder, no symlinks).
    """
    path = Path(path)
    onnx_file = load_onnx(path, load_external=False)
    h = hashlib.sha256()
    h.update(b"deployinc-onnx-fingerprint\0")
    h.update(sha256_file(path).encode())
    for loc in _external_locations(onnx_file.model):
        h.update(b"\0external\0" + loc.encode("utf-8") + b"\0")
        h.update(sha256_file(path.parent / loc).encode())
    return h.hexdigest()


def _canonical(value: Any, where: str) -> Any:
    """JSON-able, order-stable form of a flag value; refuses what would not hash stably."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{where}: non-finite float {value!r} in a cache key")
        return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"{where}: {type(value).__name__} is not allowed in a cache key (use str, int, float, bool)")


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on.

    Attributes:
        onnx_sha256: :func:`onnx_fingerprint` of the model (its bytes and external data).
        trt_version: ``tensorrt.__version__`` of the builder (for ORT's TensorRT provider: the ORT version and the
            TensorRT version it loads, when known).
        compute_capability: The GPU's ``major.minor``, e.g. ``"9.0"``.
        builder_flags: Every builder setting: precision, typing mode, each BuilderFlag, optimisation level,
            workspace limit... Values are str, int, float, bool or nested lists/dicts of those.
        profiles: Optimisation profiles as ``[{input: {"min": [...], "opt": [...], "max": [...]}}]``.
        deployinc_version: The deployinc version that built it (how deployinc builds is part of the engine).
    """

    onnx_sha256: str
    trt_version: str
    compute_capability: str
    builder_flags: Mapping[str, Any] = field(default_factory=dict)
    profiles: Sequence[Mapping[str, Any]] = field(default_factory=list)
    deployinc_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """The key as canonical JSON-able data (sorted maps, lists for tuples)."""
        return {
            "schema": SCHEMA,
            "onnx_sha256": str(self.onnx_sha256),
            "trt_version": str(self.trt_version),
            "compute_capability": str(self.compute_capability),
            "builder_flags": _canonical(dict(self.builder_flags), "builder_flags"),
            "profiles": _canonical(list(self.profiles), "profiles"),
            "deployinc_version": str(self.deployinc_version),
        }

    def digest(self) -> str:
        """Stable hex sha256 of :meth:`to_dict` (sorted keys, compact separators)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(blob.encode("ascii")).hexdigest()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineKey:
        """Inverse of :meth:`to_dict` (the schema field is checked by the cache, not here)."""
        return cls(
            onnx_sha256=data["onnx_sha256"],
            trt_version=data["trt_version"],
            compute_capability=data["compute_capability"],
            builder_flags=data.get("builder_flags", {}),
            profiles=data.get("profiles", []),
            deployinc_version=data.get("deployinc_version", ""),
        )


def key_differences(expected: Mapping[str, Any], found: Mapping[str, Any]) -> list[str]:
    """Human-readable list of the top-level fields (and flag names) where two key dicts differ."""
    out = []
    for name in sorted(set(expected) | set(found)):
        a, b = expected.get(name), found.get(name)
        if a == b:
            continue
        if name == "builder_flags" and isinstance(a, Mapping) and isinstance(b, Mapping):
            for flag in sorted(set(a) | set(b)):
                if a.get(flag) != b.get(flag):
                    out.append(f"builder flag {flag}: cached {b.get(flag)!r}, wanted {a.get(flag)!r}")
            continue
        if isinstance(a, (str, int)) and isinstance(b, (str, int, type(None))):
            out.append(f"{name}: cached {b!r}, wanted {a!r}")
        else:
            out.append(f"{name} differs")
    return out


# --------------------------------------------------------------------------------------------------------------
# The cache


@dataclass
class CacheLookup:
    """What :meth:`EngineCache.lookup` found.

    Attributes:
        engine: The verified serialized engine, or None (build one).
        engine_path: Where the engine is (or will be) stored.
        manifest: The manifest that was read (None when there was none or it was unusable).
        warnings: Why a cached entry was not used, or anything else the user should hear. Print them.
        reason: ``hit``, ``miss`` (nothing cached) or ``stale`` (something cached and rejected).
    """

    engine: bytes | None
    engine_path: Path
    manifest: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    reason: str = "miss"

    @property
    def hit(self) -> bool:
        return self.engine is not None


class EngineCache:
    """Serialized engines and their manifests in ``<root>/<subdir>/``, both private.

    Args:
        root: The cache folder (default :func:`default_cache_dir`).
        subdir: Sub-folder for this kind of entry (``engines`` for native TensorRT).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, subdir: str = "engines"):
        self.root, self.warnings = ensure_private_dir(root if root is not None else default_cache_dir())
        self.dir, more = ensure_private_dir(self.root / subdir)
        self.warnings.extend(more)

    def engine_path(self, key: EngineKey) -> Path:
        return self.dir / f"{key.digest()}{ENGINE_SUFFIX}"

    def manifest_path(self, key: EngineKey) -> Path:
        return self.dir / f"{key.digest()}{MANIFEST_SUFFIX}"

    # lookup ------------------------------------------------------------------------------------------------------
    def lookup(self, key: EngineKey) -> CacheLookup:
        """Return the cached engine for ``key`` only if its manifest matches the key and its bytes match the manifest."""
        engine_path, manifest_path = self.engine_path(key), self.manifest_path(key)
        result = CacheLookup(engine=None, engine_path=engine_path)
        result.warnings.extend(self._stale_versions(key))
        if not manifest_path.exists() and not engine_path.exists():
            result.reason = "stale" if result.warnings else "miss"
            return result
        result.reason = "stale"
        if not manifest_path.exists():
            result.warnings.append(f"cached engine {engine_path.name} has no manifest; rebuilding")
            self._remove(key)
            return result
        try:
            manifest = json.loads(read_regular(manifest_path, MANIFEST_LIMIT).decode("utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            result.warnings.append(f"cache manifest {manifest_path.name} is unreadable ({exc}); rebuilding")
            self._remove(key)
            return result
        result.manifest = manifest
        wanted = key.to_dict()
        found = manifest.get("key")
        if not isinstance(found, dict) or manifest.get("schema") != SCHEMA:
            result.warnings.append(f"cache manifest {manifest_path.name} has an old or unknown layout; rebuilding")
            self._remove(key)
            return result
        if found != wanted:
            diffs = "; ".join(key_differences(wanted, found)) or "key differs"
            result.warnings.append(f"cached engine {engine_path.name} was built for another configuration ({diffs}); rebuilding")
            self._remove(key)
            return result
        if not engine_path.exists():
            result.warnings.append(f"cached engine {engine_path.name} is missing beside its manifest; rebuilding")
            self._remove(key)
            return result
        expected_len = manifest.get("engine_bytes")
        size = engine_path.stat().st_size
        if not isinstance(expected_len, int) or size != expected_len:
            what = "truncated" if isinstance(expected_len, int) and size < expected_len else "of the wrong length"
            result.warnings.append(
                f"cached engine {engine_path.name} is {what} ({size} bytes, manifest says {expected_len}); rebuilding"
            )
            self._remove(key)
            return result
        try:
            data = read_regular(engine_path)
        except OSError as exc:
            result.warnings.append(f"cached engine {engine_path.name} is unreadable ({exc}); rebuilding")
            self._remove(key)
            return result
        if hashlib.sha256(data).hexdigest() != manifest.get("engine_sha256"):
            result.warnings.append(f"cached engine {engine_path.name} does not match its manifest's sha256 (corrupt); rebuilding")
            self._remove(key)
            return result
        result.engine = data
        result.reason = "hit"
        return result

    def _stale_versions(self, key: EngineKey) -> list[str]:
        """Warn about (and remove) engines for the same model and flags left by another TensorRT/deployinc version."""
        out = []
        wanted = key.to_dict()
        own = key.digest()
        for manifest_path in sorted(self.dir.glob(f"*{MANIFEST_SUFFIX}")):
            digest = manifest_path.name[: -len(MANIFEST_SUFFIX)]
            if digest == own:
                continue
            try:
                found = json.loads(read_regular(manifest_path, MANIFEST_LIMIT).decode("utf-8")).get("key", {})
            except (OSError, ValueError, AttributeError):
                continue
            if not isinstance(found, dict) or found.get("onnx_sha256") != wanted["onnx_sha256"]:
                continue
            same_config = all(found.get(k) == wanted[k] for k in ("builder_flags", "profiles", "compute_capability"))
            if not same_config:
                continue  # another precision or profile of the same model: a different engine, not a stale one
            changed = [
                f"{what} {found.get(k)!r} (now {wanted[k]!r})"
                for k, what in (("trt_version", "TensorRT"), ("deployinc_version", "deployinc"), ("schema", "layout"))
                if found.get(k) != wanted[k]
            ]
            if changed:
                out.append(f"removed a stale cached engine for this model built with {', '.join(changed)}; rebuilding")
                for suffix in (ENGINE_SUFFIX, MANIFEST_SUFFIX):
                    with contextlib.suppress(OSError):
                        (self.dir / f"{digest}{suffix}").unlink()
        return out

    # store -------------------------------------------------------------------------------------------------------
    def store(self, key: EngineKey, engine: bytes, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the engine, then its manifest, each atomically and private (0600). Return the engine path.

        A reader that finds the new manifest always finds the complete new engine: the engine is replaced first,
        and a manifest left from before no longer matches its sha256, so the old pairing is rejected, not used.
        """
        if not engine:
            raise ValueError("refusing to cache an empty engine")
        engine_path = self.engine_path(key)
        atomic_write_bytes(engine_path, bytes(engine), force=True, mode=0o600)
        manifest = {
            "schema": SCHEMA,
            "digest": key.digest(),
            "key": key.to_dict(),
            "engine_file": engine_path.name,
            "engine_bytes": len(engine),
            "engine_sha256": hashlib.sha256(engine).hexdigest(),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "extra": _canonical(dict(extra or {}), "extra"),
        }
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        atomic_write_bytes(self.manifest_path(key), text.encode("utf-8"), force=True, mode=0o600)
        return engine_path

    def invalidate(self, key: EngineKey, reason: str) -> str:
        """Remove an entry that failed later (e.g. deserialization); return the warning to print."""
        self._remove(key)
        return f"cached engine {self.engine_path(key).name} could not be used ({reason}); removed, rebuilding"

    def _remove(self, key: EngineKey) -> None:
        for p in (self.engine_path(key), self.manifest_path(key)):
            with contextlib.suppress(OSError):
                p.unlink()


def subdir_for_key(root: str | os.PathLike[str] | None, kind: str, key: EngineKey) -> tuple[Path, list[str]]:
    """A private folder ``<root>/<kind>/<digest>`` for tools that manage their own files (ORT's TensorRT provider)."""
    base, warnings = ensure_private_dir(root if root is not None else default_cache_dir())
    kind_dir, more = ensure_private_dir(base / kind)
    warnings.extend(more)
    folder, more = ensure_private_dir(kind_dir / key.digest())
    warnings.extend(more)
    return folder, warnings
