"""SCAN / VSE++ precomputed features (Flickr30K `f30k_precomp`, MS-COCO `coco_precomp`).

Per split: `<split>_ims.npy` and `<split>_caps.txt` (one caption per line, in image order, lines
ending at b'\\n' as SCAN reads them). Image features are (rows, 36, 2048) bottom-up regions
(mean-pooled over regions here: hashing methods take one vector per image) or (rows, d). The
layout is read as SCAN's PrecompDataset does, from the caption count, and checked:
- rows = n_captions / 5: one row per image, caption j describes image j // 5;
- rows = n_captions, rows repeating in blocks of 5 (the SCAN / VSE++ "5N" layout, each image
  stored once per caption; SCAN's evaluation keeps `img_embs[::5]`): the N distinct images are
  rows 0, 5, 10, ...; caption j describes image j // 5. Detected by the row equality of every
  block (on the pooled rows); blocks that are partly repeated are refused naming the first block
  that breaks the pattern;
- rows = n_captions with no repeated block: one caption per image.
Each part is a caption-paired Split of unique images and captions as texts: image ids are the
image's row in the de-duplicated layout, text ids the caption's line (0-based); relevance is by
instance. Text features: bag of words over a dictionary built from the training captions only
(datasets.text; min_count 5, max_size 2000 by default, so a 145k x 2000 float32 matrix fits).
Texts: `pairs='caption'` one text per caption, or `pairs='image'` one text per image with all its
captions in one bag of words. Non-UTF-8 captions are refused naming the file and byte offset;
image widths that differ across splits are refused naming both files.

Protocols (train = train split, validation = dev split, query = retrieval = eval split):
- `file` (= `coco-5k`): the whole eval split (Flickr30K 1K test; MS-COCO 5K test);
- `coco-1k`: MS-COCO's 5-fold 1K test, SCAN's `fold5`: fold f holds images [1000 f, 1000 (f + 1))
  with their captions; the reported numbers are means over folds (`n_folds`, `fold_size` change it).
`n_train` keeps that many seeded-random training images with their captions (training builds one
instance-target row per (caption, image) pair over the training images, which must fit in memory).
SCAN caps its dev split at 5,000 captions for speed during training; here all of dev is kept.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .captions import cap_train, check_widths, text_lines, texts_of_images, train_subset
from .container import CrossModalData, DataError, Pairing, Split
from .paths import resolve
from .protocols import make_paired_data
from .registry import register

PROTOCOLS = ("file", "coco-5k", "coco-1k")


def read_captions(path: Path) -> list[str]:
    """Return the captions of a SCAN `*_caps.txt`, one per line (stripped, as SCAN does)."""
    return [line.strip() for _, _, line in text_lines(path, "SCAN captions, one per line")]


def detect_layout(ims: np.ndarray, n_captions: int, per_image: int, ims_path: Path, caps_path: Path) -> tuple[np.ndarray, int, str]:
    """Return (unique image rows (N, d), captions per image, layout name) from SCAN's rule."""
    rows = ims.shape[0]
    if n_captions == per_image * rows:
        return ims, per_image, f"{rows} images x {per_image} captions"
    if n_captions == rows:
        usable = rows - rows % per_image
        blocks = ims[:usable].reshape(-1, per_image, ims.shape[1])
        same = (blocks == blocks[:, :1]).all(axis=(1, 2)) if usable else np.zeros(0, dtype=bool)
        if per_image > 1 and usable == rows and same.all():
            return np.ascontiguousarray(ims[::per_image]), per_image, f"5N rows: {rows // per_image} images each repeated {per_image} times"
        if per_image > 1 and same.any():
            bad = np.flatnonzero(~same)
            broken = (f"rows {int(bad[0]) * per_image}..{int(bad[0]) * per_image + per_image - 1} do not" if bad.size
                      else f"the last {rows - usable} rows make no full block")
            raise DataError(f"{ims_path}: {rows} rows for {n_captions} captions in {caps_path.name}; {int(same.sum())} of "
                            f"{len(same)} blocks of {per_image} rows repeat one image but {broken}; expected every block "
                            "repeated (the 5N layout) or none (one caption per image)")
        return ims, 1, f"{rows} images x 1 caption"
    raise DataError(f"{caps_path}: {n_captions} captions for {rows} rows in {ims_path.name}; expected {per_image} per image "
                    f"({per_image * rows}), or one per row ({rows}: the 5N layout or one caption per image)")


def read_split(folder: Path, split: str, captions_per_image: int = 5) -> tuple[np.ndarray, list[str], int, str]:
    """Return (unique image features (n_images, d) float32, captions, captions per image, layout)."""
    ims_path, caps_path = Path(folder) / f"{split}_ims.npy", Path(folder) / f"{split}_caps.txt"
    for p in (ims_path, caps_path):
        if not p.is_file():
            raise DataError(f"{p}: not found; expected SCAN's {split}_ims.npy and {split}_caps.txt")
    try:
        ims = np.load(ims_path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{ims_path}: not a readable .npy array ({exc}); the file is truncated or corrupt") from None
    if ims.dtype.kind not in "iuf":
        raise DataError(f"{ims_path}: dtype {ims.dtype}; expected numeric image features")
    if ims.ndim == 3:  # regions: mean-pool in blocks so a 29k x 36 x 2048 array is never copied whole
        pooled = np.empty((ims.shape[0], ims.shape[2]), dtype=np.float32)
        for s in range(0, ims.shape[0], 2048):
            pooled[s: s + 2048] = np.asarray(ims[s: s + 2048], dtype=np.float32).mean(axis=1)
        ims = pooled
    elif ims.ndim == 2:
        ims = np.asarray(ims, dtype=np.float32)
    else:
        raise DataError(f"{ims_path}: shape {ims.shape}; expected (n_images, regions, d) or (n_images, d)")
    if ims.shape[0] == 0 or ims.shape[1] == 0:
        raise DataError(f"{ims_path}: shape {ims.shape}; expected at least one image and one dimension")
    caps = read_captions(caps_path)
    ims, k, layout = detect_layout(ims, len(caps), captions_per_image, ims_path, caps_path)
    return ims, caps, k, layout


@register("scan")
def load_scan(
    root=None, path=None, *, train_split: str = "train", val_split: str | None = "dev", eval_split: str = "test",
    pairs: str = "caption", min_count: int = 5, max_size: int | None = 2000, binary: bool = False,
    captions_per_image: int = 5, protocol: str = "file", seed: int = 0, n_validation: int = 0,
    n_train: int | None = None, n_folds: int = 5, fold_size: int = 1000,
) -> CrossModalData:
    """Return a SCAN precomputed set: bag-of-words captions vs pooled image features, caption pairing."""
    from . import text as textlib  # imported here so `python -m datasets.text` runs without a double import

    if pairs not in ("caption", "image"):
        raise DataError(f"scan: pairs={pairs!r}; expected 'caption' or 'image'")
    if protocol not in PROTOCOLS:
        raise DataError(f"scan: unknown protocol {protocol!r}; this data set accepts {list(PROTOCOLS)}")
    folder = resolve("scan", root, path, "scan")
    parts = [("train", train_split)] + ([("val", val_split)] if val_split else []) + [("test", eval_split)]
    if val_split and not (folder / f"{val_split}_ims.npy").exists():
        raise DataError(f"scan: {folder / f'{val_split}_ims.npy'} not found; expected the validation split, "
                        "or pass val_split=None to load without one")
    read = {part: read_split(folder, split, captions_per_image) for part, split in parts}
    check_widths({part: (read[part][0], str(folder / f"{split}_ims.npy")) for part, split in parts}, "scan image feature")
    vocab = textlib.build_vocabulary(textlib.count_words(read["train"][1]), min_count, max_size)
    splits = {}
    for part, split in parts:
        ims, caps, k, _ = read[part]
        n_img = ims.shape[0]
        if pairs == "caption":
            texts, owner, text_ids = textlib.bag_of_words(caps, vocab, binary), np.arange(len(caps)) // k, np.arange(len(caps))
        else:
            docs = [textlib.join_tokens(caps[i * k:(i + 1) * k]) for i in range(n_img)]
            texts, owner, text_ids = textlib.bag_of_words(docs, vocab, binary), np.arange(n_img), np.arange(n_img)
        splits["validation" if part == "val" else part] = Split(
            ims, texts, pairing=Pairing.from_lists([[int(i)] for i in owner], n_img), image_ids=np.arange(n_img),
            text_ids=text_ids, source=str(folder / f"{split}_caps.txt"), name=split)
    info = {"vocabulary_size": len(vocab), "pairs": pairs, "splits": dict(parts),
            "layouts": {split: read[part][3] for part, split in parts}}
    if protocol == "coco-1k":
        test = splits["test"]
        if n_folds * fold_size > test.n_images:
            raise DataError(f"scan: protocol 'coco-1k' needs {n_folds} folds of {fold_size} images, but "
                            f"{folder / f'{eval_split}_ims.npy'} holds {test.n_images} images")
        info["eval_folds"] = {"n_folds": int(n_folds), "fold_size": int(fold_size)}
    cap = None
    rows = train_subset(splits["train"].n_images, n_train, seed, "scan")
    if rows is not None:
        cap = (rows, texts_of_images(splits["train"].pairing, rows))
        splits["train"] = splits["train"].subset_images(rows, "train")
    sources = {
        "image": " + ".join(str(folder / f"{s}_ims.npy") for _, s in parts),
        "text": " + ".join(str(folder / f"{s}_caps.txt") for _, s in parts),
    }
    data = make_paired_data("scan", splits, sources, protocol=protocol, seed=seed, n_validation=n_validation,
                            pool_order="per part: unique image rows of *_ims.npy, caption lines of *_caps.txt",
                            info=info)
    return cap_train(data, cap, n_train)
