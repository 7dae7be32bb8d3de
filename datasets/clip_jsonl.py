"""Chinese-CLIP style feature files (the course-project seed's pipeline).

Per split (train / valid / test) in one folder:
  `<split>_imgs.img_feat.jsonl`   {"image_id": ..., "feature": [...]}
  `<split>_texts.txt_feat.jsonl`  {"text_id": ..., "feature": [...]}
  `<split>_texts.jsonl`           {"text_id": ..., "text": "...", "image_ids": [...]}
One row per (text, matching image) pair: the text's feature as `text`, that image's feature as
`image`, and `ids` = a global image index, so relevance = same image (a text matching two images
gives two rows). No class labels: `labels` is one all-ones column that only satisfies the
container (meta['relevance'] == 'ids'). Protocol `file`: train = train split, query = retrieval
= eval split ('valid' by default: test texts of public releases often lack image_ids).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .container import CrossModalData, DataError
from .paths import resolve
from .protocols import build_pool, make_data
from .registry import register


def _jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: not found; expected Chinese-CLIP jsonl with keys {list(required)}")
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            raise DataError(f"{path}: line {lineno} is not JSON: {line[:80]!r}") from None
        missing = [k for k in required if k not in obj]
        if missing:
            raise DataError(f"{path}: line {lineno} lacks key(s) {missing}; expected keys {list(required)}")
        out.append(obj)
    return out


def _features(path: Path, id_key: str) -> dict:
    rows = _jsonl(path, (id_key, "feature"))
    feats, dim = {}, None
    for i, r in enumerate(rows, 1):
        v = np.asarray(r["feature"], dtype=np.float32)
        if v.ndim != 1 or (dim is not None and v.shape[0] != dim):
            raise DataError(f"{path}: line {i} ({id_key} {r[id_key]!r}) has a feature of shape {v.shape}; expected ({dim},)")
        dim = v.shape[0]
        feats[r[id_key]] = v
    return feats


def read_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, list, dict]:
    """Return (image rows, text rows, image key per row, info) for one split, one row per (text, image)."""
    img_path = folder / f"{split}_imgs.img_feat.jsonl"
    txt_path = folder / f"{split}_texts.txt_feat.jsonl"
    texts_path = folder / f"{split}_texts.jsonl"
    imgs, txts = _features(img_path, "image_id"), _features(txt_path, "text_id")
    image_rows, text_rows, keys = [], [], []
    for i, t in enumerate(_jsonl(texts_path, ("text_id", "image_ids")), 1):
        if t["text_id"] not in txts:
            raise DataError(f"{texts_path}: line {i} text_id {t['text_id']!r} has no feature in {txt_path.name}")
        if not t["image_ids"]:
            raise DataError(f"{texts_path}: line {i} text_id {t['text_id']!r} has empty image_ids; expected its ground-truth images")
        for image_id in t["image_ids"]:
            if image_id not in imgs:
                raise DataError(f"{texts_path}: line {i} refers to image_id {image_id!r}, absent from {img_path.name}")
            image_rows.append(imgs[image_id])
            text_rows.append(txts[t["text_id"]])
            keys.append((split, image_id))
    if not keys:
        raise DataError(f"{texts_path}: no text lines; expected at least one (text, image) pair")
    return np.stack(image_rows), np.stack(text_rows), keys, {"images": len(imgs), "texts": len(txts)}


@register("clip-jsonl")
def load_clip_jsonl(
    root=None, path=None, *, train_split: str = "train", eval_split: str = "valid", protocol: str = "file",
    seed: int = 0, n_validation: int = 0,
) -> CrossModalData:
    """Return Chinese-CLIP jsonl features as CrossModalData (relevance by `ids` = same image)."""
    folder = resolve("clip-jsonl", root, path, "clip-jsonl")
    images, texts, keys, groups, counts = [], [], [], {}, {}
    for part, split in (("train", train_split), ("test", eval_split)):
        im, tx, k, info = read_split(folder, split)
        groups[part] = np.arange(len(keys), len(keys) + len(k))
        images.append(im)
        texts.append(tx)
        keys.extend(k)
        counts[split] = info
    index: dict = {}
    ids = np.asarray([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)
    n = len(keys)
    sources = {"image": f"{folder}/{{{train_split},{eval_split}}}_imgs.img_feat.jsonl",
               "text": f"{folder}/{{{train_split},{eval_split}}}_texts.txt_feat.jsonl",
               "labels": "(none: relevance by ids)"}
    pool = build_pool("clip-jsonl", np.concatenate(images), np.concatenate(texts), np.ones((n, 1), dtype=np.uint8),
                      sources, groups=groups, ids=ids,
                      info={"counts": counts, "pool_order": "(text, image) pairs of train, then eval split"})
    return make_data(pool, protocol, seed, n_validation=n_validation, allowed=("file",))
