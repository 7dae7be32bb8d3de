"""numba kernels of the counting engine (imported lazily by metrics/counting.py; needs numba).

One pass over a database block per query (four queries at a time when codes and labels are
one 64-bit word each) keeps, per Hamming distance d, a packed counter
(d << 48) | (items at d so far << 24) | (relevant items at d so far). Each relevant item
leaves a copy of its counter (its "record"), which gives the item's 0-based stable position and
its rank among the relevant items:

    position = items ranked before distance d + items at d earlier in database order
    hits     = relevant items before distance d + relevant at d earlier + 1

In SINGLE the first terms come after the pass (`offsets`, packed (items << 32) | relevant, from
the per-distance totals); in SCORES the counters start from them (everything ranked before this
database at each distance), so each record already holds the global counts.

AP contributions hits / (position + 1) are added as exact integers (two int64 limbs, see
`split`), so a sum does not depend on the order in which items, blocks, threads or shards are
added: every backend and every split of the database gives the same integers, hence the same
float64 metrics to the last bit.

Phases (one kernel, `phase` chosen per call):
- HISTOGRAMS: per query and distance, items and relevant items (no records kept).
- SCORES: given per-query start counters (everything ranked before this database at each
  distance: closer distances, and earlier shards at the same distance), exact AP limbs and
  per-cutoff statistics of the items of this database, block by block, batches of query
  groups taking turns on each block while it is in cache.
- SINGLE: the database is one block: histograms, offsets from them, AP limbs and cutoff
  statistics in one pass (the common in-memory case).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

# Relevance modes (inputs.py): label bit masks share a bit; ids are equal; item label lists hit
# the query's label bitset (wide, sparse multi-hot labels). Cutoff statistics (partials.py):
# hits in the top k, the exact limbs of the precision sum over those hits, and over the first
# k relevant items wherever they rank.
from .inputs import IDS, SPARSE
from .partials import FIRST_HI, FIRST_LO, HITS, TOPK_HI, TOPK_LO

HISTOGRAMS, SCORES, SINGLE = 0, 1, 2
COUNT_BITS = 24
MAX_BLOCK = (1 << COUNT_BITS) - 1  # items per block: the 24-bit counters of a record
MAX_DISTANCE = (1 << 15) - 1
# Query groups that take turns on each database block of the two-phase path, so the block is
# read from memory once per batch rather than once per group.
BATCH_GROUPS = 8

u64 = np.uint64
count_mask, record_mask, low32 = u64((1 << COUNT_BITS) - 1), u64((1 << 48) - 1), u64((1 << 32) - 1)
count_shift, distance_shift, half_shift = u64(COUNT_BITS), u64(48), u64(32)
# One more item at this distance (high counter) plus `relevant` more relevant items (low).
item_step = u64(1 << COUNT_BITS)


@intrinsic
def popcount(typingctx, x):
    """LLVM ctpop: one POPCNT instruction on x86-64."""
    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return types.uint64(types.uint64), codegen


@numba.njit(inline="always")
def reset(counts):
    """Start a block: counter d holds d in its top bits and zero counts, so that an item's
    record is a plain copy of its counter (~6 % faster than or-ing the distance in per pair)."""
    for d in range(counts.shape[0]):
        counts[d] = u64(d) << distance_shift


@numba.njit(inline="always")
def visit(distance, relevant, counts, record, n_relevant):
    """Count one item at `distance`; return the new number of relevant items. The record is
    written for every item and kept only when relevant (a branch would be mispredicted)."""
    seen = counts[distance]
    record[n_relevant] = seen
    counts[distance] = seen + item_step + relevant
    return n_relevant + relevant


@numba.njit(inline="always")
def step(distance, relevant, counts, record, n_relevant, keep):
    """visit() when records are kept (keep is a compile-time constant), else count only."""
    if keep:
        return visit(distance, relevant, counts, record, n_relevant)
    counts[distance] += item_step + relevant
    return n_relevant


@numba.njit(inline="always")
def one_if(condition):
    return u64(1) if condition else u64(0)


@numba.njit(inline="always")
def relevant_word(query_word, item_word, mode):
    """Relevance from one label word: masks share a bit (MASKS) or ids are equal (IDS)."""
    if mode == IDS:
        return one_if(query_word == item_word)
    return one_if((query_word & item_word) != u64(0))


@numba.njit(inline="always")
def relevant_row(queries, i, items, j, code_words, mode):
    """Relevance of item j to query i in the general layout (label part after the code words)."""
    if mode == SPARSE:
        # Item label part: label indices (padded with an index whose query bit is never set);
        # query label part: a bitset over all labels.
        hit = u64(0)
        for t in range(code_words, items.shape[1]):
            label = items[j, t]
            hit |= queries[i, code_words + np.int64(label >> u64(6))] >> (label & u64(63))
        return hit & u64(1)
    if mode == IDS:
        return one_if(queries[i, code_words] == items[j, code_words])
    shared = u64(0)
    for t in range(code_words, items.shape[1]):
        shared |= queries[i, t] & items[j, t]
    return one_if(shared != u64(0))


@numba.njit(cache=True, nogil=True)
def pass_four(queries, first, items, start, stop, counts, records, n_relevant, mode, keep, fresh):
    """One pass over items[start:stop] for queries first..first+3 (rows: code word, label
    word); past the last query the group repeats it (its results are not written). Records of
    the relevant items are kept when `keep`, else only the counters run (histograms); the
    counters start from zero when `fresh`, else continue from where they are."""
    numba.literally(keep)
    last = queries.shape[0] - 1
    i0, i1, i2, i3 = first, min(first + 1, last), min(first + 2, last), min(first + 3, last)
    c0, c1, c2, c3 = queries[i0, 0], queries[i1, 0], queries[i2, 0], queries[i3, 0]
    l0, l1, l2, l3 = queries[i0, 1], queries[i1, 1], queries[i2, 1], queries[i3, 1]
    if fresh:
        for q in range(4):
            reset(counts[q])
    n0 = n1 = n2 = n3 = u64(0)
    for j in range(start, stop):
        code, labels = items[j, 0], items[j, 1]
        n0 = step(popcount(c0 ^ code), relevant_word(l0, labels, mode), counts[0], records[0], n0, keep)
        n1 = step(popcount(c1 ^ code), relevant_word(l1, labels, mode), counts[1], records[1], n1, keep)
        n2 = step(popcount(c2 ^ code), relevant_word(l2, labels, mode), counts[2], records[2], n2, keep)
        n3 = step(popcount(c3 ^ code), relevant_word(l3, labels, mode), counts[3], records[3], n3, keep)
    n_relevant[0], n_relevant[1], n_relevant[2], n_relevant[3] = n0, n1, n2, n3


@numba.njit(cache=True, nogil=True)
def pass_one(queries, i, items, start, stop, counts, records, n_relevant, code_words, mode, keep, fresh):
    """One pass over items[start:stop] for query i, any number of code and label words."""
    numba.literally(keep)
    if fresh:
        reset(counts[0])
    n = u64(0)
    for j in range(start, stop):
        distance = u64(0)
        for w in range(code_words):
            distance += popcount(queries[i, w] ^ items[j, w])
        n = step(distance, relevant_row(queries, i, items, j, code_words, mode), counts[0], records[0], n, keep)
    n_relevant[0] = n


@numba.njit(inline="always")
def split(hits, position, inverse_positions, hi_scale, lo_scale):
    """hits / (position + 1) (as hits * (1 / (position + 1)), float64) as two exact integers:
    value = (hi + lo / lo_scale) / hi_scale. Scaling by powers of two is exact, so is taking
    the fractional part; see counting.limb_scales for why both limbs are integers."""
    x = float(hits) * inverse_positions[position] * hi_scale
    hi = np.int64(x)
    return hi, np.int64((x - float(hi)) * lo_scale)


@numba.njit(inline="always")
def decode(record, offsets):
    """(0-based position, hits - 1) of a record's item, from the offsets of its block; with
    offsets None the counters started from the global counts, so the record holds them."""
    if offsets is None:
        return np.int64((record >> count_shift) & count_mask), np.int64(record & count_mask)
    widened = ((record & (count_mask << count_shift)) << u64(8)) | (record & count_mask)
    counted = offsets[record >> distance_shift] + widened
    return np.int64(counted >> half_shift), np.int64(counted & low32)


@numba.njit(cache=True, nogil=True)
def block_histogram(counts, items_at, relevant_at):
    """Add a block's per-distance counts to a query's histogram."""
    for d in range(counts.shape[0]):
        packed = counts[d] & record_mask
        items_at[d] += np.int64(packed >> count_shift)
        relevant_at[d] += np.int64(packed & count_mask)


@numba.njit(cache=True, nogil=True)
def block_scores(record, n, offsets, inverse_positions, hi_scale, lo_scale, slots, kmax, limbs, need_ap, limit):
    """Exact AP limbs of a block's relevant items added to limbs[0:2] (if need_ap); the
    position of each item among the first kmax relevant ones (by global rank) into slots[rank].
    Records at distances above `limit` (whose relevant-before count is already >= kmax, see
    distance_limit) cannot qualify: a cheap test on their distance bits skips them."""
    if need_ap:
        a, b = limbs[0], limbs[1]
        for t in range(np.int64(n)):
            position, rank = decode(record[t], offsets)
            hi, lo = split(rank + 1, position, inverse_positions, hi_scale, lo_scale)
            a += hi
            b += lo
        limbs[0], limbs[1] = a, b
    if kmax > 0:
        for t in range(np.int64(n)):
            if np.int64(record[t] >> distance_shift) <= limit:
                position, rank = decode(record[t], offsets)
                if rank < kmax:
                    slots[rank] = position


@numba.njit(inline="always")
def distance_limit(counts, mask, kmax):
    """The largest distance d whose relevant-before count (counts[d] & mask) is below kmax."""
    limit = -1
    for d in range(counts.shape[0]):
        if np.int64(counts[d] & mask) < kmax:
            limit = d
    return limit


@numba.njit(cache=True, nogil=True)
def single_scores(record, n, offsets, inverse_positions, hi_scale, lo_scale, slots, kmax, cutoffs, cut, limbs,
                  need_ap):
    """The whole database was one block: AP limbs and cutoff statistics of one query."""
    limbs[0] = limbs[1] = 0
    if kmax == 0 or not need_ap:  # the AP sum alone, or the first kmax relevant items alone
        block_scores(record, n, offsets, inverse_positions, hi_scale, lo_scale, slots, kmax, limbs, need_ap,
                     distance_limit(offsets, low32, kmax))
        if kmax > 0:
            dense_statistics(slots, min(np.int64(n), kmax), cutoffs, inverse_positions, hi_scale, lo_scale, cut,
                             np.zeros(2, np.int64))
        return
    for t in range(np.int64(n)):  # every relevant item into rank order (a counting sort)
        position, rank = decode(record[t], offsets)
        slots[rank] = position
    dense_statistics(slots, np.int64(n), cutoffs, inverse_positions, hi_scale, lo_scale, cut, limbs)


@numba.njit(cache=True, nogil=True)
def segment_sum(slots, start, stop, inverse_positions, hi_scale, lo_scale, limbs):
    """limbs += the exact contributions of slots[start:stop] (all held: no holes)."""
    a, b = limbs[0], limbs[1]
    for u in range(start, stop):
        hi, lo = split(u + 1, slots[u], inverse_positions, hi_scale, lo_scale)
        a += hi
        b += lo
    limbs[0], limbs[1] = a, b


@numba.njit(cache=True, nogil=True)
def dense_statistics(slots, n_slots, cutoffs, inverse_positions, hi_scale, lo_scale, cut, limbs):
    """ranked_statistics when every slot is held (one machine, one block): the boundaries by
    binary search, then plain segment sums (no branch per item)."""
    m = cutoffs.shape[0]
    limbs[0] = limbs[1] = 0
    done = top = first = 0
    held = slots[:n_slots]
    while top < m or first < m:
        top_end = np.searchsorted(held, cutoffs[top]) if top < m else n_slots + 1
        first_end = min(cutoffs[first], n_slots) if first < m else n_slots + 1
        end = min(top_end, first_end)
        segment_sum(slots, done, end, inverse_positions, hi_scale, lo_scale, limbs)
        done = end
        if top_end == end:
            cut[top, HITS], cut[top, TOPK_HI], cut[top, TOPK_LO] = end, limbs[0], limbs[1]
            top += 1
        if first_end == end:
            cut[first, FIRST_HI], cut[first, FIRST_LO] = limbs[0], limbs[1]
            first += 1
    segment_sum(slots, done, n_slots, inverse_positions, hi_scale, lo_scale, limbs)


@numba.njit(cache=True, nogil=True)
def ranked_statistics(slots, n_slots, cutoffs, inverse_positions, hi_scale, lo_scale, cut, limbs):
    """Cutoff statistics from slots[u] = position of the relevant item of rank u + 1 (-1 where
    another shard holds it); the positions held are increasing in u. limbs gets the exact sum
    over all slots held."""
    m = cutoffs.shape[0]
    a = b = count = np.int64(0)
    top = first = 0  # next cutoff to close: by position (hits in the top k), by rank
    for u in range(n_slots):
        while first < m and cutoffs[first] <= u:  # rank u + 1 > k: beyond the first k relevant
            cut[first, FIRST_HI], cut[first, FIRST_LO] = a, b
            first += 1
        position = slots[u]
        if position < 0:
            continue
        while top < m and position >= cutoffs[top]:
            cut[top, HITS], cut[top, TOPK_HI], cut[top, TOPK_LO] = count, a, b
            top += 1
        hi, lo = split(u + 1, position, inverse_positions, hi_scale, lo_scale)
        a += hi
        b += lo
        count += 1
    for j in range(top, m):
        cut[j, HITS], cut[j, TOPK_HI], cut[j, TOPK_LO] = count, a, b
    for j in range(first, m):
        cut[j, FIRST_HI], cut[j, FIRST_LO] = a, b
    limbs[0], limbs[1] = a, b


@numba.njit(parallel=True, cache=True, nogil=True)
def run(queries, items, four, mode, code_words, n_distances, phase, block, start_offsets, cutoffs, kmax, need_ap,
        inverse_positions, hi_scale, lo_scale, n_tasks, items_at, relevant_at, ap_limbs, cut):
    """Run one phase for every query (see the module docstring); outputs are written per query.

    queries / items: uint64 rows (code words, then label words / id / label indices); four:
    the one-word layout with four queries per pass. start_offsets (SCORES): (n_q, n_distances)
    counters (d << 48) | (items << 24) | relevant ranked before this database at distance d,
    so the counters continue from them and every record holds its global counts. need_ap:
    compute the AP limbs (else only the cutoff statistics; the limbs are then not meaningful).
    """
    numba.literally(four)
    numba.literally(mode)
    n_q, n_r = queries.shape[0], items.shape[0]
    width = 4 if four else 1
    n_groups = (n_q + width - 1) // width
    slot_count = n_r if phase == SINGLE and need_ap and kmax > 0 else kmax + 1
    keep = phase != HISTOGRAMS
    # Groups sharing each database block while it is in cache (one block in SINGLE: no gain).
    batch = 1 if phase == SINGLE else BATCH_GROUPS
    for task in numba.prange(n_tasks):
        counts = np.empty((batch * width, n_distances), np.uint64)
        records = np.empty((width, min(block, n_r) if keep else 1), np.uint64)
        n_relevant = np.zeros(width, np.uint64)
        offsets = np.empty((1, n_distances), np.uint64)
        slots = np.empty((batch * width, slot_count), np.int64)
        limbs = np.zeros((batch * width, 2), np.int64)
        unused = np.zeros(2, np.int64)
        limits = np.full(width, -1, np.int64)
        task_first, task_last = task * n_groups // n_tasks, (task + 1) * n_groups // n_tasks
        for batch_first in range(task_first, task_last, batch):
            batch_groups = min(batch, task_last - batch_first)
            first_query = width * batch_first
            members = min(width * batch_groups, n_q - first_query)
            for s in range(members):
                limbs[s, 0] = limbs[s, 1] = 0
                if phase == SCORES:
                    # Counters start from what is ranked before this database: records are global.
                    counts[s] = start_offsets[first_query + s]
                    slots[s] = -1
            for start in range(0, n_r, block):
                stop = min(start + block, n_r)
                for group in range(batch_groups):
                    first = first_query + width * group
                    group_counts = counts[width * group: width * group + width]
                    fresh = phase != SCORES
                    if phase == SCORES and kmax > 0:
                        for g in range(min(width, n_q - first)):
                            limits[g] = distance_limit(group_counts[g], count_mask, kmax)
                    if four and keep:
                        pass_four(queries, first, items, start, stop, group_counts, records, n_relevant, mode, True, fresh)
                    elif four:
                        pass_four(queries, first, items, start, stop, group_counts, records, n_relevant, mode, False, fresh)
                    elif keep:
                        pass_one(queries, first, items, start, stop, group_counts, records, n_relevant, code_words, mode,
                                 True, fresh)
                    else:
                        pass_one(queries, first, items, start, stop, group_counts, records, n_relevant, code_words, mode,
                                 False, fresh)
                    for g in range(min(width, n_q - first)):
                        i, s = first + g, width * group + g
                        if phase == HISTOGRAMS or phase == SINGLE:
                            block_histogram(group_counts[g], items_at[i], relevant_at[i])
                        if phase == SCORES:
                            block_scores(records[g], n_relevant[g], None, inverse_positions, hi_scale, lo_scale,
                                         slots[s], kmax, limbs[s], need_ap, limits[g])
                        elif phase == SINGLE:
                            offsets[0] = 0
                            exclusive_prefix(group_counts[g], offsets[0])
                            single_scores(records[g], n_relevant[g], offsets[0], inverse_positions, hi_scale, lo_scale,
                                          slots[s], kmax, cutoffs, cut[i], limbs[s], need_ap)
            for s in range(members):
                i = first_query + s
                if phase == SCORES and kmax > 0:
                    ranked_statistics(slots[s], kmax, cutoffs, inverse_positions, hi_scale, lo_scale, cut[i], unused)
                if phase != HISTOGRAMS:
                    ap_limbs[i, 0], ap_limbs[i, 1] = limbs[s, 0], limbs[s, 1]


@numba.njit(cache=True, nogil=True)
def exclusive_prefix(counts, offsets):
    """offsets[d] = packed (items << 32 | relevant) at distances < d, from one block's counts."""
    closer = u64(0)
    for d in range(counts.shape[0]):
        offsets[d] = closer
        packed = counts[d] & record_mask
        closer += ((packed >> count_shift) << half_shift) | (packed & count_mask)
