"""Data sets: one validated container, loaders registered by name.

`datasets.load(name, **opts)` returns a CrossModalData; `datasets.available()` lists names.
A new data set is one new module in this folder whose loader carries `@register("name")` (from
datasets.registry): every module here is imported below, so nothing else needs editing. Note: this top-level package shares its name with HuggingFace
`datasets`; see README.

Real formats (one module each; every loader takes root=/path=, protocol=, seed=, n_validation=;
the default root is $XMH_DATA_ROOT/<folder> or ../shared/data/<folder>):
  mirflickr25k (mirflickr.py), nus-wide-tc21 / nus-wide-tc10 (nuswide.py), iapr-tc12 (iapr.py),
  mscoco (coco.py), wiki (wiki.py), pascal-sentences (pascal.py, DSCMR features), scan (scan.py),
  clip-jsonl (clip_jsonl.py), generic (generic.py), uci-mfeat (multiview.py), and the synthetic
  presets (synthetic.py).
Reading: mat.py (MATLAB v5/v7.3, HDF5, npz; orientation detection), cache.py (checksum-keyed
canonical copies), protocols.py (named seeded splits, split hash), text.py (caption pipeline).
"""
from __future__ import annotations

from registry import UnknownNameError

from .container import CrossModalData, DataError, Split
from .registry import available, check_options, get_loader, load, register

import importlib as _importlib  # noqa: E402
import pkgutil as _pkgutil  # noqa: E402

# Importing every module of the package registers the loaders in it. `text` is also a command
# (python -m datasets.text): importing it here first would make runpy warn about a double import.
COMMAND_MODULES = ("text",)
for _module in _pkgutil.iter_modules(__path__):
    if _module.name not in COMMAND_MODULES:
        _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["CrossModalData", "DataError", "Split", "UnknownNameError", "register", "available", "load", "get_loader", "check_options"]
