"""The command line every grid command shares (runners.run, runners.compare, runners.rescore):
the suite and its narrowing, the store, tuned configs, sharding and where it runs."""
from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

import datasets
import methods

from .cluster import add_cluster_arguments
from .suite import DEFAULT_SUITE, MethodEntry, Suite, SuiteError, check_device, load_suite, load_tuned, select


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """Return (index, count) from 'I/N' with 0 <= I < N, or None; SuiteError otherwise."""
    if text is None:
        return None
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise SuiteError(f"--shard expects I/N (e.g. 0/3), got {text!r}") from None
    if not 0 <= index < count:
        raise SuiteError(f"--shard {text}: need 0 <= I < N")
    return index, count


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """True if the run `key` belongs to `shard` (cells split by their key, stable across machines)."""
    return shard is None or int(key, 16) % shard[1] == shard[0]


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options shared by runners.run, runners.compare and runners.rescore."""
    parser.add_argument("--suite", default=str(DEFAULT_SUITE), help="suite TOML file (default: %(default)s)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help=f"data sets to use (known: {', '.join(datasets.available())})")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help=f"methods or suite labels to use (known: {', '.join(methods.available())})")
    parser.add_argument("--bits", nargs="+", type=int, metavar="K", help="hash lengths, e.g. 16 32 64")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="S", help="seeds, e.g. 0 1 2")
    parser.add_argument("--device", help="torch device (cpu, cuda, cuda:1); default: the suite's")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default="xmodal-hash-bench", help="MLflow experiment name (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rerun every cell even if MLflow holds it")
    parser.add_argument("--shard", metavar="I/N", help="only shard I of N of the grid (cells split by run key); a static "
                        "split kept for machines without a shared scheduler: prefer --scheduler")
    parser.add_argument("--params-from", metavar="STUDY", help="use the best config of this Optuna study for its method")
    parser.add_argument("--tuned", metavar="FILE", help="run every method with its tuned config from FILE (written by runners.tune --suite)")
    parser.add_argument("--optuna-storage", default="sqlite:///optuna.db", help="storage of --params-from (default: %(default)s)")
    parser.add_argument("--spool", metavar="DIR", help="where results wait until MLflow has them (default: $XMH_SPOOL, "
                        "else STORE.spool beside a sqlite store, else ~/.cache/xmodal-hash-bench/spool/SERVER)")
    add_cluster_arguments(parser)


def suite_from_args(args: argparse.Namespace) -> Suite:
    """Return the suite file narrowed by the command line (SuiteError on bad input)."""
    suite = load_suite(args.suite)
    device = args.device and check_device(args.device, "--device")
    suite = select(suite, datasets_=args.datasets, methods_=args.methods, bits=args.bits, seeds=args.seeds, device=device)
    if getattr(args, "tuned", None):
        suite = load_tuned(args.tuned, suite)
    if getattr(args, "params_from", None):
        from .tune import best_overrides, open_storage  # optuna is only imported when asked for

        method, overrides = best_overrides(open_storage(args.optuna_storage), args.params_from)
        suite = with_tuned_method(suite, method, overrides, args.params_from)
    return suite


def with_tuned_method(suite: Suite, method: str, overrides: dict[str, Any], study: str) -> Suite:
    """Return `suite` where entries of `method` use `overrides` (label gets ' (tuned)'), or with
    the tuned method added if the suite does not have it."""
    tuned = [MethodEntry(m.name, f"{m.label} (tuned)", {**m.overrides, **overrides}) if m.name == method else m
             for m in suite.methods]
    if all(m.name != method for m in suite.methods):
        tuned.append(MethodEntry(method, f"{method} (tuned: {study})", overrides))
    return replace(suite, methods=tuple(tuned))
