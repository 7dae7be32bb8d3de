"""Methods: a registry of cross-modal hashing methods sharing one protocol.

`methods.get(name)` returns the class, `methods.create(name, overrides)` an instance with a
checked config, `methods.available()` the names. Register a new one with `@register("name")`.
"""
from __future__ import annotations

from typing import Any, Mapping

from datasets.registry import Registry, UnknownNameError

from .base import ConfigError, Encoder, FitContext, HashingMethod, check_bits, sign_codes

METHODS: Registry[type[HashingMethod]] = Registry("method")


def register(name: str):
    """Class decorator: register a HashingMethod subclass under `name` and set its `.name`."""
    inner = METHODS.register(name)

    def decorator(cls: type[HashingMethod]) -> type[HashingMethod]:
        cls.name = name
        return inner(cls)

    return decorator


get = METHODS.get
available = METHODS.available


def create(name: str, overrides: Mapping[str, Any] | None = None) -> HashingMethod:
    """Return method `name` configured with its defaults plus `overrides` (validated)."""
    return get(name).from_overrides(overrides)


# Importing the method modules registers them.
from . import cca, cca_itq, cmfh, dcmh, dscmr, sam, scm, seph, ssah  # noqa: E402,F401

__all__ = [
    "ConfigError", "Encoder", "FitContext", "HashingMethod", "UnknownNameError",
    "available", "check_bits", "create", "get", "register", "sign_codes",
]
