"""Chinese-CLIP feature files (its README's layout, and the course-project seed's pipeline).

Per split (train / valid / test) in one folder:
  `<split>_imgs.img_feat.jsonl`   {"image_id": 1000002, "feature": [...]}   (extract_features.py)
  `<split>_texts.txt_feat.jsonl`  {"text_id": 248816, "feature": [...]}
  `<split>_texts.jsonl`           {"text_id": 8428, "text": "...", "image_ids": [1076345, 517602]}
Each part is a caption-paired Split, kept as the files say: every image of the image-feature
file in file order (images no text names stay in the gallery as distractors), every text of the
text-feature file in file order (the order Chinese-CLIP's make_topk_predictions breaks ties by),
each text's `image_ids` as its ground truth, ids as written (ints or strings). Refused, naming the
file and line: a repeated id, an id that is neither int nor string, a feature of another width,
a text feature without an annotation line or the reverse, an empty `image_ids`, an image id the
image-feature file lacks, non-UTF-8 bytes (with the byte offset). Feature widths that differ
across splits are refused naming both files.

Protocol `file`: train = train split, query = retrieval = eval split ('valid' by default: the test
texts of public releases carry `"image_ids": []`). `n_train` keeps that many seeded-random
training images (with their texts): training on a caption set builds one instance-target row per
(text, image) pair over the training images, which must fit in memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .captions import IdIndex, cap_train, check_widths, jsonl_records, texts_of_images, train_subset
from .container import CrossModalData, DataError, Pairing, Split
from .paths import resolve
from .protocols import make_paired_data
from .registry import register

PROTOCOLS = ("file",)


def feature_paths(folder: Path, split: str) -> dict[str, Path]:
    """Return the three files of one split: image features, text features, texts (annotation)."""
    return {"image": folder / f"{split}_imgs.img_feat.jsonl", "text": folder / f"{split}_texts.txt_feat.jsonl",
            "texts": folder / f"{split}_texts.jsonl"}


def read_features(path: Path, id_key: str) -> tuple[IdIndex, np.ndarray]:
    """Return (ids in file order, (n, d) float32 features) of a Chinese-CLIP feature jsonl."""
    path = Path(path)
    ids = IdIndex(path, id_key)
    rows: list[np.ndarray] = []
    dim = None
    what = "Chinese-CLIP feature file (extract_features.py output)"
    for lineno, obj in jsonl_records(path, (id_key, "feature"), what):
        ids.add(obj[id_key], lineno)
        try:
            v = np.asarray(obj["feature"], dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {lineno} ({id_key} {obj[id_key]!r}) has a non-numeric feature; expected a list of numbers") from None
        if v.ndim != 1 or v.size == 0 or (dim is not None and v.shape[0] != dim):
            raise DataError(f"{path}: line {lineno} ({id_key} {obj[id_key]!r}) has a feature of shape {v.shape}; "
                            f"expected ({dim if dim is not None else 'd'},) like the lines before")
        if not np.isfinite(v).all():
            raise DataError(f"{path}: line {lineno} ({id_key} {obj[id_key]!r}) has NaN/Inf in its feature; expected finite values")
        dim = v.shape[0]
        rows.append(v)
    if not rows:
        raise DataError(f"{path}: no feature lines; expected one JSON object per line with keys {[id_key, 'feature']}")
    return ids, np.stack(rows)


def read_annotation(path: Path) -> tuple[IdIndex, list[list], dict]:
    """Return (text ids in file order, each text's image_ids as written, text_id -> line) of a
    `<split>_texts.jsonl`; texts with an empty or missing image_ids are refused."""
    path = Path(path)
    ids = IdIndex(path, "text_id")
    images: list[list] = []
    for lineno, obj in jsonl_records(path, ("text_id", "image_ids"), "Chinese-CLIP texts jsonl"):
        ids.add(obj["text_id"], lineno)
        gt = obj["image_ids"]
        if not isinstance(gt, list):
            raise DataError(f"{path}: line {lineno} has image_ids {gt!r}; expected a list of image ids")
        if not gt:
            raise DataError(f"{path}: line {lineno} (text_id {obj['text_id']!r}) has empty image_ids; expected its "
                            "ground-truth images (a test split without them cannot be scored)")
        for value in gt:
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                raise DataError(f"{path}: line {lineno} has image id {value!r} in image_ids; expected integer or string ids")
        images.append(gt)
    if not images:
        raise DataError(f"{path}: no text lines; expected one text per line with its image_ids")
    return ids, images, dict(ids.line)


def read_split(folder: Path, split: str) -> Split:
    """Return one split as a caption-paired Split (see the module docstring)."""
    paths = feature_paths(Path(folder), split)
    return read_paired(paths["image"], paths["text"], paths["texts"], split)


def read_paired(image_path: Path, text_path: Path, texts_path: Path, name: str = "split") -> Split:
    """Return the caption-paired Split of one image-feature file, one text-feature file and the
    texts jsonl giving each text's image_ids (rows in feature-file order, ids as written)."""
    paths = {"image": Path(image_path), "text": Path(text_path), "texts": Path(texts_path)}
    img_ids, img = read_features(paths["image"], "image_id")
    txt_ids, txt = read_features(paths["text"], "text_id")
    ann_ids, ann_images, ann_line = read_annotation(paths["texts"])
    for t in ann_ids.ids:
        if t not in txt_ids.row:
            raise DataError(f"{paths['texts']}: line {ann_line[t]} text_id {t!r} has no feature in {paths['text'].name}"
                            f"{txt_ids.missing(t)}; every annotated text needs its feature")
    lists = []
    for t in txt_ids.ids:
        if t not in ann_ids.row:
            raise DataError(f"{paths['text']}: line {txt_ids.line[t]} text_id {t!r} has no line in {paths['texts'].name}"
                            f"{ann_ids.missing(t)}; every text feature needs its ground-truth image_ids")
        row = []
        for image_id in ann_images[ann_ids.row[t]]:
            if image_id not in img_ids.row:
                raise DataError(f"{paths['texts']}: line {ann_line[t]} refers to image_id {image_id!r}, absent from "
                                f"{paths['image'].name}{img_ids.missing(image_id)}")
            row.append(img_ids.row[image_id])
        lists.append(row)
    if img.shape[1] != txt.shape[1]:
        raise DataError(f"{paths['image']} has {img.shape[1]}-d features but {paths['text']} has {txt.shape[1]}-d; "
                        "Chinese-CLIP embeds images and texts in one space of one width")
    return Split(img, txt, pairing=Pairing.from_lists(lists, len(img_ids.ids)), image_ids=img_ids.array(),
                 text_ids=txt_ids.array(), source=str(paths["texts"]), name=name)


@register("clip-jsonl")
def load_clip_jsonl(
    root=None, path=None, *, train_split: str = "train", eval_split: str = "valid", protocol: str = "file",
    seed: int = 0, n_validation: int = 0, n_train: int | None = None,
) -> CrossModalData:
    """Return Chinese-CLIP jsonl features as a caption-paired CrossModalData (query = retrieval =
    the eval split; n_train caps the training images; n_validation carves images from train)."""
    folder = resolve("clip-jsonl", root, path, "clip-jsonl")
    if protocol not in PROTOCOLS:
        raise DataError(f"clip-jsonl: unknown protocol {protocol!r}; this data set accepts {list(PROTOCOLS)}")
    parts = {"train": read_split(folder, train_split), "test": read_split(folder, eval_split)}
    files = {part: feature_paths(folder, split) for part, split in (("train", train_split), ("test", eval_split))}
    for modality in ("image", "text"):
        check_widths({p: (getattr(s, modality), str(files[p][modality])) for p, s in parts.items()}, f"clip-jsonl {modality} feature")
    cap = None
    rows = train_subset(parts["train"].n_images, n_train, seed, "clip-jsonl")
    if rows is not None:
        parts["train"], cap = parts["train"].subset_images(rows, "train"), (rows, texts_of_images(parts["train"].pairing, rows))
    sources = {m: " + ".join(str(files[p][m]) for p in ("train", "test")) for m in ("image", "text")}
    sources["pairing"] = " + ".join(str(files[p]["texts"]) for p in ("train", "test"))
    data = make_paired_data("clip-jsonl", parts, sources, protocol=protocol, seed=seed, n_validation=n_validation,
                            pool_order="per part: image-feature file order, text-feature file order",
                            info={"splits": {"train": train_split, "test": eval_split}})
    return cap_train(data, cap, n_train)
