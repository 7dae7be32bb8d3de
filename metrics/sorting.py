"""The torch backend of the engine: the counting kernel's Partials from torch ops, any device.

This is the CUDA path, the CPU reference the kernel is tested against (backend="torch"), and
the path of cosine ranking (real-valued scores have no distance histogram to count in).

Per chunk of queries: Hamming distances by one addmm, then one sort of unique integer keys
key = 2 * (n * distance + index) + relevant, so the sort's own tie handling never matters
(numpy's in-place sort on CPU, torch's radix sort on CUDA give the same order) and the
relevance bit rides along. The sorted keys give every relevant item's stable position and
hits, and the histograms (searchsorted on the distance boundaries). From there the same
integers as the kernel: exact AP limbs, per-cutoff hits and precision sums. Histograms alone
(tie-aware mAP, PR, radius) need no sort: one bincount.

Memory is O(chunk x n_retrieval); per-chunk temporaries live in buffers reused for the call.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .inputs import Problem
from .partials import Partials, inverse_positions, limb_scales

_FLOAT32_EXACT = 1 << 24  # integers below this are exact in float32
# Query x item entries per chunk: on CPU a few MB per temporary, so passes stay in cache; on a GPU
# enough work per kernel launch (H100, MIRFlickr size: 5.5 ms per stable mAP with 1,000-query
# chunks vs 14 ms with 58; tie-aware 3 ms vs 23 ms).
_TARGET_CHUNK_ELEMENTS = {"cpu": 1 << 20}
_TARGET_CHUNK_ELEMENTS_ACCELERATOR = 1 << 24
# Each chunk reads the whole retrieval matrix once; with fewer rows than this a large database
# (NUS-WIDE: 99 MB of codes) makes the matmul memory-bound, so chunks never go below it.
_MIN_CHUNK_ROWS = 32
_BITS_PER_WORD = 31  # int32 label words; bit 31 left alone so packing never overflows
_WIDE_LABELS = 8 * _BITS_PER_WORD  # beyond this many label columns, relevance by a matmul
_SLAB_ELEMENTS = 1 << 18  # query x item entries per scoring slab on CPU


def chunk_size(problem: Problem, chunk_size: int | None) -> int:
    """Queries per chunk: the given number (validated), or ~1M query-item pairs on CPU, ~16M on
    an accelerator, at least 32 queries."""
    if chunk_size is None:
        target = _TARGET_CHUNK_ELEMENTS.get(problem.device.type, _TARGET_CHUNK_ELEMENTS_ACCELERATOR)
        rows = max(_MIN_CHUNK_ROWS, target // problem.n_retrieval)
        return max(1, min(problem.n_query, rows))
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    return int(chunk_size)


class Chunks:
    """Per-call state of the torch backend: dense inputs, label words, reused buffers."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.query = problem.query
        self.retrieval, self.retrieval_labels = problem.dense()
        self.n = problem.n_retrieval
        self.n_rows = problem.n_query
        self._buffers: dict[str, torch.Tensor] = {}
        self._label_words: tuple[torch.Tensor, torch.Tensor] | None = None  # bit masks, or 0/1 floats if wide

    def iterate(self, chunk: int | None):
        """Yield (query rows, their int32 0/1 relevance to every item), chunk by chunk."""
        step = chunk_size(self.problem, chunk)
        for start in range(0, self.problem.n_query, step):
            rows = slice(start, min(start + step, self.problem.n_query))
            yield rows, self.relevance(rows)

    def buffer(self, name: str, rows: int, dtype: torch.dtype) -> torch.Tensor:
        """A (rows, n_r) scratch tensor reused across chunks of one call.

        Fresh multi-MB temporaries per chunk cost page faults and, with glibc's malloc, let the
        resident size creep up (NUS-WIDE size: 2.1 GB peak instead of ~0.7 GB); one set of
        buffers per call avoids both. Contents are only valid until the next chunk.
        """
        buf = self._buffers.get(name)
        if buf is None or buf.shape[0] < rows or buf.dtype != dtype:
            buf = torch.empty(rows, self.n, dtype=dtype, device=self.problem.device)
            self._buffers[name] = buf
        return buf[:rows]

    def relevance(self, rows: slice) -> torch.Tensor:
        """(chunk, n_r) int32 in {0, 1}: shares at least one label (2-D) or has the same id (1-D)."""
        n_rows = rows.stop - rows.start
        relevant = self.buffer("relevant", n_rows, torch.int32)
        query_labels = self.problem.query_labels
        if query_labels.ndim == 1:
            return relevant.copy_(query_labels[rows, None] == self.retrieval_labels[None, :])
        if query_labels.shape[1] > _WIDE_LABELS:
            # Wide (instance) labels: one matmul of 0/1 rows (counts below 2^24 are exact in
            # float32) instead of an AND per label word.
            if self._label_words is None:
                self._label_words = tuple((x > 0).to(torch.float32) for x in (query_labels, self.retrieval_labels))
            query_present, retrieval_present = self._label_words
            return relevant.copy_(query_present[rows] @ retrieval_present.t() > 0)
        if self._label_words is None:
            self._label_words = label_words(query_labels), label_words(self.retrieval_labels)
        query_words, retrieval_words = self._label_words
        query_words = query_words[rows]
        torch.bitwise_and(query_words[:, None, 0], retrieval_words[None, :, 0], out=relevant)
        for w in range(1, query_words.shape[1]):
            relevant |= query_words[:, None, w] & retrieval_words[None, :, w]
        return relevant.clamp_(max=1)

    def sorted_keys(self, rows: slice, relevant: torch.Tensor) -> torch.Tensor:
        """(chunk, n_r) sorted keys 2n * distance + 2 * index + relevant (int32, or int64 if needed)."""
        n, k = self.n, self.problem.bits
        n_rows = rows.stop - rows.start
        query = self.problem.query[rows]
        scores = self.buffer("scores", n_rows, torch.float32)
        device = self.problem.device
        if (k + 2) * n < _FLOAT32_EXACT:
            # (K - q.r) * n + 2 * index: integers below 2^24, so one addmm computes it exactly.
            base = (k * n + 2 * torch.arange(n, device=device, dtype=torch.float32))[None, :]
            torch.addmm(base, query, self.retrieval.t(), alpha=-float(n), out=scores)
            keys = self.buffer("keys", n_rows, torch.int32).copy_(scores)
        else:
            dtype = torch.int32 if (k + 2) * n < 2**31 else torch.int64
            torch.mm(query, self.retrieval.t(), out=scores)
            keys = self.buffer("keys", n_rows, dtype).copy_(scores.neg_().add_(k))  # K - q.r = 2 * distance
            keys.mul_(n).add_(2 * torch.arange(n, device=device, dtype=dtype))
        keys += relevant
        return sort_rows_(keys)

    def histograms(self, rows: slice, relevant: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per query and distance d = 0..K: (items at d, relevant items at d), int64, no sort.

        One bincount over bin = row * 2(K+1) + d + (K+1) * relevant. Folding the labels into the
        addmm to skip the relevance pass was tried and is slower (a longer matmul).
        """
        k = self.problem.bits
        n_rows = rows.stop - rows.start
        device = self.problem.device
        bins = 2 * (k + 1)
        if n_rows * bins < _FLOAT32_EXACT:
            # bin = row * 2(K+1) + d + (K+1) * relevant with d = (K - q.r) / 2, exact in float32.
            offset = (torch.arange(n_rows, device=device, dtype=torch.float32) * bins + 0.5 * k)[:, None]
            scores = self.buffer("scores", n_rows, torch.float32)
            torch.addmm(offset, self.problem.query[rows], self.retrieval.t(), alpha=-0.5, out=scores)
            index = self.buffer("keys", n_rows, torch.int32).copy_(scores)
        else:  # pragma: no cover - only with chunks of > 100k queries
            index = (0.5 * (k - self.problem.query[rows] @ self.retrieval.t())).to(torch.int64)
            index += torch.arange(n_rows, device=device)[:, None] * bins
        index.add_(relevant, alpha=k + 1)
        counts = torch.bincount(index.flatten(), minlength=n_rows * bins).view(n_rows, 2, k + 1)
        relevant_counts = counts[:, 1]
        return counts[:, 0] + relevant_counts, relevant_counts


def label_words(labels: torch.Tensor) -> torch.Tensor:
    """Pack multi-hot rows into int32 bit masks (n, ceil(L / 31)): "share a label" becomes a few
    bitwise ANDs per pair instead of an L-long dot product."""
    present = (labels > 0).to(torch.int32)
    pad = (-present.shape[1]) % _BITS_PER_WORD
    present = torch.nn.functional.pad(present, (0, pad)).view(present.shape[0], -1, _BITS_PER_WORD)
    weights = 2 ** torch.arange(_BITS_PER_WORD, device=labels.device, dtype=torch.int32)
    return (present * weights).sum(2, dtype=torch.int32)


_sort_pool: ThreadPoolExecutor | None = None


def sort_rows_(keys: torch.Tensor) -> torch.Tensor:
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


def partials(problem: Problem, cutoffs: tuple[int, ...], *, stable: bool, chunk_size: int | None = None,
             start: tuple[np.ndarray, np.ndarray] | None = None, n_total: int | None = None) -> Partials:
    """Partials of `problem` (see engine.py). start: (items, relevant) ranked before this
    database at each distance (a shard of a database of n_total items); None: it is whole."""
    n_total = problem.n_retrieval if n_total is None else n_total
    chunks = Chunks(problem)
    hamming = problem.metric == "hamming"
    parts: dict[str, list[torch.Tensor]] = {}

    def add(name: str, value: torch.Tensor) -> None:
        parts.setdefault(name, []).append(value)

    if stable:
        scale = limb_scales(n_total)
        inverse = torch.from_numpy(inverse_positions(n_total) * scale[0]).to(problem.device)
        start_t = None if start is None else [torch.from_numpy(np.asarray(s, np.int64)).to(problem.device) for s in start]
    for rows, relevant in chunks.iterate(chunk_size):
        if not stable:
            for name, value in zip(("items_at", "relevant_at"), chunks.histograms(rows, relevant)):
                add(name, value)
            continue
        if hamming:
            keys = chunks.sorted_keys(rows, relevant)
            ranked_relevant = keys & 1
        else:
            similarity = problem.query[rows] @ chunks.retrieval.t()
            order = torch.sort(-similarity, dim=1, stable=True).indices
            keys, ranked_relevant = None, relevant.gather(1, order)
        # The rest row slab by row slab on CPU, so its temporaries stay a few MB each.
        slab = chunks.n_rows if problem.device.type != "cpu" else max(1, _SLAB_ELEMENTS // chunks.n)
        for first in range(0, rows.stop - rows.start, slab):
            part = slice(first, first + slab)
            query_rows = slice(rows.start + part.start, min(rows.start + part.stop, rows.stop))
            for name, value in score_slab(chunks, ranked_relevant[part], None if keys is None else keys[part],
                                          query_rows, cutoffs, inverse, scale, start_t, n_total).items():
                add(name, value)
    out = {name: torch.cat(values).cpu().numpy() for name, values in parts.items()}
    return Partials(n_total, cutoffs, **out)


def score_slab(chunks: Chunks, ranked_relevant: torch.Tensor, keys: torch.Tensor | None, rows: slice,
               cutoffs: tuple[int, ...], inverse: torch.Tensor, scale: tuple[float, float],
               start: list[torch.Tensor] | None, n_total: int) -> dict[str, torch.Tensor]:
    """Partials of some query rows from their ranked relevance (and sorted keys: Hamming)."""
    out = {}
    hits = torch.cumsum(ranked_relevant, 1, dtype=torch.int32)  # relevant items at positions 1..i
    if keys is not None:
        items_at, relevant_at = histograms_from_sorted_keys(keys, chunks.n, chunks.problem.bits, hits)
        out["items_at"], out["relevant_at"] = items_at, relevant_at  # R for every metric, cheap
    else:
        out["total_relevant"] = hits[:, -1].to(torch.int64)
    position = torch.arange(chunks.n, device=hits.device, dtype=torch.int32).expand_as(hits)
    rank = hits - 1
    if start is not None:
        # Rank inside this part -> global: everything ranked before it at the item's distance.
        distance = (keys // (2 * chunks.n)).long()
        within_items = position - (torch.cumsum(items_at, 1) - items_at).gather(1, distance)
        within_relevant = rank - (torch.cumsum(relevant_at, 1) - relevant_at).gather(1, distance)
        position = start[0][rows].gather(1, distance) + within_items
        rank = start[1][rows].gather(1, distance) + within_relevant
    relevant_mask = ranked_relevant.bool()
    # 1 / (position + 1), times hi_scale (a power of two: exact); by index order when whole.
    scaled_inverse = inverse[position] if start is not None else inverse[: chunks.n]
    hi, lo = split(rank + 1, scaled_inverse, scale[1], relevant_mask)
    out["ap_limbs"] = torch.stack([hi.sum(1), lo.sum(1)], 1)
    if cutoffs:
        # Positions and ranks increase along the sorted order (in a shard too: everything at a
        # closer distance, or in an earlier shard, ranks before), so each cutoff's sums are
        # prefix sums: their lengths by binary search, their values by one cumsum.
        k = torch.tensor(cutoffs, device=hits.device).expand(hits.shape[0], len(cutoffs)).contiguous()
        top = k.clamp(max=chunks.n) if start is None else torch.searchsorted(position.contiguous(), k)
        first = torch.searchsorted(torch.cummax(torch.where(relevant_mask, rank, -1), 1).values.contiguous(), k)
        running_hi, running_lo = torch.cumsum(hi, 1), torch.cumsum(lo, 1)
        # In partials.py's field order: HITS, TOPK_HI, TOPK_LO, FIRST_HI, FIRST_LO.
        out["cut"] = torch.stack([prefix(hits, top).to(torch.int64), prefix(running_hi, top), prefix(running_lo, top),
                                  prefix(running_hi, first), prefix(running_lo, first)], 2)
    return out


def prefix(running: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """running[:, length - 1] per row and cutoff (running sums over a prefix), 0 for length 0."""
    return torch.where(length > 0, running.gather(1, (length - 1).clamp(min=0)), 0)


def split(hits: torch.Tensor, scaled_inverse: torch.Tensor, lo_scale: float,
          mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's exact two-limb split of hits * (1 / (position + 1)), zero where mask is
    False; scaled_inverse = hi_scale / (position + 1) per entry."""
    x = hits.to(torch.float64) * scaled_inverse
    hi = x.to(torch.int64)  # truncation: x >= 0
    lo = ((x - hi.to(torch.float64)) * lo_scale).to(torch.int64)
    return hi * mask, lo * mask


def histograms_from_sorted_keys(sorted_keys: torch.Tensor, n: int, bits: int, hits: torch.Tensor):
    """Per query (items at d, relevant items at d) for d = 0..K, read off the sorted keys and
    the running count of relevant items in their order."""
    bounds = torch.arange(bits + 2, device=sorted_keys.device, dtype=sorted_keys.dtype) * (2 * n)
    below = torch.searchsorted(sorted_keys, bounds.expand(sorted_keys.shape[0], -1).contiguous())
    relevant_below = torch.where(below > 0, hits.gather(1, (below - 1).clamp(min=0)), 0).to(torch.int64)
    return below.diff(dim=1), relevant_below.diff(dim=1)
