"""Optuna studies of methods' hyperparameters on the validation split (never the query set).

    python -m runners.tune --method sam --dataset synthetic-mirflickr --bits 32 --trials 60
    python -m runners.tune --suite benchmarks/fair/wiki.toml --trials 20 --output tuned.toml
    python -m runners.compare --suite benchmarks/fair/wiki.toml --tuned tuned.toml
    optuna-dashboard sqlite:///optuna.db

With --suite, every method of the suite on every data set gets the same trial budget (one study
per pair, at one bit length, the data preprocessed as the suite says); the best config of each
study goes into one tuned-configs file that `runners.run` / `runners.compare --tuned FILE` read,
and whose tables say that their configs are tuned. --trials is each study's budget: a rerun of
the same command (after an interruption, or with a bigger --trials) tops the studies up to it.
An --output file that already holds configs of other methods or data sets keeps them (same suite,
--trials and --bits, or the run stops before its first trial): tuning one more method adds its row.

Trial 0 is the method's default config, so the report shows what tuning gained over it. The
objective is validation mAP (mean of I->T and T->I), validation items as queries against the
training items as database. Per-epoch validation values reported by the method drive pruning.
Each trial is also an MLflow run (tags: study, trial). Storage: sqlite:///optuna.db by default;
a path ending in .log (or journal:PATH) uses Optuna's journal file; a postgresql:// URL a shared
server, so several worker processes on several machines can run the same command together.
Best parameters feed the runners: `python -m runners.compare --params-from STUDY`.

Several workers on one study (the same command started twice, or a cluster): the sampler of
trial N is seeded with --seed + N, so no two trials draw alike, and a second invocation does not
repeat the first one's draws; a trial whose parameters another trial of the study already has
(evaluated, or being evaluated) is not evaluated again: it is PRUNED with user attribute
duplicate_of (the default trial 0 two workers enqueued at once, a discrete space drawn twice).
Workers on a suite's studies share each study's --trials budget: a worker stops starting trials
once the study has that many, finished or running.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from rich.console import Console
from rich.table import Table

import datasets
import methods
from datasets import CrossModalData
from datasets.preprocessing import preprocess
from methods import FitContext, stopping_rule
from methods.base import ConfigError, HashingMethod, check_bits

from .cells import load_dataset
from .cluster import (add_cluster_arguments, cli_choices, cluster_spec, prepare_worker, send_event, tune_on_cluster,
                      worker_name, worker_tracker)
from .identity import fit_code_version, git_commit
from .scoring import validation_map
from .suite import DatasetEntry, SuiteError, check_device, load_suite, narrowing_flags, read_toml, select
from .tracking import Tracker

DEFAULT_STORAGE = "sqlite:///optuna.db"
TUNED_ROW_KEYS = ("dataset", "label", "method", "study", "default_value", "best_value")  # then overrides
PRUNE_KEY = "val_map"  # the per-epoch value a method reports for pruning
# A trial raising one of these is FAIL and the study goes on: training that diverged or collapsed,
# or (ValueError) a drawn config the data rejects, such as SePH's n_anchors above the training
# size. Anything else ends the study; on a cluster it would be retried as a dead worker is.
TRIAL_ERRORS = (RuntimeError, FloatingPointError, ValueError)


def open_storage(url: str | None) -> Any:
    """Return an Optuna storage for a URL: RDB (sqlite/postgresql/...) or a journal file."""
    url = url or DEFAULT_STORAGE
    if url.startswith("journal:") or url.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return url


def default_study_name(method: str, dataset: str, bits: int) -> str:
    return f"{method}-{dataset}-{bits}b"


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Optuna's TPE sampler seeded per trial with `seed` + the trial's number: workers that share a
    study (processes, cluster tasks, later invocations) never draw with the same random state,
    and one worker alone draws as reproducibly as one seeded TPE sampler would."""

    def __init__(self, seed: int):
        self.seed = seed
        self._samplers: dict[int, optuna.samplers.TPESampler] = {}

    def _tpe(self, trial: Any) -> optuna.samplers.TPESampler:
        if trial._trial_id not in self._samplers:
            self._samplers[trial._trial_id] = optuna.samplers.TPESampler(seed=self.seed + trial.number)
        return self._samplers[trial._trial_id]

    def infer_relative_search_space(self, study, trial):
        return self._tpe(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._tpe(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        sampler = self._samplers.pop(trial._trial_id, None)
        if sampler is not None:
            sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:  # the seeds are the trials' own
        pass


def study_algorithms(seed: int) -> dict[str, Any]:
    """Return the sampler and pruner of a study: Optuna stores neither, so every process that runs
    trials (runners.cluster's workers too) builds them again (the same ones: trial N is drawn
    with seed + N wherever it runs)."""
    return {"sampler": TrialSeededSampler(seed),
            "pruner": optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)}


_EVALUATED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def duplicate_of(study: optuna.Study, trial: optuna.Trial, key: str) -> int | None:
    """Return the number of another trial of the study with parameters `key` that is evaluated, or
    being evaluated with a lower number (trials marked duplicate_of do not count); None if none.

    Each trial writes its key before it looks (and looks again before it reports a value), so of
    two trials drawing alike at once, at most one is evaluated."""
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or other.user_attrs.get("param_key") != key or "duplicate_of" in other.user_attrs:
            continue
        if other.state in _EVALUATED or (other.state == optuna.trial.TrialState.RUNNING and other.number < trial.number):
            return other.number
    return None


def trials_owed(study: optuna.Study, budget: int) -> int:
    """Return how many trials `study` still needs to have `budget` of them: a suite's budget is per
    study, so a rerun (after an interruption, or with a bigger --trials) tops each study up rather
    than adding `budget` more. Counted: finished trials (COMPLETE, PRUNED, FAIL) and trials RUNNING
    in a live process. A trial RUNNING whose process died (its heartbeat stale) is marked FAIL here
    and listed in the study's user attribute interrupted_trials; it does not count, so its
    replacement keeps the budget equal to the other methods'."""
    states = optuna.trial.TrialState
    running = {t.number for t in study.get_trials(deepcopy=False, states=(states.RUNNING,))}
    with warnings.catch_warnings():  # "experimental" in Optuna's words
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(states.FAIL,))}
    interrupted = sorted(set(study.user_attrs.get("interrupted_trials", [])) | (running & failed))
    if interrupted:
        study.set_user_attr("interrupted_trials", interrupted)
    return max(0, budget - trials_spent(study))


def trials_spent(study: optuna.Study) -> int:
    """Return how many trials of `study` count against its budget: finished or running, not
    interrupted (see trials_owed); an enqueued (WAITING) trial is run by one of the owed ones."""
    states, interrupted = optuna.trial.TrialState, set(study.user_attrs.get("interrupted_trials", []))
    return sum(t.number not in interrupted
               for t in study.get_trials(deepcopy=False, states=(*_EVALUATED, states.FAIL, states.RUNNING)))


def create_study(storage: Any, name: str, seed: int, attrs: Mapping[str, Any]) -> optuna.Study:
    """Create (or reopen) the study with a seeded TPE sampler and a median pruner; call this in
    the parent before starting workers so the store is created once."""
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        **study_algorithms(seed),
    )
    for key, value in attrs.items():
        if study.user_attrs.get(key, value) != value:
            raise SuiteError(f"study {name!r} was created with {key}={study.user_attrs[key]!r}, not {value!r}; pick another --study-name")
        study.set_user_attr(key, value)
    if not study.trials:
        study.enqueue_trial({}, user_attrs={"is_default": True})  # trial 0: the method's defaults
    return study


def make_objective(method_name: str, dataset_name: str, data: CrossModalData, bits: int, seed: int, device: str,
                   base: Mapping[str, Any], tracker: Tracker | None, study_name: str, stopping: Mapping[str, Any] | None = None):
    """Return the objective: fit with the trial's overrides, return validation mAP.

    The enqueued default trial (user attr is_default) suggests nothing: the config's own values."""
    cls = methods.get(method_name)

    def objective(trial: optuna.Trial) -> float:
        suggested = {} if trial.user_attrs.get("is_default") else cls.search_space(trial)
        overrides = {**base, **suggested}
        method = cls.from_overrides(overrides)
        trial.set_user_attr("overrides", json.dumps(overrides, sort_keys=True))
        key = "default" if trial.user_attrs.get("is_default") else json.dumps(suggested, sort_keys=True)
        trial.set_user_attr("param_key", key)
        twin = duplicate_of(trial.study, trial, key)
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin)
            raise optuna.TrialPruned(f"the parameters of trial {twin}; not evaluated again")
        run_id = None
        if tracker is not None:
            run_id = tracker.start(
                f"{study_name} trial {trial.number}",
                {"study": study_name, "trial": trial.number, "method": method_name, "dataset": dataset_name,
                 "bits": bits, "seed": seed, "code_version": fit_code_version(method_name, dataset_name),
                 "git_commit": git_commit(), "kind": "tuning"},
                {**{f"cfg.{k}": v for k, v in method.params().items()}, "bits": bits, "seed": seed},
            )

        def on_report(epoch: int, values: Mapping[str, float]) -> None:
            if run_id is not None:
                tracker.log_metrics(run_id, {f"epoch/{k}": v for k, v in values.items()}, step=epoch)
            if PRUNE_KEY in values:
                trial.report(float(values[PRUNE_KEY]), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        try:
            encoder = method.fit(data.train.training_pairs(), bits, FitContext(seed=seed, device=device, validation=data.validation,
                                                                                  stopping=stopping_rule(stopping or {}), on_report=on_report))
            value = validation_map(encoder, data)
        except optuna.TrialPruned:
            if run_id is not None:
                tracker.set_tags(run_id, {"pruned": "true"})
                tracker.finish(run_id, "KILLED")
            raise
        except Exception as exc:
            if run_id is not None:
                tracker.set_tags(run_id, {"error": f"{type(exc).__name__}: {exc}"})
                tracker.finish(run_id, "FAILED")
            raise
        twin = duplicate_of(trial.study, trial, key)
        if twin is not None:  # another worker drew the same and got there first
            trial.set_user_attr("duplicate_of", twin)
            if run_id is not None:
                tracker.set_tags(run_id, {"pruned": "true", "duplicate_of": twin})
                tracker.finish(run_id, "KILLED")
            raise optuna.TrialPruned(f"the parameters of trial {twin}; not reported twice")
        if run_id is not None:
            tracker.log_metrics(run_id, {"val_map": value})
            tracker.finish(run_id)
        return value

    return objective


def best_overrides(storage: Any, study_name: str) -> tuple[str, dict[str, Any]]:
    """Return (method name, config overrides) of a study's best trial."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        raise SuiteError(f"no Optuna study named {study_name!r} in {storage}") from None
    try:
        best = study.best_trial
    except ValueError:
        raise SuiteError(f"study {study_name!r} has no finished trial yet") from None
    return study.user_attrs["method"], json.loads(best.user_attrs["overrides"])


def report(study: optuna.Study, console: Console) -> dict[str, Any]:
    """Print and return the default (trial 0) versus the best trial's validation mAP."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise SuiteError(f"study {study.study_name!r}: no trial completed ({len(study.trials)} trials; the log above "
                         "names each failure)")
    default = next((t for t in complete if t.user_attrs.get("is_default")), None)
    best = study.best_trial
    table = Table(title=f"study {study.study_name}: validation mAP (mean of I→T and T→I)", title_justify="left")
    table.add_column("trial")
    table.add_column("val mAP", justify="right")
    table.add_column("overrides")
    if default is not None:
        table.add_row(f"default (#{default.number})", f"{default.value:.4f}", default.user_attrs["overrides"])
    table.add_row(f"best (#{best.number})", f"{best.value:.4f}", best.user_attrs["overrides"])
    console.print(table)
    states = {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState}
    summary = {"default": None if default is None else default.value, "best": best.value,
               "gain": None if default is None else best.value - default.value,
               "best_overrides": json.loads(best.user_attrs["overrides"]), "trials": {k: v for k, v in states.items() if v}}
    console.print(f"trials: {summary['trials']}" + ("" if default is None else f"; gain over default {summary['gain']:+.4f}"),
                  markup=False, highlight=False)
    return summary


def check_tunable(data: CrossModalData, dataset_name: str) -> None:
    """Raise SuiteError unless the data set has a validation split (tuning never uses the query set)."""
    if data.validation is None:
        raise SuiteError(f"data set {dataset_name!r} has no validation split; tuning never uses the query set "
                         "(set n_validation in its options)")


def run_study(study: optuna.Study, method_name: str, dataset_name: str, data: CrossModalData, *, bits: int, seed: int,
              device: str, base: Mapping[str, Any], tracker: Tracker | None, trials: int, timeout: float | None = None,
              stopping: Any = None, budget: int | None = None) -> None:
    """Run `trials` trials of `study` (fit on the training split, score on validation); with
    `budget`, stop once the study has that many (trials_spent), so processes running one suite's
    study together end with the budget (or one more per extra process, when two start a trial at
    the same moment)."""
    check_tunable(data, dataset_name)
    objective = make_objective(method_name, dataset_name, data, bits, seed, device, base, tracker, study.study_name, stopping)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    callbacks = [] if budget is None else [lambda s, _: s.stop() if trials_spent(s) >= budget else None]
    study.optimize(objective, n_trials=trials, timeout=timeout, catch=TRIAL_ERRORS, callbacks=callbacks,
                   show_progress_bar=sys.stderr.isatty())


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def kept_tuned(path: Path, suite_source: str, trials: int, bits: int, tuning: set[tuple[str, str]]
               ) -> tuple[list[str], list[dict[str, Any]]]:
    """Return the commands ('# Written by' lines) and the rows of the tuned-configs file at `path`
    that a run tuning the (data set, label) pairs `tuning` keeps: every row it does not retune
    (([], []) when there is no file). SuiteError, before any trial runs, when a kept row was tuned
    for another suite, trial budget or bit length: one file feeds one table of equal budgets."""
    if not path.exists():
        return [], []
    raw = read_toml(path, "tuned-configs")
    kept = [dict(row) for row in raw.get("tuned", []) if (row.get("dataset"), row.get("label")) not in tuning]
    if not kept:
        return [], []  # every row is retuned: the file is written anew
    theirs = (raw.get("suite"), raw.get("trials"), raw.get("bits"))
    if theirs[0] is None or Path(theirs[0]).resolve() != Path(suite_source).resolve() or theirs[1:] != (trials, bits):
        raise SuiteError(f"{path}: holds configs of {', '.join(r.get('label', '?') for r in kept)} tuned for suite "
                         f"{theirs[0]!r} with {theirs[1]} trials at {theirs[2]} bits; this run is {suite_source!r} with "
                         f"{trials} trials at {bits} bits. One file feeds one table of equal budgets: give these "
                         "values, or another --output")
    for i, row in enumerate(kept):
        missing = [k for k in (*TUNED_ROW_KEYS, "overrides") if k not in row]
        if missing:
            raise SuiteError(f"{path}: tuned row {row.get('label', i)!r} lacks {', '.join(missing)}; expected the rows "
                             "runners.tune --suite writes")
    commands = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("# Written by: ")]
    return commands, kept


def write_tuned(path: Path, suite_source: str, trials: int, bits: int, rows: list[dict[str, Any]], seed: int = 0,
                selection: Mapping[str, Sequence[str] | None] | None = None, workers: int | None = None,
                kept: tuple[list[str], list[dict[str, Any]]] = ([], [])) -> None:
    """Write the tuned-configs file that runners.run / runners.compare --tuned read: `rows` after
    the `kept` rows of the file it replaces (kept_tuned). Its first lines are the commands that
    wrote its rows, with the seed, any narrowing (--datasets / --methods) and the local workers
    (TPE draws from the trials finished so far, so trials run at once draw differently)."""
    selection = selection or {}
    narrowed = narrowing_flags((("datasets", selection.get("datasets_")), ("methods", selection.get("methods_"))))
    narrowed += f" --workers {workers}" if workers and workers > 1 else ""
    command = f"# Written by: python -m runners.tune --suite {suite_source} --trials {trials} --bits {bits} --seed {seed}{narrowed}"
    commands = [c for c in kept[0] if c != command] + [command]
    lines = [*commands, "# Best validation-mAP config per (data set, method); the query set was never used.",
             f"suite = {_toml_value(suite_source)}", f"trials = {trials}", f"bits = {bits}", ""]
    for row in [*kept[1], *rows]:
        lines += ["[[tuned]]", *(f"{k} = {_toml_value(row[k])}" for k in TUNED_ROW_KEYS),
                  "overrides = { " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in row["overrides"].items()) + " }", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


# --- trials on a Dask cluster (runners.cluster runs these tasks) ----------------------------------

_storages: dict[str, Any] = {}


@dataclass(frozen=True)
class StudyJob:
    """What a worker needs to run trials of one study: the study's name, the method, its data set
    (loaded on the worker), bits, seed, device, fixed overrides, the stopping rule, plug-ins."""

    study: str
    method: str
    dataset: DatasetEntry
    bits: int
    seed: int
    device: str = "cpu"
    base: Mapping[str, Any] = field(default_factory=dict)
    stopping: Mapping[str, Any] = field(default_factory=dict)
    imports: tuple[str, ...] = ()


def _trial_storage(url: str) -> Any:
    """Return the Optuna storage a process running trials uses for `url`: an RDB storage with a
    heartbeat, so a trial whose process died is marked FAIL when the next trial starts (or when a
    suite's rerun counts its studies' trials); a journal file as is."""
    if url not in _storages:
        storage = open_storage(url)
        if isinstance(storage, str):
            with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna's words
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(storage, heartbeat_interval=10, grace_period=30)
        _storages[url] = storage
    return _storages[url]


def trial_task(storage_url: str, job: StudyJob, index: int, uri: str | None, experiment: str, grid: str) -> dict[str, Any]:
    """Run one trial of `job.study` on a worker (or here); return its number, state and value.

    The study exists (the parent created it). The sampler draws trial N with job.seed + N
    (runners.tune.TrialSeededSampler), so trials running at once do not draw the same point."""
    worker = prepare_worker(job.imports, None)
    data = load_dataset(job.dataset)
    study = optuna.load_study(study_name=job.study, storage=_trial_storage(storage_url),
                              **study_algorithms(job.seed))
    tracker = worker_tracker(uri, experiment) if uri else None
    objective = make_objective(job.method, job.dataset.name, data, job.bits, job.seed, job.device, job.base, tracker,
                               job.study, job.stopping)
    where = worker_name(worker)

    def tagged(trial: optuna.Trial) -> float:
        trial.set_user_attr("dask_worker", where)
        send_event(worker, kind="started", grid=grid, title=f"{job.study} trial {trial.number}", where=where)
        return objective(trial)

    ran: list[optuna.trial.FrozenTrial] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(tagged, n_trials=1, catch=TRIAL_ERRORS, callbacks=[lambda _, trial: ran.append(trial)])
    trial = ran[0]
    return {"study": job.study, "number": trial.number, "state": trial.state.name, "value": trial.value, "worker": where}


def tune_suite(suite_path: str, *, trials: int, bits: int | None, seed: int, storage_url: str, output: Path,
               tracker: Tracker | None, console: Console, selection: Mapping[str, Any],
               cluster: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Tune every (data set, method) of a suite with the same trial budget; write and return the
    tuned configs. With `cluster` (command-line choices, over the suite's [cluster] table) every
    study's trials run at once on a Dask cluster (runners.cluster)."""

    suite = select(load_suite(suite_path), **selection)
    bits = bits or suite.bits[len(suite.bits) // 2]
    kept = kept_tuned(output, suite_path, trials, bits, {(d.name, m.label) for d in suite.datasets for m in suite.methods})
    storage = _trial_storage(storage_url)
    for m in suite.methods:  # every method must be tunable: equal budgets, or the table is unfair
        if methods.get(m.name).search_space.__func__ is HashingMethod.search_space.__func__:
            raise SuiteError(f"method {m.name!r} declares no search space; every method of a tuned suite needs one")
    studies = []
    for entry in suite.datasets:  # create every study first, in this process, before any trial runs
        for m in suite.methods:
            name = f"{suite.name}-{entry.name}-{m.label}-{bits}b".replace(" ", "_")
            attrs = {"method": m.name, "dataset": entry.name, "bits": bits,
                     "dataset_options": json.dumps(dict(entry.options), sort_keys=True),
                     "overrides": json.dumps(dict(m.overrides), sort_keys=True)}
            studies.append((entry, m, create_study(storage, name, seed, attrs)))
    owed = {study.study_name: trials_owed(study, trials) for _, _, study in studies}
    for name, count in owed.items():
        if count < trials:
            console.print(f"{name}: {trials - count} of its {trials} trials already run; {count} to run",
                          markup=False, highlight=False)
    spec = cluster_spec(cluster or {}, suite.cluster)
    if not spec.in_process and any(owed.values()):
        for entry in suite.datasets:
            check_tunable(load_dataset(entry), entry.name)
        jobs = [StudyJob(study.study_name, m.name, entry, bits, seed, suite.device, m.overrides, suite.stopping, suite.imports)
                for entry, m, study in studies if owed[study.study_name]]
        tune_on_cluster(spec, trial_task, storage_url, jobs, [owed[job.study] for job in jobs], tracker=tracker,
                        log=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
    rows = []
    for entry, m, study in studies:
        if spec.in_process and owed[study.study_name]:
            data = load_dataset(entry)
            console.print(f"tuning {m.label} on {entry.name} at {bits} bits ({owed[study.study_name]} trials)",
                          markup=False, highlight=False)
            run_study(study, m.name, entry.name, data, bits=bits, seed=seed, device=suite.device, base=m.overrides,
                      tracker=tracker, trials=owed[study.study_name], stopping=suite.stopping, budget=trials)
        summary = report(study, console)
        rows.append({"dataset": entry.name, "label": m.label, "method": m.name, "study": study.study_name,
                     "default_value": summary["default"] if summary["default"] is not None else float("nan"),
                     "best_value": summary["best"], "overrides": summary["best_overrides"]})
    write_tuned(output, suite_path, trials, bits, rows, seed, selection, spec.workers, kept)
    console.print(f"wrote {output}: run the tuned table with python -m runners.compare --suite {suite_path} --tuned {output}",
                  markup=False, highlight=False)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.tune", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--suite", help="tune every method of this suite on every data set (same trial budget each)")
    parser.add_argument("--output", help="--suite: tuned-configs file to write (default: tuned-<suite>.toml)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help="--suite: only these data sets")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="--suite: only these methods (names or labels)")
    parser.add_argument("--method", help=f"method to tune (known: {', '.join(methods.available())})")
    parser.add_argument("--dataset", help=f"data set (known: {', '.join(datasets.available())})")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=JSON",
                        help="loader option, e.g. n_items=6000 (repeatable; values parsed as JSON)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                        help="fixed config override for every trial, e.g. max_epochs=20 (repeatable)")
    parser.add_argument("--bits", type=int, help="hash length (default: 32; --suite: the suite's middle one)")
    parser.add_argument("--trials", type=int, default=20, help="--suite: trials each study has when done (a rerun "
                        "tops studies up); one study: trials this process runs, or with a cluster the cluster's "
                        "workers run (default: %(default)s)")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed for the sampler, the data and training (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL or journal file (default: %(default)s)")
    parser.add_argument("--study-name", help="default: METHOD-DATASET-BITSb")
    parser.add_argument("--tracking-uri", help="MLflow URI for per-trial runs (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default="xmodal-hash-bench-tuning", help="MLflow experiment (default: %(default)s)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log trials to MLflow")
    add_cluster_arguments(parser)
    args = parser.parse_args(argv)
    console = Console()
    try:
        if args.trials < 1:
            raise ValueError(f"--trials must be at least 1, got {args.trials}")
        if args.bits is not None:
            check_bits(args.bits)
        if not args.suite:
            check_device(args.device, "--device")  # a suite's own device is checked with the suite
        if args.suite:
            if args.method or args.dataset:
                raise ValueError("--suite tunes every method of the suite; leave out --method and --dataset")
            tracker = None if args.no_mlflow else Tracker(args.tracking_uri, args.experiment)
            output = Path(args.output or f"tuned-{Path(args.suite).stem}.toml")
            tune_suite(args.suite, trials=args.trials, bits=args.bits, seed=args.seed, storage_url=args.storage,
                       output=output, tracker=tracker, console=console,
                       selection={"datasets_": args.datasets, "methods_": args.methods}, cluster=cli_choices(args))
            return 0
        if not (args.method and args.dataset):
            raise ValueError("give --suite FILE, or both --method and --dataset")
        cls = methods.get(args.method)
        datasets.get_loader(args.dataset)
        bits = check_bits(args.bits or 32)
        parse_kv = lambda items, flag: {k: json.loads(v) for k, v in (_split_kv(i, flag) for i in items)}  # noqa: E731
        loader_opts = parse_kv(args.dataset_option, "--dataset-option")
        base = parse_kv(args.override, "--override")
        cls.from_overrides(base)  # checks the overrides (ConfigError names the field)
        if cls.search_space.__func__ is HashingMethod.search_space.__func__:
            raise ValueError(f"method {args.method!r} declares no search space")
        cluster = cluster_spec(cli_choices(args))
    except (ValueError, ConfigError, methods.UnknownNameError, SuiteError) as exc:
        parser.exit(2, f"error: {exc}\n")
    name = args.study_name or default_study_name(args.method, args.dataset, bits)
    storage = open_storage(args.storage)
    attrs = {"method": args.method, "dataset": args.dataset, "bits": bits, "dataset_options": json.dumps(loader_opts, sort_keys=True),
             "overrides": json.dumps(base, sort_keys=True)}
    try:
        study = create_study(storage, name, args.seed, attrs)
        data = preprocess(datasets.load(args.dataset, **loader_opts), "auto")
        tracker = None if args.no_mlflow else Tracker(args.tracking_uri, args.experiment)
        if cluster.in_process:
            run_study(study, args.method, args.dataset, data, bits=bits, seed=args.seed, device=args.device, base=base,
                      tracker=tracker, trials=args.trials, timeout=args.timeout)
        else:
            check_tunable(data, args.dataset)
            job = StudyJob(name, args.method, DatasetEntry(args.dataset, loader_opts, "auto"), bits, args.seed, args.device, base)
            tune_on_cluster(cluster, trial_task, args.storage, [job], [args.trials], tracker=tracker, timeout=args.timeout,
                            log=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))
        report(study, console)
    except SuiteError as exc:
        parser.exit(2, f"error: {exc}\n")
    return 0


def _split_kv(item: str, flag: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
    key, value = item.split("=", 1)
    try:
        json.loads(value)
    except json.JSONDecodeError:
        value = json.dumps(value)  # a bare word is a string
    return key, value


if __name__ == "__main__":
    # The importable module's main (see runners.run): trial_task pickled by reference, so a
    # worker keeps its Optuna storages (_storages) from one trial to the next.
    from runners import tune

    sys.exit(tune.main())
