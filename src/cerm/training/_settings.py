"""Build a stage's config dataclass from a mapping (a YAML section, ``--set`` overrides), one rule for every stage.

PyYAML follows YAML 1.1, where ``5e-5`` (no dot in the mantissa) is a *string*, not a float; ``learning_rate: 5e-5``
in a config file or ``--set learning_rate=5e-5`` would otherwise reach the dataclass as text and fail deep inside a
comparison. Numbers written as text are converted here for the fields typed as numbers, and anything that is not a
number there is refused by the field's name.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from cerm._errors import ConfigurationError

T = TypeVar("T")


def _numeric_kinds(annotation: Any) -> tuple[type, ...]:
    """The number types a field accepts (``float | None`` -> ``(float,)``), or () when it accepts text or no number."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = typing.get_args(annotation) if union else (annotation,)
    if str in options:
        return ()
    return tuple(kind for kind in (float, int) if kind in options)


def _coerce(name: str, value: Any, kinds: tuple[type, ...], stage: str) -> Any:
    if not kinds or not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if float in kinds:
            return float(text)
        return int(text)
    except ValueError:
        wanted = "a number" if float in kinds else "an integer"
        raise ConfigurationError(f"{stage} setting {name!r} must be {wanted}, got {value!r}") from None


def settings_from_mapping(cls: type[T], values: Mapping[str, Any], stage: str) -> T:
    """``cls(**values)`` with unknown keys refused by name and numbers given as text converted."""
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigurationError(f"unknown {stage} setting(s) {unknown}; known: {sorted(known)}")
    hints = typing.get_type_hints(cls)
    converted = {key: _coerce(key, value, _numeric_kinds(hints.get(key)), stage) for key, value in values.items()}
    return cls(**converted)
