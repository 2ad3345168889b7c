"""From a model spec and a weights spec to an ``nn.Module`` with known provenance.

A model spec is a registry name (``googlenet``, ``inception_cifar``), ``timm/<name>``, or the user's own
``package.module:function`` factory. Weights are ``none`` (a seeded random initialisation), a torchvision weights
name (``DEFAULT``, ``IMAGENET1K_V1``; read from the torch hub cache, downloaded when online), or a local
``.pt``/``.pth``/``.safetensors`` file (weights-only loading, see :mod:`deployinc.io`).

Random weights get their BatchNorm running statistics recalibrated on seeded natural-image batches. At
initialisation those statistics are 0/1, so activations grow layer after layer (torchvision's inception_v3 gives
logits near 1e12) and every parity figure computed on such a model is meaningless. After recalibration each BN
normalises what it actually sees and the logits have a realistic scale.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.images import natural_images
from ..core.outputs import first_output
from ..errors import BadInputError, ModelSpecError, UntrustedCodeError, WeightsError
from ..io import load_checkpoint, sha256_file
from .registry import IMAGENET_MEAN, IMAGENET_STD, ModelInfo, get_model_info

#: Module names whose parameters belong to auxiliary heads, for every architecture we know.
KNOWN_AUX_HEADS = ("aux1", "aux2", "AuxLogits", "aux_classifier", "aux_logits_head", "aux")


@dataclass
class LoadedModel:
    """A built model and what it was built from."""

    module: Any
    info: ModelInfo
    spec: str
    weights: str
    weights_sha256: str | None
    state_sha256: str
    seed: int
    bn_recalibrated: bool
    notes: list[str] = field(default_factory=list)
    #: The layers :func:`reinit_zero_linears` gave seeded weights: name -> their state as the model's code made it.
    zero_init: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``state_sha256`` before that re-initialisation (None when nothing was re-initialised).
    zero_init_sha256: str | None = None

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """N=1, C, H, W."""
        return (1, *self.info.input_size)

    def matches_export(self, exported_sha256: str | None) -> bool:
        """Are these the weights a file recorded (``state_sha256``)? A file exported before deployinc gave
        zero-initialised layers seeded weights recorded the zeros: those layers are put back as the model's code
        made them (and a note says so), so that the reference computes what that file computes."""
        if not exported_sha256 or exported_sha256 == self.state_sha256:
            return True
        if not self.zero_init or exported_sha256 != self.zero_init_sha256:
            return False
        for name, state in self.zero_init.items():
            self.module.get_submodule(name).load_state_dict(state)
        self.state_sha256 = exported_sha256
        self.notes.append(f"this file was exported with {', '.join(n or 'the model' for n in self.zero_init)} at zero, as the model's code "
                          "initialises it: the reference keeps that (its output may ignore the input; export again for a meaningful check)")
        self.zero_init = {}
        return True


def state_sha256(module: Any) -> str:
    """sha256 over a module's state dict: names, dtypes, shapes and bytes, in order."""
    import torch

    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# specs ------------------------------------------------------------------------------------------------------------


def is_code_spec(spec: str) -> bool:
    """Whether a model spec names Python code to import (``package.module:function`` or ``path/file.py:function``)
    rather than a registry name (built-in, torchvision, ``timm/<name>``)."""
    return ":" in str(spec)


def require_trusted_spec(spec: str, trusted: bool, where: str = "the file's metadata") -> None:
    """Refuse to run code that a file names, unless the user named it too.

    A model spec read from a file (an ONNX file's provenance) is data from whoever wrote the file. Registry names
    only select architectures deployinc already has; a ``module:function`` spec would import and run code, so it
    is used only when the user confirms it: ``--reference`` with the same spec, or ``--trust-model-code``.

    Raises:
        UntrustedCodeError: ``spec`` names code and ``trusted`` is False.
    """
    if is_code_spec(spec) and not trusted:
        raise UntrustedCodeError(
            f"{where} names Python code as its model ({spec!r}); deployinc does not run code named inside a file",
            hint=f"if you trust that code, pass --reference {spec} (or --trust-model-code); "
            "otherwise compare with --against other.onnx",
        )


def _import_user_module(module_name: str) -> Any:
    """Import the module of a spec the user gave, without putting folders on ``sys.path`` for good.

    ``path/to/nets.py`` is loaded from that file; a dotted name is imported from ``sys.path`` and, when it is not
    installed, from the current folder, which is appended (never prepended: it cannot shadow an installed
    package) for that one import only.
    """
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise ModuleNotFoundError(f"no file {module_name}", name=module_name)
        name = "deployinc_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12] + "_" + path.stem
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ModuleNotFoundError(f"cannot load {module_name}", name=module_name)
        mod = importlib.util.module_from_spec(spec)
        with _temporarily_on_path(str(path.parent)):
            sys.modules[name] = mod
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        return mod
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.split(".")[0]
        here = Path.cwd()
        if exc.name not in (top, module_name) or not ((here / f"{top}.py").is_file() or (here / top).is_dir()):
            raise
    with _temporarily_on_path(str(Path.cwd())):
        return importlib.import_module(module_name)


class _temporarily_on_path:
    """Append a folder to ``sys.path`` for the duration of a ``with`` block (if it is not there already)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.added = False

    def __enter__(self) -> None:
        if self.folder not in sys.path:
            sys.path.append(self.folder)
            self.added = True

    def __exit__(self, *exc: Any) -> None:
        if self.added:
            try:
                sys.path.remove(self.folder)
            except ValueError:
                pass


def _resolve_factory(spec: str) -> Any:
    module_name, _, func_name = str(spec).rpartition(":")
    if not module_name or not func_name:
        raise ModelSpecError(
            f"model spec {spec!r} is not package.module:function", hint="e.g. mypkg.nets:build_model or nets.py:build_model"
        )
    try:
        mod = _import_user_module(module_name)
    except ImportError as exc:
        raise ModelSpecError(
            f"cannot import module {module_name!r} of model spec {spec!r}: {exc}",
            hint="check the name and that the package is installed or in the current directory "
            "(or give the file: path/to/nets.py:build)",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - user code failing at import time
        raise ModelSpecError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}", hint="fix the module so it imports"
        ) from exc
    fn = getattr(mod, func_name, None)
    if fn is None:
        public = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]
        import difflib

        close = difflib.get_close_matches(func_name, public, n=3)
        raise ModelSpecError(
            f"module {module_name!r} has no function {func_name!r}",
            hint=f"did you mean {', '.join(close)}?" if close else "check the function name after the colon",
        )
    if not callable(fn):
        raise ModelSpecError(f"{spec} is not callable", hint="point at a function that returns an nn.Module")
    return fn


def _call_factory(fn: Any, spec: str, num_classes: int | None) -> Any:
    import torch.nn as nn

    kwargs: dict[str, Any] = {}
    if num_classes is not None:
        try:
            params = inspect.signature(fn).parameters
            if "num_classes" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
                kwargs["num_classes"] = num_classes
        except (TypeError, ValueError):
            pass
    try:
        module = fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - user code
        raise ModelSpecError(f"{spec}() raised {type(exc).__name__}: {exc}", hint="fix the factory function") from exc
    if not isinstance(module, nn.Module):
        raise ModelSpecError(
            f"{spec}() returned {type(module).__name__}, not a torch.nn.Module", hint="return the model instance"
        )
    return module


def resolve_info(spec: str, input_shape: tuple[int, ...] | None = None) -> ModelInfo:
    """The :class:`ModelInfo` of a spec; user factories get defaults overridable by ``input_shape``."""
    if ":" in spec:
        c, h, w = (input_shape[-3:] if input_shape else (3, 224, 224))
        return ModelInfo(name=spec, family="other", input_size=(c, h, w), num_classes=1000, source="user")
    return get_model_info(spec)


# weights ----------------------------------------------------------------------------------------------------------


def _torchvision_weights_file(name: str, weights: str) -> Path:
    import torch
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(name)
    except (ValueError, KeyError) as exc:
        raise WeightsError(f"torchvision has no weights for {name!r}", hint="use --weights none or a file") from exc
    try:
        w = enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise WeightsError(
            f"unknown weights {weights!r} for {name}",
            hint=f"available: DEFAULT, {', '.join(m.name for m in enum)}; or a .pt/.pth/.safetensors path",
        ) from None
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
    if cache.is_file():
        return cache
    import socket

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(w.url, str(cache), progress=False)
    except Exception as exc:  # noqa: BLE001 - urllib/ssl/socket errors when offline
        raise WeightsError(
            f"weights {name}.{w.name} are not in the torch hub cache and could not be downloaded ({type(exc).__name__})",
            hint=f"put {os.path.basename(w.url)} in {cache.parent}, or pass --weights path/to/file.pth",
        ) from exc
    finally:
        socket.setdefaulttimeout(old)
    return cache


def _aux_prefixes(module: Any, info: ModelInfo) -> tuple[str, ...]:
    names = set(info.aux_heads)
    for n, _ in module.named_children():
        if n in KNOWN_AUX_HEADS:
            names.add(n)
    return tuple(f"{n}." for n in names)


def keep_metadata(subset: dict[str, Any], *sources: Any) -> Any:
    """``subset`` as an ordered dict carrying the ``_metadata`` (per-module state-dict versions) of the first source
    that has it. ``load_state_dict`` hands each module its version, and some modules refuse a dict without one
    (torchvision's MNASNet raises on version None)."""
    from collections import OrderedDict

    out: Any = OrderedDict(subset)
    for src in sources:
        meta = getattr(src, "_metadata", None)
        if meta is not None:
            out._metadata = meta
            break
    return out


def dtype_family(dtype: Any) -> str:
    """``float``, ``complex``, ``bool`` or ``int`` (signed or unsigned, quantized included) of a torch dtype."""
    import torch

    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "float"
    return "int"


#: torch dtype -> the name a safetensors header gives it.
_SAFETENSORS_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
}


def check_dtypes(own: dict[str, Any], sd: dict[str, Any], info: ModelInfo, source: str) -> None:
    """Refuse a checkpoint tensor whose dtype family (float, int, bool, complex) differs from the model's tensor
    of the same name. ``load_state_dict`` would cast it silently (an I32 header over float data gives integers, or
    reinterpreted garbage); float16 weights for a float32 model are the same family and load as usual.

    Raises:
        WeightsError: Names the tensor and both dtypes.
    """
    for k, v in sd.items():
        mine = own.get(k)
        if mine is None or k.endswith("num_batches_tracked") or not hasattr(v, "dtype") or not hasattr(mine, "dtype"):
            continue
        if dtype_family(v.dtype) == dtype_family(mine.dtype):
            continue
        have = str(v.dtype).replace("torch.", "")
        want = str(mine.dtype).replace("torch.", "")
        header = f" ({_SAFETENSORS_DTYPES.get(have, have)} in its safetensors header)" if source.endswith(".safetensors") else ""
        raise WeightsError(
            f"weights {source}: tensor {k!r} is {have}{header}, but {info.name}'s {k} is {want} "
            f"({dtype_family(v.dtype)} vs {dtype_family(mine.dtype)}); deployinc does not cast between them",
            hint="the file declares the wrong dtype (a hand-written or damaged header?): save the weights again "
            "from the model, torch.save(model.state_dict(), path) or safetensors' save_file(model.state_dict(), path)",
        )


def load_state_into(module: Any, sd: dict[str, Any], info: ModelInfo, source: str) -> list[str]:
    """Load ``sd`` into ``module``, with errors that name the first missing/unexpected/mismatched key.

    Keys of auxiliary heads may be missing or extra (deployment drops those heads), as may BatchNorm's
    ``num_batches_tracked``. Returns notes on what was tolerated.
    """
    own = module.state_dict()
    aux = _aux_prefixes(module, info)

    def ignorable(k: str) -> bool:
        return k.endswith("num_batches_tracked") or (bool(aux) and k.startswith(aux))

    missing = [k for k in own if k not in sd and not ignorable(k)]
    unexpected = [k for k in sd if k not in own and not ignorable(k)]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        if unexpected:
            parts.append(
                f"unexpected {unexpected[0]!r}" + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
            )
        raise WeightsError(
            f"weights {source} do not match {info.name}: {'; '.join(parts)}",
            hint=f"is the checkpoint for {info.name}? keys must match model.state_dict() (prefixes like 'module.' are stripped)",
        )
    check_dtypes(own, sd, info, source)
    for k, v in sd.items():
        if k in own and tuple(own[k].shape) != tuple(v.shape):
            hint = "is the checkpoint for this architecture?"
            if len(v.shape) >= 1 and len(own[k].shape) >= 1 and v.shape[1:] == own[k].shape[1:]:
                hint = f"the checkpoint has {v.shape[0]} outputs here: pass --num-classes {v.shape[0]}"
            raise WeightsError(
                f"weights {source} do not match {info.name}: {k!r} has shape {tuple(v.shape)}, the model {tuple(own[k].shape)}",
                hint=hint,
            )
    module.load_state_dict(keep_metadata({k: v for k, v in sd.items() if k in own}, sd, own), strict=False)
    notes = []
    skipped = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    if skipped:
        notes.append(f"{len(skipped)} auxiliary-head tensors not in the checkpoint (heads are removed for deployment)")
    return notes


# BatchNorm recalibration ------------------------------------------------------------------------------------------


#: Batches, and images per batch, of BatchNorm recalibration.
RECAL_BATCHES = 3
RECAL_BATCH_SIZE = 8


def has_batchnorm(module: Any) -> bool:
    """Whether ``module`` has a BatchNorm with running statistics (what :func:`recalibrate_batchnorm` re-estimates)."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return any(isinstance(m, _BatchNorm) and m.track_running_stats for m in module.modules())


def recalibrate_batchnorm(
    module: Any,
    input_size: tuple[int, int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    seed: int = 0,
    batches: int = RECAL_BATCHES,
    batch_size: int = RECAL_BATCH_SIZE,
) -> bool:
    """Re-estimate BatchNorm running statistics on seeded natural-image batches. Returns whether any BN exists.

    Only the BN layers run in training mode (a cumulative average, ``momentum=None``); everything else stays in
    eval mode, so dropout and auxiliary heads do not change what the BNs see.
    """
    import numpy as np
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    bns = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not bns:
        return False
    module.eval()
    saved = [(bn, bn.momentum) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    try:
        x = natural_images(batches * batch_size, input_size, mean, std, seed=seed + 7919)
        with torch.no_grad():
            for i in range(batches):
                module(torch.from_numpy(np.ascontiguousarray(x[i * batch_size : (i + 1) * batch_size])))
    except RuntimeError as exc:
        raise BadInputError(
            f"the model rejects input shape {list(input_size)} (while recalibrating BatchNorm): {str(exc).splitlines()[0][:200]}",
            hint="pass --input-shape N,C,H,W that the model accepts",
        ) from exc
    finally:
        for bn, momentum in saved:
            bn.momentum = momentum
        module.eval()
    return True


def _probe_num_classes(module: Any, input_size: tuple[int, int, int]) -> int:
    """The logit count of a user model: the last dimension of its (first) output on one zero image."""
    import torch

    module.eval()
    try:
        with torch.no_grad():
            out = first_output(module(torch.zeros(1, *input_size)))
    except RuntimeError as exc:
        raise BadInputError(
            f"the model rejects input shape {[1, *input_size]}: {str(exc).splitlines()[0][:200]}",
            hint="pass --input-shape N,C,H,W that the model accepts",
        ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise ModelSpecError(
            f"the model's output is {type(out).__name__} {tuple(getattr(out, 'shape', ()))}, not N x classes",
            hint="deployinc exports classifiers: the (first) output must be a N x classes tensor",
        )
    return int(out.shape[-1])


# public -----------------------------------------------------------------------------------------------------------


def load_model(
    spec: str,
    weights: str | None = None,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    seed: int = 0,
    calibrate_bn: bool = True,
    on_stage: Any = None,
) -> LoadedModel:
    """Build a model from a spec and load its weights.

    Args:
        spec: Registry name, ``timm/<name>`` or ``package.module:function``.
        weights: ``none``/None (seeded random init), a torchvision weights name, or a checkpoint path.
        num_classes: Logit count (default: the model's).
        input_shape: ``N,C,H,W`` (or ``C,H,W``) overriding the registry's input size.
        mean: Normalisation mean override.
        std: Normalisation std override.
        seed: Seed of the random initialisation and BN recalibration.
        calibrate_bn: Recalibrate BatchNorm statistics when the weights are random.
        on_stage: ``callable(name, detail)`` called as a long step starts (``recalibrate BatchNorm``), for
            progress lines (:class:`deployinc.export.Stages`).

    Raises:
        ModelSpecError: The spec cannot be resolved.
        WeightsError: The weights cannot be found, read, or do not fit.
    """
    import torch

    info = resolve_info(spec, input_shape)
    changes: dict[str, Any] = {}
    if num_classes is not None:
        changes["num_classes"] = int(num_classes)
    if input_shape is not None:
        c, h, w = (int(v) for v in input_shape[-3:])
        changes["input_size"] = (c, h, w)
    if mean is not None:
        changes["mean"] = tuple(float(v) for v in mean)
    if std is not None:
        changes["std"] = tuple(float(v) for v in std)
    info = info.with_overrides(**changes)
    notes: list[str] = []
    if info.source == "user":
        info, note = user_normalisation(info, mean, std)
        notes += [note] if note else []

    torch.manual_seed(seed)
    if info.source == "user":
        module = _call_factory(_resolve_factory(spec), spec, num_classes)
        if num_classes is None:
            info = info.with_overrides(num_classes=_probe_num_classes(module, info.input_size))
    else:
        assert info.builder is not None
        try:
            module = info.builder(num_classes=info.num_classes)
        except (TypeError, ValueError) as exc:
            raise ModelSpecError(f"cannot build {spec}: {exc}", hint="check --num-classes and the model name") from exc
    module.eval()

    wspec = "none" if weights in (None, "", "none", "random") else str(weights)
    file_sha = None
    random_init = wspec == "none"
    if not random_init:
        looks_like_path = any(wspec.endswith(ext) for ext in (".pt", ".pth", ".bin", ".ckpt", ".safetensors")) or os.sep in wspec
        if looks_like_path or Path(wspec).exists():
            path = Path(wspec)

            sd = load_checkpoint(path)
            file_sha = sha256_file(path)
            notes += load_state_into(module, sd, info, str(path))
            wspec = str(path.resolve())
        elif info.source == "torchvision" and (wspec == "DEFAULT" or wspec.isupper() or "_" in wspec):
            path = _torchvision_weights_file(spec, wspec)
            sd = load_checkpoint(path)
            file_sha = sha256_file(path)
            notes += load_state_into(module, sd, info, f"{spec}.{wspec}")
        else:
            raise WeightsError(
                f"weights {wspec!r} is neither a file nor a torchvision weights name",
                hint="give none, DEFAULT, IMAGENET1K_V1 (torchvision models) or a .pt/.pth/.safetensors path",
            )
    # Only weights deployinc itself initialised may be changed: a registry model with no weights. A user's factory
    # returns their model, trained or not, and its weights (BatchNorm statistics included) are the model.
    seeded = seeded_init(info.source, wspec)
    if random_init and not seeded:
        notes.append("the factory's own weights (no --weights): exported as your code returns them, nothing re-estimated")
    zero_init: dict[str, dict[str, Any]] = {}
    zero_sha = None
    zeroed: list[str] = zero_linears(module) if seeded else []
    if zeroed:
        zero_init = {n: {k: v.detach().clone() for k, v in module.get_submodule(n).state_dict().items()} for n in zeroed}
        zero_sha = state_sha256(module)
        zeroed = reinit_zero_linears(module, zeroed)
        if zeroed:
            notes.append(f"random weights: the model's own code initialises {', '.join(zeroed)} to zero (every image would give "
                         "the same logits); seeded random weights instead, so the outputs tell a correct export from a wrong one")
    settle_hook_weights(module)
    sha = state_sha256(module)
    recal = False
    if seeded and calibrate_bn:
        if on_stage is not None and has_batchnorm(module):
            on_stage("recalibrate BatchNorm", f"random weights: {RECAL_BATCHES} seeded natural-image batches of {RECAL_BATCH_SIZE}")
        recal = recalibrate_batchnorm(module, info.input_size, info.mean, info.std, seed=seed)
        if recal:
            notes.append("random weights: BatchNorm statistics recalibrated on seeded natural-image batches")
    return LoadedModel(
        module=module,
        info=info,
        spec=spec,
        weights=wspec,
        weights_sha256=file_sha,
        state_sha256=sha,
        seed=seed,
        bn_recalibrated=recal,
        notes=notes,
        zero_init=zero_init,
        zero_init_sha256=zero_sha,
    )


def settle_hook_weights(module: Any) -> Any:
    """Recompute, without autograd, the weights that torch's old hook-based ``nn.utils.weight_norm`` and
    ``spectral_norm`` keep as plain attributes; returns ``module``. Built with autograd on, such a weight is a
    non-leaf tensor and ``copy.deepcopy`` of the model fails ("Only Tensors created explicitly by the user ...");
    every forward recomputes it, so the numbers do not change."""
    import torch
    from torch.nn.utils.spectral_norm import SpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    with torch.no_grad():
        for m in module.modules():
            for hook in list(getattr(m, "_forward_pre_hooks", {}).values()):
                if isinstance(hook, WeightNorm):
                    setattr(m, hook.name, hook.compute_weight(m))
                elif isinstance(hook, SpectralNorm):
                    setattr(m, hook.name, hook.compute_weight(m, do_power_iteration=False))
    return module


def user_normalisation(
    info: ModelInfo, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> tuple[ModelInfo, str | None]:
    """The input normalisation of a user's model, and a note when deployinc chose it: what the user gave, else
    ImageNet's for a 3-channel input and none (mean 0, std 1 per channel) for any other channel count, where
    ImageNet's three values mean nothing."""
    c = info.input_size[0]
    if c == 3:
        defaults, what = (IMAGENET_MEAN, IMAGENET_STD), None
    else:
        defaults, what = ((0.0,) * c, (1.0,) * c), f"a {c}-channel input"
    info = info.with_overrides(
        mean=tuple(float(v) for v in mean) if mean is not None else defaults[0],
        std=tuple(float(v) for v in std) if std is not None else defaults[1],
    )
    if what is None or (mean is not None and std is not None):
        return info, None
    missing = " and ".join(f"--{k}" for k, v in (("mean", mean), ("std", std)) if v is None)
    return info, (
        f"note: no {missing} for {what}: no normalisation assumed ({'mean 0' if mean is None else ''}"
        f"{', ' if mean is None and std is None else ''}{'std 1' if std is None else ''} per channel); "
        "pass --mean/--std (one value per channel) if the model was trained on normalised inputs"
    )


def seeded_init(source: str, weights: str | None) -> bool:
    """Whether deployinc initialises the weights itself: a registry model (builtin, torchvision, timm) with no
    weights. Only then may it re-estimate BatchNorm statistics or re-seed a zero classifier; a user's
    ``module:function`` factory returns its own weights, which are the model whether or not it was trained."""
    return source != "user" and weights in (None, "", "none", "random")


def weights_text(spec: str, weights: str | None, seed: int | None = None) -> str:
    """How reports name the weights of ``spec``: a checkpoint, the factory's own, or deployinc's seeded init."""
    if weights not in (None, "", "none", "random"):
        return str(weights)
    if is_code_spec(spec):
        return "the factory's own weights"
    return "seeded random init" + (f" (seed {seed})" if seed is not None else "")


def reinit_zero_linears(module: Any, names: list[str] | None = None) -> list[str]:
    """Give seeded random weights (``reset_parameters``, from the current torch RNG) to every ``nn.Linear`` whose
    weight is all zeros (``names``: those :func:`zero_linears` already found); returns their names.

    Some models zero their classifier at initialisation (torchvision's ViT: ``heads.head``), so a randomly
    initialised one outputs the same logits for every image, and a comparison of two runs of it passes whatever
    the runtime computes. Only random-weight models are touched, on export and on the rebuilt reference alike.
    """
    out = []
    for name in zero_linears(module) if names is None else names:
        module.get_submodule(name).reset_parameters()
        out.append(name or "the model")
    return out


def zero_linears(module: Any) -> list[str]:
    """Names of the ``nn.Linear`` layers whose weight is all zeros (``""`` for the module itself)."""
    from torch import nn

    return [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear) and sub.weight.numel() and not bool(sub.weight.detach().any())]


def provenance_shape(prov: Any) -> dict[str, Any]:
    """What a file's provenance says :func:`load_model` is to build besides the spec, the weights and BatchNorm
    recalibration: classes, input shape, normalisation and seed."""
    return {"num_classes": prov.num_classes, "input_shape": tuple(prov.input_shape), "mean": tuple(prov.mean),
            "std": tuple(prov.std), "seed": prov.seed}  # fmt: skip


def load_from_provenance(prov: Any, weights: str | None = None, trust_code: bool = False) -> LoadedModel:
    """Rebuild exactly the model an ONNX file was exported from, using its :class:`~deployinc.metadata.Provenance`.

    Args:
        prov: The provenance read from the file.
        weights: Use this weights file instead of the recorded one (a moved checkpoint).
        trust_code: The user confirmed the recorded spec (``--reference`` with the same spec, or
            ``--trust-model-code``); without it a ``module:function`` spec is refused, never imported.

    Raises:
        UntrustedCodeError: The file names code to run and the user did not confirm it.
        WeightsError: The weights file changed since export, or the rebuilt weights differ.
    """
    require_trusted_spec(prov.model_spec, trust_code)
    if prov.bn_recalibrated and is_code_spec(prov.model_spec):
        raise WeightsError(
            f"this file was exported by an earlier deployinc that re-estimated the BatchNorm statistics of {prov.model_spec}: "
            "it does not compute the model your factory returns, and no reference can say otherwise",
            hint=f"export it again (deployinc export {prov.model_spec} ...): a factory's weights are now exported as they are",
        )
    w = weights if weights is not None else prov.weights
    if w not in (None, "none") and weights is None and (os.sep in str(w)) and not Path(w).exists():
        raise WeightsError(
            f"the weights this model was exported from, {w}, are not there any more",
            hint="pass --weights with the checkpoint's new path",
        )
    loaded = load_model(prov.model_spec, weights=w, calibrate_bn=prov.bn_recalibrated, **provenance_shape(prov))
    if prov.weights_sha256 and loaded.weights_sha256 and prov.weights_sha256 != loaded.weights_sha256:
        raise WeightsError(
            f"weights file {loaded.weights} changed since export (sha256 {loaded.weights_sha256[:12]}, exported from {prov.weights_sha256[:12]})",
            hint="export the model again, or pass the original checkpoint with --weights",
        )
    if not loaded.matches_export(prov.state_sha256):
        raise WeightsError(
            f"the rebuilt {prov.model_spec} weights differ from those exported (state sha256 {loaded.state_sha256[:12]} vs {prov.state_sha256[:12]})",
            hint="random initialisation differs between torch versions; compare with the same torch version "
            f"({prov.versions.get('torch', '?')}) or export from a checkpoint",
        )
    return loaded
