"""Bring-your-own data: one .npz / .h5 / .mat (v5 or v7.3) file with image, text and labels arrays.

Also the shared readers the format modules build on:
- `read_fields`: each field from (file, candidate keys), orientation detected jointly across
  files, large HDF5 sources through the checksum-keyed cache;
- `read_parts`: sources that ship fixed parts (train/test, database/query), each part oriented
  on its own and concatenated in a documented pool order.

Generic layouts accepted (key names are matched case-sensitively, first found wins):
- all items: image in {image, images, img, XAll, IAll, X}, text in {text, texts, txt, YAll, Y},
  labels in {labels, label, LAll, L, y}; protocol 'dcmh' (n_query, n_train) cuts the split
  at random, 'ucch' takes the last n_query rows as queries and the rest as retrieval = train;
- pre-split: `<part>_<field>` keys for parts train / val / query / retrieval / test and fields
  image / text / labels (e.g. train_image, test_labels); protocol 'file' uses those parts.
`keys={'image': 'my_key', ...}` overrides the names of the all-items layout.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .cache import fetch
from .container import CrossModalData, DataError
from .mat import ArrayFile, materialize, orient
from .paths import resolve
from .protocols import build_pool, make_data
from .registry import register

IMAGE_KEYS = ("image", "images", "img", "XAll", "IAll", "X")
TEXT_KEYS = ("text", "texts", "txt", "YAll", "Y")
LABEL_KEYS = ("labels", "label", "LAll", "L", "y")
PARTS = ("train", "val", "query", "retrieval", "test")
FIELDS = ("image", "text", "labels")


def pick_key(f: ArrayFile, candidates: Sequence[str], what: str) -> str:
    """Return the first candidate key present; a file holding a single variable needs no name match."""
    for key in candidates:
        if key in f:
            return key
    if len(f.keys()) == 1:
        return f.keys()[0]
    return f.first_present(candidates, what)  # raises, listing what was expected and found


def read_fields(
    tag: str,
    spec: Mapping[str, tuple[Path, Sequence[str]]],
    *,
    cache: bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, str], dict]:
    """Read {field: (file, candidate keys)} with jointly detected orientation.

    Returns ({field: (n, d) array}, {field: 'file:key'}, info). Features come back float32 when
    cached (memory-mapped), else in the source dtype.
    """
    opened: dict[Path, ArrayFile] = {}
    try:
        arrays, where = _read_fields(spec, opened)
        _, axes = orient(arrays, where)
        fields = {
            k: (arrays[k], axes[k], None if k == "labels" else "float32", where[k]) for k in arrays
        }
        out, info = fetch(tag, list(opened), fields, cache=cache, cache_dir=cache_dir)
        info["formats"] = {str(p): f.format for p, f in opened.items()}
        return out, where, info
    finally:
        for f in opened.values():
            f.close()


def _read_fields(spec: Mapping[str, tuple[Path, Sequence[str]]], opened: dict[Path, ArrayFile],
                 prefix: str = "") -> tuple[dict[str, object], dict[str, str]]:
    """Return ({field: array as stored}, {field: 'file:key'}) for {field: (file, candidate keys)},
    opening each file once into `opened` (the caller closes them)."""
    arrays, where = {}, {}
    for field, (path, candidates) in spec.items():
        path = Path(path)
        if path not in opened:
            opened[path] = ArrayFile(path)
        f = opened[path]
        key = pick_key(f, candidates, f"{prefix}{field}")
        arrays[field], where[field] = f.get(key), f.where(key)
    return arrays, where


def read_parts(
    parts: Mapping[str, Mapping[str, tuple[Path, Sequence[str]]]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str], dict]:
    """Read fixed parts ({part: {field: (file, candidate keys)}}), each oriented on its own.

    Returns (arrays concatenated in the order of `parts`, {part: pool indices},
    {field: 'file:key + ...'}, info). Arrays are read into memory.
    """
    opened: dict[Path, ArrayFile] = {}
    try:
        chunks: dict[str, list[np.ndarray]] = {}
        where_all: dict[str, list[str]] = {}
        groups: dict[str, np.ndarray] = {}
        start = 0
        for part, spec in parts.items():
            arrays, where = _read_fields(spec, opened, f"{part} ")
            n, axes = orient(arrays, where)
            for field, arr in arrays.items():
                a = materialize(arr, axes[field], where[field])
                chunks.setdefault(field, []).append(a)
                where_all.setdefault(field, []).append(where[field])
            groups[part] = np.arange(start, start + n)
            start += n
        widths = {}
        for field, items in chunks.items():
            w = {a.shape[1] for a in items}
            if len(w) > 1:
                raise DataError(
                    f"{' vs '.join(where_all[field])}: {field} widths differ across parts "
                    f"({[a.shape[1] for a in items]}); expected the same feature/label width in every part"
                )
            widths[field] = w.pop()
        out = {field: np.concatenate(items) for field, items in chunks.items()}
        info = {"formats": {str(p): f.format for p, f in opened.items()}}
        return out, groups, {k: " + ".join(v) for k, v in where_all.items()}, info
    finally:
        for f in opened.values():
            f.close()


@register("generic")
def load_generic(
    path=None, root=None, *, protocol: str | None = None, seed: int = 0, n_query: int = 2000,
    n_train: int = 10000, n_validation: int = 0, keys: Mapping[str, str] | None = None,
    label_base: int | None = None, cache: bool | None = None, cache_dir=None, name: str = "generic",
) -> CrossModalData:
    """Return a CrossModalData from one user file (.npz, .h5, .mat v5/v7.3); see the module docstring.

    protocol None picks 'file' for a pre-split file and 'dcmh' otherwise. Single-column integer
    labels are class ids (label_base None: 0 if the smallest id is 0, else 1) made one-hot.
    """
    if path is None and root is None:
        raise DataError(f"{name}: needs path= (a .npz, .h5 or .mat file with image, text and labels arrays)")
    where = resolve(name, root, path)
    with ArrayFile(where) as f:
        present = set(f.keys())
    pre_split = {p for p in PARTS if all(f"{p}_{fld}" in present for fld in FIELDS)}
    if pre_split and keys is None:
        parts = {p: {fld: (where, [f"{p}_{fld}"]) for fld in FIELDS} for p in PARTS if p in pre_split}
        arrays, groups, sources, info = read_parts(parts)
        protocol = protocol or "file"
        allowed = ("file", "dcmh", "ucch")
    else:
        keys = dict(keys or {})
        spec = {
            "image": (where, [keys["image"]] if "image" in keys else IMAGE_KEYS),
            "text": (where, [keys["text"]] if "text" in keys else TEXT_KEYS),
            "labels": (where, [keys["labels"]] if "labels" in keys else LABEL_KEYS),
        }
        arrays, sources, info = read_fields(name, spec, cache=cache, cache_dir=cache_dir)
        groups = {}
        protocol = protocol or "dcmh"
        allowed = ("dcmh", "ucch")
    pool = build_pool(
        name, arrays["image"], arrays["text"], arrays["labels"], sources, groups=groups,
        label_base=label_base,
        info={**info, "pool_order": "file row order" + (" (parts concatenated: " + ", ".join(groups) + ")" if groups else "")},
    )
    if protocol in ("dcmh", "ucch"):
        kwargs = {"n_query": n_query, "n_train": n_train}
    else:  # a shipped train part is used whole; without one, n_train items come from retrieval
        kwargs = {} if "train" in groups else {"n_train": n_train}
    return make_data(pool, protocol, seed, n_validation=n_validation, allowed=allowed, **kwargs)




def load_spec(
    name: str, spec: Mapping[str, tuple[Path, Sequence[str]]], *, protocol: str, seed: int,
    n_query: int, n_train: int, n_validation: int, cache: bool | None, cache_dir, info: Mapping | None = None,
    label_base: int | None = None,
) -> CrossModalData:
    """Read an all-items source described by `spec` and apply the random `dcmh` protocol."""
    arrays, sources, rinfo = read_fields(name, spec, cache=cache, cache_dir=cache_dir)
    pool = build_pool(
        name, arrays["image"], arrays["text"], arrays["labels"], sources, label_base=label_base,
        info={**rinfo, "pool_order": "file row order", **(info or {})},
    )
    return make_data(pool, protocol, seed, n_query=n_query, n_train=n_train, n_validation=n_validation,
                     allowed=("dcmh", "ucch"))
