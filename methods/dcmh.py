"""DCMH: Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017), on pre-extracted features.

Loss (paper eq. 2, official MATLAB process_DCMH.m): with Theta = 1/2 F G^T, S_ij = 1[labels share one],
  J = -sum_ij (S_ij Theta_ij - log(1 + e^Theta_ij)) + gamma (|B - F|^2 + |B - G|^2) + eta (|F 1|^2 + |G 1|^2)
minimised by alternating: each epoch B = sign(gamma (F + G)), then one pass of SGD on the text net
with F fixed, one on the image net with G fixed (the MATLAB order), gradients scaled by
1/(batch * n) as in update_net.m. Codes at test time: sign of the network output.

Speed, same math: the tag input is sparse binary, so the text net's 1386 -> 8192 layer is a
SparseLinear (embedding_bag over the active tags) with a sparse gradient, and LazyDecaySGD applies
the L2 weight decay to that table through a scalar, touching only the active rows per step.

Schedule and stopping: an epoch is the MATLAB epoch (B update, a text pass, an image pass:
2 x ceil(n / 128) steps); lr = logspace(-1.5, -3) over the epochs that fit in the step cap, one
rate per epoch, so with the default cap (DCMH_demo.m's maxIter = 500 epochs) the schedule is
exactly the official one, and a smaller cap compresses the same decay. The shared stopping rule
(methods.training) evaluates once per epoch by default and keeps the best state; the official
code runs all 500 epochs and keeps the last.

Init: every weight and bias N(0, 0.01^2) (net_structure_txt.m; fc8 in net_structure_img.m).

Deviations from the official code, on purpose: F and G start at 0 as in MATLAB (the TF port
draws them at random); batches are a fresh permutation per pass (MATLAB draws every batch as
the head of a new permutation, i.e. with replacement across steps); tags are not centred
(MATLAB's normZeroMean would make the input dense; W(y - mu) + b is the same function class as
W y + b', though SGD moves the bias differently).

Deviation offered, off by default: image_hidden adds ReLU layers to the image net for feature
inputs that are not a CNN's fc7 (on fc7 the paper's trainable part is the linear fc8). Measured
on real Wikipedia (z-scored 128-d SIFT, 32 bits, seed 0, defaults otherwise): linear 0.216 /
0.169 (I->T / T->I), one 2048-unit hidden layer 0.173 / 0.142, so the default stays linear,
the paper's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datasets import Split

from .base import FitContext, HashingMethod, TorchEncoder, check_bits
from .layers import Center, SparseLinear, is_sparse, normal_init_, tower
from .losses import label_similarity, pairwise_likelihood
from .optim import LazyDecaySGD, log_uniform_schedule, set_lr
from .registry import register
from .training import TrainingLoop, batches_per_pass, seeded_generator


@dataclass(frozen=True)
class DCMHConfig:
    # Image net: the paper's CNN-F ends fc7 (4096) -> fc8 (K); on fc7 features the trainable part
    # is fc8, a linear layer. image_hidden adds ReLU layers before it: a deviation for feature
    # inputs that are not a CNN's last hidden layer (SIFT histograms), see the module docstring.
    image_hidden: tuple[int, ...] = ()
    # Text net: BoW -> 8192 ReLU -> K (paper Sec. 3.2; net_structure_txt.m).
    text_hidden: tuple[int, ...] = (8192,)
    # Weights and biases N(0, 0.01^2) (net_structure_txt.m, net_structure_img.m fc8: 0.01 * randn);
    # False: PyTorch's default init (this project's versions before 4).
    official_init: bool = True
    gamma: float = 1.0              # quantization weight (paper Sec. 4.1; DCMH_demo.m)
    eta: float = 1.0                # bit-balance weight (same)
    batch_size: int = 128           # DCMH_demo.m; 64 loses ~5 points (METHODS.md)
    # DCMH_demo.m: maxIter = 500 epochs, lr = logspace(-1.5, -3, maxIter), one rate per epoch. The
    # step cap is 500 epochs (each a text and an image pass of ceil(n / 128) steps); the decay is
    # spread over the epochs that fit in the cap, i.e. exactly the official schedule by default.
    max_epochs: int = 500
    lr_start: float = 10 ** -1.5    # DCMH_demo.m
    lr_end: float = 1e-3            # DCMH_demo.m
    # DCMH_demo.m has separate lr_img and lr_txt (equal there); this multiplies lr_txt.
    text_lr_multiplier: float = 1.0
    weight_decay: float = 5e-4      # update_net.m weights_decay
    # Centre the image features on the training mean (a constant inside the encoder), as MATLAB
    # subtracts the average image and centres the tags (normZeroMean). Without it the balance term
    # diverges on fc7 features: they are all >= 0, so the shared mean direction has curvature
    # 2 eta lr |mean x|^2 >> 2 at lr 10^-1.5 (seen on synthetic-mirflickr). A no-op on z-scored input.
    center_image: bool = True


@register("dcmh")
class DCMH(HashingMethod):
    """DCMH with alternating text/image updates and a per-epoch binary code matrix B."""

    Config = DCMHConfig
    version = "4"  # 4: official N(0, 0.01^2) init, shared stopping rule, cap = DCMH_demo.m's 500 epochs
    trained_by_steps = True

    @classmethod
    def search_space(cls, trial):
        """Return overrides drawn from an Optuna trial: gamma, eta (the paper's two weights) and rates."""
        return {
            "gamma": trial.suggest_float("gamma", 0.1, 10.0, log=True),
            "eta": trial.suggest_float("eta", 0.1, 10.0, log=True),
            "lr_start": trial.suggest_float("lr_start", 1e-3, 1e-1, log=True),
            "text_lr_multiplier": trial.suggest_float("text_lr_multiplier", 1.0, 100.0, log=True),
        }

    def fit(self, train: Split, bits: int, ctx: FitContext) -> TorchEncoder:
        bits = check_bits(bits)
        cfg: DCMHConfig = self.config
        device = ctx.torch_device()
        gen = seeded_generator(ctx.seed)
        towers = {
            "image": tower(train.image.shape[1], cfg.image_hidden, bits, sparse_input=is_sparse(train.image), sparse_grad=True),
            "text": tower(train.text.shape[1], cfg.text_hidden, bits, sparse_input=is_sparse(train.text), sparse_grad=True),
        }
        if cfg.official_init:
            for net in towers.values():
                normal_init_(net)
        nets = {m: (nn.Sequential(Center(train.image.mean(0)), *t) if m == "image" and cfg.center_image else t).to(device)
                for m, t in towers.items()}
        feats = {m: torch.from_numpy(getattr(train, m)).to(device) for m in ("image", "text")}
        labels = torch.from_numpy(train.labels).to(device)
        n = len(train)
        # F and G start at zero as in process_DCMH.m, so B = sign(0) = 0 in the first epoch.
        buffers = {m: torch.zeros(n, bits, device=device) for m in ("image", "text")}
        optims = {
            m: LazyDecaySGD(nets[m].parameters(), lr=cfg.lr_start, weight_decay=cfg.weight_decay,
                            sparse_modules=[x for x in nets[m] if isinstance(x, SparseLinear)])
            for m in ("image", "text")
        }
        loop = TrainingLoop(ctx, nets, lambda: TorchEncoder(bits, nets, device),
                            steps_per_epoch=2 * batches_per_pass(n, cfg.batch_size), schedule_epochs=cfg.max_epochs)
        rates = log_uniform_schedule(cfg.lr_start, cfg.lr_end, loop.cap_epochs)
        for epoch in loop.epochs():
            # MATLAB e_sign: sign with sign(0) = 0 (only matters while F = G = 0).
            codes = torch.sign(cfg.gamma * (buffers["image"] + buffers["text"]))
            for modality, other in (("text", "image"), ("image", "text")):
                net, opt, own, fixed = nets[modality], optims[modality], buffers[modality], buffers[other]
                set_lr(opt, float(rates[epoch]) * (cfg.text_lr_multiplier if modality == "text" else 1.0))
                net.train()
                for idx in loop.batches(n, cfg.batch_size, gen):
                    idx = idx.to(device)
                    out = net(feats[modality][idx])
                    own[idx] = out.detach()
                    loss = dcmh_batch_loss(out, own, idx, fixed, codes, labels, cfg.gamma, cfg.eta)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loop.step({f"loss_{modality}": loss})
        record = loop.finish()
        result = TorchEncoder(bits, nets, device)
        result.fit_record = record
        return result


def dcmh_batch_loss(out: torch.Tensor, own: torch.Tensor, idx: torch.Tensor, fixed: torch.Tensor, codes: torch.Tensor,
                    labels: torch.Tensor, gamma: float, eta: float) -> torch.Tensor:
    """Return DCMH's objective restricted to a batch, divided by (batch * n) as update_net.m does.

    out: (b, K) live outputs of the net being trained for rows idx; own: (n, K) its buffer
    (rows idx already hold out.detach()); fixed: (n, K) the other modality's buffer; codes: B.
    The gradient w.r.t. out is 1/(b n) * [1/2 (sigmoid(Theta) - S) fixed + 2 gamma (out - B) + 2 eta own^T 1].
    """
    n = own.shape[0]
    s = label_similarity(labels[idx], labels)
    likelihood = pairwise_likelihood(0.5 * out @ fixed.t(), s)
    quantization = ((codes[idx] - out) ** 2).sum()
    # Balance uses the whole column sums: this batch live, the rest from the buffer.
    rest = own.sum(0) - own[idx].sum(0)
    balance = ((out.sum(0) + rest) ** 2).sum()
    return (likelihood + gamma * quantization + eta * balance) / (len(idx) * n)
