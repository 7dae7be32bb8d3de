"""Typed run records: what runners, the leaderboard, rescoring and benchmarks read, instead of raw
MLflow objects (MTEB keeps one typed result per task, model and version the same way).

A RunRecord is one fit (keyed by its run key) with its scores under one metrics version; the
fit's own facts (steps, best step, stop reason, seconds) are a FitSummary.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

# Tags every run of a grid carries (runners.run writes them, from_run reads them back).
TAG_KEYS = ("run_key", "dataset", "method", "label", "bits", "seed", "code_version", "metrics_version")


@dataclass(frozen=True)
class FitSummary:
    """How a fit ended: optimizer steps run, the step whose state was kept, evaluations made,
    why it stopped ('patience', 'step_cap', 'no_validation', 'closed_form', ...), wall time."""

    steps: int = 0
    best_step: int = -1
    evaluations: int = 0
    stop_reason: str = "closed_form"
    seconds: float = 0.0
    best_score: float = float("nan")

    def metrics(self) -> dict[str, float]:
        """Return the numeric fields as MLflow metrics ('fit_steps', ...)."""
        return {"fit_steps": self.steps, "fit_best_step": self.best_step, "fit_evaluations": self.evaluations,
                "fit_seconds": self.seconds, "fit_best_val_map": self.best_score}

    @classmethod
    def from_run(cls, metrics: Mapping[str, float], tags: Mapping[str, str]) -> "FitSummary":
        return cls(int(metrics.get("fit_steps", 0)), int(metrics.get("fit_best_step", -1)),
                   int(metrics.get("fit_evaluations", 0)), tags.get("stop_reason", "unknown"),
                   float(metrics.get("fit_seconds", float("nan"))), float(metrics.get("fit_best_val_map", float("nan"))))


@dataclass(frozen=True)
class RunRecord:
    """One finished (or failed) fit of a grid cell and its scores."""

    run_id: str
    run_key: str
    status: str
    dataset: str
    method: str
    label: str
    bits: int
    seed: int
    code_version: str
    metrics_version: str | None
    metrics: Mapping[str, float]
    fit: FitSummary
    start_time: int = 0
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_run(cls, run: Any) -> "RunRecord":
        """Return the record of an MLflow Run written by runners.run."""
        tags, metrics = run.data.tags, run.data.metrics
        return cls(
            run_id=run.info.run_id, run_key=tags.get("run_key", ""), status=run.info.status,
            dataset=tags.get("dataset", ""), method=tags.get("method", ""), label=tags.get("label", tags.get("method", "")),
            bits=int(tags.get("bits", 0)), seed=int(tags.get("seed", 0)), code_version=tags.get("code_version", ""),
            metrics_version=tags.get("metrics_version"), metrics=dict(metrics),
            fit=FitSummary.from_run(metrics, tags), start_time=run.info.start_time or 0,
            params=dict(run.data.params), tags={k: v for k, v in tags.items() if not k.startswith("mlflow.")},
        )

    def config(self) -> dict[str, Any]:
        """Return the method config the fit used (params 'cfg.*', values parsed where they are JSON)."""
        out = {}
        for key, value in self.params.items():
            if key.startswith("cfg."):
                try:
                    out[key[4:]] = json.loads(value)
                except ValueError:
                    out[key[4:]] = value
        return out
