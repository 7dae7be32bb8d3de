"""Network building blocks shared by the methods: MLP towers (a sparse first layer for tag
inputs), the official N(0, 0.01^2) init, LRN, SSAH's discriminator, DSCMR's common-space network."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, *, dropout: float = 0.0, out_act: nn.Module | None = None) -> nn.Sequential:
    """Return Linear-ReLU(-Dropout) layers through `hidden`, then Linear to `out_dim` (+ out_act)."""
    layers: list[nn.Module] = []
    dim = in_dim
    for width in hidden:
        layers += [nn.Linear(dim, width), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        dim = width
    layers.append(nn.Linear(dim, out_dim))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


def normal_init_(module: nn.Module, std: float = 0.01) -> nn.Module:
    """Re-draw every weight and bias of `module` as N(0, std^2); return it. The official init of
    DCMH (net_structure_txt.m, net_structure_img.m: 0.01 * randn for weights and biases) and of
    SSAH (tnet.py: tf.random_normal(stddev=1.0) * 0.01)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


# --------------------------------------------------------------------------------------------
# Sparse first layers: bag-of-words tags (~5 of 1,386 active) make a dense Linear waste >99 % of
# its multiply-adds. SparseLinear computes the same function with embedding_bag.


class SparseLinear(nn.Module):
    """y = x W + b like nn.Linear(in_dim, out_dim) (same init), computed from x's nonzeros.

    The weight is stored transposed, (in_dim, out_dim), as an embedding table, times a scalar
    `scale` buffer (1 unless an optimiser folds weight decay into it, see methods.optim.LazyDecaySGD): the
    effective weight is scale * weight. `sparse_grad=True` gives a sparse gradient that touches
    only the rows of active inputs.
    """

    def __init__(self, in_dim: int, out_dim: int, *, sparse_grad: bool = False):
        super().__init__()
        ref = nn.Linear(in_dim, out_dim)  # borrow nn.Linear's init so both variants start alike
        self.weight = nn.Parameter(ref.weight.detach().t().contiguous())
        self.bias = nn.Parameter(ref.bias.detach().clone())
        self.register_buffer("scale", torch.ones(()))
        self.sparse_grad = sparse_grad
        self.in_features, self.out_features = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.nonzero(as_tuple=True)
        values = x[rows, cols]
        offsets = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        offsets[1:] = torch.bincount(rows, minlength=x.shape[0]).cumsum(0)[:-1]
        out = F.embedding_bag(cols, self.weight, offsets, mode="sum", per_sample_weights=values,
                              sparse=self.sparse_grad, include_last_offset=False)
        return out * self.scale + self.bias


def is_sparse(features: np.ndarray, threshold: float = 0.05) -> bool:
    """Return True when at most `threshold` of the entries are nonzero (tag BoW, not fc7/LDA)."""
    return float(np.count_nonzero(features)) <= threshold * features.size


def tower(in_dim: int, hidden: Sequence[int], out_dim: int, *, sparse_input: bool = False,
          sparse_grad: bool = False, out_act: nn.Module | None = None) -> nn.Sequential:
    """Return mlp(...) whose first Linear is a SparseLinear when the input is sparse (same math)."""
    net = mlp(in_dim, hidden, out_dim, out_act=out_act)
    if sparse_input:
        first = net[0]
        assert isinstance(first, nn.Linear)
        net[0] = SparseLinear(in_dim, first.out_features, sparse_grad=sparse_grad)
    return net


class Center(nn.Module):
    """Subtract a fixed mean vector (a buffer): the training mean, kept inside the encoder."""

    def __init__(self, mean: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.mean


# --------------------------------------------------------------------------------------------
# Networks


class Discriminator(nn.Module):
    """SSAH discriminator: feature (512) -> 512 ReLU -> 256 ReLU -> 1 logit (tnet.dis_net_*)."""

    def __init__(self, in_dim: int = 512):
        super().__init__()
        self.net = mlp(in_dim, (512, 256), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class LocalResponseNorm2d(nn.Module):
    """TF tf.nn.local_response_normalization(depth_radius=2, bias=2, alpha=1e-4, beta=0.75) on
    (N, C) features (SSAH label/text nets): x / (bias + alpha * sum of x^2 over the 2r + 1
    neighbouring channels)^beta.

    The window sum is 2r + 1 shifted slices of the zero-padded squares: the same numbers as
    nn.LocalResponseNorm (whose alpha is divided by the window size) at a fifth of its CPU time,
    which goes through avg_pool3d and was a sixth of SSAH's label-net step."""

    def __init__(self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4, beta: float = 0.75):
        super().__init__()
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, channels = self.depth_radius, x.shape[1]
        padded = F.pad(x * x, (r, r))
        window = padded[:, : channels]
        for shift in range(1, 2 * r + 1):
            window = window + padded[:, shift: shift + channels]
        return x / (self.bias + self.alpha * window).pow(self.beta)


# --------------------------------------------------------------------------------------------
# Common-space backbone (DSCMR, SAM) and an encoder that also returns embeddings


class CommonSpaceNet(nn.Module):
    """DSCMR's network (model.py IDCM_NN): per modality Linear + ReLU to `hidden`, a weight-shared
    Linear hidden -> common (u, v), a shared linear label predictor common -> C. With sparse tag
    input the text layer is a SparseLinear (same math)."""

    def __init__(self, image_dim: int, text_dim: int, n_classes: int, hidden: int = 2048, common: int = 1024,
                 *, sparse_image: bool = False, sparse_text: bool = False):
        super().__init__()
        self.towers = nn.ModuleDict({
            "image": tower(image_dim, (), hidden, sparse_input=sparse_image, out_act=nn.ReLU()),
            "text": tower(text_dim, (), hidden, sparse_input=sparse_text, out_act=nn.ReLU()),
        })
        self.shared = nn.Linear(hidden, common)
        self.predictor = nn.Linear(common, n_classes)

    def common(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Return the common-space features (before any normalisation) of modality inputs x."""
        return self.shared(self.towers[modality](x))


