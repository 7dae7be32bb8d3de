"""The one module that talks to MLflow: find finished runs, record new ones.

Uses MlflowClient (no global active run) so several worker processes can share a store.
Create the store and experiment once in the parent process (`Tracker(...)`) before starting
workers: concurrent first creation of a sqlite store crashes.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .artifacts import EVAL_DIR, PER_QUERY_FILE, read_per_query
from .records import RunRecord

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

    def runs(self, status: str | None = "FINISHED") -> list[RunRecord]:
        """Return the records of all runs of the experiment that carry a run_key tag (optionally
        of one status)."""
        query = "tags.run_key != ''"
        if status:
            query += f" and attributes.status = '{status}'"
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=query, max_results=5000, page_token=token)
            out.extend(RunRecord.from_run(run) for run in page)
            token = page.token
            if not token:
                return out

    def runs_of(self, run_key: str, status: str | None = None) -> list[RunRecord]:
        """Return the records of every run of one cell (its run key), optionally of one status,
        oldest first: what a cluster task checks before it trains."""
        if not run_key or not all(c in "0123456789abcdef" for c in run_key):
            raise ValueError(f"a run key is a hex digest, got {run_key!r}")
        query = f"tags.run_key = '{run_key}'" + (f" and attributes.status = '{status}'" if status else "")
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1000)
        return sorted((RunRecord.from_run(run) for run in runs), key=lambda r: r.start_time)

    def finished(self) -> dict[str, RunRecord]:
        """Return {run_key: record} for finished runs; the newest wins if a key was finished twice."""
        by_key: dict[str, RunRecord] = {}
        for record in sorted(self.runs("FINISHED"), key=lambda r: r.start_time):
            by_key[record.run_key] = record
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

    def log_artifacts(self, run_id: str, folder: str | Path, artifact_path: str | None = None) -> None:
        """Copy every file of `folder` into the run's artifacts (under `artifact_path`)."""
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def per_query(self, run_id: str) -> dict[str, "np.ndarray"]:
        """Return a run's per-query values by '<metric>_<direction>' (its eval/per_query.npz artifact)."""
        if run_id not in self._per_query:
            with tempfile.TemporaryDirectory() as tmp:
                path = self.client.download_artifacts(run_id, f"{EVAL_DIR}/{PER_QUERY_FILE}", tmp)
                self._per_query[run_id] = read_per_query(path)
        return self._per_query[run_id]

    def curves(self, run_id: str):
        """Return a run's curves.csv (eval artifact) as a DataFrame."""
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_csv(self.client.download_artifacts(run_id, f"{EVAL_DIR}/curves.csv", tmp))

    def download(self, run_id: str, artifact: str, folder: str | Path) -> Path:
        """Copy one artifact of a run into `folder`; return its local path."""
        return Path(self.client.download_artifacts(run_id, artifact, str(folder)))

    def status(self, run_id: str) -> str:
        """Return a run's status now (RUNNING, FINISHED, FAILED, KILLED)."""
        return self.client.get_run(run_id).info.status

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """Close the run as FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status=status)


def runs_frame(records: Iterable[RunRecord]):
    """Return a pandas DataFrame with one row per run: run_id, status, tags (as columns) and metrics."""
    import pandas as pd

    rows = []
    for record in records:
        row = {"run_id": record.run_id, "status": record.status}
        row.update({f"tag.{k}": v for k, v in record.tags.items()})
        row.update(record.metrics)
        rows.append(row)
    return pd.DataFrame(rows)
