"""Rescore finished runs from their stored codes, without training.

    python -m runners.rescore --suite benchmarks/default.toml                 # runs scored by older metrics code
    python -m runners.rescore --suite benchmarks/fair/wiki.toml --map-k 100 --precision-k 50 --force

Every run of a grid stores its codes (codes.npz: packed ±1 codes of the query and retrieval
splits, float16 embeddings where the method has them). Its scores are keyed by (run key, metrics
version): when the metrics code changes, or new cutoffs are asked for, this recomputes every
number from the stored codes and the data set's relevance, logs them to the same run (MLflow
keeps the old values in the metric history) and tags the run with the new metrics version.
`runners.run` / `runners.compare` do the same automatically for runs whose metrics version is stale.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from datasets import CrossModalData

from . import artifacts
from .cells import cell_key, load_cell_data
from .grid_arguments import add_grid_arguments, suite_from_args
from .scoring import CodeSet, MetricSpec, evaluate_codes
from .identity import metrics_version
from .records import RunRecord
from .suite import SuiteError
from .tracking import Tracker


def score_run(tracker: Tracker, run_id: str, codes: CodeSet, data: CrossModalData, title: str,
              spec: MetricSpec = MetricSpec()) -> dict[str, float]:
    """Compute every number from `codes`, log them and the eval artifacts (per-query values,
    curves and figures titled `title`) to run `run_id`, tag it with the current metrics version;
    return the values."""
    with tempfile.TemporaryDirectory() as tmp:
        values, tags = score_into(Path(tmp), codes, data, title, spec)
        tracker.log_metrics(run_id, values)
        tracker.log_artifacts(run_id, Path(tmp), artifacts.EVAL_DIR)
    tracker.set_tags(run_id, tags)
    return values


def score_into(folder: Path, codes: CodeSet, data: CrossModalData, title: str,
               spec: MetricSpec = MetricSpec()) -> tuple[dict[str, float], dict[str, str]]:
    """Compute every number from `codes` and write the eval artifacts (per-query values, curves,
    figures titled `title`) into `folder`; return (values, the run's metrics-version tags)."""
    evaluation = evaluate_codes(codes, data, spec)
    folder.mkdir(parents=True, exist_ok=True)
    artifacts.write_curves(folder, evaluation.curves, title)
    artifacts.write_per_query(folder, evaluation.per_query)
    return evaluation.values, {"metrics_version": metrics_version(), "metric_spec": repr(spec)}


def stored_codes(tracker: Tracker, record: RunRecord) -> CodeSet:
    """Return the CodeSet a finished run stored (RuntimeError if the run has none)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.download(record.run_id, artifacts.CODES_FILE, tmp)
        except Exception as exc:  # MLflow raises several types for a missing artifact
            raise RuntimeError(f"run {record.run_id} ({record.label} {record.bits}b seed {record.seed}) stored no "
                               f"{artifacts.CODES_FILE}; it predates stored codes: rerun it with --force") from exc
        return CodeSet.load(path)


def rescore(tracker: Tracker, record: RunRecord, data: CrossModalData, spec: MetricSpec = MetricSpec()) -> dict[str, float]:
    """Rescore one finished run from its stored codes; return the new values."""
    title = artifacts.run_title(record.label, record.bits, record.dataset, record.seed)
    return score_run(tracker, record.run_id, stored_codes(tracker, record), data, title, spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runners.rescore", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    add_grid_arguments(parser)
    parser.add_argument("--map-k", type=int, nargs="+", default=[], metavar="K", help="extra mAP@k cutoffs")
    parser.add_argument("--precision-k", type=int, nargs="+", default=[], metavar="K", help="extra P@k cutoffs")
    args = parser.parse_args(argv)
    try:
        suite = suite_from_args(args)
    except SuiteError as exc:
        parser.exit(2, f"error: {exc}\n")
    spec = MetricSpec().merged(MetricSpec(tuple(args.map_k), tuple(args.precision_k)))
    tracker = Tracker(args.tracking_uri, args.experiment)
    finished = tracker.finished()
    current = metrics_version()
    done = skipped = 0
    for cell in suite.cells():
        record = finished.get(cell_key(cell))
        if record is None:
            continue
        if record.metrics_version == current and not (args.force or args.map_k or args.precision_k):
            skipped += 1
            continue
        values = rescore(tracker, record, load_cell_data(cell), spec)
        done += 1
        print(f"rescored {record.label} {record.bits}b seed {record.seed} ({record.dataset}): "
              f"mAP I->T {values['map_i2t']:.4f} T->I {values['map_t2i']:.4f}")
    print(f"{done} rescored, {skipped} already current (metrics version {current})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
