"""The one module that talks to MLflow: find finished runs, record new ones.

Uses MlflowClient (no global active run) so several worker processes can share a store.
Create the store and experiment once in the parent process (`Tracker(...)`) before starting
workers: concurrent first creation of a sqlite store crashes.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

# Reading per-query APs back for the leaderboard downloads small artifacts; no progress bar each time.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "xmodal-hash-bench"
_MAX_BATCH = 900  # MLflow accepts up to 1000 metrics per log_batch call


def resolve_uri(uri: str | None = None) -> str:
    """Return the tracking URI: the argument, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def default_artifact_location(uri: str, experiment: str) -> str | None:
    """Return where a new experiment keeps artifacts: `mlartifacts/<experiment>` beside a sqlite
    file (so a store and its artifacts move together); the server's own choice otherwise."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        return (db.parent / "mlartifacts" / experiment).as_uri()
    return None


class Tracker:
    """An MLflow experiment holding one run per (dataset, method, config, bits, seed, code version)."""

    def __init__(self, uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
        self.uri = resolve_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(
            experiment, artifact_location=default_artifact_location(self.uri, experiment))
        self.experiment = experiment
        self._per_query: dict[str, dict] = {}

    def runs(self, status: str | None = "FINISHED") -> list[Any]:
        """Return all runs of the experiment that carry a run_key tag (optionally of one status)."""
        query = "tags.run_key != ''"
        if status:
            query += f" and attributes.status = '{status}'"
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=query, max_results=5000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def finished(self) -> dict[str, Any]:
        """Return {run_key: run} for finished runs; the newest wins if a key was finished twice."""
        by_key: dict[str, Any] = {}
        for run in sorted(self.runs("FINISHED"), key=lambda r: r.info.start_time or 0):
            by_key[run.data.tags["run_key"]] = run
        return by_key

    def start(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        """Create a RUNNING run with tags and params; return its id."""
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={k: str(v) for k, v in tags.items()})
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 90):
            self.client.log_batch(run.info.run_id, params=items[i: i + 90])
        return run.info.run_id

    def log_metrics(self, run_id: str, values: Mapping[str, float], step: int = 0) -> None:
        """Log numeric values at `step` (non-finite values are skipped: MLflow rejects NaN in some stores)."""
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in values.items() if v == v and abs(float(v)) != float("inf")]
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=items[i: i + _MAX_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_artifacts(self, run_id: str, folder: str | Path) -> None:
        """Copy every file of `folder` into the run's artifacts."""
        self.client.log_artifacts(run_id, str(folder))

    def per_query_ap(self, run_id: str) -> dict[str, "np.ndarray"]:
        """Return a run's per-query APs by direction (read from its per_query_ap.npz artifact)."""
        import tempfile

        import numpy as np

        if run_id not in self._per_query:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.client.download_artifacts(run_id, "per_query_ap.npz", tmp)
                with np.load(path) as z:
                    self._per_query[run_id] = {k: z[k] for k in z.files}
        return self._per_query[run_id]

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Close the run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status)


def runs_frame(runs: Iterable[Any]):
    """Return a pandas DataFrame with one row per run: run_id, tags (as columns) and metrics."""
    import pandas as pd

    rows = []
    for run in runs:
        row = {"run_id": run.info.run_id, "status": run.info.status}
        row.update({f"tag.{k}": v for k, v in run.data.tags.items() if not k.startswith("mlflow.")})
        row.update(run.data.metrics)
        rows.append(row)
    return pd.DataFrame(rows)
