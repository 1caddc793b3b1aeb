"""Offline models: real ones shipped in registry wheels (resolved by name), and a tiny random test model."""
from .convert import resolve_model
from .fingerprint import model_fingerprint
from .registry import DEFAULT_MODEL, MODELS, get_model
from .tiny import build_tiny_model

__all__ = ["resolve_model", "model_fingerprint", "build_tiny_model", "DEFAULT_MODEL", "MODELS", "get_model"]
