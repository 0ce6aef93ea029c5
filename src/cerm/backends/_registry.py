"""Backend registry: a name maps to "module:Class", imported only when asked for (heavy dependencies stay lazy)."""

from __future__ import annotations

import importlib
from typing import Any

from cerm._errors import ConfigurationError
from cerm.backends._base import Backend

_BACKENDS: dict[str, str] = {
    "hf": "cerm.backends.hf:HFBackend",
    "mock": "cerm.backends.mock:MockBackend",
    "openai": "cerm.backends.openai:OpenAIBackend",
    "vllm": "cerm.backends.vllm:VLLMBackend",
}


def register_backend(name: str, target: str) -> None:
    """Register ``"package.module:Class"`` under ``name`` (third-party backends use this too)."""
    if ":" not in target:
        raise ConfigurationError(f"backend target must look like 'package.module:Class', got {target!r}")
    _BACKENDS[name] = target


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def backend_class(name: str) -> type[Backend]:
    try:
        target = _BACKENDS[name]
    except KeyError:
        raise ConfigurationError(f"unknown backend {name!r}; choose one of {available_backends()}") from None
    module_name, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigurationError(f"{target} is not a cerm Backend subclass")
    return cls


def create_backend(name: str, model: str | None = None, **kwargs: Any) -> Backend:
    """Instantiate backend ``name`` for ``model`` (None: the backend's own default, the demo model for local ones)."""
    cls: Any = backend_class(name)  # concrete subclasses take (model, **settings); the ABC itself takes none
    return cls(model, **kwargs) if model is not None else cls(**kwargs)  # type: ignore[no-any-return]
