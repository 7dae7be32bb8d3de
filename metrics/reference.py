"""Slow, obviously-correct numpy reference: one query at a time, DCMH evaluator semantics.

Used by the tests and the speed benchmark; nothing here is optimised on purpose. Codes are ±1
arrays, labels multi-hot; relevance = at least one shared label; ranking = Hamming distance
ascending with ties in database index order (np.argsort(kind="stable")).
"""
from __future__ import annotations

import numpy as np


def _relevance_and_order(query_code, retrieval_codes, query_label, retrieval_labels):
    bits = retrieval_codes.shape[1]
    distance = 0.5 * (bits - retrieval_codes @ query_code)
    relevant = (retrieval_labels @ query_label) > 0
    order = np.argsort(distance, kind="stable")
    return distance, relevant, order


def reference_average_precisions(query_codes, retrieval_codes, query_labels, retrieval_labels) -> np.ndarray:
    """Per-query AP@all (n_q,), stable ties; 0 for a query without relevant items."""
    aps = np.zeros(len(query_codes))
    for i in range(len(query_codes)):
        _, relevant, order = _relevance_and_order(query_codes[i], retrieval_codes, query_labels[i], retrieval_labels)
        ranked = relevant[order]
        total = ranked.sum()
        if total == 0:
            continue
        positions = np.flatnonzero(ranked) + 1.0  # 1-based positions of the relevant items
        aps[i] = np.mean(np.arange(1, total + 1) / positions)
    return aps


def reference_map(query_codes, retrieval_codes, query_labels, retrieval_labels) -> float:
    """mAP@all with stable ties (mean of reference_average_precisions)."""
    return float(reference_average_precisions(query_codes, retrieval_codes, query_labels, retrieval_labels).mean())


def reference_average_precisions_at_k(query_codes, retrieval_codes, query_labels, retrieval_labels, k: int,
                                      variant: str) -> np.ndarray:
    """Per-query AP@k for the variants of metrics.mean_average_precision_at_k (NaN = dropped)."""
    aps = np.zeros(len(query_codes))
    for i in range(len(query_codes)):
        _, relevant, order = _relevance_and_order(query_codes[i], retrieval_codes, query_labels[i], retrieval_labels)
        ranked = relevant[order]
        total = int(ranked.sum())
        positions = np.flatnonzero(ranked) + 1.0
        if variant == "calc_map_k":
            first = positions[: min(k, total)]
            aps[i] = np.mean(np.arange(1, len(first) + 1) / first) if len(first) else 0.0
            continue
        top = positions[positions <= k]
        precision_sum = np.sum(np.arange(1, len(top) + 1) / top)
        if variant == "trec":
            aps[i] = precision_sum / total if total else 0.0
        elif variant == "topk":
            aps[i] = precision_sum / len(top) if len(top) else 0.0
        elif variant == "hashnet":
            aps[i] = precision_sum / len(top) if len(top) else np.nan
        else:
            raise ValueError(variant)
    return aps


def reference_precisions_at_k(query_codes, retrieval_codes, query_labels, retrieval_labels, ks) -> np.ndarray:
    """Per-query precision@k (n_q, len(ks)), stable ties."""
    out = np.zeros((len(query_codes), len(ks)))
    for i in range(len(query_codes)):
        _, relevant, order = _relevance_and_order(query_codes[i], retrieval_codes, query_labels[i], retrieval_labels)
        for j, k in enumerate(ks):
            out[i, j] = relevant[order][:k].sum() / k
    return out


def reference_precision_at_k(query_codes, retrieval_codes, query_labels, retrieval_labels, ks) -> np.ndarray:
    """Mean precision@k for each k, stable ties."""
    return reference_precisions_at_k(query_codes, retrieval_codes, query_labels, retrieval_labels, ks).mean(0)


def reference_tie_aware_average_precisions(query_codes, retrieval_codes, query_labels, retrieval_labels) -> np.ndarray:
    """Per-query tie-aware AP, the METHODS.md formula summed term by term (no closed form)."""
    bits = retrieval_codes.shape[1]
    aps = np.zeros(len(query_codes))
    for i in range(len(query_codes)):
        distance, relevant, _ = _relevance_and_order(query_codes[i], retrieval_codes, query_labels[i], retrieval_labels)
        total = relevant.sum()
        if total == 0:
            continue
        before_n = before_p = 0
        ap = 0.0
        for d in range(bits + 1):
            n = int(np.sum(distance == d))
            p = int(np.sum(relevant & (distance == d)))
            if p:
                c = (p - 1) / (n - 1) if n > 1 else 0.0
                ap += p / n * sum((before_p + 1 + (t - 1) * c) / (before_n + t) for t in range(1, n + 1))
            before_n += n
            before_p += p
        aps[i] = ap / total
    return aps


def reference_radius_counts(query_codes, retrieval_codes, query_labels, retrieval_labels, radius: int):
    """Per query: (items within radius, relevant items within radius, relevant items in total)."""
    out = np.zeros((len(query_codes), 3), dtype=np.int64)
    for i in range(len(query_codes)):
        distance, relevant, _ = _relevance_and_order(query_codes[i], retrieval_codes, query_labels[i], retrieval_labels)
        ball = distance <= radius
        out[i] = ball.sum(), (ball & relevant).sum(), relevant.sum()
    return out


def reference_evaluate_per_query(query_codes, retrieval_codes, query_labels, retrieval_labels, map_ks, precision_ks,
                                 radius: int) -> dict[str, np.ndarray]:
    """Every key of metrics.evaluate_hashing_per_query, from the loops above (cutoffs must not
    exceed the database)."""
    problem = (query_codes, retrieval_codes, query_labels, retrieval_labels)
    out = {"map": reference_average_precisions(*problem), "map_tie_aware": reference_tie_aware_average_precisions(*problem)}
    for k in map_ks:
        for variant in ("topk", "trec", "hashnet", "calc_map_k"):
            out[f"map_at_{k}_{variant}"] = reference_average_precisions_at_k(*problem, k, variant)
    for k in precision_ks:
        out[f"p_at_{k}"] = reference_precisions_at_k(*problem, [k])[:, 0]
    counts = reference_radius_counts(*problem, radius)
    out[f"p_within_r{radius}"] = np.where(counts[:, 0] > 0, counts[:, 1] / np.maximum(counts[:, 0], 1), 0.0)
    return out