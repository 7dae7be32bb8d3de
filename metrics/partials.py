"""Per-query partial results of the engine: additive integers, and their exact limb sums.

See metrics/engine.py for what the fields mean and how parts of a database merge.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Cutoff statistics fields (counting_kernels.py uses the same order).
HITS, TOPK_HI, TOPK_LO, FIRST_HI, FIRST_LO = range(5)
CUTOFF_FIELDS = 5
# Exact sums need 52 + log2(n) bits of fraction plus log2(n) of carry in each of two int64 limbs.
MAX_EXACT_ITEMS = (1 << 24) - 1  # also what the kernel's 24-bit counters hold


@dataclass
class Partials:
    """Additive integer counts of a query set against a database (or a part of it)."""

    n_retrieval: int  # items in the whole database (positions and the limb scales use it)
    cutoffs: tuple[int, ...]  # ascending
    items_at: np.ndarray | None = None  # int64 (n_q, K + 1)
    relevant_at: np.ndarray | None = None  # int64 (n_q, K + 1)
    ap_limbs: np.ndarray | None = None  # int64 (n_q, 2)
    cut: np.ndarray | None = None  # int64 (n_q, len(cutoffs), CUTOFF_FIELDS)
    total_relevant: np.ndarray | None = None  # int64 (n_q,): R, for cosine (no histogram)

    @property
    def relevant_total(self) -> np.ndarray:
        return self.relevant_at.sum(1) if self.relevant_at is not None else self.total_relevant


def merge(parts: Sequence[Partials]) -> Partials:
    """The sum of partial results over disjoint parts of one database.

    Parts holding histograms only (phase 1 of a shard) cover their own items: their sizes add
    up. Parts holding scores (phase 2) already refer to the whole database: they must agree on
    its size and on the cutoffs, and so must the histograms' total when both kinds are merged
    (each shard's histograms and its scores together).
    """
    if not parts:
        raise ValueError("no partial results to merge")
    scored = [p for p in parts if p.ap_limbs is not None or p.cut is not None]
    counted = [p for p in parts if not (p.ap_limbs is not None or p.cut is not None)]
    sizes = {p.n_retrieval for p in scored} | ({sum(p.n_retrieval for p in counted)} if counted else set())
    if len(sizes) > 1:
        raise ValueError(f"partial results to merge disagree on the database size: {sorted(sizes)}")
    if len({p.cutoffs for p in scored}) > 1:
        raise ValueError("scored partial results to merge must share their cutoffs")
    merged = {"n_retrieval": sizes.pop(), "cutoffs": scored[0].cutoffs if scored else ()}
    for name in ("items_at", "relevant_at", "ap_limbs", "cut", "total_relevant"):
        values = [getattr(part, name) for part in parts if getattr(part, name) is not None]
        if values:
            total = values[0].copy()
            for value in values[1:]:
                if value.shape != total.shape:
                    raise ValueError(f"partial results to merge disagree on the shape of {name}: {value.shape} vs {total.shape}")
                total += value
            merged[name] = total
    return Partials(**merged)


def limb_scales(n_retrieval: int) -> tuple[float, float]:
    """(hi_scale, lo_scale) of the exact two-limb sums for a database of n_retrieval items.

    A contribution c = hits * (1 / position) is a float64 in [2^-k, ~1] with 2^k >= n, so it
    is a multiple of 2^-(52 + k): c * 2^(52 + k) is an integer. hi = floor(c * hi_scale) and
    lo = (c * hi_scale - hi) * lo_scale (both exact) hold it with
    hi_scale * lo_scale = 2^(52 + k). At most n items add up, so the limbs stay below 2^63 when
    hi_scale = 2^(62 - k) and lo < 2^(2k - 10): k <= 24.
    """
    if n_retrieval > MAX_EXACT_ITEMS:
        raise ValueError(f"exact sums cover databases of up to {MAX_EXACT_ITEMS} items, got {n_retrieval}")
    k = max(1, math.ceil(math.log2(max(n_retrieval, 2))))
    high = min(62 - k, 52 + k)
    return float(2.0 ** high), float(2.0 ** (52 + k - high))


def limbs_value(limbs: np.ndarray, n_retrieval: int) -> np.ndarray:
    """float64 value of exact limbs (..., 2): a fixed function of the integers."""
    hi_scale, lo_scale = limb_scales(n_retrieval)
    return limbs[..., 0].astype(np.float64) / hi_scale + limbs[..., 1].astype(np.float64) / (hi_scale * lo_scale)


@functools.lru_cache(maxsize=2)
def inverse_positions(n: int) -> np.ndarray:
    """1 / (1..n) as float64 (numpy, so every backend multiplies by the same table)."""
    return 1.0 / np.arange(1, n + 1, dtype=np.float64)
