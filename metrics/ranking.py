"""Ranking metrics for cross-modal retrieval by Hamming (or cosine) ranking.

Semantics follow the DCMH evaluator (see ../shared/METHODS.md, "Evaluation semantics"):
relevance = label rows share at least one label (1-D integer labels: equal class / instance id);
ranking = Hamming distance ascending, ties broken by database index (a stable sort); a query with no
relevant item has AP 0 and still counts in the mean.

Every function here is one call of the engine (metrics/engine.py): validated inputs, per-query
integer partials from the counting kernel (CPU) or the torch backend (CUDA, reference, cosine),
then the metric from those integers. Results are float64 tensors on the device of `query_codes`.

Common keyword arguments:
- backend: "auto" (the counting kernel on CPU when numba is installed, else torch), "fused"
  (the kernel, or an error saying why it cannot run), "torch". Both give the same values to
  the last bit: they produce the same integers, and the floats come from them in one fixed way.
- chunk_size: queries per chunk of the torch backend (memory O(chunk_size x n_retrieval)).
- block_size: database items per block of the kernel (memory O(block) per query in flight;
  by default one block up to 2^19 items, 2^13-item blocks beyond).
- permutation_seed: shuffle the database with this seed first (MATLAB protocol).
Retrieval codes and labels may be numpy arrays, memory-mapped ones too: the kernel reads them
block by block and keeps only their packed bits (8 bytes per item and code word).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from . import engine
from .engine import MAP_AT_K_VARIANTS

__all__ = ["MAP_AT_K_VARIANTS", "PRCurve", "mean_average_precision", "mean_average_precision_at_k", "pr_curve",
           "precision_at_k", "precision_within_radius"]


def mean_average_precision(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    *,
    chunk_size: int | None = None,
    per_query: bool = False,
    ties: str = "stable",
    permutation_seed: int | None = None,
    metric: str = "hamming",
    backend: str = "auto",
    block_size: int | None = None,
) -> torch.Tensor:
    """Return mAP@all as a 0-d float64 tensor, or per-query APs of shape (n_q,) if per_query.

    ties="stable": Hamming distance ascending, ties in database index order (DCMH/MATLAB).
    ties="tie-aware": the exact expected AP over uniformly random order inside tie groups.
    permutation_seed: shuffle the database with this seed first (MATLAB protocol); tie-aware mAP
    does not depend on it. metric="cosine" ranks real-valued embeddings by cosine similarity,
    ties by index (tie-aware is Hamming-only). Zero-relevance queries have AP 0 and count.
    """
    if ties not in ("stable", "tie-aware"):
        raise ValueError(f"ties must be 'stable' or 'tie-aware', got {ties!r}")
    if ties == "tie-aware" and metric != "hamming":
        raise ValueError("ties='tie-aware' needs metric='hamming' (cosine scores are almost never tied)")
    stable = ties == "stable"
    problem = engine.problem(query_codes, retrieval_codes, query_labels, retrieval_labels, metric=metric,
                             permutation_seed=permutation_seed, backend=backend, chunk_size=chunk_size, block_size=block_size)
    partials = engine.compute(problem, stable=stable, backend=backend, chunk_size=chunk_size,
                              block_size=block_size)
    ap = engine.stable_ap(partials) if stable else engine.tie_aware_ap(partials)
    return engine.as_tensor(ap if per_query else ap.mean(), problem)


def mean_average_precision_at_k(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    k: int,
    *,
    variant: str = "topk",
    chunk_size: int | None = None,
    per_query: bool = False,
    permutation_seed: int | None = None,
    metric: str = "hamming",
    backend: str = "auto",
    block_size: int | None = None,
) -> torch.Tensor:
    """Return mAP@k (0-d float64 tensor) under a named variant, or per-query values (n_q,).

    Ranking is stable (ties by database index). With P(i) = precision at position i, rel(i) in
    {0,1}, hits_k = relevant items in the top k, R = relevant items in the whole database:
    - "topk" (DeepHash-pytorch CalcTopMap): sum_{i<=k} P(i) rel(i) / hits_k; a query with
      hits_k = 0 gets 0 and still counts.
    - "trec" (trec_eval's AP at cutoff): sum_{i<=k} P(i) rel(i) / R; R = 0 gives 0.
    - "hashnet" (HashNet's mean_average_precision): as "topk", but queries with hits_k = 0 are
      dropped from the mean (NaN in per-query output; the mean is NaN if every query is dropped).
    - "calc_map_k" (the DCMH-pytorch-style `calc_map_k` found in many ports): mean of
      m / position(m) over the first min(k, R) relevant items wherever they rank (not truncated
      at position k); R = 0 gives 0 and counts. With k >= R it equals AP@all.
    """
    if variant not in MAP_AT_K_VARIANTS:
        raise ValueError(f"variant must be one of {MAP_AT_K_VARIANTS}, got {variant!r}")
    problem = engine.problem(query_codes, retrieval_codes, query_labels, retrieval_labels, metric=metric,
                             permutation_seed=permutation_seed, backend=backend, chunk_size=chunk_size, block_size=block_size)
    k = engine.check_k(k, problem.n_retrieval)
    partials = engine.compute(problem, (k,), stable=False, backend=backend, chunk_size=chunk_size,
                              block_size=block_size)
    ap = engine.ap_at_k(partials, k, variant)
    if per_query:
        return engine.as_tensor(ap, problem)
    return engine.as_tensor(engine.nan_mean(ap) if variant == "hashnet" else ap.mean(), problem)


def precision_at_k(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    ks: Sequence[int],
    *,
    chunk_size: int | None = None,
    per_query: bool = False,
    permutation_seed: int | None = None,
    metric: str = "hamming",
    backend: str = "auto",
    block_size: int | None = None,
) -> torch.Tensor:
    """Return mean precision at each k in `ks` (float64, shape (len(ks),)), or (n_q, len(ks)).

    Precision@k = relevant items among the top k / k, ties broken by database index.
    """
    problem = engine.problem(query_codes, retrieval_codes, query_labels, retrieval_labels, metric=metric,
                             permutation_seed=permutation_seed, backend=backend, chunk_size=chunk_size, block_size=block_size)
    ks = [engine.check_k(k, problem.n_retrieval, "each k") for k in ks]
    if not ks:
        raise ValueError("ks must name at least one cutoff")
    partials = engine.compute(problem, ks, stable=False, backend=backend, chunk_size=chunk_size,
                              block_size=block_size)
    precision = np.stack([engine.precision_at(partials, k) for k in ks], 1)
    return engine.as_tensor(precision if per_query else precision.mean(0), problem)


class PRCurve(NamedTuple):
    """Precision and recall of the Hamming ball of each radius 0..K (float64, shape (K+1,))."""

    radius: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor


def pr_curve(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    *,
    average: str = "micro",
    empty_precision: float = 0.0,
    chunk_size: int | None = None,
    backend: str = "auto",
    block_size: int | None = None,
) -> PRCurve:
    """Return the PR curve over Hamming radius r = 0..K as PRCurve(radius, precision, recall).

    average="micro" (DCMH's MATLAB code): pool all query-item pairs:
      precision(r) = sum_q relevant within r / sum_q items within r,
      recall(r)    = sum_q relevant within r / sum_q relevant.
    average="macro" (thulab's version): per-query precision and recall, then the mean over queries.
    An empty ball (macro: one query; micro: every query) has precision `empty_precision`, 0 by
    default as in thulab's code; pass float("nan") to leave such queries out of the macro mean.
    Recall of a query without relevant items is 0.
    """
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
    problem = engine.problem(query_codes, retrieval_codes, query_labels, retrieval_labels, backend=backend,
                             chunk_size=chunk_size, block_size=block_size)
    partials = engine.compute(problem, stable=False, backend=backend, chunk_size=chunk_size, block_size=block_size)
    precision, recall = engine.pr_curve(partials, average, empty_precision)
    radius = torch.arange(problem.bits + 1, device=problem.device)
    return PRCurve(radius, engine.as_tensor(precision, problem), engine.as_tensor(recall, problem))


def precision_within_radius(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    radius: int = 2,
    *,
    chunk_size: int | None = None,
    per_query: bool = False,
    backend: str = "auto",
    block_size: int | None = None,
) -> torch.Tensor:
    """Return mean precision of the Hamming ball of `radius` (0-d float64), or per-query (n_q,).

    Per query: relevant items within the radius / items within it; an empty ball counts as 0
    (the usual "precision within Hamming radius 2" convention, which penalises failed lookups).
    """
    problem = engine.problem(query_codes, retrieval_codes, query_labels, retrieval_labels, backend=backend,
                             chunk_size=chunk_size, block_size=block_size)
    radius = engine.check_radius(radius, problem.bits)
    partials = engine.compute(problem, stable=False, backend=backend, chunk_size=chunk_size, block_size=block_size)
    precision = engine.precision_within(partials, radius)
    return engine.as_tensor(precision if per_query else precision.mean(), problem)
