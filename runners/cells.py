"""A grid cell's data and identity: its data set (loaded and preprocessed once for the cells that
share it), its run key and the fit code version behind it. Shared by the grid (runners.run), its
tasks on a cluster, tuning (runners.tune) and rescoring (runners.rescore)."""
from __future__ import annotations

import dataclasses
from typing import Any

import datasets
import methods
from datasets import CrossModalData
from datasets.preprocessing import preprocess

from .identity import fit_code_version, run_key
from .progress import Reporter
from .suite import Cell, DatasetEntry

_loaded: dict[str, CrossModalData] = {}


def load_dataset(entry: DatasetEntry, reporter: Reporter | None = None) -> CrossModalData:
    """Return a suite's data set, preprocessed as the suite declares; only the most recent one
    stays in memory (cells come grouped by data set)."""
    ds_id = repr((entry.name, sorted(entry.options.items()), entry.preprocess))
    if ds_id not in _loaded:
        _loaded.clear()
        if reporter:
            reporter.describe(f"loading {entry.name}")
        data = datasets.load(entry.name, **entry.options)
        _loaded[ds_id] = preprocess(data, entry.preprocess)
        if reporter:
            reporter.log(_loaded[ds_id].summary())
    return _loaded[ds_id]


def forget_loaded() -> None:
    """Drop the data set kept in memory (the next load reads the files again)."""
    _loaded.clear()


def load_cell_data(cell: Cell, reporter: Reporter | None = None) -> CrossModalData:
    """Return the cell's data set (see load_dataset)."""
    return load_dataset(cell.dataset, reporter)


def cell_identity(cell: Cell, data: CrossModalData) -> tuple[str, dict[str, Any], str]:
    """Return (run_key, resolved method params, fit code version) of a cell on its loaded data."""
    method = methods.create(cell.method.name, cell.method.overrides)
    params = method.params()
    version = fit_code_version(cell.method.name, cell.dataset.name)
    key = run_key({
        "dataset": cell.dataset.name, "dataset_options": dict(cell.dataset.options),
        "preprocessing": dict(data.meta.preprocessing), "split_hash": data.meta.split_hash,
        "fingerprint": data.fingerprint(), "method": cell.method.name, "params": params,
        "bits": cell.bits, "seed": cell.seed, "code_version": version,
        "stopping": dataclasses.asdict(cell.stopping),
    })
    return key, params, version


def cell_key(cell: Cell) -> str:
    """Return the run key of a cell (loading its data set, kept for the next cells)."""
    return cell_identity(cell, load_cell_data(cell))[0]
