"""Chinese-CLIP style feature files (the course-project seed's pipeline).

Per split (train / valid / test) in one folder:
  `<split>_imgs.img_feat.jsonl`   {"image_id": ..., "feature": [...]}
  `<split>_texts.txt_feat.jsonl`  {"text_id": ..., "feature": [...]}
  `<split>_texts.jsonl`           {"text_id": ..., "text": "...", "image_ids": [...]}
Each part is a caption-paired Split: every image of the image-feature file (images no text
mentions stay in the gallery as distractors), every text, and for each text its `image_ids`; ids
kept as written. Protocol `file`: train = train split, query = retrieval = eval split ('valid'
by default: test texts of public releases often lack image_ids).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .container import CrossModalData, DataError, Pairing, Split
from .paths import resolve
from .protocols import make_paired_data
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


def read_split(folder: Path, split: str) -> Split:
    """Return one split as a caption-paired Split: every image of the image-feature file (also
    those no text mentions: distractors), every text, and each text's ground-truth images."""
    img_path = folder / f"{split}_imgs.img_feat.jsonl"
    txt_path = folder / f"{split}_texts.txt_feat.jsonl"
    texts_path = folder / f"{split}_texts.jsonl"
    imgs, txts = _features(img_path, "image_id"), _features(txt_path, "text_id")
    image_row = {image_id: i for i, image_id in enumerate(imgs)}
    text_ids, lists = [], []
    for i, t in enumerate(_jsonl(texts_path, ("text_id", "image_ids")), 1):
        if t["text_id"] not in txts:
            raise DataError(f"{texts_path}: line {i} text_id {t['text_id']!r} has no feature in {txt_path.name}")
        if not t["image_ids"]:
            raise DataError(f"{texts_path}: line {i} text_id {t['text_id']!r} has empty image_ids; expected its ground-truth images")
        for image_id in t["image_ids"]:
            if image_id not in image_row:
                raise DataError(f"{texts_path}: line {i} refers to image_id {image_id!r}, absent from {img_path.name}")
        text_ids.append(t["text_id"])
        lists.append([image_row[x] for x in t["image_ids"]])
    if not text_ids:
        raise DataError(f"{texts_path}: no text lines; expected at least one text with its image_ids")
    return Split(np.stack(list(imgs.values())), np.stack([txts[t] for t in text_ids]),
                 pairing=Pairing.from_lists(lists, len(imgs)), image_ids=np.asarray(list(imgs), dtype=object),
                 text_ids=np.asarray(text_ids, dtype=object), source=str(texts_path), name=split)


@register("clip-jsonl")
def load_clip_jsonl(
    root=None, path=None, *, train_split: str = "train", eval_split: str = "valid", protocol: str = "file",
    seed: int = 0, n_validation: int = 0,
) -> CrossModalData:
    """Return Chinese-CLIP jsonl features as a caption-paired CrossModalData."""
    folder = resolve("clip-jsonl", root, path, "clip-jsonl")
    if protocol != "file":
        raise DataError(f"clip-jsonl: unknown protocol {protocol!r}; this data set accepts ['file']")
    parts = {"train": read_split(folder, train_split), "test": read_split(folder, eval_split)}
    files = [f"{folder}/{s}_{kind}" for s in (train_split, eval_split)
             for kind in ("imgs.img_feat.jsonl", "texts.txt_feat.jsonl", "texts.jsonl")]
    sources = {"image": " + ".join(files[0::3]), "text": " + ".join(files[1::3]), "pairing": " + ".join(files[2::3])}
    return make_paired_data("clip-jsonl", parts, sources, protocol=protocol, seed=seed, n_validation=n_validation,
                            pool_order="per part: image-feature file order, texts file order",
                            info={"splits": {"train": train_split, "test": eval_split}})
