"""SePH: semantics-preserving hashing (Lin, Ding, Hu & Wang, CVPR 2015, "Semantics-preserving hashing
for cross-view retrieval").

Stage 1, codes for the training items. Semantic affinities A_ij = cos(l_i, l_j) (demo_SePH.m: label
rows scaled by 1/sqrt(sum), then L L^T; same class for single labels) become a distribution P
over pairs (diagonal 0, symmetrised, normalised to sum 1). Relaxed codes H in R^{n x K} define
Q_ij proportional to (1 + |h_i - h_j|^2 / 4)^-1 (i != j), a Student-t of the Hamming distance
|h_i - h_j|^2 / 4 of ±1 codes. SePH minimises

  KL(P || Q) + alpha / (n K) |(|H| - 1)|_F^2

(minKLD.m, called as minKLD(Model.alpha / bits / tr_num, P, bits) with Model.alpha = 1e-2 in
demo_SePH.m) by minKLD.m's gradient descent, adapted from t-SNE's tsne_p.m: gradient
(diag(rowsum L) - L) H + 2 alpha' (|H| - 1) sign(H) with L = (P - Q) * num, momentum 0.5,
learning rate 500, delta-bar-delta gains (+0.2 / x0.8, floor 0.01), columns re-centred after each
step, 100 iterations, H_0 = 1e-4 N(0, 1); the best iterate is kept. Codes B = sign(H).

Stage 2, hash functions. Per bit and per modality a kernel logistic regression on RBF features of
500 anchors, phi(x) = exp(-|x - a|^2 / s), s = the mean squared distance over all training pairs
(demo_SePH.m kernelMatrix with k.param = mean(z(:))): minimise
sum_i log(1 + exp(-b_ik phi(x_i)^T w)) + C w^T K_0 w, K_0 the anchors' kernel matrix, C = 0.01,
no bias (penalizedKernelL2 + LogisticLoss of minFunc, as demo_SePH.m calls them). Out-of-sample
codes: sign(phi(x)^T w). Anchors: "kmeans" (SePH_km, k-means centres of the training features,
demo_SePH.m sampleType 'km'; the default here) or "random" (SePH_rnd, training items at random).
The K independent problems are solved jointly by one L-BFGS run (their sum is separable, the
optimum the same), preconditioned by the Hessian at w = 0 (fit_klr), up to 500 iterations and
gradient tolerance 1e-5 (minFunc's MaxIter and optTol defaults).

Deviations, on purpose:
- Best iterate: minKLD.m scores an iterate by pairing the previous iterate's Q with the new
  iterate's regulariser; we score every iterate (the initial one included) by its own objective.
- Database codes: the paper combines both modalities' KLR probabilities into one unified code per
  database item; the harness encodes each modality on its own, so each gets sign(phi(x)^T w), as
  DCMH's comparison does (Jiang & Li, CVPR 2017, Sec. 4.2: "we only use one modality for the
  database (retrieval) points"; they also used SePH_rnd, "500 randomly selected points as kernel
  bases by following its authors' suggestion").
- Size: stage 1 holds several n x n matrices (P, Q, the t-kernel), O(n^2) time and memory per
  iteration. Training sets above `max_train` items (default 3,000; ~70 MB per n x n matrix) are
  subsampled at random from the fit's seed for both stages. The project notes say the SePH paper
  subsamples its larger training sets too; we could not retrieve the paper to confirm the size it
  used. At 3,000 a 32-bit fit took 65 s on 2 shared CPU cores under heavy load (load average
  ~10; 9,000-item synthetic MIRFlickr); Wikipedia (<= 2,173 training items) is used whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize

from datasets import Split

from .registry import register
from .base import FitContext, HashingMethod, check_bits
from .shallow import (AnchorKind, FeatureMap, ProjectionEncoder, choose_anchors, mean_pairwise_squared_distance,
                      normalized_labels, rng_for, squared_distances)

TINY = np.finfo(np.float64).tiny  # MATLAB realmin, minKLD.m's floor for P and Q


@dataclass(frozen=True)
class SePHConfig:
    alpha: float = 1e-2             # demo_SePH.m Model.alpha (divided by bits and n in minKLD)
    n_iter: int = 100               # minKLD.m max_iter
    learning_rate: float = 500.0    # minKLD.m epsilon
    momentum: float = 0.5           # minKLD.m momentum
    min_gain: float = 0.01          # minKLD.m min_gain
    init_scale: float = 1e-4        # minKLD.m trainCode = .0001 * randn(n, bit)
    n_anchors: int = 500            # demo_SePH.m kernelSampleNum
    anchors: AnchorKind = "kmeans"  # SePH_km (demo_SePH.m sampleType = 'km'); "random" = SePH_rnd
    kernel_width: float = 1.0       # multiplies s = mean squared pairwise distance (demo_SePH.m k.param)
    klr_reg: float = 0.01           # demo_SePH.m C ("1e-2 is good enough")
    klr_max_iter: int = 500         # minFunc default MaxIter
    klr_tol: float = 1e-5           # minFunc default optTol (max |gradient|)
    max_train: int = 3000           # ours: subsample above this (see module docstring)


def affinity_distribution(labels: np.ndarray) -> np.ndarray:
    """Return P: cosine affinities of the label rows, diagonal 0, symmetrised, summing to 1,
    floored at the smallest positive float (minKLD.m)."""
    lab = normalized_labels(labels)
    p = lab @ lab.T
    np.fill_diagonal(p, 0.0)
    p = 0.5 * (p + p.T)
    return np.maximum(p / p.sum(), TINY)


def t_kernel(h: np.ndarray) -> np.ndarray:
    """Return num_ij = (1 + |h_i - h_j|^2 / 4)^-1 with num_ii = 0 (n x n), in place on one array."""
    num = h @ h.T
    sq = np.diag(num).copy()
    num *= -2.0
    num += sq[:, None]
    num += sq[None, :]
    np.maximum(num, 0.0, out=num)
    num *= 0.25
    num += 1.0
    np.reciprocal(num, out=num)
    np.fill_diagonal(num, 0.0)
    return num


def p_constants(p: np.ndarray) -> tuple[float, float, float]:
    """Return (sum P log P, sum P, trace P): the parts of the KL objective that do not depend on H."""
    return float(np.vdot(p, np.log(p))), float(p.sum()), float(np.trace(p))


def kl_objective(p: np.ndarray, h: np.ndarray, alpha: float,
                 consts: tuple[float, float, float] | None = None) -> tuple[float, np.ndarray]:
    """Return (KL(P||Q) + alpha |(|H| - 1)|^2, its gradient in H) with Q = max(num / sum(num), tiny)
    as minKLD.m; alpha is already divided by n K. consts = p_constants(p) may be passed in.

    Off the diagonal num > 0, so q = num / z exactly there and the floor only sets q_ii = tiny:
    sum P log Q = sum_{i != j} p log num - log z sum_{i != j} p + sum_i p_ii log(tiny)."""
    const, p_sum, diag_p = p_constants(p) if consts is None else consts
    num = t_kernel(h)
    z = float(num.sum())
    np.fill_diagonal(num, 1.0)  # log 1 = 0 on the diagonal for the sum below
    log_num = np.log(num)
    np.fill_diagonal(num, 0.0)
    p_log_q = float(np.vdot(p, log_num)) - np.log(z) * (p_sum - diag_p) + diag_p * np.log(TINY)
    del log_num
    dev = np.abs(h) - 1.0
    cost = const - p_log_q + alpha * float((dev * dev).sum())
    weights = num * (1.0 / z)
    np.subtract(p, weights, out=weights)
    np.fill_diagonal(weights, 0.0)  # p_ii - q_ii times num_ii = 0
    weights *= num
    grad = weights.sum(1)[:, None] * h - weights @ h + 2.0 * alpha * dev * np.sign(h)
    return cost, grad


def minimize_kl(p: np.ndarray, bits: int, cfg: SePHConfig, rng: np.random.Generator) -> tuple[np.ndarray, list[float]]:
    """Return (best relaxed codes H, objective of every iterate) from minKLD.m's descent."""
    n = len(p)
    alpha = cfg.alpha / bits / n
    consts = p_constants(p)
    h = cfg.init_scale * rng.standard_normal((n, bits))
    incs, gains = np.zeros_like(h), np.ones_like(h)
    best_cost, best_h, history = np.inf, h, []
    for _ in range(cfg.n_iter):
        cost, grad = kl_objective(p, h, alpha, consts)
        history.append(cost)
        if cost < best_cost:
            best_cost, best_h = cost, h
        same = np.sign(grad) == np.sign(incs)
        gains = np.maximum(np.where(same, gains * 0.8, gains + 0.2), cfg.min_gain)
        incs = cfg.momentum * incs - cfg.learning_rate * gains * grad
        h = h + incs
        h = h - h.mean(0)
    cost, _ = kl_objective(p, h, alpha, consts)
    history.append(cost)
    if cost < best_cost:
        best_h = h
    return best_h, history


def klr_objective(features: np.ndarray, anchor_gram: np.ndarray, codes: np.ndarray, c: float, w: np.ndarray):
    """Return (sum_ik log(1 + exp(-b_ik f_i^T w_k)) + C sum_k w_k^T K_0 w_k, gradient in W)."""
    margin = codes * (features @ w)
    kw = anchor_gram @ w
    loss = float(np.logaddexp(0.0, -margin).sum()) + c * float((w * kw).sum())
    # d/dmargin log(1 + e^-margin) = -sigmoid(-margin) = -exp(-log(1 + e^margin))
    grad = features.T @ (-codes * np.exp(-np.logaddexp(0.0, margin))) + 2.0 * c * kw
    return loss, grad


def fit_klr(features: np.ndarray, anchor_gram: np.ndarray, codes: np.ndarray, cfg: SePHConfig) -> tuple[np.ndarray, object]:
    """Return (W (m, K), scipy result): per column k the minimiser of the KLR objective
    (klr_objective), all columns in one L-BFGS run.

    The problem is strictly convex (K_0 positive definite), so its minimiser is unique; L-BFGS
    runs in the variables z = R w with R^T R = F^T F / 4 + 2 C K_0, the Hessian at w = 0: with the
    weak C = 0.01 the plain problem is badly conditioned (500 iterations, minFunc's cap, did not
    reach its tolerance on Wikipedia), preconditioned it converges in tens of iterations."""
    m, k = features.shape[1], codes.shape[1]
    hessian0 = 0.25 * (features.T @ features) + 2.0 * cfg.klr_reg * anchor_gram
    hessian0[np.diag_indices_from(hessian0)] += 1e-10 * max(float(np.trace(hessian0)) / m, TINY)
    r = scipy.linalg.cholesky(hessian0, lower=False)

    def objective(flat):
        w = scipy.linalg.solve_triangular(r, flat.reshape(m, k), lower=False)
        loss, grad = klr_objective(features, anchor_gram, codes, cfg.klr_reg, w)
        return loss, scipy.linalg.solve_triangular(r, grad, lower=False, trans="T").ravel()

    res = scipy.optimize.minimize(objective, np.zeros(m * k), jac=True, method="L-BFGS-B",
                                  options={"maxiter": cfg.klr_max_iter, "gtol": cfg.klr_tol, "ftol": 0.0})
    return scipy.linalg.solve_triangular(r, res.x.reshape(m, k), lower=False), res


@register("seph")
class SePH(HashingMethod):
    """SePH: codes by KL-divergence fitting of the label affinities, then kernel logistic regression per bit."""

    Config = SePHConfig
    version = "1"

    @classmethod
    def search_space(cls, trial):
        """Return overrides drawn from an Optuna trial: alpha, the number of anchors and the RBF width."""
        return {
            "alpha": trial.suggest_float("alpha", 1e-4, 1.0, log=True),
            "n_anchors": trial.suggest_int("n_anchors", 100, 1000, log=True),
            "kernel_width": trial.suggest_float("kernel_width", 0.25, 4.0, log=True),
        }

    def fit(self, train: Split, bits: int, ctx: FitContext) -> ProjectionEncoder:
        bits = check_bits(bits)
        cfg: SePHConfig = self.config
        if not cfg.kernel_width > 0:
            raise ValueError(f"seph: kernel_width must be > 0, got {cfg.kernel_width!r}")
        if len(train) > cfg.max_train:
            keep = np.sort(rng_for(ctx.seed, stream=2).choice(len(train), size=cfg.max_train, replace=False))
            ctx.log(f"seph: {len(train)} training items, {cfg.max_train} drawn at random (max_train)")
            train = train.subset(keep)
        h, history = minimize_kl(affinity_distribution(train.labels), bits, cfg, rng_for(ctx.seed, stream=1))
        codes = np.where(h >= 0, 1.0, -1.0)
        ctx.log(f"seph: KL objective {history[0]:.6g} -> {min(history):.6g} in {cfg.n_iter} iterations")
        anchor_rng = rng_for(ctx.seed)
        maps, weights = {}, {}
        for modality in ("image", "text"):
            x = getattr(train, modality)
            anchors = choose_anchors(x, cfg.n_anchors, cfg.anchors, anchor_rng)
            s = cfg.kernel_width * mean_pairwise_squared_distance(x)
            maps[modality] = FeatureMap(anchors, 1.0 / max(s, TINY))
            gram = np.exp(-maps[modality].gamma * squared_distances(anchors, anchors))
            weights[modality], res = fit_klr(maps[modality](x), gram, codes, cfg)
            ctx.log(f"seph: {modality} KLR {res.nit} L-BFGS iterations ({res.message})")
        return ProjectionEncoder(bits, maps, weights)
