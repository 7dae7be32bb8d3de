"""numba kernels behind metrics.fused (imported only when numba is installed; see fused.py)."""
from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from .fused import COUNT_BITS, MAX_ITEMS

u64 = np.uint64
count_mask, record_mask = u64(MAX_ITEMS - 1), u64((1 << 48) - 1)
count_shift, distance_shift = u64(COUNT_BITS), u64(48)
# One more item at this distance (high counter) plus `relevant` more relevant items (low).
item_step = u64(1 << COUNT_BITS)
# Counters start at distance << 48 (reset), so an item's record (fused.py) is a plain copy of
# its counter: ~6 % faster than or-ing the distance in per pair.


@intrinsic
def popcount(typingctx, x):
    """LLVM ctpop: one POPCNT instruction on x86-64."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@numba.njit(inline="always")
def reset(counts):
    """Start a query: counter d holds d in its top bits (see visit) and zero counts."""
    for d in range(counts.shape[0]):
        counts[d] = u64(d) << distance_shift


@numba.njit(inline="always")
def visit(distance, relevant, counts, record, n_relevant):
    """Count one item at `distance` for one query; return the new number of relevant items."""
    seen = counts[distance]  # already (distance << 48) | counts so far, as reset left it
    # Written for every item, kept only when relevant (n_relevant advances): a branch here
    # would be mispredicted about half the time.
    record[n_relevant] = seen
    counts[distance] = seen + item_step + relevant
    return n_relevant + relevant


@numba.njit(inline="always")
def contribution(packed, closer, inverse_positions):
    """hits / rank of one relevant item from its record and the counts strictly closer."""
    counted = closer[packed >> distance_shift] + (packed & record_mask)
    hits = np.int64(counted & count_mask) + 1
    return float(hits) * inverse_positions[np.int64(counted >> count_shift)]  # position is 0-based


@numba.njit(inline="always")
def finish(counts, record, n_relevant, inverse_positions, out, query):
    """Write the query's AP from its per-distance totals and its relevant items' records."""
    if n_relevant == 0:
        out[query] = 0.0
        return
    closer = u64(0)
    for d in range(counts.shape[0]):  # exclusive prefix sums: counts strictly closer than d
        here = counts[d] & record_mask
        counts[d] = closer
        closer += here
    # Four partial sums: one running sum would chain every relevant item on the float add's
    # latency (a third of the kernel's time at MIRFlickr size). int64, not uint64, converts to
    # float in one instruction.
    s0 = s1 = s2 = s3 = 0.0
    n = np.int64(n_relevant)
    for t in range(0, n - n % 4, 4):
        s0 += contribution(record[t], counts, inverse_positions)
        s1 += contribution(record[t + 1], counts, inverse_positions)
        s2 += contribution(record[t + 2], counts, inverse_positions)
        s3 += contribution(record[t + 3], counts, inverse_positions)
    for t in range(n - n % 4, n):
        s0 += contribution(record[t], counts, inverse_positions)
    out[query] = ((s0 + s1) + (s2 + s3)) / float(n)


@numba.njit(inline="always")
def nonzero(x):
    """1 if any bit of x is set, else 0 (as uint64): "the label masks share a label"."""
    return u64(1) if x != u64(0) else u64(0)


@numba.njit(parallel=True, cache=True, nogil=True)
def one_word(queries, items, n_distances, n_blocks, inverse_positions, out):
    """Codes of <= 64 bits and <= 64 labels, rows (code word, label word): four queries per pass
    over the database. Code and labels side by side are one stream to load (~6 % faster than two)."""
    n_q, n_r = queries.shape[0], items.shape[0]
    n_groups = (n_q + 3) // 4
    for block in numba.prange(n_blocks):
        record = np.empty((4, n_r), np.uint64)
        counts = np.empty((4, n_distances), np.uint64)
        for group in range(block * n_groups // n_blocks, (block + 1) * n_groups // n_blocks):
            first = 4 * group
            # Past the last query the group repeats it; those results are not written.
            i0, i1, i2, i3 = first, min(first + 1, n_q - 1), min(first + 2, n_q - 1), min(first + 3, n_q - 1)
            c0, c1, c2, c3 = queries[i0, 0], queries[i1, 0], queries[i2, 0], queries[i3, 0]
            l0, l1, l2, l3 = queries[i0, 1], queries[i1, 1], queries[i2, 1], queries[i3, 1]
            for q in range(4):
                reset(counts[q])
            n0 = n1 = n2 = n3 = u64(0)
            for j in range(n_r):
                code, labels = items[j, 0], items[j, 1]
                n0 = visit(popcount(c0 ^ code), nonzero(l0 & labels), counts[0], record[0], n0)
                n1 = visit(popcount(c1 ^ code), nonzero(l1 & labels), counts[1], record[1], n1)
                n2 = visit(popcount(c2 ^ code), nonzero(l2 & labels), counts[2], record[2], n2)
                n3 = visit(popcount(c3 ^ code), nonzero(l3 & labels), counts[3], record[3], n3)
            finish(counts[0], record[0], n0, inverse_positions, out, i0)
            if first + 1 < n_q:
                finish(counts[1], record[1], n1, inverse_positions, out, i1)
            if first + 2 < n_q:
                finish(counts[2], record[2], n2, inverse_positions, out, i2)
            if first + 3 < n_q:
                finish(counts[3], record[3], n3, inverse_positions, out, i3)


@numba.njit(parallel=True, cache=True, nogil=True)
def any_words(qc, rc, ql, rl, n_distances, n_blocks, inverse_positions, out):
    """Any number of code and label words: one query per pass (slower per pair)."""
    n_q, n_r = qc.shape[0], rc.shape[0]
    for block in numba.prange(n_blocks):
        record = np.empty(n_r, np.uint64)
        counts = np.empty(n_distances, np.uint64)
        for i in range(block * n_q // n_blocks, (block + 1) * n_q // n_blocks):
            reset(counts)
            n_relevant = u64(0)
            for j in range(n_r):
                distance = u64(0)
                for w in range(qc.shape[1]):
                    distance += popcount(qc[i, w] ^ rc[j, w])
                shared = u64(0)
                for w in range(ql.shape[1]):
                    shared |= ql[i, w] & rl[j, w]
                n_relevant = visit(distance, nonzero(shared), counts, record, n_relevant)
            finish(counts, record, n_relevant, inverse_positions, out, i)
