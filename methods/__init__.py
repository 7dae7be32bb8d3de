"""Methods: a registry of cross-modal hashing methods sharing one protocol.

`methods.get(name)` returns the class, `methods.create(name, overrides)` an instance with a
checked config, `methods.available()` the names. A new method is one new module in this folder
whose class carries `@register("name")` (from methods.registry): every module here is imported
below, so nothing else needs editing. Code outside the repository registers the same way and is
named in a suite's `imports`.
Deep methods train under the shared stopping rule (methods.training) and attach a FitRecord to
their Encoder; the closed-form classic baselines fit in one solve.

Modules: base (protocol, encoders, config checking), registry, training (the shared loop and
stopping rule), selection (validation scores), layers (networks), losses, optim, shallow (the
classic baselines' shared linear algebra), and one module per method.
"""
from __future__ import annotations

from registry import UnknownNameError

from .base import ConfigError, Encoder, FitContext, FitRecord, HashingMethod, StoppingRule, check_bits, sign_codes
from .registry import available, create, get, register
from .training import stopping_rule

import importlib as _importlib  # noqa: E402
import pkgutil as _pkgutil  # noqa: E402

# Importing every module of the package registers the methods in it.
for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "ConfigError", "Encoder", "FitContext", "FitRecord", "HashingMethod", "StoppingRule", "UnknownNameError",
    "available", "check_bits", "create", "get", "register", "sign_codes", "stopping_rule",
]
