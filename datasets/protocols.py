"""Named, seeded evaluation protocols, and the step from a pool of items to a CrossModalData.

Every labelled loader first builds a `Pool`: all items of a source in one documented order,
checked (finite features, 0/1 labels with at least one label per row) with errors naming file
and key, plus the fixed parts the source ships (`groups`: e.g. 'train'/'test' of Wikipedia). A
protocol turns the pool into index arrays; `make_data` cuts the splits and records the indices,
their hash and the sources' checksums in a DataMeta, so a result names exactly the data and split
it used. Caption-paired loaders build one Split per shipped part and call `make_paired_data`.

Protocols:
- `dcmh`: random queries, the rest is the retrieval set, training items drawn from retrieval
  (DCMH: MIRFlickr/IAPR 2,000 queries + 10,000 train; NUS-WIDE 2,100 + 10,500).
- `ucch`: UCCH's (TPAMI 2023) deterministic cut of its pre-shuffled `*-rand` files: the last
  n_query rows in file order are the queries, all other rows are both retrieval and train
  (unsupervised training on the whole database). No seed involved.
- `official` / `dscmr` / `file`: the split the source ships. `train` is the shipped training
  part; query = retrieval = shipped test part, unless the source ships a separate query and
  database (IAPR in UCCH's layout), where train is drawn from the database when not shipped.
  A shipped validation part (DSCMR's val, SCAN's dev) becomes `validation`.
Validation (`n_validation` > 0) is carved from the training side with its own seeded stream,
never from the query set; the carved items leave `train`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .cache import file_sha256
from .container import CrossModalData, DataError, DataMeta, Split
from .mat import check_finite, to_multi_hot

FIXED = ("official", "dscmr", "file")


@dataclass
class Pool:
    """All items of a source in one order: features rows-first, labels (n, C) 0/1 uint8.

    `sources` names where each field came from ('file:key'); `groups` holds the source's own
    fixed parts as index arrays into the pool; `info` is copied into the data's meta.
    """

    name: str
    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    sources: dict[str, str]
    groups: dict[str, np.ndarray] = field(default_factory=dict)
    image_ids: np.ndarray | None = None
    text_ids: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.image.shape[0]


def build_pool(
    name: str,
    image: np.ndarray,
    text: np.ndarray,
    labels: np.ndarray,
    sources: Mapping[str, str],
    *,
    groups: Mapping[str, np.ndarray] | None = None,
    image_ids: np.ndarray | None = None,
    text_ids: np.ndarray | None = None,
    label_base: int | None = None,
    num_classes: int | None = None,
    info: Mapping[str, Any] | None = None,
) -> Pool:
    """Check the arrays (errors name `sources[field]`) and return a Pool.

    Labels may be multi-hot rows or one column of integer class ids (made one-hot).
    """
    for fname, arr in (("image", image), ("text", text)):
        if arr.ndim != 2:
            raise DataError(f"{sources[fname]}: expected a 2-D items x dims array, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{sources[fname]}: expected numeric features, got dtype {arr.dtype}")
        check_finite(arr, sources[fname])
    n = image.shape[0]
    for fname, arr in (("text", text), ("labels", labels)):
        if arr.shape[0] != n:
            raise DataError(
                f"{sources[fname]}: has {arr.shape[0]} rows but {sources['image']} has {n}; "
                "expected the same items in the same order"
            )
    lab, linfo = to_multi_hot(np.asarray(labels), sources["labels"], base=label_base, n_classes=num_classes)
    for what, ids in (("image_ids", image_ids), ("text_ids", text_ids)):
        if ids is not None and len(ids) != n:
            raise DataError(f"{sources.get(what, name)}: has {len(ids)} ids for {n} items; expected one per item")
    grp = {k: np.asarray(v, dtype=np.int64) for k, v in (groups or {}).items()}
    return Pool(name, image, text, lab, dict(sources), grp, image_ids, text_ids, {**linfo, **(info or {})})


def split_hash(name: str, n: int, protocol: str, indices: Mapping[str, np.ndarray]) -> str:
    """Return a sha256 (16 hex) over the pool size, protocol and every split's index array."""
    h = hashlib.sha256(f"{name}|{n}|{protocol}".encode())
    for key in sorted(indices):
        h.update(key.encode())
        h.update(np.ascontiguousarray(indices[key], dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def _too_large(name: str, what: str, asked: int, have: int) -> DataError:
    return DataError(f"{name}: {what} = {asked} is larger than the data allows ({have}); expected a smaller split")


def dcmh_indices(name: str, n: int, n_query: int, n_train: int, seed: int) -> dict[str, np.ndarray]:
    """Return {'query','retrieval','train'} indices: random queries, rest retrieval, train from retrieval."""
    if n_query < 1 or n_train < 1:
        raise DataError(f"{name}: n_query = {n_query} and n_train = {n_train}; expected both >= 1")
    if n_query >= n:
        raise _too_large(name, "n_query", n_query, n - 1)
    if n_train > n - n_query:
        raise _too_large(name, f"n_train (drawn from the {n - n_query} retrieval items)", n_train, n - n_query)
    perm = np.random.default_rng(seed).permutation(n)
    retrieval = perm[n_query:]
    return {"query": perm[:n_query], "retrieval": retrieval, "train": retrieval[:n_train]}


def ucch_indices(name: str, n: int, n_query: int) -> dict[str, np.ndarray]:
    """Return UCCH's split: the last n_query rows are queries, the rest is retrieval = train."""
    if n_query < 1 or n_query >= n:
        raise _too_large(name, "n_query", n_query, n - 1)
    head = np.arange(n - n_query)
    return {"query": np.arange(n - n_query, n), "retrieval": head, "train": head}


def fixed_indices(name: str, groups: Mapping[str, np.ndarray], seed: int, n_train: int | None) -> dict[str, np.ndarray]:
    """Return indices for the source's own split (see module docstring)."""
    if "query" in groups:
        query = groups["query"]
        retrieval = groups.get("retrieval", query)
    elif "test" in groups:
        query = retrieval = groups["test"]
    else:
        raise DataError(f"{name}: the source ships no test/query part; use protocol='dcmh'")
    if "train" in groups:
        train = groups["train"]
        if n_train is not None:
            if n_train > len(train):
                raise _too_large(name, "n_train", n_train, len(train))
            train = np.sort(np.random.default_rng(seed).permutation(train)[:n_train])
    else:
        if n_train is None:  # training on the whole database would be silent; ask for the size
            raise DataError(f"{name}: the source ships no train part; pass n_train to draw training items from the retrieval set")
        k = n_train
        if k > len(retrieval):
            raise _too_large(name, "n_train (drawn from the retrieval set)", k, len(retrieval))
        train = np.random.default_rng(seed).permutation(retrieval)[:k]
    out = {"train": train, "query": query, "retrieval": retrieval}
    if "val" in groups:
        out["validation"] = groups["val"]
    return out


def per_class_indices(name: str, classes: np.ndarray, counts: tuple[int, ...], seed: int,
                      parts: tuple[str, ...] = ("train", "val", "test")) -> dict[str, np.ndarray]:
    """Return {part: sorted indices} taking counts[k] seeded-random items of every class for part k.

    The stratified split papers use on Pascal Sentences (30 / 10 / 10 images per class).
    """
    classes = np.asarray(classes)
    if len(counts) != len(parts):
        raise DataError(f"{name}: {len(counts)} per-class counts for parts {list(parts)}; expected one count per part")
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {p: [] for p in parts}
    for c in np.unique(classes):
        members = rng.permutation(np.flatnonzero(classes == c))
        if sum(counts) > len(members):
            raise _too_large(name, f"per-class split {list(counts)} for class {c!r}", sum(counts), len(members))
        start = 0
        for part, k in zip(parts, counts):
            out[part].extend(members[start: start + k])
            start += k
    return {p: np.sort(np.asarray(v, dtype=np.int64)) for p, v in out.items()}


def carve_validation(name: str, indices: dict[str, np.ndarray], n_validation: int, seed: int) -> dict[str, np.ndarray]:
    """Move `n_validation` seeded-random training items into 'validation' (never query items)."""
    if n_validation <= 0:
        return indices
    if "validation" in indices:
        raise DataError(f"{name}: the source ships a validation part ({len(indices['validation'])} items); do not also ask for n_validation")
    train = indices["train"]
    if n_validation >= len(train):
        raise _too_large(name, "n_validation (carved from train)", n_validation, len(train) - 1)
    # A separate stream (seed, 1): asking for validation leaves the query/retrieval split unchanged.
    pick = np.random.default_rng([seed, 1]).permutation(len(train))
    out = dict(indices)
    out["validation"] = train[pick[:n_validation]]
    out["train"] = train[np.sort(pick[n_validation:])]
    return out


def make_data(
    pool: Pool,
    protocol: str,
    seed: int = 0,
    *,
    n_query: int | None = None,
    n_train: int | None = None,
    n_validation: int = 0,
    allowed: tuple[str, ...] = ("dcmh",),
) -> CrossModalData:
    """Apply `protocol` to `pool`; return the CrossModalData with its DataMeta: each split's
    indices into the pool (order documented in meta.pool_order), their hash, the sources and
    their checksums."""
    if protocol not in allowed:
        raise DataError(f"{pool.name}: unknown protocol {protocol!r}; this data set accepts {list(allowed)}")
    n = len(pool)
    where = f"{pool.name} ({n} items from {pool.sources.get('image')})"  # split errors name the file
    if protocol == "dcmh":
        if n_query is None or n_train is None:
            raise DataError(f"{where}: protocol 'dcmh' needs n_query and n_train")
        idx = dcmh_indices(where, n, int(n_query), int(n_train), seed)
    elif protocol == "ucch":
        if n_query is None:
            raise DataError(f"{where}: protocol 'ucch' needs n_query")
        idx = ucch_indices(where, n, int(n_query))
    else:
        idx = fixed_indices(where, pool.groups, seed, n_train)
    idx = carve_validation(where, idx, int(n_validation or 0), seed)
    source = "; ".join(f"{k}={v}" for k, v in pool.sources.items())
    cut: dict[int, Split] = {}

    def subset(index: np.ndarray, split_name: str) -> Split:
        # query and retrieval share one array under the fixed protocols: build that Split once.
        if id(index) in cut:
            return cut[id(index)]
        index = np.asarray(index)
        pick = lambda ids: None if ids is None else ids[index]  # noqa: E731
        s = Split(pool.image[index], pool.text[index], pool.labels[index], image_ids=pick(pool.image_ids),
                  text_ids=pick(pool.text_ids), source=source, name=split_name)
        cut[id(index)] = s
        return s

    splits = {k: subset(v, k) for k, v in idx.items()}
    meta = DataMeta(
        protocol=protocol, seed=seed, relevance="labels",
        split_indices={k: np.asarray(v, dtype=np.int64) for k, v in idx.items()},
        split_hash=split_hash(pool.name, n, protocol, idx),
        pool_order=str(pool.info.get("pool_order", "source order")),
        sources=dict(pool.sources), checksums=source_checksums(pool.sources),
        info={k: v for k, v in pool.info.items() if k != "pool_order"} | {"n_items": n},
    )
    return CrossModalData(
        name=pool.name, train=splits["train"], query=splits["query"], retrieval=splits["retrieval"],
        validation=splits.get("validation"), meta=meta,
    )


def source_files(sources: Mapping[str, str]) -> list[Path]:
    """Return the files named in `sources` values ('file', 'file:key', joined by ' + ')."""
    files: list[Path] = []
    for value in sources.values():
        for part in str(value).split(" + "):
            for candidate in (part, part.rpartition(":")[0]):
                if candidate and Path(candidate).is_file():
                    files.append(Path(candidate))
                    break
    return sorted(set(files))


def source_checksums(sources: Mapping[str, str]) -> dict[str, str]:
    """Return {file: sha256} for every file the sources name (memoised per path, size, mtime)."""
    return {str(p): file_sha256(p) for p in source_files(sources)}


def carve_validation_images(name: str, train: Split, n_validation: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (validation image rows, remaining training image rows) of a caption split: seeded
    random images move to validation with every text that describes them."""
    if n_validation >= train.n_images:
        raise _too_large(name, "n_validation (images carved from train)", n_validation, train.n_images - 1)
    pick = np.random.default_rng([seed, 1]).permutation(train.n_images)
    return np.sort(pick[:n_validation]), np.sort(pick[n_validation:])


def make_paired_data(
    name: str,
    parts: Mapping[str, Split],
    sources: Mapping[str, str],
    *,
    protocol: str = "file",
    seed: int = 0,
    n_validation: int = 0,
    pool_order: str,
    info: Mapping[str, Any] | None = None,
) -> CrossModalData:
    """Return a caption-paired CrossModalData from one Split per shipped part.

    parts: 'train' and 'test' (query = retrieval = test), optionally 'validation' (shipped dev
    part). n_validation carves that many training images (with their texts) into validation
    when none is shipped. split_indices hold each part's image and text rows in file order.
    """
    for required in ("train", "test"):
        if required not in parts:
            raise DataError(f"{name}: a caption-paired set needs a {required!r} part; got {sorted(parts)}")
    parts = dict(parts)
    indices = {f"{k}.{m}": np.arange(getattr(v, f"n_{m}s")) for k, v in parts.items() for m in ("image", "text")}
    if n_validation > 0:
        if "validation" in parts:
            raise DataError(f"{name}: the source ships a validation part; do not also ask for n_validation")
        val_rows, train_rows = carve_validation_images(name, parts["train"], int(n_validation), seed)
        shipped = parts["train"]
        parts["validation"] = shipped.subset_images(val_rows, "validation")
        parts["train"] = shipped.subset_images(train_rows, "train")
        indices["validation.image"], indices["train.image"] = val_rows, train_rows
        indices["validation.text"], indices["train.text"] = shipped.texts_describing(val_rows), shipped.texts_describing(train_rows)
    n = sum(p.n_images + p.n_texts for p in parts.values())
    meta = DataMeta(
        protocol=protocol, seed=seed, relevance="pairing", split_indices=indices,
        split_hash=split_hash(name, n, protocol, indices), pool_order=pool_order,
        sources=dict(sources), checksums=source_checksums(sources), info=dict(info or {}),
    )
    test = parts["test"]
    return CrossModalData(name=name, train=parts["train"], query=test, retrieval=test,
                          validation=parts.get("validation"), meta=meta)
