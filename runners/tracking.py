"""The one module that talks to MLflow: find finished runs, record new ones.

Uses MlflowClient (no global active run) so several worker processes can share a store.

Faults, handled here so that no runner needs to know MLflow's exceptions:

- Creation: the first process to open a local store (a sqlite file, a folder) creates its
  tables and the experiment under a file lock beside it (`<store>.lock`), so processes started
  at once on a fresh store neither crash inside MLflow's schema migration nor leave it unusable.
- Claims: `Tracker.claim(run_key, ...)` makes the RUNNING run of a cell the claim on it: tagged
  with the claimant's host, pid and a heartbeat (a tag rewritten every `HEARTBEAT_SECONDS` by a
  background thread). A cell with a FINISHED run, or with a RUNNING run whose heartbeat is fresh,
  is not claimed again; a claim whose process is dead (same host, pid gone) or whose heartbeat is
  older than `STALE_SECONDS` is marked KILLED and taken over. Two processes that claim the same
  cell at once both create a run, wait `SETTLE_SECONDS`, and read the claims back: the oldest
  run wins, the other is deleted. `Tracker.reap()` marks every such dead claim of the
  experiment KILLED (runners.run calls it when a grid starts).
- Store faults: an unreachable tracking server, a full disk or a read-only store raise
  TrackingError, one line naming the store and what went wrong. MLflow's HTTP retries are
  bounded for our processes (`HTTP_DEFAULTS`, set only where the environment does not set them):
  a dead server is given up after seconds, not the ~8 minutes of MLflow's defaults.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from .artifacts import EVAL_DIR, PER_QUERY_FILE, read_per_query
from .records import RunRecord

# Reading per-query APs back for the leaderboard downloads small artifacts; no progress bar each time.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Bounded HTTP retries for a tracking server (MLflow's defaults: 7 retries, backoff factor 2 and a
# 120 s timeout, about 8 minutes on a dead server before one call fails). Ours: 2 retries 1 s and
# 2 s apart, 20 s per attempt: a refused connection fails in ~3 s, a server that hangs in ~65 s.
# A value already in the environment wins.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
                 # MLflow's own chatter out of the progress display: no "View run ... at: URL" per run
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
for _name, _value in HTTP_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
# Schema migration notes (alembic) and the full traceback MLflow logs before raising a database
# error (we report that error in one line) stay out of the terminal.
logging.getLogger("alembic").setLevel(logging.WARNING)
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

HEARTBEAT_SECONDS = float(os.environ.get("XMH_HEARTBEAT_SECONDS", "15"))
STALE_SECONDS = float(os.environ.get("XMH_CLAIM_STALE_SECONDS", "120"))  # 8 missed heartbeats
SETTLE_SECONDS = float(os.environ.get("XMH_CLAIM_SETTLE_SECONDS", "1"))  # more than the clocks' skew
HOST = socket.gethostname()


class TrackingError(RuntimeError):
    """The store cannot be used now: an unreachable server, a full disk, a read-only store. The
    message is one line naming the store."""


def store_fault(exc: BaseException) -> str | None:
    """Return what is wrong with the store if `exc` says it is unreachable, full or read-only
    (None for any other error: a bug, a bad value)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return f"is out of space ({os.strerror(exc.errno)})"
        if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return f"is not writable ({os.strerror(exc.errno)}: {getattr(exc, 'filename', '') or ''})".replace(": )", ")")
        text = str(exc)
        low = text.lower()
        if "database or disk is full" in low or "no space left" in low:
            return "is out of space (database or disk is full)"
        if "readonly database" in low or "read-only file system" in low or "unable to open database" in low:
            return "is read-only (" + ("attempt to write a readonly database" if "readonly" in low else
                                       "read-only file system" if "read-only" in low else "unable to open database file") + ")"
        if text.startswith("API request to") and ("failed with" in text or "Max retries" in text):
            detail = "connection refused" if "refused" in low else "timed out" if "timeout" in low or "timed out" in low \
                else "too many error responses" if "too many" in low else "no answer"
            return f"did not answer ({detail}; gave up after {os.environ.get('MLFLOW_HTTP_REQUEST_MAX_RETRIES')} retries)"
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def _store(uri: str) -> Iterator[None]:
    """Turn a store fault raised inside into TrackingError (other errors pass unchanged)."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        fault = store_fault(exc)
        if fault is None:
            raise
        raise TrackingError(f"the MLflow store {uri} {fault}") from exc


def local_store_path(uri: str) -> Path | None:
    """Return the file or folder of a local store (sqlite file, file: URI, plain path), or None."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve()
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file://").removeprefix("file:")).resolve()
    if "://" not in uri:
        return Path(uri).resolve()
    return None


@contextmanager
def creation_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on `<store>.lock` beside a local store (no lock for a server: it
    creates its own tables once)."""
    path = local_store_path(uri)
    if path is None:
        yield
        return
    lock = path.parent / f"{path.name}.lock"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")
    except OSError as exc:
        if path.exists():  # an existing store in a read-only folder: reading needs no lock
            yield
            return
        raise TrackingError(f"the MLflow store {uri} cannot be created: {os.strerror(exc.errno or 0)} ({lock})") from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def claim_state(record: RunRecord, now: float | None = None) -> str | None:
    """Return why a RUNNING run's claim is dead ('its process ... died', 'no heartbeat for ...'),
    or None while it is held (its process alive, its heartbeat fresh)."""
    now = time.time() if now is None else now
    tags = record.tags
    if tags.get("claim_host") == HOST and tags.get("claim_pid", "").isdigit() and not _pid_alive(int(tags["claim_pid"])):
        return f"its process (pid {tags['claim_pid']} on {HOST}) died"
    try:
        beat = float(tags.get("heartbeat", record.start_time / 1000))
    except ValueError:
        beat = record.start_time / 1000
    if now - beat > STALE_SECONDS:
        return f"no heartbeat for {now - beat:.0f}s (over {STALE_SECONDS:.0f}s: its process hangs or died elsewhere)"
    return None


def reaped_line(record: RunRecord, why: str) -> str:
    """Return the console line for a run marked KILLED because its claim was dead."""
    return (f"marked run {record.run_id} ({record.tags.get('label', '?')} {record.tags.get('bits', '?')}b seed "
            f"{record.tags.get('seed', '?')}) KILLED: {why}")


def holder(record: RunRecord) -> str:
    """Return who holds a claim: 'pid N on HOST' (and the Dask worker, if any)."""
    where = f"pid {record.tags.get('claim_pid', '?')} on {record.tags.get('claim_host', '?')}"
    return where + (f", Dask worker {record.tags['dask_worker']}" if record.tags.get("dask_worker") else "")


class _Heartbeat(threading.Thread):
    """Rewrites a run's heartbeat tag every HEARTBEAT_SECONDS until stopped (store faults ignored:
    the fit goes on, and its result goes to the spool)."""

    def __init__(self, client: MlflowClient, run_id: str):
        super().__init__(daemon=True, name=f"heartbeat-{run_id[:8]}")
        self.client, self.run_id, self.stopped = client, run_id, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            try:
                self.client.set_tag(self.run_id, "heartbeat", f"{time.time():.3f}")
            except Exception:
                pass

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
        with creation_lock(self.uri), _store(self.uri):  # one process creates the tables and the experiment
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                try:
                    self.client.create_experiment(experiment, artifact_location=default_artifact_location(self.uri, experiment))
                except Exception as exc:  # a server's experiment another process created just now
                    if "RESOURCE_ALREADY_EXISTS" not in str(getattr(exc, "error_code", "")) + str(exc):
                        raise
                found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id
        self.experiment = experiment
        self._per_query: dict[str, dict] = {}
        self._heartbeats: dict[str, _Heartbeat] = {}

    def guard(self) -> Any:
        """A context in which store faults become TrackingError naming this store."""
        return _store(self.uri)

    # --- claims ----------------------------------------------------------------------------------

    def reap(self, records: Iterable[RunRecord] | None = None) -> list[tuple[RunRecord, str]]:
        """Mark KILLED every RUNNING run (of `records`, or of the whole experiment) whose claim is
        dead (see claim_state), tagged with why; return (record, why) of each."""
        reaped = []
        with self.guard():
            running = [r for r in (self.runs("RUNNING") if records is None else records) if r.status == "RUNNING"]
            for record in running:
                why = claim_state(record)
                if why is not None:
                    self.set_tags(record.run_id, {"error": f"never finished: {why}"})
                    self.client.set_terminated(record.run_id, status="KILLED")
                    reaped.append((record, why))
        return reaped

    def claim(self, run_key: str, run_name: str, tags: Mapping[str, Any], params: Mapping[str, Any],
              since: int = 0, on_reap: Callable[[RunRecord, str], None] | None = None) -> str | RunRecord:
        """Claim the cell `run_key`: return the id of a new RUNNING run that holds it (its heartbeat
        beating until `release`), or the record of the run that finished it (FINISHED runs started
        before `since`, ms, do not count: --force) or holds it now. A dead claim on the cell is
        marked KILLED first and passed to `on_reap` (record, why) so the takeover is reported."""
        with self.guard():
            runs = self.runs_of(run_key)
            done = [r for r in runs if r.status == "FINISHED" and r.start_time >= since]
            if done:
                return done[-1]
            reaped = self.reap([r for r in runs if r.status == "RUNNING"])
            if on_reap is not None:
                for record, why in reaped:
                    on_reap(record, why)
            dead = {r.run_id for r, _ in reaped}
            held = [r for r in runs if r.status == "RUNNING" and r.run_id not in dead]
            if held:
                return held[0]
            claim_tags = {**tags, "claim_host": HOST, "claim_pid": os.getpid(), "claim_id": uuid.uuid4().hex[:12],
                          "heartbeat": f"{time.time():.3f}"}
            run_id = self.start(run_name, claim_tags, params)
            time.sleep(SETTLE_SECONDS)  # anyone claiming after this saw our run, and started later
            runs = self.runs_of(run_key)
            done = [r for r in runs if r.status == "FINISHED" and r.start_time >= since]
            rivals = sorted((r for r in runs if r.status == "RUNNING" and (r.run_id == run_id or claim_state(r) is None)),
                            key=lambda r: (r.start_time, r.run_id))
            winner = done[-1] if done else (rivals[0] if rivals else None)
            if winner is not None and winner.run_id != run_id:
                self.client.delete_run(run_id)  # lost the race: leave no trace
                return winner
        beat = _Heartbeat(self.client, run_id)
        beat.start()
        self._heartbeats[run_id] = beat
        return run_id

    def release(self, run_id: str) -> None:
        """Stop a claim's heartbeat (the run's status is set by finish)."""
        beat = self._heartbeats.pop(run_id, None)
        if beat is not None:
            beat.stopped.set()

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

    def log_metrics(self, run_id: str, values: Mapping[str, float], step: int = 0, timestamp: int | None = None) -> None:
        """Log numeric values at `step` (non-finite values are skipped: MLflow rejects NaN in some stores)."""
        now = int(time.time() * 1000) if timestamp is None else timestamp
        items = [Metric(k, float(v), now, step) for k, v in values.items() if v == v and abs(float(v)) != float("inf")]
        for i in range(0, len(items), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=items[i: i + _MAX_BATCH])

    def log_history(self, run_id: str, rows: Iterable[tuple[str, float, int, int]]) -> None:
        """Log (key, value, step, timestamp ms) rows: logging the same rows again adds nothing."""
        items = [Metric(k, float(v), int(ts), int(step)) for k, v, step, ts in rows if v == v and abs(float(v)) != float("inf")]
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
        """Close the run as FINISHED, FAILED or KILLED (and stop its claim's heartbeat)."""
        self.release(run_id)
        self.client.set_terminated(run_id, status=status)


def _guarded(method: Any) -> Any:
    def call(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        with _store(self.uri):
            return method(self, *args, **kwargs)

    call.__name__, call.__doc__, call.__wrapped__ = method.__name__, method.__doc__, method
    return call


for _method in ("runs", "runs_of", "finished", "start", "log_metrics", "log_history", "set_tags", "log_artifacts",
                "per_query", "curves", "download", "status", "finish"):
    setattr(Tracker, _method, _guarded(getattr(Tracker, _method)))


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
