"""The generic name -> object registry that datasets and methods both use (timm-style decorators).

A top-level module of its own so that neither package reaches into the other for it."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """Raised for a name that no entry of a registry carries; the message lists the known names."""


class Registry(Generic[T]):
    """Maps names to registered objects; `kind` names what is registered in error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Return a decorator that registers its argument under `name` (lower-case, unique)."""
        if not name or name != name.lower():
            raise ValueError(f"{self.kind} name {name!r} must be non-empty and lower-case")

        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the entry for `name`, or raise UnknownNameError listing what is accepted."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.available())}.{hint}"
            ) from None

    def available(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
