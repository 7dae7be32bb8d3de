"""Retrieval metrics for binary codes (and real-valued embeddings): pure functions on tensors.

Same code on CPU and CUDA (inputs are moved to the device of `query_codes`), memory bounded by
chunking over queries. See metrics/ranking.py for the exact semantics of each number.
"""
from .evaluate import evaluate_hashing, evaluate_hashing_per_query
from .hamming import as_pm1, binarize, hamming_distance
from .ranking import (
    MAP_AT_K_VARIANTS,
    PRCurve,
    mean_average_precision,
    mean_average_precision_at_k,
    pr_curve,
    precision_at_k,
    precision_within_radius,
)
from .recall import paired_recall, recall_at_k

__all__ = [
    "MAP_AT_K_VARIANTS",
    "PRCurve",
    "as_pm1",
    "binarize",
    "evaluate_hashing",
    "evaluate_hashing_per_query",
    "hamming_distance",
    "mean_average_precision",
    "mean_average_precision_at_k",
    "paired_recall",
    "pr_curve",
    "precision_at_k",
    "precision_within_radius",
    "recall_at_k",
]
