"""Optuna study of one method's hyperparameters on the validation split (never the query set).

    python -m runners.tune --method sam --dataset synthetic-mirflickr --bits 32 --trials 60
    optuna-dashboard sqlite:///optuna.db

Trial 0 is the method's default config, so the report shows what tuning gained over it. The
objective is validation mAP (mean of I->T and T->I), validation items as queries against the
training items as database. Per-epoch validation values reported by the method drive pruning.
Each trial is also an MLflow run (tags: study, trial). Storage: sqlite:///optuna.db by default;
a path ending in .log (or journal:PATH) uses Optuna's journal file; a postgresql:// URL a shared
server, so several worker processes on several machines can run the same command together.
Best parameters feed the runners: `python -m runners.compare --params-from STUDY`.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Mapping, Sequence

import optuna
from rich.console import Console
from rich.table import Table

import datasets
import methods
from datasets import CrossModalData
from methods import FitContext
from methods.base import ConfigError, HashingMethod, check_bits

from .identity import fit_code_version, git_commit
from .evaluation import validation_map
from .suite import SuiteError
from .tracking import Tracker

DEFAULT_STORAGE = "sqlite:///optuna.db"
PRUNE_KEY = "val_map"  # the per-epoch value a method reports for pruning


def open_storage(url: str | None) -> Any:
    """Return an Optuna storage for a URL: RDB (sqlite/postgresql/...) or a journal file."""
    url = url or DEFAULT_STORAGE
    if url.startswith("journal:") or url.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return url


def default_study_name(method: str, dataset: str, bits: int) -> str:
    return f"{method}-{dataset}-{bits}b"


def create_study(storage: Any, name: str, seed: int, attrs: Mapping[str, Any]) -> optuna.Study:
    """Create (or reopen) the study with a seeded TPE sampler and a median pruner; call this in
    the parent before starting workers so the store is created once."""
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    for key, value in attrs.items():
        if study.user_attrs.get(key, value) != value:
            raise SuiteError(f"study {name!r} was created with {key}={study.user_attrs[key]!r}, not {value!r}; pick another --study-name")
        study.set_user_attr(key, value)
    if not study.trials:
        study.enqueue_trial({}, user_attrs={"is_default": True})  # trial 0: the method's defaults
    return study


def make_objective(method_name: str, dataset_name: str, data: CrossModalData, bits: int, seed: int, device: str,
                   base: Mapping[str, Any], tracker: Tracker | None, study_name: str):
    """Return the objective: fit with the trial's overrides, return validation mAP.

    The enqueued default trial (user attr is_default) suggests nothing: the config's own values."""
    cls = methods.get(method_name)

    def objective(trial: optuna.Trial) -> float:
        suggested = {} if trial.user_attrs.get("is_default") else cls.search_space(trial)
        overrides = {**base, **suggested}
        method = cls.from_overrides(overrides)
        trial.set_user_attr("overrides", json.dumps(overrides, sort_keys=True))
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
            encoder = method.fit(data.train.training_pairs(), bits, FitContext(seed=seed, device=device, validation=data.validation, on_report=on_report))
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.tune", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--method", required=True, help=f"method to tune (known: {', '.join(methods.available())})")
    parser.add_argument("--dataset", required=True, help=f"data set (known: {', '.join(datasets.available())})")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=JSON",
                        help="loader option, e.g. n_items=6000 (repeatable; values parsed as JSON)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=JSON",
                        help="fixed config override for every trial, e.g. epochs=20 (repeatable)")
    parser.add_argument("--bits", type=int, default=32, help="hash length (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=20, help="trials this process runs (default: %(default)s)")
    parser.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    parser.add_argument("--seed", type=int, default=0, help="seed for the sampler, the data and training (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="Optuna storage URL or journal file (default: %(default)s)")
    parser.add_argument("--study-name", help="default: METHOD-DATASET-BITSb")
    parser.add_argument("--tracking-uri", help="MLflow URI for per-trial runs (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default="xmodal-hash-bench-tuning", help="MLflow experiment (default: %(default)s)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log trials to MLflow")
    args = parser.parse_args(argv)
    try:
        cls = methods.get(args.method)
        datasets.get_loader(args.dataset)
        bits = check_bits(args.bits)
        if args.trials < 1:
            raise ValueError(f"--trials must be at least 1, got {args.trials}")
        parse_kv = lambda items, flag: {k: json.loads(v) for k, v in (_split_kv(i, flag) for i in items)}  # noqa: E731
        loader_opts = parse_kv(args.dataset_option, "--dataset-option")
        base = parse_kv(args.override, "--override")
        cls.from_overrides(base)
        if cls.search_space.__func__ is HashingMethod.search_space.__func__:
            raise ValueError(f"method {args.method!r} declares no search space")
    except (ValueError, ConfigError, methods.UnknownNameError) as exc:
        parser.exit(2, f"error: {exc}\n")
    console = Console()
    name = args.study_name or default_study_name(args.method, args.dataset, bits)
    storage = open_storage(args.storage)
    attrs = {"method": args.method, "dataset": args.dataset, "bits": bits, "dataset_options": json.dumps(loader_opts, sort_keys=True),
             "overrides": json.dumps(base, sort_keys=True)}
    try:
        study = create_study(storage, name, args.seed, attrs)
    except SuiteError as exc:
        parser.exit(2, f"error: {exc}\n")
    data = datasets.load(args.dataset, **loader_opts)
    if data.validation is None:
        parser.exit(2, f"error: data set {args.dataset!r} has no validation split; tuning never uses the query set\n")
    tracker = None if args.no_mlflow else Tracker(args.tracking_uri, args.experiment)
    objective = make_objective(args.method, args.dataset, data, bits, args.seed, args.device, base, tracker, name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=args.trials, timeout=args.timeout,
                   catch=(RuntimeError, FloatingPointError), show_progress_bar=sys.stderr.isatty())
    report(study, console)
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
    sys.exit(main())
