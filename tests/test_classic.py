"""Classic (shallow) baselines: CCA, CCA-ITQ, CMFH, SCM-seq / SCM-orth, SePH.

Each numerical test checks the module against an independent reference: a direct generalised
eigenproblem, a literal transcription of the MATLAB loop, the explicit n x n formulation, the
objective's own finite-difference gradient or stationarity conditions, or the measured
Wikipedia numbers.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import scipy.linalg
import torch

import datasets
import methods
from methods.base import FitContext
from methods.cmfh import CMFHSolver
from methods.scm import SCMConfig
from methods.seph import SePHConfig, affinity_distribution, fit_klr, kl_objective, klr_objective, minimize_kl
from methods.shallow import cca, itq_rotation, mean_pairwise_squared_distance, numerical_rank, random_rotation
from runners.scoring import evaluate_encoder

CLASSIC = ("cca", "cca-itq", "cmfh", "scm-seq", "scm-orth", "seph")
FAST = {"seph": {"n_anchors": 100, "max_train": 400}}  # fewer anchors and a subsample (its max_train path) keep these quick


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Run this file's small linear algebra on one BLAS thread: on a shared 2-core machine
    OpenBLAS's spinning worker threads made 300 x 300 solves 10-60x slower (measured)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: only speed depends on it
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def flickr_small():
    """A small MIRFlickr-shaped set (24 labels, multi-label) where n >> d, so CCA is meaningful."""
    return datasets.load("synthetic-mirflickr", n_items=1400, n_query=200, n_train=900, n_validation=50,
                         image_dim=128, text_dim=128, image_noise=0.5, text_noise=0.5)


def centred(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a - a.mean(0)


def relative_ridge(c: np.ndarray, reg: float) -> np.ndarray:
    """The ridge the modules document: reg times the mean eigenvalue (trace / d)."""
    return c + reg * np.trace(c) / len(c) * np.eye(len(c))


def random_ranking_map(data) -> float:
    """Exact expected mAP@all of a random ranking: tie-aware mAP of all-equal codes."""
    class Constant(methods.Encoder):
        bits = 8

        def encode(self, modality, features):
            return torch.ones((len(features), 8), dtype=torch.int8)

    values = evaluate_encoder(Constant(), data, curves=False).values
    return 0.5 * (values["map_tie_aware_i2t"] + values["map_tie_aware_t2i"])


def correlated_pair(rng, n=80, dx=6, dy=5, latent=3):
    """Two centred views sharing a `latent`-d signal (tiny problems for exact references)."""
    z = rng.standard_normal((n, latent))
    x = z @ rng.standard_normal((latent, dx)) + 0.5 * rng.standard_normal((n, dx))
    y = z @ rng.standard_normal((latent, dy)) + 0.5 * rng.standard_normal((n, dy))
    return centred(x), centred(y)


def same_up_to_column_sign(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    signs = np.sign((a * b).sum(0))
    return bool(np.allclose(a, b * signs, atol=atol))


# ---------------------------------------------------------------------------------------------
# CCA


def test_cca_matches_the_generalised_eigenproblem():
    """Directions and correlations equal trainCCA.m's eig(Cxy Cyy^-1 Cyx, Cxx) (scipy eigh here),
    and rho_k equals the sample correlation of the projected pair."""
    rng = np.random.default_rng(0)
    x, y = correlated_pair(rng)
    reg, k = 1e-3, 3
    cxx, cyy = relative_ridge(x.T @ x, reg), relative_ridge(y.T @ y, reg)
    cxy = x.T @ y
    vals, vecs = scipy.linalg.eigh(cxy @ np.linalg.solve(cyy, cxy.T), cxx)
    ref_rho = np.sqrt(vals[::-1][:k])
    ref_wx = vecs[:, ::-1][:, :k]
    ref_wy = np.linalg.solve(cyy, cxy.T @ ref_wx) / ref_rho

    wx, wy, rho = cca(x, y, k, reg)
    np.testing.assert_allclose(rho, ref_rho, rtol=1e-9)
    assert same_up_to_column_sign(wx, ref_wx, 1e-8)
    assert same_up_to_column_sign(wy, ref_wy, 1e-8)
    np.testing.assert_allclose(wx.T @ cxx @ wx, np.eye(k), atol=1e-9)
    # unregularised: rho is the plain correlation of the two projections
    wx0, wy0, rho0 = cca(x, y, k, 0.0)
    sample = [np.corrcoef(x @ wx0[:, i], y @ wy0[:, i])[0, 1] for i in range(k)]
    np.testing.assert_allclose(rho0, sample, rtol=1e-9)


def test_cca_few_items_branch_agrees():
    """n < d takes the thin-factor branch; it must give the same directions as the dense one."""
    rng = np.random.default_rng(1)
    x, y = correlated_pair(rng, n=12, dx=20, dy=15)
    reg = 1e-2
    wx, wy, rho = cca(x, y, 4, reg)
    cxx, cyy = relative_ridge(x.T @ x, reg), relative_ridge(y.T @ y, reg)
    vals, vecs = scipy.linalg.eigh(x.T @ y @ np.linalg.solve(cyy, y.T @ x), cxx)
    ref_rho, ref_wx = np.sqrt(vals[::-1][:4]), vecs[:, ::-1][:, :4]
    np.testing.assert_allclose(rho, ref_rho, rtol=1e-8)
    assert same_up_to_column_sign(wx, ref_wx, 1e-7)
    assert same_up_to_column_sign(wy, np.linalg.solve(cyy, y.T @ x @ ref_wx) / ref_rho, 1e-7)


def test_numerical_rank_of_sum_to_one_topics():
    """LDA-like rows summing to 1 have rank d - 1 after centring (Wikipedia text: 9); the capped
    (random-sketch) count agrees with the exact one below the cap."""
    rng = np.random.default_rng(2)
    topics = rng.dirichlet(np.ones(10), size=300).astype(np.float32)
    assert numerical_rank(centred(topics)) == 9
    assert numerical_rank(centred(topics), cap=5) == 5
    wide = np.hstack([topics, topics[:, :3]])  # duplicated columns add no rank
    assert numerical_rank(centred(wide), cap=12) == 9


def test_cca_refuses_bits_beyond_its_rank_and_the_kernel_lifts_it():
    data = datasets.load("synthetic-wiki", n_items=900, n_query=300, n_train=600, n_validation=50)
    for name, overrides in (("cca", {"beyond_rank": "refuse"}), ("cca-itq", {})):
        with pytest.raises(ValueError, match=r"bits=16 exceeds the CCA rank.*text 9.*kernel='rbf'"):
            methods.create(name, overrides).fit(data.train, 16, FitContext(seed=0))
        enc = methods.create(name, {"kernel": "rbf", "n_anchors": 200}).fit(data.train, 16, FitContext(seed=0))
        assert tuple(enc.encode("text", data.query.text).shape) == (len(data.query), 16)


def test_cca_beyond_its_rank_keeps_the_canonical_space_and_hashes_it_by_random_planes():
    data = datasets.load("synthetic-wiki", n_items=900, n_query=300, n_train=600, n_validation=50)
    nine = methods.create("cca").fit(data.train, 9, FitContext(seed=3))    # all 9 canonical directions
    many = methods.create("cca").fit(data.train, 32, FitContext(seed=3))
    for m in ("image", "text"):
        x = data.query.rows(m)
        np.testing.assert_allclose(many.embed(m, x), nine.embed(m, x), rtol=1e-5, atol=1e-5)  # the published method
        planes = np.random.default_rng([3, 1]).standard_normal((9, 32))  # stream 1 of the seed, drawn independently
        expected = np.where(nine.embed(m, x).numpy().astype(np.float64) @ planes >= 0, 1, -1)
        assert (many.encode(m, x).numpy() == expected).mean() > 0.999  # float32 rounding at the hyperplanes only


# ---------------------------------------------------------------------------------------------
# ITQ


def itq_literal(v: np.ndarray, r: np.ndarray, n_iter: int) -> np.ndarray:
    """ITQ.m transcribed line by line (for iter = 0:n_iter ... end)."""
    for _ in range(n_iter + 1):
        z = v @ r
        ux = -np.ones(z.shape)
        ux[z >= 0] = 1
        c = ux.T @ v
        ub, _, ua_t = np.linalg.svd(c)
        r = ua_t.T @ ub.T
    return r


def test_itq_matches_the_literal_loop_and_never_increases_the_loss():
    rng = np.random.default_rng(3)
    v = rng.standard_normal((200, 6)) * np.array([3.0, 2.0, 1.5, 1.0, 0.7, 0.5])
    r0 = random_rotation(6, rng)
    r, losses = itq_rotation(v, r0, 51)
    np.testing.assert_allclose(r, itq_literal(v, r0, 50), atol=1e-10)
    np.testing.assert_allclose(r.T @ r, np.eye(6), atol=1e-10)
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))
    b0 = np.where(v @ r0 >= 0, 1.0, -1.0)
    assert losses[-1] < ((b0 - v @ r0) ** 2).sum()


def test_cca_itq_is_correlation_scaled_cca_then_the_literal_itq_loop(flickr_small):
    """The fit wires the pieces as documented: CCA directions times rho, one rotation learned by
    ITQ.m's 0:n_iter loop on both modalities' stacked embeddings, from the seed's rotation."""
    from methods.cca import fit_cca_model
    from methods.cca_itq import CCAITQConfig
    from methods.shallow import rng_for
    train, bits, ctx = flickr_small.train, 16, FitContext(seed=3)
    enc = methods.create("cca-itq").fit(train, bits, ctx)
    maps, wx, wy, rho = fit_cca_model(train, bits, CCAITQConfig(), ctx, "cca-itq")
    v = np.vstack([maps["image"](train.image) @ (wx * rho), maps["text"](train.text) @ (wy * rho)])
    r = itq_literal(v, random_rotation(bits, rng_for(3, stream=1)), 50)
    np.testing.assert_allclose(enc.weights["image"], wx * rho @ r, atol=1e-10)
    np.testing.assert_allclose(enc.weights["text"], wy * rho @ r, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# CMFH


def cmfh_objective(x1, x2, s, lam, mu, gamma):
    """Paper eq. 5 (row-sample notation), written out directly."""
    v, u1, u2, p1, p2 = s
    return (lam * np.sum((x1 - v @ u1) ** 2) + (1 - lam) * np.sum((x2 - v @ u2) ** 2)
            + mu * (np.sum((v - x1 @ p1) ** 2) + np.sum((v - x2 @ p2) ** 2))
            + gamma * sum(np.sum(b ** 2) for b in (u1, u2, p1, p2, v)))


def state(solver):
    return [solver.v.copy(), solver.u[0].copy(), solver.u[1].copy(), solver.p[0].copy(), solver.p[1].copy()]


def test_cmfh_each_block_update_never_increases_the_objective():
    rng = np.random.default_rng(4)
    x1, x2 = correlated_pair(rng, n=40, dx=7, dy=5)
    lam, mu, gamma = 0.3, 5.0, 0.5   # far from the defaults so the ratios gamma/lam, gamma/mu matter
    solver = CMFHSolver(x1, x2, 3, lam, mu, gamma, np.random.default_rng(0))
    solver.step_u()
    last = cmfh_objective(x1, x2, state(solver), lam, mu, gamma)
    for _ in range(15):
        for step in (solver.step_u, solver.step_v, solver.step_p):
            step()
            now = cmfh_objective(x1, x2, state(solver), lam, mu, gamma)
            assert now <= last * (1 + 1e-12)
            last = now
        # the cached-trace objective the stopping rule uses equals the direct formula
        np.testing.assert_allclose(solver.objective(), now, rtol=1e-9)


def test_cmfh_converges_to_a_stationary_point():
    """At convergence the finite-difference gradient of the paper's objective vanishes in every
    block (with gamma instead of gamma/lam etc., as solveCMFH.m writes, it would not)."""
    rng = np.random.default_rng(5)
    x1, x2 = correlated_pair(rng, n=30, dx=6, dy=4)
    lam, mu, gamma = 0.3, 5.0, 0.5
    solver = CMFHSolver(x1, x2, 2, lam, mu, gamma, np.random.default_rng(1))
    solver.run(3000, 1e-15)
    s = state(solver)
    scale = np.sqrt(cmfh_objective(x1, x2, s, lam, mu, gamma))
    for block in range(5):
        grad = np.zeros_like(s[block])
        for idx in np.ndindex(grad.shape):
            plus = [b.copy() for b in s]
            minus = [b.copy() for b in s]
            plus[block][idx] += 1e-6
            minus[block][idx] -= 1e-6
            grad[idx] = (cmfh_objective(x1, x2, plus, lam, mu, gamma)
                         - cmfh_objective(x1, x2, minus, lam, mu, gamma)) / 2e-6
        assert np.abs(grad).max() < 1e-5 * scale, f"block {block} not stationary"


# ---------------------------------------------------------------------------------------------
# SCM


def scm_explicit(x, y, labels, bits, reg):
    """SCM with the n x n semantic matrix formed: S = 2 cos(l_i, l_j) - 1, residual R = K S -
    sum of code outer products, per bit the top eigenvector of (X^T R Y) Cyy^-1 (X^T R Y)^T wrt Cxx."""
    lab = labels / np.linalg.norm(labels, axis=1, keepdims=True)
    n = len(x)
    s = np.array([[2.0 * lab[i] @ lab[j] - 1.0 for j in range(n)] for i in range(n)])
    residual = bits * s
    cxx, cyy = relative_ridge(x.T @ x, reg), relative_ridge(y.T @ y, reg)
    codes_x, codes_y = [], []
    for _ in range(bits):
        cxy = x.T @ residual @ y
        vals, vecs = scipy.linalg.eigh(cxy @ np.linalg.solve(cyy, cxy.T), cxx)
        wx = vecs[:, -1]
        wy = np.linalg.solve(cyy, cxy.T @ wx)
        bx, by = np.where(x @ wx >= 0, 1.0, -1.0), np.where(y @ wy >= 0, 1.0, -1.0)
        residual = residual - np.outer(bx, by)
        codes_x.append(bx)
        codes_y.append(by)
    return np.stack(codes_x, 1), np.stack(codes_y, 1)


def tiny_labelled(rng, n=50, dx=6, dy=5, c=4):
    labels = (rng.random((n, c)) < 0.35).astype(np.float32)
    labels[labels.sum(1) == 0, 0] = 1.0
    x = labels @ rng.standard_normal((c, dx)) + 0.8 * rng.standard_normal((n, dx))
    y = labels @ rng.standard_normal((c, dy)) + 0.8 * rng.standard_normal((n, dy))
    return datasets.Split(x.astype(np.float32), y.astype(np.float32), labels)


def test_scm_seq_equals_the_explicit_n_by_n_formulation():
    rng = np.random.default_rng(6)
    train = tiny_labelled(rng)
    bits, reg = 6, SCMConfig().reg
    enc = methods.create("scm-seq").fit(train, bits, FitContext(seed=0))
    ref_x, ref_y = scm_explicit(centred(train.image), centred(train.text), train.labels.astype(np.float64), bits, reg)
    got_x = enc.encode("image", train.image).numpy().astype(np.float64)
    got_y = enc.encode("text", train.text).numpy().astype(np.float64)
    flip = np.sign((got_x * ref_x).sum(0))  # each bit's joint sign is a convention
    np.testing.assert_array_equal(got_x, ref_x * flip)
    np.testing.assert_array_equal(got_y, ref_y * flip)


def test_scm_orth_equals_the_explicit_eigenproblem_and_stops_at_its_rank():
    rng = np.random.default_rng(7)
    train = tiny_labelled(rng, c=4)
    x, y = centred(train.image), centred(train.text)
    lab = train.labels / np.linalg.norm(train.labels, axis=1, keepdims=True)
    s = 2.0 * lab @ lab.T - 1.0
    reg = SCMConfig().reg
    cxx, cyy = relative_ridge(x.T @ x, reg), relative_ridge(y.T @ y, reg)
    cxy = x.T @ s @ y
    _, vecs = scipy.linalg.eigh(cxy @ np.linalg.solve(cyy, cxy.T), cxx)
    ref = np.where(x @ vecs[:, ::-1][:, :3] >= 0, 1, -1)
    got = methods.create("scm-orth").fit(train, 3, FitContext(seed=0)).encode("image", train.image).numpy()
    np.testing.assert_array_equal(got * np.sign((got * ref).sum(0)), ref)
    # X^T S Y has rank <= C = 4 after centring: a 5th direction would carry no semantic correlation
    with pytest.raises(ValueError, match=r"scm-orth: bits=5 exceeds the rank of the semantic.*semantic 4.*scm-seq"):
        methods.create("scm-orth").fit(train, 5, FitContext(seed=0))
    assert methods.create("scm-seq").fit(train, 8, FitContext(seed=0)).bits == 8


# ---------------------------------------------------------------------------------------------
# SePH


def seph_objective_literal(labels, h, alpha):
    """SePH's KL(P||Q) + alpha |(|H|-1)|^2 with explicit loops over pairs."""
    n = len(labels)
    cos = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                cos[i, j] = labels[i] @ labels[j] / np.linalg.norm(labels[i]) / np.linalg.norm(labels[j])
    p = cos / cos.sum()
    t = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i != j:
                t[i, j] = 1.0 / (1.0 + 0.25 * np.sum((h[i] - h[j]) ** 2))
    q = t / t.sum()
    kl = sum(p[i, j] * np.log(p[i, j] / q[i, j]) for i in range(n) for j in range(n) if p[i, j] > 0)
    return kl + alpha * np.sum((np.abs(h) - 1.0) ** 2)


def test_seph_objective_and_gradient_match_a_literal_version():
    rng = np.random.default_rng(8)
    labels = (rng.random((10, 3)) < 0.5).astype(np.float64)
    labels[labels.sum(1) == 0, 1] = 1.0
    h = rng.standard_normal((10, 3))
    alpha = 0.07
    cost, grad = kl_objective(affinity_distribution(labels), h, alpha)
    assert cost == pytest.approx(seph_objective_literal(labels, h, alpha), rel=1e-10)
    numeric = np.zeros_like(h)
    for idx in np.ndindex(h.shape):
        e = np.zeros_like(h)
        e[idx] = 1e-6
        numeric[idx] = (seph_objective_literal(labels, h + e, alpha) - seph_objective_literal(labels, h - e, alpha)) / 2e-6
    np.testing.assert_allclose(grad, numeric, atol=1e-7)


def test_seph_descent_lowers_the_kl_objective():
    rng = np.random.default_rng(9)
    labels = np.eye(4)[rng.integers(0, 4, size=60)]
    _, history = minimize_kl(affinity_distribution(labels), 8, SePHConfig(), rng)
    assert min(history[50:]) < 0.25 * history[0]
    assert min(history[-20:]) <= min(history[:50])  # still improving late, not diverged


def test_seph_klr_reaches_a_stationary_point_and_reproduces_training_codes():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((120, 5))
    codes = np.where(x[:, :3] + 0.1 * rng.standard_normal((120, 3)) >= 0, 1.0, -1.0)
    anchors = x[rng.choice(120, 40, replace=False)]
    s = mean_pairwise_squared_distance(x)
    # independent kernel and objective: scipy cdist, the formula written out
    from scipy.spatial.distance import cdist
    feats = np.exp(-cdist(x, anchors, "sqeuclidean") / s)
    gram = np.exp(-cdist(anchors, anchors, "sqeuclidean") / s)
    cfg = SePHConfig(klr_tol=1e-8)
    w, res = fit_klr(feats, gram, codes, cfg)
    assert res.success
    margin = codes * (feats @ w)
    grad = feats.T @ (-codes / (1.0 + np.exp(margin))) + 2.0 * cfg.klr_reg * gram @ w
    assert np.abs(grad).max() < 1e-5
    _, g2 = klr_objective(feats, gram, codes, cfg.klr_reg, w)
    np.testing.assert_allclose(g2, grad, atol=1e-9)
    assert (np.sign(feats @ w) == codes).mean() > 0.97


def test_mean_pairwise_squared_distance_matches_all_pairs():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((30, 4))
    explicit = np.mean([[np.sum((a - b) ** 2) for b in x] for a in x])
    assert mean_pairwise_squared_distance(x) == pytest.approx(explicit, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Every classic method: codes, determinism, retrieval quality, bad input


@pytest.mark.parametrize("name", CLASSIC)
def test_codes_are_pm1_int8_of_exactly_bits_columns_and_seeded(name, flickr_small):
    data = flickr_small
    for bits in ((16,) if name == "scm-orth" else (16, 32, 64)):  # scm-orth: at most C = 24
        enc = methods.create(name, FAST.get(name)).fit(data.train, bits, FitContext(seed=0))
        for modality in ("image", "text"):
            codes = enc.encode(modality, getattr(data.query, modality))
            assert codes.dtype == torch.int8 and tuple(codes.shape) == (len(data.query), bits)
            assert bool(((codes == 1) | (codes == -1)).all())
    again = methods.create(name, FAST.get(name)).fit(data.train, 16, FitContext(seed=0))
    first = methods.create(name, FAST.get(name)).fit(data.train, 16, FitContext(seed=0))
    assert torch.equal(first.encode("image", data.query.image), again.encode("image", data.query.image))
    assert torch.equal(first.encode("text", data.query.text), again.encode("text", data.query.text))
    if name in ("cca-itq", "cmfh", "seph"):  # their initialisations are random: the seed matters
        other = methods.create(name, FAST.get(name)).fit(data.train, 16, FitContext(seed=1))
        assert not torch.equal(first.encode("image", data.query.image), other.encode("image", data.query.image))


@pytest.mark.parametrize("name", CLASSIC)
def test_far_above_random_on_small_synthetic_data(name, flickr_small):
    data = flickr_small
    chance = random_ranking_map(data)
    values = evaluate_encoder(methods.create(name, FAST.get(name)).fit(data.train, 16, FitContext(seed=0)), data,
                              curves=False).values
    assert values["map_i2t"] > chance + 0.05 and values["map_t2i"] > chance + 0.05, (chance, values["map_i2t"], values["map_t2i"])
    if name == "cca":  # real-valued: cosine ranking reported too
        assert values["map_cosine_i2t"] > chance + 0.05


@pytest.mark.parametrize("name", CLASSIC)
def test_bad_bits_are_refused(name, flickr_small):
    for bits in (0, -8, 1.5, True, "16"):
        with pytest.raises(ValueError, match="bits must be a positive integer"):
            methods.create(name).fit(flickr_small.train, bits, FitContext(seed=0))


def test_kernel_options_are_checked(flickr_small):
    with pytest.raises(ValueError, match="n_anchors=5000 exceeds the 850 training items"):
        methods.create("cmfh", {"kernel": "rbf", "n_anchors": 5000}).fit(flickr_small.train, 16, FitContext(seed=0))
    with pytest.raises(ValueError, match="kernel_width must be > 0"):
        methods.create("seph", {"kernel_width": 0.0}).fit(flickr_small.train, 16, FitContext(seed=0))


def test_search_spaces_name_config_fields():
    optuna = pytest.importorskip("optuna")
    for name in CLASSIC:
        cls = methods.get(name)
        trial = optuna.trial.FixedTrial({"reg": 1e-4, "lam": 0.5, "mu": 10.0, "gamma": 1e-3, "alpha": 0.01,
                                         "n_anchors": 300, "kernel_width": 1.0})
        overrides = cls.search_space(trial)
        assert overrides and cls.from_overrides(overrides)  # unknown fields would raise ConfigError


def test_run_identity_covers_the_shared_module():
    from runners.identity import import_closure

    def closure(name):
        return {p.name for p in import_closure([methods.get(name).__module__])}

    for name in CLASSIC:
        assert "shallow.py" in closure(name)
    assert "cca.py" in closure("cca-itq")
    assert "shallow.py" not in closure("dcmh")


# ---------------------------------------------------------------------------------------------
# Real Wikipedia (skips when ../shared/data/wiki is absent)


def test_real_wikipedia(shared_data):
    if not (shared_data / "wiki").is_dir():
        pytest.skip("no wiki folder in the shared data")
    data = datasets.load("wiki", n_validation=217)
    ctx = FitContext(seed=0)
    cca_values = evaluate_encoder(methods.create("cca").fit(data.train, 9, ctx), data, curves=False).values
    # measured with 9 CCA dimensions, cosine, test split as query and database (METHODS.md)
    assert cca_values["map_cosine_i2t"] == pytest.approx(0.244, abs=0.01)
    assert cca_values["map_cosine_t2i"] == pytest.approx(0.195, abs=0.01)
    chance = 0.118  # random ranking on the test split
    for name, over, bits in (("cca-itq", {}, 9), ("cmfh", {}, 16), ("scm-seq", {}, 16),
                             ("seph", {"max_train": 800}, 16)):  # seph subsampled to stay fast
        values = evaluate_encoder(methods.create(name, over).fit(data.train, bits, ctx), data, curves=False).values
        assert values["map_i2t"] > chance + 0.06 and values["map_t2i"] > chance + 0.04, (name, values["map_i2t"], values["map_t2i"])
