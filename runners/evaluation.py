"""Evaluation of a trained encoder on a data set's splits (no tracking: usable anywhere).

Final numbers: the query set against the retrieval set, both directions. Model selection:
validation items against training items, never the query set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import metrics
from datasets import CrossModalData
from methods.base import Encoder

from . import artifacts

DIRECTIONS = {"i2t": ("image", "text"), "t2i": ("text", "image")}


def relevance_arrays(data: CrossModalData) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (query, retrieval) relevance inputs for metrics: multi-hot labels, or 1-D instance
    ids for caption-paired sets (meta relevance == 'ids')."""
    if data.meta.get("relevance") == "ids":
        return torch.from_numpy(data.query.ids), torch.from_numpy(data.retrieval.ids)
    return torch.from_numpy(data.query.labels), torch.from_numpy(data.retrieval.labels)


@dataclass
class Evaluation:
    """Final numbers of one run ('<metric>_<direction>') and what its artifacts are made of."""

    values: dict[str, float]
    per_query_ap: dict[str, np.ndarray]
    curves: dict[str, dict[str, Any]]


def evaluate_encoder(encoder: Encoder, data: CrossModalData, *, curves: bool = True) -> Evaluation:
    """Return every final metric for both directions (query set against retrieval set):
    map, map_tie_aware, map@k variants, p@k, p_within_r2 (Hamming); map_cosine for encoders with
    real-valued embeddings; Recall@1/5/10 for id-paired sets; plus per-query APs and curves."""
    codes = {
        (split, modality): encoder.encode(modality, getattr(getattr(data, split), modality))
        for split in ("query", "retrieval") for modality in ("image", "text")
    }
    for (split, modality), c in codes.items():
        if c.shape[1] != encoder.bits or not bool(((c == 1) | (c == -1)).all()):
            raise RuntimeError(f"encoder produced invalid {split} {modality} codes: shape {tuple(c.shape)}, expected ±1 x {encoder.bits}")
    q_rel, r_rel = relevance_arrays(data)
    values: dict[str, float] = {}
    per_query: dict[str, np.ndarray] = {}
    curve_data: dict[str, dict[str, Any]] = {}
    for direction, (q_mod, r_mod) in DIRECTIONS.items():
        q, r = codes["query", q_mod], codes["retrieval", r_mod]
        # One ranking per direction gives every number and the per-query APs behind them.
        by_query = metrics.evaluate_hashing_per_query(q, r, q_rel, r_rel)
        for key, per in by_query.items():
            values[f"{key}_{direction}"] = float(per.nanmean())  # NaN only where hashnet drops a query
        per_query[direction] = by_query["map"].cpu().numpy()

        q_emb, r_emb = encoder.embed(q_mod, getattr(data.query, q_mod)), encoder.embed(r_mod, getattr(data.retrieval, r_mod))
        if q_emb is not None and r_emb is not None:
            values[f"map_cosine_{direction}"] = float(metrics.mean_average_precision(q_emb, r_emb, q_rel, r_rel, metric="cosine"))
        if q_rel.ndim == 1:
            for k, v in metrics.recall_at_k(q, r, q_rel, r_rel, (1, 5, 10)).items():
                values[f"recall_at_{k}_{direction}"] = v
        if curves:
            ks = artifacts.precision_ks(len(data.retrieval))
            curve_data[direction] = {
                "pr": metrics.pr_curve(q, r, q_rel, r_rel, average="micro"),
                "p_at_k": (ks, metrics.precision_at_k(q, r, q_rel, r_rel, ks).tolist()),
            }
    return Evaluation(values, per_query, curve_data)


def validation_map(encoder: Encoder, data: CrossModalData) -> float:
    """Return the model-selection score: mean of I->T and T->I mAP@all with the validation items
    as queries and the training items as database (the query set is never looked at)."""
    if data.validation is None:
        raise ValueError(f"{data.name} has no validation split")
    val, train = data.validation, data.train
    scores = []
    for q_mod, r_mod in DIRECTIONS.values():
        scores.append(float(metrics.mean_average_precision(
            encoder.encode(q_mod, getattr(val, q_mod)), encoder.encode(r_mod, getattr(train, r_mod)),
            torch.from_numpy(val.labels), torch.from_numpy(train.labels))))
    return sum(scores) / len(scores)
