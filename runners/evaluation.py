"""Evaluation of a trained encoder on a data set's splits (no tracking: usable anywhere).

Final numbers: the query set against the retrieval set, both directions, under the relevance
the data set declares (labels or caption pairing). Model selection: within the validation split,
never the query set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

import metrics
from datasets import CrossModalData, Split
from methods.base import Encoder
from methods.selection import validation_scores

from . import artifacts

DIRECTIONS = {"i2t": ("image", "text"), "t2i": ("text", "image")}


def relevance(split: Split, modality: str) -> torch.Tensor:
    """Return the relevance targets of `split`'s `modality` rows for metrics (the split decides:
    multi-hot labels, or caption-pairing targets)."""
    return torch.from_numpy(split.relevance_targets(modality))


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
    values: dict[str, float] = {}
    per_query: dict[str, np.ndarray] = {}
    curve_data: dict[str, dict[str, Any]] = {}
    for direction, (q_mod, r_mod) in DIRECTIONS.items():
        q, r = codes["query", q_mod], codes["retrieval", r_mod]
        q_rel, r_rel = relevance(data.query, q_mod), relevance(data.retrieval, r_mod)
        # One ranking per direction gives every number and the per-query APs behind them.
        by_query = metrics.evaluate_hashing_per_query(q, r, q_rel, r_rel)
        for key, per in by_query.items():
            values[f"{key}_{direction}"] = float(per.nanmean())  # NaN only where hashnet drops a query
        per_query[direction] = by_query["map"].cpu().numpy()

        q_emb, r_emb = encoder.embed(q_mod, getattr(data.query, q_mod)), encoder.embed(r_mod, getattr(data.retrieval, r_mod))
        if q_emb is not None and r_emb is not None:
            values[f"map_cosine_{direction}"] = float(metrics.mean_average_precision(q_emb, r_emb, q_rel, r_rel, metric="cosine"))
        if data.relevance == "pairing":
            # Caption numbers, both directions at once (runners/captions.py): Recall@1/5/10 in percent,
            # mean recall per direction, medr, meanr, rsum (percent); fold means when the protocol has folds.
            if direction == "i2t":
                from .captions import caption_values

                values.update(caption_values(codes["query", "image"], codes["query", "text"], data))
        if curves:
            ks = artifacts.precision_ks(len(r))
            curve_data[direction] = {
                "pr": metrics.pr_curve(q, r, q_rel, r_rel, average="micro"),
                "p_at_k": (ks, metrics.precision_at_k(q, r, q_rel, r_rel, ks).tolist()),
            }
    return Evaluation(values, per_query, curve_data)


def validation_map(encoder: Encoder, data: CrossModalData) -> float:
    """Return the model-selection score: mean of I->T and T->I mAP@all within the validation split,
    the same score early stopping uses (the query set is never looked at)."""
    if data.validation is None:
        raise ValueError(f"{data.name} has no validation split")
    return validation_scores(encoder, data.validation)["val_map"]
