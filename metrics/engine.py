"""The metrics engine: every Hamming metric from per-query counts, on either backend.

A Hamming distance takes K + 1 values, so ranking is counting. Per query, everything any metric
of this package needs is a small set of integers, `Partials`:

- items_at[d], relevant_at[d]: the histogram over distances d = 0..K (tie-aware mAP, PR by
  radius, precision within a radius, the number R of relevant items);
- ap_limbs: the exact sum over relevant items of hits / position (stable mAP@all), as two
  int64 limbs (see `limb_scales`);
- cut[j]: for cutoff k_j, the hits in the top k_j, and the exact precision sums over those
  hits and over the first k_j relevant items wherever they rank (P@k and the four mAP@k
  variants).

Positions and hits are stable (ties in database index order). Every field is additive over
disjoint parts of the database once each part knows what is ranked before it at each distance
(`start_offsets`): that is how database blocks, memory-mapped databases and shards on
different machines give the single-machine numbers exactly. The float metrics are computed
from the integers at the very end, on the CPU with numpy, in one fixed order: the same inputs
give the same float64 values on every backend, device, thread count and split.

Backends: the counting kernel (metrics/counting.py, numba, CPU) and the torch backend
(metrics/sorting.py: a sort of unique keys per block, any device, the CUDA path and the CPU
reference; also cosine ranking, which has no distance histogram).
"""
from __future__ import annotations

import functools
from fractions import Fraction
from typing import Sequence

import numpy as np
import torch

from . import counting, sorting
from .inputs import Problem, prepare
from .partials import FIRST_HI, FIRST_LO, HITS, TOPK_HI, TOPK_LO, Partials, limb_scales, limbs_value

MAP_AT_K_VARIANTS = ("topk", "trec", "hashnet", "calc_map_k")
BACKENDS = ("auto", "fused", "torch")
# ---- metrics from partials (numpy, CPU, fixed order) -------------------------------------------
def stable_ap(p: Partials) -> np.ndarray:
    """Per-query AP@all, ties by database index; 0 without relevant items."""
    return limbs_value(p.ap_limbs, p.n_retrieval) / np.maximum(p.relevant_total, 1)


def ap_at_k(p: Partials, k: int, variant: str) -> np.ndarray:
    """Per-query AP@k of one variant (see ranking.mean_average_precision_at_k); NaN = dropped."""
    cut = p.cut[:, p.cutoffs.index(k)]
    total = p.relevant_total.astype(np.float64)
    if variant == "calc_map_k":
        return limbs_value(cut[:, FIRST_HI:FIRST_LO + 1], p.n_retrieval) / np.maximum(np.minimum(total, k), 1)
    numerator = limbs_value(cut[:, TOPK_HI:TOPK_LO + 1], p.n_retrieval)
    hits = cut[:, HITS].astype(np.float64)
    if variant == "trec":
        return numerator / np.maximum(total, 1)
    ap = numerator / np.maximum(hits, 1)
    if variant == "hashnet":
        return np.where(hits > 0, ap, np.nan)
    return ap  # "topk"


def precision_at(p: Partials, k: int) -> np.ndarray:
    """Per-query precision@k, ties by database index."""
    return p.cut[:, p.cutoffs.index(k), HITS] / float(k)


def tie_aware_ap(p: Partials) -> np.ndarray:
    """Expected AP over uniformly random order within tie groups (He et al., CVPR 2018).

    Per tie group d with n items, p relevant, N items and P relevant ranked before it:
    sum_{t=1..n} (P + 1 + (t-1) c) / (N + t) with c = (p-1)/(n-1) (0 if n = 1)
    = c n + (P + 1 - c (N + 1)) (H[N + n] - H[N]); the group adds (p/n) times that, over R.
    Only groups with a relevant item contribute, so only those are computed.
    """
    items_at, relevant_at = p.items_at, p.relevant_at
    before_n = np.cumsum(items_at, 1) - items_at
    before_p = np.cumsum(relevant_at, 1) - relevant_at
    query, group = np.nonzero(relevant_at)
    n, rel = items_at[query, group].astype(np.float64), relevant_at[query, group].astype(np.float64)
    closer, closer_relevant = before_n[query, group], before_p[query, group].astype(np.float64)
    c = np.where(n > 1, (rel - 1) / np.maximum(n - 1, 1), 0.0)
    harmonic = harmonic_difference(closer, closer + items_at[query, group])
    group_sum = rel / n * (c * n + (closer_relevant + 1 - c * (closer.astype(np.float64) + 1)) * harmonic)
    per_group = np.zeros(items_at.shape)
    per_group[query, group] = group_sum
    return per_group.sum(1) / np.maximum(relevant_at.sum(1), 1)


_DIRECT = 64  # below this, harmonic differences come from a table of exactly rounded sums


@functools.cache
def _small_harmonic_differences() -> np.ndarray:
    """D[a, b] = H[b] - H[a] for 0 <= a <= b <= 64, each correctly rounded."""
    table = np.zeros((_DIRECT + 1, _DIRECT + 1))
    for a in range(_DIRECT + 1):
        total = Fraction(0)
        for b in range(a + 1, _DIRECT + 1):
            total += Fraction(1, b)
            table[a, b] = float(total)
    return table


def harmonic_difference(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """H[high] - H[low] (H[m] = 1 + 1/2 + ... + 1/m) to a few ulps of relative accuracy.

    A table of H would lose it: H[N + n] - H[N] is ~n/N while each H[m] carries an absolute
    error growing with m (relative error ~1e-8 at ten million items). Above 64 the difference
    is digamma(high + 1) - digamma(low + 1) from its asymptotic series, each term's difference
    written without cancellation.
    """
    low, high = np.asarray(low, np.int64), np.asarray(high, np.int64)
    table = _small_harmonic_differences()
    middle = np.clip(low, _DIRECT, None)
    out = table[np.minimum(low, _DIRECT), np.minimum(high, _DIRECT)]  # the part below 64
    large = high > _DIRECT
    a = middle[large].astype(np.float64) + 1  # digamma(x + 1) - digamma(a) for x in (a-1, b-1]
    b = np.maximum(high[large], middle[large]).astype(np.float64) + 1
    gap = b - a
    inverse = 1.0 / (a * b)
    squared = inverse * inverse
    a2, b2 = a * a, b * b
    series = (np.log1p(gap / a) + 0.5 * gap * inverse  # ln x - 1/(2x)
              + gap * (a + b) * squared / 12  # - 1/(12 x^2)
              - gap * (a + b) * (a2 + b2) * (squared * squared) / 120  # + 1/(120 x^4)
              + gap * (a + b) * (a2 * a2 + a2 * b2 + b2 * b2) * (squared * squared * squared) / 252)  # - 1/(252 x^6)
    out[large] = out[large] + series
    return out


def within_radius(p: Partials) -> tuple[np.ndarray, np.ndarray]:
    """Per query: items and relevant items within radius r = 0..K (cumulative histograms)."""
    return np.cumsum(p.items_at, 1), np.cumsum(p.relevant_at, 1)


def precision_within(p: Partials, radius: int) -> np.ndarray:
    """Per-query precision of the Hamming ball of `radius`; an empty ball counts as 0."""
    within, relevant_within = (x[:, radius].astype(np.float64) for x in within_radius(p))
    return np.where(within > 0, relevant_within / np.maximum(within, 1), 0.0)


def pr_curve(p: Partials, average: str, empty_precision: float) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) by radius 0..K, micro (pooled pairs) or macro (mean over queries)."""
    within, relevant_within = (x.astype(np.float64) for x in within_radius(p))
    totals = p.relevant_total.astype(np.float64)
    if average == "micro":
        pooled = within.sum(0)
        precision = np.where(pooled > 0, relevant_within.sum(0) / np.maximum(pooled, 1), empty_precision)
        return precision, relevant_within.sum(0) / max(totals.sum(), 1.0)
    per_query = np.where(within > 0, relevant_within / np.maximum(within, 1), empty_precision)
    kept = ~np.isnan(per_query)
    with np.errstate(invalid="ignore"):  # every query's ball empty and empty_precision NaN: NaN
        precision = np.where(kept, per_query, 0.0).sum(0) / kept.sum(0)
    return precision, (relevant_within / np.maximum(totals, 1)[:, None]).mean(0)


# ---- computing partials ------------------------------------------------------------------------
def use_kernel(problem: Problem, backend: str) -> bool:
    """Whether the counting kernel runs; raises if backend="fused" was asked for but cannot run."""
    if backend == "torch":
        return False
    reasons = []
    if problem.metric != "hamming":
        reasons.append("it ranks by Hamming distance only (cosine scores are sorted)")
    if problem.device.type != "cpu":
        reasons.append(f"it runs on CPU, the codes are on {problem.device}")
    if reasons and backend == "auto":
        return False  # without importing numba
    if not counting.available():
        reasons.append("numba is not installed")
    elif not reasons and not counting.supports(problem.bits):
        reasons.append(f"{problem.bits}-bit codes are beyond its packed records")
    if reasons and backend == "fused":
        raise ValueError(f"backend='fused' cannot be used: {'; '.join(reasons)}")
    return not reasons


def compute(problem: Problem, cutoffs: Sequence[int] = (), *, stable: bool = True, backend: str = "auto",
            chunk_size: int | None = None, block_size: int | None = None,
            start: tuple[np.ndarray, np.ndarray] | None = None, n_total: int | None = None) -> Partials:
    """Partials of `problem`: the distance histograms (Hamming), plus the stable AP sums if
    `stable` and the statistics of `cutoffs` (stable=False and no cutoffs: histograms only;
    the kernel then skips every per-item record).

    start, n_total: the problem's database is a part (shard) of one with n_total items, and
    start = (items, relevant) ranked before the part's items at each distance, int64
    (n_q, K + 1) each (from `sharded.shard_offsets`); the result then holds the part's scores
    only, to be merged with the other parts and the histograms.
    """
    cutoffs = tuple(sorted(set(int(k) for k in cutoffs)))
    scoring = stable or bool(cutoffs)
    n_total = problem.n_retrieval if n_total is None else int(n_total)
    if scoring:
        limb_scales(n_total)  # raises beyond the exact-sum limit
    kernel = use_kernel(problem, backend)
    if start is not None:
        if kernel:
            ap_limbs, cut = counting.scores(problem.packed(), problem.bits, n_total, cutoffs, *start,
                                            block_size=block_size, need_ap=stable)
        else:
            part = sorting.partials(problem, cutoffs, stable=True, chunk_size=chunk_size, start=start, n_total=n_total)
            ap_limbs, cut = part.ap_limbs, part.cut
        return Partials(n_total, cutoffs, ap_limbs=ap_limbs, cut=cut)
    if kernel:
        return counting.partials(problem.packed(), problem.n_retrieval, problem.bits, cutoffs, stable=stable,
                                 block_size=block_size)
    return sorting.partials(problem, cutoffs, stable=scoring, chunk_size=chunk_size)


def problem(query_codes, retrieval_codes, query_labels, retrieval_labels, *, metric: str = "hamming",
            permutation_seed: int | None = None, backend: str = "auto", chunk_size: int | None = None,
            block_size: int | None = None) -> Problem:
    """Validated inputs, with the backend options checked too (whichever backend will run)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto', 'torch' or 'fused', got {backend!r}")
    prepared = prepare(query_codes, retrieval_codes, query_labels, retrieval_labels, metric, permutation_seed)
    sorting.chunk_size(prepared, chunk_size)
    if block_size is not None and (isinstance(block_size, bool) or int(block_size) != block_size or int(block_size) < 1):
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    return prepared


def check_k(k: int, n_retrieval: int, name: str = "k") -> int:
    """k as an int, or a clear error when it is not a cutoff in 1..n_retrieval."""
    if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= n_retrieval:
        raise ValueError(f"{name} must be an integer in 1..{n_retrieval} (the retrieval set size), got {k!r}")
    return int(k)


def check_radius(radius: int, bits: int) -> int:
    if isinstance(radius, bool) or int(radius) != radius or not 0 <= int(radius) <= bits:
        raise ValueError(f"radius must be an integer in 0..{bits} (the code length), got {radius!r}")
    return int(radius)


def as_tensor(values: np.ndarray, problem: Problem) -> torch.Tensor:
    """A result as a float64 tensor on the device of the query codes."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float64)).to(problem.device)


def nan_mean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries (NaN if there are none), in numpy on the CPU: the same
    float on every device."""
    kept = ~np.isnan(values)
    return float(values[kept].mean()) if kept.any() else float("nan")


def dense_inputs(query_codes, retrieval_codes, query_labels, retrieval_labels, metric: str = "hamming",
                 permutation_seed: int | None = None) -> sorting.Chunks:
    """Validated inputs as dense tensors on the query's device, with per-chunk relevance:
    `.query` and `.retrieval` (float32 ±1 codes or unit rows), for metrics that work on the
    scores directly (Recall@K)."""
    return sorting.Chunks(prepare(query_codes, retrieval_codes, query_labels, retrieval_labels, metric, permutation_seed))


def query_chunks(inputs: sorting.Chunks, chunk_size: int | None = None):
    """Yield (query rows, their int32 0/1 relevance to every item) of `dense_inputs`, chunk by chunk."""
    return inputs.iterate(chunk_size)
