"""Data sets: one validated container, loaders registered by name.

`datasets.load(name, **opts)` returns a CrossModalData; `datasets.available()` lists names.
Note: this top-level package shares its name with HuggingFace `datasets`; see README.

Real formats (one module each; every loader takes root=/path=, protocol=, seed=, n_validation=;
the default root is $XMH_DATA_ROOT/<folder> or ../shared/data/<folder>):
  mirflickr25k (mirflickr.py), nus-wide-tc21 / nus-wide-tc10 (nuswide.py), iapr-tc12 (iapr.py),
  mscoco (coco.py), wiki (wiki.py), pascal-sentences (pascal.py, DSCMR features), scan (scan.py),
  clip-jsonl (clip_jsonl.py), generic (generic.py), uci-mfeat (multiview.py).
Reading: mat.py (MATLAB v5/v7.3, HDF5, npz; orientation detection), cache.py (checksum-keyed
canonical copies), protocols.py (named seeded splits, split hash), text.py (caption pipeline).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from .container import CrossModalData, DataError, Split
from .registry import Registry, UnknownNameError
from . import synthetic

DATASETS: Registry[Callable[..., CrossModalData]] = Registry("dataset")
register = DATASETS.register
available = DATASETS.available

synthetic.register_presets(DATASETS)

# Real formats: each module maps registry names to loaders in its LOADERS dict.
from . import (  # noqa: E402
    clip_jsonl, coco, generic, iapr, mirflickr, multiview, nuswide, pascal, scan, wiki,
)

for _module in (mirflickr, nuswide, iapr, coco, wiki, pascal, clip_jsonl, scan, generic, multiview):
    for _name, _loader in _module.LOADERS.items():
        DATASETS.register(_name)(_loader)


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


__all__ = ["CrossModalData", "DataError", "Split", "UnknownNameError", "register", "available", "load", "get_loader", "check_options"]
