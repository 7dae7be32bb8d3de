"""Loss pieces shared by the methods (each returns a 0-d tensor unless said otherwise)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def label_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return S_ij = 1 if label rows a_i and b_j share at least one label, else 0 (float)."""
    return (a @ b.t() > 0).to(a.dtype)


def pairwise_likelihood(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Return sum_ij log(1 + e^theta) - s * theta, the negative log-likelihood of S under
    sigmoid(theta); softplus keeps it finite for large theta (the naive form overflows to NaN)."""
    return (F.softplus(theta) - s * theta).sum()


def cosine_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Return the (n_a, n_b) cosine similarities of rows, denominators clamped at eps (DSCMR)."""
    return (a @ b.t()) / (a.norm(dim=1, keepdim=True) @ b.norm(dim=1, keepdim=True).t()).clamp(min=eps)


def three_pair_likelihood(u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor, similarity) -> torch.Tensor:
    """Return the sum over (u,u), (u,v), (v,v) of the mean pairwise NLL on theta = similarity(a, b) / 2,
    S = 1[labels share one]: DSCMR's term 2 (cosine) and the hash heads' likelihood (dot product)."""
    s = label_similarity(labels, labels)
    total = u.new_zeros(())
    for a, b in ((u, u), (u, v), (v, v)):
        theta = 0.5 * similarity(a, b)
        total = total + (F.softplus(theta) - s * theta).mean()
    return total


def dscmr_label_loss(pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return mean_i ||pred_i - y_i||_2 (DSCMR term 1 for one modality; a norm, not its square)."""
    return (pred - labels).pow(2).sum(1).sqrt().mean()


def dscmr_pairwise_loss(u: torch.Tensor, v: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return DSCMR term 2: the mean pairwise NLL on theta = cos / 2 for (u,u), (u,v), (v,v),
    with S = 1[labels share one] (the paper's S; the official code uses the count y_i . y_j)."""
    return three_pair_likelihood(u, v, labels, cosine_matrix)


def hash_pairwise_loss(h_img: torch.Tensor, h_txt: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return the mean pairwise NLL on theta = h_i . h_j / 2 over (img,img), (img,txt), (txt,txt)
    pairs of a batch (DCMH's likelihood, averaged): what makes a hash head keep the semantics."""
    return three_pair_likelihood(h_img, h_txt, labels, lambda a, b: a @ b.t())


def invariance_loss(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Return mean_i ||u_i - v_i||_2 (DSCMR term 3, modality invariance)."""
    return (u - v).pow(2).sum(1).sqrt().mean()


def quantization_loss(h: torch.Tensor) -> torch.Tensor:
    """Return mean_i ||h_i - sign(h_i)||^2 / K for relaxed codes h in [-1, 1]^K."""
    return (h - torch.where(h >= 0, 1.0, -1.0).detach()).pow(2).mean()
