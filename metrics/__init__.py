"""Retrieval metrics for binary codes (and real-valued embeddings): pure functions on tensors.

Same numbers on CPU and CUDA (inputs are moved to the device of `query_codes`), from per-query
integer counts (metrics/engine.py): the counting kernel on CPU, torch ops elsewhere. Databases
larger than memory are read in blocks (numpy memory maps), and shards of a database merge
exactly (metrics/sharded.py). See metrics/README.md for the exact semantics of each number.
"""
from .evaluate import evaluate_hashing, evaluate_hashing_per_query
from .hamming import as_pm1, binarize, hamming_distance
from .partials import Partials
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
from .sharded import evaluate_sharded, merge_partials, metrics_from_partials, shard_histograms, shard_offsets, shard_scores

__all__ = [
    "MAP_AT_K_VARIANTS",
    "PRCurve",
    "Partials",
    "as_pm1",
    "binarize",
    "evaluate_hashing",
    "evaluate_hashing_per_query",
    "evaluate_sharded",
    "hamming_distance",
    "mean_average_precision",
    "mean_average_precision_at_k",
    "merge_partials",
    "metrics_from_partials",
    "paired_recall",
    "pr_curve",
    "precision_at_k",
    "precision_within_radius",
    "recall_at_k",
    "shard_histograms",
    "shard_offsets",
    "shard_scores",
]
