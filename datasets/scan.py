"""SCAN / VSE++ precomputed features (Flickr30K `f30k_precomp`, MS-COCO `coco_precomp`).

Per split: `<split>_ims.npy`, image features, either (n_images, 36, 2048) bottom-up regions
(mean-pooled over regions here: hashing methods take one vector per image) or (n_images, d);
and `<split>_caps.txt`, one caption per line, 5 per image in image order (caption j belongs to
image j // 5), as SCAN's loader assumes. There are no class labels: relevance is by instance
(same image), carried in the container's `ids` (a global image index); `labels` is a single
all-ones column that only satisfies the container, so evaluation must use `ids`
(meta['relevance'] == 'ids').
Text features: bag of words over a dictionary built from the training captions only
(datasets.text; min_count 5, max_size 2000 by default, so a 145k x 2000 float32 matrix fits).
Rows: `pairs='caption'` one row per caption (its image's features repeated), or
`pairs='image'` one row per image with all its captions in one bag of words.
Protocol `file`: train = train split, validation = dev split, query = retrieval = eval split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .container import CrossModalData, DataError
from .paths import resolve
from .protocols import build_pool, make_data
from .registry import register


def read_split(folder: Path, split: str, captions_per_image: int = 5) -> tuple[np.ndarray, list[str], int]:
    """Return (image features (n_images, d) float32, captions, captions per image) of one split."""
    ims_path, caps_path = folder / f"{split}_ims.npy", folder / f"{split}_caps.txt"
    for p in (ims_path, caps_path):
        if not p.is_file():
            raise DataError(f"{p}: not found; expected SCAN's {split}_ims.npy and {split}_caps.txt")
    try:
        ims = np.load(ims_path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{ims_path}: not a readable .npy array ({exc}); the file is truncated or corrupt") from None
    if ims.ndim == 3:  # regions: mean-pool in blocks so a 29k x 36 x 2048 array is never copied whole
        pooled = np.empty((ims.shape[0], ims.shape[2]), dtype=np.float32)
        for s in range(0, ims.shape[0], 2048):
            pooled[s: s + 2048] = np.asarray(ims[s: s + 2048], dtype=np.float32).mean(axis=1)
        ims = pooled
    elif ims.ndim != 2:
        raise DataError(f"{ims_path}: shape {ims.shape}; expected (n_images, regions, d) or (n_images, d)")
    caps = caps_path.read_text(encoding="utf-8").splitlines()
    n = ims.shape[0]
    if len(caps) == captions_per_image * n:
        k = captions_per_image
    elif len(caps) == n:
        k = 1
    else:
        raise DataError(
            f"{caps_path}: {len(caps)} captions for {n} images in {ims_path.name}; "
            f"expected {captions_per_image} per image ({captions_per_image * n}) or one per image"
        )
    return np.asarray(ims), caps, k


@register("scan")
def load_scan(
    root=None, path=None, *, train_split: str = "train", val_split: str | None = "dev", eval_split: str = "test",
    pairs: str = "caption", min_count: int = 5, max_size: int | None = 2000, binary: bool = False,
    captions_per_image: int = 5, protocol: str = "file", seed: int = 0, n_validation: int = 0,
) -> CrossModalData:
    """Return a SCAN precomputed set: BoW captions vs pooled image features, relevance by `ids`."""
    from . import text as textlib  # imported here so `python -m datasets.text` runs without a double import

    if pairs not in ("caption", "image"):
        raise DataError(f"scan: pairs={pairs!r}; expected 'caption' or 'image'")
    folder = resolve("scan", root, path, "scan")
    parts = [("train", train_split)] + ([("val", val_split)] if val_split else []) + [("test", eval_split)]
    if val_split and not (folder / f"{val_split}_ims.npy").exists():
        raise DataError(f"scan: {folder / f'{val_split}_ims.npy'} not found; expected the validation split, "
                        "or pass val_split=None to load without one")
    read = {part: read_split(folder, split, captions_per_image) for part, split in parts}
    vocab = textlib.build_vocabulary(textlib.count_words(read["train"][1]), min_count, max_size)
    images, texts, ids, groups = [], [], [], {}
    row0 = img0 = 0
    for part, split in parts:
        ims, caps, k = read[part]
        n_img = ims.shape[0]
        if pairs == "caption":
            images.append(np.repeat(ims, k, axis=0))
            texts.append(textlib.bag_of_words(caps, vocab, binary))
            ids.append(img0 + np.arange(len(caps)) // k)
        else:
            images.append(ims)
            docs = [textlib.join_tokens(caps[i * k:(i + 1) * k]) for i in range(n_img)]
            texts.append(textlib.bag_of_words(docs, vocab, binary))
            ids.append(img0 + np.arange(n_img))
        n_rows = len(ids[-1])
        groups[part] = np.arange(row0, row0 + n_rows)
        row0 += n_rows
        img0 += n_img
    n = row0
    sources = {
        "image": " + ".join(str(folder / f"{s}_ims.npy") for _, s in parts),
        "text": " + ".join(str(folder / f"{s}_caps.txt") for _, s in parts),
        "labels": "(none: relevance by ids)",
    }
    pool = build_pool(
        "scan", np.concatenate(images), np.concatenate(texts), np.ones((n, 1), dtype=np.uint8), sources,
        groups=groups, ids=np.concatenate(ids).astype(np.int64),
        info={"vocabulary_size": len(vocab), "pairs": pairs, "splits": dict(parts),
              "pool_order": "rows of train, [dev], eval splits; ids = image index over all splits"},
    )
    return make_data(pool, protocol, seed, n_validation=n_validation, allowed=("file",))
