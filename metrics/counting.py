"""The counting kernel (numba, CPU): partial results of metrics/engine.py without a sort.

A Hamming distance takes K + 1 values, so the stable rank of item j at distance d is

    rank_j = (items with distance < d) + (items at distance d with index < j) + 1

and likewise its hit count among the relevant items. One pass over the database in index
order keeps per-distance running counts of items and of relevant items; each relevant item
records them; after the pass, the per-distance totals give the counts strictly closer than d,
hence every item's position and hits (metrics/counting_kernels.py). Per pair: an XOR + popcount,
an AND (or compare) for relevance and a few integer operations, four queries interleaved so
their counters do not wait on each other, blocks of queries spread over threads.

A database that fits one block (SINGLE_PASS_ITEMS) is done in one pass per query. A larger
one (or one read from disk) takes two: the distance histograms first, then, from them, the
offsets at which each database block starts at each distance, and the scores block by block
in bounded memory. Shards of a database run the same two phases (metrics/sharded.py).

numba is imported lazily; compiled code is cached on disk (the first use on a machine
compiles for a few seconds per relevance layout). Without numba, callers use the torch
backend (metrics/sorting.py), which is also the CUDA path.
"""
from __future__ import annotations

import functools
import threading

import numpy as np
import torch

from .inputs import Packed
from .partials import CUTOFF_FIELDS, Partials, inverse_positions, limb_scales

# Up to this many items the whole database is one block: one pass per query computes
# everything (records of every item held; 8 bytes per item and query in flight). Beyond it the
# two phases are faster (1 thread, CPU time per pair, synthetic MIRFlickr-like labels: one
# pass 2.3 / 2.7 / 4.8 ns at 64K / 256K / 1M items, two phases 3.7 / 3.4 / 3.3 ns).
SINGLE_PASS_ITEMS = 1 << 19
# Database block of the two-phase path: records of 4 queries x 8K items and the items stay in
# L2 (1 thread, CPU time per pair at 10M items, scores phase: 4K 2.6, 8K 2.25, 16K 2.5, 32K 2.5 ns).
BLOCK_ITEMS = 1 << 13
# Below this many query-item pairs one thread does the work (~1 ms at this size).
SMALL_PAIRS = 1 << 18
TASKS_PER_THREAD = 2  # queries cost alike; 8 or 32 tasks, dynamically scheduled, were no faster
# One launch at a time: numba's "workqueue" layer (used where neither OpenMP nor TBB is found)
# must not be entered by two threads at once, and the thread-count handling below is global.
_LAUNCH = threading.Lock()


def available() -> bool:
    """True when numba imports, so the counting kernel can run."""
    return _kernels() is not None


def supports(bits: int) -> bool:
    """True when the packed per-item records can hold distances of this code length."""
    return bits <= _kernels().MAX_DISTANCE


def partials(packed: Packed, n_retrieval: int, bits: int, cutoffs: tuple[int, ...], *, stable: bool = True,
             block_size: int | None = None) -> Partials:
    """Partials of a whole database: one pass when it fits one block, else the two phases.
    stable=False with no cutoffs: histograms only; with cutoffs: no AP sum (ap_limbs None)."""
    block = _block(block_size, n_retrieval)
    if not stable and not cutoffs:
        items_at, relevant_at = histograms(packed, bits, block_size)
        return Partials(n_retrieval, cutoffs, items_at, relevant_at)
    if block >= n_retrieval:
        out = _launch(packed, bits, _kernels().SINGLE, n_retrieval, cutoffs, block=n_retrieval, need_ap=stable)
        return Partials(n_retrieval, cutoffs, out["items_at"], out["relevant_at"], out["ap_limbs"] if stable else None,
                        out["cut"])
    items_at, relevant_at = histograms(packed, bits, block)
    ap_limbs, cut = scores(packed, bits, n_retrieval, cutoffs, *start_offsets(items_at, relevant_at), block_size=block,
                           need_ap=stable)
    return Partials(n_retrieval, cutoffs, items_at, relevant_at, ap_limbs, cut)


def histograms(packed: Packed, bits: int, block_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per query and distance 0..bits: items and relevant items (int64 (n_q, bits + 1) each)."""
    n = packed.items.shape[0]
    # No records are kept: blocks only let a batch of query groups share the items in cache.
    block = min(_block(block_size, n), BLOCK_ITEMS)
    out = _launch(packed, bits, _kernels().HISTOGRAMS, n, (), block=block)
    return out["items_at"], out["relevant_at"]


def scores(packed: Packed, bits: int, n_retrieval: int, cutoffs: tuple[int, ...], items_before: np.ndarray,
           relevant_before: np.ndarray, block_size: int | None = None,
           need_ap: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """Exact AP limbs and cutoff statistics of the items in `packed`, a part of a database of
    n_retrieval items before whose items, at each distance, items_before[q, d] items and
    relevant_before[q, d] relevant items are ranked (int64 (n_q, bits + 1))."""
    distances = np.arange(bits + 1, dtype=np.uint64) << np.uint64(48)
    start = distances | (items_before.astype(np.uint64) << np.uint64(24)) | relevant_before.astype(np.uint64)
    n = packed.items.shape[0]
    out = _launch(packed, bits, _kernels().SCORES, n_retrieval, cutoffs, block=_block(block_size, n), start=start,
                  need_ap=need_ap)
    return out["ap_limbs"] if need_ap else None, out["cut"]


def start_offsets(items_at: np.ndarray, relevant_at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items and relevant items ranked before distance d (exclusive prefix sums over d)."""
    return np.cumsum(items_at, 1) - items_at, np.cumsum(relevant_at, 1) - relevant_at


def _block(block_size: int | None, n: int) -> int:
    if block_size is None:
        return n if n <= SINGLE_PASS_ITEMS else BLOCK_ITEMS
    if int(block_size) < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size}")
    return min(int(block_size), n, _kernels().MAX_BLOCK)


def _launch(packed: Packed, bits: int, phase: int, n_retrieval: int, cutoffs: tuple[int, ...], *, block: int,
            start: np.ndarray | None = None, need_ap: bool = True) -> dict[str, np.ndarray]:
    kernels = _kernels()
    n_q, k1 = packed.queries.shape[0], bits + 1
    threads = max(1, min(torch.get_num_threads(), kernels.numba.config.NUMBA_NUM_THREADS))
    if n_q * packed.items.shape[0] < SMALL_PAIRS:
        threads = 1  # waking a second thread costs more than it saves (a time slice when loaded)
    width = 4 if packed.four else 1
    n_tasks = max(1, min(-(-n_q // width), TASKS_PER_THREAD * threads))
    with_histograms = phase != kernels.SCORES
    out = {"items_at": np.zeros((n_q if with_histograms else 1, k1), np.int64),
           "relevant_at": np.zeros((n_q if with_histograms else 1, k1), np.int64),
           "ap_limbs": np.zeros((n_q, 2), np.int64),
           "cut": np.zeros((n_q, len(cutoffs), CUTOFF_FIELDS), np.int64)}
    if phase == kernels.HISTOGRAMS:
        hi_scale = lo_scale = 1.0
        inverse = inverse_positions(1)
    else:
        hi_scale, lo_scale = limb_scales(n_retrieval)
        inverse = inverse_positions(n_retrieval)
    start = np.zeros((1, k1), np.uint64) if start is None else np.ascontiguousarray(start)
    kmax = max(cutoffs, default=0)
    with _LAUNCH:
        torch_threads = torch.get_num_threads()
        try:
            if kernels.numba.get_num_threads() != threads:  # numba's count is per calling thread
                kernels.numba.set_num_threads(threads)
            _call(kernels, packed.queries, packed.items, packed.four, packed.mode, packed.code_words, k1, phase, block,
                  start, np.asarray(cutoffs, np.int64), kmax, need_ap, inverse, hi_scale, lo_scale, n_tasks,
                  out["items_at"], out["relevant_at"], out["ap_limbs"], out["cut"])
        finally:
            # numba's OpenMP layer shares libgomp with torch, and starting its pool (on first
            # use) resets the OpenMP thread count that torch reports: put the caller's back.
            if torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)
    return out


def _call(kernels, *args) -> None:
    """kernels.run(*args), its layout and relevance mode compiled in as constants.

    `run` asks numba to treat them as literals; a plain call would then go through numba's
    typing fallback every time (~1 s), so the compiled version is looked up by its signature.
    """
    numba = kernels.numba
    signature = tuple(numba.types.literal(a) if i in (2, 3) else numba.typeof(a) for i, a in enumerate(args))
    try:
        entry = kernels.run.get_overload(signature)
    except KeyError:  # not compiled (or loaded from numba's disk cache) in this process yet
        kernels.run(*args)
        return
    entry(*args)


@functools.cache
def _kernels():
    """The compiled kernels module (loaded from numba's on-disk cache after the first use), or
    None without numba."""
    try:
        from . import counting_kernels
    except ImportError:
        return None
    return counting_kernels
