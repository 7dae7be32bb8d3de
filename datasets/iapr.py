"""IAPR TC-12: 20,000 pairs, 2,912-d bag of words, 255 labels.

Layouts:
- UCCH's file: `VDatabase`, `YDatabase`, `databaseL` (retrieval part) and `VTest`, `YTest`,
  `testL` (query part). Pool order: database rows, then test rows. Protocol `file` (default
  for this layout): query = test, retrieval = database, n_train (10,000) drawn from database.
- all items in one file: `XAll`/`IAll`/`image`, `YAll`/`text`, `LAll`/`label`.
Protocol `dcmh` (default for the all-items layout, allowed for both): 2,000 random queries,
the rest retrieval, 10,000 train drawn from retrieval. Protocol `ucch`: UCCH's own cut of the
pool (database rows, then test rows, as its code concatenates them): the last 2,000 rows are
the queries, everything else is retrieval and train.
"""
from __future__ import annotations

from .container import CrossModalData
from .generic import load_spec, read_parts
from .mat import ArrayFile
from .paths import resolve_file
from .protocols import build_pool, make_data
from .registry import register

FILES = ("iapr-tc12-rand.mat", "IAPR-TC12.mat", "iapr-tc12.mat", "iapr.mat")
UCCH = {"retrieval": {"image": ("VDatabase",), "text": ("YDatabase",), "labels": ("databaseL",)},
        "query": {"image": ("VTest",), "text": ("YTest",), "labels": ("testL",)}}
ALL_KEYS = {"image": ("XAll", "IAll", "image"), "text": ("YAll", "text"), "labels": ("LAll", "label", "labels")}


@register("iapr-tc12")
def load_iapr(
    root=None, path=None, *, protocol: str | None = None, seed: int = 0, n_query: int = 2000, n_train: int = 10000,
    n_validation: int = 0, cache: bool | None = None, cache_dir=None,
) -> CrossModalData:
    """Return IAPR TC-12; protocol None = 'file' for UCCH's database/test layout, else 'dcmh'."""
    where = resolve_file("iapr-tc12", root, path, "iapr-tc12", tuple(FILES))
    with ArrayFile(where) as f:
        ucch = "VDatabase" in f
    if not ucch:
        return load_spec("iapr-tc12", {k: (where, v) for k, v in ALL_KEYS.items()}, protocol=protocol or "dcmh",
                         seed=seed, n_query=n_query, n_train=n_train, n_validation=n_validation,
                         cache=cache, cache_dir=cache_dir)
    parts = {p: {fld: (where, keys) for fld, keys in spec.items()} for p, spec in UCCH.items()}
    arrays, groups, sources, info = read_parts(parts)
    pool = build_pool("iapr-tc12", arrays["image"], arrays["text"], arrays["labels"], sources, groups=groups,
                      info={**info, "pool_order": "database rows, then test rows"})
    protocol = protocol or "file"
    kwargs = {"n_query": n_query, "n_train": n_train} if protocol in ("dcmh", "ucch") else {"n_train": n_train}
    return make_data(pool, protocol, seed, n_validation=n_validation, allowed=("file", "dcmh", "ucch"), **kwargs)
