"""Recall@K for paired instance retrieval (e.g. 5 captions per image; relevance = same instance id)."""
from __future__ import annotations

from typing import Sequence

import torch

from .engine import dense_inputs as _prepare, query_chunks as _chunks


def _first_relevant_rank(inputs, rows, relevant: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-ranked relevant item per query (inf if none), ties by index.

    No sort: with score s (lower is better) and j* the first index holding the best relevant
    score s*, rank = #{s < s*} + #{s == s*, index < j*} + 1.
    """
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
    """
    inputs = _prepare(query_codes, retrieval_codes, query_ids, retrieval_ids, metric)
    for k in ks:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"each k must be a positive integer, got {k!r}")
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
    """Return Recall@k both ways as a flat dict: i2t_r{k}, t2i_r{k} and rsum (their sum).

    Image i and text t match when image_ids[i] == text_ids[t] (several texts may share an image).
    """
    i2t = recall_at_k(image_codes, text_codes, image_ids, text_ids, ks, metric=metric, chunk_size=chunk_size)
    t2i = recall_at_k(text_codes, image_codes, text_ids, image_ids, ks, metric=metric, chunk_size=chunk_size)
    out = {f"i2t_r{k}": v for k, v in i2t.items()} | {f"t2i_r{k}": v for k, v in t2i.items()}
    out["rsum"] = sum(i2t.values()) + sum(t2i.values())
    return out
