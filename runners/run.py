"""Run a suite's grid: every cell MLflow does not already hold as FINISHED is trained and evaluated.

    python -m runners.run --suite benchmarks/default.toml [--methods ...] [--bits ...] [--seeds ...]

Each run records params (method config, dataset options, bits, seed), tags (run_key, code
version, git commit, dataset fingerprint, device, library versions), per-epoch training values
and final metrics for both directions. A failing cell is recorded as FAILED and the grid goes on;
an interrupted one is recorded as KILLED. Either is rerun next time.

Several runners.run processes may share one store: each cell is claimed before it trains (a
RUNNING run with a heartbeat, see runners.tracking), so each is trained once; a cell another
process holds is left to it and waited for after the others. A cell's results go to a local
spool first (runners.spool) and then to MLflow: if the store fails (a dead tracking server, a
full disk, a read-only store) the grid stops with one line (exit status 3), the trained result
stays in the spool, and the next run uploads it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from rich.console import Console

import methods
from datasets.preprocessing import describe as describe_steps
from methods import FitContext

from . import artifacts
from .cells import cell_identity, cell_key, load_cell_data
from .class_curves import plot_class_histories
from .cluster import (ClusterError, ClusterSpec, prepare_worker, run_grid_on_cluster, send_event, spec_from_args,
                      worker_name, worker_tracker)
from .grid_arguments import add_grid_arguments, in_shard, parse_shard, suite_from_args
from .scoring import encode_splits
from .identity import git_commit, metrics_version
from .progress import Reporter
from .records import FitSummary, RunRecord
from .rescore import rescore, score_into
from .spool import Entry, spool_dir, upload, upload_all
from .suite import Cell, Suite, SuiteError, cell_title
from .tracking import Tracker, TrackingError, holder, reaped_line, store_fault

HELD, REUSED = "HELD", "REUSED"  # run_cell outcomes besides FINISHED / FAILED: another process holds / finished it
STORE_FAULT = 3  # exit status when the store fails (bad input is 2)
POLL_SECONDS = float(os.environ.get("XMH_CLAIM_POLL_SECONDS", "5"))  # how often a held cell is looked at again


@dataclass
class GridReport:
    """What a grid run did: keys reused, run, rescored (stale metrics version), failed (with messages)."""

    reused: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    rescored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _environment_tags(device: str) -> dict[str, str]:
    # torch_threads: CPU reductions add in an order that depends on the thread count, so the same
    # cell fitted with 1 and with 2 threads drifts apart bit by bit (and may stop elsewhere); the run
    # key leaves the machine out on purpose, the tag says what the fit ran on.
    return {
        "device": device,
        "torch_threads": str(torch.get_num_threads()),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
    }


def prepare_store(tracker: Tracker, spool: str | Path | None = None, console: Console | None = None,
                  reap: bool = True) -> Path:
    """Upload what earlier runs left in the spool, then (with `reap`) mark runs that dead
    processes left RUNNING as KILLED; return the spool folder. TrackingError if the store fails."""
    console = console or Console(stderr=True)
    say = lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    root = spool_dir(tracker.uri, spool)
    upload_all(tracker, root, log=say)
    for record, why in (tracker.reap() if reap else []):
        say(reaped_line(record, why))
    return root


def run_grid(suite: Suite, tracker: Tracker, *, force: bool = False, workers: int = 1,
             shard: tuple[int, int] | None = None, console: Console | None = None,
             cluster: ClusterSpec | None = None, spool: str | Path | None = None) -> GridReport:
    """Run every cell of `suite` not already finished in `tracker` (all of them with force);
    finished runs scored by an older metrics version are rescored from their stored codes.

    With `cluster` (or workers > 1: a local cluster) each missing cell is one task on a Dask cluster
    (runners.cluster), the store created here, in the parent, first. Progress goes to `console`
    (stderr): a bar on a terminal, lines otherwise. First the spool of earlier runs is uploaded
    and dead runs are marked KILLED (prepare_store). TrackingError (one line) if the store fails:
    the grid stops, a trained result stays in the spool `spool`."""
    cluster = cluster or ClusterSpec(workers=workers)
    report = GridReport()
    since = int(time.time() * 1000) if force else 0
    root = prepare_store(tracker, spool, console)
    finished = {} if force else tracker.finished()
    current = metrics_version()
    todo: list[tuple[Cell, str]] = []
    stale: list[tuple[Cell, RunRecord]] = []
    for cell in suite.cells():
        key = cell_key(cell)
        if not in_shard(key, shard):
            continue
        if key not in finished:
            todo.append((cell, key))
        elif finished[key].metrics_version != current:
            stale.append((cell, finished[key]))
        else:
            report.reused.append(key)
    for cell, record in stale:  # cheap: no training, the codes are stored
        rescore(tracker, record, load_cell_data(cell))
        report.rescored.append(record.run_key)
    if not todo:
        return report
    with Reporter(len(todo), console) as reporter:
        reporter.log(f"{len(report.reused) + len(stale)} of {len(report.reused) + len(stale) + len(todo)} runs already in "
                     f"MLflow ({len(stale)} rescored); running {len(todo)}" + ("" if cluster.in_process else f" {cluster.describe()}"))
        if cluster.in_process:
            held = []
            try:
                for cell, key in todo:
                    outcome = run_cell(suite, cell, tracker, reporter, spool=root, since=since)
                    if outcome[0] == HELD:  # another process trains it: the other cells first
                        reporter.log(f"{outcome[1]}; coming back to it after the other cells")
                        held.append((cell, key))
                    else:
                        _record(report, reporter, key, outcome)
                for cell, key in held:
                    _record(report, reporter, key, await_cell(suite, cell, tracker, reporter, spool=root, since=since))
            except TrackingError as exc:
                raise TrackingError(f"{exc}; the grid stopped after {reporter.done} of {len(todo)} cells") from exc
        else:
            run_grid_on_cluster(cluster, cell_task, suite, todo, tracker,
                                lambda key, outcome, line: _record(report, reporter, key, outcome, line),
                                log=reporter.log, force=force)
    return report


def _record(report: GridReport, reporter: Reporter, key: str, outcome: tuple[str, str], line: str | None = None) -> None:
    status, message = outcome
    if status == REUSED:
        report.reused.append(key)
    else:
        (report.ran.append(key) if status == "FINISHED" else report.failed.append((key, message)))
    reporter.advance()
    reporter.log(line or message + reporter.count())


def await_cell(suite: Suite, cell: Cell, tracker: Tracker, reporter: Reporter | None = None, **kwargs: Any) -> tuple[str, str]:
    """Run a cell another process holds once it is free: wait while its claim lives (the other
    process finished it: REUSED; it died or hangs: its claim is taken over and the cell trained)."""
    while True:
        outcome = run_cell(suite, cell, tracker, reporter, **kwargs)
        if outcome[0] != HELD:
            return outcome
        if reporter:
            reporter.describe(f"waiting: {outcome[1]}")
        time.sleep(POLL_SECONDS)


def fit_summary(encoder: Any, seconds: float) -> FitSummary:
    """Return the FitSummary of a fitted encoder (closed-form methods record no training loop)."""
    record = getattr(encoder, "fit_record", None)
    if record is None:
        return FitSummary(seconds=seconds)
    return FitSummary(record.steps, record.best_step, record.evaluations, record.stop_reason, seconds, record.best_score)


def run_cell(suite: Suite, cell: Cell, tracker: Tracker, reporter: Reporter | None = None, *,
             spool: str | Path | None = None, since: int = 0) -> tuple[str, str]:
    """Claim one cell, train it, store its codes, then score them, as one MLflow run; return (final
    status, one-line message): FINISHED, FAILED, REUSED (another process finished it; FINISHED
    runs that started before `since`, ms, do not count) or HELD (another process trains it now).

    Everything goes to a spool entry first (runners.spool: the codes before scoring, so a failure
    while scoring loses no training: rescore the run), then to MLflow. Per-step values go to
    MLflow as they come while the store answers. Failures are recorded as FAILED (with the error
    and traceback as tags) and returned, not raised; an interrupt is recorded as KILLED and
    re-raised; a store fault raises TrackingError (a result already trained stays in the spool)."""
    data = load_cell_data(cell, reporter)
    key, params, version = cell_identity(cell, data)
    title = cell_title(cell)
    if reporter:
        reporter.describe(title)
    tags = {
        "run_key": key, "suite": suite.name, "dataset": cell.dataset.name, "method": cell.method.name,
        "label": cell.method.label, "bits": cell.bits, "seed": cell.seed, "code_version": version,
        "dataset_fingerprint": data.fingerprint(), "split_hash": data.meta.split_hash, "protocol": data.meta.protocol,
        "relevance": data.relevance, "preprocessing": describe_steps(data.meta.preprocessing),
        **_environment_tags(suite.device),
    }
    run_params = {**{f"cfg.{k}": json.dumps(v) for k, v in params.items()},
                  **{f"data.{k}": v for k, v in cell.dataset.options.items()},
                  **{f"data.preprocess.{k}": v for k, v in data.meta.preprocessing.items()},
                  **{f"stopping.{k}": v for k, v in dataclasses.asdict(cell.stopping).items()},
                  "bits": cell.bits, "seed": cell.seed, "method": cell.method.name, "dataset": cell.dataset.name}
    log = reporter.log if reporter else (lambda message: None)
    claim = tracker.claim(key, title, tags, run_params, since=since,
                          on_reap=lambda record, why: log(reaped_line(record, why)))
    if not isinstance(claim, str):
        if claim.status == "FINISHED":
            return REUSED, f"{title}: finished by another process (run {claim.run_id}); not trained again"
        return HELD, f"{title}: being trained by {holder(claim)} (run {claim.run_id})"
    run_id = claim
    root = spool_dir(tracker.uri, spool)
    entry = Entry(root, tracker.uri, tracker.experiment, key, run_id, title, tags, run_params, since=since)
    live = [True]  # per-step values go to MLflow too, until the store fails once

    def on_report(step: int, values: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        rows = [(f"epoch/{k}", float(v), int(step), now) for k, v in values.items()]
        entry.history.extend(rows)
        if reporter:
            reporter.step(title, step, values)
        if live[0]:
            try:
                tracker.log_history(run_id, rows)
            except TrackingError as exc:
                live[0] = False
                log(f"{title}: {exc}; training goes on, its results go to the spool {root}")

    try:
        started = time.perf_counter()
        method = methods.create(cell.method.name, cell.method.overrides)
        ctx = FitContext(seed=cell.seed, device=suite.device, validation=data.validation, stopping=cell.stopping,
                         on_report=on_report, log=log)
        encoder = method.fit(data.train.training_pairs(), cell.bits, ctx)
        fit = fit_summary(encoder, time.perf_counter() - started)
        codes = encode_splits(encoder, data)
        folder = entry.artifacts  # the fit's outputs, before anything is scored
        codes.save(folder / artifacts.CODES_FILE)
        try:  # a figure is a view of the history MLflow already has: never worth the fit
            plot_class_histories(entry.history, folder, title)
        except Exception as exc:
            if store_fault(exc):
                raise
            log(f"{title}: the per-class figures were not drawn ({type(exc).__name__}: {exc}); the fit is kept")
        artifacts.write_config(folder, {"dataset": cell.dataset.name, "dataset_options": dict(cell.dataset.options),
                                        "preprocessing": dict(data.meta.preprocessing), "method": cell.method.name,
                                        "label": cell.method.label, "config": params, "bits": cell.bits,
                                        "seed": cell.seed, "run_key": key, "code_version": version,
                                        "data": data.meta.record()})
        entry.metrics.update(fit.metrics())
        entry.tags["stop_reason"] = fit.stop_reason
        values = None
        try:
            values, score_tags = score_into(folder / artifacts.EVAL_DIR, codes, data,
                                            artifacts.run_title(cell.method.label, cell.bits, cell.dataset.name, cell.seed))
            entry.metrics.update(values)
            entry.tags.update(score_tags)
        except Exception as exc:  # the codes are kept: rescore the run
            if store_fault(exc):
                raise
            entry.status = "FAILED"
            entry.tags.update({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]})
        entry.metrics["total_seconds"] = time.perf_counter() - started
        entry.commit()  # from here on nothing trained is lost
        try:
            what, final = upload(entry.path, tracker)
        except TrackingError as exc:
            raise TrackingError(f"{exc}; {title} is kept in the spool {root} and uploads with the next run") from None
        if what == "dropped":
            return REUSED, f"{title}: finished by another process (run {final}) while this one trained; not recorded twice"
        if what == "kept":
            return REUSED, f"{title}: run {final} took it over while this one trained; this result stays in the spool {root}"
        if values is None:
            return "FAILED", f"FAILED {title}: scoring failed ({entry.tags['error']}); its codes are stored: rescore run {final}"
        return "FINISHED", (f"{title}: mAP I->T {values['map_i2t']:.4f}  T->I {values['map_t2i']:.4f}  "
                            f"({fit.seconds:.1f}s, {fit.steps} steps, {fit.stop_reason})")
    except KeyboardInterrupt:
        entry.discard()
        tracker.set_tags(run_id, {"error": "interrupted"})
        tracker.finish(run_id, "KILLED")
        raise
    except TrackingError:
        entry.discard()
        _abandon(tracker, run_id)
        raise
    except Exception as exc:  # recorded and reported; the grid goes on
        entry.discard()
        fault = store_fault(exc)
        if fault is not None:  # a full disk or a read-only folder: the spool or the store
            _abandon(tracker, run_id)
            raise TrackingError(f"the spool {root} of the MLflow store {tracker.uri} {fault}; nothing of {title} was "
                                "recorded (the store keeps no trace of it): free space, then run again") from None
        tracker.set_tags(run_id, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]})
        tracker.finish(run_id, "FAILED")
        return "FAILED", f"FAILED {title}: {type(exc).__name__}: {exc}"
    finally:
        tracker.release(run_id)


class AttemptTracker:
    """A Tracker whose new runs also carry the grid, attempt and worker tags, and whose runs that a
    later attempt marked KILLED stay so: a worker the scheduler gave up for dead (a lost network,
    missed heartbeats) that comes back and completes its fit does not finish the cell twice."""

    def __init__(self, tracker: Any, tags: Mapping[str, Any]):
        self._tracker, self._tags = tracker, dict(tags)

    def start(self, run_name: str, tags: Mapping[str, Any], params: Mapping[str, Any]) -> str:
        return self._tracker.start(run_name, {**tags, **self._tags}, params)

    def claim(self, run_key: str, run_name: str, tags: Mapping[str, Any], params: Mapping[str, Any], since: int = 0,
              on_reap: Any = None) -> Any:
        return self._tracker.claim(run_key, run_name, {**tags, **self._tags}, params, since=since, on_reap=on_reap)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        if status == "FINISHED" and self._tracker.status(run_id) == "KILLED":
            return
        self._tracker.finish(run_id, status)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tracker, name)


def cell_task(suite: Suite, cell: Cell, key: str, uri: str, experiment: str, grid: str, force: bool = False,
              threads: int | None = None) -> tuple[str, str]:
    """Run one cell on a worker (or here): the Dask task of this module's grid. Returns run_cell's
    (status, message).

    Idempotent: a FINISHED run of `key` (with `force`, one of this `grid`) is returned without
    training; runs of `key` of this grid still RUNNING are an earlier attempt's whose worker died:
    they are marked KILLED, tagged with the attempt that superseded them, before this attempt
    starts. A RUNNING run of another process (another grid, a runners.run) whose claim is alive is
    waited for (runners.tracking.Tracker.claim); a dead or stale one is taken over."""
    worker = prepare_worker(suite.imports, threads)
    title = cell_title(cell)
    here = cell_identity(cell, load_cell_data(cell))[0]
    if here != key:  # another checkout, or other data files, on this machine
        return "FAILED", (f"FAILED {title}: {worker_name(worker)} computes run key {here}, the parent {key}: "
                          "every machine needs the same commit, plug-ins and data files")
    tracker = worker_tracker(uri, experiment)
    runs = tracker.runs_of(key)
    ours = {r.run_id for r in runs if r.tags.get("grid_id") == grid}
    finished = [r for r in runs if r.status == "FINISHED" and (not force or r.run_id in ours)]
    if finished:
        earlier = finished[-1].tags.get("attempt")
        by = f"attempt {earlier} of this grid" if finished[-1].run_id in ours else "an earlier grid"
        return "FINISHED", f"{title}: already finished by {by} (run {finished[-1].run_id}); not trained again"
    attempt = len(ours) + 1
    stale = [r for r in runs if r.status == "RUNNING" and r.tags.get("grid_id") == grid]
    for record in stale:
        tracker.set_tags(record.run_id, {"error": "its worker died while it ran (never finished)",
                                         "superseded_by": f"attempt {attempt} of grid {grid} on {worker_name(worker)}"})
        tracker.finish(record.run_id, "KILLED")
    send_event(worker, kind="started", grid=grid, key=key, title=title, attempt=attempt, where=worker_name(worker),
               killed=len(stale))
    tags = {"grid_id": grid, "attempt": attempt, "dask_worker": worker_name(worker)}
    try:
        return await_cell(suite, cell, AttemptTracker(tracker, tags), since=int(time.time() * 1000) if force else 0)
    except TrackingError as exc:  # not retried: the store fails for every attempt alike
        return "FAILED", f"FAILED {title}: {exc}"


def _abandon(tracker: Tracker, run_id: str) -> None:
    """Delete a claim whose cell left nothing (best effort: the store may not answer; a run left
    RUNNING is marked KILLED by the next grid, its process being dead)."""
    tracker.release(run_id)
    try:
        tracker.client.delete_run(run_id)
    except Exception:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.run", description=__doc__.split("\n\n")[0])
    add_grid_arguments(parser)
    args = parser.parse_args(argv)
    try:
        suite = suite_from_args(args)
        parse_shard(args.shard)
        cluster = spec_from_args(args, suite.cluster)
    except SuiteError as exc:
        parser.exit(2, f"error: {exc}\n")
    try:
        shard = parse_shard(args.shard)
    except SuiteError as exc:
        parser.exit(2, f"error: {exc}\n")
    try:
        tracker = Tracker(args.tracking_uri, args.experiment)
        report = run_grid(suite, tracker, force=args.force, shard=shard, cluster=cluster, spool=args.spool)
    except ClusterError as exc:  # a scheduler that does not answer, workers that cannot take a cell
        parser.exit(2, f"error: {exc}\n")
    except TrackingError as exc:  # a dead server, a full disk, a read-only store
        parser.exit(STORE_FAULT, f"error: {exc}\n")
    print(f"{len(report.ran)} run, {len(report.reused)} reused, {len(report.failed)} failed")
    for _, message in report.failed:
        print(f"failed: {message}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    # Run the importable module's main: under `python -m` this file is __main__, whose functions
    # Dask would pickle by value (a worker would run the parent's copy of cell_task).
    from runners import run

    sys.exit(run.main())
