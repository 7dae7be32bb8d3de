"""Fused CPU kernel for stable-tie mAP@all (numba), used by `mean_average_precision` on CPU.

The torch path ranks by sorting one key per (query, item); most of its time is the sort. A
Hamming distance takes only K + 1 values, so the stable rank of item j at distance d is

    rank_j = (items with distance < d) + (items at distance d with index < j) + 1

and likewise its hit count among the relevant items. One pass over the database in index order
keeps, per distance, running counts of items and of relevant items, and for each relevant item
records (d, both counts so far). After the pass, prefix sums of the per-distance totals give the
counts strictly closer than d, and AP = mean over the recorded items of
(relevant closer + relevant at d so far + 1) / (items closer + items at d so far + 1).
No sort and no (query x item) temporaries: per pair an XOR + popcount, an AND for relevance and a
few integer operations, with several queries interleaved so their counters do not wait on each
other, and blocks of queries spread over threads. Values equal the torch path's up to float
summation order (tests hold both to the numpy reference at 1e-13).

numba is imported lazily and compiled code is cached on disk (first use on a machine compiles for
a few seconds). Without numba, or for shapes the packed records cannot hold, callers use the torch
path, which is also the CUDA path.
"""
from __future__ import annotations

import functools
import threading

import numpy as np
import torch

# A record packs (distance << 48) | (items at d so far << 24) | (relevant at d so far).
COUNT_BITS = 24
MAX_ITEMS = 1 << COUNT_BITS
_MAX_DISTANCE = 1 << 15
# One launch at a time: numba's "workqueue" layer (used where neither OpenMP nor TBB is found)
# must not be entered by two threads at once, and the thread-count handling below is global.
_LAUNCH = threading.Lock()
# Label words beyond this (e.g. thousands of instance ids) make the AND loop the bottleneck.
_MAX_LABEL_WORDS = 8


def available() -> bool:
    """True when numba imports, so the fused kernel can run."""
    return _kernels() is not None


def supports(n_retrieval: int, bits: int, label_words: int) -> bool:
    """True when the packed per-item records can hold this database size and code length."""
    return n_retrieval < MAX_ITEMS and bits < _MAX_DISTANCE and label_words <= _MAX_LABEL_WORDS


def pack_rows(present: np.ndarray) -> np.ndarray:
    """Boolean rows as little-endian uint64 bit masks, shape (n, ceil(d / 64))."""
    n, d = present.shape
    if d % 64:
        # Widened to whole words first: packbits on rows that are not a multiple of 8 bytes
        # wide (24 MIRFlickr labels) is ~3x slower than on the padded copy.
        padded = np.zeros((n, -(-d // 64) * 64), dtype=bool)
        padded[:, :d] = present
        present = padded
    return np.packbits(present, axis=1, bitorder="little").view(np.uint64)


def label_masks(query_labels: torch.Tensor, retrieval_labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Labels as uint64 bit masks: multi-hot rows as they are, integer ids one-hot over the ids
    present (so "same id" is "masks share a bit"). Returns (query masks, retrieval masks)."""
    if query_labels.ndim == 2:
        return pack_rows(_positive(query_labels)), pack_rows(_positive(retrieval_labels))
    ids, inverse = torch.unique(torch.cat([query_labels, retrieval_labels]).cpu(), return_inverse=True)
    one_hot = torch.zeros(len(inverse), len(ids), dtype=torch.bool)
    one_hot[torch.arange(len(inverse)), inverse] = True
    return pack_rows(one_hot[: len(query_labels)].numpy()), pack_rows(one_hot[len(query_labels):].numpy())


def label_words(query_labels: torch.Tensor, retrieval_labels: torch.Tensor) -> int:
    """Number of uint64 words `label_masks` would use."""
    width = query_labels.shape[1] if query_labels.ndim == 2 else len(torch.unique(torch.cat([query_labels, retrieval_labels])))
    return -(-width // 64)


def stable_average_precisions(query: torch.Tensor, retrieval: torch.Tensor, query_labels: torch.Tensor,
                              retrieval_labels: torch.Tensor, threads: int) -> torch.Tensor:
    """Per-query AP@all (float64 tensor (n_q,)) by Hamming ranking, ties in database index order.

    query / retrieval: ±1 codes; labels: multi-hot (2-D) or integer ids (1-D), relevance as in
    metrics.ranking. A query without relevant items gets 0. Uses up to `threads` threads.
    """
    kernels = _kernels()
    qc, rc = pack_rows(_positive(query)), pack_rows(_positive(retrieval))
    ql, rl = label_masks(query_labels, retrieval_labels)
    n_q, n_r = qc.shape[0], rc.shape[0]
    out = np.zeros(n_q, dtype=np.float64)
    inverse_positions = 1.0 / np.arange(1, n_r + 1, dtype=np.float64)
    threads = max(1, min(threads, kernels.numba.config.NUMBA_NUM_THREADS))
    # Two blocks per thread: queries cost alike, and each block allocates its own records.
    n_blocks = max(1, min(n_q, 2 * threads))
    if qc.shape[1] == 1 and ql.shape[1] == 1:
        kernel = kernels.one_word
        arguments = (np.concatenate([qc, ql], axis=1), np.concatenate([rc, rl], axis=1))
    else:
        kernel, arguments = kernels.any_words, (qc, rc, ql, rl)
    with _LAUNCH:
        torch_threads = torch.get_num_threads()
        try:
            if kernels.numba.get_num_threads() != threads:  # numba's count is per calling thread
                kernels.numba.set_num_threads(threads)
            kernel(*arguments, query.shape[1] + 1, n_blocks, inverse_positions, out)
        finally:
            # numba's OpenMP layer shares libgomp with torch, and starting its pool (on first
            # use) resets the OpenMP thread count that torch reports: put the caller's back.
            if torch.get_num_threads() != torch_threads:
                torch.set_num_threads(torch_threads)
    return torch.from_numpy(out)


def _positive(x: torch.Tensor) -> np.ndarray:
    """x > 0 as a numpy bool array (numpy's comparison is several times faster than torch's)."""
    return x.detach().cpu().numpy() > 0


@functools.cache
def _kernels():
    """The compiled kernels module (loaded from numba's on-disk cache after the first use), or
    None without numba."""
    try:
        from . import _fused_kernels
    except ImportError:
        return None
    return _fused_kernels
