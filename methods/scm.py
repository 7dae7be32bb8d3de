"""SCM: semantic correlation maximisation (Zhang & Li, AAAI 2014, "Large-scale supervised multimodal
hashing with semantic correlation maximization").

Semantic similarity S = 2 L~ L~^T - 1 1^T with L~ the label rows scaled to unit norm, i.e.
S_ij = 2 cos(l_i, l_j) - 1 in [-1, 1]. With centred features X (images) and Y (texts), SCM seeks
hash functions sign(X w_x), sign(Y w_y) whose code inner products approximate c S, relaxed to
maximising w_x^T X^T (c S) Y w_y subject to w_x^T Cxx w_x = w_y^T Cyy w_y = 1 (a CCA-like
generalised eigenproblem with the semantic cross matrix in place of X^T Y).

The n x n matrix S is never formed: X^T S Y = 2 (X^T L~)(Y^T L~)^T - (X^T 1)(Y^T 1)^T, a rank <=
C + 1 product of d x (C + 1) factors (the paper's linear-time trick; trainSCM_seq.m `CxyB`).

- "scm-seq" (SCM-seq): bits one at a time. Bit t maximises w_x^T X^T R_t Y w_y with the residual
  R_t = c S - sum_{s<t} sign(X w_x^s) sign(Y w_y^s)^T, c = K (trainSCM_seq.m `Cxy = nDim * CxyB`,
  then `Cxy = Cxy - (X' * vx) * (Y' * vy)'` after each bit); X^T R_t Y stays a product of thin
  factors (one column per learned bit), so each bit is the top singular pair of a small core.
- "scm-orth" (SCM-orth): all K directions at once, the top-K pairs of the same problem with c S
  (trainSCM_orth.m). X^T S Y has rank <= min(C, rank X, rank Y) after centring (X^T 1 = 0), so
  K beyond that rank would only add directions of zero semantic correlation, arbitrary within
  the constraint set; the fit raises an error naming the rank instead (Wikipedia: 9, MIRFlickr's
  24 labels: at most 24). SCM-seq has no such limit.

Settings: Cxx = X^T X + lambda I with lambda = 1e-6 (trainSCM_seq.m), here relative to the mean
eigenvalue of X^T X (shallow.scatter) so it stays as small for z-scored inputs; features centred
on the training mean (demo_SCM.m); linear maps as in the paper (`kernel = "rbf"` optional).

Deviation from trainSCM_seq.m: when a bit's eigenvalue rises above the previous one the MATLAB
code stops and keeps CCA directions for the remaining bits; the sequential algorithm as we know
it from the paper has no such rule (we could not re-read the paper here), and CCA directions are
undefined beyond the CCA rank (9 on Wikipedia), so every bit here is solved from its residual.
Each (w_x, w_y) pair's joint sign is fixed by a rule (largest |w_x| entry positive); flipping a
bit in both modalities changes no Hamming distance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets import Split

from .registry import register
from .base import FitContext, check_bits
from .shallow import (KernelOptions, ProjectionEncoder, RidgeTuned, back_to_directions, check_rank, cholesky_pair, modality_maps,
                      normalized_labels, scatter, top_pairs_of_product, whiten)


@dataclass(frozen=True)
class SCMConfig(KernelOptions):
    reg: float = 1e-6               # trainSCM_seq.m / trainSCM_orth.m: lambda = 1e-6 (relative here)
    orthogonal: bool = False        # False: SCM-seq (trainSCM_seq.m); True: SCM-orth (trainSCM_orth.m)


def semantic_factors(x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (A, B) with A B^T = X^T S Y, S = 2 L~ L~^T - 1 1^T, without the n x n S."""
    lab = normalized_labels(labels)
    ones = np.ones((len(x), 1))
    return np.hstack([x.T @ lab, x.T @ ones]), np.hstack([2.0 * (y.T @ lab), -(y.T @ ones)])


def semantic_rank(singular_values: np.ndarray) -> int:
    """Return the numerical rank of a computed product from its singular values (> sqrt(eps) s_max)."""
    if singular_values.size == 0 or singular_values[0] <= 0:
        return 0
    return int((singular_values > singular_values[0] * np.sqrt(np.finfo(np.float64).eps)).sum())


@register("scm-seq")
class SCMSeq(RidgeTuned):
    """SCM-seq: one closed-form eigenproblem per bit on the residual of the semantic matrix."""

    Config = SCMConfig
    version = "1"

    def fit(self, train: Split, bits: int, ctx: FitContext) -> ProjectionEncoder:
        bits = check_bits(bits)
        cfg: SCMConfig = self.config
        maps = modality_maps(train, cfg, ctx.seed)
        x, y = maps["image"](train.image), maps["text"](train.text)
        lx, ly = cholesky_pair(scatter(x, cfg.reg), scatter(y, cfg.reg))
        a, b = semantic_factors(x, y, train.labels)
        fa, fb = whiten(lx, a), whiten(ly, b)
        if cfg.orthogonal:
            u, s, v = top_pairs_of_product(fa, fb, fa.shape[1])
            check_rank(self.name, bits, {"semantic": semantic_rank(s)},
                       "the rank of the semantic cross-covariance X^T S Y (at most the number of labels)",
                       "use scm-seq, whose bits are not limited by this rank")
            wx, wy = back_to_directions(lx, ly, u[:, :bits], v[:, :bits])
            return ProjectionEncoder(bits, maps, {"image": wx, "text": wy})
        fb = fb * bits  # c = K (trainSCM_seq.m: Cxy = nDim * CxyB)
        wx, wy = np.empty((x.shape[1], bits)), np.empty((y.shape[1], bits))
        for t in range(bits):
            u, _, v = top_pairs_of_product(fa, fb, 1)
            wx_t, wy_t = back_to_directions(lx, ly, u, v)
            wx[:, t], wy[:, t] = wx_t[:, 0], wy_t[:, 0]
            vx = np.where(x @ wx_t >= 0, 1.0, -1.0)
            vy = np.where(y @ wy_t >= 0, 1.0, -1.0)
            # residual: X^T (R - vx vy^T) Y = A B^T - (X^T vx)(Y^T vy)^T, one more column per factor
            fa = np.hstack([fa, whiten(lx, x.T @ vx)])
            fb = np.hstack([fb, -whiten(ly, y.T @ vy)])
        return ProjectionEncoder(bits, maps, {"image": wx, "text": wy})


@dataclass(frozen=True)
class SCMOrthConfig(SCMConfig):
    orthogonal: bool = True         # trainSCM_orth.m


@register("scm-orth")
class SCMOrth(SCMSeq):
    """SCM-orth: the top-K directions of the semantic correlation problem at once (K <= its rank)."""

    Config = SCMOrthConfig
