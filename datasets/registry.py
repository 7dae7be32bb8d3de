"""The data-set registry: loaders registered by name with `@register("name")`, and loading by name."""
from __future__ import annotations

import inspect
from typing import Any, Callable

from registry import Registry

from .container import CrossModalData, DataError

DATASETS: Registry[Callable[..., CrossModalData]] = Registry("dataset")
register = DATASETS.register
available = DATASETS.available


def get_loader(name: str) -> Callable[..., CrossModalData]:
    """Return the loader function registered as `name` (UnknownNameError lists known names)."""
    return DATASETS.get(name)


def check_options(name: str, opts: dict[str, Any]) -> None:
    """Raise DataError if `opts` names an option that loader `name` does not accept."""
    loader = DATASETS.get(name)
    params = inspect.signature(loader).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return  # the loader checks its own open-ended options (the synthetic presets do)
    accepted = [p for p in params if not p.startswith("_")]
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise DataError(f"{name}: unknown option(s) {unknown}; accepted: {', '.join(accepted)}")


def load(name: str, **opts: Any) -> CrossModalData:
    """Load data set `name` with loader options `opts`; returns a validated CrossModalData."""
    check_options(name, opts)
    return DATASETS.get(name)(**opts)
