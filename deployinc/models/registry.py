"""The model registry: one place that knows every model deployinc can build by name.

Three sources, one interface:

- built-in architectures from the Inception literature (``deployinc.models.builtin``), registered with
  :func:`register_model`;
- every torchvision classification model, by its torchvision name (``googlenet``, ``resnet50``...);
- timm models as ``timm/<name>`` when timm is installed.

A user's own ``package.module:function`` factory is resolved by :mod:`deployinc.models.loading`, not registered.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ModelSpecError
from ..lazy import require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelInfo:
    """What deployinc knows about a model before building it.

    Attributes:
        name: Registry name (``googlenet``, ``inception_cifar``, ``timm/resnet50``).
        family: ``inception``, ``resnet``, ``mobilenet``, ``depthwise`` or ``other``.
        input_size: Channels, height, width of one input image.
        num_classes: Number of logits.
        mean: Per-channel mean of the input normalisation.
        std: Per-channel std of the input normalisation.
        source: ``builtin``, ``torchvision``, ``timm`` or ``user``.
        builder: Callable ``builder(num_classes=..., **kwargs) -> nn.Module`` (random init).
        aux_heads: Attribute names of auxiliary classifier heads that training uses and deployment drops.
        description: One line for ``deployinc models``.
        num_params: Published parameter count, when known (torchvision weights metadata).
        gflops: Published GFLOPS (multiply-adds, 1e9), when known.
    """

    name: str
    family: str
    input_size: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    source: str = "builtin"
    builder: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    aux_heads: tuple[str, ...] = ()
    description: str = ""
    num_params: int | None = None
    gflops: float | None = None

    def with_overrides(self, **changes: Any) -> ModelInfo:
        """A copy with some fields changed (e.g. ``num_classes``)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_BUILTIN: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    *,
    family: str,
    input_size: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    aux_heads: tuple[str, ...] = (),
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a built-in model factory under ``name``.

    The factory takes ``num_classes`` (and optional keyword overrides) and returns a randomly initialised module.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _BUILTIN:
            raise ValueError(f"model {name!r} is already registered")
        _BUILTIN[name] = ModelInfo(
            name=name,
            family=family,
            input_size=input_size,
            num_classes=num_classes,
            mean=mean,
            std=std,
            source="builtin",
            builder=fn,
            aux_heads=aux_heads,
            description=description or ((fn.__doc__ or "").strip().splitlines() or [""])[0],
        )
        return fn

    return deco


def _ensure_builtins() -> None:
    # lazy: builtin imports torch, and this module (to register its architectures)
    from . import builtin  # noqa: F401 - registers the built-in architectures on import


# torchvision ------------------------------------------------------------------------------------------------------

_TV_FAMILIES = (
    ("inception", "inception"),
    ("googlenet", "inception"),
    ("resnet", "resnet"),
    ("resnext", "resnet"),
    ("wide_resnet", "resnet"),
    ("mobilenet", "mobilenet"),
    ("mnasnet", "mobilenet"),
    ("efficientnet", "mobilenet"),
    ("shufflenet", "depthwise"),
    ("regnet", "resnet"),
)
_TV_AUX = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


def _tv_family(name: str) -> str:
    for prefix, fam in _TV_FAMILIES:
        if name.startswith(prefix):
            return fam
    return "other"


_TV_CACHE: dict[str, ModelInfo] | None = None


def _torchvision_infos() -> dict[str, ModelInfo]:
    global _TV_CACHE
    if _TV_CACHE is not None:
        return _TV_CACHE
    import torchvision.models as tvm

    infos = {}
    for name in tvm.list_models(module=tvm):
        size, params, gflops = 224, None, None
        try:
            weights = tvm.get_model_weights(name)
            default = weights.DEFAULT
            # weights.transforms is functools.partial(ImageClassification, crop_size=..., ...)
            crop = getattr(default.transforms, "keywords", {}).get("crop_size")
            size = int(crop) if crop else size
            params = default.meta.get("num_params")
            gflops = default.meta.get("_ops")
        except Exception:  # noqa: BLE001 - a model without weights metadata keeps the defaults
            pass
        infos[name] = ModelInfo(
            name=name,
            family=_tv_family(name),
            input_size=(3, size, size),
            num_classes=1000,
            source="torchvision",
            builder=_tv_builder(name),
            aux_heads=_TV_AUX.get(name, ()),
            description=f"torchvision.models.{name}",
            num_params=params,
            gflops=gflops,
        )
    _TV_CACHE = infos
    return infos


def _tv_builder(name: str) -> Callable[..., Any]:
    def build(num_classes: int = 1000, **kwargs: Any) -> Any:
        import torchvision.models as tvm

        if name == "googlenet":
            kwargs.setdefault("aux_logits", True)
            kwargs.setdefault("init_weights", True)
        if name == "inception_v3":
            kwargs.setdefault("aux_logits", True)
            kwargs.setdefault("init_weights", True)
        return tvm.get_model(name, weights=None, num_classes=num_classes, **kwargs)

    return build


# timm -------------------------------------------------------------------------------------------------------------


def _timm_info(name: str) -> ModelInfo:
    timm = require("timm", f"model {name}")
    arch = name.split("/", 1)[1]
    if arch not in timm.list_models():
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"did you mean {', '.join('timm/' + c for c in close)}?" if close else "see timm.list_models()"
        raise ModelSpecError(f"unknown timm model {arch!r}", hint=hint)
    cfg = {}
    try:
        cfg = timm.get_pretrained_cfg(arch).to_dict()
    except Exception:  # noqa: BLE001 - models without a pretrained cfg
        cfg = {}
    size = tuple(cfg.get("input_size", (3, 224, 224)))

    def build(num_classes: int = 1000, **kwargs: Any) -> Any:
        return timm.create_model(arch, pretrained=False, num_classes=num_classes, **kwargs)

    return ModelInfo(
        name=name,
        family=_tv_family(arch),
        input_size=(int(size[0]), int(size[1]), int(size[2])),
        num_classes=int(cfg.get("num_classes", 1000) or 1000),
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(cfg.get("std", IMAGENET_STD)),
        source="timm",
        builder=build,
        description=f"timm {arch}",
    )


# public -----------------------------------------------------------------------------------------------------------


def list_models(source: str | None = None) -> list[str]:
    """Names of the models deployinc can build, sorted; ``source`` filters (builtin, torchvision)."""
    _ensure_builtins()
    names: list[str] = []
    if source in (None, "builtin"):
        names += list(_BUILTIN)
    if source in (None, "torchvision"):
        names += list(_torchvision_infos())
    return sorted(set(names))


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of a registered name or ``timm/<name>``.

    Raises:
        ModelSpecError: Unknown name (with close matches in the hint).
    """
    _ensure_builtins()
    if name in _BUILTIN:
        return _BUILTIN[name]
    if name.startswith("timm/"):
        return _timm_info(name)
    tv = _torchvision_infos()
    if name in tv:
        return tv[name]
    close = difflib.get_close_matches(name, list(_BUILTIN) + list(tv), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "run deployinc models for the list"
    hint += " (timm models: timm/<name>; your own: package.module:function)"
    raise ModelSpecError(f"unknown model {name!r}", hint=hint)


def create_model(name: str, num_classes: int | None = None, **overrides: Any) -> Any:
    """Build a registered model with random weights.

    Args:
        name: Registry name or ``timm/<name>``.
        num_classes: Override the class count.
        **overrides: Passed to the model's factory.
    """
    info = get_model_info(name)
    assert info.builder is not None
    return info.builder(num_classes=num_classes or info.num_classes, **overrides)
