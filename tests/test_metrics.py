"""Correctness of metrics/: against the numpy reference, hand-computed cases, and properties."""
from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metrics
from metrics import counting, engine, sorting
from metrics import reference as ref

# Every Hamming metric has two CPU implementations (the torch backend, the counting kernel): test both.
needs_numba = pytest.mark.skipif(not counting.available(), reason="numba not installed")
BACKENDS = ["torch", pytest.param("fused", marks=needs_numba)]


def random_problem(seed: int, n_query=25, n_retrieval=300, bits=6, n_labels=5, label_rate=0.15):
    """Few bits => heavy ties; sparse labels => some queries with no relevant item."""
    rng = np.random.default_rng(seed)
    q = np.where(rng.random((n_query, bits)) < 0.5, 1.0, -1.0).astype(np.float32)
    r = np.where(rng.random((n_retrieval, bits)) < 0.5, 1.0, -1.0).astype(np.float32)
    ql = (rng.random((n_query, n_labels)) < label_rate).astype(np.float32)
    rl = (rng.random((n_retrieval, n_labels)) < label_rate).astype(np.float32)
    return q, r, ql, rl


# ---- the hand example -------------------------------------------------------------------------
# 2-bit codes, 3 labels. Items (code, labels):
#   r0 [ 1,-1] {0}   r1 [ 1, 1] {1}   r2 [-1,-1] {0}   r3 [-1, 1] {}   r4 [ 1, 1] {0}
# q0 = [1, 1] label {0}: distances r0..r4 = 1,0,2,1,0; relevant r0,r2,r4 (R = 3).
#   stable order (distance, index): r1 N, r4 R, r0 R, r3 N, r2 R -> relevant at positions 2,3,5
#   AP = (1/2 + 2/3 + 3/5) / 3 = 53/90
#   tie-aware: d=0 {r1,r4} n=2 p=1 N<=0 P<=0: (1/2)(1/1 + 1/2)          = 3/4
#              d=1 {r0,r3} n=2 p=1 N<=2 P<=1: (1/2)(2/3 + 2/4)          = 7/12
#              d=2 {r2}    n=1 p=1 N<=4 P<=2: 3/5
#              AP = (3/4 + 7/12 + 3/5) / 3 = 29/45
# q1 = [1, 1] label {2}: nobody has label 2 -> AP 0, still counted.
# q2 = [-1,-1] label {1}: distances 1,2,0,1,2; only r1 relevant (R = 1).
#   stable order: r2, r0, r3, r1 R, r4 -> position 4, AP = 1/4
#   tie-aware: r1 shares d=2 with r4 (N<=3): (1/2)(1/4 + 1/5) = 9/40
HAND_Q = np.array([[1, 1], [1, 1], [-1, -1]], dtype=np.float32)
HAND_R = np.array([[1, -1], [1, 1], [-1, -1], [-1, 1], [1, 1]], dtype=np.float32)
HAND_QL = np.array([[1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=np.float32)
HAND_RL = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32)
HAND = (HAND_Q, HAND_R, HAND_QL, HAND_RL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_example_map_stable_and_tie_aware(backend):
    ap = metrics.mean_average_precision(*HAND, per_query=True, backend=backend)
    assert ap.tolist() == pytest.approx([53 / 90, 0.0, 1 / 4], abs=1e-15)
    assert float(metrics.mean_average_precision(*HAND, backend=backend)) == pytest.approx((53 / 90 + 1 / 4) / 3, abs=1e-15)
    tie = metrics.mean_average_precision(*HAND, per_query=True, ties="tie-aware", backend=backend)
    assert tie.tolist() == pytest.approx([29 / 45, 0.0, 9 / 40], abs=1e-15)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_example_map_at_k_variants(backend):
    # k = 3. q0's top 3: r1 N, r4 R, r0 R -> precisions at hits 1/2, 2/3, sum 7/6, 2 hits, R = 3.
    # q1: no relevant item. q2: top 3 = r2, r0, r3, no hit (its one relevant item is 4th).
    def at_k(k, variant):
        return metrics.mean_average_precision_at_k(*HAND, k, variant=variant, per_query=True, backend=backend).tolist()

    assert at_k(3, "topk") == pytest.approx([7 / 12, 0, 0], abs=1e-15)  # (7/6) / 2 hits
    assert at_k(3, "trec") == pytest.approx([7 / 18, 0, 0], abs=1e-15)  # (7/6) / R=3
    hashnet = at_k(3, "hashnet")  # queries without a hit in the top 3 are dropped
    assert hashnet[0] == pytest.approx(7 / 12, abs=1e-15) and math.isnan(hashnet[1]) and math.isnan(hashnet[2])
    mean_hashnet = float(metrics.mean_average_precision_at_k(*HAND, 3, variant="hashnet", backend=backend))
    assert mean_hashnet == pytest.approx(7 / 12, abs=1e-15)  # vs topk mean 7/36
    # calc_map_k, k = 2: the first min(2, R) relevant items wherever they rank:
    # q0 positions 2, 3 -> (1/2 + 2/3) / 2 = 7/12; q1 -> 0; q2 position 4 -> 1/4 (topk@2 gives 0).
    assert at_k(2, "calc_map_k") == pytest.approx([7 / 12, 0, 1 / 4], abs=1e-15)
    assert at_k(2, "topk") == pytest.approx([1 / 2, 0, 0], abs=1e-15)  # q0 top 2: r1 N, r4 R


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_example_precision_radius_and_pr(backend):
    # P@1: r1 (N), none, r2 (N) -> 0. P@3: q0 2/3, others 0 -> 2/9.
    assert metrics.precision_at_k(*HAND, [1, 3], backend=backend).tolist() == pytest.approx([0, 2 / 9], abs=1e-15)
    # radius 1: q0 ball {r1,r4,r0,r3} 2 relevant -> 1/2; q1 same ball, 0 relevant; q2 {r2,r0,r3} -> 0.
    assert float(metrics.precision_within_radius(*HAND, 1, backend=backend)) == pytest.approx(1 / 6, abs=1e-15)
    # radius 0, micro: pairs within r=0: q0 {r1,r4} 1 rel, q1 {r1,r4} 0, q2 {r2} 0 -> 1/5;
    # recall: 1 of all 3 + 0 + 1 relevant pairs -> 1/4.
    micro = metrics.pr_curve(*HAND, average="micro", backend=backend)
    assert float(micro.precision[0]) == pytest.approx(1 / 5) and float(micro.recall[0]) == pytest.approx(1 / 4)
    # macro at r=0: precision mean(1/2, 0, 0) = 1/6; recall mean(1/3, 0 (R=0), 0) = 1/9.
    macro = metrics.pr_curve(*HAND, average="macro", backend=backend)
    assert float(macro.precision[0]) == pytest.approx(1 / 6) and float(macro.recall[0]) == pytest.approx(1 / 9)
    assert float(micro.recall[-1]) == 1.0 and micro.radius.tolist() == [0, 1, 2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_ball_precision_is_documented_choice(backend):
    q = np.array([[1, 1, 1, 1]], dtype=np.float32)
    r = -np.ones((3, 4), dtype=np.float32)  # all at distance 4: every ball of radius < 4 is empty
    labels = np.ones((1, 1)), np.ones((3, 1))
    assert float(metrics.precision_within_radius(q, r, *labels, 2, backend=backend)) == 0.0
    nan_macro = metrics.pr_curve(q, r, *labels, average="macro", empty_precision=float("nan"), backend=backend)
    assert math.isnan(float(nan_macro.precision[0])) and float(nan_macro.precision[4]) == 1.0
    assert float(metrics.pr_curve(q, r, *labels, backend=backend).precision[0]) == 0.0


# ---- against the numpy reference --------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_stable_map_equals_reference(seed, chunk_size):
    problem = random_problem(seed)
    expected = ref.reference_average_precisions(*problem)
    assert (expected == 0).any() and (expected > 0).any()  # zero-relevance queries are exercised
    got = metrics.mean_average_precision(*problem, per_query=True, chunk_size=chunk_size, backend="torch").numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)
    assert float(metrics.mean_average_precision(*problem)) == pytest.approx(expected.mean(), abs=1e-13)


@needs_numba
@pytest.mark.parametrize("shape", [
    (25, 300, 6, 5),      # heavy ties; 25 queries: the last group of four is partial
    (4, 1000, 64, 64),    # one code word, one label word: the four-query layout
    (3, 700, 65, 65),     # two code words and two label words: the general layout
    (1, 50, 1, 1),        # a single query, a single bit
])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("block_size", [None, 64])  # 64: the two-phase (histograms, then scores) path
def test_kernel_gives_every_metric_of_the_reference(shape, threads, block_size):
    n_query, n_retrieval, bits, n_labels = shape
    q, r, ql, rl = random_problem(21, n_query, n_retrieval, bits, n_labels, label_rate=0.05)
    r[10:40] = r[3]  # a block of exact ties
    map_ks, precision_ks = [k for k in (1, 7, 40, 300) if k <= n_retrieval], [k for k in (5, 50) if k <= n_retrieval]
    expected = ref.reference_evaluate_per_query(q, r, ql, rl, map_ks, precision_ks, radius=min(2, bits))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = metrics.evaluate_hashing_per_query(q, r, ql, rl, map_ks=map_ks, precision_ks=precision_ks, radius=min(2, bits),
                                                 backend="fused", block_size=block_size)
    finally:
        torch.set_num_threads(previous)
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        np.testing.assert_allclose(got[key].numpy(), values, rtol=0, atol=1e-12 if key == "map_tie_aware" else 1e-13,
                                   err_msg=key)  # NaNs (hashnet) must match too


@needs_numba
def test_kernel_from_several_python_threads_at_once():
    from concurrent.futures import ThreadPoolExecutor

    problem = random_problem(22, n_query=40, n_retrieval=3000, bits=32)
    expected = metrics.evaluate_hashing(*problem, backend="torch", map_ks=(100,), precision_ks=(10,))
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: metrics.evaluate_hashing(*problem, backend="fused", map_ks=(100,), precision_ks=(10,)),
                            range(12)))
    assert all(out == expected for out in got)


def test_auto_takes_the_kernel_on_cpu_and_torch_for_cosine(monkeypatch):
    ran = []
    for module in (counting, sorting):
        original = module.partials
        monkeypatch.setattr(module, "partials", lambda *a, _f=original, _name=module.__name__, **k: ran.append(_name) or _f(*a, **k))
    problem = random_problem(4)
    metrics.mean_average_precision(*problem, ties="tie-aware")
    metrics.evaluate_hashing(*problem, map_ks=(5,), precision_ks=(5,))
    metrics.mean_average_precision(*problem, metric="cosine")
    kernel = ["metrics.counting"] if counting.available() else ["metrics.sorting"]
    assert ran == kernel + kernel + ["metrics.sorting"]
    if counting.available():
        with pytest.raises(ValueError, match=r"backend='fused' cannot be used: it ranks by Hamming distance only"):
            metrics.mean_average_precision(*problem, metric="cosine", backend="fused")
    with pytest.raises(ValueError, match="backend must be 'auto', 'torch' or 'fused'"):
        metrics.mean_average_precision(*problem, backend="numba")


# Two queries, three items, 2 bits, 2 labels: q0 ranks r2 (relevant, d=0), r0 (relevant, d=1),
# r1: AP 1. q1 ranks r0 (d=0), then its only relevant item r1 (d=1): AP 1/2. mAP 3/4.
TINY_PROBLEM = (
    "q = np.array([[1., -1.], [1., 1.]]); r = np.array([[1., 1.], [-1., 1.], [1., -1.]])\n"
    "ql = np.array([[1., 0.], [0., 1.]]); rl = np.array([[1., 0.], [0., 1.], [1., 0.]])\n"
)


def run_in_fresh_interpreter(code: str) -> list[str]:
    """Run `code` in a new Python process at the repository root; return its stdout lines."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()


@pytest.mark.skipif(not counting.available() or (os.cpu_count() or 1) < 2,
                    reason="needs numba and 2+ cores (with one core the OpenMP default is already 1)")
def test_fused_call_leaves_torchs_thread_count_as_the_caller_set_it():
    # Starting numba's OpenMP pool resets the libgomp thread count that torch reports; the first
    # fused call in a process used to turn torch.set_num_threads(1) into 2.
    lines = run_in_fresh_interpreter(
        "import torch, numpy as np, metrics\n" "torch.set_num_threads(1)\n" + TINY_PROBLEM +
        "metrics.mean_average_precision(q, r, ql, rl, backend='fused')\n"
        "print(torch.get_num_threads())\n"
    )
    assert lines == ["1"]


def test_without_numba_auto_uses_torch_and_fused_says_why():
    # A fresh interpreter in which `import numba` fails, as on an install without it.
    value, message = run_in_fresh_interpreter(
        "import sys; sys.modules['numba'] = None\n"
        "import numpy as np, metrics\n"
        "from metrics import counting\n" + TINY_PROBLEM +
        "assert not counting.available()\n"
        "print(float(metrics.mean_average_precision(q, r, ql, rl)))\n"
        "try:\n"
        "    metrics.mean_average_precision(q, r, ql, rl, backend='fused')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    assert float(value) == 0.75
    assert message == "backend='fused' cannot be used: numba is not installed"


@pytest.mark.parametrize("backend", BACKENDS)
def test_stable_map_equals_reference_on_the_wide_key_path(backend):
    # (bits + 2) * n >= 2^24 takes the integer-key path instead of the exact float32 addmm.
    rng = np.random.default_rng(3)
    q = np.where(rng.random((3, 2048)) < 0.5, 1.0, -1.0).astype(np.float32)
    r = np.where(rng.random((8200, 2048)) < 0.5, 1.0, -1.0).astype(np.float32)
    r[4000:4100] = r[0]  # a block of exact ties
    ql, rl = np.eye(4)[[0, 1, 2]], np.eye(4)[rng.integers(0, 4, 8200)]
    np.testing.assert_allclose(metrics.mean_average_precision(q, r, ql, rl, per_query=True, backend=backend).numpy(),
                               ref.reference_average_precisions(q, r, ql, rl), rtol=0, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", metrics.MAP_AT_K_VARIANTS)
@pytest.mark.parametrize("k", [1, 17, 300])
def test_map_at_k_equals_reference(variant, k, backend):
    problem = random_problem(4)
    expected = ref.reference_average_precisions_at_k(*problem, k, variant)
    got = metrics.mean_average_precision_at_k(*problem, k, variant=variant, per_query=True, chunk_size=6, backend=backend).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)  # NaNs must match too


def test_map_at_k_calc_map_k_with_large_k_is_map_at_all():
    problem = random_problem(5)
    full = metrics.mean_average_precision(*problem, per_query=True)
    np.testing.assert_allclose(metrics.mean_average_precision_at_k(*problem, 300, variant="calc_map_k", per_query=True), full)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tie_aware_equals_reference_formula_and_many_label_words(backend):
    # 70 labels -> three 31-bit words in the torch backend's masks, two 64-bit words in the kernel's.
    problem = random_problem(6, n_labels=70, label_rate=0.02)
    np.testing.assert_allclose(metrics.mean_average_precision(*problem, per_query=True, ties="tie-aware", backend=backend).numpy(),
                               ref.reference_tie_aware_average_precisions(*problem), rtol=0, atol=1e-12)
    np.testing.assert_allclose(metrics.mean_average_precision(*problem, per_query=True, backend=backend).numpy(),
                               ref.reference_average_precisions(*problem), rtol=0, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_precision_at_k_and_radius_equal_reference(backend):
    problem = random_problem(7)
    ks = [1, 5, 50, 300]
    np.testing.assert_allclose(metrics.precision_at_k(*problem, ks, chunk_size=4, backend=backend).numpy(),
                               ref.reference_precision_at_k(*problem, ks), rtol=0, atol=1e-13)
    counts = ref.reference_radius_counts(*problem, 2)
    expected = np.where(counts[:, 0] > 0, counts[:, 1] / np.maximum(counts[:, 0], 1), 0.0)
    np.testing.assert_allclose(metrics.precision_within_radius(*problem, 2, per_query=True, backend=backend).numpy(),
                               expected, atol=1e-15)
    micro = metrics.pr_curve(*problem, backend=backend)
    assert float(micro.precision[2]) == pytest.approx(counts[:, 1].sum() / counts[:, 0].sum())
    assert float(micro.recall[2]) == pytest.approx(counts[:, 1].sum() / counts[:, 2].sum())


@pytest.mark.parametrize("backend, chunk_size", [("torch", None), ("torch", 4), pytest.param("fused", None, marks=needs_numba)])
def test_evaluate_hashing_matches_the_single_metric_functions(backend, chunk_size):
    # chunk_size 4: scratch buffers reused, last chunk shorter. Equal to the last bit: every
    # function reads the same integers.
    problem = random_problem(8)
    options = dict(backend=backend, chunk_size=chunk_size)
    out = metrics.evaluate_hashing(*problem, map_ks=(20, 5000), precision_ks=(10,), radius=2, **options)
    assert "map_at_5000_topk" not in out  # cutoffs beyond the 300-item database are left out
    assert out["map"] == float(metrics.mean_average_precision(*problem, **options))
    assert out["map_tie_aware"] == float(metrics.mean_average_precision(*problem, ties="tie-aware", **options))
    for variant in metrics.MAP_AT_K_VARIANTS:
        assert out[f"map_at_20_{variant}"] == float(metrics.mean_average_precision_at_k(*problem, 20, variant=variant, **options))
    assert out["p_at_10"] == float(metrics.precision_at_k(*problem, [10], **options)[0])
    assert out["p_within_r2"] == float(metrics.precision_within_radius(*problem, 2, **options))
    assert all(isinstance(v, float) for v in out.values())
    per_query = metrics.evaluate_hashing_per_query(*problem, map_ks=(20,), precision_ks=(10,), **options)
    expected = ref.reference_evaluate_per_query(*problem, (20,), (10,), radius=2)
    assert per_query.keys() == expected.keys()
    for key, values in expected.items():
        np.testing.assert_allclose(per_query[key], values, rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_class_labels_mean_same_class(backend):
    rng = np.random.default_rng(9)
    q, r, _, _ = random_problem(9)
    q_class, r_class = rng.integers(0, 4, len(q)) * 1000 - 7, rng.integers(0, 4, len(r)) * 1000 - 7  # any integers
    onehot = np.eye(4)
    np.testing.assert_allclose(metrics.mean_average_precision(q, r, q_class, r_class, per_query=True, backend=backend),
                               ref.reference_average_precisions(q, r, onehot[(q_class + 7) // 1000], onehot[(r_class + 7) // 1000]),
                               rtol=0, atol=1e-13)


# ---- properties of tie handling ---------------------------------------------------------------
def test_tie_aware_is_invariant_to_database_order_while_stable_is_not():
    problem = random_problem(10)
    q, r, ql, rl = problem
    tie = metrics.mean_average_precision(*problem, per_query=True, ties="tie-aware")
    stable = metrics.mean_average_precision(*problem, per_query=True)
    # Permute the database only within the tie groups of query 0 (sort by its distance, shuffle
    # inside each distance), then also by an arbitrary permutation.
    rng = np.random.default_rng(0)
    distance = 0.5 * (q.shape[1] - r @ q[0])
    within_ties = np.lexsort((rng.random(len(r)), distance))
    for perm in (within_ties, rng.permutation(len(r))):
        permuted_tie = metrics.mean_average_precision(q, r[perm], ql, rl[perm], per_query=True, ties="tie-aware")
        np.testing.assert_allclose(permuted_tie, tie, rtol=0, atol=1e-12)
    reordered_stable = metrics.mean_average_precision(q, r[within_ties], ql, rl[within_ties], per_query=True)
    assert not torch.allclose(reordered_stable, stable)  # the stable number does depend on tie order
    seeded = metrics.mean_average_precision(*problem, ties="tie-aware", permutation_seed=3)
    assert float(seeded) == pytest.approx(float(tie.mean()), abs=1e-12)


def test_tie_aware_equals_exact_enumeration_of_all_orders():
    # Averaging the stable AP over every order of a 6-item database averages over all orders
    # within each tie group uniformly: that average is the tie-aware AP exactly.
    q = np.array([[1, 1, -1], [-1, 1, 1]], dtype=np.float32)
    r = np.array([[1, 1, 1], [1, 1, -1], [-1, 1, -1], [1, 1, 1], [-1, -1, 1], [1, -1, -1]], dtype=np.float32)
    ql = np.array([[1, 0], [0, 1]], dtype=np.float32)
    rl = np.array([[1, 0], [0, 1], [1, 1], [0, 1], [1, 0], [1, 0]], dtype=np.float32)
    orders = list(itertools.permutations(range(6)))
    mean_ap = np.mean([ref.reference_average_precisions(q, r[list(p)], ql, rl[list(p)]) for p in orders], axis=0)
    tie = metrics.mean_average_precision(q, r, ql, rl, per_query=True, ties="tie-aware").numpy()
    np.testing.assert_allclose(tie, mean_ap, rtol=0, atol=1e-12)


def test_tie_aware_matches_monte_carlo_over_seeded_permutations():
    problem = random_problem(11, n_query=10, n_retrieval=120, bits=4)
    runs = [float(metrics.mean_average_precision(*problem, permutation_seed=s)) for s in range(300)]
    tie = float(metrics.mean_average_precision(*problem, ties="tie-aware"))
    standard_error = np.std(runs) / np.sqrt(len(runs))
    assert np.std(runs) > 0  # the seeded permutation really changes the stable number
    assert abs(np.mean(runs) - tie) < 5 * standard_error + 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
def test_permutation_seed_is_the_reference_on_the_permuted_database(backend):
    q, r, ql, rl = random_problem(12)
    perm = torch.randperm(len(r), generator=torch.Generator().manual_seed(5)).numpy()
    expected = ref.reference_average_precisions(q, r[perm], ql, rl[perm])
    got = metrics.mean_average_precision(q, r, ql, rl, per_query=True, permutation_seed=5, backend=backend).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


# ---- sign(0) and codes ------------------------------------------------------------------------
def test_binarize_maps_zero_to_plus_one():
    assert metrics.binarize(torch.tensor([[0.0, -0.5, 2.0, -0.0]])).tolist() == [[1.0, -1.0, 1.0, 1.0]]


def test_sign_zero_codes_are_refused_not_guessed():
    features = torch.tensor([[0.0, 1.5], [-2.0, 0.3]])
    with pytest.raises(ValueError, match=r"query_codes mixes -1, 0 and \+1.*binarize"):
        metrics.mean_average_precision(torch.sign(features), torch.ones(2, 2), torch.ones(2, 1), torch.ones(2, 1))


def test_zero_one_and_bool_codes_equal_pm1_codes():
    q, r, ql, rl = random_problem(13)
    pm1 = metrics.mean_average_precision(q, r, ql, rl, per_query=True)
    np.testing.assert_array_equal(metrics.mean_average_precision((q > 0).astype(np.uint8), r > 0, ql, rl, per_query=True), pm1)


def test_hamming_distance_counts_the_differing_bits():
    q, r, _, _ = random_problem(13, bits=37)
    distance = metrics.hamming_distance(metrics.as_pm1(q), metrics.as_pm1((r > 0).astype(np.uint8)))
    assert distance.dtype == torch.int32 and distance.shape == (25, 300)
    np.testing.assert_array_equal(distance.numpy(), (q[:, None, :] != r[None, :, :]).sum(-1))


CODE_VALUE_SETS = [(1,), (-1,), (0,), (0, 1), (-1, 1), (-1, 0), (-1, 0, 1), (0.5, 1), (-1, 2), (0, 255), (1, 7),
                   (float("nan"), 1), (float("inf"), -1), (1, 0, 0.25)]


@pytest.mark.parametrize("values, dtype", [
    (values, dtype) for values in CODE_VALUE_SETS for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.int64, torch.int8, torch.uint8, torch.uint32)
    if dtype.is_floating_point or all(float(v).is_integer() and (v >= 0 or dtype.is_signed) for v in values)])
def test_as_pm1_accepts_exactly_the_documented_value_sets(values, dtype):
    # The rule, stated on Python sets: ±1 if every entry is ±1, else 0/1 if every entry is 0 or 1
    # (so all-ones reads as ±1), else a sign(0) error if within {-1, 0, 1}, else a bad-value error.
    codes = torch.tensor([values[i % len(values)] for i in range(12)], dtype=torch.float64).reshape(3, 4).to(dtype)
    seen = set(codes.flatten().tolist())
    if seen <= {-1, 1}:
        assert torch.equal(metrics.as_pm1(codes), codes.to(torch.float32))
    elif seen <= {0, 1}:
        assert torch.equal(metrics.as_pm1(codes), codes.to(torch.float32) * 2 - 1)
    elif seen <= {-1, 0, 1}:
        with pytest.raises(ValueError, match=r"codes mixes -1, 0 and \+1"):
            metrics.as_pm1(codes)
    else:
        with pytest.raises(ValueError, match=r"codes must contain only ±1 \(or only 0/1\) values, found e.g. \[[^\]]"):
            metrics.as_pm1(codes)


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (lambda a: {**a, "retrieval_codes": a["retrieval_codes"][:, :3]}, r"query_codes have 6 bits but retrieval_codes have 3"),
    (lambda a: {**a, "query_codes": a["query_codes"] * 2}, r"query_codes must contain only ±1 \(or only 0/1\)"),
    (lambda a: {**a, "query_codes": a["query_codes"][:0]}, r"query_codes must be a non-empty 2-D"),
    (lambda a: {**a, "retrieval_codes": a["retrieval_codes"][0]}, r"retrieval_codes must be a non-empty 2-D"),
    (lambda a: {**a, "query_labels": a["query_labels"][:4]}, r"query_labels has 4 rows but query_codes has 25"),
    (lambda a: {**a, "retrieval_labels": a["retrieval_labels"][:, :2]}, r"query_labels have 5 label columns but retrieval_labels have 2"),
    (lambda a: {**a, "retrieval_labels": -a["retrieval_labels"] - 1}, r"retrieval_labels must be non-negative"),
    (lambda a: {**a, "query_labels": np.where(a["query_labels"] > 0, np.nan, 0)}, r"query_labels must be non-negative.*non-finite"),
    (lambda a: {**a, "retrieval_labels": np.where(a["retrieval_labels"] > 0, np.inf, 0)}, r"retrieval_labels must be non-negative.*non-finite"),
    (lambda a: {**a, "query_labels": a["query_labels"][:, 0]}, r"both be multi-hot \(2-D\) or both ids \(1-D\)"),
    (lambda a: {**a, "ties": "random"}, r"ties must be 'stable' or 'tie-aware'"),
    (lambda a: {**a, "chunk_size": 0}, r"chunk_size must be a positive integer"),
])
def test_bad_input_gets_a_clear_error(change, message):
    q, r, ql, rl = random_problem(14)
    args = change({"query_codes": q, "retrieval_codes": r, "query_labels": ql, "retrieval_labels": rl})
    with pytest.raises(ValueError, match=message):
        metrics.mean_average_precision(**args)


def test_bad_cutoffs_get_a_clear_error():
    problem = random_problem(15)
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.300"):
        metrics.mean_average_precision_at_k(*problem, 301)
    with pytest.raises(ValueError, match=r"variant must be one of"):
        metrics.mean_average_precision_at_k(*problem, 10, variant="deephash")
    with pytest.raises(ValueError, match=r"radius must be an integer in 0\.\.6"):
        metrics.precision_within_radius(*problem, 7)
    with pytest.raises(ValueError, match=r"each k must be an integer in 1\.\.300"):
        metrics.precision_at_k(*problem, [0])


# ---- cosine ranking and Recall@K --------------------------------------------------------------
def test_cosine_ranking_equals_stable_numpy_ranking_with_index_ties():
    rng = np.random.default_rng(16)
    q = rng.normal(size=(8, 5)).astype(np.float32)
    r = rng.normal(size=(60, 5)).astype(np.float32)
    r[30:40] = r[3]  # exact ties in similarity, broken by database index
    ql, rl = (rng.random((8, 3)) < 0.4).astype(np.float32), (rng.random((60, 3)) < 0.4).astype(np.float32)
    similarity = torch.nn.functional.normalize(torch.from_numpy(q), dim=1) @ torch.nn.functional.normalize(torch.from_numpy(r), dim=1).T
    expected = []
    for i in range(len(q)):
        ranked = ((rl @ ql[i]) > 0)[np.argsort(-similarity[i].numpy(), kind="stable")]
        hits = np.flatnonzero(ranked) + 1.0
        expected.append(np.mean(np.arange(1, len(hits) + 1) / hits) if len(hits) else 0.0)
    got = metrics.mean_average_precision(q, r, ql, rl, metric="cosine", per_query=True).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)


def test_paired_recall_hand_example():
    # 3 images, 2 captions each (ids 0,0,1,1,2,2), 2-bit codes.
    images = np.array([[1, 1], [-1, -1], [1, -1]], dtype=np.float32)
    texts = np.array([[1, 1], [-1, 1], [1, 1], [-1, -1], [-1, 1], [-1, 1]], dtype=np.float32)
    image_ids, text_ids = np.arange(3), np.array([0, 0, 1, 1, 2, 2])
    # i2t: image 0 -> text 0 at distance 0, first in index order: rank 1.
    #      image 1 -> distances 2,1,2,0,1,1: text 3 (its caption) at 0: rank 1.
    #      image 2 [1,-1] -> distances 1,2,1,1,2,2: its captions 4,5 at 2; 3 items closer (0,2,3),
    #      then text 1 (d=2, index 1) before text 4: rank 5.
    # t2i: each text ranks 3 images; text 0 [1,1] -> image 0 at 0: rank 1. text 1 [-1,1] ->
    #      distances 1,1,2 -> image 0 first: rank 1. text 2 [1,1] wants image 1 (d=2): rank 3.
    #      text 3 [-1,-1] -> image 1 at 0: rank 1. texts 4, 5 [-1,1] want image 2 (d=2): rank 3.
    out = metrics.paired_recall(images, texts, image_ids, text_ids, ks=(1, 5))
    assert out["i2t_r1"] == pytest.approx(2 / 3) and out["i2t_r5"] == pytest.approx(1.0)
    assert out["t2i_r1"] == pytest.approx(3 / 6) and out["t2i_r5"] == pytest.approx(1.0)
    assert out["rsum"] == pytest.approx(2 / 3 + 1 + 1 / 2 + 1)
    assert metrics.recall_at_k(images, texts, image_ids, text_ids, ks=(4,))[4] == pytest.approx(2 / 3)


def test_recall_at_k_cosine_against_brute_force():
    rng = np.random.default_rng(17)
    images = rng.normal(size=(20, 8)).astype(np.float32)
    text_ids = np.repeat(np.arange(20), 5)
    texts = images[text_ids] + rng.normal(scale=1.2, size=(100, 8)).astype(np.float32)
    got = metrics.recall_at_k(texts, images, text_ids, np.arange(20), ks=(1, 5, 10), metric="cosine")
    sim = (texts / np.linalg.norm(texts, axis=1, keepdims=True)) @ (images / np.linalg.norm(images, axis=1, keepdims=True)).T
    rank = np.array([np.flatnonzero(np.argsort(-sim[i], kind="stable") == text_ids[i])[0] + 1 for i in range(100)])
    assert got == pytest.approx({k: float(np.mean(rank <= k)) for k in (1, 5, 10)})


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_numbers():
    problem = [torch.from_numpy(x) for x in random_problem(18, n_retrieval=2000, bits=16)]
    # The CUDA (torch) backend against the CPU default (the counting kernel where numba is
    # installed): the same integers, so the same floats to the last bit.
    cpu = metrics.evaluate_hashing_per_query(*problem, map_ks=(50,), precision_ks=(10,))
    cuda = metrics.evaluate_hashing_per_query(*[x.cuda() for x in problem], map_ks=(50,), precision_ks=(10,))
    assert cuda.keys() == cpu.keys()
    for key in cpu:
        assert cuda[key].device.type == "cuda"
        np.testing.assert_array_equal(cuda[key].cpu().numpy(), cpu[key].numpy(), err_msg=key)
    assert metrics.evaluate_hashing(*[x.cuda() for x in problem], map_ks=(50,), precision_ks=(10,), block_size=100) == \
        pytest.approx(metrics.evaluate_hashing(*problem, map_ks=(50,), precision_ks=(10,)), abs=0, nan_ok=True)
    cosine = [torch.randn(20, 8), torch.randn(500, 8), problem[2][:20], problem[3][:500]]
    assert float(metrics.mean_average_precision(*[x.cuda() for x in cosine], metric="cosine")) == \
        pytest.approx(float(metrics.mean_average_precision(*cosine, metric="cosine")), abs=1e-12)
