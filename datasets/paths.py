"""Where data lives: an explicit root/path, else $XMH_DATA_ROOT/<folder>, else ../shared/data/<folder>."""
from __future__ import annotations

import os
from pathlib import Path

from .container import DataError

# The repository keeps no data: real sets live beside it, at ../shared/data (see its README).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_root() -> Path:
    """Return the directory holding one folder per data set ($XMH_DATA_ROOT or ../shared/data)."""
    env = os.environ.get("XMH_DATA_ROOT")
    return Path(env) if env else SHARED_DATA


def resolve(name: str, root=None, path=None, folder: str | None = None) -> Path:
    """Return the file or folder a loader reads: `path` or `root` if given, else data_root()/folder.

    Raises DataError naming the place looked at and the option that sets it.
    """
    if root is not None and path is not None and Path(root) != Path(path):
        raise DataError(f"{name}: give root= or path=, not both ({root!r} vs {path!r})")
    chosen = path if path is not None else root
    where = Path(chosen) if chosen is not None else data_root() / (folder or name)
    if not where.exists():
        hint = "" if chosen is not None else f" (set root=/path/to/{folder or name} or XMH_DATA_ROOT)"
        raise DataError(f"{name}: {where} does not exist; expected the data set's file or folder there{hint}")
    return where
