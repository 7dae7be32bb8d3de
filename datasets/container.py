"""The one validated container every loader returns: train / query / retrieval [/ validation].

Arrays are checked once, here, at the border: 2-D, equal row counts, finite features,
multi-hot 0/1 labels with at least one label per row, equal widths across splits.
Loaders pass `source` so an error names the file and field it came from.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


class DataError(ValueError):
    """Malformed input data; the message names the source, the field and what was expected."""


def _check_matrix(arr: Any, source: str, fieldname: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise DataError(f"{source}: field {fieldname!r} must be a 2-D array (items x dims), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{source}: field {fieldname!r} is empty (shape {arr.shape}); expected at least one item and one dimension")
    return arr


@dataclass(frozen=True)
class Split:
    """One side of a protocol (train, query, retrieval or validation).

    image: (n, d_img) float32 features; text: (n, d_txt) float32 features;
    labels: (n, C) float32 multi-hot in {0, 1}, every row with at least one label;
    ids: optional (n,) int64 instance ids (paired caption sets: relevance = same id).
    """

    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    source: str = field(default="<memory>", compare=False)
    name: str = field(default="split", compare=False)

    def __post_init__(self) -> None:
        where = f"{self.source} [{self.name}]"
        image = _check_matrix(self.image, where, "image")
        text = _check_matrix(self.text, where, "text")
        labels = _check_matrix(self.labels, where, "labels")
        n = image.shape[0]
        for fname, arr in (("text", text), ("labels", labels)):
            if arr.shape[0] != n:
                raise DataError(
                    f"{where}: field {fname!r} has {arr.shape[0]} rows but 'image' has {n}; rows must be the same items"
                )
        for fname, arr in (("image", image), ("text", text)):
            if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
                raise DataError(f"{where}: field {fname!r} must be numeric, got dtype {arr.dtype}")
            arr32 = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.isfinite(arr32).all():
                bad = int((~np.isfinite(arr32)).any(axis=1).sum())
                raise DataError(f"{where}: field {fname!r} has NaN/Inf values in {bad} rows; expected finite features")
            object.__setattr__(self, fname, arr32)
        lab = np.ascontiguousarray(labels, dtype=np.float32)
        if not np.isin(lab, (0.0, 1.0)).all():
            raise DataError(f"{where}: field 'labels' must be multi-hot with values in {{0, 1}}")
        empty = np.flatnonzero(lab.sum(axis=1) == 0)
        if empty.size:
            raise DataError(
                f"{where}: field 'labels' has {empty.size} rows with no label (first: row {int(empty[0])}); "
                "every item needs at least one label"
            )
        object.__setattr__(self, "labels", lab)
        if self.ids is not None:
            ids = np.asarray(self.ids)
            if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
                raise DataError(f"{where}: field 'ids' must be ({n},) integers, got shape {ids.shape}, dtype {ids.dtype}")
            object.__setattr__(self, "ids", ids.astype(np.int64))

    def __len__(self) -> int:
        return self.image.shape[0]

    def subset(self, index: np.ndarray, name: str | None = None) -> "Split":
        """Return the rows `index` as a new Split (already validated arrays, so cheap)."""
        index = np.asarray(index)
        return Split(
            self.image[index], self.text[index], self.labels[index],
            None if self.ids is None else self.ids[index],
            source=self.source, name=name or self.name,
        )


@dataclass(frozen=True)
class CrossModalData:
    """A data set under one protocol; `meta` holds provenance (source, protocol, split seed...)."""

    name: str
    train: Split
    query: Split
    retrieval: Split
    validation: Split | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ref = self.train
        for split_name, split in self.splits().items():
            for fname in ("image", "text", "labels"):
                if getattr(split, fname).shape[1] != getattr(ref, fname).shape[1]:
                    raise DataError(
                        f"{self.name}: {split_name} field {fname!r} has width {getattr(split, fname).shape[1]}, "
                        f"train has {getattr(ref, fname).shape[1]}; every split must share feature and label widths"
                    )

    def splits(self) -> dict[str, Split]:
        """Return the present splits by name, in a fixed order."""
        out = {"train": self.train, "query": self.query, "retrieval": self.retrieval}
        if self.validation is not None:
            out["validation"] = self.validation
        return out

    @property
    def num_classes(self) -> int:
        return self.train.labels.shape[1]

    @property
    def image_dim(self) -> int:
        return self.train.image.shape[1]

    @property
    def text_dim(self) -> int:
        return self.train.text.shape[1]

    @property
    def single_label(self) -> bool:
        """True when every item of every split carries exactly one label."""
        return all(bool((s.labels.sum(axis=1) == 1).all()) for s in self.splits().values())

    def fingerprint(self) -> str:
        """Return a sha256 (16 hex) over every array of every split: names exactly the data a result used."""
        h = hashlib.sha256()
        for split_name, split in self.splits().items():
            h.update(split_name.encode())
            for arr in (split.image, split.text, split.labels, split.ids):
                if arr is not None:
                    h.update(str(arr.shape).encode())
                    h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> str:
        """Return a one-line description: sizes, widths and label statistics."""
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits().items())
        return (
            f"{self.name}: {sizes}; image {self.image_dim}-d, text {self.text_dim}-d, "
            f"{self.num_classes} labels ({self.train.labels.sum(1).mean():.2f} per item)"
        )
