"""Building blocks shared by the methods: MLP towers, straight-through sign, pairwise likelihood."""
from __future__ import annotations

import math
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .base import TorchEncoder


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


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """Return sign(x) in {-1, +1} (sign(0) = +1) with the identity as its gradient."""
    return _SignSTE.apply(x)


def label_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return S_ij = 1 if label rows a_i and b_j share at least one label, else 0 (float)."""
    return (a @ b.t() > 0).to(a.dtype)


def pairwise_likelihood(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Return sum_ij log(1 + e^theta) - s * theta, the negative log-likelihood of S under
    sigmoid(theta); softplus keeps it finite for large theta (the naive form overflows to NaN)."""
    return (F.softplus(theta) - s * theta).sum()


def minibatches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Yield shuffled index tensors covering range(n) once, drawn from `generator`."""
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for i in range(0, stop, batch_size):
        yield order[i: i + batch_size]


def log_uniform_schedule(start: float, end: float, steps: int) -> np.ndarray:
    """Return `steps` learning rates spaced log-uniformly from start to end (MATLAB logspace)."""
    if steps <= 1:
        return np.array([start])
    return np.logspace(math.log10(start), math.log10(end), steps)


def seeded_generator(seed: int) -> torch.Generator:
    """Seed torch's global RNG (weight init) and return a separate generator for data order."""
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


# --------------------------------------------------------------------------------------------
# Sparse first layers: bag-of-words tags (~5 of 1,386 active) make a dense Linear waste >99 % of
# its multiply-adds. SparseLinear computes the same function with embedding_bag.


class SparseLinear(nn.Module):
    """y = x W + b like nn.Linear(in_dim, out_dim) (same init), computed from x's nonzeros.

    The weight is stored transposed, (in_dim, out_dim), as an embedding table, times a scalar
    `scale` buffer (1 unless an optimiser folds weight decay into it, see LazyDecaySGD): the
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


class LazyDecaySGD(torch.optim.Optimizer):
    """Plain SGD with L2 weight decay, p <- p - lr (g + wd p), whose sparse-gradient SparseLinear
    tables are updated lazily but exactly: W = s V, so the decay (1 - lr wd) multiplies the scalar
    s and only the rows with a gradient are touched (V_rows -= lr g / (s s'), g = dL/dV).

    Dense parameters get the usual update. The same trajectory as torch.optim.SGD up to float
    rounding (tests check it), at O(active rows) instead of O(table) cost per step.
    """

    def __init__(self, params, lr: float, weight_decay: float = 0.0, sparse_modules: Sequence[SparseLinear] = ()):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self._tables = {id(m.weight): m for m in sparse_modules}

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                module = self._tables.get(id(p))
                if module is None:
                    if p.grad.is_sparse:
                        raise ValueError("sparse gradient on a parameter not registered as a SparseLinear table")
                    p.mul_(1.0 - lr * wd).add_(p.grad, alpha=-lr)
                    continue
                s_old = module.scale.clone()
                module.scale.mul_(1.0 - lr * wd)
                # dL/dW = g / s_old; V' = W'/s' = V - lr * g / (s_old * s_new)
                alpha = float(-lr / (s_old * module.scale))
                if p.grad.is_sparse:  # index_add_ sums duplicate rows: no coalesce (a sort) needed
                    p.index_add_(0, p.grad._indices()[0], p.grad._values(), alpha=alpha)
                else:
                    p.add_(p.grad, alpha=alpha)
                if float(module.scale) < 1e-3:  # renormalise long before float32 underflows
                    p.mul_(module.scale)
                    module.scale.fill_(1.0)
        return None


# --------------------------------------------------------------------------------------------
# Loss pieces (each returns a 0-d tensor)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Return the (n_a, n_b) cosine similarities of rows, denominators clamped at eps (DSCMR)."""
    return (a @ b.t()) / (a.norm(dim=1, keepdim=True) @ b.norm(dim=1, keepdim=True).t()).clamp(min=eps)


def dscmr_label_loss(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return mean_i ||pred_i - y_i||_2 (DSCMR term 1 for one modality; a norm, not its square)."""
    return (pred - labels).pow(2).sum(1).sqrt().mean()


def dscmr_pairwise_loss(u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return DSCMR term 2: the mean pairwise NLL on theta = cos / 2 for (u,u), (u,v), (v,v),
    with S = 1[labels share one] (the paper's S; the official code uses the count y_i . y_j)."""
    s = label_similarity(labels, labels)
    total = u.new_zeros(())
    for a, b in ((u, u), (u, v), (v, v)):
        theta = 0.5 * cosine_matrix(a, b)
        total = total + (F.softplus(theta) - s * theta).mean()
    return total


def invariance_loss(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Return mean_i ||u_i - v_i||_2 (DSCMR term 3, modality invariance)."""
    return (u - v).pow(2).sum(1).sqrt().mean()


def quantization_loss(h: torch.Tensor) -> torch.Tensor:
    """Return mean_i ||h_i - sign(h_i)||^2 / K for relaxed codes h in [-1, 1]^K."""
    return (h - torch.where(h >= 0, 1.0, -1.0).detach()).pow(2).mean()


def hash_pairwise_loss(h_img: torch.Tensor, h_txt: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return the mean pairwise NLL on theta = h_i . h_j / 2 over (img,img), (img,txt), (txt,txt)
    pairs of a batch (DCMH's likelihood, averaged): what makes a hash head keep the semantics."""
    s = label_similarity(labels, labels)
    total = h_img.new_zeros(())
    for a, b in ((h_img, h_img), (h_img, h_txt), (h_txt, h_txt)):
        theta = 0.5 * a @ b.t()
        total = total + (F.softplus(theta) - s * theta).mean()
    return total


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


class View(nn.Module):
    """One modality's path through a shared model: forward(x) = fn(model, modality, x).
    Lets TorchEncoder treat a two-modality model as one module per modality."""

    def __init__(self, model: nn.Module, modality: str, fn):
        super().__init__()
        self.model, self.modality, self.fn = model, modality, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.model, self.modality, x)


class EmbeddingEncoder(TorchEncoder):
    """TorchEncoder whose encode() is sign(code_nets[m](x)) and whose embed() returns
    embed_nets[m](x), real-valued features for cosine ranking."""

    def __init__(self, bits: int, code_nets: Mapping[str, nn.Module], embed_nets: Mapping[str, nn.Module],
                 device: torch.device):
        super().__init__(bits, code_nets, device)
        self.embedders = {k: v.eval() for k, v in embed_nets.items()}

    @torch.no_grad()
    def embed(self, modality, features):  # type: ignore[override]
        """Return (n, d) float32 embeddings on the CPU, computed in batches."""
        x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
        net = self.embedders[modality]
        return torch.cat([net(x[i: i + self.batch_size].to(self.device)).float().cpu()
                          for i in range(0, len(x), self.batch_size)])


def adam(params, lr: float, betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0) -> torch.optim.Adam:
    """Return torch Adam with the fused kernel (same update rule; on CPU one pass instead of ~10
    per step: 7x faster on DSCMR's 13M parameters), or the default one where fused is unsupported."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
