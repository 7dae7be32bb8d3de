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
from metrics import fused
from metrics import reference as ref

# Stable Hamming mAP has two CPU implementations (torch sort, fused numba kernel): test both.
BACKENDS = ["torch", pytest.param("fused", marks=pytest.mark.skipif(not fused.available(), reason="numba not installed"))]


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
    tie = metrics.mean_average_precision(*HAND, per_query=True, ties="tie-aware")
    assert tie.tolist() == pytest.approx([29 / 45, 0.0, 9 / 40], abs=1e-15)


def test_hand_example_map_at_k_variants():
    # k = 3. q0's top 3: r1 N, r4 R, r0 R -> precisions at hits 1/2, 2/3, sum 7/6, 2 hits, R = 3.
    # q1: no relevant item. q2: top 3 = r2, r0, r3, no hit (its one relevant item is 4th).
    def at_k(k, variant):
        return metrics.mean_average_precision_at_k(*HAND, k, variant=variant, per_query=True).tolist()

    assert at_k(3, "topk") == pytest.approx([7 / 12, 0, 0], abs=1e-15)  # (7/6) / 2 hits
    assert at_k(3, "trec") == pytest.approx([7 / 18, 0, 0], abs=1e-15)  # (7/6) / R=3
    hashnet = at_k(3, "hashnet")  # queries without a hit in the top 3 are dropped
    assert hashnet[0] == pytest.approx(7 / 12, abs=1e-15) and math.isnan(hashnet[1]) and math.isnan(hashnet[2])
    mean_hashnet = float(metrics.mean_average_precision_at_k(*HAND, 3, variant="hashnet"))
    assert mean_hashnet == pytest.approx(7 / 12, abs=1e-15)  # vs topk mean 7/36
    # calc_map_k, k = 2: the first min(2, R) relevant items wherever they rank:
    # q0 positions 2, 3 -> (1/2 + 2/3) / 2 = 7/12; q1 -> 0; q2 position 4 -> 1/4 (topk@2 gives 0).
    assert at_k(2, "calc_map_k") == pytest.approx([7 / 12, 0, 1 / 4], abs=1e-15)
    assert at_k(2, "topk") == pytest.approx([1 / 2, 0, 0], abs=1e-15)  # q0 top 2: r1 N, r4 R


def test_hand_example_precision_radius_and_pr():
    # P@1: r1 (N), none, r2 (N) -> 0. P@3: q0 2/3, others 0 -> 2/9.
    assert metrics.precision_at_k(*HAND, [1, 3]).tolist() == pytest.approx([0, 2 / 9], abs=1e-15)
    # radius 1: q0 ball {r1,r4,r0,r3} 2 relevant -> 1/2; q1 same ball, 0 relevant; q2 {r2,r0,r3} -> 0.
    assert float(metrics.precision_within_radius(*HAND, 1)) == pytest.approx(1 / 6, abs=1e-15)
    # radius 0, micro: pairs within r=0: q0 {r1,r4} 1 rel, q1 {r1,r4} 0, q2 {r2} 0 -> 1/5;
    # recall: 1 of all 3 + 0 + 1 relevant pairs -> 1/4.
    micro = metrics.pr_curve(*HAND, average="micro")
    assert float(micro.precision[0]) == pytest.approx(1 / 5) and float(micro.recall[0]) == pytest.approx(1 / 4)
    # macro at r=0: precision mean(1/2, 0, 0) = 1/6; recall mean(1/3, 0 (R=0), 0) = 1/9.
    macro = metrics.pr_curve(*HAND, average="macro")
    assert float(macro.precision[0]) == pytest.approx(1 / 6) and float(macro.recall[0]) == pytest.approx(1 / 9)
    assert float(micro.recall[-1]) == 1.0 and micro.radius.tolist() == [0, 1, 2]


def test_empty_ball_precision_is_documented_choice():
    q = np.array([[1, 1, 1, 1]], dtype=np.float32)
    r = -np.ones((3, 4), dtype=np.float32)  # all at distance 4: every ball of radius < 4 is empty
    labels = np.ones((1, 1)), np.ones((3, 1))
    assert float(metrics.precision_within_radius(q, r, *labels, 2)) == 0.0
    nan_macro = metrics.pr_curve(q, r, *labels, average="macro", empty_precision=float("nan"))
    assert math.isnan(float(nan_macro.precision[0])) and float(nan_macro.precision[4]) == 1.0
    assert float(metrics.pr_curve(q, r, *labels).precision[0]) == 0.0


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


@pytest.mark.skipif(not fused.available(), reason="numba not installed")
@pytest.mark.parametrize("shape", [
    (25, 300, 6, 5),      # heavy ties; 25 queries: the last group of four is partial
    (4, 1000, 64, 64),    # one code word, one label word: the four-query kernel
    (3, 700, 65, 65),     # two code words and two label words: the general kernel
    (1, 50, 1, 1),        # a single query, a single bit
])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_stable_map_equals_reference(shape, threads):
    n_query, n_retrieval, bits, n_labels = shape
    q, r, ql, rl = random_problem(21, n_query, n_retrieval, bits, n_labels, label_rate=0.05)
    r[10:40] = r[3]  # a block of exact ties
    expected = ref.reference_average_precisions(q, r, ql, rl)
    got = fused.stable_average_precisions(*(torch.from_numpy(x) for x in (q, r, ql, rl)), threads).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


@pytest.mark.skipif(not fused.available(), reason="numba not installed")
def test_fused_from_several_python_threads_at_once():
    from concurrent.futures import ThreadPoolExecutor

    problem = random_problem(22, n_query=40, n_retrieval=3000, bits=32)
    expected = float(metrics.mean_average_precision(*problem, backend="torch"))
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: float(metrics.mean_average_precision(*problem, backend="fused")), range(12)))
    assert got == pytest.approx([expected] * 12, abs=1e-13)


def test_backend_auto_falls_back_and_fused_refuses_what_it_cannot_do():
    problem = random_problem(4)
    torch_tie = metrics.mean_average_precision(*problem, ties="tie-aware", backend="torch")
    assert float(metrics.mean_average_precision(*problem, ties="tie-aware")) == float(torch_tie)  # auto -> torch
    with pytest.raises(ValueError, match="backend='fused' cannot be used: it computes stable-tie Hamming mAP only"):
        metrics.mean_average_precision(*problem, ties="tie-aware", backend="fused")
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


@pytest.mark.skipif(not fused.available() or (os.cpu_count() or 1) < 2,
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
        "from metrics import fused\n" + TINY_PROBLEM +
        "assert not fused.available()\n"
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


@pytest.mark.parametrize("variant", metrics.MAP_AT_K_VARIANTS)
@pytest.mark.parametrize("k", [1, 17, 300])
def test_map_at_k_equals_reference(variant, k):
    problem = random_problem(4)
    expected = ref.reference_average_precisions_at_k(*problem, k, variant)
    got = metrics.mean_average_precision_at_k(*problem, k, variant=variant, per_query=True, chunk_size=6).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)  # NaNs must match too


def test_map_at_k_calc_map_k_with_large_k_is_map_at_all():
    problem = random_problem(5)
    full = metrics.mean_average_precision(*problem, per_query=True)
    np.testing.assert_allclose(metrics.mean_average_precision_at_k(*problem, 300, variant="calc_map_k", per_query=True), full)


def test_tie_aware_equals_reference_formula_and_many_label_words():
    # 70 labels -> three 31-bit words in the relevance bit masks.
    problem = random_problem(6, n_labels=70, label_rate=0.02)
    np.testing.assert_allclose(metrics.mean_average_precision(*problem, per_query=True, ties="tie-aware").numpy(),
                               ref.reference_tie_aware_average_precisions(*problem), rtol=0, atol=1e-12)
    np.testing.assert_allclose(metrics.mean_average_precision(*problem, per_query=True).numpy(),
                               ref.reference_average_precisions(*problem), rtol=0, atol=1e-13)


def test_precision_at_k_and_radius_equal_reference():
    problem = random_problem(7)
    ks = [1, 5, 50, 300]
    np.testing.assert_allclose(metrics.precision_at_k(*problem, ks, chunk_size=4).numpy(),
                               ref.reference_precision_at_k(*problem, ks), rtol=0, atol=1e-13)
    counts = ref.reference_radius_counts(*problem, 2)
    expected = np.where(counts[:, 0] > 0, counts[:, 1] / np.maximum(counts[:, 0], 1), 0.0)
    np.testing.assert_allclose(metrics.precision_within_radius(*problem, 2, per_query=True).numpy(), expected, atol=1e-15)
    micro = metrics.pr_curve(*problem)
    assert float(micro.precision[2]) == pytest.approx(counts[:, 1].sum() / counts[:, 0].sum())
    assert float(micro.recall[2]) == pytest.approx(counts[:, 1].sum() / counts[:, 2].sum())


@pytest.mark.parametrize("chunk_size", [None, 4])  # 4: scratch buffers reused, last chunk shorter
def test_evaluate_hashing_matches_the_single_metric_functions(chunk_size):
    problem = random_problem(8)
    out = metrics.evaluate_hashing(*problem, map_ks=(20, 5000), precision_ks=(10,), radius=2, chunk_size=chunk_size)
    assert "map_at_5000_topk" not in out  # cutoffs beyond the 300-item database are left out
    assert out["map"] == pytest.approx(float(metrics.mean_average_precision(*problem)), abs=1e-13)
    assert out["map_tie_aware"] == pytest.approx(float(metrics.mean_average_precision(*problem, ties="tie-aware")), abs=1e-13)
    for variant in metrics.MAP_AT_K_VARIANTS:
        single = float(metrics.mean_average_precision_at_k(*problem, 20, variant=variant))
        assert out[f"map_at_20_{variant}"] == pytest.approx(single, abs=1e-13)
    assert out["p_at_10"] == pytest.approx(float(metrics.precision_at_k(*problem, [10])[0]), abs=1e-13)
    assert out["p_within_r2"] == pytest.approx(float(metrics.precision_within_radius(*problem, 2)), abs=1e-13)
    assert all(isinstance(v, float) for v in out.values())
    per_query = metrics.evaluate_hashing_per_query(*problem, map_ks=(20,), precision_ks=(10,), chunk_size=chunk_size)
    np.testing.assert_allclose(per_query["map"], ref.reference_average_precisions(*problem), rtol=0, atol=1e-13)
    np.testing.assert_allclose(per_query["map_tie_aware"], ref.reference_tie_aware_average_precisions(*problem), rtol=0, atol=1e-12)


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
    assert metrics.hamming_distance(metrics.as_pm1(q), metrics.as_pm1(r)).dtype == torch.int32


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
    cpu = metrics.evaluate_hashing(*problem, map_ks=(50,), precision_ks=(10,))
    cuda = metrics.evaluate_hashing(*[x.cuda() for x in problem], map_ks=(50,), precision_ks=(10,))
    assert cuda == pytest.approx(cpu, abs=1e-12, nan_ok=True)
    # CUDA's torch sort path against the CPU default (the fused kernel where numba is installed).
    per_query_cuda = metrics.mean_average_precision(*[x.cuda() for x in problem], per_query=True).cpu().numpy()
    np.testing.assert_allclose(per_query_cuda, metrics.mean_average_precision(*problem, per_query=True).numpy(), rtol=0, atol=1e-13)
