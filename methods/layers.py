"""Building blocks shared by the methods: MLP towers, straight-through sign, pairwise likelihood."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

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
