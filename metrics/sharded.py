"""Evaluation over a database split into shards: exact merge of per-shard partial results.

The database is the concatenation of its shards in order (shard 0's items first). Two phases,
each a pure function of one shard plus small per-query arrays, so each can run where the shard
lives (another process or machine):

1. `shard_histograms`: per query and Hamming distance, the shard's items and relevant items.
   Histograms are additive: their sum is the whole database's.
2. `shard_scores`, given `shard_offsets` (computed from all histograms): an item's stable rank
   needs only what is ranked before it at its own distance, i.e. everything at closer
   distances plus the earlier shards' items at the same distance. With those offsets each
   shard computes the exact (integer) AP and cutoff sums of its own items.

`merge_partials` adds the shards' integers; `metrics_from_partials` turns the sum into the
evaluate_hashing numbers. Every number equals the single-machine one exactly (same integers,
same final float operations). `evaluate_sharded` runs both phases over a concurrent.futures
executor (a process pool by default; a Dask client's `get_executor()` offers the same interface).
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import engine
from .evaluate import DEFAULT_MAP_KS, DEFAULT_PRECISION_KS, per_query_metrics, usable_ks
from .partials import Partials, merge


def shard_histograms(query_codes, shard_codes, query_labels, shard_labels, *, backend: str = "auto",
                     chunk_size: int | None = None, block_size: int | None = None) -> Partials:
    """Phase 1 on one shard: per-query distance histograms (items_at, relevant_at)."""
    problem = engine.problem(query_codes, shard_codes, query_labels, shard_labels, backend=backend,
                             chunk_size=chunk_size, block_size=block_size)
    part = engine.compute(problem, stable=False, backend=backend, chunk_size=chunk_size, block_size=block_size)
    return Partials(problem.n_retrieval, (), items_at=part.items_at, relevant_at=part.relevant_at)


def shard_offsets(histograms: Sequence[Partials]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each shard (in database order): (items, relevant items) ranked before its items at
    each distance, int64 (n_q, K + 1) each: all shards' counts at closer distances plus the
    earlier shards' counts at the same distance."""
    items = np.stack([h.items_at for h in histograms])  # (shards, n_q, K + 1)
    relevant = np.stack([h.relevant_at for h in histograms])
    out = []
    for counts in (items, relevant):
        total = counts.sum(0)
        closer = np.cumsum(total, 1) - total
        earlier = np.cumsum(counts, 0) - counts
        out.append(closer[None] + earlier)
    return [(out[0][s], out[1][s]) for s in range(len(histograms))]


def shard_scores(query_codes, shard_codes, query_labels, shard_labels, offsets: tuple[np.ndarray, np.ndarray],
                 n_retrieval: int, cutoffs: Sequence[int] = (), *, backend: str = "auto", chunk_size: int | None = None,
                 block_size: int | None = None) -> Partials:
    """Phase 2 on one shard of a database of n_retrieval items: the exact AP and cutoff sums of
    its items, given its offsets from shard_offsets."""
    problem = engine.problem(query_codes, shard_codes, query_labels, shard_labels, backend=backend,
                             chunk_size=chunk_size, block_size=block_size)
    return engine.compute(problem, cutoffs, backend=backend, chunk_size=chunk_size, block_size=block_size,
                          start=offsets, n_total=n_retrieval)


def merge_partials(parts: Sequence[Partials]) -> Partials:
    """Sum of the shards' partial results (histograms of phase 1 and scores of phase 2)."""
    return merge(parts)


def metrics_from_partials(partials: Partials, *, map_ks: Sequence[int] = DEFAULT_MAP_KS,
                          precision_ks: Sequence[int] = DEFAULT_PRECISION_KS, radius: int = 2,
                          per_query: bool = False) -> dict:
    """The evaluate_hashing numbers (or, per_query=True, its per-query float64 arrays) from
    merged partials; the cutoffs must have been scored (see shard_scores)."""
    radius = engine.check_radius(radius, partials.items_at.shape[1] - 1)
    values = per_query_metrics(partials, usable_ks(map_ks, partials.n_retrieval, "map_ks"),
                               usable_ks(precision_ks, partials.n_retrieval, "precision_ks"), radius)
    return values if per_query else {key: engine.nan_mean(v) for key, v in values.items()}


def evaluate_sharded(query_codes, query_labels, shards: Sequence, *, map_ks: Sequence[int] = DEFAULT_MAP_KS,
                     precision_ks: Sequence[int] = DEFAULT_PRECISION_KS, radius: int = 2, executor: Executor | None = None,
                     workers: int | None = None, backend: str = "auto", block_size: int | None = None) -> dict[str, float]:
    """evaluate_hashing of the queries against the concatenation of `shards`, each scored by a
    worker of `executor` (default: a process pool of `workers` processes).

    Each shard is (codes, labels): arrays, or paths to .npy files that the worker opens
    memory-mapped (so a worker holds only its shard and nothing large travels). The result
    equals evaluate_hashing on the whole database exactly.
    """
    query_codes = np.asarray(torch.as_tensor(query_codes).cpu())
    query_labels = np.asarray(torch.as_tensor(query_labels).cpu())
    options = {"backend": backend, "block_size": block_size}
    own = executor is None
    # Spawned, not forked: a fork of a process whose OpenMP pool (torch, numba) is running can
    # deadlock in the child.
    executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if own else executor
    try:
        tasks = [(query_codes, codes, query_labels, labels, options) for codes, labels in shards]
        histograms = list(executor.map(_histograms_task, tasks))
        n_retrieval = sum(h.n_retrieval for h in histograms)
        cutoffs = sorted(set(usable_ks(map_ks, n_retrieval, "map_ks")) | set(usable_ks(precision_ks, n_retrieval, "precision_ks")))
        offsets = shard_offsets(histograms)
        scored = list(executor.map(_scores_task, [task + (offset, n_retrieval, cutoffs) for task, offset in zip(tasks, offsets)]))
    finally:
        if own:
            executor.shutdown()
    return metrics_from_partials(merge_partials(histograms + scored), map_ks=map_ks, precision_ks=precision_ks, radius=radius)


def _load(source):
    """An array, or a .npy path opened memory-mapped in the worker."""
    return np.load(source, mmap_mode="r") if isinstance(source, (str, Path)) else source


def _histograms_task(task) -> Partials:
    query_codes, codes, query_labels, labels, options = task
    return shard_histograms(query_codes, _load(codes), query_labels, _load(labels), **options)


def _scores_task(task) -> Partials:
    query_codes, codes, query_labels, labels, options, offsets, n_retrieval, cutoffs = task
    return shard_scores(query_codes, _load(codes), query_labels, _load(labels), offsets, n_retrieval, cutoffs, **options)
