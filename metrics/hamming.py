"""Hamming distances between ±1 codes."""
from __future__ import annotations

import torch


def as_pm1(codes: torch.Tensor, name: str = "codes") -> torch.Tensor:
    """Return `codes` as float32 ±1; accepts ±1 or {0, 1} entries, anything else is an error."""
    codes = torch.as_tensor(codes)
    if codes.ndim != 2 or codes.shape[0] == 0 or codes.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (items x bits) tensor, got shape {tuple(codes.shape)}")
    values = torch.unique(codes)
    if bool(((values != 1) & (values != -1)).logical_not().all()):
        return codes.float()
    if bool(((values != 0) & (values != 1)).logical_not().all()):
        return codes.float() * 2 - 1
    raise ValueError(f"{name} must contain only ±1 (or 0/1) values, found {values[:5].tolist()}")


def hamming_distance(query: torch.Tensor, retrieval: torch.Tensor) -> torch.Tensor:
    """Return (n_q, n_r) int32 Hamming distances, 0.5 * (K - q . r) for ±1 codes."""
    k = query.shape[1]
    return (0.5 * (k - query.float() @ retrieval.float().t())).round().to(torch.int32)
