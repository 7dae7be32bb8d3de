"""MS-COCO as packaged by UCCH (TPAMI 2023): one HDF5 file with `XAll` (4096-d VGG image
features), `YAll` (300-d doc2vec text), `LAll` (80 labels), all items, rows detected.
Protocol `dcmh`: 5,000 queries, the rest retrieval, 10,000 train drawn from retrieval.
Protocol `ucch` (UCCH's own): the last 5,000 rows are queries, the rest retrieval = train.
UCCH's code reads this file with h5py as is (rows first, written from Python).
"""
from __future__ import annotations

from .container import CrossModalData
from .generic import load_spec
from .paths import resolve_file
from .registry import register

KEYS = {"image": ("XAll", "IAll", "image"), "text": ("YAll", "text"), "labels": ("LAll", "label", "labels")}
FILES = ("MSCOCO_deep_doc2vec_data_rand.h5py", "mscoco.h5", "MSCOCO.h5", "mscoco.mat")


@register("mscoco")
def load_mscoco(
    root=None, path=None, *, protocol: str = "dcmh", seed: int = 0, n_query: int = 5000, n_train: int = 10000,
    n_validation: int = 0, cache: bool | None = None, cache_dir=None,
) -> CrossModalData:
    """Return MS-COCO (UCCH h5) under the DCMH-style random protocol."""
    where = resolve_file("mscoco", root, path, "mscoco", tuple(FILES))
    spec = {k: (where, v) for k, v in KEYS.items()}
    return load_spec("mscoco", spec, protocol=protocol, seed=seed, n_query=n_query, n_train=n_train,
                     n_validation=n_validation, cache=cache, cache_dir=cache_dir)
