"""Shared pieces of the caption-paired loaders (clip_jsonl, scan): reading text files line by line
with UTF-8 errors reported at their byte offset, JSON-lines records with their line numbers, ids
kept as written (int or str) with duplicates refused naming both lines, and the training-image
cap (`n_train`) recorded in the data's meta."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .container import CrossModalData, DataError, Pairing
from .protocols import split_hash


def text_lines(path: Path, what: str) -> Iterator[tuple[int, int, str]]:
    """Yield (line number from 1, byte offset of the line, text without its newline) of a UTF-8 file.

    Lines end at b'\\n' only (a caption holding U+2028 or a form feed stays one line, as SCAN's
    `for line in f` over bytes reads it); a trailing '\\r' is dropped. Non-UTF-8 bytes are refused
    naming the file, the line and the byte offset."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: not found; expected {what}")
    offset = 0
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad = raw[exc.start: exc.start + 4]
                raise DataError(f"{path}: line {lineno}, byte offset {offset + exc.start}: invalid UTF-8 {bad!r} "
                                f"({exc.reason}); expected UTF-8 text") from None
            offset += len(raw)
            yield lineno, offset - len(raw), text.rstrip("\n").rstrip("\r")


def jsonl_records(path: Path, required: tuple[str, ...], what: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for every non-blank line of a JSON-lines file holding `required` keys."""
    for lineno, _, line in text_lines(path, f"{what} (JSON lines with keys {list(required)})"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise DataError(f"{path}: line {lineno} is not JSON ({exc.msg}): {line[:80]!r}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {lineno} is a JSON {type(obj).__name__}; expected an object with keys {list(required)}")
        missing = [k for k in required if k not in obj]
        if missing:
            raise DataError(f"{path}: line {lineno} lacks key(s) {missing}; expected keys {list(required)}")
        yield lineno, obj


def check_id(value: Any, path: Path, lineno: int, key: str) -> Any:
    """Return `value` if it is an id as the peers write them (an int or a string), else DataError."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{path}: line {lineno} has {key} {value!r} ({type(value).__name__}); expected an integer or a string id")
    return value


class IdIndex:
    """Ids of one file in order, with the line each was first seen on (duplicates refused)."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = Path(path), key
        self.ids: list[Any] = []
        self.row: dict[Any, int] = {}
        self.line: dict[Any, int] = {}

    def add(self, value: Any, lineno: int) -> int:
        value = check_id(value, self.path, lineno, self.key)
        if value in self.row:
            raise DataError(f"{self.path}: line {lineno} repeats {self.key} {value!r} of line {self.line[value]}; "
                            "ids must be unique within a file")
        self.row[value], self.line[value] = len(self.ids), lineno
        self.ids.append(value)
        return self.row[value]

    def missing(self, value: Any) -> str:
        """Return a hint for an id that is not in the file (a str/int mix-up is the usual cause)."""
        other = str(value) if isinstance(value, int) else (int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else None)
        if other is not None and other in self.row:
            return f" (the file has {other!r}: ids are compared as written, int and string differ)"
        return ""

    def array(self) -> np.ndarray:
        """Return the ids as an int64 array when all are ints, else an object array (as written)."""
        if all(isinstance(v, int) for v in self.ids):
            return np.asarray(self.ids, dtype=np.int64)
        return np.asarray(self.ids, dtype=object)


def check_widths(parts: dict[str, tuple[np.ndarray, str]], what: str) -> None:
    """Raise DataError naming both files when the feature widths of parts differ.

    parts: part name -> (features (n, d), the file they came from)."""
    items = list(parts.items())
    first_name, (first, first_file) = items[0]
    for name, (arr, file) in items[1:]:
        if arr.shape[1] != first.shape[1]:
            raise DataError(f"{what} width differs across splits: {file} has {arr.shape[1]}-d rows, {first_file} has "
                            f"{first.shape[1]}-d; every split must come from the same feature extractor")


def cap_train(data: CrossModalData, cap: tuple[np.ndarray, np.ndarray] | None, n_train: int | None) -> CrossModalData:
    """Return `data` with its meta's train / validation indices mapped back to the shipped train
    part when the loader kept only the training images `cap` = (image rows, text rows) of that
    part, and the split hash recomputed over them (so the cap is part of the run's identity)."""
    if cap is None:
        return data
    image_rows, text_rows = cap
    idx = dict(data.meta.split_indices)
    for key in ("train.image", "validation.image"):
        if key in idx:
            idx[key] = image_rows[idx[key]]
    for key in ("train.text", "validation.text"):
        if key in idx and len(idx[key]) <= len(text_rows):
            idx[key] = text_rows[idx[key]]
    n = sum(s.n_images + s.n_texts for s in data.splits().values())
    meta = replace(data.meta, split_indices=idx, split_hash=split_hash(data.name, n, f"{data.meta.protocol}|n_train={n_train}", idx),
                   info={**data.meta.info, "n_train": int(n_train)})
    return data.with_splits(meta=meta)


def train_subset(n_images: int, n_train: int | None, seed: int, name: str) -> np.ndarray | None:
    """Return the sorted seeded-random training image rows to keep (None: keep all)."""
    if n_train is None:
        return None
    if isinstance(n_train, bool) or int(n_train) != n_train or n_train < 1:
        raise DataError(f"{name}: n_train = {n_train!r}; expected a positive number of training images")
    if n_train >= n_images:
        return None
    return np.sort(np.random.default_rng([seed, 2]).permutation(n_images)[: int(n_train)])


def texts_of_images(pairing: Pairing, image_rows: np.ndarray) -> np.ndarray:
    """Return the text rows (ascending) that describe at least one of `image_rows`, the texts
    Split.subset_images keeps."""
    keep = np.zeros(pairing.n_images, dtype=bool)
    keep[np.asarray(image_rows, dtype=np.int64)] = True
    return np.unique(pairing.text_rows()[keep[pairing.images]])
