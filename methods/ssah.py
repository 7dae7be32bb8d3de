"""SSAH: Self-Supervised Adversarial Hashing (Li et al., CVPR 2018), on pre-extracted features.

Three nets, each ending in a 512-d ReLU semantic feature with a tanh hash head (K) and a sigmoid
label head (C) (tnet.py):
  label net  C -> 4096 ReLU -> LRN -> 512 ReLU -> {K tanh, C sigmoid}
  image net  fc7 (4096) -> 512 ReLU (fc8) -> {K tanh, C sigmoid}   (CNN-F's fc6/fc7 are the input features)
  text net   BoW -> 4096 ReLU -> LRN -> 512 ReLU -> LRN -> {K tanh, C sigmoid}
and two discriminators 512 -> 512 -> 256 -> 1 telling image / text features from label features.

Losses (SSAH.py): the label net learns the pairwise likelihood of its features and codes against
S, quantization and label regression; its features F_L and codes H_L of all training items guide
the modality nets: for v in {image, text}
  alpha NLL(1/2 F_L F_v^T; S) + gamma NLL(1/2 H_L H_v^T; S) + beta |H_v - sign(H_v)|^2 + eta |L_v - L|^2
  + delta BCE(D_v(F_v), 1),
and the discriminators learn BCE(D_v(F_v), 0) + BCE(D_v(F_L), 1), averaged over the four terms.

Schedule (SSAH.py train, setting.py): every epoch e trains, in this order, the label net for
10 + 5 passes, the discriminators for 1 + 1, the image net for 15 + 7 + 5 and the text net for
15 + 7 + 5, pass group g at the net's starting rate x 10^(-(e + g) / 2); Epoch = 500. Here the
same passes and rates (`*_passes`, `lr_decay`; on sets under SSAH.py's 10,000 training items
the epoch index of the rates advances by n / 10,000 per epoch, see `decay_reference_items`),
with the shared stopping rule on top
(methods.training): an epoch is 71 passes of ceil(n / 128) steps, validation once per epoch by
default, the cap 500 epochs. The official code also cuts a pass group short when the net's
full training loss rose since the last pass; those per-net stops are not reproduced: the shared
rule decides when training ends. The guidance F_L, H_L is the label net's output on every
training item after its passes of the epoch (SSAH.py keeps the per-batch buffers of those
passes, at most one pass older).

The label net's collapse on single-label data at SSAH.py's settings, its cause and the fix: see
SSAHConfig.lr_label. Before guiding, the label net must give the classes distinct codes; fit
raises GuideCollapseError when it does not (a collapsed guide makes the modality nets emit one
code for every item: mAP = random).

The official TF code feeds the modality features to the discriminators through a placeholder
(I_fea_batch / T_fea_batch filled with numpy arrays), so delta's term never reaches the image
and text nets. Here it does; `reproduce_tf_bug=True` detaches it, reproducing the original.

Other deviations, on purpose: the pairwise terms are the paper's negative log-likelihood (the TF
code's mse_criterion squares the difference S theta - log(1 + e^theta)), S is not scaled by 0.999;
batches are a fresh permutation per pass (SSAH.py draws each batch as the head of a new
permutation); the text net omits the multi-scale fusion (MultiScaleTxt: five pooled, rescaled
copies of the BoW concatenated to it), which would make the 1386 x 4096 input layer six times
wider and dense. Init: N(0, 0.01^2) for every weight and bias of the discriminators (ops.conv2d);
PyTorch's default for the label net (see SSAHConfig.lr_label) and the modality nets (see
SSAHConfig.official_init_modality_nets).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from datasets import Split

from .base import ConfigError, FitContext, HashingMethod, TorchEncoder, View, check_bits
from .layers import Center, Discriminator, LocalResponseNorm2d, is_sparse, normal_init_, tower
from .losses import label_similarity, pairwise_likelihood
from .optim import adam, set_lr
from .registry import register
from .training import TrainingLoop, batches_per_pass, seeded_generator

MODS = ("image", "text")


class GuideCollapseError(RuntimeError):
    """A guide network gives fewer distinct codes than there are classes: what it would teach
    the modality networks is one code for (nearly) every item."""


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
    # The label net: setting.py starts lr_lab at 10^-2 with tnet.py's N(0, 0.01^2) init. On
    # single-label data that collapses (one code for every class: mAP = random). Cause: at that
    # init every class gets nearly the same feature and code (the 0.01 biases dwarf the class-
    # dependent part), so with 90 % of pairs dissimilar the pairwise terms push all classes the
    # same way (away from their common mean); Adam moves every weight by about lr whatever the
    # gradient's size (Kingma & Ba 2015, Sec. 2.1), so at 10^-2, the weights' own scale, one or
    # two steps put most ReLU units below zero for every class (507 of 512 never fire) and merge
    # the codes; two classes with one code get identical gradients and never part again (also at
    # 10^-3: 9 codes for 10 classes). Fix (ours, measured): PyTorch's default init for the label
    # net (the one-hot class embeddings dominate from step 0: distinct codes) and lr 10^-4, the
    # order of setting.py's image / text rates (10^-4.5, 10^-3.5). Real Wikipedia: 10 codes for 10
    # classes on every seed and bit length tried; synthetic-wiki with 400 / 1,000 items: 9 of 9;
    # multi-label (24 labels): > 100 distinct codes. GuideCollapseError guards the rest.
    lr_label: float = 1e-4
    official_init_label_net: bool = False   # True: tnet.py's N(0, 0.01^2) (collapses as above)
    lr_image: float = 10 ** -4.5    # setting.py lr_img starts at 10^-4.5
    lr_text: float = 10 ** -3.5     # setting.py lr_txt starts at 10^-3.5
    lr_dis: float = 1e-3            # setting.py lr_dis starts at 10^-3
    lr_decay: float = 10 ** -0.5    # setting.py: each rate list steps by 10^-0.5 per epoch and per pass group
    # SSAH.py indexes its rate lists by epoch, on MIRFlickr's 10,000 training items (setting.py
    # TRAINING_SIZE). On a smaller set an epoch has fewer steps, so the same per-epoch decay
    # leaves the text net a fraction of the official updates before its rate vanishes (Wikipedia:
    # ~430 text steps per epoch instead of ~2,100; the sparse-tag text net then kept one code for
    # every text). Ours: the rate index advances by min(1, n / decay_reference_items) per epoch,
    # so each rate level gets at least an official epoch's worth of items; at 10,000 items or more
    # it is SSAH.py's schedule. 0: one step per epoch whatever the size.
    decay_reference_items: int = 10_000
    # Passes per epoch and pass group (SSAH.py train: k_lab_net / (idx + 1) for idx < 2,
    # k_dis_net = 1 for idx < 2, k_img_net / (idx + 1) and k_txt_net / (idx + 1) for idx < 3).
    label_passes: tuple[int, ...] = (10, 5)
    dis_passes: tuple[int, ...] = (1, 1)
    image_passes: tuple[int, ...] = (15, 7, 5)
    text_passes: tuple[int, ...] = (15, 7, 5)
    max_epochs: int = 500           # setting.py Epoch; the step cap
    # Centre image features on the training mean (kept in the encoder), the analogue of CNN-F's
    # mean-image subtraction: on raw all-positive fc7 features the fc8 ReLU units died together and
    # image codes collapsed (synthetic-mirflickr, ours). A no-op on z-scored input.
    center_image: bool = True
    # tnet.py draws every weight as N(0, 0.01^2). Kept for the label net and the discriminators;
    # for the modality nets on features it leaves the sparse-tag text net's output at its biases
    # (one code for every text), so they use PyTorch's default (ours).
    official_init_modality_nets: bool = False
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
    """SSAH: a label net guides image/text nets, with two discriminators; SSAH.py's schedule."""

    Config = SSAHConfig
    version = "4"  # 4: rate decay per 10,000 items on smaller sets; 3: official passes and rates, label-net fix, guard
    trained_by_steps = True

    @classmethod
    def search_space(cls, trial):
        """Return overrides drawn from an Optuna trial: the three nets' learning rates and delta."""
        return {
            "lr_label": trial.suggest_float("lr_label", 1e-5, 1e-2, log=True),
            "lr_image": trial.suggest_float("lr_image", 1e-5, 1e-3, log=True),
            "lr_text": trial.suggest_float("lr_text", 1e-5, 1e-3, log=True),
            "delta": trial.suggest_float("delta", 0.1, 10.0, log=True),
        }

    @classmethod
    def check_config(cls, config: SSAHConfig) -> None:
        """Raise ConfigError if decay_reference_items is negative (0 means per epoch)."""
        if config.decay_reference_items < 0:
            raise ConfigError(f"method 'ssah' field 'decay_reference_items' is {config.decay_reference_items}; "
                              "expected 0 (one rate step per epoch) or a training-set size >= 1")

    def fit(self, train: Split, bits: int, ctx: FitContext) -> TorchEncoder:
        bits = check_bits(bits)
        cfg: SSAHConfig = self.config
        device = ctx.torch_device()
        gen = seeded_generator(ctx.seed)
        n, c = train.labels.shape
        labels = torch.from_numpy(train.labels).to(device)
        x = {m: torch.from_numpy(getattr(train, m)).to(device) for m in MODS}
        lab = SSAHNet(_trunk(c, cfg.label_hidden, cfg.semantic_dim, False), cfg.semantic_dim, bits, c, False)
        if cfg.official_init_label_net:
            normal_init_(lab)
        lab = lab.to(device)
        nets = {
            "image": SSAHNet(_trunk(x["image"].shape[1], None, cfg.semantic_dim, is_sparse(train.image),
                                    train.image.mean(0) if cfg.center_image else None),
                             cfg.semantic_dim, bits, c, False).to(device),
            "text": SSAHNet(_trunk(x["text"].shape[1], cfg.text_hidden, cfg.semantic_dim, is_sparse(train.text)),
                            cfg.semantic_dim, bits, c, True).to(device),
        }
        if cfg.official_init_modality_nets:
            for net in nets.values():
                normal_init_(net)
        discs = {m: normal_init_(Discriminator(cfg.semantic_dim)).to(device) for m in MODS}
        opt_label = adam(lab.parameters(), lr=cfg.lr_label)
        opts = {"image": adam(nets["image"].parameters(), lr=cfg.lr_image),
                "text": adam(nets["text"].parameters(), lr=cfg.lr_text)}
        opt_d = adam([p for d in discs.values() for p in d.parameters()], lr=cfg.lr_dis)
        rates = {"image": cfg.lr_image, "text": cfg.lr_text}
        passes = {"image": cfg.image_passes, "text": cfg.text_passes}
        code_nets = {m: View(nets[m], m, lambda net, _m, x_: net(x_)[0]) for m in MODS}
        per_epoch = sum(cfg.label_passes) + sum(cfg.dis_passes) + sum(cfg.image_passes) + sum(cfg.text_passes)
        loop = TrainingLoop(ctx, nets, lambda: TorchEncoder(bits, code_nets, device),
                            steps_per_epoch=per_epoch * batches_per_pass(n, cfg.batch_size), schedule_epochs=cfg.max_epochs)

        # The rate lists' index per epoch (see SSAHConfig.decay_reference_items).
        index_per_epoch = 1.0 if cfg.decay_reference_items == 0 else min(1.0, n / cfg.decay_reference_items)

        def groups(counts: tuple[int, ...], opt: torch.optim.Optimizer, lr0: float, epoch: int) -> Iterator[torch.Tensor]:
            """Yield the batches of an epoch's pass groups, group g at lr0 * lr_decay^(epoch * index_per_epoch + g)."""
            for g, count in enumerate(counts):
                set_lr(opt, lr0 * cfg.lr_decay ** (epoch * index_per_epoch + g))
                yield from loop.batches(n, cfg.batch_size, gen, passes=count)

        # Per-batch buffers of the label net's outputs on all items, as SSAH.py's var['feat_L'] / var['H'].
        with torch.no_grad():
            code_l, feat_l, _ = lab(labels)
        for epoch in loop.epochs():
            # 1. Label net (self-supervision).
            lab.train()
            for idx in groups(cfg.label_passes, opt_label, cfg.lr_label, epoch):
                idx = idx.to(device)
                h, f, p = lab(labels[idx])
                feat_l[idx], code_l[idx] = f.detach(), h.detach()
                t = ssah_guided_loss(h, f, p, labels[idx], feat_l, code_l, label_similarity(labels[idx], labels), cfg)
                loss = cfg.alpha * t["pair_feat"] + cfg.gamma * t["pair_code"] + cfg.beta * t["quant"] + cfg.eta * t["label"]
                opt_label.zero_grad(set_to_none=True)
                loss.backward()
                opt_label.step()
                loop.step({"loss_label_net": loss})
            if loop.done:
                break
            lab.eval()
            with torch.no_grad():
                code_l, feat_l, _ = lab(labels)  # this epoch's guidance
            check_guide("label network", code_l, labels, epoch)
            # 2. Discriminators (SSAH.py train_dis_net), modality features as constants.
            for idx in groups(cfg.dis_passes, opt_d, cfg.lr_dis, epoch):
                idx = idx.to(device)
                with torch.no_grad():
                    fi, ft = nets["image"](x["image"][idx])[1], nets["text"](x["text"][idx])[1]
                loss_d = discriminator_loss(discs, {"image": fi, "text": ft}, feat_l[idx])
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
                loop.step({"loss_d": loss_d})
            # 3. Image net, then text net (SSAH.py train_img_net / train_txt_net).
            for m in MODS:
                nets[m].train()
                for idx in groups(passes[m], opts[m], rates[m], epoch):
                    idx = idx.to(device)
                    h, f, p = nets[m](x[m][idx])
                    t = ssah_guided_loss(h, f, p, labels[idx], feat_l, code_l, label_similarity(labels[idx], labels), cfg)
                    t["adv"] = adversarial_generator_loss(discs[m], f, cfg.reproduce_tf_bug)
                    loss = (cfg.alpha * t["pair_feat"] + cfg.gamma * t["pair_code"] + cfg.beta * t["quant"]
                            + cfg.eta * t["label"] + cfg.delta * t["adv"])
                    opts[m].zero_grad(set_to_none=True)
                    loss.backward()
                    opts[m].step()
                    loop.step({f"loss_{m}": loss, f"loss_adv_{m}": t["adv"]})
            # The discriminators got gradients from the generator terms; they are not theirs to apply.
            opt_d.zero_grad(set_to_none=True)
        record = loop.finish()
        result = TorchEncoder(bits, code_nets, device)
        result.fit_record = record
        return result


def check_guide(network: str, codes: torch.Tensor, labels: torch.Tensor, epoch: int) -> None:
    """Raise GuideCollapseError unless the guide's sign codes over the training items take at
    least as many distinct values as there are classes (or distinct label rows, or 2^bits,
    when fewer)."""
    n_classes, bits = labels.shape[1], codes.shape[1]
    rows = torch.unique(labels, dim=0).shape[0]
    need = min(n_classes, rows, 2 ** min(bits, 62))
    distinct = torch.unique(codes >= 0, dim=0).shape[0]
    if distinct < need:
        raise GuideCollapseError(
            f"ssah: the {network} gives {distinct} distinct code(s) for {n_classes} classes "
            f"({rows} distinct label rows) after its passes of epoch {epoch}: it has collapsed, and the image "
            "and text networks it guides would learn (nearly) one code for every item. Lower lr_label.")


def discriminator_loss(discs: dict[str, Discriminator], feats: dict[str, torch.Tensor], feat_label: torch.Tensor) -> torch.Tensor:
    """Return SSAH's Loss_D: mean of BCE(D_v(F_v), 0) and BCE(D_v(F_L), 1) over v in {image, text}."""
    total = feat_label.new_zeros(())
    for m in MODS:
        fake, real = discs[m](feats[m]), discs[m](feat_label)
        total = total + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        total = total + F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
    return total / 4.0
