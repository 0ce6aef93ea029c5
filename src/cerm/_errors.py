"""Exceptions for misuse. Per-item failures are never exceptions: they are UNSCORABLE judgments."""

from __future__ import annotations


class CermError(Exception):
    """Base class of cerm's own exceptions."""


class ModelNotFoundError(CermError):
    """The model (or adapter) could not be found or loaded."""


class BackendUnavailableError(CermError):
    """A backend's optional dependencies are not installed (the message names the extra to install)."""


class ConfigurationError(CermError, ValueError):
    """Settings that cannot work together."""
