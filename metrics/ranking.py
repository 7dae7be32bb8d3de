"""Ranking metrics for cross-modal retrieval by Hamming (or cosine) ranking.

Semantics follow the DCMH evaluator (see ../shared/METHODS.md, "Evaluation semantics"):
relevance = label rows share at least one label (1-D integer labels: equal class / instance id);
ranking = Hamming distance ascending, ties broken by database index (a stable sort); a query with no
relevant item has AP 0 and still counts in the mean.

Everything is chunked over queries so memory is O(chunk x n_retrieval), and everything runs on the
device where `query_codes` lives (other inputs are moved there).

Speed: Hamming distances take only K + 1 values. The stable order is obtained by sorting one
unique integer key per (query, item), key = 2 * (n * distance + index) + relevant, so the sort's
own tie handling never matters (identical results from numpy's in-place sort on CPU and
torch.sort on CUDA), and the relevance bit rides along in the key instead of needing a gather.
Tie-aware AP, precision within a radius and PR curves need only per-query histograms over
(distance, relevant) from one bincount: no sort. Per-chunk temporaries live in buffers reused
for the whole call (see _Inputs.buffer). On CPU, stable mAP@all alone goes through the fused
counting kernel of metrics/fused.py instead (no sort; see there), when numba is installed.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import torch

from . import fused
from .hamming import as_pm1

MAP_AT_K_VARIANTS = ("topk", "trec", "hashnet", "calc_map_k")
_FLOAT32_EXACT = 1 << 24  # integers below this are exact in float32
# Query x item entries per chunk: on CPU a few MB per temporary, so passes stay in cache; on a GPU
# enough work per kernel launch (H100, MIRFlickr size: 5.5 ms per stable mAP with 1,000-query
# chunks vs 14 ms with 58; tie-aware 3 ms vs 23 ms).
_TARGET_CHUNK_ELEMENTS = {"cpu": 1 << 20}
_TARGET_CHUNK_ELEMENTS_ACCELERATOR = 1 << 24
# Each chunk reads the whole retrieval matrix once; with fewer rows than this a large database
# (NUS-WIDE: 99 MB of codes) makes the matmul memory-bound, so chunks never go below it.
_MIN_CHUNK_ROWS = 32


@dataclass
class _Inputs:
    query: torch.Tensor  # float32 (n_q, d): ±1 codes, or unit-norm rows for cosine
    retrieval: torch.Tensor  # float32 (n_r, d)
    query_labels: torch.Tensor  # float32 (n_q, L) multi-hot, or int64 (n_q,) ids
    retrieval_labels: torch.Tensor
    metric: str  # "hamming" or "cosine"
    _label_words: tuple[torch.Tensor, torch.Tensor] | None = None
    _inverse_positions: torch.Tensor | None = None
    _buffers: dict = field(default_factory=dict)

    def buffer(self, name: str, rows: int, dtype: torch.dtype) -> torch.Tensor:
        """A (rows, n_r) scratch tensor reused across chunks of one call.

        Fresh multi-MB temporaries per chunk cost page faults and, with glibc's malloc, let the
        resident size creep up (NUS-WIDE size: 2.1 GB peak instead of ~0.7 GB); one set of
        buffers per call avoids both. Contents are only valid until the next chunk.
        """
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.dtype != dtype:
            buf = torch.empty(rows, self.n_retrieval, dtype=dtype, device=self.device)
            self._buffers[name] = buf
        return buf[:rows]

    @property
    def inverse_positions(self) -> torch.Tensor:
        """1 / (1..n_r) as float64, computed once per call."""
        if self._inverse_positions is None:
            n = self.n_retrieval
            self._inverse_positions = 1.0 / torch.arange(1, n + 1, device=self.device, dtype=torch.float64)
        return self._inverse_positions

    @property
    def label_words(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-hot labels as int32 bit masks (query (n_q, W), retrieval (n_r, W)), computed
        on first use (the fused stable-mAP path never needs them)."""
        if self._label_words is None:
            self._label_words = _label_words(self.query_labels), _label_words(self.retrieval_labels)
        return self._label_words

    @property
    def bits(self) -> int:
        return self.query.shape[1]

    @property
    def n_retrieval(self) -> int:
        return self.retrieval.shape[0]

    @property
    def device(self) -> torch.device:
        return self.query.device


def _as_labels(labels, name: str, n_rows: int, rows_name: str, device: torch.device) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim not in (1, 2):
        raise ValueError(f"{name} must be 2-D multi-hot (items x labels) or 1-D integer ids, got shape {tuple(labels.shape)}")
    if labels.shape[0] != n_rows:
        raise ValueError(f"{name} has {labels.shape[0]} rows but {rows_name} has {n_rows}; they must match")
    labels = labels.to(device)
    if labels.ndim == 1:
        if labels.is_floating_point():
            if not bool((labels == labels.round()).all()):
                raise ValueError(f"{name} is 1-D, so it must hold integer class or instance ids")
        return labels.to(torch.int64)
    if labels.shape[1] == 0:
        raise ValueError(f"{name} has 0 label columns; expected multi-hot rows with at least one column")
    labels = labels.to(torch.float32)
    low, high = torch.aminmax(labels)  # one pass; NaN makes both NaN, so the check fails
    if not (float(low) >= 0 and float(high) < float("inf")):
        raise ValueError(f"{name} must be non-negative multi-hot (0/1) labels, found negative or non-finite entries")
    return labels


def _prepare(query_codes, retrieval_codes, query_labels, retrieval_labels, metric: str = "hamming",
             permutation_seed: int | None = None) -> _Inputs:
    """Validate inputs once, move them to the query's device, optionally permute the database."""
    if metric not in ("hamming", "cosine"):
        raise ValueError(f"metric must be 'hamming' or 'cosine', got {metric!r}")
    if metric == "hamming":
        query = as_pm1(query_codes, "query_codes")
        retrieval = as_pm1(retrieval_codes, "retrieval_codes").to(query.device)
        if query.shape[1] != retrieval.shape[1]:
            raise ValueError(f"query_codes have {query.shape[1]} bits but retrieval_codes have {retrieval.shape[1]}; they must match")
    else:
        query, retrieval = (torch.as_tensor(x) for x in (query_codes, retrieval_codes))
        for name, x in (("query_codes", query), ("retrieval_codes", retrieval)):
            if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
                raise ValueError(f"{name} must be a non-empty 2-D (items x dims) array, got shape {tuple(x.shape)}")
        if query.shape[1] != retrieval.shape[1]:
            raise ValueError(f"query_codes have {query.shape[1]} dims but retrieval_codes have {retrieval.shape[1]}; they must match")
        query = torch.nn.functional.normalize(query.to(torch.float32), dim=1)
        retrieval = torch.nn.functional.normalize(retrieval.to(torch.float32).to(query.device), dim=1)
    device = query.device
    ql = _as_labels(query_labels, "query_labels", query.shape[0], "query_codes", device)
    rl = _as_labels(retrieval_labels, "retrieval_labels", retrieval.shape[0], "retrieval_codes", device)
    if ql.ndim != rl.ndim:
        raise ValueError("query_labels and retrieval_labels must both be multi-hot (2-D) or both ids (1-D)")
    if ql.ndim == 2 and ql.shape[1] != rl.shape[1]:
        raise ValueError(f"query_labels have {ql.shape[1]} label columns but retrieval_labels have {rl.shape[1]}; they must match")
    if permutation_seed is not None:
        # MATLAB protocol: the database is a random permutation, then ties go by (permuted) index.
        generator = torch.Generator().manual_seed(int(permutation_seed))
        perm = torch.randperm(retrieval.shape[0], generator=generator).to(device)
        retrieval, rl = retrieval[perm], rl[perm]
    return _Inputs(query, retrieval, ql, rl, metric)


_BITS_PER_WORD = 31  # int32 words; bit 31 left alone so packing never overflows


def _label_words(labels: torch.Tensor) -> torch.Tensor:
    """Pack multi-hot rows into int32 bit masks (n, ceil(L / 31)): "share a label" becomes a few
    bitwise ANDs per pair instead of an L-long dot product."""
    present = (labels > 0).to(torch.int32)
    pad = (-present.shape[1]) % _BITS_PER_WORD
    present = torch.nn.functional.pad(present, (0, pad)).view(present.shape[0], -1, _BITS_PER_WORD)
    weights = 2 ** torch.arange(_BITS_PER_WORD, device=labels.device, dtype=torch.int32)
    return (present * weights).sum(2, dtype=torch.int32)


def _chunk_size(inputs: _Inputs, chunk_size: int | None) -> int:
    if chunk_size is None:
        target = _TARGET_CHUNK_ELEMENTS.get(inputs.device.type, _TARGET_CHUNK_ELEMENTS_ACCELERATOR)
        rows = max(_MIN_CHUNK_ROWS, target // inputs.n_retrieval)
        return max(1, min(inputs.query.shape[0], rows))
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    return int(chunk_size)


def _relevance(inputs: _Inputs, rows: slice) -> torch.Tensor:
    """(chunk, n_r) int32 in {0, 1}: shares at least one label (2-D) or has the same id (1-D).

    int32 rather than bool so that adding it to int32 keys stays a same-dtype (vectorised) op.
    Lives in a reused buffer: valid until the next chunk.
    """
    n_rows = rows.stop - rows.start
    relevant = inputs.buffer("relevant", n_rows, torch.int32)
    if inputs.query_labels.ndim == 1:
        return relevant.copy_(inputs.query_labels[rows, None] == inputs.retrieval_labels[None, :])
    query_words, retrieval_words = inputs.label_words
    query_words = query_words[rows]
    torch.bitwise_and(query_words[:, None, 0], retrieval_words[None, :, 0], out=relevant)
    for w in range(1, query_words.shape[1]):
        relevant |= query_words[:, None, w] & retrieval_words[None, :, w]
    return relevant.clamp_(max=1)


def _chunks(inputs: _Inputs, chunk_size: int | None, relevance: bool = True) -> Iterator[tuple[slice, torch.Tensor | None]]:
    """Yield (query rows, their relevance to every item, or None when relevance=False)."""
    step = _chunk_size(inputs, chunk_size)
    for start in range(0, inputs.query.shape[0], step):
        rows = slice(start, min(start + step, inputs.query.shape[0]))
        yield rows, _relevance(inputs, rows) if relevance else None


_sort_pool: ThreadPoolExecutor | None = None


def _sort_rows_(keys: torch.Tensor) -> torch.Tensor:
    """Sort each row ascending, in place on CPU. Keys are unique, so any sort algorithm gives
    the same (stable) result.

    On CPU numpy's vectorised (AVX2) sort of 32-bit keys is ~10x faster than torch.sort; it
    releases the GIL, so row blocks are sorted in torch's number of threads. Elsewhere (CUDA)
    torch.sort is the fast path.
    """
    global _sort_pool
    if keys.device.type != "cpu":
        return torch.sort(keys, dim=1).values
    array = keys.numpy()  # shares memory with `keys`
    threads = min(torch.get_num_threads(), array.shape[0])
    if threads <= 1:
        array.sort(axis=1)
        return keys
    if _sort_pool is None or _sort_pool._max_workers < threads:
        _sort_pool = ThreadPoolExecutor(threads, thread_name_prefix="metrics-sort")
    bounds = np.linspace(0, array.shape[0], threads + 1).astype(int)
    list(_sort_pool.map(lambda i: array[bounds[i]: bounds[i + 1]].sort(axis=1), range(threads)))
    return keys


def _sorted_hamming_keys(inputs: _Inputs, rows: slice, relevant: torch.Tensor) -> torch.Tensor:
    """(chunk, n_r) sorted keys 2n * distance + 2 * index + relevant (int32, or int64 if needed).

    Keys are unique per row, so sorting them gives the order by (distance, database index) and
    the low bit is the relevance of the item at each rank. Valid until the next chunk.
    """
    n, k = inputs.n_retrieval, inputs.bits
    n_rows = rows.stop - rows.start
    query = inputs.query[rows]
    scores = inputs.buffer("scores", n_rows, torch.float32)
    if (k + 2) * n < _FLOAT32_EXACT:
        # (K - q.r) * n + 2 * index: integers below 2^24, so one addmm computes it exactly.
        base = (k * n + 2 * torch.arange(n, device=inputs.device, dtype=torch.float32))[None, :]
        torch.addmm(base, query, inputs.retrieval.t(), alpha=-float(n), out=scores)
        keys = inputs.buffer("keys", n_rows, torch.int32).copy_(scores)
    else:
        dtype = torch.int32 if (k + 2) * n < 2**31 else torch.int64
        torch.mm(query, inputs.retrieval.t(), out=scores)
        keys = inputs.buffer("keys", n_rows, dtype).copy_(scores.neg_().add_(k))  # K - q.r = 2 * distance
        keys.mul_(n).add_(2 * torch.arange(n, device=inputs.device, dtype=dtype))
    keys += relevant
    return _sort_rows_(keys)


def _histograms_from_sorted_keys(inputs: _Inputs, sorted_keys: torch.Tensor, hits: torch.Tensor):
    """Per query (items at d, relevant items at d) for d = 0..K, read off the sorted keys."""
    n, k = inputs.n_retrieval, inputs.bits
    bounds = torch.arange(k + 2, device=inputs.device, dtype=sorted_keys.dtype) * (2 * n)
    below = torch.searchsorted(sorted_keys, bounds.expand(sorted_keys.shape[0], -1).contiguous())
    relevant_below = torch.where(below > 0, hits.gather(1, (below - 1).clamp(min=0)), 0).to(torch.int64)
    return below.diff(dim=1), relevant_below.diff(dim=1)


def _ranked_relevance(inputs: _Inputs, rows: slice, relevant: torch.Tensor) -> torch.Tensor:
    """(chunk, n_r) int32 0/1: relevance in ranking order, ties broken by database index."""
    if inputs.metric == "cosine":
        similarity = inputs.query[rows] @ inputs.retrieval.t()
        order = torch.sort(-similarity, dim=1, stable=True).indices
        return relevant.gather(1, order)
    return _low_bit(inputs, _sorted_hamming_keys(inputs, rows, relevant))


def _low_bit(inputs: _Inputs, sorted_keys: torch.Tensor) -> torch.Tensor:
    ranked = inputs.buffer("ranked", sorted_keys.shape[0], torch.int32)
    return ranked.copy_(sorted_keys & 1) if sorted_keys.dtype != torch.int32 else torch.bitwise_and(sorted_keys, 1, out=ranked)


def _distance_histograms(inputs: _Inputs, rows: slice, relevant: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query and Hamming distance d = 0..K: (items at d, relevant items at d), int64 (chunk, K+1).

    One bincount over bin = row * 2(K+1) + d + (K+1) * relevant; no sort. `relevant` may be
    None (computed here). Folding the labels into the addmm to skip the relevance pass was
    tried and is slower: the longer matmul costs more than the pass it saves.
    """
    k = inputs.bits
    n_rows = rows.stop - rows.start
    if relevant is None:
        relevant = _relevance(inputs, rows)
    bins = 2 * (k + 1)
    if n_rows * bins < _FLOAT32_EXACT:
        # bin = row * 2(K+1) + d + (K+1) * relevant with d = (K - q.r) / 2, exact in float32.
        offset = (torch.arange(n_rows, device=inputs.device, dtype=torch.float32) * bins + 0.5 * k)[:, None]
        scores = inputs.buffer("scores", n_rows, torch.float32)
        torch.addmm(offset, inputs.query[rows], inputs.retrieval.t(), alpha=-0.5, out=scores)
        index = inputs.buffer("keys", n_rows, torch.int32).copy_(scores)
    else:  # pragma: no cover - only with chunks of > 100k queries
        index = (0.5 * (k - inputs.query[rows] @ inputs.retrieval.t())).to(torch.int64)
        index += torch.arange(n_rows, device=inputs.device)[:, None] * bins
    index.add_(relevant, alpha=k + 1)
    counts = torch.bincount(index.flatten(), minlength=n_rows * bins).view(n_rows, 2, k + 1)
    relevant_counts = counts[:, 1]
    return counts[:, 0] + relevant_counts, relevant_counts


def _harmonic_table(n: int, device: torch.device) -> torch.Tensor:
    """H[m] = sum_{i=1..m} 1/i for m = 0..n, float64."""
    inverse = 1.0 / torch.arange(1, n + 1, device=device, dtype=torch.float64)
    return torch.cat([torch.zeros(1, device=device, dtype=torch.float64), inverse.cumsum(0)])


def _tie_aware_ap(items_at: torch.Tensor, relevant_at: torch.Tensor, harmonic: torch.Tensor) -> torch.Tensor:
    """Expected AP over uniformly random order within tie groups (He et al., CVPR 2018).

    Per tie group d with n items, p relevant, N items and P relevant ranked before it:
    sum_{t=1..n} (P + 1 + (t-1) c) / (N + t) with c = (p-1)/(n-1) (0 if n = 1)
    = c n + (P + 1 - c (N + 1)) (H[N + n] - H[N]); the group adds (p/n) times that, over R.
    """
    n = items_at.to(torch.float64)
    p = relevant_at.to(torch.float64)
    before_n = torch.cumsum(items_at, 1) - items_at
    before_p = (torch.cumsum(relevant_at, 1) - relevant_at).to(torch.float64)
    c = torch.where(n > 1, (p - 1) / (n - 1).clamp(min=1), torch.zeros_like(n))
    harmonic_sum = harmonic[before_n + items_at] - harmonic[before_n]
    group_sum = c * n + (before_p + 1 - c * (before_n.to(torch.float64) + 1)) * harmonic_sum
    per_group = torch.where(p > 0, p / n.clamp(min=1) * group_sum, torch.zeros_like(n))
    total_relevant = p.sum(1)
    return per_group.sum(1) / total_relevant.clamp(min=1)


class _RankedSums(NamedTuple):
    hits: torch.Tensor  # int32 (chunk, n): relevant items at positions 1..i
    hits_where_relevant: torch.Tensor  # float64 (chunk, n): hits at relevant positions, else 0
    inverse_positions: torch.Tensor  # float64 (n,): 1 / position


def _ranked_sums(inputs: _Inputs, ranked_relevant: torch.Tensor) -> _RankedSums:
    """Running hit counts of a ranked chunk (buffers valid until the next chunk)."""
    n_rows = ranked_relevant.shape[0]
    hits = torch.cumsum(ranked_relevant, 1, out=inputs.buffer("hits", n_rows, torch.int32))
    weighted = inputs.buffer("weighted", n_rows, torch.float64)
    weighted.copy_(torch.mul(hits, ranked_relevant, out=inputs.buffer("ranked", n_rows, torch.int32)))
    return _RankedSums(hits, weighted, inputs.inverse_positions)


def _precision_sum(sums: _RankedSums, k: int | None = None, hits_where_relevant: torch.Tensor | None = None):
    """sum over relevant positions i <= k of hits(i) / i, float64: a matrix-vector product."""
    values = sums.hits_where_relevant if hits_where_relevant is None else hits_where_relevant
    if k is not None:
        values = values[:, :k]
    return values @ sums.inverse_positions[: values.shape[1]]


def _ap_all(sums: _RankedSums) -> torch.Tensor:
    total_relevant = sums.hits[:, -1].to(torch.float64)
    return _precision_sum(sums) / total_relevant.clamp(min=1)


def _ap_at_k(sums: _RankedSums, k: int, variant: str) -> torch.Tensor:
    """Per-query AP@k under one named variant; NaN marks a query the variant drops (hashnet)."""
    total_relevant = sums.hits[:, -1].to(torch.float64)
    if variant == "calc_map_k":
        # The first min(k, R) relevant items wherever they rank, over min(k, R).
        first = torch.where(sums.hits <= k, sums.hits_where_relevant, 0)
        return _precision_sum(sums, hits_where_relevant=first) / total_relevant.clamp(max=k).clamp(min=1)
    numerator = _precision_sum(sums, k)
    hits_in_top_k = sums.hits[:, k - 1].to(torch.float64)
    if variant == "trec":
        return numerator / total_relevant.clamp(min=1)
    ap = numerator / hits_in_top_k.clamp(min=1)
    if variant == "hashnet":
        return torch.where(hits_in_top_k > 0, ap, float("nan"))
    return ap  # "topk"


def _check_k(k: int, n_retrieval: int, name: str = "k") -> int:
    if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= n_retrieval:
        raise ValueError(f"{name} must be an integer in 1..{n_retrieval} (the retrieval set size), got {k!r}")
    return int(k)


def _check_ties(ties: str) -> None:
    if ties not in ("stable", "tie-aware"):
        raise ValueError(f"ties must be 'stable' or 'tie-aware', got {ties!r}")


def _use_fused(inputs: _Inputs, ties: str, backend: str) -> bool:
    """Whether stable mAP goes through the fused CPU kernel; raises if "fused" was asked for but
    cannot run here."""
    if backend == "torch":
        return False
    reasons = []
    if ties != "stable" or inputs.metric != "hamming":
        reasons.append("it computes stable-tie Hamming mAP only")
    if inputs.device.type != "cpu":
        reasons.append(f"it runs on CPU, the codes are on {inputs.device}")
    if reasons and backend == "auto":
        return False  # without importing numba
    if not fused.available():
        reasons.append("numba is not installed")
    elif not reasons and not fused.supports(inputs.n_retrieval, inputs.bits,
                                            fused.label_words(inputs.query_labels, inputs.retrieval_labels)):
        reasons.append("the database, code length or label count is beyond its packed records")
    if reasons and backend == "fused":
        raise ValueError(f"backend='fused' cannot be used: {'; '.join(reasons)}")
    return not reasons


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
) -> torch.Tensor:
    """Return mAP@all as a 0-d float64 tensor, or per-query APs of shape (n_q,) if per_query.

    ties="stable": Hamming distance ascending, ties in database index order (DCMH/MATLAB).
    ties="tie-aware": the exact expected AP over uniformly random order inside tie groups.
    permutation_seed: shuffle the database with this seed first (MATLAB protocol); tie-aware mAP
    does not depend on it. metric="cosine" ranks real-valued embeddings by cosine similarity,
    ties by index (tie-aware is Hamming-only). Zero-relevance queries have AP 0 and count.
    chunk_size: queries per chunk (default: about 1M query-item pairs on CPU, 16M on GPU, at
    least 32 queries);
    memory is O(chunk_size x n_retrieval).
    backend: for stable Hamming mAP on CPU, "auto" uses the fused kernel (metrics.fused, numba)
    when it is installed and the sizes fit, else the torch path; "torch" or "fused" force one.
    Both give the same values (up to float summation order); chunk_size only affects "torch".
    """
    _check_ties(ties)
    if backend not in ("auto", "torch", "fused"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'fused', got {backend!r}")
    inputs = _prepare(query_codes, retrieval_codes, query_labels, retrieval_labels, metric, permutation_seed)
    _chunk_size(inputs, chunk_size)  # validated whichever path runs
    if _use_fused(inputs, ties, backend):
        ap = fused.stable_average_precisions(inputs.query, inputs.retrieval, inputs.query_labels,
                                             inputs.retrieval_labels, torch.get_num_threads())
        return ap if per_query else ap.mean()
    aps = []
    if ties == "tie-aware":
        if metric != "hamming":
            raise ValueError("ties='tie-aware' needs metric='hamming' (cosine scores are almost never tied)")
        harmonic = _harmonic_table(inputs.n_retrieval, inputs.device)
        for rows, relevant in _chunks(inputs, chunk_size, relevance=False):
            aps.append(_tie_aware_ap(*_distance_histograms(inputs, rows, relevant), harmonic))
    else:
        for rows, relevant in _chunks(inputs, chunk_size):
            aps.append(_ap_all(_ranked_sums(inputs, _ranked_relevance(inputs, rows, relevant))))
    ap = torch.cat(aps)
    return ap if per_query else ap.mean()


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
    inputs = _prepare(query_codes, retrieval_codes, query_labels, retrieval_labels, metric, permutation_seed)
    k = _check_k(k, inputs.n_retrieval)
    aps = [
        _ap_at_k(_ranked_sums(inputs, _ranked_relevance(inputs, rows, relevant)), k, variant)
        for rows, relevant in _chunks(inputs, chunk_size)
    ]
    ap = torch.cat(aps)
    if per_query:
        return ap
    return ap.nanmean() if variant == "hashnet" else ap.mean()


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
) -> torch.Tensor:
    """Return mean precision at each k in `ks` (float64, shape (len(ks),)), or (n_q, len(ks)).

    Precision@k = relevant items among the top k / k, ties broken by database index.
    """
    inputs = _prepare(query_codes, retrieval_codes, query_labels, retrieval_labels, metric, permutation_seed)
    ks = [_check_k(k, inputs.n_retrieval, "each k") for k in ks]
    if not ks:
        raise ValueError("ks must name at least one cutoff")
    columns = torch.tensor([k - 1 for k in ks], device=inputs.device)
    scale = torch.tensor(ks, device=inputs.device, dtype=torch.float64)
    out = []
    for rows, relevant in _chunks(inputs, chunk_size):
        hits = _ranked_sums(inputs, _ranked_relevance(inputs, rows, relevant)).hits
        out.append(hits[:, columns].to(torch.float64) / scale)
    precision = torch.cat(out)
    return precision if per_query else precision.mean(0)


class PRCurve(NamedTuple):
    """Precision and recall of the Hamming ball of each radius 0..K (float64, shape (K+1,))."""

    radius: torch.Tensor
    precision: torch.Tensor
    recall: torch.Tensor


def _radius_counts(inputs: _Inputs, chunk_size: int | None):
    """Per query: items and relevant items within radius r = 0..K, and R; int64."""
    within, relevant_within, totals = [], [], []
    for rows, relevant in _chunks(inputs, chunk_size, relevance=False):
        items_at, relevant_at = _distance_histograms(inputs, rows, relevant)
        within.append(items_at.cumsum(1))
        relevant_within.append(relevant_at.cumsum(1))
        totals.append(relevant_at.sum(1))
    return torch.cat(within), torch.cat(relevant_within), torch.cat(totals)


def pr_curve(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    *,
    average: str = "micro",
    empty_precision: float = 0.0,
    chunk_size: int | None = None,
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
    inputs = _prepare(query_codes, retrieval_codes, query_labels, retrieval_labels)
    within, relevant_within, totals = (x.to(torch.float64) for x in _radius_counts(inputs, chunk_size))
    empty = torch.tensor(float(empty_precision), dtype=torch.float64, device=inputs.device)
    if average == "micro":
        pooled = within.sum(0)
        precision = torch.where(pooled > 0, relevant_within.sum(0) / pooled.clamp(min=1), empty)
        recall = relevant_within.sum(0) / totals.sum().clamp(min=1)
    else:
        per_query = torch.where(within > 0, relevant_within / within.clamp(min=1), empty)
        precision = per_query.nanmean(0)
        recall = (relevant_within / totals.clamp(min=1)[:, None]).mean(0)
    radius = torch.arange(inputs.bits + 1, device=inputs.device)
    return PRCurve(radius, precision, recall)


def precision_within_radius(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    radius: int = 2,
    *,
    chunk_size: int | None = None,
    per_query: bool = False,
) -> torch.Tensor:
    """Return mean precision of the Hamming ball of `radius` (0-d float64), or per-query (n_q,).

    Per query: relevant items within the radius / items within it; an empty ball counts as 0
    (the usual "precision within Hamming radius 2" convention, which penalises failed lookups).
    """
    inputs = _prepare(query_codes, retrieval_codes, query_labels, retrieval_labels)
    if isinstance(radius, bool) or int(radius) != radius or not 0 <= int(radius) <= inputs.bits:
        raise ValueError(f"radius must be an integer in 0..{inputs.bits} (the code length), got {radius!r}")
    within, relevant_within, _ = _radius_counts(inputs, chunk_size)
    w, rw = within[:, int(radius)].to(torch.float64), relevant_within[:, int(radius)].to(torch.float64)
    precision = torch.where(w > 0, rw / w.clamp(min=1), 0.0)
    return precision if per_query else precision.mean()
