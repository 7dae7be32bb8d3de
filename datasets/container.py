"""The one validated container every loader returns: train / query / retrieval [/ validation].

A Split says what counts as relevant, in one of two ways:
- labels: image row i and text row i are one pair (aligned rows); two items are relevant when
  their label rows share at least one label (single-label sets: same class);
- pairing: unique images and unique texts with their original ids, and for each text the set of
  images it describes (caption sets: a text with several positive images, images that no text
  describes kept as distractors). Relevance: a text and the images it describes; two texts that
  describe a common image; an image and itself.
Every consumer (evaluation, model selection, tuning, the training similarity) asks the split
for relevance through one function, `Split.relevance_targets`. A split with neither or both is
an error, never a silent default.

Arrays are checked once, here, at the border: 2-D, finite features, multi-hot 0/1 labels with at
least one label per row, pairing indices in range, equal widths across splits. Loaders pass
`source` so an error names the file and field it came from. `DataMeta` is the typed record of
where the data came from and how it was cut, filled by every loader.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping, Sequence

import numpy as np

Modality = Literal["image", "text"]
RelevanceKind = Literal["labels", "pairing"]

# Training on a caption set materialises one instance-target row per (text, image) pair over the
# training images; past this many entries (~2 GB as float32) the loader should cap n_train.
MAX_INSTANCE_TARGETS = 500_000_000


class DataError(ValueError):
    """Malformed input data; the message names the source, the field and what was expected."""


def _check_matrix(arr: Any, source: str, fieldname: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise DataError(f"{source}: field {fieldname!r} must be a 2-D array (items x dims), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{source}: field {fieldname!r} is empty (shape {arr.shape}); expected at least one item and one dimension")
    return arr


def _features(arr: Any, where: str, fieldname: str) -> np.ndarray:
    arr = _check_matrix(arr, where, fieldname)
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise DataError(f"{where}: field {fieldname!r} must be numeric, got dtype {arr.dtype}")
    arr32 = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr32).all():
        bad = int((~np.isfinite(arr32)).any(axis=1).sum())
        raise DataError(f"{where}: field {fieldname!r} has NaN/Inf values in {bad} rows; expected finite features")
    return arr32


def _ids(ids: Any, n: int, where: str, fieldname: str) -> np.ndarray | None:
    if ids is None:
        return None
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise DataError(f"{where}: field {fieldname!r} must hold one id per row ({n},), got shape {ids.shape}")
    if ids.dtype.kind not in "iuUO":
        raise DataError(f"{where}: field {fieldname!r} must hold integer or string ids, got dtype {ids.dtype}")
    return ids


@dataclass(frozen=True)
class Pairing:
    """Which images each text describes, within one split: CSR over the text rows.

    indptr: (n_texts + 1,) int64; images: (nnz,) int64 image rows, sorted within each text;
    n_images: the split's image count (images no text describes are distractors).
    """

    indptr: np.ndarray
    images: np.ndarray
    n_images: int

    @classmethod
    def from_lists(cls, images_of_text: Sequence[Sequence[int]], n_images: int) -> "Pairing":
        """Return the Pairing whose text t describes the image rows images_of_text[t]."""
        counts = np.fromiter((len(set(x)) for x in images_of_text), dtype=np.int64, count=len(images_of_text))
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        flat = [sorted(set(int(i) for i in x)) for x in images_of_text]
        images = np.fromiter((i for x in flat for i in x), dtype=np.int64, count=int(indptr[-1]))
        return cls(indptr, images, int(n_images))

    @property
    def n_texts(self) -> int:
        return len(self.indptr) - 1

    def images_of(self, text: int) -> np.ndarray:
        """Return the image rows that text row `text` describes."""
        return self.images[self.indptr[text]: self.indptr[text + 1]]

    def text_rows(self) -> np.ndarray:
        """Return, for each (text, image) pair in CSR order, its text row."""
        return np.repeat(np.arange(self.n_texts, dtype=np.int64), np.diff(self.indptr))

    def single_image(self) -> bool:
        """True when every text describes exactly one image (SCAN's layout, most CLIP sets)."""
        return bool((np.diff(self.indptr) == 1).all())

    def matrix(self) -> np.ndarray:
        """Return the dense (n_texts, n_images) float32 0/1 matrix: text t describes image i."""
        out = np.zeros((self.n_texts, self.n_images), dtype=np.float32)
        out[self.text_rows(), self.images] = 1.0
        return out

    def check(self, n_texts: int, where: str) -> None:
        """Raise DataError unless the CSR arrays are consistent with n_texts texts."""
        if self.indptr.shape != (n_texts + 1,) or self.indptr[0] != 0 or (np.diff(self.indptr) < 0).any():
            raise DataError(f"{where}: pairing must have indptr of shape ({n_texts + 1},) starting at 0, non-decreasing")
        if len(self.images) != self.indptr[-1]:
            raise DataError(f"{where}: pairing lists {len(self.images)} images for {self.indptr[-1]} (text, image) pairs")
        if len(self.images) and (self.images.min() < 0 or self.images.max() >= self.n_images):
            raise DataError(f"{where}: pairing refers to image rows outside 0..{self.n_images - 1}")
        empty = np.flatnonzero(np.diff(self.indptr) == 0)
        if empty.size:
            raise DataError(f"{where}: {empty.size} texts describe no image (first: text row {int(empty[0])}); "
                            "every text needs at least one ground-truth image")


@dataclass(frozen=True)
class Split:
    """One side of a protocol (train, query, retrieval or validation).

    image: (n_images, d_img) float32; text: (n_texts, d_txt) float32. Relevance is either
    `labels`, (n, C) float32 multi-hot in {0, 1} with every row labelled, image row i and text
    row i being one pair (n_images == n_texts == n), or `pairing` (caption sets). image_ids /
    text_ids: optional original ids (integers or strings, as the source wrote them).
    """

    image: np.ndarray
    text: np.ndarray
    labels: np.ndarray | None = None
    pairing: Pairing | None = None
    image_ids: np.ndarray | None = None
    text_ids: np.ndarray | None = None
    source: str = field(default="<memory>", compare=False)
    name: str = field(default="split", compare=False)

    def __post_init__(self) -> None:
        where = f"{self.source} [{self.name}]"
        image, text = _features(self.image, where, "image"), _features(self.text, where, "text")
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "text", text)
        if (self.labels is None) == (self.pairing is None):
            raise DataError(f"{where}: a split needs exactly one of 'labels' (shared-label relevance) or "
                            "'pairing' (caption relevance); got " + ("both" if self.labels is not None else "neither"))
        if self.labels is not None:
            labels = _check_matrix(self.labels, where, "labels")
            for fname, arr in (("text", text), ("labels", labels)):
                if arr.shape[0] != image.shape[0]:
                    raise DataError(f"{where}: field {fname!r} has {arr.shape[0]} rows but 'image' has "
                                    f"{image.shape[0]}; rows must be the same items")
            lab = np.ascontiguousarray(labels, dtype=np.float32)
            if not np.isin(lab, (0.0, 1.0)).all():
                raise DataError(f"{where}: field 'labels' must be multi-hot with values in {{0, 1}}")
            empty = np.flatnonzero(lab.sum(axis=1) == 0)
            if empty.size:
                raise DataError(f"{where}: field 'labels' has {empty.size} rows with no label (first: row {int(empty[0])}); "
                                "every item needs at least one label")
            object.__setattr__(self, "labels", lab)
        else:
            if self.pairing.n_images != image.shape[0]:
                raise DataError(f"{where}: pairing is over {self.pairing.n_images} images but 'image' has {image.shape[0]} rows")
            self.pairing.check(text.shape[0], where)
        for fname, n in (("image_ids", image.shape[0]), ("text_ids", text.shape[0])):
            ids = _ids(getattr(self, fname), n, where, fname)
            if ids is not None:
                values, counts = np.unique(ids, return_counts=True)
                if (counts > 1).any():
                    raise DataError(f"{where}: field {fname!r} repeats id {values[counts > 1][0]!r}; ids must be unique")
            object.__setattr__(self, fname, ids)

    @property
    def relevance(self) -> RelevanceKind:
        return "labels" if self.labels is not None else "pairing"

    @property
    def n_images(self) -> int:
        return self.image.shape[0]

    @property
    def n_texts(self) -> int:
        return self.text.shape[0]

    def __len__(self) -> int:
        """Return the number of aligned pairs; a caption split has no single length."""
        if self.labels is None:
            raise TypeError(f"split {self.name!r} is caption-paired ({self.n_images} images, {self.n_texts} texts): "
                            "use n_images / n_texts, or training_pairs() for aligned rows")
        return self.image.shape[0]

    def __bool__(self) -> bool:
        return True

    def rows(self, modality: Modality) -> np.ndarray:
        """Return the feature rows of `modality`."""
        return self.image if modality == "image" else self.text

    def relevance_targets(self, modality: Modality) -> np.ndarray:
        """Return per-row relevance targets for `modality`: two rows (of either modality, of this
        split or of another split under the same labels) are relevant iff their targets share a 1
        (2-D multi-hot) or are equal (1-D int64 ids). The one function every consumer asks.

        labels: the labels. pairing: targets over this split's image rows (an image is its own
        instance; a text targets the images it describes), as 1-D ids when every text describes
        exactly one image, else multi-hot. Pairing targets only relate rows of the same split.
        """
        if self.labels is not None:
            return self.labels
        p = self.pairing
        if p.single_image():
            return np.arange(p.n_images, dtype=np.int64) if modality == "image" else p.images.copy()
        if modality == "image":
            return np.eye(p.n_images, dtype=np.float32)
        return p.matrix()

    def training_pairs(self) -> "Split":
        """Return aligned labelled rows to train on: this split if it has labels; for a caption
        split one row per (text, image) pair whose labels are the text's images as instance
        targets (so 'share a label' = same instance, or a caption of that image)."""
        if self.labels is not None:
            return self
        p = self.pairing
        if len(p.images) * p.n_images > MAX_INSTANCE_TARGETS:
            raise DataError(f"{self.source} [{self.name}]: {len(p.images)} (text, image) pairs x {p.n_images} training "
                            f"images of instance targets is over {MAX_INSTANCE_TARGETS:,} entries; cap n_train")
        texts = p.text_rows()
        targets = p.matrix()[texts]
        return Split(self.image[p.images], self.text[texts], targets, source=self.source, name=f"{self.name} pairs")

    def subset(self, index: np.ndarray, name: str | None = None) -> "Split":
        """Return the aligned rows `index` as a new Split (labelled splits only)."""
        if self.labels is None:
            raise TypeError(f"split {self.name!r} is caption-paired; subset images with subset_images()")
        index = np.asarray(index)
        pick = lambda ids: None if ids is None else ids[index]  # noqa: E731
        return Split(self.image[index], self.text[index], self.labels[index], image_ids=pick(self.image_ids),
                     text_ids=pick(self.text_ids), source=self.source, name=name or self.name)

    def texts_describing(self, image_rows: np.ndarray) -> np.ndarray:
        """Return the text rows (ascending) that describe at least one of `image_rows` (caption splits)."""
        p = self.pairing
        if p is None:
            raise TypeError(f"split {self.name!r} has labels; texts and images are aligned rows")
        kept = np.zeros(p.n_images, dtype=bool)
        kept[np.asarray(image_rows, dtype=np.int64)] = True
        hits = np.add.reduceat(kept[p.images].astype(np.int64), p.indptr[:-1]) if len(p.images) else np.zeros(0, int)
        return np.flatnonzero(hits > 0).astype(np.int64)

    def subset_images(self, image_rows: np.ndarray, name: str | None = None) -> "Split":
        """Return a caption split with the image rows `image_rows` and every text that describes
        one of them (texts_describing; pairing restricted to those images, a text keeps only its
        kept images)."""
        p = self.pairing
        if p is None:
            raise TypeError(f"split {self.name!r} has labels; use subset()")
        image_rows = np.asarray(image_rows, dtype=np.int64)
        new_index = np.full(p.n_images, -1, dtype=np.int64)
        new_index[image_rows] = np.arange(len(image_rows))
        texts = self.texts_describing(image_rows)
        lists = [kept[kept >= 0] for kept in (new_index[p.images_of(t)] for t in texts)]
        pick = lambda ids, idx: None if ids is None else ids[idx]  # noqa: E731
        return Split(self.image[image_rows], self.text[texts], pairing=Pairing.from_lists(lists, len(image_rows)),
                     image_ids=pick(self.image_ids, image_rows), text_ids=pick(self.text_ids, texts),
                     source=self.source, name=name or self.name)

    def arrays(self) -> dict[str, np.ndarray]:
        """Return every array of the split by name (for fingerprints and stored records)."""
        out = {"image": self.image, "text": self.text}
        if self.labels is not None:
            out["labels"] = self.labels
        else:
            out["pairing_indptr"], out["pairing_images"] = self.pairing.indptr, self.pairing.images
        for k in ("image_ids", "text_ids"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


def _json_able(value: Any) -> bool:
    """True for plain JSON values (nested lists and string-keyed dicts included), not arrays."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_json_able(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_able(v) for k, v in value.items())
    return False


@dataclass(frozen=True)
class DataMeta:
    """Where a data set came from and how it was cut: filled by every loader.

    sources: field -> 'file:key' it was read from; checksums: file -> sha256; split_indices:
    split -> indices into the pool (`pool_order` says what the pool is; caption sets index
    images and texts separately as '<split>.image' / '<split>.text'); split_hash: sha256 (16 hex)
    of the protocol and every index array; preprocessing: modality -> 'none' | 'l2' | 'zscore',
    set by datasets.preprocessing; info: loader-specific description (class names, packaging,
    vocabulary size, cache entry...).
    """

    protocol: str
    seed: int
    relevance: RelevanceKind
    split_indices: Mapping[str, np.ndarray]
    split_hash: str
    pool_order: str
    sources: Mapping[str, str] = field(default_factory=dict)
    checksums: Mapping[str, str] = field(default_factory=dict)
    preprocessing: Mapping[str, str] = field(default_factory=lambda: {"image": "none", "text": "none"})
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> dict[str, int]:
        """Return the number of indices per split entry."""
        return {k: int(len(v)) for k, v in self.split_indices.items()}

    def record(self) -> dict[str, Any]:
        """Return the meta as plain JSON-able values (indices replaced by their counts)."""
        return {"protocol": self.protocol, "seed": self.seed, "relevance": self.relevance, "split_hash": self.split_hash,
                "sizes": self.sizes, "pool_order": self.pool_order, "sources": dict(self.sources),
                "checksums": dict(self.checksums), "preprocessing": dict(self.preprocessing),
                "info": {k: v for k, v in self.info.items() if _json_able(v)}}


@dataclass(frozen=True)
class CrossModalData:
    """A data set under one protocol with its typed provenance record `meta`."""

    name: str
    train: Split
    query: Split
    retrieval: Split
    validation: Split | None = None
    meta: DataMeta | None = None  # None: data built in memory (protocol 'memory'; split hash = fingerprint)

    def __post_init__(self) -> None:
        if self.meta is None:
            object.__setattr__(self, "meta", DataMeta(
                protocol="memory", seed=0, relevance=self.train.relevance, split_indices={},
                split_hash=self.fingerprint(), pool_order="splits given in memory"))
        ref = self.train
        kinds = {s.relevance for s in self.splits().values()}
        if len(kinds) != 1 or kinds != {self.meta.relevance}:
            raise DataError(f"{self.name}: splits have relevance {sorted(kinds)} but meta says {self.meta.relevance!r}; "
                            "every split must share one kind")
        if self.meta.relevance == "pairing" and self.query is not self.retrieval:
            raise DataError(f"{self.name}: a caption-paired set ranks within one evaluation split; query must be retrieval")
        widths = ("image", "text", "labels") if self.meta.relevance == "labels" else ("image", "text")
        for split_name, split in self.splits().items():
            for fname in widths:
                if getattr(split, fname).shape[1] != getattr(ref, fname).shape[1]:
                    raise DataError(
                        f"{self.name}: {split_name} field {fname!r} has width {getattr(split, fname).shape[1]}, "
                        f"train has {getattr(ref, fname).shape[1]}; every split must share feature and label widths"
                    )

    @property
    def relevance(self) -> RelevanceKind:
        return self.meta.relevance

    def splits(self) -> dict[str, Split]:
        """Return the present splits by name, in a fixed order."""
        out = {"train": self.train, "query": self.query, "retrieval": self.retrieval}
        if self.validation is not None:
            out["validation"] = self.validation
        return out

    def with_splits(self, meta: DataMeta | None = None, **splits: Split) -> "CrossModalData":
        """Return a copy with some splits (and optionally the meta) replaced; query and retrieval
        stay one object when they were one."""
        if self.query is self.retrieval and "query" in splits and "retrieval" not in splits:
            splits["retrieval"] = splits["query"]
        return replace(self, meta=meta or self.meta, **splits)

    @property
    def num_classes(self) -> int:
        """Label width (labels), or the number of training instances (pairing)."""
        return self.train.labels.shape[1] if self.train.labels is not None else self.train.n_images

    @property
    def image_dim(self) -> int:
        return self.train.image.shape[1]

    @property
    def text_dim(self) -> int:
        return self.train.text.shape[1]

    @property
    def single_label(self) -> bool:
        """True when every item of every split carries exactly one label (labels only)."""
        return self.relevance == "labels" and all(bool((s.labels.sum(axis=1) == 1).all()) for s in self.splits().values())

    def fingerprint(self) -> str:
        """Return a sha256 (16 hex) over every array of every split: names exactly the data a result used."""
        h = hashlib.sha256()
        for split_name, split in self.splits().items():
            h.update(split_name.encode())
            for key, arr in split.arrays().items():
                h.update(f"{key}{arr.shape}{arr.dtype}".encode())
                h.update(np.ascontiguousarray(arr).tobytes() if arr.dtype.kind != "O" else repr(arr.tolist()).encode())
        return h.hexdigest()[:16]

    def summary(self) -> str:
        """Return a one-line description: sizes, widths and relevance statistics."""
        if self.relevance == "labels":
            sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits().items())
            rel = f"{self.num_classes} labels ({self.train.labels.sum(1).mean():.2f} per item)"
        else:
            sizes = ", ".join(f"{k} {v.n_images} images / {v.n_texts} texts" for k, v in self.splits().items())
            rel = "caption pairing"
        return f"{self.name}: {sizes}; image {self.image_dim}-d, text {self.text_dim}-d, {rel}"
