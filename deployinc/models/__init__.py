"""Model registry and loading: names, torchvision/timm models, user factories, built-in architectures."""

from .loading import LoadedModel, load_from_provenance, load_model, state_sha256
from .registry import ModelInfo, create_model, get_model_info, list_models, register_model

__all__ = [
    "LoadedModel",
    "ModelInfo",
    "create_model",
    "get_model_info",
    "list_models",
    "load_from_provenance",
    "load_model",
    "register_model",
    "state_sha256",
]
