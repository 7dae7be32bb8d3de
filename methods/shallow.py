"""Shared pieces of the classic (shallow) cross-modal hashing baselines: CCA, CCA-ITQ, CMFH, SCM, SePH.

What they have in common:
- an optional RBF kernel map on anchors drawn from the training items (random, or k-means
  centres), the map most shallow cross-modal hashing code applies before a linear model;
- centring on the training mean (kept inside the encoder);
- linear projections to K real values whose signs are the codes (`ProjectionEncoder`);
- the linear algebra: ridge-regularised scatter matrices, CCA by whitening + SVD, the top singular
  pairs of a low-rank cross matrix (SCM's semantic correlation), the ITQ rotation.

Everything is computed in float64 numpy on the CPU (the inputs are float32); codes are returned
as ±1 int8 torch tensors with sign(0) = +1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
import scipy.linalg
import torch

from .base import MODALITIES, Encoder, HashingMethod, Modality, sign_codes

KernelKind = Literal["none", "rbf"]
AnchorKind = Literal["random", "kmeans"]


# --------------------------------------------------------------------------------------------
# Kernel feature map


@dataclass(frozen=True)
class KernelOptions:
    """Config fields shared by the methods that may map features through an RBF kernel first.

    Defaults follow the kernel map of KSH (Liu et al., CVPR 2012, KSH_demo.m) that later shallow
    cross-modal code copies (e.g. SCRATCH Kernelize.m, BATCH Kernel_Feature.m): 500 anchors drawn
    at random from the training items, phi(x) = exp(-|x - a|^2 / (2 s)) with s the mean squared
    distance from the training items to the anchors (`sigma = mean(mean(KTrain, 2))` on squared
    distances), then centred on the training mean. A method's Config subclasses this and overrides
    the defaults its own paper uses.
    """

    kernel: KernelKind = "none"     # "rbf": map each modality through the anchor kernel first
    n_anchors: int = 500            # KSH_demo.m m = 300; SCRATCH Kernelize.m / SePH n_anchors = 500
    anchors: AnchorKind = "random"  # KSH_demo.m / Kernelize.m: randsample of training items
    kernel_width: float = 1.0       # multiplies the bandwidth s (1 = the codes' rule above)


def squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the (len(x), len(y)) squared Euclidean distances, clipped at 0 (float64)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d, 0.0)


def mean_pairwise_squared_distance(x: np.ndarray) -> float:
    """Return the mean of |x_i - x_j|^2 over all n^2 ordered pairs (diagonal included), as
    SePH's demo computes it from the full n x n matrix, here from 2 (mean |x|^2 - |mean x|^2)
    without forming that matrix."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(0)
    return float(2.0 * ((x * x).sum(1).mean() - mean @ mean))


def kmeans_centres(x: np.ndarray, k: int, rng: np.random.Generator, max_iter: int = 100) -> np.ndarray:
    """Return k centres from batch Lloyd iterations (MATLAB kmeans(..., 'Start', 'sample',
    'EmptyAction', 'singleton', 'OnlinePhase', 'off', MaxIter 100), as SePH_km uses): start from
    k distinct training points, stop when no assignment changes; an emptied cluster is moved to
    the point farthest from its current centre."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 0 < k <= n:
        raise ValueError(f"k-means: need 0 < k <= n items, got k={k}, n={n}")
    centres = x[rng.choice(n, size=k, replace=False)].copy()
    assign = None
    for _ in range(max_iter):
        dist = squared_distances(x, centres)
        new = dist.argmin(1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
        nearest = dist[np.arange(n), assign]
        for c in np.flatnonzero(~filled):
            far = int(nearest.argmax())
            centres[c] = x[far]
            nearest[far] = -1.0
    return centres


def choose_anchors(x: np.ndarray, n_anchors: int, kind: AnchorKind, rng: np.random.Generator) -> np.ndarray:
    """Return (n_anchors, d) anchors: distinct training rows at random, or k-means centres."""
    n = len(x)
    if isinstance(n_anchors, bool) or not isinstance(n_anchors, (int, np.integer)) or n_anchors <= 0:
        raise ValueError(f"n_anchors must be a positive integer, got {n_anchors!r}")
    if n_anchors > n:
        raise ValueError(f"n_anchors={n_anchors} exceeds the {n} training items to draw anchors from")
    if kind == "random":
        return np.asarray(x, dtype=np.float64)[rng.choice(n, size=n_anchors, replace=False)]
    if kind == "kmeans":
        return kmeans_centres(x, n_anchors, rng)
    raise ValueError(f"anchors must be 'random' or 'kmeans', got {kind!r}")


class FeatureMap:
    """x -> [exp(-gamma |x - a_j|^2) over anchors a_j] -> minus a fixed mean.

    With no anchors the map is the identity; with no mean nothing is subtracted."""

    def __init__(self, anchors: np.ndarray | None = None, gamma: float | None = None, mean: np.ndarray | None = None):
        self.anchors = None if anchors is None else np.asarray(anchors, dtype=np.float64)
        self.gamma = gamma
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)

    @property
    def kernel(self) -> bool:
        return self.anchors is not None

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Return the kernel features (or x itself) as float64, before centring."""
        x = np.asarray(x, dtype=np.float64)
        if self.anchors is None:
            return x
        return np.exp(-self.gamma * squared_distances(x, self.anchors))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Return the mapped, centred features (float64)."""
        z = self.raw(x)
        return z - self.mean if self.mean is not None else z

    def with_mean_of(self, x_train: np.ndarray) -> "FeatureMap":
        """Return the same map centred on the mean of the mapped training rows."""
        return FeatureMap(self.anchors, self.gamma, self.raw(x_train).mean(0))


def rbf_map(x_train: np.ndarray, options: KernelOptions, rng: np.random.Generator, *, center: bool = True) -> FeatureMap:
    """Return the KSH-style anchor map fitted on x_train (see KernelOptions), or a centring map
    when options.kernel == 'none'. The bandwidth is 2 s, s = kernel_width x the mean squared
    distance from the training rows to the anchors."""
    if options.kernel == "none":
        fmap = FeatureMap()
    elif options.kernel == "rbf":
        if not options.kernel_width > 0:
            raise ValueError(f"kernel_width must be > 0, got {options.kernel_width!r}")
        anchors = choose_anchors(x_train, options.n_anchors, options.anchors, rng)
        s = options.kernel_width * float(squared_distances(x_train, anchors).mean())
        fmap = FeatureMap(anchors, 1.0 / (2.0 * max(s, np.finfo(np.float64).tiny)))
    else:
        raise ValueError(f"kernel must be 'none' or 'rbf', got {options.kernel!r}")
    return fmap.with_mean_of(x_train) if center else fmap


def modality_maps(train, options: KernelOptions, seed: int, *, center: bool = True) -> dict[str, FeatureMap]:
    """Return {modality: rbf_map fitted on train's features}, anchors drawn from stream 0 of the
    seed (image first, then text)."""
    rng = rng_for(seed)
    return {m: rbf_map(getattr(train, m), options, rng, center=center) for m in MODALITIES}


class RidgeTuned(HashingMethod):
    """Base of the closed-form methods (CCA, CCA-ITQ, SCM) whose one free setting is the ridge
    `reg` on the scatter matrices: the papers tune nothing else, so that is what Optuna gets.

    The range reaches 10 x the mean eigenvalue: on the 9,000 x (4,096 + 1,386)-d synthetic
    MIRFlickr set CCA's held-out correlations only matched the training ones near reg = 1
    (measured: training rho_1 0.92 vs validation 0.33 at 1e-6; 0.73 vs 0.73 at 1)."""

    @classmethod
    def search_space(cls, trial):
        """Return overrides drawn from an Optuna trial: the relative ridge on the scatter matrices."""
        return {"reg": trial.suggest_float("reg", 1e-8, 10.0, log=True)}


def note_underdetermined(ctx, method: str, n: int, dims: Mapping[str, int]) -> None:
    """Log when a modality has at least as many (mapped) dimensions as training items: a nearly
    unregularised linear map can then fit any target on the training items and need not
    generalise (seen on synthetic MIRFlickr: 4,096-d images, 2,700 training items)."""
    wide = {m: d for m, d in dims.items() if d >= n}
    if wide:
        ctx.log(f"{method}: {', '.join(f'{m} {d}-d' for m, d in wide.items())} >= {n} training items; "
                "with a small ridge the linear map can interpolate the training targets (consider kernel='rbf')")


# --------------------------------------------------------------------------------------------
# The encoder: K linear functions of mapped features, codes are their signs


class ProjectionEncoder(Encoder):
    """Codes sign(map_m(x) W_m) per modality m; embed() returns map_m(x) E_m when real_valued,
    E = `embed_weights` (default: W)."""

    def __init__(self, bits: int, maps: Mapping[str, FeatureMap], weights: Mapping[str, np.ndarray],
                 *, real_valued: bool = False, batch_size: int = 4096,
                 embed_weights: Mapping[str, np.ndarray] | None = None):
        for m in MODALITIES:
            w = np.asarray(weights[m])
            if w.ndim != 2 or w.shape[1] != bits:
                raise ValueError(f"{m} projection has shape {w.shape}, expected (d, {bits})")
        self.bits = bits
        self.maps = dict(maps)
        self.weights = {m: np.asarray(weights[m], dtype=np.float64) for m in MODALITIES}
        self.real_valued = real_valued
        self.batch_size = batch_size
        self.embed_weights = {m: np.asarray(w, dtype=np.float64) for m, w in (embed_weights or self.weights).items()}

    def project(self, modality: Modality, features: np.ndarray, weights: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Return the (n, width) float64 projections map(x) W (W: the code weights unless given),
        computed in row batches."""
        fmap, w = self.maps[modality], (weights or self.weights)[modality]
        features = np.asarray(features)
        out = np.empty((len(features), w.shape[1]))
        for i in range(0, len(features), self.batch_size):
            out[i: i + self.batch_size] = fmap(features[i: i + self.batch_size]) @ w
        return out

    def encode(self, modality, features):  # type: ignore[override]
        """Return (n, bits) int8 codes in {-1, +1} (sign(0) = +1) on the CPU."""
        return sign_codes(torch.from_numpy(self.project(modality, features)))

    def embed(self, modality, features):  # type: ignore[override]
        """Return the float32 projections for cosine ranking (real-valued methods), else None."""
        if not self.real_valued:
            return None
        return torch.from_numpy(self.project(modality, features, self.embed_weights).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Linear algebra


def numerical_rank(x: np.ndarray, cap: int | None = None,
                   input_eps: float = float(np.finfo(np.float32).eps)) -> int:
    """Return min(rank(x), cap): the count of singular values above s_max * max(n, d) * input_eps.

    input_eps is the precision the data came in at (float32 by default: every Split holds
    float32 features), so a direction that is zero up to float32 rounding, e.g. the sum of LDA
    proportions after centring, does not count. With a cap below the width, the rank is read
    off x G for a fixed Gaussian d x cap matrix G: rank(x G) = min(rank(x), cap) almost surely,
    at O(n d cap) instead of an O(n d^2) SVD of a 4096-d image matrix."""
    x = np.asarray(x, dtype=np.float64)
    if cap is not None and cap < x.shape[1]:
        x = x @ np.random.default_rng(0).standard_normal((x.shape[1], cap))
    s = np.linalg.svd(x, compute_uv=False)
    if s.size == 0 or s[0] == 0:
        return 0
    return int((s > s[0] * max(x.shape) * input_eps).sum())


def scatter(x: np.ndarray, reg: float) -> np.ndarray:
    """Return x^T x + reg * (trace(x^T x) / d) I: the scatter matrix with a ridge relative to its
    mean eigenvalue.

    The sources add an absolute ridge to the unnormalised scatter (SCM's trainSCM_seq.m 1e-6,
    ITQ's CCA 1e-4), sized for their features; relative to the mean eigenvalue the same numbers
    stay as small as intended whatever scale the runner's preprocessing (none / l2 / zscore)
    leaves, and CCA's solution becomes invariant to a global rescaling of either modality."""
    c = x.T @ x
    c[np.diag_indices_from(c)] += reg * max(float(np.trace(c)) / c.shape[0], np.finfo(np.float64).tiny)
    return c


def _sign_fix(wx: np.ndarray, wy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip each (wx_k, wy_k) pair jointly so wx_k's largest-magnitude entry is positive: the
    solvers' sign is arbitrary, a fixed rule makes codes reproducible across LAPACK builds."""
    flip = np.sign(wx[np.abs(wx).argmax(0), np.arange(wx.shape[1])])
    flip[flip == 0] = 1.0
    return wx * flip, wy * flip


def cholesky_pair(cxx: np.ndarray, cyy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the lower Cholesky factors (Lx, Ly) of Cxx = Lx Lx^T and Cyy = Ly Ly^T."""
    return scipy.linalg.cholesky(cxx, lower=True), scipy.linalg.cholesky(cyy, lower=True)


def whiten(lower: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Return L^{-1} m for a lower-triangular L."""
    return scipy.linalg.solve_triangular(lower, m, lower=True)


def top_pairs(m: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the top-k singular triplets (U, s, V) of a dense m, from the top-k eigenpairs of
    the smaller Gram matrix (a 4096 x 1386 SVD takes ~14 s on 2 cores, this ~1 s); accurate for
    singular values well above sqrt(eps) s_max, the only ones the callers keep."""
    flip = m.shape[1] > m.shape[0]
    if flip:
        m = m.T
    d = m.shape[1]
    vals, v = scipy.linalg.eigh(m.T @ m, subset_by_index=[d - k, d - 1])
    vals, v = vals[::-1], v[:, ::-1]
    s = np.sqrt(np.maximum(vals, 0.0))
    u = m @ v / np.where(s > 0, s, 1.0)
    return (v, s, u) if flip else (u, s, v)


def top_pairs_of_product(fa: np.ndarray, fb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the top-k singular triplets (U, s, V) of the matrix fa fb^T without forming it:
    thin QR of both factors, SVD of the small core R_a R_b^T."""
    qa, ra = np.linalg.qr(fa)
    qb, rb = np.linalg.qr(fb)
    u, s, vt = np.linalg.svd(ra @ rb.T)
    return qa @ u[:, :k], s[:k], qb @ vt[:k].T


def back_to_directions(lx: np.ndarray, ly: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (Wx, Wy) = (Lx^{-T} U, Ly^{-T} V), sign-fixed: directions with Wx^T Cxx Wx = I."""
    wx = scipy.linalg.solve_triangular(lx, u, lower=True, trans="T")
    wy = scipy.linalg.solve_triangular(ly, v, lower=True, trans="T")
    return _sign_fix(wx, wy)


def cca(x: np.ndarray, y: np.ndarray, k: int, reg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (Wx, Wy, rho): the top-k canonical directions of centred x, y and their canonical
    correlations, with Cxx = scatter(x, reg), Cyy likewise, Wx^T Cxx Wx = Wy^T Cyy Wy = I.

    Same problem as the generalised eigenproblem Cxy Cyy^{-1} Cyx w = rho^2 Cxx w that
    trainCCA.m solves with eig(); here by whitening (Cholesky) and one SVD of the whitened
    cross-covariance Lx^{-1} Cxy Ly^{-T}, which avoids the d x d eig of the larger modality."""
    lx, ly = cholesky_pair(scatter(x, reg), scatter(y, reg))
    if len(x) >= min(x.shape[1], y.shape[1]):
        # many items: the d_x x d_y cross-covariance is the small object
        u, s, v = top_pairs(whiten(ly, whiten(lx, x.T @ y).T).T, k)
    else:
        # few items: Cxy = x^T y has rank <= n, keep it as a product of two thin factors
        u, s, v = top_pairs_of_product(whiten(lx, x.T), whiten(ly, y.T), k)
    wx, wy = back_to_directions(lx, ly, u, v)
    return wx, wy, s


def check_rank(method: str, bits: int, ranks: Mapping[str, int], what: str, hint: str) -> None:
    """Raise ValueError when `bits` exceeds min(ranks) (ranks counted up to `bits`, e.g. by
    numerical_rank(..., cap=bits)): a linear method never returns fewer or uninformative bits."""
    rank = min(ranks.values())
    if bits > rank:
        parts = ", ".join(f"{name} {r}" if r < bits else f"{name} >= {bits}" for name, r in ranks.items())
        raise ValueError(f"{method}: bits={bits} exceeds {what} ({parts}): only {rank} informative "
                         f"directions exist; {hint}")


def itq_rotation(v: np.ndarray, r0: np.ndarray, iterations: int) -> tuple[np.ndarray, list[float]]:
    """Return (R, losses): ITQ's orthogonal rotation for embeddings v (n, K) from the initial
    orthogonal r0, alternating B = sign(v R) (sign(0) = +1) and R = argmin |B - v R|_F (orthogonal
    Procrustes: v^T B = U S W^T -> R = U W^T); losses[i] = |B - v R|^2 after update i of R
    (Gong & Lazebnik, CVPR 2011, Sec. 2.3; ITQ.m)."""
    r = np.asarray(r0, dtype=np.float64)
    losses = []
    for _ in range(iterations):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ b)
        r = u @ wt
        losses.append(float(((b - v @ r) ** 2).sum()))
    return r, losses


def random_rotation(k: int, rng: np.random.Generator) -> np.ndarray:
    """Return a random K x K orthogonal matrix: the left singular vectors of a Gaussian matrix
    (ITQ.m: R = randn(bit, bit); [U11 S2 V2] = svd(R); R = U11)."""
    u, _, _ = np.linalg.svd(rng.standard_normal((k, k)))
    return u


def ridge_solve(a: np.ndarray, b: np.ndarray, reg: float) -> np.ndarray:
    """Return (a + reg I)^{-1} b for symmetric positive (semi)definite a, by Cholesky."""
    m = a.copy()
    m[np.diag_indices_from(m)] += reg
    return scipy.linalg.cho_solve(scipy.linalg.cho_factor(m, lower=True), b)


def normalized_labels(labels: np.ndarray) -> np.ndarray:
    """Return the label rows scaled to unit L2 norm (SCM's L-tilde; SePH's cosine affinity)."""
    lab = np.asarray(labels, dtype=np.float64)
    norm = np.linalg.norm(lab, axis=1, keepdims=True)
    return lab / np.where(norm > 0, norm, 1.0)


def rng_for(seed: int, stream: int = 0) -> np.random.Generator:
    """Return the numpy Generator for one kind of random choice of a fit (anchors: stream 0,
    initialisations: later streams), seeded by (seed, stream): same seed, same draws, and the
    draws of one stream do not shift when another stream draws more or less."""
    return np.random.default_rng([int(seed), int(stream)])
