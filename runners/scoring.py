"""Scoring apart from training: encode once, store the codes, compute every number from them.

`encode_splits(encoder, data)` returns a CodeSet (the ±1 codes of every evaluated split and
modality, and real-valued embeddings where the method has them); `evaluate_codes(codes, data,
spec)` computes every final number from a CodeSet alone, so a new metric, a fixed metric or a
new cutoff rescores stored codes without retraining (runners.rescore). Final numbers: the query
set against the retrieval set, both directions, under the relevance the data set declares (labels
or caption pairing). Model selection: within the validation split, never the query set.
Embeddings are stored and scored as float16: what is scored is exactly what is stored.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

import metrics
from datasets import CrossModalData, Split
from methods.base import Encoder
from methods.selection import validation_scores

from . import artifacts
from .captions import caption_values

DIRECTIONS = {"i2t": ("image", "text"), "t2i": ("text", "image")}
MODALITIES = ("image", "text")


@dataclass(frozen=True)
class MetricSpec:
    """Which numbers a scoring computes beyond mAP@all: cutoffs and radius."""

    map_ks: tuple[int, ...] = metrics.evaluate.DEFAULT_MAP_KS
    precision_ks: tuple[int, ...] = metrics.evaluate.DEFAULT_PRECISION_KS
    radius: int = 2

    def merged(self, other: "MetricSpec") -> "MetricSpec":
        """Return a spec computing everything either spec computes."""
        return MetricSpec(tuple(sorted(set(self.map_ks) | set(other.map_ks))),
                          tuple(sorted(set(self.precision_ks) | set(other.precision_ks))), self.radius)


@dataclass
class CodeSet:
    """What a fitted model produced for evaluation, keyed '<split>.<modality>' (split: query,
    retrieval; one entry when query is retrieval): int8 ±1 codes, optional float16 embeddings."""

    bits: int
    codes: dict[str, torch.Tensor]
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)

    def get(self, split: str, modality: str, embedded: bool = False) -> torch.Tensor:
        table = self.embeddings if embedded else self.codes
        key = f"{split}.{modality}"
        return table[key] if key in table else table[f"query.{modality}"]  # query is retrieval

    def save(self, path: Path) -> None:
        """Write the set as one .npz: codes packed to bits (with their shapes), embeddings float16."""
        arrays: dict[str, np.ndarray] = {"bits": np.asarray(self.bits)}
        for key, c in self.codes.items():
            arrays[f"codes/{key}"] = np.packbits(c.numpy() > 0, axis=1)
            arrays[f"rows/{key}"] = np.asarray(c.shape[0])
        for key, e in self.embeddings.items():
            arrays[f"embeddings/{key}"] = e.numpy().astype(np.float16)
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> "CodeSet":
        """Read a set written by save()."""
        with np.load(path, allow_pickle=False) as z:
            bits = int(z["bits"])
            codes, embeddings = {}, {}
            for name in z.files:
                kind, _, key = name.partition("/")
                if kind == "codes":
                    unpacked = np.unpackbits(z[name], axis=1, count=bits).astype(np.int8)
                    codes[key] = torch.from_numpy(unpacked * 2 - 1)
                elif kind == "embeddings":
                    embeddings[key] = torch.from_numpy(z[name])
        return cls(bits, codes, embeddings)


def _eval_splits(data: CrossModalData) -> dict[str, Split]:
    return {"query": data.query} if data.query is data.retrieval else {"query": data.query, "retrieval": data.retrieval}


def encode_splits(encoder: Encoder, data: CrossModalData) -> CodeSet:
    """Return the CodeSet of `encoder` on the query and retrieval splits (codes checked ±1 x bits)."""
    codes, embeddings = {}, {}
    for split_name, split in _eval_splits(data).items():
        for modality in MODALITIES:
            key = f"{split_name}.{modality}"
            c = encoder.encode(modality, split.rows(modality))
            if c.shape != (split.rows(modality).shape[0], encoder.bits) or not bool(((c == 1) | (c == -1)).all()):
                raise RuntimeError(f"encoder produced invalid {key} codes: shape {tuple(c.shape)}, expected ±1 x {encoder.bits}")
            codes[key] = c.to(torch.int8)
            e = encoder.embed(modality, split.rows(modality))
            if e is not None:
                embeddings[key] = e.to(torch.float16)
    return CodeSet(encoder.bits, codes, embeddings)


def relevance(split: Split, modality: str) -> torch.Tensor:
    """Return the relevance targets of `split`'s `modality` rows for metrics (the split decides:
    multi-hot labels, or caption-pairing targets)."""
    return torch.from_numpy(split.relevance_targets(modality))


@dataclass
class Evaluation:
    """Final numbers of one run ('<metric>_<direction>') and what its artifacts are made of."""

    values: dict[str, float]
    per_query: dict[str, np.ndarray]  # '<metric>_<direction>' -> per-query values behind values[...]
    curves: dict[str, dict[str, Any]]


def evaluate_codes(codes: CodeSet, data: CrossModalData, spec: MetricSpec = MetricSpec(), *,
                   curves: bool = True) -> Evaluation:
    """Return every final metric for both directions from stored codes (query against retrieval):
    map, map_tie_aware, map@k variants, p@k, p_within_r (Hamming); map_cosine for sets with
    embeddings; Recall@K for caption-paired sets; plus per-query APs and curves."""
    values: dict[str, float] = {}
    per_query: dict[str, np.ndarray] = {}
    curve_data: dict[str, dict[str, Any]] = {}
    for direction, (q_mod, r_mod) in DIRECTIONS.items():
        q, r = codes.get("query", q_mod), codes.get("retrieval", r_mod)
        q_rel, r_rel = relevance(data.query, q_mod), relevance(data.retrieval, r_mod)
        # One ranking per direction gives every number and the per-query APs behind them.
        by_query = metrics.evaluate_hashing_per_query(q, r, q_rel, r_rel, map_ks=spec.map_ks,
                                                      precision_ks=spec.precision_ks, radius=spec.radius)
        if codes.embeddings:
            q_emb = codes.get("query", q_mod, embedded=True).float()
            r_emb = codes.get("retrieval", r_mod, embedded=True).float()
            by_query["map_cosine"] = metrics.mean_average_precision(q_emb, r_emb, q_rel, r_rel, metric="cosine", per_query=True)
        for key, per in by_query.items():
            values[f"{key}_{direction}"] = float(per.nanmean())  # NaN only where hashnet drops a query
            per_query[f"{key}_{direction}"] = per.cpu().numpy()
        if data.relevance == "pairing":
            # Caption numbers, both directions at once (runners/captions.py): Recall@1/5/10 in percent,
            # mean recall per direction, medr, meanr, rsum (percent); fold means when the protocol has folds.
            if direction == "i2t":
                values.update(caption_values(codes.get("query", "image"), codes.get("query", "text"), data))
                if codes.embeddings:
                    values.update(caption_values(codes.get("query", "image", embedded=True).float(),
                                                 codes.get("query", "text", embedded=True).float(), data, metric="cosine"))
        if curves:
            ks = artifacts.precision_ks(len(r))
            curve_data[direction] = {
                "pr": metrics.pr_curve(q, r, q_rel, r_rel, average="micro"),
                "p_at_k": (ks, metrics.precision_at_k(q, r, q_rel, r_rel, ks).tolist()),
            }
    return Evaluation(values, per_query, curve_data)


def evaluate_encoder(encoder: Encoder, data: CrossModalData, spec: MetricSpec = MetricSpec(), *,
                     curves: bool = True) -> Evaluation:
    """Return evaluate_codes of the encoder's CodeSet (encode, then score)."""
    return evaluate_codes(encode_splits(encoder, data), data, spec, curves=curves)


def validation_map(encoder: Encoder, data: CrossModalData) -> float:
    """Return the model-selection score: mean of I->T and T->I mAP@all within the validation split,
    the same score early stopping uses (the query set is never looked at)."""
    if data.validation is None:
        raise ValueError(f"{data.name} has no validation split")
    return validation_scores(encoder, data.validation)["val_map"]


def spec_for_metric(name: str) -> MetricSpec | None:
    """Return the MetricSpec that adds metric family `name` (e.g. 'map_at_100_topk', 'p_at_50') to
    the defaults, or None when `name` names no cutoff family."""
    parts = name.split("_")
    try:
        if name.startswith("map_at_") and len(parts) >= 4 and "_".join(parts[3:]) in metrics.MAP_AT_K_VARIANTS:
            return MetricSpec().merged(MetricSpec(map_ks=(int(parts[2]),), precision_ks=()))
        if name.startswith("p_at_") and len(parts) == 3:
            return MetricSpec().merged(MetricSpec(map_ks=(), precision_ks=(int(parts[2]),)))
    except ValueError:
        return None
    return None
