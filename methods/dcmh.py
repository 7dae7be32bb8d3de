"""DCMH: Deep Cross-Modal Hashing (Jiang & Li, CVPR 2017), on pre-extracted features.

Loss (paper eq. 2, official code): with Theta = 1/2 F G^T and S_ij = 1[labels share one],
  J = -sum_ij (S_ij Theta_ij - log(1 + e^Theta_ij)) + gamma (|B - F|^2 + |B - G|^2) + eta (|F 1|^2 + |G 1|^2)
minimised by alternating: SGD on the image net with G fixed, on the text net with F fixed, then
B = sign(gamma (F + G)). Codes at test time: sign of the network output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from datasets import Split

from . import register
from .base import FitContext, HashingMethod, TorchEncoder, check_bits, sign_codes
from .layers import label_similarity, log_uniform_schedule, minibatches, mlp, pairwise_likelihood, seeded_generator


@dataclass(frozen=True)
class DCMHConfig:
    # Image net: the paper's CNN-F ends fc7 (4096) -> fc8 (K). On fc7 features the trainable
    # part is fc8, i.e. a linear layer; hidden widths may be added (not the paper's setting).
    image_hidden: tuple[int, ...] = ()
    # Text net: BoW -> 8192 ReLU -> K (paper, Sec. 4.1; official code).
    text_hidden: tuple[int, ...] = (8192,)
    gamma: float = 1.0              # quantization weight (paper: gamma = eta = 1)
    eta: float = 1.0                # bit-balance weight
    batch_size: int = 128           # paper / official code; 64 loses ~5 points (METHODS.md)
    epochs: int = 500               # official code's max_epoch (paper: "up to 500")
    lr_start: float = 10 ** -1.5    # official MATLAB: lr = logspace(-1.5, -3, maxIter)
    lr_end: float = 1e-3
    weight_decay: float = 5e-4      # official MATLAB weightDecay


@register("dcmh")
class DCMH(HashingMethod):
    """DCMH with alternating image/text updates and a per-epoch binary code matrix B."""

    Config = DCMHConfig
    version = "1"

    def fit(self, train: Split, bits: int, ctx: FitContext) -> TorchEncoder:
        bits = check_bits(bits)
        cfg: DCMHConfig = self.config
        device = ctx.torch_device()
        gen = seeded_generator(ctx.seed)
        nets = {
            "image": mlp(train.image.shape[1], cfg.image_hidden, bits).to(device),
            "text": mlp(train.text.shape[1], cfg.text_hidden, bits).to(device),
        }
        feats = {
            "image": torch.from_numpy(train.image).to(device),
            "text": torch.from_numpy(train.text).to(device),
        }
        labels = torch.from_numpy(train.labels).to(device)
        n = len(train)
        # Output buffers F, G start random as in the official code; B follows them.
        buffers = {m: torch.randn(n, bits, generator=gen).to(device) for m in ("image", "text")}
        codes = sign_codes(cfg.gamma * (buffers["image"] + buffers["text"])).float()
        optims = {
            m: torch.optim.SGD(nets[m].parameters(), lr=cfg.lr_start, weight_decay=cfg.weight_decay)
            for m in ("image", "text")
        }
        rates = log_uniform_schedule(cfg.lr_start, cfg.lr_end, cfg.epochs)
        for epoch in range(cfg.epochs):
            totals = {}
            for modality, other in (("image", "text"), ("text", "image")):
                net, opt, own, fixed = nets[modality], optims[modality], buffers[modality], buffers[other]
                for group in opt.param_groups:
                    group["lr"] = float(rates[epoch])
                net.train()
                total = 0.0
                for idx in minibatches(n, cfg.batch_size, gen):
                    idx = idx.to(device)
                    out = net(feats[modality][idx])
                    own[idx] = out.detach()
                    s = label_similarity(labels[idx], labels)
                    theta = 0.5 * out @ fixed.t()
                    likelihood = pairwise_likelihood(theta, s)
                    quantization = ((codes[idx] - out) ** 2).sum()
                    # Balance uses the whole column sums: this batch live, the rest from the buffer.
                    rest = own.sum(0) - own[idx].sum(0)
                    balance = ((out.sum(0) + rest) ** 2).sum()
                    loss = (likelihood + cfg.gamma * quantization + cfg.eta * balance) / (len(idx) * n)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += float(loss) * len(idx)
                totals[f"loss_{modality}"] = total / n
            codes = sign_codes(cfg.gamma * (buffers["image"] + buffers["text"])).float()
            ctx.report(epoch, totals)
        return TorchEncoder(bits, nets, device)
