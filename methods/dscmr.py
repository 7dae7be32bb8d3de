"""DSCMR: Deep Supervised Cross-Modal Retrieval (Zhen et al., CVPR 2019), on pre-extracted features.

Network (model.py IDCM_NN): per modality Linear + ReLU to 2048, a weight-shared Linear 2048 -> 1024
(common space u, v), a shared linear label predictor 1024 -> C. Loss (train_model.py calc_loss):
  mean ||P u - y|| + mean ||P v - y||
  + alpha * sum over (u,u), (u,v), (v,v) of mean[log(1 + e^theta) - S theta], theta = cos / 2
  + beta * mean ||u - v||.
Differences from the official code: S = 1[labels share one] as in the paper (the code uses the
count y_i . y_j, the same for single-label data); the best state is chosen on the validation
split under the shared stopping rule (methods.training), not on the test set as
train_model.py does; main.py's 500 epochs are the step cap (500 x ceil(n / 100) steps).

Two registered names:
- "dscmr": the published, real-valued method. Encoder.embed returns the common features u / v
  (cosine ranking: the paper's protocol). Encoder.encode needs K bits from a 1024-d space, so it
  returns sign(u R) with R a fixed Gaussian 1024 x K matrix drawn from the seed: sign random
  projections (SimHash, Charikar 2002) preserve angles, i.e. they approximate exactly the cosine
  ranking DSCMR is trained for, without adding any training. Selection uses cosine mAP.
- "dscmr-hash": a K-bit tanh head on the common space, trained jointly with the DSCMR loss plus
  the batch pairwise likelihood on theta = h_i . h_j / 2 and a quantization term; codes = sign(h).
  The same head and losses as SAM's, so the two differ only in how the subspace is learned.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datasets import Split

from .base import EmbeddingEncoder, FitContext, HashingMethod, View, check_bits
from .layers import CommonSpaceNet, is_sparse
from .losses import dscmr_label_loss, dscmr_pairwise_loss, hash_pairwise_loss, invariance_loss, quantization_loss
from .optim import adam
from .registry import register
from .training import TrainingLoop, batches_per_pass, seeded_generator


@dataclass(frozen=True)
class DSCMRConfig:
    hidden: int = 2048              # model.py IDCM_NN img_output_dim / text_output_dim
    common: int = 1024              # model.py IDCM_NN minus_one_dim
    alpha: float = 1e-3             # main.py: weight of the pairwise (label-similarity) terms
    beta: float = 1e-1              # main.py: weight of the modality-invariance term
    lr: float = 1e-4                # main.py
    beta1: float = 0.5              # main.py Adam betas = (0.5, 0.999)
    beta2: float = 0.999
    batch_size: int = 100           # main.py
    # main.py MAX_EPOCH = 500, keeping the best epoch (on the test set there; on validation here).
    # The step cap is 500 x ceil(n / batch_size); the shared rule usually stops far earlier.
    max_epochs: int = 500
    hash_head: bool = False         # "dscmr-hash" sets it: train a K-bit tanh head
    hash_weight: float = 1.0        # dscmr-hash: weight of the head's pairwise likelihood (ours, = SAM's)
    quant_weight: float = 0.1       # dscmr-hash: quantization weight (METHODS.md SAM lambda_q, = SAM's)


class SimHash(nn.Module):
    """Fixed random hyperplanes: forward(x) = x R, R (d, K) standard Gaussian from `generator`."""

    def __init__(self, dim: int, bits: int, generator: torch.Generator):
        super().__init__()
        self.register_buffer("planes", torch.randn(dim, bits, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.planes


@register("dscmr")
class DSCMR(HashingMethod):
    """DSCMR (real-valued common space; codes by SimHash, or by a trained head in dscmr-hash)."""

    Config = DSCMRConfig
    version = "3"  # 3: shared stopping rule, cap = main.py's 500 epochs (was 10 epochs)
    trained_by_steps = True

    @classmethod
    def search_space(cls, trial):
        """Return overrides drawn from an Optuna trial: the loss weights and the learning rate."""
        return {
            "alpha": trial.suggest_float("alpha", 1e-4, 1e-1, log=True),
            "beta": trial.suggest_float("beta", 1e-3, 1.0, log=True),
            "lr": trial.suggest_float("lr", 3e-5, 1e-3, log=True),
        }

    def fit(self, train: Split, bits: int, ctx: FitContext) -> EmbeddingEncoder:
        bits = check_bits(bits)
        cfg: DSCMRConfig = self.config
        device = ctx.torch_device()
        gen = seeded_generator(ctx.seed)
        model = CommonSpaceNet(train.image.shape[1], train.text.shape[1], train.labels.shape[1], cfg.hidden, cfg.common,
                               sparse_image=is_sparse(train.image), sparse_text=is_sparse(train.text)).to(device)
        head = nn.Sequential(nn.Linear(cfg.common, bits), nn.Tanh()) if cfg.hash_head else SimHash(cfg.common, bits, gen)
        head = head.to(device)
        params = list(model.parameters()) + (list(head.parameters()) if cfg.hash_head else [])
        opt = adam(params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        x_img, x_txt = torch.from_numpy(train.image).to(device), torch.from_numpy(train.text).to(device)
        labels = torch.from_numpy(train.labels).to(device)

        def code(model_, modality, x):
            return head(model_.common(modality, x))

        def common(model_, modality, x):
            return model_.common(modality, x)

        def encoder() -> EmbeddingEncoder:
            return EmbeddingEncoder(bits, {m: View(model, m, code) for m in ("image", "text")},
                                    {m: View(model, m, common) for m in ("image", "text")}, device)

        # dscmr is selected by the cosine ranking it is trained for; dscmr-hash by its codes.
        loop = TrainingLoop(ctx, {"model": model, "head": head}, encoder,
                            steps_per_epoch=batches_per_pass(len(train), cfg.batch_size),
                            schedule_epochs=cfg.max_epochs, use_embedding=not cfg.hash_head)
        for _ in loop.epochs():
            model.train()
            head.train()
            for idx in loop.batches(len(train), cfg.batch_size, gen):
                idx = idx.to(device)
                y = labels[idx]
                u, v = model.common("image", x_img[idx]), model.common("text", x_txt[idx])
                terms = dscmr_terms(model.predictor(u), model.predictor(v), u, v, y)
                loss = terms["label"] + cfg.alpha * terms["pairwise"] + cfg.beta * terms["invariance"]
                if cfg.hash_head:
                    h_u, h_v = head(u), head(v)
                    terms["hash"] = hash_pairwise_loss(h_u, h_v, y)
                    terms["quant"] = quantization_loss(h_u) + quantization_loss(h_v)
                    loss = loss + cfg.hash_weight * terms["hash"] + cfg.quant_weight * terms["quant"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loop.step({"loss": loss, **{f"loss_{k}": t for k, t in terms.items()}})
        record = loop.finish()
        result = encoder()
        result.fit_record = record
        return result


def dscmr_terms(pred_u: torch.Tensor, pred_v: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return DSCMR's three unweighted loss terms: 'label', 'pairwise', 'invariance'."""
    return {
        "label": dscmr_label_loss(pred_u, labels) + dscmr_label_loss(pred_v, labels),
        "pairwise": dscmr_pairwise_loss(u, v, labels),
        "invariance": invariance_loss(u, v),
    }


@dataclass(frozen=True)
class DSCMRHashConfig(DSCMRConfig):
    hash_head: bool = True


@register("dscmr-hash")
class DSCMRHash(DSCMR):
    """DSCMR with a trained K-bit tanh hashing head on the common space; codes = sign(head)."""

    Config = DSCMRHashConfig
