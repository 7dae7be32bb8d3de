"""Leaderboard of a suite: runs what MLflow does not hold yet, then prints mean ± std over seeds.

    python -m runners.compare                       # the default suite (benchmarks/default.toml)
    python -m runners.compare --suite benchmarks/mirflickr.toml --bits 16 32 64 --seeds 0 1 2
    python -m runners.compare --no-run --format markdown --output table.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from rich.console import Console

from .leaderboard import aggregate, markdown_table, rich_table, suite_results
from .run import add_grid_arguments, cell_identity, run_grid, suite_from_args
from .suite import SuiteError
from .tracking import Tracker


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runners.compare", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.split("\n\n")[1:]),
    )
    add_grid_arguments(parser)
    parser.add_argument("--no-run", action="store_true", help="only show what MLflow already holds")
    parser.add_argument("--format", choices=["rich", "markdown", "csv"], default="rich", help="output format (default: %(default)s)")
    parser.add_argument("--output", help="write the table(s) to this file instead of the terminal")
    args = parser.parse_args(argv)
    try:
        suite = suite_from_args(args)
    except SuiteError as exc:
        parser.exit(2, f"error: {exc}\n")

    tracker = Tracker(args.tracking_uri, args.experiment)
    failed = []
    if not args.no_run:
        failed = run_grid(suite, tracker, force=args.force, workers=args.workers).failed
    keyed = [(cell, cell_identity(cell)[0]) for cell in suite.cells()]
    results = suite_results(suite, tracker.finished(), keyed)
    out = Console(width=None if sys.stdout.isatty() and not args.output else 200, record=bool(args.output),
                  file=open(args.output, "w") if args.output and args.format == "rich" else None)
    if results.empty:
        print("no finished runs for this suite yet (run without --no-run)", file=sys.stderr)
        return 1
    methods_ = [m.label for m in suite.methods]
    if args.format == "csv":
        text = results.sort_values(["dataset", "method", "bits", "seed"]).to_csv(index=False)
    elif args.format == "markdown":
        stats = aggregate(results)
        text = "\n\n".join(f"### {d.name}\n\n" + markdown_table(stats, d.name, methods_, suite.bits) for d in suite.datasets)
    else:
        stats = aggregate(results)
        for d in suite.datasets:
            out.print(rich_table(stats, d.name, methods_, suite.bits, suite.seeds))
        text = None
    if text is not None:
        if args.output:
            Path(args.output).write_text(text + "\n")
        else:
            print(text)
    missing = len(keyed) - len(results)
    if missing:
        print(f"{missing} of {len(keyed)} cells have no finished run", file=sys.stderr)
    for _, message in failed:
        print(f"failed: {message}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
