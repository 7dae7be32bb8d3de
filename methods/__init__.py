"""Methods: a registry of cross-modal hashing methods sharing one protocol.

`methods.get(name)` returns the class, `methods.create(name, overrides)` an instance with a
checked config, `methods.available()` the names. A new method is one module that decorates its
class with `@register("name")` (from methods.registry) and is imported below. Deep methods train
under the shared stopping rule (methods.training) and attach a FitRecord to their Encoder.

Modules: base (protocol, encoders, config checking), registry, training (the shared loop and
stopping rule), selection (validation scores), layers (networks), losses, optim.
"""
from __future__ import annotations

from registry import UnknownNameError

from .base import ConfigError, Encoder, FitContext, FitRecord, HashingMethod, StoppingRule, check_bits, sign_codes
from .registry import available, create, get, register
from .training import stopping_rule

# Importing the method modules registers them.
from . import dcmh, dscmr, sam, ssah  # noqa: E402,F401

__all__ = [
    "ConfigError", "Encoder", "FitContext", "FitRecord", "HashingMethod", "StoppingRule", "UnknownNameError",
    "available", "check_bits", "create", "get", "register", "sign_codes", "stopping_rule",
]
