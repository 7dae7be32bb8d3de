"""One call for the standard numbers of one retrieval direction, as a flat dict a runner can log."""
from __future__ import annotations

from typing import Sequence

import torch

from .ranking import (
    MAP_AT_K_VARIANTS,
    _ap_all,
    _ap_at_k,
    _chunks,
    _harmonic_table,
    _histograms_from_sorted_keys,
    _low_bit,
    _prepare,
    _ranked_sums,
    _sorted_hamming_keys,
    _tie_aware_ap,
)

DEFAULT_MAP_KS = (50, 1000, 5000)
DEFAULT_PRECISION_KS = (10, 100, 1000)


def _usable_ks(ks: Sequence[int], n_retrieval: int, name: str) -> list[int]:
    for k in ks:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise ValueError(f"{name} must hold positive integers, got {k!r}")
    return sorted({int(k) for k in ks if k <= n_retrieval})  # cutoffs beyond the database are skipped


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
    (for paired significance tests) come from evaluate_hashing_per_query.
    """
    per_query = evaluate_hashing_per_query(
        query_codes, retrieval_codes, query_labels, retrieval_labels, map_ks=map_ks,
        precision_ks=precision_ks, radius=radius, permutation_seed=permutation_seed, chunk_size=chunk_size,
    )
    # nanmean: only hashnet produces NaN (its dropped queries); elsewhere it equals mean.
    return {key: float(values.nanmean()) for key, values in per_query.items()}


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
) -> dict[str, torch.Tensor]:
    """Return the keys of evaluate_hashing, each as per-query float64 values of shape (n_q,).

    Everything comes from one sort per query chunk. NaN marks a query that hashnet drops.
    """
    inputs = _prepare(query_codes, retrieval_codes, query_labels, retrieval_labels, "hamming", permutation_seed)
    if isinstance(radius, bool) or int(radius) != radius or not 0 <= int(radius) <= inputs.bits:
        raise ValueError(f"radius must be an integer in 0..{inputs.bits} (the code length), got {radius!r}")
    map_ks = _usable_ks(map_ks, inputs.n_retrieval, "map_ks")
    precision_ks = _usable_ks(precision_ks, inputs.n_retrieval, "precision_ks")
    harmonic = _harmonic_table(inputs.n_retrieval, inputs.device)
    per_query: dict[str, list[torch.Tensor]] = {}

    def add(key: str, values: torch.Tensor) -> None:
        per_query.setdefault(key, []).append(values)

    for rows, relevant in _chunks(inputs, chunk_size):
        # One sort serves everything: ranked relevance is the keys' low bit, and the per-distance
        # histograms for tie-aware AP and the radius are read off the sorted keys.
        sorted_keys = _sorted_hamming_keys(inputs, rows, relevant)
        sums = _ranked_sums(inputs, _low_bit(inputs, sorted_keys))
        items_at, relevant_at = _histograms_from_sorted_keys(inputs, sorted_keys, sums.hits)
        add("map_tie_aware", _tie_aware_ap(items_at, relevant_at, harmonic))
        within = items_at[:, : radius + 1].sum(1).to(torch.float64)
        relevant_within = relevant_at[:, : radius + 1].sum(1).to(torch.float64)
        add(f"p_within_r{radius}", torch.where(within > 0, relevant_within / within.clamp(min=1), 0.0))
        add("map", _ap_all(sums))
        for k in map_ks:
            for variant in MAP_AT_K_VARIANTS:
                add(f"map_at_{k}_{variant}", _ap_at_k(sums, k, variant))
        for k in precision_ks:
            add(f"p_at_{k}", sums.hits[:, k - 1].to(torch.float64) / k)

    order = ["map", "map_tie_aware"] + [f"map_at_{k}_{v}" for k in map_ks for v in MAP_AT_K_VARIANTS]
    order += [f"p_at_{k}" for k in precision_ks] + [f"p_within_r{radius}"]
    return {key: torch.cat(per_query[key]) for key in order}
