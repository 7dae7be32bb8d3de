"""Reading arrays from MATLAB v5, MATLAB v7.3 (HDF5), plain HDF5 and .npz/.npy files.

Every array comes back in its *logical* orientation: the shape MATLAB (or numpy, for files
written from Python) shows. h5py reads a MATLAB v7.3 variable with its axes reversed (MATLAB is
column-major), so those are reversed back here. Which axis holds the items is not assumed: it is
detected by `orient`, which finds the one item count shared by every array of a set and refuses
ambiguous shapes with an error naming the file and key.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from .container import DataError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def sniff(path: str | os.PathLike) -> str:
    """Return the container format of `path`: 'v5', 'v7.3', 'h5', 'npz' or 'npy'.

    Decided from the first bytes, never from the extension, so a renamed or truncated file is
    caught here with a message that says what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a MATLAB/HDF5/npz data file here")
    with open(path, "rb") as fh:
        head = fh.read(1032)
    if not head:
        raise DataError(f"{path}: empty file (0 bytes); expected a MATLAB/HDF5/npz data file")
    if head.startswith(b"MATLAB 7.3"):
        # v7.3 = HDF5 with a 512-byte MATLAB user block in front.
        if head[512:520] != HDF5_SIGNATURE:
            raise DataError(f"{path}: MATLAB 7.3 header but no HDF5 signature at byte 512; the file is truncated or corrupt")
        return "v7.3"
    if head.startswith(b"MATLAB 5.0"):
        if len(head) < 128:
            raise DataError(f"{path}: MATLAB 5.0 header shorter than 128 bytes; the file is truncated")
        return "v5"
    if head.startswith(HDF5_SIGNATURE) or head[512:520] == HDF5_SIGNATURE or head[1024:1032] == HDF5_SIGNATURE:
        return "h5"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "npz"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    raise DataError(
        f"{path}: not a MATLAB v5/v7.3, HDF5 or .npz file (first bytes {head[:16]!r}); "
        "expected a header 'MATLAB 5.0'/'MATLAB 7.3' or an HDF5/zip signature"
    )


class ArrayFile:
    """An open data file; `get(key)` returns arrays in logical orientation.

    HDF5-backed arrays are returned as `LazyArray` (nothing read until asked), others as numpy
    arrays. Use as a context manager so the HDF5 handle is closed.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.format = sniff(self.path)
        self._h5 = None
        self._arrays: dict[str, np.ndarray] = {}
        try:
            if self.format == "v5":
                import scipy.io

                raw = scipy.io.loadmat(str(self.path), squeeze_me=False, mat_dtype=False)
                self._arrays = {k: v for k, v in raw.items() if not k.startswith("__")}
            elif self.format in ("v7.3", "h5"):
                import h5py

                self._h5 = h5py.File(self.path, "r")
            elif self.format == "npz":
                with np.load(self.path, allow_pickle=False) as z:
                    self._arrays = {k: z[k] for k in z.files}
            else:  # npy: one array, exposed under the file's stem
                self._arrays = {self.path.stem: np.load(self.path, mmap_mode="r", allow_pickle=False)}
        except DataError:
            raise
        except Exception as exc:  # scipy/h5py/zip raise many types (MatReadError, zlib.error, OSError...)
            raise DataError(
                f"{self.path}: cannot read as {self.format} ({type(exc).__name__}: {exc}); "
                "the file is truncated, corrupt or not what its header claims"
            ) from None

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> "ArrayFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    # -- access ------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Return the variable names in the file (HDF5: top-level datasets, MATLAB internals skipped)."""
        if self._h5 is not None:
            return [k for k in self._h5.keys() if not k.startswith("#")]
        return list(self._arrays)

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def where(self, key: str) -> str:
        return f"{self.path}:{key}"

    def get(self, key: str) -> "np.ndarray | LazyArray":
        """Return variable `key` in logical orientation (DataError naming file and key if absent)."""
        if key not in self.keys():
            raise DataError(f"{self.path}: missing key {key!r}; the file has keys {sorted(self.keys())}")
        if self._h5 is not None:
            import h5py

            node = self._h5[key]
            if not isinstance(node, h5py.Dataset) or node.dtype.kind not in "biuf":
                raise DataError(
                    f"{self.where(key)}: is a {type(node).__name__} of dtype "
                    f"{getattr(node, 'dtype', 'n/a')}; expected a numeric array "
                    "(MATLAB sparse, struct and cell variables are not supported: save a full numeric matrix)"
                )
            return LazyArray(node, reverse=self.format == "v7.3", where=self.where(key))
        arr = self._arrays[key]
        if hasattr(arr, "toarray"):  # v5 sparse matrix
            arr = arr.toarray()
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            raise DataError(
                f"{self.where(key)}: has dtype {getattr(arr, 'dtype', type(arr).__name__)}; "
                "expected a numeric array (struct/cell/char variables are not supported)"
            )
        return arr

    def first_present(self, candidates: Sequence[str], what: str) -> str:
        """Return the first of `candidates` present in the file, or DataError listing them."""
        for key in candidates:
            if key in self.keys():
                return key
        raise DataError(
            f"{self.path}: missing key for {what}; expected one of {list(candidates)}, "
            f"the file has keys {sorted(self.keys())}"
        )


class LazyArray:
    """An HDF5 dataset seen in logical orientation, read only when asked.

    `reverse=True` for MATLAB v7.3 variables (h5py shows them with axes reversed).
    """

    def __init__(self, dataset, reverse: bool, where: str):
        self.dataset = dataset
        self.reverse = reverse
        self.where = where
        self.shape = tuple(dataset.shape[::-1] if reverse else dataset.shape)
        self.dtype = dataset.dtype
        self.ndim = len(self.shape)

    def __array__(self, dtype=None, copy=None):
        try:
            arr = self.dataset[()]
        except Exception as exc:  # truncated data blocks surface as OSError at read time
            raise DataError(f"{self.where}: cannot read data ({type(exc).__name__}: {exc}); the file is truncated or corrupt") from None
        arr = arr.T if self.reverse else arr
        return arr if dtype is None else arr.astype(dtype)

    def row_blocks(self, items_axis: int, block: int = 8192) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start, rows) blocks of a 2-D array with items on `items_axis`, reading chunk by chunk."""
        n = self.shape[items_axis]
        stored_axis = (self.ndim - 1 - items_axis) if self.reverse else items_axis
        for start in range(0, n, block):
            sl = [slice(None)] * self.ndim
            sl[stored_axis] = slice(start, min(n, start + block))
            try:
                part = self.dataset[tuple(sl)]
            except Exception as exc:
                raise DataError(f"{self.where}: cannot read rows {start}.. ({type(exc).__name__}: {exc}); the file is truncated or corrupt") from None
            part = part.T if self.reverse else part
            yield start, (part if items_axis == 0 else part.T)


def shape_of(arr) -> tuple[int, ...]:
    return tuple(arr.shape)


def orient(arrays: Mapping[str, object], where: Mapping[str, str], n: int | None = None) -> tuple[int, dict[str, int]]:
    """Find which axis holds the items in each 2-D array of one set; return (n_items, {name: axis}).

    Rows must be the same items across modalities and labels, so the item count is the one size
    shared by every array. 1-D arrays are vectors over items. Raises DataError (naming file and
    key) when no size is shared, when two sizes are (e.g. every array square), or when an array is
    square with side n (its orientation cannot be told from its shape).
    """
    shapes = {name: shape_of(a) for name, a in arrays.items()}
    for name, shp in shapes.items():
        if len(shp) not in (1, 2):
            raise DataError(
                f"{where[name]}: has {len(shp)} dimensions, shape {shp}; expected a 2-D matrix (items x dims)"
                + (" -- this looks like raw pixels; extract feature vectors first (e.g. VGG fc7)" if len(shp) == 4 else "")
            )
        if 0 in shp:
            raise DataError(f"{where[name]}: is empty (shape {shp}); expected items x dims")
    if n is None:
        common = None
        for shp in shapes.values():
            sizes = {s for s in shp if s != 1 or len(shp) == 1}
            common = sizes if common is None else common & sizes
        common = common or set()
        listing = ", ".join(f"{where[k]} {v}" for k, v in shapes.items())
        if not common:
            raise DataError(f"no item count shared by {listing}; expected every array to have the same number of rows (items)")
        if len(common) > 1:
            raise DataError(
                f"orientation is ambiguous: sizes {sorted(common)} are shared by {listing}; "
                "cannot tell which axis holds the items -- pass arrays with distinct item and feature sizes"
            )
        n = common.pop()
    axes: dict[str, int] = {}
    for name, shp in shapes.items():
        if len(shp) == 1:
            if shp[0] != n:
                raise DataError(f"{where[name]}: has {shp[0]} entries; expected {n} (one per item)")
            axes[name] = 0
            continue
        hits = [ax for ax in (0, 1) if shp[ax] == n]
        if not hits:
            raise DataError(f"{where[name]}: shape {shp} has no axis of length {n}; expected {n} items (rows) to match the other arrays")
        if len(hits) == 2 and shp[0] != 1:
            raise DataError(f"{where[name]}: is square {shp}; cannot tell whether rows or columns are the {n} items")
        axes[name] = hits[0]
    return n, axes


def materialize(arr, items_axis: int, where: str) -> np.ndarray:
    """Return `arr` as an in-memory numpy array with items on axis 0 (vectors become (n, 1))."""
    out = np.asarray(arr)
    if out.ndim == 1:
        return out[:, None]
    # C order: MATLAB arrays arrive column-major, and splits cut rows (10x faster from C order).
    return np.ascontiguousarray(out if items_axis == 0 else out.T)


def check_finite(arr: np.ndarray, where: str, block: int = 65536) -> None:
    """Raise DataError naming `where` if any feature is NaN/Inf (checked in row blocks to bound memory)."""
    if arr.dtype.kind not in "fc":
        return
    bad_rows = 0
    first = -1
    for start in range(0, arr.shape[0], block):
        part = np.asarray(arr[start: start + block])
        bad = ~np.isfinite(part).all(axis=1)
        if bad.any():
            if first < 0:
                first = start + int(np.flatnonzero(bad)[0])
            bad_rows += int(bad.sum())
    if bad_rows:
        raise DataError(f"{where}: NaN/Inf values in {bad_rows} rows (first: row {first}); expected finite features")


def to_multi_hot(labels: np.ndarray, where: str, base: int | None = None, n_classes: int | None = None) -> tuple[np.ndarray, dict]:
    """Return ((n, C) uint8 multi-hot labels, info) from multi-hot rows or a class-id vector.

    A single column of integers is read as class ids: `base` 0 or 1 (None = 0 if the smallest id
    is 0, else 1, as MATLAB files count from 1); `info` records the decision. Multi-hot rows must be
    0/1 with at least one label each. Errors name `where` and what was expected.
    """
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    info: dict = {}
    if labels.shape[1] == 1:
        ids = labels[:, 0]
        if ids.dtype.kind == "f" and not (np.isfinite(ids).all() and (ids == np.round(ids)).all()):
            raise DataError(f"{where}: a single label column must hold integer class ids; found non-integer values")
        ids = ids.astype(np.int64)
        if base is None:
            base = 0 if ids.min() == 0 else 1
        if base not in (0, 1):
            raise DataError(f"{where}: label base must be 0 or 1, got {base}")
        ids = ids - base
        c = int(n_classes) if n_classes is not None else int(ids.max()) + 1
        if ids.min() < 0 or ids.max() >= c:
            raise DataError(
                f"{where}: class ids range {int(ids.min()) + base}..{int(ids.max()) + base}; "
                f"expected {base}..{c - 1 + base} ({c} classes counted from {base})"
            )
        out = np.zeros((len(ids), c), dtype=np.uint8)
        out[np.arange(len(ids)), ids] = 1
        info = {"label_kind": "class-id", "label_base": base, "num_classes": c}
        return out, info
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"{where}: multi-hot labels must be 0/1; found values {np.unique(labels)[:8].tolist()}")
    out = labels.astype(np.uint8, copy=False)
    empty = np.flatnonzero(out.sum(axis=1) == 0)
    if empty.size:
        raise DataError(
            f"{where}: {empty.size} label rows have no label (first: row {int(empty[0])}); "
            "expected at least one label per item"
        )
    info = {"label_kind": "multi-hot", "num_classes": out.shape[1]}
    return out, info


def read_set(
    file: ArrayFile,
    keys: Mapping[str, str],
    n: int | None = None,
) -> tuple[int, dict[str, object], dict[str, int]]:
    """Fetch `keys` ({field: key}) from `file`, detect orientation; return (n, {field: array}, {field: axis})."""
    arrays = {field: file.get(key) for field, key in keys.items()}
    where = {field: file.where(key) for field, key in keys.items()}
    n, axes = orient(arrays, where, n)
    return n, arrays, axes
