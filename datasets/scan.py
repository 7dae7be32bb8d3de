"""SCAN / VSE++ precomputed features (Flickr30K `f30k_precomp`, MS-COCO `coco_precomp`).

Per split: `<split>_ims.npy`, image features, either (n_images, 36, 2048) bottom-up regions
(mean-pooled over regions here: hashing methods take one vector per image) or (n_images, d);
and `<split>_caps.txt`, one caption per line, 5 per image in image order (caption j belongs to
image j // 5), as SCAN's loader assumes. Each part is a caption-paired Split (unique images,
captions as texts, caption j describing image j // 5): relevance is by instance.
Text features: bag of words over a dictionary built from the training captions only
(datasets.text; min_count 5, max_size 2000 by default, so a 145k x 2000 float32 matrix fits).
Texts: `pairs='caption'` one text per caption, or `pairs='image'` one text per image with all its
captions in one bag of words.
Protocol `file`: train = train split, validation = dev split, query = retrieval = eval split.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .container import CrossModalData, DataError, Pairing, Split
from .paths import resolve
from .protocols import make_paired_data
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
    splits = {}
    for part, split in parts:
        ims, caps, k = read[part]
        n_img = ims.shape[0]
        if pairs == "caption":
            texts, owner = textlib.bag_of_words(caps, vocab, binary), np.arange(len(caps)) // k
        else:
            docs = [textlib.join_tokens(caps[i * k:(i + 1) * k]) for i in range(n_img)]
            texts, owner = textlib.bag_of_words(docs, vocab, binary), np.arange(n_img)
        splits["validation" if part == "val" else part] = Split(
            ims, texts, pairing=Pairing.from_lists([[int(i)] for i in owner], n_img),
            source=str(folder / f"{split}_caps.txt"), name=split)
    sources = {
        "image": " + ".join(str(folder / f"{s}_ims.npy") for _, s in parts),
        "text": " + ".join(str(folder / f"{s}_caps.txt") for _, s in parts),
    }
    if protocol != "file":
        raise DataError(f"scan: unknown protocol {protocol!r}; this data set accepts ['file']")
    return make_paired_data("scan", splits, sources, protocol=protocol, seed=seed, n_validation=n_validation,
                            pool_order="per part: image rows of *_ims.npy, caption lines of *_caps.txt",
                            info={"vocabulary_size": len(vocab), "pairs": pairs, "splits": dict(parts)})
