"""One call for the standard numbers of one retrieval direction, as a flat dict a runner can log."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import engine
from .engine import MAP_AT_K_VARIANTS
from .partials import Partials

DEFAULT_MAP_KS = (50, 1000, 5000)
DEFAULT_PRECISION_KS = (10, 100, 1000)


def usable_ks(ks: Sequence[int], n_retrieval: int, name: str) -> list[int]:
    """Sorted distinct cutoffs, those beyond the database left out; a clear error for bad ones."""
    for k in ks:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"{name} must hold positive integers, got {k!r}")
    return sorted({int(k) for k in ks if k <= n_retrieval})


def evaluate_hashing(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    *,
    map_ks: Sequence[int] = DEFAULT_MAP_KS,
    precision_ks: Sequence[int] = DEFAULT_PRECISION_KS,
    radius: int = 2,
    permutation_seed: int | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
    block_size: int | None = None,
) -> dict[str, float]:
    """Return the standard numbers for one direction (e.g. image->text) in one pass over the data.

    Keys (MLflow-safe names; all float):
      map                   mAP@all, ties by database index (see mean_average_precision)
      map_tie_aware         expected mAP@all over random order within ties
      map_at_{k}_{variant}  for k in map_ks and each variant of mean_average_precision_at_k
                            (topk, trec, hashnet, calc_map_k); hashnet is NaN if it drops every query
      p_at_{k}              precision@k for k in precision_ks, ties by index
      p_within_r{radius}    mean precision in the Hamming ball, empty ball counted as 0
    Cutoffs larger than the retrieval set are left out. The per-query values behind each number
    (for paired significance tests) come from evaluate_hashing_per_query. backend, chunk_size,
    block_size: as in metrics.ranking (the counting kernel makes one pass per query block).
    """
    _, per_query = _per_query(query_codes, retrieval_codes, query_labels, retrieval_labels, map_ks, precision_ks,
                              radius, permutation_seed, chunk_size, backend, block_size)
    return {key: float(engine.nan_mean(values)) for key, values in per_query.items()}


def evaluate_hashing_per_query(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    *,
    map_ks: Sequence[int] = DEFAULT_MAP_KS,
    precision_ks: Sequence[int] = DEFAULT_PRECISION_KS,
    radius: int = 2,
    permutation_seed: int | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
    block_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Return the keys of evaluate_hashing, each as per-query float64 values of shape (n_q,).

    Everything comes from one set of per-query counts. NaN marks a query that hashnet drops.
    """
    problem, per_query = _per_query(query_codes, retrieval_codes, query_labels, retrieval_labels, map_ks, precision_ks,
                                    radius, permutation_seed, chunk_size, backend, block_size)
    return {key: engine.as_tensor(values, problem) for key, values in per_query.items()}


def _per_query(query_codes, retrieval_codes, query_labels, retrieval_labels, map_ks, precision_ks, radius,
               permutation_seed, chunk_size, backend, block_size):
    problem = engine.problem(query_codes, retrieval_codes, query_labels, retrieval_labels, metric="hamming",
                             permutation_seed=permutation_seed, backend=backend, chunk_size=chunk_size,
                             block_size=block_size)
    radius = engine.check_radius(radius, problem.bits)
    map_ks = usable_ks(map_ks, problem.n_retrieval, "map_ks")
    precision_ks = usable_ks(precision_ks, problem.n_retrieval, "precision_ks")
    partials = engine.compute(problem, sorted(set(map_ks) | set(precision_ks)), backend=backend,
                              chunk_size=chunk_size, block_size=block_size)
    return problem, per_query_metrics(partials, map_ks, precision_ks, radius)


def per_query_metrics(partials: Partials, map_ks: Sequence[int], precision_ks: Sequence[int],
                      radius: int) -> dict[str, np.ndarray]:
    """The evaluate_hashing keys as per-query float64 arrays, from (merged) partials."""
    out = {"map": engine.stable_ap(partials), "map_tie_aware": engine.tie_aware_ap(partials)}
    for k in map_ks:
        for variant in MAP_AT_K_VARIANTS:
            out[f"map_at_{k}_{variant}"] = engine.ap_at_k(partials, k, variant)
    for k in precision_ks:
        out[f"p_at_{k}"] = engine.precision_at(partials, k)
    out[f"p_within_r{radius}"] = engine.precision_within(partials, radius)
    return out
