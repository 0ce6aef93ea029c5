"""Generation backends. Each lives in its own module and is imported lazily by name.

>>> from cerm.backends import create_backend
>>> backend = create_backend("hf", "demo")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cerm.backends._base import Backend, Completion, FinishReason, SamplingParams, TokenLogprob
from cerm.backends._instrumented import InstrumentedBackend
from cerm.backends._registry import available_backends, backend_class, create_backend, register_backend
from cerm.backends.mock import MockBackend

if TYPE_CHECKING:
    from cerm.backends.hf import HFBackend

__all__ = [
    "Backend",
    "Completion",
    "FinishReason",
    "HFBackend",
    "InstrumentedBackend",
    "MockBackend",
    "SamplingParams",
    "TokenLogprob",
    "available_backends",
    "backend_class",
    "create_backend",
    "register_backend",
]


def __getattr__(name: str) -> Any:
    # Keep `import cerm.backends` free of torch: HFBackend is imported on first access only.
    if name == "HFBackend":
        from cerm.backends.hf import HFBackend

        return HFBackend
    raise AttributeError(f"module 'cerm.backends' has no attribute {name!r}")
