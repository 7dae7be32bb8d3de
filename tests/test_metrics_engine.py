"""The metrics engine: identical integers on every backend, block size and shard split;
memory-mapped databases; relevance layouts; the exact sums and harmonic differences."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import metrics
from metrics import counting, engine, inputs, partials
from metrics import reference as ref

needs_numba = pytest.mark.skipif(not counting.available(), reason="numba not installed")
BACKENDS = ["torch", pytest.param("fused", marks=needs_numba)]
KS = dict(map_ks=(1, 9, 40, 500), precision_ks=(3, 40))


def tied_problem(seed: int, n_query=13, n_retrieval=257, bits=5, n_labels=4, label_rate=0.2):
    """Few bits and repeated rows: huge tie groups; sparse labels: queries without relevant items."""
    rng = np.random.default_rng(seed)
    q = np.where(rng.random((n_query, bits)) < 0.5, 1, -1).astype(np.int8)
    r = np.where(rng.random((n_retrieval, bits)) < 0.5, 1, -1).astype(np.int8)
    r[20:60] = r[7]
    ql = (rng.random((n_query, n_labels)) < label_rate).astype(np.uint8)
    rl = (rng.random((n_retrieval, n_labels)) < label_rate).astype(np.uint8)
    ql[0] = 0  # a query with no relevant item
    return q, r, ql, rl


def same(a: dict, b: dict) -> bool:
    """Equal keys and equal floats to the last bit (NaN equal to NaN)."""
    return a.keys() == b.keys() and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a.values(), (b[k] for k in a)))


# ---- one set of integers, whatever computes it --------------------------------------------------
@needs_numba
def test_backends_blocks_threads_and_chunks_give_the_same_floats():
    problem = tied_problem(0)
    expected = metrics.evaluate_hashing(*problem, backend="torch", **KS)
    variants = [dict(backend="torch", chunk_size=3), dict(backend="fused"), dict(backend="fused", block_size=1),
                dict(backend="fused", block_size=5), dict(backend="fused", block_size=100)]
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for options in variants:
                assert same(metrics.evaluate_hashing(*problem, **KS, **options), expected), (threads, options)
    finally:
        torch.set_num_threads(previous)
    reference = ref.reference_evaluate_per_query(*problem, KS["map_ks"][:3], KS["precision_ks"], radius=2)
    for key, values in reference.items():
        assert expected[key] == pytest.approx(float(np.nanmean(values)) if not np.isnan(values).all() else float("nan"),
                                              abs=1e-13, nan_ok=True), key


@needs_numba
@pytest.mark.parametrize("bits", [5, 70])  # the four-query layout and the general one
def test_kernel_and_torch_partials_are_identical_integers(bits):
    problem = engine.problem(*tied_problem(1, bits=bits))
    cutoffs = (1, 9, 40, 257)
    kernel = engine.compute(problem, cutoffs, backend="fused")
    blocked = engine.compute(problem, cutoffs, backend="fused", block_size=16)
    torch_part = engine.compute(problem, cutoffs, backend="torch", chunk_size=4)
    for name in ("items_at", "relevant_at", "ap_limbs", "cut"):
        assert np.array_equal(getattr(kernel, name), getattr(torch_part, name)), name
        assert np.array_equal(getattr(kernel, name), getattr(blocked, name)), name
    assert kernel.ap_limbs.dtype == np.int64 and (kernel.ap_limbs[:, 0] > 0).any()


def test_torch_backend_with_the_cuda_sort_gives_the_same_floats(monkeypatch):
    # On CUDA the torch backend sorts with torch.sort instead of numpy's in-place sort; the
    # keys are unique, so the order (and every number) must not change. Run that branch on CPU.
    from metrics import sorting

    problem = tied_problem(8)
    expected = metrics.evaluate_hashing(*problem, **KS, backend="torch")
    monkeypatch.setattr(sorting, "sort_rows_", lambda keys: torch.sort(keys, dim=1).values)
    assert same(metrics.evaluate_hashing(*problem, **KS, backend="torch", chunk_size=5), expected)
    if counting.available():
        assert same(metrics.evaluate_hashing(*problem, **KS, backend="fused"), expected)


# ---- memory-mapped databases --------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_mapped_database_equals_the_in_memory_one(tmp_path, monkeypatch, backend):
    q, r, ql, rl = tied_problem(2, n_retrieval=300)
    np.save(tmp_path / "codes.npy", (r > 0).astype(np.uint8))  # 0/1 on disk, ±1 in memory
    np.save(tmp_path / "labels.npy", rl)
    codes, labels = np.load(tmp_path / "codes.npy", mmap_mode="r"), np.load(tmp_path / "labels.npy", mmap_mode="r")
    expected = metrics.evaluate_hashing(torch.from_numpy(q), torch.from_numpy(r), torch.from_numpy(ql), torch.from_numpy(rl),
                                        **KS, backend=backend)
    monkeypatch.setattr(inputs, "PACK_BLOCK_ROWS", 64)  # labels read and checked 64 rows at a time
    got = metrics.evaluate_hashing(q, codes, ql, labels, **KS, backend=backend, block_size=50)
    assert same(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_memory_mapped_codes_are_checked_block_by_block(tmp_path, monkeypatch, backend):
    # Each 10-row block alone is valid (±1 in the first, 0/1 in the second); together they are
    # the sign(0) mix, refused as it is for codes in memory.
    monkeypatch.setattr(inputs, "PACK_BLOCK_ROWS", 10)
    codes = np.ones((20, 4), dtype=np.int8)
    codes[:10, 0] = -1
    codes[10:, 1] = 0
    np.save(tmp_path / "codes.npy", codes)
    np.save(tmp_path / "bad.npy", np.full((20, 4), 2, dtype=np.int8))
    query, labels = (np.ones((1, 4)), np.ones((1, 1))), np.ones((20, 1))
    with pytest.raises(ValueError, match=r"retrieval_codes mixes -1, 0 and \+1"):
        metrics.mean_average_precision(query[0], np.load(tmp_path / "codes.npy", mmap_mode="r"), query[1], labels, backend=backend)
    with pytest.raises(ValueError, match=r"retrieval_codes must contain only ±1 \(or only 0/1\) values, found e.g. \[2"):
        metrics.mean_average_precision(query[0], np.load(tmp_path / "bad.npy", mmap_mode="r"), query[1], labels, backend=backend)


# ---- shards -------------------------------------------------------------------------------------
SHARD_BOUNDS = (0, 70, 71, 200, 257)  # uneven, one of a single item, ties across every boundary


def shards_of(r, rl):
    return [(r[a:b], rl[a:b]) for a, b in zip(SHARD_BOUNDS, SHARD_BOUNDS[1:])]


@pytest.mark.parametrize("backends", [("torch", "torch"), pytest.param(("fused", "torch"), marks=needs_numba)])
def test_shards_merge_into_the_single_machine_numbers_exactly(backends):
    q, r, ql, rl = tied_problem(3)
    single = metrics.evaluate_hashing_per_query(q, r, ql, rl, **KS)
    cutoffs = sorted(set(KS["map_ks"][:3]) | set(KS["precision_ks"]))
    shards = shards_of(r, rl)
    # Shards may run on different backends (machines): alternate them.
    backend = [backends[i % 2] for i in range(len(shards))]
    histograms = [metrics.shard_histograms(q, c, ql, lab, backend=b) for (c, lab), b in zip(shards, backend)]
    offsets = metrics.shard_offsets(histograms)
    scores = [metrics.shard_scores(q, c, ql, lab, off, len(r), cutoffs, backend=b, block_size=16)
              for (c, lab), off, b in zip(shards, offsets, backend)]
    parts = histograms + scores
    merged = metrics.merge_partials(parts)
    assert merged.n_retrieval == len(r)
    per_query = metrics.metrics_from_partials(merged, **KS, per_query=True)
    assert per_query.keys() == single.keys()
    for key in single:
        np.testing.assert_array_equal(per_query[key], single[key].numpy(), err_msg=key)
    # Integer sums: the order in which parts are merged does not matter.
    shuffled = metrics.merge_partials(parts[::-1])
    assert np.array_equal(shuffled.ap_limbs, merged.ap_limbs) and np.array_equal(shuffled.cut, merged.cut)
    assert same(metrics.metrics_from_partials(shuffled, **KS), metrics.evaluate_hashing(q, r, ql, rl, **KS))


def test_evaluate_sharded_through_worker_processes(tmp_path):
    q, r, ql, rl = tied_problem(4)
    paths = []
    for i, (codes, labels) in enumerate(shards_of(r, rl)):
        np.save(tmp_path / f"codes{i}.npy", codes)
        np.save(tmp_path / f"labels{i}.npy", labels)
        paths.append((str(tmp_path / f"codes{i}.npy"), tmp_path / f"labels{i}.npy"))
    got = metrics.evaluate_sharded(q, ql, paths, **KS, workers=2)
    assert same(got, metrics.evaluate_hashing(q, r, ql, rl, **KS))


def test_merge_refuses_parts_of_different_databases():
    q, r, ql, rl = tied_problem(5)
    whole = engine.compute(engine.problem(q, r, ql, rl), (5,))
    other = engine.compute(engine.problem(q, r[:100], ql, rl[:100]), (5,))
    with pytest.raises(ValueError, match=r"disagree on the database size: \[100, 257\]"):
        metrics.merge_partials([whole, other])
    with pytest.raises(ValueError, match="share their cutoffs"):
        metrics.merge_partials([whole, engine.compute(engine.problem(q, r, ql, rl), (6,))])


# ---- relevance layouts of the kernel ------------------------------------------------------------
def layout_problem(kind: str, seed: int = 6):
    rng = np.random.default_rng(seed)
    bits = 70 if kind.endswith("general") else 12
    q = np.where(rng.random((9, bits)) < 0.5, 1.0, -1.0).astype(np.float32)
    r = np.where(rng.random((400, bits)) < 0.5, 1.0, -1.0).astype(np.float32)
    r[100:150] = r[0]
    if kind.startswith("ids"):
        # Instance ids (many distinct values) and their one-hot form for the reference.
        ids_q, ids_r = rng.integers(0, 40, 9) * 7919, rng.integers(0, 40, 400) * 7919
        values = np.unique(np.concatenate([ids_q, ids_r]))
        onehot = lambda ids: (ids[:, None] == values[None, :]).astype(np.float32)  # noqa: E731
        return (q, r, ids_q, ids_r), (q, r, onehot(ids_q), onehot(ids_r))
    if kind == "wide sparse":
        # Caption-style instance labels: 600 columns; each item (an image) is its own column
        # group, each query (a text) names a few of them.
        rl = np.zeros((400, 600), np.float32)
        rl[np.arange(400), rng.integers(0, 600, 400)] = 1
        rl[np.arange(0, 400, 3), rng.integers(0, 600, 134)] = 1  # some items carry two
        ql = np.zeros((9, 600), np.float32)
        for i in range(9):
            ql[i, rng.choice(np.flatnonzero(rl.sum(0)), 3)] = 1
    else:  # wide dense: 130 labels, many per item
        ql, rl = (rng.random((9, 130)) < 0.05).astype(np.float32), (rng.random((400, 130)) < 0.3).astype(np.float32)
    return (q, r, ql, rl), (q, r, ql, rl)


@pytest.mark.parametrize("kind, mode, four", [("ids", inputs.IDS, True), ("ids general", inputs.IDS, False),
                                              ("wide sparse", inputs.SPARSE, False), ("wide dense", inputs.MASKS, False)])
def test_relevance_layouts_give_the_reference_numbers(kind, mode, four):
    problem, as_multi_hot = layout_problem(kind)
    packed = engine.problem(*problem).packed()
    assert (packed.mode, packed.four) == (mode, four)
    expected = ref.reference_evaluate_per_query(*as_multi_hot, (10, 400), (5,), radius=3)
    backends = ["torch"] + (["fused"] if counting.available() else [])
    results = [metrics.evaluate_hashing_per_query(*problem, map_ks=(10, 400), precision_ks=(5,), radius=3, backend=b)
               for b in backends]
    for key, values in expected.items():
        np.testing.assert_allclose(results[0][key], values, rtol=0, atol=1e-12, err_msg=key)
        for other in results[1:]:
            np.testing.assert_array_equal(other[key], results[0][key], err_msg=key)


# ---- exact sums and harmonic differences --------------------------------------------------------
@pytest.mark.parametrize("n", [2, 5, 300, 18015, 10_000_000, partials.MAX_EXACT_ITEMS])
def test_limbs_hold_each_contribution_exactly_and_their_sums_never_overflow(n):
    hi_scale, lo_scale = partials.limb_scales(n)
    rng = np.random.default_rng(n)
    position = rng.integers(0, n, 2000)
    hits = np.minimum(rng.integers(1, n + 1, 2000), position + 1)
    c = hits * partials.inverse_positions(n)[position]
    x = c * hi_scale
    hi = x.astype(np.int64)
    lo = ((x - hi) * lo_scale).astype(np.int64)
    for value, h, low in zip(c[:200], hi[:200], lo[:200]):
        assert Fraction(float(value)) == (Fraction(int(h)) + Fraction(int(low)) / Fraction(lo_scale)) / Fraction(hi_scale)
    # Worst case: n contributions of 1 in hi, n of the largest lo.
    assert n * hi_scale < 2**63 and n * lo_scale < 2**63 and float(n) * hi_scale * lo_scale <= 2.0 ** (52 + 2 * math.ceil(math.log2(max(n, 2))))
    with pytest.raises(ValueError, match="exact sums cover databases of up to 16777215 items"):
        partials.limb_scales(partials.MAX_EXACT_ITEMS + 1)


def test_harmonic_differences_keep_their_relative_accuracy_at_ten_million_items():
    rng = np.random.default_rng(7)
    low = np.concatenate([np.arange(0, 80), rng.integers(0, 10_000_000, 60)])
    high = low + np.concatenate([rng.integers(0, 200, 80), rng.integers(0, 50_000, 60)])
    got = engine.harmonic_difference(low, high)
    for a, b, value in zip(low, high, got):
        exact = math.fsum(1.0 / i for i in range(int(a) + 1, int(b) + 1))
        assert value == pytest.approx(exact, rel=4e-15, abs=0), (a, b)
    # The table of H it replaces: at ten million items its differences are off by ~1e-9 relative.
    table = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, 10_050_001))])
    a, b = 10_000_000, 10_000_037
    exact = math.fsum(1.0 / i for i in range(a + 1, b + 1))
    assert abs(table[b] - table[a] - exact) / exact > 1e-11
    assert engine.harmonic_difference(np.array([a]), np.array([b]))[0] == pytest.approx(exact, rel=4e-15)


def test_tie_aware_ap_from_histograms_of_a_ten_million_item_database():
    # Two queries, 4 distances, counts in the millions: the closed form against its term by term
    # sum for the small groups, and against fsum-based harmonic differences for all.
    items_at = np.array([[3, 2_000_000, 5_000_000, 2_999_997], [1, 1, 9_999_997, 1]], dtype=np.int64)
    relevant_at = np.array([[2, 700_000, 10, 0], [1, 0, 4_000_000, 1]], dtype=np.int64)
    p = partials.Partials(10_000_000, (), items_at, relevant_at)
    expected = []
    for n_row, p_row in zip(items_at, relevant_at):
        before_n = before_p = 0
        total = 0.0
        for n, rel in zip(n_row.tolist(), p_row.tolist()):
            if rel:
                c = (rel - 1) / (n - 1) if n > 1 else 0.0
                harmonic = math.fsum(1.0 / i for i in range(before_n + 1, before_n + n + 1))
                total += rel / n * (c * n + (before_p + 1 - c * (before_n + 1)) * harmonic)
            before_n, before_p = before_n + n, before_p + rel
        expected.append(total / max(p_row.sum(), 1))
    np.testing.assert_allclose(engine.tie_aware_ap(p), expected, rtol=1e-13, atol=0)
