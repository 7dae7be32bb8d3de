"""The method registry: `@register("name")` on a HashingMethod subclass; lookup and creation by name."""
from __future__ import annotations

from typing import Any, Mapping

from registry import Registry

from .base import HashingMethod

METHODS: Registry[type[HashingMethod]] = Registry("method")
get = METHODS.get
available = METHODS.available


def register(name: str):
    """Class decorator: register a HashingMethod subclass under `name` and set its `.name`."""
    inner = METHODS.register(name)

    def decorator(cls: type[HashingMethod]) -> type[HashingMethod]:
        cls.name = name
        return inner(cls)

    return decorator


def create(name: str, overrides: Mapping[str, Any] | None = None) -> HashingMethod:
    """Return method `name` configured with its defaults plus `overrides` (validated)."""
    return get(name).from_overrides(overrides)
