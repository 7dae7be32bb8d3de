"""Where grids and tuning trials run: this process, a local Dask cluster, an existing Dask
scheduler, or Slurm / PBS jobs started through dask-jobqueue.

    python -m runners.run --suite my.toml --workers 4                        # a LocalCluster of 4 processes
    python -m runners.run --suite my.toml --scheduler tcp://10.0.0.5:8786    # workers started with `dask worker`
    python -m runners.run --suite my.toml --jobqueue slurm --jobs 8 \\
        --jobqueue-option queue=gpu --jobqueue-option cores=8 --jobqueue-option memory=32GB
    python -m runners.tune --method dcmh --dataset wiki --storage postgresql+psycopg2://db/optuna \\
        --scheduler tcp://10.0.0.5:8786 --trials 60

A suite may say the same in a [cluster] table (the command line wins):

    [cluster]
    jobqueue = "slurm"
    jobs = 8
    options = { queue = "gpu", cores = 8, memory = "32GB", walltime = "04:00:00",
                job_extra_directives = ["--gres=gpu:1"] }

One Dask task per missing cell (per tuning trial). Each worker runs one fit at a time: tasks ask
for the resource `fit=1`, which the local cluster and the jobqueue workers declare and workers
started by hand declare with `dask worker ADDR --nthreads T --resources fit=1`; torch uses the
worker's T threads. The parent creates the MLflow experiment (and the Optuna study) before any
task is submitted. A worker that dies hands its task to another worker (the scheduler's
`distributed.scheduler.allowed-failures`, set from --retries here); a task that raises is
resubmitted --retries times. A task is idempotent: it reads the store before training, reuses a
run of its key that an earlier attempt finished, and marks runs of its key left RUNNING by a
dead worker KILLED (tagged with the attempt that superseded them), so a cell ends with exactly
one FINISHED run.

Methods and data sets never import dask: only this module does, and only when a cluster is used
(`--workers 1`, the default, runs in this process without it).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from .suite import JOBQUEUES, Cell, ClusterError, Suite, cell_title, check_cluster_table, import_plugins

FIT_RESOURCE = "fit"  # worker resource: one fit at a time per worker
TOPIC = "xmodal-hash-bench"  # Dask event topic of the tasks' progress messages
DEFAULT_RETRIES = 3
CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler before giving up with a one-line error
LOCAL_DASHBOARD = "127.0.0.1:8787"  # the local cluster binds to loopback only
# Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536 in their workers, which also fixes glibc's mmap
# threshold at 128 KiB: every large tensor of a training step is then mmap'ed, page-faulted in and
# unmapped again (100 SAM steps on UCI, 1 thread: 4.1 s of system time against 1.2 s without it,
# beside 13 s of user time; the UCI table's SAM cells ran at 150 ms a step before, 100 after). A fit
# runs as in one process, with glibc's own (dynamic) thresholds: the config None unsets the variable.
_MALLOC_DEFAULTS = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

Log = Callable[[str], None]
Outcome = tuple[str, str]  # (final status, one-line message), as runners.run.run_cell returns
# The functions a worker runs, passed in by the module on top (this one runs no cell or trial itself):
# runners.run.cell_task(suite, cell, key, uri, experiment, grid, force, threads) -> Outcome and
# runners.tune.trial_task(storage_url, job, index, uri, experiment, grid) -> the trial's summary.
CellTask = Callable[..., Outcome]
TrialTask = Callable[..., Mapping[str, Any]]


# --- what the cluster is -------------------------------------------------------------------------

@dataclass(frozen=True)
class ClusterSpec:
    """Where tasks run: in this process (workers == 1, no scheduler, no jobqueue), a LocalCluster
    of `workers` processes, the scheduler at `scheduler` (tcp://HOST:PORT or a scheduler file),
    or `jobs` dask-jobqueue jobs of kind `jobqueue` built with `options`."""

    workers: int = 1
    scheduler: str | None = None
    jobqueue: str | None = None
    jobs: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    retries: int = DEFAULT_RETRIES
    connect_timeout: float = CONNECT_TIMEOUT

    @property
    def in_process(self) -> bool:
        return self.scheduler is None and self.jobqueue is None and self.workers <= 1

    @property
    def remote(self) -> bool:
        """True where workers may run on other machines (they need a shared store)."""
        return self.scheduler is not None or self.jobqueue is not None

    def describe(self) -> str:
        if self.scheduler:
            return f"on the Dask scheduler {self.scheduler}"
        if self.jobqueue:
            return f"on {self.jobs} {self.jobqueue} job{'s' * (self.jobs != 1)} (dask-jobqueue)"
        return f"on {self.workers} workers (a local Dask cluster)" if self.workers > 1 else "in this process"


_ADDRESS = re.compile(r"(?:(tcp|tls)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})")


def scheduler_address(text: str) -> str:
    """Return a scheduler address as tcp://HOST:PORT (a bare HOST:PORT gets tcp://), or the path
    of an existing scheduler file (*.json, as `dask scheduler --scheduler-file` writes)."""
    if text.endswith(".json"):
        if not Path(text).is_file():
            raise ClusterError(f"--scheduler: scheduler file {text!r} not found")
        return text
    match = _ADDRESS.fullmatch(text.strip())
    if not match or not 0 < int(match.group(3)) < 65536:
        raise ClusterError(f"--scheduler expects tcp://HOST:PORT (e.g. tcp://10.0.0.5:8786) or a scheduler file "
                           f"*.json, got {text!r}")
    return f"{match.group(1) or 'tcp'}://{match.group(2)}:{match.group(3)}"


def cluster_spec(cli: Mapping[str, Any], table: Mapping[str, Any] | None = None) -> ClusterSpec:
    """Return the spec of the command line's choices over a suite's [cluster] table.

    `cli` holds workers, scheduler, jobqueue, jobs, options, retries (None or absent: not given).
    Naming an engine on the command line (workers, scheduler or jobqueue) replaces the suite's."""
    table = check_cluster_table(dict(table or {}), "the suite's [cluster]")
    given = {k: v for k, v in cli.items() if v is not None and v != {}}
    if any(k in given for k in ("workers", "scheduler", "jobqueue")):  # the command line picks the engine
        same_queue = given.get("jobqueue") is not None and given["jobqueue"] == table.get("jobqueue")
        table = {k: v for k, v in table.items() if k == "retries" or (same_queue and k in ("jobs", "options"))}
    merged = {**table, **{k: v for k, v in given.items() if k != "options"}}
    merged["options"] = {**table.get("options", {}), **given.get("options", {})}
    check_cluster_table(merged, "--")
    if merged.get("scheduler") and merged.get("jobqueue"):
        raise ClusterError("give --scheduler (workers you started) or --jobqueue (workers it starts), not both")
    if merged.get("workers", 1) > 1 and (merged.get("scheduler") or merged.get("jobqueue")):
        raise ClusterError("--workers N starts a local cluster; with --scheduler or --jobqueue the cluster's "
                           "workers run the cells (leave out --workers)")
    if not merged.get("jobqueue"):
        if "jobs" in given or given.get("options"):
            raise ClusterError("--jobs and --jobqueue-option need --jobqueue slurm|pbs")
        merged.pop("jobs", None)
        merged["options"] = {}
    if merged.get("scheduler"):
        merged["scheduler"] = scheduler_address(merged["scheduler"])
    return ClusterSpec(**merged)


def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --workers, --scheduler, --jobqueue, --jobs, --jobqueue-option and --retries."""
    group = parser.add_argument_group("where it runs (a suite's [cluster] table may say the same)")
    group.add_argument("--workers", type=int, metavar="N",
                       help="a local Dask cluster of N worker processes, cores/N threads each (default: 1, this process)")
    group.add_argument("--scheduler", metavar="ADDR",
                       help="an existing Dask scheduler, tcp://HOST:PORT or a scheduler file; workers from "
                            "`dask worker ADDR --nthreads T --resources fit=1`")
    group.add_argument("--jobqueue", choices=sorted(JOBQUEUES), help="start workers as batch jobs (pip install -e '.[slurm]')")
    group.add_argument("--jobs", type=int, metavar="N", help="--jobqueue: jobs to submit (default: 1)")
    group.add_argument("--jobqueue-option", action="append", default=[], metavar="KEY=JSON",
                       help="--jobqueue: a dask-jobqueue option, e.g. queue=gpu cores=8 memory=32GB walltime=04:00:00 "
                            "'job_extra_directives=[\"--gres=gpu:1\"]' (repeatable)")
    group.add_argument("--retries", type=int, metavar="N",
                       help=f"times a cell is retried after its worker died or its task raised (default: {DEFAULT_RETRIES})")


def _kv(item: str, flag: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ClusterError(f"{flag} expects KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare word is a string: queue=gpu, memory=32GB


def cli_choices(args: argparse.Namespace) -> dict[str, Any]:
    """Return the cluster choices of parsed command-line arguments (None: not given)."""
    return {"workers": args.workers, "scheduler": args.scheduler, "jobqueue": args.jobqueue, "jobs": args.jobs,
            "retries": args.retries, "options": dict(_kv(i, "--jobqueue-option") for i in args.jobqueue_option)}


def spec_from_args(args: argparse.Namespace, table: Mapping[str, Any] | None = None) -> ClusterSpec:
    """Return the ClusterSpec of parsed arguments over a suite's [cluster] table."""
    return cluster_spec(cli_choices(args), table)


# --- opening one ---------------------------------------------------------------------------------

def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _dashboard(client: Any) -> str:
    try:
        link = client.dashboard_link
    except (KeyError, AttributeError):
        link = None
    return f"Dask dashboard: {link}" if link else "Dask dashboard: none (the scheduler serves none; it needs bokeh)"


def _check_workers(client: Any, address: str, log: Log) -> None:
    """Fail if the connected workers cannot take a fit (no 'fit' resource); note if none has joined."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    hint = f"dask worker {address} --nthreads T --resources {FIT_RESOURCE}=1"
    if not workers:
        log(f"no worker has joined {address} yet; tasks wait for workers started with: {hint}")
    elif not any(FIT_RESOURCE in (w.get("resources") or {}) for w in workers.values()):
        raise ClusterError(f"none of the {len(workers)} workers of {address} declares the resource {FIT_RESOURCE!r}, so no "
                           f"cell could ever run there; start them with: {hint}")


def _local_cluster(spec: ClusterSpec) -> Any:
    import dask
    from distributed import LocalCluster

    threads = max(1, _cores() // spec.workers)
    environ: dict[str, Any] = {f"distributed.nanny.pre-spawn-environ.{k}": threads
                               for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    environ.update(_MALLOC_DEFAULTS)
    with dask.config.set(environ):
        # No per-worker memory cap (a cell needs what its method needs, as in one process);
        # loopback only: the scheduler and dashboard have no authentication.
        return LocalCluster(n_workers=spec.workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
                            dashboard_address=LOCAL_DASHBOARD, resources={FIT_RESOURCE: 1}, memory_limit=0,
                            silence_logs=logging.ERROR)


def _jobqueue_cluster(spec: ClusterSpec, log: Log) -> Any:
    import importlib

    try:
        module = importlib.import_module("dask_jobqueue")
    except ImportError:
        raise ClusterError(f"--jobqueue {spec.jobqueue} needs dask-jobqueue: pip install -e '.[slurm]'") from None
    cls = getattr(module, JOBQUEUES[spec.jobqueue])
    submit = cls.job_cls.submit_command
    if shutil.which(submit) is None:
        raise ClusterError(f"--jobqueue {spec.jobqueue}: {submit!r} is not on PATH; run this on a machine that can "
                           "submit jobs (a login node)")
    options = dict(spec.options)
    extra = [str(a) for a in options.pop("worker_extra_args", [])]
    if "--resources" not in extra:
        extra += ["--resources", f"{FIT_RESOURCE}=1"]
    options.setdefault("processes", 1)  # one worker per job: one fit with all the job's cores
    try:
        cluster = cls(worker_extra_args=extra, **options)
    except (TypeError, ValueError) as exc:  # a misspelt option, or cores / memory missing
        raise ClusterError(f"--jobqueue {spec.jobqueue}: {exc}") from None
    try:
        log(f"each {spec.jobqueue} job runs this script:\n{cluster.job_script()}")
        cluster.scale(jobs=spec.jobs)
    except BaseException:
        cluster.close()
        raise
    return cluster


def _connect(spec: ClusterSpec, log: Log) -> Any:
    from distributed import Client

    where = {"scheduler_file": spec.scheduler} if spec.scheduler.endswith(".json") else {"address": spec.scheduler}
    try:
        client = Client(**where, timeout=spec.connect_timeout)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler {spec.scheduler} within {spec.connect_timeout:.0f}s "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no answer'}); is "
                           "`dask scheduler` running there?") from None
    try:
        _check_workers(client, client.scheduler.address, log)
    except BaseException:
        client.close()
        raise
    return client


@contextmanager
def open_cluster(spec: ClusterSpec, log: Log = print) -> Iterator[Any]:
    """Yield a distributed.Client for `spec` (not for an in-process spec); close what was
    started here (the local cluster, the jobs) on the way out, also on errors."""
    if spec.in_process:
        raise ValueError("an in-process spec opens no cluster")
    import dask
    from distributed import Client

    cluster = None
    # allowed-failures: how many workers may die holding a task before it fails (KilledWorker);
    # read by schedulers started here (local, jobqueue); a running `dask scheduler` keeps its own.
    with dask.config.set({"distributed.scheduler.allowed-failures": spec.retries}):
        if spec.scheduler:
            client = _connect(spec, log)
        else:
            cluster = _jobqueue_cluster(spec, log) if spec.jobqueue else _local_cluster(spec)
            try:
                client = Client(cluster)
            except BaseException:
                cluster.close()
                raise
    try:
        log(_dashboard(client))
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def portable_uri(uri: str) -> str:
    """Return an MLflow URI that means the same from another working directory (a relative
    sqlite file or local path made absolute); server URIs are returned unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri and not uri.startswith("file:"):
        return str(Path(uri).resolve())
    return uri


def portable_storage(url: str) -> str:
    """Return an Optuna storage URL that means the same from another working directory (a
    relative sqlite file or journal file made absolute)."""
    if url.startswith("journal:"):
        return "journal:" + str(Path(url.removeprefix("journal:")).resolve())
    return portable_uri(url)


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "journal:", "/")) or "://" not in uri


# --- on the worker -------------------------------------------------------------------------------

_trackers: dict[tuple[str, str], Any] = {}


def _worker() -> Any | None:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # not in a Dask worker (a test calling a task directly)
        return None


def worker_name(worker: Any | None) -> str:
    """Return how progress lines name a worker: its --name and address, or "this process"."""
    if worker is None:
        return "this process"
    name = str(worker.name)  # `dask worker --name w0`; a local cluster numbers its workers
    return worker.address if name in ("", worker.address) or name.isdigit() else f"{name} ({worker.address})"


def prepare_worker(imports: Sequence[str], threads: int | None) -> Any | None:
    """Set torch's threads to the worker's, import the suite's plug-ins; return the worker."""
    import torch

    worker = _worker()
    threads = threads or (worker.state.nthreads if worker is not None else None)
    if threads:
        torch.set_num_threads(threads)
    import_plugins(imports)  # a fresh process knows only the built-in methods and data sets
    return worker


def send_event(worker: Any | None, /, **message: Any) -> None:
    """Send a progress message to the parent (the scheduler adds the worker's address as "worker")."""
    if worker is not None:
        try:
            worker.log_event(TOPIC, message)
        except Exception:  # progress is best effort; the result still comes back
            pass


def worker_tracker(uri: str, experiment: str) -> Any:
    """Return this process's Tracker of (uri, experiment), made once and kept for later tasks."""
    from .tracking import Tracker

    if (uri, experiment) not in _trackers:  # the experiment exists: created by the parent
        _trackers[uri, experiment] = Tracker(uri, experiment)
    return _trackers[uri, experiment]


# --- submitting and following tasks --------------------------------------------------------------

def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class _Progress:
    """Counts outcomes and appends '[done/total, failed, ETA]' to each line."""

    def __init__(self, total: int, noun: str):
        self.total, self.noun, self.done, self.failed = total, noun, 0, 0
        self.started = time.monotonic()

    def count(self, ok: bool) -> str:
        self.done += 1
        self.failed += not ok
        elapsed = time.monotonic() - self.started
        left = self.total - self.done
        eta = f"ETA {_clock(elapsed / self.done * left)}" if left else f"all done in {_clock(elapsed)}"
        failed = f", {self.failed} failed" if self.failed else ""
        return f"  [{self.done}/{self.total} {self.noun}{failed}, {eta}]"


def _drain(events: "queue.Queue", grid: str, log: Log) -> None:
    while True:
        try:
            _, message = events.get_nowait()
        except queue.Empty:
            return
        if not isinstance(message, Mapping) or message.get("grid") != grid:
            continue  # another grid's task on a shared scheduler
        if message.get("kind") == "started":  # a cell or a trial
            retry = ""
            if message.get("attempt", 1) > 1 or message.get("killed"):
                retry = (f" (attempt {message.get('attempt')}; {message.get('killed')} run(s) of it left RUNNING by a "
                         "dead worker marked KILLED)")
            # "worker" is the address the scheduler adds; "where" names the worker as the task saw it
            log(f"started {message.get('title')} on {message.get('where', message.get('worker'))}{retry}")


def _failure(future: Any, title: str) -> str:
    from distributed.scheduler import KilledWorker

    if future.status != "error":
        return f"FAILED {title}: its task was {future.status}"
    exc = future.exception()
    if isinstance(exc, KilledWorker):
        return f"FAILED {title}: workers died running it every time ({exc}); it is rerun next time"
    return f"FAILED {title}: {type(exc).__name__}: {exc}"


def _follow(client: Any, futures: Mapping[Any, Any], grid: str, log: Log, on_done: Callable[[Any, Any], None],
            deadline: float | None = None) -> None:
    """Call on_done(future, result or None) as futures finish, logging the tasks' start events;
    cancel what is left at `deadline` (time.monotonic) or on Ctrl-C."""
    events: queue.Queue = queue.Queue()
    client.subscribe_topic(TOPIC, events.put)
    pending = set(futures)
    try:
        while pending:
            _drain(events, grid, log)
            if deadline is not None and time.monotonic() > deadline:
                client.cancel(list(pending))
                deadline = None
            ready = [f for f in pending if f.done()]
            if not ready:
                time.sleep(0.25)
                continue
            for future in ready:
                pending.discard(future)
                on_done(future, future.result() if future.status == "finished" else None)
                future.release()  # or a worker dying later makes the scheduler compute it again
        _drain(events, grid, log)
    except KeyboardInterrupt:
        client.cancel(list(pending))  # cells already running on a worker still finish there
        raise
    finally:
        client.unsubscribe_topic(TOPIC)


def run_cells(client: Any, task: CellTask, suite: Suite, todo: Sequence[tuple[Cell, str]], tracking_uri: str,
              experiment: str, on_outcome: Callable[[str, Outcome, str], None], *, log: Log = print, force: bool = False,
              retries: int = DEFAULT_RETRIES, threads: int | None = None) -> None:
    """Submit one `task` (runners.run.cell_task) per cell of `todo` ((cell, run key) pairs) to `client` and call
    on_outcome(key, (status, message), line) for each as it ends, `line` being the message to show:
    the cell's outcome with the count so far and an ETA. Cells sharing a key are trained once.
    The experiment must exist; start lines of each attempt go to `log`."""
    grid = uuid.uuid4().hex[:12]
    uri = portable_uri(tracking_uri)
    cells: dict[str, list[Cell]] = {}
    for cell, key in todo:
        cells.setdefault(key, []).append(cell)
    futures = {client.submit(task, suite, group[0], key, uri, experiment, grid, force, threads,
                             key=f"cell-{key}-{grid}", resources={FIT_RESOURCE: 1}, retries=retries, pure=False): key
               for key, group in cells.items()}
    progress = _Progress(len(todo), "cells")

    def done(future: Any, result: Outcome | None) -> None:
        key = futures[future]
        status, message = result or ("FAILED", _failure(future, cell_title(cells[key][0])))
        for _ in cells[key]:
            line = ("finished " + message if status == "FINISHED" else message) + progress.count(status in ("FINISHED", "REUSED"))
            on_outcome(key, (status, message), line)

    _follow(client, futures, grid, log, done)


def run_grid_on_cluster(spec: ClusterSpec, task: CellTask, suite: Suite, todo: Sequence[tuple[Cell, str]], tracker: Any,
                        on_outcome: Callable[[str, Outcome, str], None], *, log: Log = print, force: bool = False) -> None:
    """Open the cluster of `spec` and run the cells of `todo` on it (see run_cells)."""
    if spec.remote and _is_local_store(tracker.uri):
        log(f"note: the workers write to {portable_uri(tracker.uri)}: every worker must see that path (a shared "
            "file system); an MLflow server (--tracking-uri http://HOST:5000) is the robust choice")
    with open_cluster(spec, log) as client:
        run_cells(client, task, suite, todo, tracker.uri, tracker.experiment, on_outcome, log=log, force=force,
                  retries=spec.retries)


# --- tuning trials -------------------------------------------------------------------------------

def run_trials(client: Any, task: TrialTask, storage_url: str, jobs: Sequence[Any], counts: Sequence[int], *,
               tracking: tuple[str, str] | None, log: Log = print, retries: int = DEFAULT_RETRIES, timeout: float | None = None) -> list[dict[str, Any]]:
    """Run counts[i] trials of the study of jobs[i] on the cluster's workers, one task per trial,
    all studies at once; return what each task reported. The studies must exist (create_study
    in the parent first); `tracking` is (MLflow URI, experiment) for per-trial runs, or None."""
    grid = uuid.uuid4().hex[:12]
    uri, experiment = (portable_uri(tracking[0]), tracking[1]) if tracking else (None, "")
    storage_url = portable_storage(storage_url)
    futures = {client.submit(task, storage_url, job, i, uri, experiment, grid, key=f"trial-{job.study}-{i}-{grid}",
                             resources={FIT_RESOURCE: 1}, retries=retries, pure=False): job
               for job, count in zip(jobs, counts, strict=True) for i in range(count)}
    progress = _Progress(len(futures), "trials")
    results: list[dict[str, Any]] = []
    failures: list[str] = []

    def done(future: Any, result: dict[str, Any] | None) -> None:
        if result is None:
            failures.append(_failure(future, f"a trial of {futures[future].study}"))
            log(failures[-1] + progress.count(False))
            return
        results.append(result)
        value = "" if result["value"] is None else f": val mAP {result['value']:.4f}"
        log(f"{result['study']} trial {result['number']} {result['state']}{value} on {result['worker']}"
            + progress.count(result["state"] in ("COMPLETE", "PRUNED")))

    deadline = None if timeout is None else time.monotonic() + timeout
    _follow(client, futures, grid, log, done, deadline)
    if futures and not results:
        raise ClusterError(f"none of the {len(futures)} trials ran on the cluster; the first: {failures[0]}")
    return results


def tune_on_cluster(spec: ClusterSpec, task: TrialTask, storage_url: str, jobs: Sequence[Any], counts: Sequence[int], *,
                    tracker: Any | None, log: Log = print, timeout: float | None = None) -> list[dict[str, Any]]:
    """Open the cluster of `spec` and run the studies' trials on it (see run_trials)."""
    if spec.remote and _is_local_store(storage_url):
        log(f"note: the workers use the Optuna storage {storage_url}: every worker must reach it; PostgreSQL "
            "(postgresql+psycopg2://USER@HOST/DB) is the storage for more than one machine")
    with open_cluster(spec, log) as client:
        return run_trials(client, task, storage_url, jobs, counts, log=log, retries=spec.retries, timeout=timeout,
                          tracking=None if tracker is None else (tracker.uri, tracker.experiment))
