"""Methods: a registry of cross-modal hashing methods sharing one protocol.

`methods.get(name)` returns the class, `methods.create(name, overrides)` an instance with a
checked config, `methods.available()` the names. A new method is one module that decorates its
class with `@register("name")` (from methods.registry) and is imported below.
"""
from __future__ import annotations

from registry import UnknownNameError

from .base import ConfigError, Encoder, FitContext, HashingMethod, check_bits, sign_codes
from .registry import available, create, get, register

# Importing the method modules registers them.
from . import dcmh, dscmr, sam, ssah  # noqa: E402,F401

__all__ = [
    "ConfigError", "Encoder", "FitContext", "HashingMethod", "UnknownNameError",
    "available", "check_bits", "create", "get", "register", "sign_codes",
]
