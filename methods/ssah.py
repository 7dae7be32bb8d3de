"""SSAH: Self-Supervised Adversarial Hashing (Li et al., CVPR 2018), on pre-extracted features.

Three nets, each ending in a 512-d ReLU semantic feature with a tanh hash head (K) and a sigmoid
label head (C) (tnet.py):
  label net  C -> 4096 ReLU -> LRN -> 512 ReLU -> {K tanh, C sigmoid}
  image net  fc7 (4096) -> 512 ReLU (fc8) -> {K tanh, C sigmoid}   (CNN-F's fc6/fc7 are the input features)
  text net   BoW -> 4096 ReLU -> LRN -> 512 ReLU -> LRN -> {K tanh, C sigmoid}
and two discriminators 512 -> 512 -> 256 -> 1 telling image / text features from label features.

Training (SSAH.py): the label net is trained first (pairwise likelihood of its features and codes
against S, quantization, label regression); its features F_L and codes H_L of all training items
then guide the modality nets: for v in {image, text}
  alpha NLL(1/2 F_L F_v^T; S) + gamma NLL(1/2 H_L H_v^T; S) + beta |H_v - sign(H_v)|^2 + eta |L_v - L|^2
  + delta BCE(D_v(F_v), 1),
and the discriminators learn BCE(D_v(F_v), 0) + BCE(D_v(F_L), 1), averaged over the four terms.

The official TF code feeds the modality features to the discriminators through a placeholder
(I_fea_batch / T_fea_batch filled with numpy arrays), so delta's term never reaches the image
and text nets. Here it does; `reproduce_tf_bug=True` detaches it, reproducing the original.

Other deviations, on purpose: the pairwise terms are the paper's negative log-likelihood (the TF
code's mse_criterion squares the difference S theta - log(1 + e^theta)), S is not scaled by 0.999;
the label net is trained once for 5 passes, then frozen (the TF code keeps updating it, but its
learning rate falls 10^0.5 per epoch, so it stops moving after a few epochs); each epoch is one
discriminator, one image and one text pass at the official starting rates (TF: up to 15 + 7 + 5
passes per net at rates falling 10^0.5 per epoch), ended by validation early stopping; the text net omits the
multi-scale fusion (MultiScaleTxt: five pooled, rescaled copies of the BoW concatenated to it),
which would make the 1386 x 4096 input layer six times wider and dense. Init: the label net as
tnet.py, N(0, 0.01^2) for every weight and bias; the modality nets and discriminators PyTorch's
default (see SSAHConfig.tf_init_modality_nets).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from datasets import Split

from .registry import register
from .base import FitContext, HashingMethod, TorchEncoder, check_bits
from .layers import (Center, adam, Discriminator, LocalResponseNorm2d, View, is_sparse, label_similarity, minibatches, pairwise_likelihood,
                     seeded_generator, tower)
from .selection import Selector

MODS = ("image", "text")


@dataclass(frozen=True)
class SSAHConfig:
    semantic_dim: int = 512         # setting.py SEMANTIC_EMBED
    label_hidden: int = 4096        # tnet.py lab_net LAYER1_NODE
    text_hidden: int = 4096         # tnet.py txt_net fc1
    alpha: float = 1.0              # setting.py: alpha = gamma = beta = eta = delta = 1
    gamma: float = 1.0
    beta: float = 1.0
    eta: float = 1.0
    delta: float = 1.0
    batch_size: int = 128           # setting.py
    lr_label: float = 1e-2          # setting.py lr_lab starts at 10^-2
    lr_image: float = 10 ** -4.5    # setting.py lr_img starts at 10^-4.5
    lr_text: float = 10 ** -3.5     # setting.py lr_txt starts at 10^-3.5
    lr_dis: float = 1e-3            # setting.py lr_dis starts at 10^-3
    # Label-net pretraining: the first `label_passes` passes of SSAH.py's schedule, which per outer
    # epoch e runs 10 passes at 10^-(2 + e/2) then 5 at 10^-(2.5 + e/2) (k_lab_net = 10, lr_lab).
    # 5, not 15, to fit the 2-minute CPU budget: on synthetic MIRFlickr at 32 bits (seed 0, 2 cores)
    # 15 passes took 84 s of a 171 s fit; with 5 the fit takes 103 s, the label loss ends 10 %
    # higher (5391 vs 4892), validation mAP 0.7512 vs 0.7545, query mAP 0.7697 vs 0.7695.
    label_passes: int = 5
    # setting.py: Epoch = 500 with rates falling 10^0.5 per epoch (negligible after ~5 epochs) and up
    # to 15 + 7 + 5 passes per net per epoch. Here one pass per net per epoch, at most 8 epochs
    # (about 10 s each on the 9,000-item set, 2 CPU cores), stopped on validation mAP.
    epochs: int = 8
    eval_every: int = 1
    patience: int = 4
    # Centre image features on the training mean (kept in the encoder), the analogue of CNN-F's
    # mean-image subtraction: on raw all-positive fc7 features the fc8 ReLU units died together and
    # image codes collapsed (synthetic-mirflickr, ours).
    center_image: bool = True
    # tnet.py draws every weight as N(0, 0.01^2). Kept for the label net (PyTorch's default init
    # made 1/2 F_L F_L^T saturate); for the modality nets on features it leaves the sparse-tag
    # text net's output at its biases (one code for every text), so they use PyTorch's default.
    tf_init_modality_nets: bool = False
    reproduce_tf_bug: bool = False  # True: the adversarial term does not update the image/text nets


class SSAHNet(nn.Module):
    """Feature trunk (-> 512 ReLU) with a tanh hash head and a sigmoid label head."""

    def __init__(self, trunk: nn.Module, semantic_dim: int, bits: int, n_classes: int, norm_before_heads: bool):
        super().__init__()
        self.trunk = trunk
        self.norm = LocalResponseNorm2d() if norm_before_heads else nn.Identity()
        self.hash = nn.Linear(semantic_dim, bits)
        self.label = nn.Linear(semantic_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (tanh codes H, semantic features F, sigmoid label predictions)."""
        feat = self.trunk(x)
        normed = self.norm(feat)
        return torch.tanh(self.hash(normed)), feat, torch.sigmoid(self.label(normed))


def tf_init_(module: nn.Module, std: float = 0.01) -> nn.Module:
    """Re-draw every weight and bias as N(0, std^2), as tnet.py does (random_normal * 0.01); returns module."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.normal_(0.0, std)
    return module


def _trunk(in_dim: int, hidden: int | None, out_dim: int, sparse: bool, mean=None) -> nn.Module:
    if hidden is None:  # image: fc8 = Linear + ReLU on fc7 features (centred, see SSAHConfig.center_image)
        fc8 = tower(in_dim, (), out_dim, sparse_input=sparse, out_act=nn.ReLU())
        return fc8 if mean is None else nn.Sequential(Center(mean), *fc8)
    first = tower(in_dim, (), hidden, sparse_input=sparse, out_act=nn.ReLU())
    return nn.Sequential(first, LocalResponseNorm2d(), nn.Linear(hidden, out_dim), nn.ReLU())


def ssah_guided_loss(h: torch.Tensor, feat: torch.Tensor, pred: torch.Tensor, y: torch.Tensor, feat_ref: torch.Tensor,
                     code_ref: torch.Tensor, s: torch.Tensor, cfg: SSAHConfig) -> dict[str, torch.Tensor]:
    """Return the unweighted SSAH terms of a batch (h, feat, pred) against references of all
    training items (feat_ref, code_ref; s = S between batch and all): 'pair_feat', 'pair_code',
    'quant', 'label'."""
    return {
        "pair_feat": pairwise_likelihood(0.5 * feat @ feat_ref.t(), s),
        "pair_code": pairwise_likelihood(0.5 * h @ code_ref.t(), s),
        "quant": (h - torch.where(h >= 0, 1.0, -1.0).detach()).pow(2).sum(),
        "label": (pred - y).pow(2).sum(),
    }


def adversarial_generator_loss(disc: Discriminator, feat: torch.Tensor, reproduce_tf_bug: bool) -> torch.Tensor:
    """Return BCE(D(feat), 1), the modality net's adversarial loss; with reproduce_tf_bug the
    features enter as constants (the TF placeholder), so no gradient reaches the modality net."""
    logits = disc(feat.detach() if reproduce_tf_bug else feat)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


@register("ssah")
class SSAH(HashingMethod):
    """SSAH: label net first, then image/text nets guided by it, with two discriminators."""

    Config = SSAHConfig
    version = "2"  # 2: label net 5 passes (was 15)

    @classmethod
    def search_space(cls, trial):
        """Return overrides drawn from an Optuna trial: the modality learning rates and delta."""
        return {
            "lr_image": trial.suggest_float("lr_image", 1e-5, 1e-3, log=True),
            "lr_text": trial.suggest_float("lr_text", 1e-5, 1e-3, log=True),
            "delta": trial.suggest_float("delta", 0.1, 10.0, log=True),
        }

    def fit(self, train: Split, bits: int, ctx: FitContext) -> TorchEncoder:
        bits = check_bits(bits)
        cfg: SSAHConfig = self.config
        device = ctx.torch_device()
        gen = seeded_generator(ctx.seed)
        n, c = train.labels.shape
        labels = torch.from_numpy(train.labels).to(device)
        x = {m: torch.from_numpy(getattr(train, m)).to(device) for m in MODS}
        lab = tf_init_(SSAHNet(_trunk(c, cfg.label_hidden, cfg.semantic_dim, False), cfg.semantic_dim, bits, c, False)).to(device)
        nets = {
            "image": SSAHNet(_trunk(x["image"].shape[1], None, cfg.semantic_dim, is_sparse(train.image),
                                    train.image.mean(0) if cfg.center_image else None),
                             cfg.semantic_dim, bits, c, False).to(device),
            "text": SSAHNet(_trunk(x["text"].shape[1], cfg.text_hidden, cfg.semantic_dim, is_sparse(train.text)),
                            cfg.semantic_dim, bits, c, True).to(device),
        }
        if cfg.tf_init_modality_nets:
            for net in nets.values():
                tf_init_(net)
        discs = {m: Discriminator(cfg.semantic_dim).to(device) for m in MODS}

        # 1. Label net (self-supervision): buffers of all items' features / codes as in SSAH.py.
        feat_l = torch.zeros(n, cfg.semantic_dim, device=device)
        code_l = torch.zeros(n, bits, device=device)
        with torch.no_grad():
            h0, f0, _ = lab(labels)
            feat_l.copy_(f0)
            code_l.copy_(h0)
        opt = adam(lab.parameters(), lr=cfg.lr_label)
        for epoch, rate in enumerate(label_schedule(cfg.lr_label, cfg.label_passes)):
            for group in opt.param_groups:
                group["lr"] = rate
            total = 0.0
            for idx in minibatches(n, cfg.batch_size, gen):
                idx = idx.to(device)
                h, f, p = lab(labels[idx])
                feat_l[idx], code_l[idx] = f.detach(), h.detach()
                t = ssah_guided_loss(h, f, p, labels[idx], feat_l, code_l, label_similarity(labels[idx], labels), cfg)
                loss = cfg.alpha * t["pair_feat"] + cfg.gamma * t["pair_code"] + cfg.beta * t["quant"] + cfg.eta * t["label"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            ctx.log(f"ssah label net pass {epoch}: loss {total / n:.4f}")
        lab.eval()
        with torch.no_grad():
            code_l, feat_l, _ = lab(labels)  # the frozen guidance

        # 2. Modality nets and discriminators.
        opts = {"image": adam(nets["image"].parameters(), lr=cfg.lr_image),
                "text": adam(nets["text"].parameters(), lr=cfg.lr_text)}
        opt_d = adam([p for d in discs.values() for p in d.parameters()], lr=cfg.lr_dis)
        code_nets = {m: View(nets[m], m, lambda net, _m, x_: net(x_)[0]) for m in MODS}
        selector = Selector(ctx, {**nets, **{f"d_{m}": d for m, d in discs.items()}},
                            lambda: TorchEncoder(bits, code_nets, device), eval_every=cfg.eval_every,
                            patience=cfg.patience, max_epochs=cfg.epochs)
        for epoch in range(cfg.epochs):
            for module in (*nets.values(), *discs.values()):
                module.train()
            sums: dict[str, float] = {}
            # Discriminator pass (SSAH.py train_dis_net), features as constants.
            for idx in minibatches(n, cfg.batch_size, gen):
                idx = idx.to(device)
                with torch.no_grad():
                    fi, ft = nets["image"](x["image"][idx])[1], nets["text"](x["text"][idx])[1]
                loss_d = discriminator_loss(discs, {"image": fi, "text": ft}, feat_l[idx])
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                sums["loss_d"] = sums.get("loss_d", 0.0) + float(loss_d.detach()) * len(idx)
            # Image pass, then text pass (SSAH.py train_img_net / train_txt_net).
            for m in MODS:
                for idx in minibatches(n, cfg.batch_size, gen):
                    idx = idx.to(device)
                    h, f, p = nets[m](x[m][idx])
                    t = ssah_guided_loss(h, f, p, labels[idx], feat_l, code_l, label_similarity(labels[idx], labels), cfg)
                    t["adv"] = adversarial_generator_loss(discs[m], f, cfg.reproduce_tf_bug)
                    loss = (cfg.alpha * t["pair_feat"] + cfg.gamma * t["pair_code"] + cfg.beta * t["quant"]
                            + cfg.eta * t["label"] + cfg.delta * t["adv"])
                    opts[m].zero_grad(set_to_none=True)
                    loss.backward()
                    opts[m].step()
                    sums[f"loss_{m}"] = sums.get(f"loss_{m}", 0.0) + float(loss.detach())
                    sums[f"loss_adv_{m}"] = sums.get(f"loss_adv_{m}", 0.0) + float(t["adv"].detach()) * len(idx)
            # Discriminator parameters got gradients from the generator terms; discard them.
            opt_d.zero_grad(set_to_none=True)
            if selector.end_epoch(epoch, {k: v / n for k, v in sums.items()}):
                break
        selector.finish()
        return TorchEncoder(bits, code_nets, device)


def label_schedule(lr0: float, passes: int) -> list[float]:
    """Return the label net's learning rates for its first `passes` passes under SSAH.py's
    schedule: outer epoch e runs 10 passes at lr0 * 10^(-e/2), then 5 at lr0 * 10^(-(e+1)/2)
    (k_lab_net / (idx + 1))."""
    rates: list[float] = []
    e = 0
    while len(rates) < passes:
        rates += [lr0 * 10 ** (-0.5 * (e + idx)) for idx in (0, 1) for _ in range(10 // (idx + 1))]
        e += 1
    return rates[:passes]


def discriminator_loss(discs: dict[str, Discriminator], feats: dict[str, torch.Tensor], feat_label: torch.Tensor) -> torch.Tensor:
    """Return SSAH's Loss_D: mean of BCE(D_v(F_v), 0) and BCE(D_v(F_L), 1) over v in {image, text}."""
    total = feat_label.new_zeros(())
    for m in MODS:
        fake, real = discs[m](feats[m]), discs[m](feat_label)
        total = total + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        total = total + F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
    return total / 4.0
