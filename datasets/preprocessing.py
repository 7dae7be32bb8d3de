"""One feature preprocessing step for every method, fitted on the training split only.

Steps, per modality: `none`; `l2` (each row scaled to unit norm; no statistics); `zscore`
(subtract the training mean, divide by the training standard deviation; a constant feature keeps
scale 1). `auto` picks per feature kind: `zscore` for dense features (CNN activations, SIFT
histograms, LDA proportions, whose raw scales differ by orders of magnitude between data sets),
`none` for sparse binary features (bag-of-words tags: z-scoring would make them dense and give
rare tags huge values). Statistics never see the query, retrieval or validation splits.

A suite declares the step per data set (`preprocess = "zscore"` or
`preprocess = { image = "zscore", text = "none" }`); the step taken is recorded in
`meta.preprocessing` and is part of every run's identity.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from .container import CrossModalData, DataError, Modality, Split

STEPS = ("none", "l2", "zscore")
MODALITIES: tuple[Modality, ...] = ("image", "text")
# A feature matrix is "sparse binary" when it holds only 0/1 and at most this share of nonzeros.
SPARSE_SHARE = 0.05


def is_sparse_binary(features: np.ndarray) -> bool:
    """True for 0/1 features with at most SPARSE_SHARE nonzeros (bag-of-words tags)."""
    nonzero = np.count_nonzero(features)
    return nonzero <= SPARSE_SHARE * features.size and bool(np.isin(features, (0.0, 1.0)).all())


def resolve_steps(spec: str | Mapping[str, str] | None, train: Split) -> dict[str, str]:
    """Return {modality: step} for `spec` ('auto', a step for both, or a per-modality mapping;
    None = 'auto'), choosing 'auto' from the training features. DataError on anything else."""
    spec = "auto" if spec is None else spec
    if isinstance(spec, str):
        per = {m: spec for m in MODALITIES}
    elif isinstance(spec, Mapping):
        unknown = sorted(set(spec) - set(MODALITIES))
        if unknown:
            raise DataError(f"preprocess: unknown modality {unknown[0]!r}; accepted: image, text")
        per = {m: str(spec.get(m, "auto")) for m in MODALITIES}
    else:
        raise DataError(f"preprocess: expected a step name or {{image = ..., text = ...}}, got {spec!r}")
    out = {}
    for m, step in per.items():
        if step == "auto":
            step = "none" if is_sparse_binary(train.rows(m)) else "zscore"
        if step not in STEPS:
            raise DataError(f"preprocess: unknown step {step!r} for {m}; accepted: auto, {', '.join(STEPS)}")
        out[m] = step
    return out


def _fit(step: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if step != "zscore":
        return None
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0)
    std = x64.std(axis=0)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _apply(step: str, stats: tuple[np.ndarray, np.ndarray] | None, x: np.ndarray) -> np.ndarray:
    if step == "none":
        return x
    if step == "l2":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return (x / np.where(norm > 0, norm, 1.0)).astype(np.float32)
    mean, std = stats
    return ((x - mean) / std).astype(np.float32)


def preprocess(data: CrossModalData, spec: str | Mapping[str, str] | None = "auto") -> CrossModalData:
    """Return `data` with each modality's step fitted on data.train and applied to every split;
    meta.preprocessing records the steps taken. Returns `data` itself when every step is none."""
    steps = resolve_steps(spec, data.train)
    if all(s == "none" for s in steps.values()):
        return data.with_splits(meta=replace(data.meta, preprocessing=steps))
    stats = {m: _fit(steps[m], data.train.rows(m)) for m in MODALITIES}
    done: dict[int, Split] = {}

    def transform(split: Split) -> Split:
        if id(split) not in done:  # query and retrieval are often one object: transform it once
            done[id(split)] = replace(split, **{m: _apply(steps[m], stats[m], split.rows(m)) for m in MODALITIES})
        return done[id(split)]

    new = {k: transform(v) for k, v in data.splits().items()}
    return data.with_splits(meta=replace(data.meta, preprocessing=steps), **new)


def describe(steps: Mapping[str, Any]) -> str:
    """Return 'image=zscore,text=none' for a steps mapping (for run names and tags)."""
    return ",".join(f"{m}={steps[m]}" for m in MODALITIES)
