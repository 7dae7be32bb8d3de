"""Fixtures in the peers' published layouts, and independent references written from the peers'
documented semantics (plain Python loops over their file formats; no harness code).

Chinese-CLIP (README "Inference and Evaluation", cn_clip/eval/*.py): make_topk_predictions scores
a text against every image of the image-feature file by inner product in float32 and keeps
`sorted(score_tuples, key=score, reverse=True)[:k]`; evaluation.py counts a text as a hit at k
when any of its `image_ids` is in the first k predictions, r_k = hits * 1.0 / n, and writes
output.json with (r1 + r5 + r10) / 3 and each r_k times 100; image -> text reads the .tr.jsonl
that transform_ir_annotation_to_tr builds (images some text names, texts in file order).
SCAN / VSE++ (evaluation.py i2t / t2i / evalrank): sims (N, 5N), image i's captions are 5i..5i+4;
i2t rank = min over its captions of the position in argsort(sims[i])[::-1]; t2i rank = the
position of image j // 5; R@K = 100.0 * #{rank < K} / n, medr = floor(median) + 1, meanr = mean + 1;
the 5N image layout is read as images[::5]; fold5 = images[5000 i:5000 (i + 1):5] with captions
[5000 i:5000 (i + 1)], numbers averaged over the folds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


# -- Chinese-CLIP layout ----------------------------------------------------------------------

def write_clip_split(folder: Path, split: str, seed: int, *, n_images: int = 50, n_texts: int = 120,
                     n_distractors: int = 10, dim: int = 6, string_ids: bool = False) -> dict:
    """Write `<split>_imgs.img_feat.jsonl`, `<split>_texts.txt_feat.jsonl`, `<split>_texts.jsonl`.

    Features are multiples of 1/2 in [-1, 1] (every inner product exact in float32 and float64,
    so ties are real ties, and there are many); three images repeat another image's feature.
    The last n_distractors images (in a shuffled file order) are named by no text; every sixth
    text names two or three images. The text-feature file lists texts in another order than
    the annotation file. Returns what was written.
    """
    rng = np.random.default_rng(seed)
    img = rng.integers(-2, 3, (n_images, dim)) / 2
    for a, b in ((1, n_images - 1), (2, n_images // 2 + 1), (3, n_images - 3)):
        img[b] = img[a]
    image_ids = [int(x) for x in rng.choice(10**9, n_images, replace=False)]
    text_ids = [int(x) for x in rng.choice(10**6, n_texts, replace=False)]
    if string_ids:
        image_ids = [f"img-{x}" for x in image_ids]
        text_ids = [f"t{x}" for x in text_ids]
    captioned = [i for i in rng.permutation(n_images)][: n_images - n_distractors]
    gt, txt = [], []
    for t in range(n_texts):
        rows = [captioned[t % len(captioned)]]
        if t % 6 == 0:
            rows += [captioned[(t * 7 + 3) % len(captioned)], captioned[(t * 11 + 1) % len(captioned)]][: 1 + t % 12 // 6]
        rows = list(dict.fromkeys(rows))
        gt.append([image_ids[r] for r in rows])
        txt.append(np.clip(img[rows[0]] + rng.integers(-2, 3, dim) / 2 * (t % 3 != 0), -1.5, 1.5))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{split}_imgs.img_feat.jsonl", "w") as f:
        for i in range(n_images):
            f.write(json.dumps({"image_id": image_ids[i], "feature": img[i].tolist()}) + "\n")
    order = rng.permutation(n_texts)
    with open(folder / f"{split}_texts.txt_feat.jsonl", "w") as f:
        for t in order:
            f.write(json.dumps({"text_id": text_ids[t], "feature": txt[t].tolist()}) + "\n")
    with open(folder / f"{split}_texts.jsonl", "w", encoding="utf-8") as f:
        for t in range(n_texts):
            f.write(json.dumps({"text_id": text_ids[t], "text": f"一只狗 {t}", "image_ids": gt[t]}, ensure_ascii=False) + "\n")
    return {"image_ids": image_ids, "text_ids": text_ids, "image": img, "text": np.asarray(txt), "gt": gt,
            "distractors": sorted(set(range(n_images)) - set(captioned))}


def _lines(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line.strip()) for line in f if line.strip()]


def clip_reference_predictions(query_file: Path, gallery_file: Path, query_key: str, gallery_key: str, k: int = 10) -> list[dict]:
    """make_topk_predictions(_tr).py: every query line against every gallery line, float32 inner
    product, Python's stable sort by score in reverse, first k."""
    gallery = _lines(gallery_file)
    g_ids = [g[gallery_key] for g in gallery]
    g_feats = np.array([g["feature"] for g in gallery], dtype=np.float32)
    out = []
    for q in _lines(query_file):
        scores = (g_feats @ np.array(q["feature"], dtype=np.float32)).tolist()
        ranked = sorted(zip(g_ids, scores), key=lambda x: x[1], reverse=True)[:k]
        out.append({query_key: q[query_key], gallery_key.replace("_id", "_ids"): [i for i, _ in ranked]})
    return out


def clip_reference_score(reference: dict, predictions: dict) -> dict:
    """evaluation.py / evaluation_tr.py: hits at 1, 5, 10 over the reference's queries; output.json."""
    r1_stat = r5_stat = r10_stat = 0
    for qid in reference.keys():
        truth = set(reference[qid])
        top10 = predictions[qid]
        r1_stat += any(idx in top10[:1] for idx in truth)
        r5_stat += any(idx in top10[:5] for idx in truth)
        r10_stat += any(idx in top10[:10] for idx in truth)
    r1, r5, r10 = r1_stat * 1.0 / len(reference), r5_stat * 1.0 / len(reference), r10_stat * 1.0 / len(reference)
    mean_recall = (r1 + r5 + r10) / 3.0
    return {"success": True, "score": mean_recall * 100,
            "scoreJson": {"score": mean_recall * 100, "mean_recall": mean_recall * 100, "r1": r1 * 100, "r5": r5 * 100,
                          "r10": r10 * 100}}


def clip_reference(folder: Path, split: str) -> dict:
    """Chinese-CLIP's whole evaluation of one split from its files: predictions and output.json
    for text -> image and image -> text."""
    t2i = clip_reference_predictions(folder / f"{split}_texts.txt_feat.jsonl", folder / f"{split}_imgs.img_feat.jsonl",
                                     "text_id", "image_id")
    i2t = clip_reference_predictions(folder / f"{split}_imgs.img_feat.jsonl", folder / f"{split}_texts.txt_feat.jsonl",
                                     "image_id", "text_id")
    annotation = _lines(folder / f"{split}_texts.jsonl")
    ref_t2i = {obj["text_id"]: obj["image_ids"] for obj in annotation}
    ref_i2t: dict = {}
    for obj in annotation:  # transform_ir_annotation_to_tr.py
        for image_id in obj["image_ids"]:
            ref_i2t.setdefault(image_id, []).append(obj["text_id"])
    return {"t2i_predictions": t2i, "i2t_predictions": i2t, "tr_annotation": ref_i2t,
            "t2i": clip_reference_score(ref_t2i, {p["text_id"]: p["image_ids"] for p in t2i}),
            "i2t": clip_reference_score(ref_i2t, {p["image_id"]: p["text_ids"] for p in i2t})}


# -- SCAN layout --------------------------------------------------------------------------------

def _scan_summary(ranks: np.ndarray) -> tuple:
    """SCAN's closing lines of i2t / t2i: (R@1, R@5, R@10 in percent, medr, meanr) of 0-based ranks."""
    r1 = 100.0 * len(np.where(ranks < 1)[0]) / len(ranks)
    r5 = 100.0 * len(np.where(ranks < 5)[0]) / len(ranks)
    r10 = 100.0 * len(np.where(ranks < 10)[0]) / len(ranks)
    medr = np.floor(np.median(ranks)) + 1
    meanr = ranks.mean() + 1
    return (r1, r5, r10, medr, meanr)


def scan_i2t(images: np.ndarray, sims: np.ndarray, kind: str = "quicksort") -> tuple:
    """SCAN's i2t: images (N, ...), sims (N, 5N)."""
    npts = images.shape[0]
    ranks = np.zeros(npts)
    for index in range(npts):
        inds = np.argsort(sims[index], kind=kind)[::-1]
        rank = 1e20
        for i in range(5 * index, 5 * index + 5, 1):
            tmp = np.where(inds == i)[0][0]
            if tmp < rank:
                rank = tmp
        ranks[index] = rank
    return _scan_summary(ranks)


def scan_t2i(images: np.ndarray, sims: np.ndarray, kind: str = "quicksort") -> tuple:
    """SCAN's t2i: images (N, ...), sims (N, 5N)."""
    npts = images.shape[0]
    ranks = np.zeros(5 * npts)
    sims = sims.T
    for index in range(npts):
        for i in range(5):
            inds = np.argsort(sims[5 * index + i], kind=kind)[::-1]
            ranks[5 * index + i] = np.where(inds == index)[0][0]
    return _scan_summary(ranks)


def scan_evalrank(img_embs: np.ndarray, cap_embs: np.ndarray, fold5: bool = False, fold_captions: int = 5000,
                  kind: str = "quicksort") -> dict:
    """SCAN's evalrank on embeddings with one image row per caption (the 5N layout), inner
    product similarity: {'r': i2t tuple, 'ri': t2i tuple, 'rsum': ...}; fold5 averages the
    per-fold [r, ri, ar, ari, rsum] rows as its results array does."""
    if not fold5:
        ims = np.array([img_embs[i] for i in range(0, len(img_embs), 5)])
        sims = ims @ cap_embs.T
        r, ri = scan_i2t(ims, sims, kind), scan_t2i(ims, sims, kind)
        return {"r": r, "ri": ri, "rsum": r[0] + r[1] + r[2] + ri[0] + ri[1] + ri[2]}
    results = []
    for i in range(5):
        ims = img_embs[i * fold_captions:(i + 1) * fold_captions:5]
        caps = cap_embs[i * fold_captions:(i + 1) * fold_captions]
        sims = ims @ caps.T
        r, ri = scan_i2t(ims, sims, kind), scan_t2i(ims, sims, kind)
        ar = (r[0] + r[1] + r[2]) / 3
        ari = (ri[0] + ri[1] + ri[2]) / 3
        rsum = r[0] + r[1] + r[2] + ri[0] + ri[1] + ri[2]
        results += [list(r) + list(ri) + [ar, ari, rsum]]
    mean = tuple(np.array(results).mean(axis=0).flatten())
    return {"r": mean[:5], "ri": mean[5:10], "ar": mean[10], "ari": mean[11], "rsum": mean[12]}


def write_scan_split(folder: Path, split: str, images: np.ndarray, captions: list[str], repeated: bool) -> None:
    """Write `<split>_ims.npy` (N rows, or 5N rows each image repeated 5 times) and `<split>_caps.txt`."""
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{split}_ims.npy", np.repeat(images, 5, axis=0) if repeated else images)
    (folder / f"{split}_caps.txt").write_text("\n".join(captions) + "\n", encoding="utf-8")


WORDS = "a dog man woman child runs sits jumps on the grass beach red ball street bike water".split()


def scan_captions(rng: np.random.Generator, n_images: int) -> list[str]:
    """5 captions per image: three words of the image's own and three random ones."""
    caps = []
    for i in range(n_images):
        own = [WORDS[(i * 3 + j) % len(WORDS)] for j in range(3)]
        caps += [" ".join(own + list(rng.choice(WORDS, 3))) for _ in range(5)]
    return caps


def write_scan_learnable(folder: Path, seed: int = 0, sizes=(("train", 200), ("dev", 40), ("test", 100)),
                         n_words: int = 40, dim: int = 64) -> None:
    """A SCAN-layout set with instance-level signal: image i has 6 attribute words of its own;
    features are a fixed linear map of those attributes plus noise, and each of its 5
    captions names 4 of its 6 words and one random word. Test images are stored in the 5N layout."""
    rng = np.random.default_rng(seed)
    words = [f"w{j}" for j in range(n_words)]
    mix = rng.standard_normal((n_words, dim))
    for split, n in sizes:
        attrs = [rng.choice(n_words, 6, replace=False) for _ in range(n)]
        onehot = np.zeros((n, n_words))
        for i, a in enumerate(attrs):
            onehot[i, a] = 1.0
        ims = (onehot @ mix + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)
        caps = [" ".join([words[j] for j in rng.choice(a, 4, replace=False)] + [words[rng.integers(n_words)]])
                for a in attrs for _ in range(5)]
        write_scan_split(folder, split, ims, caps, repeated=split == "test")
