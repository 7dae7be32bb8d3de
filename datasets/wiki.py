"""Wikipedia (Rasiwasia et al., ACM MM 2010): 2,866 pairs, 10 classes, official 2,173 / 693 split.

Two packagings, value-identical (see ../shared/data/wiki/README.txt):
- original SVCL release: `raw_features.mat` (I_tr, I_te: 128-d SIFT BoVW; T_tr, T_te: 10-d LDA)
  with labels in `trainset_txt_img_cat.list` / `testset_txt_img_cat.list` (TAB separated
  `<text id> <image id> <category 1..10>`, line i = row i) and `categories.list` (names);
- `wikiData.mat` (LSSH/CMFH/SePH code): the same four matrices plus L_tr, L_te (1..10).
Pool order: the 2,173 training rows, then the 693 test rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .container import CrossModalData, DataError
from .mat import ArrayFile, materialize, read_set
from .paths import resolve
from .protocols import build_pool, make_data
from .registry import register

RAW = "raw_features.mat"
WIKIDATA = "wikiData.mat"
LISTS = {"tr": "trainset_txt_img_cat.list", "te": "testset_txt_img_cat.list"}


def read_list(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Return (text ids, image ids, categories 1..10 as int array) from a `*_txt_img_cat.list` file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected the Wikipedia label list (<text id> TAB <image id> TAB <category>)")
    texts, images, cats = [], [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[2].strip().isdigit():
            raise DataError(f"{path}: line {lineno} is {line[:60]!r}; expected '<text id>\\t<image id>\\t<category>'")
        texts.append(parts[0])
        images.append(parts[1])
        cats.append(int(parts[2]))
    return texts, images, np.asarray(cats, dtype=np.int64)


def read_wiki(where: Path, packaging: str = "auto") -> dict:
    """Return {'image','text','labels' (class ids 1..10), 'n_train', 'sources', 'packaging', 'class_names'}.

    `where` is the folder, or one of the two .mat files. packaging: 'raw', 'wikidata' or 'auto'
    (the original raw_features.mat if present, else wikiData.mat).
    """
    folder = where if where.is_dir() else where.parent
    if packaging == "auto":
        if where.is_file():
            packaging = "raw" if where.name == RAW else "wikidata"
        else:
            packaging = "raw" if (folder / RAW).exists() else "wikidata"
    if packaging not in ("raw", "wikidata"):
        raise DataError(f"wiki: packaging {packaging!r}; expected 'raw', 'wikidata' or 'auto'")
    mat_path = where if where.is_file() else folder / (RAW if packaging == "raw" else WIKIDATA)
    parts: dict[str, dict[str, np.ndarray]] = {}
    sources: dict[str, list[str]] = {"image": [], "text": [], "labels": []}
    with ArrayFile(mat_path) as f:
        for part in ("tr", "te"):
            keys = {"image": f"I_{part}", "text": f"T_{part}"}
            n_expected = None
            if packaging == "wikidata":
                keys["labels"] = f"L_{part}"
            else:
                list_path = folder / LISTS[part]
                _, _, cats = read_list(list_path)
                n_expected = len(cats)
            n, arrays, axes = read_set(f, keys, n_expected)
            got = {k: materialize(arrays[k], axes[k], f.where(keys[k])) for k in keys}
            if packaging == "raw":
                got["labels"] = cats[:, None]
                sources["labels"].append(f"{list_path}:category")
            else:
                sources["labels"].append(f.where(keys["labels"]))
            sources["image"].append(f.where(keys["image"]))
            sources["text"].append(f.where(keys["text"]))
            parts[part] = got
    names_file = folder / "categories.list"
    names = names_file.read_text().split() if names_file.exists() else None
    return {
        "image": np.concatenate([parts["tr"]["image"], parts["te"]["image"]]),
        "text": np.concatenate([parts["tr"]["text"], parts["te"]["text"]]),
        "labels": np.concatenate([parts["tr"]["labels"], parts["te"]["labels"]]),
        "n_train": len(parts["tr"]["image"]),
        "sources": {k: " + ".join(v) for k, v in sources.items()},
        "packaging": packaging,
        "class_names": names,
    }


@register("wiki")
def load_wiki(
    root=None, path=None, *, packaging: str = "auto", protocol: str = "official", seed: int = 0,
    n_validation: int = 0, n_query: int = 693, n_train: int = 2173,
) -> CrossModalData:
    """Return Wikipedia as CrossModalData (labels one-hot over the 10 categories).

    protocol 'official' (default): train = the 2,173 training pairs, query = retrieval = the 693
    test pairs; n_validation carves a validation set out of train. protocol 'dcmh': a seeded
    random re-split of all 2,866 pairs (n_query queries, n_train train from the rest).
    """
    where = resolve("wiki", root, path, "wiki")
    raw = read_wiki(where, packaging)
    n = len(raw["image"])
    pool = build_pool(
        "wiki", raw["image"], raw["text"], raw["labels"], raw["sources"],
        groups={"train": np.arange(raw["n_train"]), "test": np.arange(raw["n_train"], n)},
        label_base=1, num_classes=10,
        info={"packaging": raw["packaging"], "class_names": raw["class_names"],
              "pool_order": "official train rows, then official test rows"},
    )
    kwargs = {"n_query": n_query, "n_train": n_train} if protocol == "dcmh" else {}
    return make_data(pool, protocol, seed, n_validation=n_validation, allowed=("official", "dcmh"), **kwargs)
