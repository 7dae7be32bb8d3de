"""SAM: subspace adaptive margin (the proposed method) and its ablations.

No paper or code is public. The description (../shared/METHODS.md): raw features go through the
network to give common features of image and text and predicted label information; the common
features and the label information give, per modality, an adaptive margin loss between samples of
different classes; an attention mechanism focusing on class information sharpens the
discrimination between classes; an invariance loss between modalities; retrieval by similarity of
the common features. This formulation, on DSCMR's network (CommonSpaceNet):
- Common feature z = normalize(W_s h) per modality; predicted labels from DSCMR's linear predictor
  on z: q = softmax(P z) (multi-label: sigmoid(P z), normalised to sum 1 for the attention).
- Class attention driven by the predicted labels: ctx = sum_c q_c e_c over unit class vectors e_c
  shared by both modalities, gate g = sigmoid(A [z; ctx] + b), z~ = normalize(z + g * ctx).
- Adaptive margins m[modality, class] from the predicted labels: the difficulty of a class in a
  modality is an EMA of the predicted probability its items put off their own class,
  d = mean_i (1 - q_i[c]) over items i of class c; m = clip(m0 + beta (d_c - mean_c d) + rho
  n_c^(-1/4) / max_c n_c^(-1/4), m_min, m_max): classes a modality confuses more, and rarer classes,
  get more margin; the first (warm-up) epoch uses m0.
- Margin loss between samples of different classes: for each anchor i of a modality, candidates
  are the batch's other items of both modalities; positives share a label with i (its own other
  modality among them), negatives share none; with s the scale,
      L_i = mean_{p in P(i)} -log e^{s cos_ip} / (e^{s cos_ip} + sum_{n in N(i)} e^{s (cos_in + m_i)}),
  so every positive must beat every negative by the anchor's margin m_i (its class's margin in its
  modality; multi-label: the mean margin of its labels).
- Total: DSCMR label loss on z~ + lambda_am (L_am^img + L_am^txt) + lambda_inv mean |z~_img - z~_txt|
  + the K-bit tanh head's pairwise likelihood and quantization (as dscmr-hash).
Encoder.embed returns z~ (cosine ranking); Encoder.encode returns sign(tanh head).

The earlier formulation is registered as `sam-prototype`: class proxies w_c, attention
softmax(cos(z, w) / tau), margins from the compactness kappa_c (EMA of the mean cos of a class's
items to its proxy: d = -kappa), and a sample-to-proxy CosFace loss (multi-label: BCE with s (cos -
m) on positives and s (cos + m) on negatives). Each switch is a config field, so every mix is an
ablation (the registered variants at the end).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from datasets import Split

from .base import EmbeddingEncoder, FitContext, HashingMethod, View, check_bits
from .layers import CommonSpaceNet, is_sparse
from .losses import dscmr_label_loss, hash_pairwise_loss, invariance_loss, label_similarity, quantization_loss
from .optim import adam
from .registry import register
from .training import TrainingLoop, batches_per_pass, seeded_generator

MODS = ("image", "text")
MAX_CLASS_CURVES = 64  # per-class margins are reported up to this many classes


@dataclass(frozen=True)
class SAMConfig:
    # Backbone, optimiser, batch and schedule as DSCMR (model.py / main.py, 500 epochs as the step
    # cap), so SAM differs from DSCMR only in the subspace loss (ours: SAM has no published code).
    hidden: int = 2048
    common: int = 1024
    lr: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 100
    max_epochs: int = 500
    # Margins (METHODS.md SAM): "adaptive" = (A) statistics-driven, "learned" = (B), "fixed" = CosFace.
    margin: Literal["adaptive", "learned", "fixed"] = "adaptive"
    # What the adaptive margins read (ours, from the description): "confusion", the predicted labels'
    # mass off each class; "compactness", the mean cos of a class's items to its proxy (sam-prototype).
    margin_statistic: Literal["confusion", "compactness"] = "confusion"
    # Where the margin acts: "samples", between samples of different classes (the description);
    # "prototypes", between a sample and the class proxies (CosFace; sam-prototype).
    margin_between: Literal["samples", "prototypes"] = "samples"
    # What weights the class attention: "predicted" labels (the description) or "prototypes",
    # softmax(cos(z, proxies) / tau) (sam-prototype).
    attention_from: Literal["predicted", "prototypes"] = "predicted"
    per_modality: bool = True       # one margin per (modality, class); False: per class only
    m0: float = 0.2                 # (A) base margin and warm-up value
    margin_beta: float = 0.5        # (A) weight of a class's difficulty above the mean (either statistic)
    margin_rho: float = 0.1         # (A) weight of the class-frequency term n_c^(-1/4)
    ema: float = 0.9                # (A) EMA momentum of kappa, per batch (ours)
    m_min: float = 0.05             # clip range (A) / range (B)
    m_max: float = 0.5
    fixed_margin: float = 0.35      # CosFace's m (Wang et al., CVPR 2018)
    margin_reg: float = 0.1         # (B) lambda_r
    scale: float = 16.0             # s; METHODS.md: 16-32 (lower end: BCE over many negatives)
    attention: bool = True
    tau: float = 0.1                # attention temperature
    margin_weight: float = 1.0      # lambda_am
    invariance_weight: float = 0.1  # lambda_inv (DSCMR's beta)
    hash_weight: float = 1.0        # head pairwise likelihood (= dscmr-hash)
    quant_weight: float = 0.1       # lambda_q (METHODS.md)


class SAMNet(nn.Module):
    """Backbone + class vectors (proxies) + class attention + K-bit tanh head."""

    def __init__(self, backbone: CommonSpaceNet, n_classes: int, common: int, bits: int, attention: bool,
                 tau: float, multi_label: bool, attention_from: str = "predicted"):
        super().__init__()
        self.backbone = backbone
        self.proxies = nn.Parameter(F.normalize(torch.randn(n_classes, common), dim=1))
        self.gate = nn.Linear(2 * common, common) if attention else None
        self.head = nn.Linear(common, bits)
        self.tau, self.multi_label, self.attention_from = tau, multi_label, attention_from

    def cosines(self, z: torch.Tensor) -> torch.Tensor:
        """Return (n, C) cosines between unit features z and the proxies."""
        return z @ F.normalize(self.proxies, dim=1).t()

    def predicted_labels(self, z: torch.Tensor) -> torch.Tensor:
        """Return the (n, C) predicted label probabilities of unit features z: softmax of the
        label predictor (multi-label: its sigmoid)."""
        logits = self.backbone.predictor(z)
        return torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=1)

    def attention_weights(self, z: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Return the (n, C) class attention weights, rows summing to 1: the predicted labels
        (attention_from 'predicted') or softmax / normalised sigmoid of cos(z, proxies) / tau."""
        if self.attention_from == "predicted":
            a = predicted
        else:
            cos = self.cosines(z) / self.tau
            a = torch.sigmoid(cos) if self.multi_label else torch.softmax(cos, dim=1)
        return a / a.sum(1, keepdim=True).clamp(min=1e-6) if self.multi_label else a

    def parts(self, modality: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return z (unit common feature), predicted (label probabilities of z), attention (the
        class weights, None without attention) and z_tilde (the attention-refined unit feature)."""
        z = F.normalize(self.backbone.common(modality, x), dim=1)
        predicted = self.predicted_labels(z)
        if self.gate is None:
            return {"z": z, "predicted": predicted, "attention": None, "z_tilde": z}
        a = self.attention_weights(z, predicted)
        ctx = a @ F.normalize(self.proxies, dim=1)
        g = torch.sigmoid(self.gate(torch.cat([z, ctx], dim=1)))
        return {"z": z, "predicted": predicted, "attention": a, "z_tilde": F.normalize(z + g * ctx, dim=1)}

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Return the unit common feature z~ (attention-refined when enabled)."""
        return self.parts(modality, x)["z_tilde"]

    def code(self, z: torch.Tensor) -> torch.Tensor:
        """Return the relaxed codes tanh(H sqrt(d) z~) in (-1, 1)^K. The sqrt(d) gives the unit
        vector z~ entries of unit scale, so the freshly initialised head is not stuck near 0."""
        return torch.tanh(self.head(z * math.sqrt(z.shape[1])))


def margin_loss(cos: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, scale: float, multi_label: bool) -> torch.Tensor:
    """Return the additive-cosine-margin loss of (n, C) cosines against labels.

    margins: (C,) per class. Single-label: CosFace cross-entropy on s (cos - m_y at the true class).
    Multi-label: mean BCE with logits s (cos - m) for positives and s (cos + m) for negatives.
    """
    if multi_label:
        logits = scale * (cos - margins * (2 * labels - 1))
        return F.binary_cross_entropy_with_logits(logits, labels)
    logits = scale * (cos - margins * labels)
    return F.cross_entropy(logits, labels.argmax(1))


def sample_margin_loss(anchors: torch.Tensor, candidates: torch.Tensor, similar: torch.Tensor, self_mask: torch.Tensor,
                       margins: torch.Tensor, scale: float) -> torch.Tensor:
    """Return the mean over anchors of mean_{p in P(i)} -log e^{s cos_ip} / (e^{s cos_ip} +
    sum_{n in N(i)} e^{s (cos_in + m_i)}), the margin loss between samples of different classes.

    anchors (a, d) and candidates (k, d): unit features; similar (a, k): 1 where they share a
    label; self_mask (a, k): True where a candidate is the anchor itself (left out); margins (a,):
    each anchor's margin. Anchors without a positive add 0; without a negative, their positives
    add log(1) = 0."""
    cos = anchors @ candidates.t()
    keep = ~self_mask
    pos = (similar > 0) & keep
    neg = (similar <= 0) & keep
    neg_logits = torch.where(neg, scale * (cos + margins[:, None]), torch.full_like(cos, -math.inf))
    neg_lse = torch.logsumexp(neg_logits, dim=1, keepdim=True)  # -inf without negatives
    pos_logits = scale * cos
    per_pair = torch.logaddexp(pos_logits, neg_lse.expand_as(cos)) - pos_logits
    per_anchor = (per_pair * pos).sum(1) / pos.sum(1).clamp(min=1)
    return per_anchor.mean()


def anchor_margins(class_margins: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return each item's margin: its class's (multi-label: the mean over its labels; an item
    with no label gets the mean margin)."""
    count = labels.sum(1)
    mean_of_labels = (labels @ class_margins) / count.clamp(min=1)
    return torch.where(count > 0, mean_of_labels, class_margins.mean().expand_as(count))


class Margins(nn.Module):
    """Per (modality, class) margins: 'adaptive' (EMA statistics), 'learned' or 'fixed'."""

    def __init__(self, cfg: SAMConfig, class_counts: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        c = class_counts.numel()
        rows = 2 if cfg.per_modality else 1
        freq = class_counts.clamp(min=1).pow(-0.25)
        self.register_buffer("freq_term", freq / freq.max())
        self.register_buffer("difficulty", torch.zeros(rows, c))  # EMA per (modality, class)
        self.register_buffer("seen", torch.zeros(rows, c, dtype=torch.bool))
        self.warm = True
        if cfg.margin == "learned":
            p = (cfg.m0 - cfg.m_min) / (cfg.m_max - cfg.m_min)  # start at m0
            self.raw = nn.Parameter(torch.full((rows, c), float(torch.logit(torch.tensor(p)))))

    def row(self, modality: str) -> int:
        return MODS.index(modality) if self.cfg.per_modality else 0

    def value(self, modality: str) -> torch.Tensor:
        """Return the (C,) margins of `modality` now."""
        cfg = self.cfg
        r = self.row(modality)
        if cfg.margin == "fixed":
            return torch.full_like(self.difficulty[r], cfg.fixed_margin)
        if cfg.margin == "learned":
            return cfg.m_min + (cfg.m_max - cfg.m_min) * torch.sigmoid(self.raw[r])
        if self.warm:
            return torch.full_like(self.difficulty[r], cfg.m0)
        d = self.difficulty[r]
        seen = self.seen[r]
        mean = d[seen].mean() if seen.any() else d.new_zeros(())
        m = cfg.m0 + cfg.margin_beta * (d - mean) + cfg.margin_rho * self.freq_term
        return torch.where(seen, m, torch.full_like(m, cfg.m0)).clamp(cfg.m_min, cfg.m_max)

    @torch.no_grad()
    def observe(self, modality: str, difficulty: torch.Tensor, labels: torch.Tensor) -> None:
        """Update the EMA difficulty of each class present in the batch with the mean, over its
        items, of their (n, C) `difficulty` at that class (1 - predicted probability for
        'confusion', -cos to the proxy for 'compactness')."""
        if self.cfg.margin != "adaptive":
            return
        r = self.row(modality)
        count = labels.sum(0)
        present = count > 0
        batch = (difficulty * labels).sum(0) / count.clamp(min=1)
        first = present & ~self.seen[r]
        upd = present & self.seen[r]
        self.difficulty[r] = torch.where(first, batch, self.difficulty[r])
        self.difficulty[r] = torch.where(upd, self.cfg.ema * self.difficulty[r] + (1 - self.cfg.ema) * batch, self.difficulty[r])
        self.seen[r] |= present

    def regulariser(self) -> torch.Tensor:
        """Return -lambda_r mean(m) for learned margins (else 0): keeps them from collapsing to m_min."""
        if self.cfg.margin != "learned":
            return self.difficulty.new_zeros(())
        m = self.cfg.m_min + (self.cfg.m_max - self.cfg.m_min) * torch.sigmoid(self.raw)
        return -self.cfg.margin_reg * m.mean()


@register("sam")
class SAM(HashingMethod):
    """Subspace adaptive margin: DSCMR backbone, proxies, class attention, adaptive margins, hash head."""

    Config = SAMConfig
    # 5: per-class margins reported (training unchanged: same codes as 4); 4: label-driven margins
    # and attention, margins between samples; 3: shared stopping rule
    version = "5"
    trained_by_steps = True

    @classmethod
    def search_space(cls, trial):
        """Return overrides drawn from an Optuna trial: margins first, then scale, lr, invariance."""
        return {
            "m0": trial.suggest_float("m0", 0.05, 0.45),
            "margin_beta": trial.suggest_float("margin_beta", 0.0, 1.0),
            "margin_rho": trial.suggest_float("margin_rho", 0.0, 0.3),
            "scale": trial.suggest_float("scale", 8.0, 32.0),
            "lr": trial.suggest_float("lr", 3e-5, 1e-3, log=True),
            "invariance_weight": trial.suggest_float("invariance_weight", 0.0, 1.0),
        }

    def fit(self, train: Split, bits: int, ctx: FitContext) -> EmbeddingEncoder:
        bits = check_bits(bits)
        cfg: SAMConfig = self.config
        device = ctx.torch_device()
        gen = seeded_generator(ctx.seed)
        labels = torch.from_numpy(train.labels).to(device)
        multi_label = bool((labels.sum(1) != 1).any())
        n_classes = labels.shape[1]
        backbone = CommonSpaceNet(train.image.shape[1], train.text.shape[1], n_classes, cfg.hidden, cfg.common,
                                  sparse_image=is_sparse(train.image), sparse_text=is_sparse(train.text))
        net = SAMNet(backbone, n_classes, cfg.common, bits, cfg.attention, cfg.tau, multi_label, cfg.attention_from).to(device)
        margins = Margins(cfg, labels.sum(0)).to(device)
        opt = adam(list(net.parameters()) + list(margins.parameters()), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
        x = {"image": torch.from_numpy(train.image).to(device), "text": torch.from_numpy(train.text).to(device)}

        def encoder() -> EmbeddingEncoder:
            return EmbeddingEncoder(bits, {m: View(net, m, lambda n_, m_, x_: n_.code(n_.embed(m_, x_))) for m in MODS},
                                    {m: View(net, m, lambda n_, m_, x_: n_.embed(m_, x_)) for m in MODS}, device)

        loop = TrainingLoop(ctx, {"net": net, "margins": margins}, encoder,
                            steps_per_epoch=batches_per_pass(len(train), cfg.batch_size), schedule_epochs=cfg.max_epochs)
        for epoch in loop.epochs():
            net.train()
            margins.warm = epoch == 0
            for idx in loop.batches(len(train), cfg.batch_size, gen):
                idx = idx.to(device)
                y = labels[idx]
                parts = {m: net.parts(m, x[m][idx]) for m in MODS}
                terms = sam_terms(net, margins, parts, y, cfg, multi_label)
                loss = (terms["label"] + cfg.margin_weight * terms["margin"] + cfg.invariance_weight * terms["invariance"]
                        + cfg.hash_weight * terms["hash"] + cfg.quant_weight * terms["quant"] + terms["margin_reg"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                values = {"loss": loss, **{f"loss_{k}": t for k, t in terms.items()}}
                values.update(margin_values(margins, n_classes))
                loop.step(values)
        record = loop.finish()
        result = encoder()
        result.fit_record = record
        return result


def margin_values(margins: Margins, n_classes: int) -> dict[str, torch.Tensor]:
    """Return the margins to report: the mean per modality, and with at most MAX_CLASS_CURVES
    classes each (modality, class) margin as 'margin_<modality>/c<k>' (the runner plots these
    per-class histories; instance-level targets would give thousands)."""
    values = {}
    for m in MODS:
        value = margins.value(m).detach()
        values[f"margin_mean_{m}"] = value.mean()
        if n_classes <= MAX_CLASS_CURVES:
            values.update({f"margin_{m}/c{c}": value[c] for c in range(n_classes)})
    return values


def sam_terms(net: SAMNet, margins: Margins, parts: dict[str, dict[str, torch.Tensor]], y: torch.Tensor, cfg: SAMConfig,
              multi_label: bool) -> dict[str, torch.Tensor]:
    """Return SAM's unweighted loss terms for one batch (parts: SAMNet.parts per modality); also
    feeds the batch statistics to the adaptive margins."""
    z = {m: parts[m]["z_tilde"] for m in MODS}
    terms = {"label": z["image"].new_zeros(()), "margin": z["image"].new_zeros(())}
    b = y.shape[0]
    if cfg.margin_between == "samples":
        candidates = torch.cat([z["image"], z["text"]])
        similar = label_similarity(y, y).repeat(1, 2)
        eye = torch.eye(b, dtype=torch.bool, device=y.device)
        off = torch.zeros_like(eye)
    uses_proxies = cfg.margin_between == "prototypes" or cfg.margin_statistic == "compactness"
    for i, m in enumerate(MODS):
        cos = net.cosines(z[m]) if uses_proxies else None
        terms["label"] = terms["label"] + dscmr_label_loss(net.backbone.predictor(z[m]), y)
        if cfg.margin_between == "samples":
            self_mask = torch.cat([eye, off] if i == 0 else [off, eye], dim=1)
            terms["margin"] = terms["margin"] + sample_margin_loss(z[m], candidates, similar, self_mask,
                                                                   anchor_margins(margins.value(m), y), cfg.scale)
        else:
            terms["margin"] = terms["margin"] + margin_loss(cos, y, margins.value(m), cfg.scale, multi_label)
        statistic = 1.0 - parts[m]["predicted"] if cfg.margin_statistic == "confusion" else -cos
        margins.observe(m, statistic.detach(), y)
    terms["invariance"] = invariance_loss(z["image"], z["text"])
    h_i, h_t = net.code(z["image"]), net.code(z["text"])
    terms["hash"] = hash_pairwise_loss(h_i, h_t, y)
    terms["quant"] = quantization_loss(h_i) + quantization_loss(h_t)
    terms["margin_reg"] = margins.regulariser()
    return terms


def _variant(name: str, doc: str, **defaults):
    """Register a SAM ablation: a subclass whose Config only changes defaults."""
    cfg = dataclass(frozen=True)(type(f"{name.title().replace('-', '')}Config", (SAMConfig,),
                                      {"__annotations__": {k: SAMConfig.__annotations__[k] for k in defaults}, **defaults}))
    cls = type(name.title().replace("-", ""), (SAM,), {"Config": cfg, "__doc__": doc, "__module__": __name__})
    return register(name)(cls)


_variant("sam-prototype", "SAM's earlier formulation: proxy-driven attention and compactness margins, a "
         "sample-to-proxy CosFace loss.", margin_between="prototypes", attention_from="prototypes",
         margin_statistic="compactness")
_variant("sam-fixed-margin", "SAM ablation: one margin 0.35 for all classes and modalities.", margin="fixed")
_variant("sam-class-margin", "SAM ablation: adaptive margins per class, shared by both modalities.", per_modality=False)
_variant("sam-learned-margin", "SAM variant (B): learnable per (modality, class) margins.", margin="learned")
_variant("sam-compactness-margin", "SAM ablation: margins from proxy compactness, not the predicted labels.",
         margin_statistic="compactness")
_variant("sam-prototype-margin", "SAM ablation: the margin between samples and class proxies, not between samples.",
         margin_between="prototypes")
_variant("sam-prototype-attention", "SAM ablation: attention weighted by proxy cosines, not the predicted labels.",
         attention_from="prototypes")
_variant("sam-no-attention", "SAM ablation: without class attention (z~ = z).", attention=False)
_variant("sam-no-invariance", "SAM ablation: without the modality-invariance term.", invariance_weight=0.0)
