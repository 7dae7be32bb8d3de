"""The local spool: a cell's results are written here, on the local disk, before they go to MLflow,
so a tracking server that dies (or a store that fills up) loses nothing that was trained.

Where: `--spool DIR`, else $XMH_SPOOL, else `<store>.spool/` beside a sqlite store (the store
`sqlite:///runs/mlflow.db` spools to `runs/mlflow.db.spool/`), else, for a tracking server,
`~/.cache/xmodal-hash-bench/spool/<server>/` ($XDG_CACHE_HOME is honoured).

One folder per cell, `<run_key>-<id>/`, holding what runners.run.run_cell would have logged:

    entry.json    the MLflow URI and experiment, the run key, the id of the run that claimed the
                  cell, the run name, its tags and params, its final metrics, every per-step value
                  the method reported (key, value, step, timestamp), and the status to set
    artifacts/    codes.npz, config.json, eval/ (curves.csv, per_query.npz, the PR and P@k figures)

A folder is built as `.staging-<pid>-<id>/` and renamed into place when complete, so a crash
leaves either a whole entry or a staging folder (removed later), never half an entry. The next
runners.run / runners.compare on that store uploads every entry (logging into the run that
claimed the cell, or a new run if that one is gone) and then removes it; a spooled cell counts as
finished only once uploaded. An entry whose cell another process finished meanwhile is dropped.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

from .tracking import TrackingError, local_store_path, claim_state, holder

SPOOL_ENV = "XMH_SPOOL"
ENTRY_FILE = "entry.json"
FORMAT = 1


def spool_dir(uri: str, override: str | os.PathLike | None = None) -> Path:
    """Return the spool folder of the MLflow store `uri` (see the module docstring)."""
    chosen = override or os.environ.get(SPOOL_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    local = local_store_path(uri)
    if local is not None:
        return local.parent / f"{local.name}.spool"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.split("://", 1)[-1]).strip("_")[:80]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "xmodal-hash-bench" / "spool" / f"{slug}-{hashlib.sha256(uri.encode()).hexdigest()[:8]}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Entry:
    """One cell's results while they are gathered: fill `artifacts` (a folder), `metrics`,
    `history`, `tags`, `status`; `commit()` makes it a whole entry of the spool."""

    def __init__(self, root: Path, uri: str, experiment: str, run_key: str, run_id: str | None, run_name: str,
                 tags: Mapping[str, Any], params: Mapping[str, Any], since: int = 0):
        self.since = since  # FINISHED runs of the cell that started before this (ms) do not count (--force)
        self.root, self.uri, self.experiment = Path(root), uri, experiment
        self.run_key, self.run_id, self.run_name = run_key, run_id, run_name
        self.tags = {k: str(v) for k, v in tags.items()}
        self.params = {k: str(v) for k, v in params.items()}
        self.metrics: dict[str, float] = {}
        self.history: list[tuple[str, float, int, int]] = []
        self.status = "FINISHED"
        self._id = uuid.uuid4().hex[:12]
        self._staging: Path | None = None
        self.path: Path | None = None  # once committed

    @property
    def artifacts(self) -> Path:
        """The folder of the run's artifacts (created on first use)."""
        if self._staging is None:
            self._staging = self.root / f".staging-{os.getpid()}-{self._id}"
            (self._staging / "artifacts").mkdir(parents=True)
        return self._staging / "artifacts"

    def record(self) -> dict[str, Any]:
        return {"format": FORMAT, "tracking_uri": self.uri, "experiment": self.experiment, "run_key": self.run_key,
                "run_id": self.run_id, "run_name": self.run_name, "status": self.status, "tags": self.tags,
                "params": self.params, "metrics": {k: float(v) for k, v in self.metrics.items()},
                "history": [list(row) for row in self.history], "since": self.since, "written": time.time(), "pid": os.getpid()}

    def commit(self) -> Path:
        """Write entry.json and move the entry into place atomically; return its folder. On an
        error (a full disk) nothing is left behind and the error is raised."""
        try:
            staging = self.artifacts.parent
            tmp = staging / f"{ENTRY_FILE}.tmp"
            tmp.write_text(json.dumps(self.record(), allow_nan=True))
            _fsync(tmp)
            os.replace(tmp, staging / ENTRY_FILE)
            final = self.root / f"{self.run_key}-{self._id}"
            os.rename(staging, final)
            _fsync(self.root)
        except BaseException:
            self.discard()
            raise
        self._staging, self.path = None, final
        return final

    def discard(self) -> None:
        """Remove what was gathered (staging folder), if not committed."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


def read_entry(path: Path) -> dict[str, Any]:
    return json.loads((path / ENTRY_FILE).read_text())


def pending(root: Path, uri: str, experiment: str) -> list[Path]:
    """Return the committed entries of `root` for this store and experiment, oldest first (and
    remove staging folders that dead processes left)."""
    if not root.is_dir():
        return []
    out = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".staging-"):
            pid = path.name.split("-")[1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)
            continue
        if not (path / ENTRY_FILE).is_file():
            continue
        try:
            record = read_entry(path)
        except (OSError, ValueError):
            continue  # not ours to judge; left as it is
        if record.get("tracking_uri") == uri and record.get("experiment") == experiment:
            out.append((record.get("written", 0), path))
    return [p for _, p in sorted(out)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def upload(path: Path, tracker: Any) -> tuple[str, str]:
    """Upload one entry to `tracker` and remove it; return (what happened, run id): 'uploaded',
    'dropped' (the cell was finished by another run meanwhile) or 'kept' (another process holds
    the cell now). TrackingError if the store fails (the entry stays)."""
    record = read_entry(path)
    runs = tracker.runs_of(record["run_key"])
    done = [r for r in runs if r.status == "FINISHED" and r.run_id != record["run_id"] and r.start_time >= record.get("since", 0)]
    if done:
        shutil.rmtree(path, ignore_errors=True)
        return "dropped", done[-1].run_id
    others = [r for r in runs if r.status == "RUNNING" and r.run_id != record["run_id"] and claim_state(r) is None]
    if others:
        return "kept", others[0].run_id
    own = next((r for r in runs if r.run_id == record["run_id"]), None)
    run_id = own.run_id if own is not None else tracker.start(record["run_name"], record["tags"], record["params"])
    tracker.log_history(run_id, [tuple(row) for row in record["history"]])
    tracker.log_metrics(run_id, record["metrics"])
    later = {} if record.get("pid") == os.getpid() else {"uploaded_later_by": f"pid {os.getpid()}"}
    tracker.set_tags(run_id, {**record["tags"], "spooled_at": f"{record['written']:.0f}", **later})
    artifacts = path / "artifacts"
    if artifacts.is_dir() and any(artifacts.iterdir()):
        tracker.log_artifacts(run_id, artifacts)
    tracker.finish(run_id, record["status"])
    shutil.rmtree(path, ignore_errors=True)
    return "uploaded", run_id


def upload_all(tracker: Any, root: Path, log: Callable[[str], None] = print) -> int:
    """Upload every pending entry of `root` for the tracker's store; return how many were
    uploaded. Raises TrackingError (entries stay) if the store fails."""
    entries = pending(root, tracker.uri, tracker.experiment)
    uploaded = 0
    for path in entries:
        record = read_entry(path)
        what, run_id = upload(path, tracker)
        uploaded += what == "uploaded"
        name = record["run_name"]
        log({"uploaded": f"uploaded {name} from the spool {root} (run {run_id}, {record['status']})",
             "dropped": f"spooled {name} dropped: run {run_id} finished that cell meanwhile",
             "kept": f"spooled {name} kept in {root}: run {run_id} holds that cell now"}[what])
    return uploaded


__all__ = ["Entry", "SPOOL_ENV", "TrackingError", "holder", "pending", "spool_dir", "upload", "upload_all"]
