"""CCA: canonical correlation analysis (Hotelling, Biometrika 1936) as a cross-modal baseline.

The real-valued method of Rasiwasia et al. (ACM MM 2010, "A new approach to cross-modal
multimedia retrieval", the paper that introduced the Wikipedia set): project both modalities on
the top-K canonical directions of the centred training features and rank by normalised
correlation, i.e. cosine in the K-d CCA space. `embed` returns those projections (the runner
reports `map_cosine_*`); `encode` returns their signs, the "CCA" hashing baseline of the
cross-modal hashing tables (e.g. DCMH, CVPR 2017, Table 3: sign of the CCA projections).

Solver: Cxx = X^T X + reg c_x I, Cyy likewise, c the mean eigenvalue of the scatter (the ridge of
trainCCA.m's callers in the SCM code, trainSCM_seq.m / demo_SCM.m, is an absolute 1e-6 on the
unnormalised scatter; relative, it stays as small whatever the input scale), directions with
W^T C W = I from whitening + SVD (methods/shallow.py `cca`): the same solution as trainCCA.m's
eig(Cxy Cyy^-1 Cyx, Cxx), cheaper for 4,096-d inputs.

Bits beyond the rank: only r = min(rank(X), rank(Y)) canonical directions exist (Wikipedia's 10-d
LDA text has rank 9 after centring, its 128-d image histograms rank 127). Then (`beyond_rank =
"simhash"`, the default; ours) the embedding is all r canonical directions, the published
real-valued method unchanged, and the K-bit codes are the signs of a fixed seeded Gaussian
projection of that r-d space (sign random projections, Charikar 2002, which preserve the angles
cosine ranking uses; as `dscmr` gets codes from its 1,024-d space). `beyond_rank = "refuse"`
raises an error naming the rank instead; `kernel = "rbf"` maps both modalities through the
500-anchor RBF kernel first (rank up to 500). The linear map is the default because it is the
published method (Rasiwasia et al. use the raw 128-d / 10-d features).

High-dimensional inputs: with the near-zero default ridge CCA overfits when d_x + d_y is not
small against n. Measured on the full synthetic MIRFlickr (9,000 items, 4,096 + 1,386 dims, 32
bits): training rho_1 0.92 but 0.33 on the validation items, Hamming mAP 0.51 against 0.49 for a
random ranking; reg = 1 gives 0.73 / 0.73 and mAP 0.59 (cosine 0.65). That is the method (CCA is
also near random on MIRFlickr in DCMH's Tables 3-4), and `reg` is what its search space tunes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from datasets import Split

from .registry import register
from .base import FitContext, check_bits
from .shallow import (KernelOptions, ProjectionEncoder, RidgeTuned, cca, check_rank, modality_maps, note_underdetermined,
                      numerical_rank, rng_for)


@dataclass(frozen=True)
class CCAConfig(KernelOptions):
    # trainSCM_seq.m / demo_SCM.m: Cxx = X'X + 1e-6 * eye(dX); here relative to the mean
    # eigenvalue of X'X (shallow.scatter)
    reg: float = 1e-6


@dataclass(frozen=True)
class CCAMethodConfig(CCAConfig):
    # More bits than canonical directions: "simhash" = seeded sign random projections of all
    # of them (ours, see the module docstring); "refuse" = an error naming the rank.
    beyond_rank: Literal["simhash", "refuse"] = "simhash"


def fit_cca_model(train: Split, bits: int, cfg: CCAConfig, ctx: FitContext, method: str, *, at_most_rank: bool = False):
    """Return (maps, Wx, Wy, rho) for the top-`bits` canonical directions of the mapped, centred
    training features; raises ValueError naming the rank when bits exceeds it, unless
    at_most_rank, which returns all min(bits, rank) directions there are."""
    maps = modality_maps(train, cfg, ctx.seed)
    x, y = maps["image"](train.image), maps["text"](train.text)
    note_underdetermined(ctx, method, len(train), {"image": x.shape[1], "text": y.shape[1]})
    ranks = {m: numerical_rank(z, cap=bits) for m, z in (("image", x), ("text", y))}
    hint = ("set kernel='rbf' to map both modalities through the anchor kernel first"
            if cfg.kernel == "none" else "a narrower kernel (kernel_width < 1) gives the smooth RBF features a higher numerical rank")
    k = min(bits, *ranks.values()) if at_most_rank else bits
    check_rank(method, k, ranks, "the CCA rank, the smaller rank of the centred training features", hint)
    wx, wy, rho = cca(x, y, k, cfg.reg)
    return maps, wx, wy, rho


@register("cca")
class CCA(RidgeTuned):
    """CCA projections; embed() for cosine ranking (the published protocol), codes = their signs."""

    Config = CCAMethodConfig
    version = "2"  # 2: bits beyond the rank by sign random projections of the canonical space

    def fit(self, train: Split, bits: int, ctx: FitContext) -> ProjectionEncoder:
        bits = check_bits(bits)
        cfg: CCAMethodConfig = self.config
        maps, wx, wy, _ = fit_cca_model(train, bits, cfg, ctx, self.name, at_most_rank=cfg.beyond_rank == "simhash")
        embedding = {"image": wx, "text": wy}
        if wx.shape[1] == bits:
            return ProjectionEncoder(bits, maps, embedding, real_valued=True)
        ctx.log(f"cca: {wx.shape[1]} canonical directions for {bits} bits; codes are sign random projections of them")
        planes = rng_for(ctx.seed, stream=1).standard_normal((wx.shape[1], bits))
        return ProjectionEncoder(bits, maps, {m: w @ planes for m, w in embedding.items()}, real_valued=True,
                                 embed_weights=embedding)
