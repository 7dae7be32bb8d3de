"""Canonical on-disk copies of large sources, keyed by the sources' checksums.

A MATLAB v7.3 file stores a feature matrix transposed (features x items); reading its rows means
scattered reads, and numpy cannot memory-map HDF5. So a large source is converted once, block
by block, into one `.npy` per field (items x dims, float32 features), which later loads are
memory-mapped from: only the rows a split uses are ever brought into memory. `.npy` and not
`.npz`, because the members of an `.npz` cannot be memory-mapped.

Cache directory: `cache_dir=` argument, else $XMH_CACHE_DIR, else ~/.cache/xmodal-hash-bench.
The key is sha256 over (tag, sha256 of every source file, the field layout), so an edited
source file gets a fresh entry and never a stale one.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from .mat import LazyArray, materialize

# Sources above this size are cached by default (cache=None); smaller ones are read directly.
AUTO_CACHE_BYTES = int(os.environ.get("XMH_CACHE_MIN_BYTES", 512 * 2**20))


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the cache directory (created if needed)."""
    root = Path(cache_dir or os.environ.get("XMH_CACHE_DIR") or Path.home() / ".cache" / "xmodal-hash-bench")
    root.mkdir(parents=True, exist_ok=True)
    return root


def file_sha256(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> str:
    """Return the sha256 hex digest of a file.

    Digests are remembered per (absolute path, size, mtime) in the cache directory so a
    multi-GB source is hashed once, not on every load.
    """
    path = Path(path).resolve()
    st = path.stat()
    memo_file = cache_root(cache_dir) / "checksums.json"
    memo_key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    memo[memo_key] = h.hexdigest()
    tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo, indent=0))
    os.replace(tmp, memo_file)
    return memo[memo_key]


def _write_field(target: Path, arr, axis: int, dtype, where: str) -> None:
    n = arr.shape[axis] if arr.ndim == 2 else arr.shape[0]
    width = arr.shape[1 - axis] if arr.ndim == 2 else 1
    # dtype None keeps the source's (labels: a cast could hide non-integer ids from the checks).
    out = np.lib.format.open_memmap(target, mode="w+", dtype=dtype or arr.dtype, shape=(n, width))
    if isinstance(arr, LazyArray) and arr.ndim == 2:
        for start, rows in arr.row_blocks(axis):
            out[start: start + len(rows)] = rows
    else:
        out[:] = materialize(arr, axis, where)
    out.flush()
    del out


def canonical_arrays(
    tag: str,
    sources: list[Path],
    fields: Mapping[str, tuple[object, int, str, str]],
    cache_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Return ({field: memory-mapped (n, d) array}, info) from the cache, building it if absent.

    `fields`: {field: (array or LazyArray, items_axis, dtype or None, where)}. `info` holds the cache
    path, the key and each source's sha256 (for provenance in the data's meta).
    """
    root = cache_root(cache_dir)
    digests = {str(p): file_sha256(p, cache_dir) for p in sources}
    # Keys, not paths, in the layout: a moved or copied source still finds its entry.
    layout = {k: [v[3].rsplit(":", 1)[-1], v[1], str(v[2]), list(v[0].shape)] for k, v in fields.items()}
    key = hashlib.sha256(json.dumps([tag, sorted(digests.values()), layout], sort_keys=True).encode()).hexdigest()[:16]
    entry = root / f"{tag}-{key}"
    info = {"cache": str(entry), "cache_key": key, "sha256": digests}
    if not (entry / "manifest.json").exists():
        # Build in a temporary directory and rename at the end: an interrupted conversion
        # never leaves a half-written entry that a later load would trust.
        tmp = Path(tempfile.mkdtemp(prefix=f".{tag}-", dir=root))
        try:
            for name, (arr, axis, dtype, where) in fields.items():
                _write_field(tmp / f"{name}.npy", arr, axis, dtype, where)
            (tmp / "manifest.json").write_text(json.dumps({"tag": tag, "sources": digests, "layout": layout}, indent=1))
            try:
                os.replace(tmp, entry)
            except OSError:  # another process finished first; keep theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        info["built"] = True
    else:
        info["built"] = False
    out = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in fields}
    return out, info


def fetch(
    tag: str,
    sources: list[Path],
    fields: Mapping[str, tuple[object, int, str, str]],
    cache: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Return ({field: (n, d) array}, info): from the canonical cache or read into memory.

    cache=None caches only HDF5-backed sources larger than XMH_CACHE_MIN_BYTES (512 MiB).
    """
    if cache is None:
        lazy = any(isinstance(v[0], LazyArray) for v in fields.values())
        cache = lazy and sum(Path(p).stat().st_size for p in sources) > AUTO_CACHE_BYTES
    if cache:
        return canonical_arrays(tag, sources, fields, cache_dir)
    out = {}
    for name, (arr, axis, dtype, where) in fields.items():
        out[name] = materialize(arr, axis, where)  # source dtype; the container converts once
    return out, {"cache": None}
