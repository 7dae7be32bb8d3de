"""MIRFlickr-25K as released with DCMH (CVPR 2017): 20,015 pairs, 1,386-d binary tags, 24 labels.

Layouts (rows must be items; orientation is detected, see mat.orient):
- one file `FLICKR-25K.mat` (MATLAB v7.3 / HDF5): `images`, `YAll`, `LAll`. Some copies hold
  4096-d features under `images`, DCMH's holds 224x224x3 pixels: pixels are refused with a
  message (this harness takes feature vectors), point `image_path=` at extracted features;
- split files `mirflickr25k-{xall-vgg,iall,yall,lall}.mat` with keys XAll (4096-d VGG), IAll,
  YAll, LAll.
The copy in ../shared/data/mirflickr25k has only yall/lall: the registered loader needs image
features and says so; `read_labels_text` serves uses that need only labels and tags.
Protocol `dcmh`: 2,000 queries, the rest (18,015) retrieval, 10,000 train drawn from retrieval.
Protocol `ucch`: the last 2,000 rows in file order are queries, the rest retrieval = train
(UCCH's cut; meaningful on its pre-shuffled files).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .container import CrossModalData, DataError
from .generic import load_spec, read_fields
from .paths import resolve
from .registry import register

SINGLE_FILES = ("FLICKR-25K.mat", "mirflickr25k.mat")
IMAGE_FILES = (("mirflickr25k-xall-vgg.mat", ("XAll",)), ("mirflickr25k-iall-vgg.mat", ("XAll", "IAll")),
               ("mirflickr25k-iall.mat", ("IAll",)))
TEXT_FILE, LABEL_FILE = ("mirflickr25k-yall.mat", ("YAll",)), ("mirflickr25k-lall.mat", ("LAll",))
SINGLE_KEYS = {"image": ("XAll", "images", "IAll", "image"), "text": ("YAll", "tags", "text"),
               "labels": ("LAll", "labels", "label")}


def spec_for(where: Path, image_path=None, need_image: bool = True) -> dict:
    """Return {field: (file, candidate keys)} for the layout found at `where` (folder or file)."""
    if where.is_file():
        single = where
    else:
        single = next((where / s for s in SINGLE_FILES if (where / s).exists()), None)
    if single is not None:
        spec = {k: (single, v) for k, v in SINGLE_KEYS.items()}
    else:
        missing = [f for f, _ in (TEXT_FILE, LABEL_FILE) if not (where / f).exists()]
        if missing:
            raise DataError(
                f"mirflickr25k: {where} has neither {SINGLE_FILES[0]} nor the split files {missing}; "
                "expected the DCMH release files there"
            )
        spec = {"text": (where / TEXT_FILE[0], TEXT_FILE[1]), "labels": (where / LABEL_FILE[0], LABEL_FILE[1])}
        image = next(((where / f, keys) for f, keys in IMAGE_FILES if (where / f).exists()), None)
        if image is not None:
            spec["image"] = image
    if image_path is not None:
        spec["image"] = (Path(image_path), SINGLE_KEYS["image"])
    if not need_image:
        spec.pop("image", None)
    elif "image" not in spec:
        raise DataError(
            f"mirflickr25k: no image features under {where}; expected one of "
            f"{[f for f, _ in IMAGE_FILES]} (key XAll/IAll) or pass image_path=. "
            "(Labels and tags alone: datasets.mirflickr.read_labels_text.)"
        )
    return spec


def read_labels_text(root=None, path=None) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Return (labels (n, 24) uint8 multi-hot, tags (n, 1386), {field: 'file:key'}), rows = items.

    For the uses that need no image features (relevance statistics, text-only baselines).
    """
    from .mat import to_multi_hot

    where = resolve("mirflickr25k", root, path, "mirflickr25k")
    arrays, sources, _ = read_fields("mirflickr25k", spec_for(where, need_image=False), cache=False)
    labels, _ = to_multi_hot(np.asarray(arrays["labels"]), sources["labels"])
    return labels, np.asarray(arrays["text"]), sources


@register("mirflickr25k")
def load_mirflickr25k(
    root=None, path=None, *, protocol: str = "dcmh", seed: int = 0, n_query: int = 2000, n_train: int = 10000,
    n_validation: int = 0, image_path=None, cache: bool | None = None, cache_dir=None,
) -> CrossModalData:
    """Return MIRFlickr-25K under the DCMH protocol (options override its sizes)."""
    where = resolve("mirflickr25k", root, path, "mirflickr25k")
    return load_spec(
        "mirflickr25k", spec_for(where, image_path), protocol=protocol, seed=seed, n_query=n_query,
        n_train=n_train, n_validation=n_validation, cache=cache, cache_dir=cache_dir,
    )
