"""mAP@all by Hamming ranking with ties broken by database index (DCMH evaluator semantics)."""
from __future__ import annotations

import torch

from .hamming import as_pm1, hamming_distance


def mean_average_precision(
    query_codes: torch.Tensor,
    retrieval_codes: torch.Tensor,
    query_labels: torch.Tensor,
    retrieval_labels: torch.Tensor,
    *,
    chunk_size: int = 256,
    per_query: bool = False,
) -> torch.Tensor:
    """Return mAP@all (a 0-d tensor), or per-query APs (n_q,) if per_query.

    Relevance: label rows share at least one label. Ranking: Hamming distance ascending, ties
    in database index order (stable). A query with no relevant item has AP 0 and still counts.
    """
    q = as_pm1(query_codes, "query_codes")
    r = as_pm1(retrieval_codes, "retrieval_codes").to(q.device)
    ql = torch.as_tensor(query_labels).float().to(q.device)
    rl = torch.as_tensor(retrieval_labels).float().to(q.device)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query codes have {q.shape[1]} bits but retrieval codes have {r.shape[1]}")
    if ql.shape[0] != q.shape[0] or rl.shape[0] != r.shape[0]:
        raise ValueError("label rows must match code rows (query and retrieval)")
    aps = []
    positions = torch.arange(1, r.shape[0] + 1, device=q.device, dtype=torch.float64)
    for start in range(0, q.shape[0], chunk_size):
        dist = hamming_distance(q[start: start + chunk_size], r)
        order = torch.sort(dist, dim=1, stable=True).indices
        relevant = (ql[start: start + chunk_size] @ rl.t() > 0).gather(1, order).double()
        hits = relevant.cumsum(1)
        n_rel = relevant.sum(1)
        ap = (hits / positions * relevant).sum(1) / n_rel.clamp(min=1)
        aps.append(ap)
    out = torch.cat(aps)
    return out if per_query else out.mean()
