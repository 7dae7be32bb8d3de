"""Recall@K, medr and meanr for caption retrieval (image <-> caption), with the peers' semantics.

Relevance is a caption pairing given as CSR arrays over the texts: text t describes the image
rows `text_images[text_indptr[t]:text_indptr[t + 1]]` (several images per text allowed; images
no text describes are distractors: they sit in the text->image gallery, and are no query of
image->text, as in Chinese-CLIP's evaluation_tr.py, which reads only images some text names).

Ranks (`caption_ranks`): for each query, the 0-based position of its best-ranked relevant item
in the gallery ordered by score, higher first. Scores: `metric="dot"` the inner product
(Chinese-CLIP's make_topk_predictions, SCAN's `sims`), `"cosine"` the inner product of L2-
normalised rows, `"hamming"` ±1 / 0-1 codes by Hamming distance (the same order as their inner
product). Real-valued scores are computed in float64 from the given values (the peers use float32
on a GPU, whose rounding is not reproducible across devices; exactly tied scores, e.g. repeated
features, tie in both). Ties, `ties=`:
- "first" (default): among equal scores the earlier gallery row ranks first. This is Chinese-CLIP's
  `sorted(..., key=score, reverse=True)` (Python's sort is stable, also in reverse) over the
  gallery in file order, and the harness's "ties by database index" everywhere else.
- "last": the later gallery row ranks first: `np.argsort(scores, kind="stable")[::-1]`, i.e.
  SCAN's / VSE++'s `np.argsort(d)[::-1]` wherever numpy's default sort keeps equal keys in order
  (it does not promise to: for exact ties SCAN's own order is unspecified; without ties every
  rule gives SCAN's numbers).

Numbers (`rank_summary`, SCAN's i2t / t2i): R@K = 100.0 * #{rank < K} / n (percent),
medr = floor(median(ranks)) + 1, meanr = mean(ranks) + 1; per direction mean_recall =
(R@1 + R@5 + R@10) / 3; rsum = i2t R@1 + R@5 + R@10 + t2i R@1 + R@5 + R@10 (percent, SCAN's).
`clip_output` gives Chinese-CLIP's output.json with its own arithmetic (fractions first, then
x 100), so that every digit matches evaluation.py / evaluation_tr.py.
MS-COCO 5-fold 1K (`caption_retrieval_folds`): fold f holds images [f * size, (f + 1) * size) and
the texts describing them (SCAN's `img_embs[i*5000:(i+1)*5000:5]` with their 5,000 captions);
every number is the mean over folds of the per-fold number (SCAN's `np.array(results).mean(0)`;
its printed 5-fold "rsum" line is 6 x the i2t average instead, a known bug; ours is the mean of
the per-fold rsum, the value SCAN's results array holds).

`recall_at_k` / `paired_recall` (fractions, 1-D ids or labels) are the older generic functions.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .engine import dense_inputs as _prepare, query_chunks as _chunks

TIES = ("first", "last")
METRICS = ("dot", "cosine", "hamming")
KS = (1, 5, 10)


# -- pairing arrays -----------------------------------------------------------------------------

def _csr(indptr, indices, n_rows: int, n_cols: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    if indptr.shape != (n_rows + 1,) or indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != len(indices):
        raise ValueError(f"{what}: indptr must have shape ({n_rows + 1},), start at 0, not decrease and end at "
                         f"len(indices) = {len(indices)}")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_cols):
        raise ValueError(f"{what}: indices must lie in 0..{n_cols - 1}")
    return indptr, indices


def transpose_pairing(text_indptr, text_images, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the image -> texts CSR (indptr (n_images + 1,), text rows sorted within each image)."""
    text_indptr = np.asarray(text_indptr, dtype=np.int64)
    text_images = np.asarray(text_images, dtype=np.int64)
    texts = np.repeat(np.arange(len(text_indptr) - 1, dtype=np.int64), np.diff(text_indptr))
    order = np.lexsort((texts, text_images))
    counts = np.bincount(text_images, minlength=n_images)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), texts[order]


def restrict_pairing(text_indptr, text_images, image_rows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (text rows kept, indptr, images) of the pairing restricted to `image_rows` (new image
    numbering: position in image_rows); a text is kept when it describes a kept image."""
    text_indptr = np.asarray(text_indptr, dtype=np.int64)
    text_images = np.asarray(text_images, dtype=np.int64)
    image_rows = np.asarray(image_rows, dtype=np.int64)
    n_images = int(max(text_images.max(initial=-1), image_rows.max(initial=-1))) + 1
    new = np.full(n_images, -1, dtype=np.int64)
    new[image_rows] = np.arange(len(image_rows))
    mapped = new[text_images]
    texts = np.repeat(np.arange(len(text_indptr) - 1, dtype=np.int64), np.diff(text_indptr))
    keep = mapped >= 0
    kept_texts, counts = np.unique(texts[keep], return_counts=True)
    return kept_texts, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), mapped[keep]


# -- scores and ranks ---------------------------------------------------------------------------

def _real_rows(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (items x dims) array, got shape {tuple(x.shape)}")
    if x.is_complex() or not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has NaN/Inf entries; expected finite features")
    return x


class _Scorer:
    """Query x gallery scores, higher = better, float64, on the query's device."""

    def __init__(self, query, gallery, metric: str):
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
        if metric == "hamming":
            dummy_q, dummy_g = torch.zeros(len(query), dtype=torch.int64), torch.zeros(len(gallery), dtype=torch.int64)
            inputs = _prepare(query, gallery, dummy_q, dummy_g, "hamming")
            self.query, self.gallery = inputs.query.to(torch.float64), inputs.retrieval.to(torch.float64)
        else:
            self.query, self.gallery = _real_rows(query, "query"), _real_rows(gallery, "gallery")
            if self.query.shape[1] != self.gallery.shape[1]:
                raise ValueError(f"query has {self.query.shape[1]} dims but gallery has {self.gallery.shape[1]}; they must match")
            self.gallery = self.gallery.to(self.query.device)
            if metric == "cosine":
                self.query = torch.nn.functional.normalize(self.query, dim=1)
                self.gallery = torch.nn.functional.normalize(self.gallery, dim=1)
        # ±1 codes: q.g = K - 2 * Hamming distance, exact in float64, so the order is the Hamming order.

    def chunks(self, rows: np.ndarray, chunk_size: int | None):
        n_g = self.gallery.shape[0]
        step = int(chunk_size) if chunk_size else max(1, (1 << 20) // max(n_g, 1))
        if step < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
        for start in range(0, len(rows), step):
            part = rows[start: start + step]
            yield start, part, self.query[torch.from_numpy(part).to(self.query.device)] @ self.gallery.t()


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {list(TIES)}, got {ties!r}")


def caption_ranks(query, gallery, rel_indptr, rel_indices, *, metric: str = "dot", ties: str = "first",
                  chunk_size: int | None = None) -> torch.Tensor:
    """Return the 0-based rank (int64, (n_queries,)) of each query's best-ranked relevant gallery item.

    Relevance: query q's relevant gallery rows are rel_indices[rel_indptr[q]:rel_indptr[q + 1]]; every
    query needs at least one (leave the others out first: see caption_retrieval). No sort: with s*
    the best relevant score and j* the relevant item holding it that the tie rule ranks first,
    rank = #{score > s*} + #{score == s*, ranked before j* by the tie rule}.
    """
    _check_ties(ties)
    scorer = _Scorer(query, gallery, metric)
    n_q, n_g = scorer.query.shape[0], scorer.gallery.shape[0]
    indptr, indices = _csr(rel_indptr, rel_indices, n_q, n_g, "relevance")
    empty = np.flatnonzero(np.diff(indptr) == 0)
    if empty.size:
        raise ValueError(f"{empty.size} queries have no relevant gallery item (first: query {int(empty[0])}); "
                         "leave them out: a query without ground truth has no rank")
    device = scorer.query.device
    out = torch.empty(n_q, dtype=torch.int64)
    positions = torch.arange(n_g, device=device)
    for start, rows, scores in scorer.chunks(np.arange(n_q), chunk_size):
        lo, hi = indptr[rows[0]], indptr[rows[-1] + 1]
        local = torch.from_numpy(np.repeat(np.arange(len(rows)), np.diff(indptr[rows[0]: rows[-1] + 2]))).to(device)
        items = torch.from_numpy(indices[lo:hi]).to(device)
        rel_scores = scores[local, items]
        best = torch.full((len(rows),), -math.inf, dtype=torch.float64, device=device)
        best = best.scatter_reduce(0, local, rel_scores, reduce="amax")
        at_best = rel_scores == best[local]
        fill = n_g if ties == "first" else -1
        pick = torch.full((len(rows),), fill, dtype=torch.int64, device=device)
        candidates = torch.where(at_best, items, torch.full_like(items, fill))
        pick = pick.scatter_reduce(0, local, candidates, reduce="amin" if ties == "first" else "amax")
        higher = (scores > best[:, None]).sum(1)
        tied = scores == best[:, None]
        before = positions[None, :] < pick[:, None] if ties == "first" else positions[None, :] > pick[:, None]
        out[start: start + len(rows)] = (higher + (tied & before).sum(1)).cpu()
    return out


def top_k(query, gallery, k: int, *, metric: str = "dot", ties: str = "first", chunk_size: int | None = None) -> np.ndarray:
    """Return (n_queries, min(k, n_gallery)) int64 gallery rows, best first, under the same score
    and tie rule as caption_ranks (so an item's position here is its rank there)."""
    _check_ties(ties)
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    scorer = _Scorer(query, gallery, metric)
    n_q, n_g = scorer.query.shape[0], scorer.gallery.shape[0]
    kk = min(int(k), n_g)
    out = np.empty((n_q, kk), dtype=np.int64)
    for start, rows, scores in scorer.chunks(np.arange(n_q), chunk_size):
        kth = torch.topk(scores, kk, dim=1).values[:, -1:]
        mask = (scores >= kth).cpu().numpy()
        s = scores.cpu().numpy()
        for r in range(len(rows)):
            cand = np.flatnonzero(mask[r])  # ascending gallery rows: the stable sort keeps them so in ties
            if ties == "last":
                cand = cand[::-1]
            out[start + r] = cand[np.argsort(-s[r, cand], kind="stable")[:kk]]
    return out


# -- numbers ------------------------------------------------------------------------------------

def _ks(ks: Sequence[int]) -> tuple[int, ...]:
    for k in ks:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"each k must be a positive integer, got {k!r}")
    return tuple(int(k) for k in ks)


def rank_summary(ranks, ks: Sequence[int] = KS) -> dict[str, float]:
    """Return SCAN's numbers from 0-based ranks: r{k} = 100.0 * #{rank < k} / n (percent), medr =
    floor(median) + 1, meanr = mean + 1, and mean_recall = the mean of the r{k} (SCAN's `ar`)."""
    ranks = np.asarray(torch.as_tensor(ranks).cpu().numpy(), dtype=np.float64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
    out = {f"r{k}": 100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in _ks(ks)}
    out["medr"] = float(np.floor(np.median(ranks)) + 1)
    out["meanr"] = float(ranks.mean() + 1)
    rs = [out[f"r{k}"] for k in _ks(ks)]
    out["mean_recall"] = sum(rs) / len(rs)
    return out


def clip_output(ranks) -> dict:
    """Return Chinese-CLIP's output.json for one direction from 0-based ranks, with its arithmetic:
    r_k = hits / n as a fraction, mean = (r1 + r5 + r10) / 3, each then x 100."""
    ranks = np.asarray(torch.as_tensor(ranks).cpu().numpy())
    n = len(ranks)
    if n == 0:
        raise ValueError("clip_output needs at least one query rank")
    r1, r5, r10 = (int((ranks < k).sum()) * 1.0 / n for k in KS)
    mean_recall = (r1 + r5 + r10) / 3.0
    return {"success": True, "score": mean_recall * 100,
            "scoreJson": {"score": mean_recall * 100, "mean_recall": mean_recall * 100,
                          "r1": r1 * 100, "r5": r5 * 100, "r10": r10 * 100}}


def caption_retrieval(image, text, text_indptr, text_images, *, metric: str = "dot", ties: str = "first",
                      ks: Sequence[int] = KS, chunk_size: int | None = None, return_ranks: bool = False) -> dict:
    """Return both directions' numbers for a caption pairing (see the module docstring):
    {'i2t': rank_summary + n_queries, 't2i': ..., 'rsum': percent}, plus 'ranks' per direction
    (int64 arrays, with the query rows they belong to) when return_ranks.

    i2t: the images some text describes, each against every text; t2i: every text against every
    image (distractors included).
    """
    n_images, n_texts = len(image), len(text)
    indptr, images = _csr(text_indptr, text_images, n_texts, n_images, "pairing")
    if (np.diff(indptr) == 0).any():
        raise ValueError("pairing: every text needs at least one ground-truth image")
    img_indptr, img_texts = transpose_pairing(indptr, images, n_images)
    described = np.flatnonzero(np.diff(img_indptr) > 0)
    sub_indptr = np.concatenate([[0], np.cumsum(np.diff(img_indptr)[described])]).astype(np.int64)
    image_t = torch.as_tensor(image)
    i2t = caption_ranks(image_t[torch.from_numpy(described)], text, sub_indptr, img_texts, metric=metric, ties=ties,
                        chunk_size=chunk_size)
    t2i = caption_ranks(text, image, indptr, images, metric=metric, ties=ties, chunk_size=chunk_size)
    out: dict = {"i2t": {**rank_summary(i2t, ks), "n_queries": len(described)},
                 "t2i": {**rank_summary(t2i, ks), "n_queries": n_texts}}
    # left to right over the six recalls, as SCAN writes r[0] + r[1] + r[2] + ri[0] + ri[1] + ri[2]
    out["rsum"] = sum([out["i2t"][f"r{k}"] for k in _ks(ks)] + [out["t2i"][f"r{k}"] for k in _ks(ks)])
    if return_ranks:
        out["ranks"] = {"i2t": (described, i2t.numpy()), "t2i": (np.arange(n_texts), t2i.numpy())}
    return out


def caption_retrieval_folds(image, text, text_indptr, text_images, *, n_folds: int = 5, fold_size: int = 1000,
                            **kwargs) -> dict:
    """Return the mean over folds of caption_retrieval's numbers (MS-COCO 1K: 5 folds of 1,000
    images and their texts), with the per-fold results under 'folds'."""
    n_images = len(image)
    if n_folds < 1 or fold_size < 1 or n_folds * fold_size > n_images:
        raise ValueError(f"{n_folds} folds of {fold_size} images need {n_folds * fold_size} images; the split has {n_images}")
    image_t, text_t = torch.as_tensor(image), torch.as_tensor(text)
    folds = []
    for f in range(n_folds):
        rows = np.arange(f * fold_size, (f + 1) * fold_size)
        texts, indptr, images = restrict_pairing(text_indptr, text_images, rows)
        folds.append(caption_retrieval(image_t[torch.from_numpy(rows)], text_t[torch.from_numpy(texts)], indptr, images,
                                       **kwargs))
    out: dict = {}
    for direction in ("i2t", "t2i"):
        keys = [k for k in folds[0][direction]]
        out[direction] = {k: float(np.array([fold[direction][k] for fold in folds]).mean()) for k in keys}
        out[direction]["n_queries"] = int(sum(fold[direction]["n_queries"] for fold in folds))
    out["rsum"] = float(np.array([fold["rsum"] for fold in folds]).mean())
    out["folds"] = folds
    return out


def flat_caption_values(result: dict, suffix: str = "") -> dict[str, float]:
    """Return caption_retrieval's numbers as flat metric names: recall_at_{k}_{dir}, mean_recall_{dir},
    medr_{dir}, meanr_{dir} (recalls in percent) and rsum; `suffix` is appended to every name."""
    out = {}
    for direction in ("i2t", "t2i"):
        for key, value in result[direction].items():
            if key == "n_queries":
                continue
            name = f"recall_at_{key[1:]}" if key.startswith("r") and key[1:].isdigit() else key
            out[f"{name}{suffix}_{direction}"] = float(value)
    out[f"rsum{suffix}"] = float(result["rsum"])
    return out


# -- the older generic functions (fractions) ----------------------------------------------------

def _first_relevant_rank(inputs, rows, relevant: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-ranked relevant item per query (inf if none), ties by index."""
    relevant = relevant.bool()
    similarity = inputs.query[rows] @ inputs.retrieval.t()
    score = -similarity  # Hamming distance is (K - similarity) / 2: the same order
    best = torch.where(relevant, score, float("inf")).min(1, keepdim=True).values
    at_best = score == best
    first = (at_best & relevant).to(torch.uint8).argmax(1, keepdim=True)  # first index of a max
    before = torch.arange(score.shape[1], device=score.device)[None, :] < first
    rank = (score < best).sum(1) + (at_best & before).sum(1) + 1
    return torch.where(relevant.any(1), rank.to(torch.float64), float("inf"))


def recall_at_k(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_ids: torch.Tensor,
    retrieval_ids: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    *,
    metric: str = "hamming",
    chunk_size: int | None = None,
) -> dict[int, float]:
    """Return {k: fraction of queries with a relevant item in the top k} for each k.

    Relevance: equal instance id (1-D integer ids); multi-hot labels work too (shared label).
    metric="hamming" for ±1/0-1 codes (ties by database index), "cosine" for real embeddings.
    A query without any relevant item counts as a miss. For caption sets use caption_retrieval.
    """
    inputs = _prepare(query_codes, retrieval_codes, query_ids, retrieval_ids, metric)
    ks = _ks(ks)
    ranks = torch.cat([_first_relevant_rank(inputs, rows, relevant) for rows, relevant in _chunks(inputs, chunk_size)])
    return {int(k): float((ranks <= k).to(torch.float64).mean()) for k in ks}


def paired_recall(
    image_codes: torch.Tensor,
    text_codes: torch.Tensor,
    image_ids: torch.Tensor,
    text_ids: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    *,
    metric: str = "hamming",
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Return Recall@k both ways as fractions: i2t_r{k}, t2i_r{k} and rsum (their sum, a fraction
    sum; caption_retrieval gives the percent numbers the caption papers print).

    Image i and text t match when image_ids[i] == text_ids[t] (several texts may share an image).
    """
    i2t = recall_at_k(image_codes, text_codes, image_ids, text_ids, ks, metric=metric, chunk_size=chunk_size)
    t2i = recall_at_k(text_codes, image_codes, text_ids, image_ids, ks, metric=metric, chunk_size=chunk_size)
    out = {f"i2t_r{k}": v for k, v in i2t.items()} | {f"t2i_r{k}": v for k, v in t2i.items()}
    out["rsum"] = sum(i2t.values()) + sum(t2i.values())
    return out
