"""Run a suite's grid: every cell MLflow does not already hold as FINISHED is trained and evaluated.

    python -m runners.run --suite benchmarks/default.toml [--methods ...] [--bits ...] [--seeds ...]

Each run records params (method config, dataset options, bits, seed), tags (run_key, code
version, git commit, dataset fingerprint, device, library versions), per-epoch training values
and final metrics for both directions. A failing cell is recorded as FAILED and the grid goes on;
an interrupted one is recorded as KILLED. Either is rerun next time.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from rich.console import Console

import datasets
import methods
import metrics
from datasets import CrossModalData
from methods import FitContext
from methods.base import Encoder

from .identity import code_version, git_commit, run_key
from .progress import Reporter
from .suite import DEFAULT_SUITE, Cell, Suite, SuiteError, load_suite, select
from .tracking import Tracker

DIRECTIONS = {"i2t": ("image", "text"), "t2i": ("text", "image")}


def evaluate_encoder(encoder: Encoder, data: CrossModalData) -> dict[str, float]:
    """Return final metrics for both directions: '<metric>_i2t' and '<metric>_t2i'."""
    codes = {
        (split, modality): encoder.encode(modality, getattr(getattr(data, split), modality))
        for split in ("query", "retrieval") for modality in ("image", "text")
    }
    for (split, modality), c in codes.items():
        if c.shape[1] != encoder.bits or not bool(((c == 1) | (c == -1)).all()):
            raise RuntimeError(f"encoder produced invalid {split} {modality} codes: shape {tuple(c.shape)}, expected ±1 x {encoder.bits}")
    out: dict[str, float] = {}
    q_labels = torch.from_numpy(data.query.labels)
    r_labels = torch.from_numpy(data.retrieval.labels)
    for direction, (q_mod, r_mod) in DIRECTIONS.items():
        value = metrics.mean_average_precision(codes["query", q_mod], codes["retrieval", r_mod], q_labels, r_labels)
        out[f"map_{direction}"] = float(value)
    return out


@dataclass
class GridReport:
    """What a grid run did: keys reused, run, failed (with messages)."""

    reused: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def cell_identity(cell: Cell) -> tuple[str, dict[str, Any], str]:
    """Return (run_key, resolved method params, code version) of a cell."""
    method = methods.create(cell.method.name, cell.method.overrides)
    params = method.params()
    version = code_version(cell.method.name, cell.dataset.name)
    key = run_key(cell.dataset.name, cell.dataset.options, cell.method.name, params, cell.bits, cell.seed, version)
    return key, params, version


def _environment_tags(device: str) -> dict[str, str]:
    return {
        "device": device,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
    }


def run_grid(suite: Suite, tracker: Tracker, *, force: bool = False, console: Console | None = None) -> GridReport:
    """Run every cell of `suite` not already finished in `tracker` (all of them with force).

    Progress goes to `console` (stderr by default): a bar on a terminal, log lines otherwise."""
    report = GridReport()
    finished = {} if force else tracker.finished()
    todo: list[tuple[Cell, str, dict[str, Any], str]] = []
    for cell in suite.cells():
        key, params, version = cell_identity(cell)
        if key in finished:
            report.reused.append(key)
        else:
            todo.append((cell, key, params, version))
    if not todo:
        return report
    with Reporter(len(todo), console) as reporter:
        _run_cells(suite, tracker, todo, report, reporter)
    return report


def _run_cells(suite: Suite, tracker: Tracker, todo, report: GridReport, reporter: Reporter) -> None:
    reporter.log(f"{len(report.reused)} of {len(report.reused) + len(todo)} runs already in MLflow; running {len(todo)}")
    loaded: dict[tuple[str, str], CrossModalData] = {}
    env_tags = _environment_tags(suite.device)
    for cell, key, params, version in todo:
        ds_id = (cell.dataset.name, repr(sorted(cell.dataset.options.items())))
        if ds_id not in loaded:
            reporter.describe(f"loading {cell.dataset.name}")
            loaded.clear()  # keep one data set in memory at a time (cells are grouped by dataset)
            loaded[ds_id] = datasets.load(cell.dataset.name, **cell.dataset.options)
            reporter.log(loaded[ds_id].summary())
        data = loaded[ds_id]
        title = f"{cell.dataset.name} {cell.method.label} {cell.bits} bits seed {cell.seed}"
        reporter.describe(title)
        tags = {
            "run_key": key, "suite": suite.name, "dataset": cell.dataset.name, "method": cell.method.name,
            "label": cell.method.label, "bits": cell.bits, "seed": cell.seed, "code_version": version,
            "dataset_fingerprint": data.fingerprint(), **env_tags,
        }
        run_params = {**{f"cfg.{k}": v for k, v in params.items()},
                      **{f"data.{k}": v for k, v in cell.dataset.options.items()},
                      "bits": cell.bits, "seed": cell.seed, "method": cell.method.name, "dataset": cell.dataset.name}
        run_id = tracker.start(title, tags, run_params)
        try:
            started = time.perf_counter()
            method = methods.create(cell.method.name, cell.method.overrides)
            ctx = FitContext(
                seed=cell.seed, device=suite.device, validation=data.validation,
                on_epoch=lambda epoch, values: tracker.log_metrics(run_id, {f"train/{k}": v for k, v in values.items()}, step=epoch),
                log=reporter.log,
            )
            encoder = method.fit(data.train, cell.bits, ctx)
            fit_seconds = time.perf_counter() - started
            results = evaluate_encoder(encoder, data)
            results.update(fit_seconds=fit_seconds, total_seconds=time.perf_counter() - started)
            tracker.log_metrics(run_id, results)
            tracker.finish(run_id, "FINISHED")
            report.ran.append(key)
            reporter.log(f"{title}: mAP I->T {results['map_i2t']:.4f}  T->I {results['map_t2i']:.4f}  ({fit_seconds:.1f}s)")
        except KeyboardInterrupt:
            tracker.set_tags(run_id, {"error": "interrupted"})
            tracker.finish(run_id, "KILLED")
            raise
        except Exception as exc:  # recorded and reported; the grid goes on
            tracker.set_tags(run_id, {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]})
            tracker.finish(run_id, "FAILED")
            report.failed.append((key, f"{title}: {type(exc).__name__}: {exc}"))
            reporter.log(f"FAILED {title}: {type(exc).__name__}: {exc}")
        reporter.advance()


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options shared by runners.run and runners.compare."""
    parser.add_argument("--suite", default=str(DEFAULT_SUITE), help="suite TOML file (default: %(default)s)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help=f"data sets to use (known: {', '.join(datasets.available())})")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help=f"methods or suite labels to use (known: {', '.join(methods.available())})")
    parser.add_argument("--bits", nargs="+", type=int, metavar="K", help="hash lengths, e.g. 16 32 64")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="S", help="seeds, e.g. 0 1 2")
    parser.add_argument("--device", help="torch device (cpu, cuda, cuda:1); default: the suite's")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    parser.add_argument("--experiment", default="xmodal-hash-bench", help="MLflow experiment name (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rerun every cell even if MLflow holds it")


def suite_from_args(args: argparse.Namespace) -> Suite:
    """Return the suite file narrowed by the command line (SuiteError on bad input)."""
    suite = load_suite(args.suite)
    device = args.device
    if device and device.startswith("cuda") and not torch.cuda.is_available():
        raise SuiteError(f"--device {device}: CUDA is not available here; use cpu")
    return select(suite, datasets_=args.datasets, methods_=args.methods, bits=args.bits, seeds=args.seeds, device=device)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.run", description=__doc__.split("\n\n")[0])
    add_grid_arguments(parser)
    args = parser.parse_args(argv)
    try:
        suite = suite_from_args(args)
    except SuiteError as exc:
        parser.exit(2, f"error: {exc}\n")
    tracker = Tracker(args.tracking_uri, args.experiment)
    report = run_grid(suite, tracker, force=args.force)
    print(f"{len(report.ran)} run, {len(report.reused)} reused, {len(report.failed)} failed")
    for _, message in report.failed:
        print(f"failed: {message}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
