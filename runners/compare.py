"""Leaderboard of a suite: runs what MLflow does not hold yet, then prints mean ± std over seeds.

    python -m runners.compare                       # the default suite (benchmarks/default.toml)
    python -m runners.compare --suite benchmarks/mirflickr.toml --bits 16 32 64 --seeds 0 1 2
    python -m runners.compare --no-run --format latex --output table.tex
    python -m runners.compare --format csv --output raw.csv   # one row per run, every metric
    python -m runners.compare --no-run --metric map_at_100_topk   # a cutoff added after the runs: no training

The best mean per column is bold and marked '*'; a method whose per-query APs are not
significantly different from the best's (paired Wilcoxon signed-rank over seeds x queries,
p >= 0.05) is marked '≈'. Published numbers from benchmarks/references.toml appear as labelled
reference rows when the dataset matches; they are never ranked.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping, Sequence

from rich.console import Console

from .leaderboard import aggregate, build_board, latex_table, load_references, markdown_table, rich_table, suite_results, title
import pandas as pd

from .artifacts import plot_curves
from .scoring import spec_for_metric
from .records import RunRecord
from .rescore import rescore
from .cluster import ClusterError, spec_from_args
from .cells import cell_key, load_cell_data
from .grid_arguments import add_grid_arguments, parse_shard, suite_from_args
from .run import STORE_FAULT, prepare_store, run_grid
from .suite import Cell, SuiteError
from .tracking import Tracker, TrackingError

DEFAULT_REFERENCES = Path(__file__).resolve().parent.parent / "benchmarks" / "references.toml"


def suite_figures(results, tracker: Tracker, folder: Path, seeds: Sequence[int]) -> list[Path]:
    """Write one PR and one precision@k figure per (data set, bits), every method's curve (the
    mean over its seeds at each radius / cutoff) overlaid; return the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (dataset, bits), group in results.groupby(["dataset", "bits"], sort=False):
        frames = [tracker.curves(r.run_id).assign(method=r.method) for r in group.itertuples()]
        curves = (pd.concat(frames).groupby(["method", "direction", "curve", "x"], sort=False)[["precision", "recall"]]
                  .mean().reset_index())
        title = f"{dataset} · {bits} bits · mean over seeds {list(seeds)}"
        prefix = f"{dataset}-{bits}b-"
        curves.to_csv(folder / f"{prefix}curves.csv", index=False)  # the numbers behind the figures
        written += [folder / f"{prefix}curves.csv", *plot_curves(curves, "method", title, folder, prefix)]
    return written


def add_metric(tracker: Tracker, finished: Mapping[str, RunRecord], keyed: Sequence[tuple[Cell, str]], metric: str) -> bool:
    """Rescore the suite's finished runs that lack `metric` from their stored codes (no
    training); return True if any was rescored."""
    spec = spec_for_metric(metric)
    lacking = [(cell, finished[key]) for cell, key in keyed if key in finished and f"{metric}_i2t" not in finished[key].metrics]
    if spec is None or not lacking:
        return False
    for cell, record in lacking:
        rescore(tracker, record, load_cell_data(cell), spec)
    print(f"computed {metric} for {len(lacking)} runs from their stored codes", file=sys.stderr)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runners.compare", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    add_grid_arguments(parser)
    parser.add_argument("--no-run", action="store_true", help="only show what MLflow already holds")
    parser.add_argument("--format", choices=["rich", "markdown", "latex", "csv"], default="rich", help="output format (default: %(default)s)")
    parser.add_argument("--output", help="write the table(s) to this file instead of the terminal")
    parser.add_argument("--references", default=str(DEFAULT_REFERENCES), help="published numbers to show as reference rows (default: %(default)s; 'none' for none)")
    parser.add_argument("--no-significance", action="store_true", help="skip the paired significance tests (no artifact reads)")
    parser.add_argument("--figures", metavar="DIR", help="also write suite figures to DIR: every method's PR and "
                        "precision@k curves overlaid per data set and bit length (mean over seeds), PDF and 300-dpi PNG")
    parser.add_argument("--metric", default="map", help="metric of the table, e.g. map, map_cosine, map_tie_aware, "
                        "map_at_100_topk, p_at_50, recall_at_5 (default: %(default)s); a cutoff the runs lack is "
                        "computed from their stored codes, without training")
    args = parser.parse_args(argv)
    try:
        suite = suite_from_args(args)
        parse_shard(args.shard)
        cluster = spec_from_args(args, suite.cluster)
        references = [] if args.references == "none" else load_references(args.references)
    except SuiteError as exc:
        parser.exit(2, f"error: {exc}\n")

    failed = []
    try:
        tracker = Tracker(args.tracking_uri, args.experiment)
        if args.no_run:
            prepare_store(tracker, args.spool, reap=False)  # what an earlier run left in the spool counts once uploaded
        else:
            failed = run_grid(suite, tracker, force=args.force, shard=parse_shard(args.shard), cluster=cluster,
                              spool=args.spool).failed
    except ClusterError as exc:  # a scheduler that does not answer, workers that cannot take a cell
        parser.exit(2, f"error: {exc}\n")
    except TrackingError as exc:  # a dead server, a full disk, a read-only store
        parser.exit(STORE_FAULT, f"error: {exc}\n")
    keyed = [(cell, cell_key(cell)) for cell in suite.cells()]
    finished = tracker.finished()
    if add_metric(tracker, finished, keyed, args.metric):
        finished = tracker.finished()
    results = suite_results(suite, finished, keyed)
    if results.empty:
        print("no finished runs for this suite yet (run without --no-run)", file=sys.stderr)
        return 1
    if args.format == "csv":
        text = results.sort_values(["dataset", "method", "bits", "seed"]).to_csv(index=False)
    else:
        if f"{args.metric}_i2t" not in results:
            print(f"error: no finished run of this suite has metric {args.metric!r}", file=sys.stderr)
            return 2
        stats = aggregate(results, args.metric)
        boards = [
            build_board(stats, d.name, [m.label for m in suite.methods], suite.bits, results,
                        None if args.no_significance else tracker.per_query, references, metric=args.metric,
                        note=suite.config_note())
            for d in suite.datasets
        ]
        if args.format == "rich":
            console = Console(width=None if sys.stdout.isatty() else 200)
            if args.output:
                console = Console(record=True, width=200, file=open(args.output, "w"))
            for board in boards:
                console.print(rich_table(board, suite.seeds))
            text = None
        elif args.format == "markdown":
            text = "\n\n".join(f"### {title(b, suite.seeds)}\n\n{markdown_table(b, suite.seeds)}" for b in boards)
        else:
            text = "\n\n".join(latex_table(b, suite.seeds) for b in boards)
    if text is not None:
        if args.output:
            Path(args.output).write_text(text + "\n")
        else:
            print(text)
    if args.figures:
        for path in suite_figures(results, tracker, Path(args.figures), suite.seeds):
            print(f"wrote {path}", file=sys.stderr)
    missing = len(keyed) - len(results)
    if missing:
        print(f"{missing} of {len(keyed)} cells have no finished run", file=sys.stderr)
    for _, message in failed:
        print(f"failed: {message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
