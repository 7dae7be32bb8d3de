"""The comparison tables of benchmarks/results/, built on the runner (no second runner).

    python -m benchmarks.tables                                   # every suite in benchmarks/fair/, default configs
    python -m runners.tune --suite benchmarks/fair/wiki.toml --trials 20 --output benchmarks/results/tuned-wiki.toml
    python -m benchmarks.tables --suites benchmarks/fair/wiki.toml --tuned     # the tuned configs of that file

For each suite: the grid runs through runners.run (finished cells are reused from the MLflow
store, `--tracking-uri`, default sqlite:///bench.db), then one markdown file per suite is written
to benchmarks/results/tables-<suite>[-tuned].md with
- mAP@all under Hamming ranking for every method, and under cosine ranking for the methods with a
  real-valued common space (their published protocol), mean ± std over seeds, the best per
  column bold, '≈' where a method is not significantly different from the best (paired Wilcoxon
  over seeds × queries);
- the random-ranking mAP of the data set (exact: the expected AP of a random order);
- how every fit ended: steps run, the step kept, the stop reason, and fit seconds;
- the proposed method against the best other method per column, as measured;
- with --ablation-of LABEL (benchmarks/ablation/), every other method minus LABEL per column with
  its paired p-value: which parts of the model measurably matter.

    python -m benchmarks.tables --suites benchmarks/ablation/sam-wiki.toml --ablation-of SAM
"""
from __future__ import annotations

import argparse
import platform
import sys
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

import metrics
from runners.identity import git_commit
from runners.records import RunRecord
from runners.leaderboard import (DIRECTION_NAMES, AverageComparison, Board, aggregate, average_against_runner_up,
                                 build_board, deltas_against, load_references, markdown_table,
                                 suite_results, title)
from runners.cells import cell_key, load_dataset
from runners.run import run_grid
from runners.suite import Suite, SuiteError, load_suite, load_tuned, narrowing_flags, select
from runners.tracking import Tracker

HERE = Path(__file__).resolve().parent
FAIR = HERE / "fair"
RESULTS = HERE / "results"
REFERENCES = HERE / "references.toml"


def random_map(data) -> dict[str, float]:
    """Return the exact expected mAP of a random ranking per direction (tie-aware mAP of codes
    that are all equal: every item in one tie group)."""
    out = {}
    for direction, (q_mod, r_mod) in {"i2t": ("image", "text"), "t2i": ("text", "image")}.items():
        q_rel = torch.from_numpy(data.query.relevance_targets(q_mod))
        r_rel = torch.from_numpy(data.retrieval.relevance_targets(r_mod))
        q = torch.ones(len(q_rel), 8, dtype=torch.int8)
        r = torch.ones(len(r_rel), 8, dtype=torch.int8)
        out[direction] = float(metrics.mean_average_precision(q, r, q_rel, r_rel, ties="tie-aware"))
    return out


def fit_table(results: pd.DataFrame, labels: Sequence[str], bits: Sequence[int]) -> str:
    """Return a markdown table of how the fits ended: median steps (median step kept), the stop
    reasons with their counts, and mean fit seconds, per method and bit length."""
    lines = ["| method | " + " | ".join(f"{b} bits: steps (kept) · stop · fit s" for b in bits) + " |",
             "|---|" + "---:|" * len(bits)]
    for label in labels:
        cells = []
        for b in bits:
            rows = results[(results.method == label) & (results.bits == b)]
            if rows.empty:
                cells.append("—")
                continue
            reasons = ", ".join(f"{k} ×{v}" for k, v in Counter(rows.stop_reason).items())
            cells.append(f"{int(rows.fit_steps.median())} ({int(rows.fit_best_step.median())}) · {reasons} · "
                         f"{rows.fit_seconds.mean():.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def proposed_statement(board: Board, proposed: str, average: AverageComparison | None = None) -> str:
    """Return what the table says of `proposed` against the best other method, column by column,
    then (with `average`, average_against_runner_up) against the runner-up on average."""
    if proposed not in board.rows:
        return ""
    parts, margins, wins, significant = [], [], 0, 0
    for j, (d, b) in enumerate(board.columns):
        mine = board.rows[proposed][j]
        others = [(m, e[j]) for m, e in board.rows.items() if m != proposed and not np.isnan(e[j].mean)]
        if np.isnan(mine.mean) or not others:
            continue
        rival, entry = max(others, key=lambda x: x[1].mean)
        margin = mine.mean - entry.mean
        margins.append(margin)
        if margin > 0:
            wins += 1
            p = entry.p_value
            significant += int(p is not None and p < 0.05)
            tested = f", p = {p:.3g}" if p is not None else ""
        else:
            tested = f", p = {mine.p_value:.3g}" if mine.p_value is not None else ""
        parts.append(f"{d} {b}: {margin:+.4f} vs {rival}{tested}")
    if not margins:
        return ""
    return (f"**{proposed} minus the best other method, per column** ({board.metric}): " + "; ".join(parts) +
            f". Mean margin {np.mean(margins):+.4f}; {proposed} is ahead in {wins} of {len(margins)} columns, "
            f"significantly (p < 0.05 against the runner-up) in {significant}." + _average_sentence(average))


def _average_sentence(average: AverageComparison | None) -> str:
    if average is None:
        return ""
    tested = "" if average.p_value is None else (
        f", p = {average.p_value:.3g} (paired Wilcoxon over {average.units} seed × query pairs, each query's "
        "value averaged over the columns)")
    verdict = "best on average" if average.margin > 0 else "not best on average"
    if average.margin > 0 and average.p_value is not None:
        verdict += ", significantly" if average.p_value < 0.05 else ", not significantly"
    return (f" On average over the columns: {average.margin:+.4f} against the runner-up on average, "
            f"{average.runner_up}{tested}; {average.method} is {verdict}.")


def ablation_table(board: Board, reference: str, results: pd.DataFrame, per_query) -> str:
    """Return a markdown table of every other row of `board` minus `reference` per column, with
    the paired p-value, and which variants differ beyond seed noise: p < 0.05 and a difference
    larger than the larger seed standard deviation of the two (marked ‡)."""
    deltas = deltas_against(board, reference, results, per_query)
    heads = [f"{DIRECTION_NAMES[d]} {b}" for d, b in board.columns]
    lines = [f"| variant minus {reference} | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    verdicts = []

    def beyond(delta: float, p: float | None, noise: float) -> bool:
        return p is not None and p < 0.05 and abs(delta) > noise

    def cell(delta: float, p: float | None, noise: float) -> str:
        if np.isnan(delta):
            return "—"
        if p is None:
            return f"{delta:+.4f}"
        return f"{delta:+.4f} (p = {p:.2g}; seeds ±{noise:.4f})" + (" ‡" if beyond(delta, p, noise) else "")

    for m, cells in deltas.items():
        lines.append(f"| {m} | " + " | ".join(cell(*c) for c in cells) + " |")
        worse = sum(1 for delta, p, noise in cells if beyond(delta, p, noise) and delta < 0)
        better = sum(1 for delta, p, noise in cells if beyond(delta, p, noise) and delta > 0)
        verdicts.append(f"{m}: below {reference} in {worse} of {len(cells)} columns, above in {better}")
    return "\n".join(lines) + "\n\n" + (
        "Paired Wilcoxon signed-rank on per-query values over seeds × queries; 'seeds ±' is the larger seed "
        "standard deviation of the two; ‡ marks a difference with p < 0.05 that is also larger than that seed "
        f"noise. A removed or replaced part helps {reference} where its variant is ‡ below it. Beyond seed "
        "noise: " + "; ".join(verdicts) + ".")


def fit_threads(records: Iterable[RunRecord]) -> str:
    """Return how many torch threads the fits ran with, from their `torch_threads` tags: 'fits on
    1 torch thread each', or per count, 'fits on 1 torch thread (54), 2 torch threads (27), not
    recorded (9)' (runs made before the tag existed)."""
    counts = Counter(record.tags.get("torch_threads") for record in records)
    if not counts:
        return "no fits yet"
    name = lambda v: "not recorded" if v is None else f"{v} torch thread{'s' * (v != '1')}"  # noqa: E731
    if len(counts) == 1:
        (only,) = counts
        return "torch threads of the fits not recorded" if only is None else f"fits on {name(only)} each"
    ordered = sorted(counts.items(), key=lambda item: (item[0] is None, int(item[0] or 0)))
    return "fits on " + ", ".join(f"{name(v)} ({n})" for v, n in ordered)


def _relative(path: str) -> str:
    resolved = Path(path).resolve()
    return str(resolved.relative_to(HERE.parent)) if resolved.is_relative_to(HERE.parent) else str(path)


def suite_tables(suite: Suite, tracker: Tracker, proposed: str, references: list, narrowed: str = "",
                 workers: int = 1, ablation_of: str | None = None, run: bool = True) -> str:
    """Run the suite's missing cells and return its markdown report (`narrowed`: the command-line
    options that narrowed the suite's grid, written into the report's command line; with
    `ablation_of`, every other method is also read as a variant of that label; `run` False: only
    what the store already holds, missing cells shown as '—')."""
    report = run_grid(suite, tracker, workers=workers) if run else None
    keyed = [(cell, cell_key(cell)) for cell in suite.cells()]
    finished = tracker.finished()
    results = suite_results(suite, finished, keyed)
    labels = [m.label for m in suite.methods]
    out = [f"# {suite.name}: {suite.description}", "",
           f"Written by `python -m benchmarks.tables --suites {_relative(suite.source)}"
           + (" --tuned" if suite.tuned else "") + (f" --ablation-of {ablation_of}" if ablation_of else "")
           + ("" if run else " --no-run") + narrowed
           + f"` at commit {git_commit()}, on "
           f"{platform.machine()} with torch {torch.__version__}, device {suite.device}, "
           f"{fit_threads(finished[key] for _, key in keyed if key in finished)}. "
           f"{suite.config_note()}. {len(results)} of {len(keyed)} cells finished"
           + (f"; failed: {len(report.failed)}" if report and report.failed else "")
           + ("" if run else " (built with --no-run from what the store holds; nothing was trained)") + ".", ""]
    for entry in suite.datasets:
        data = load_dataset(entry)
        rnd = random_map(data)
        out += [f"## {entry.name}", "", data.summary() + f"; preprocessing {dict(data.meta.preprocessing)}.",
                f"Random ranking (exact expected mAP): I→T {rnd['i2t']:.4f}, T→I {rnd['t2i']:.4f}.", ""]
        if results.empty or not (results.dataset == entry.name).any():
            out += ["No finished cells of this data set in the store yet.", ""]
            continue
        for metric in ("map", "map_cosine"):
            if f"{metric}_i2t" not in results:
                continue
            have = results.dropna(subset=[f"{metric}_i2t"])
            rows = [m for m in labels if (have.method == m).any()]
            board = build_board(aggregate(have, metric), entry.name, rows, suite.bits, have, tracker.per_query,
                                references, metric=metric, note=suite.config_note())
            out += [f"### {title(board, suite.seeds)}", "", markdown_table(board, suite.seeds), ""]
            statement = proposed_statement(board, proposed,
                                           average_against_runner_up(board, proposed, have, tracker.per_query))
            if statement:
                out += [statement, ""]
            if ablation_of:
                out += [f"#### {entry.name} — ablation against {ablation_of} ({board.metric})", "",
                        ablation_table(board, ablation_of, have, tracker.per_query), ""]
        out += ["### How the fits ended", "", fit_table(results[results.dataset == entry.name], labels, suite.bits), ""]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tables", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--suites", nargs="+", default=sorted(str(p) for p in FAIR.glob("*.toml")), help="suite files")
    parser.add_argument("--tuned", action="store_true",
                        help="run each suite's tuned configs, benchmarks/results/tuned-<suite>.toml (runners.tune --suite)")
    parser.add_argument("--tracking-uri", default="sqlite:///bench.db", help="MLflow store (default: %(default)s)")
    parser.add_argument("--experiment", default="xmodal-hash-bench-tables", help="MLflow experiment (default: %(default)s)")
    parser.add_argument("--proposed", default="SAM", help="label of the proposed method (default: %(default)s)")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help="only these data sets of the suite: a partial table")
    parser.add_argument("--methods", nargs="+", metavar="NAME", help="only these methods (names or labels): a partial table")
    parser.add_argument("--bits", nargs="+", type=int, metavar="K", help="only these bit lengths: a partial table")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="S", help="only these seeds: a partial table")
    parser.add_argument("--workers", type=int, default=1, help="fit this many cells at once (a local Dask cluster)")
    parser.add_argument("--output-dir", default=str(RESULTS), help="where the markdown files go (default: benchmarks/results)")
    parser.add_argument("--no-run", action="store_true",
                        help="train nothing: build the tables from the finished cells the store holds ('—' for the rest)")
    parser.add_argument("--ablation-of", metavar="LABEL",
                        help="read every other method as a variant of LABEL: its difference and paired p-value per column")
    args = parser.parse_args(argv)
    try:  # before anything trains: a table that cannot be written must not cost the grid
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.exit(2, f"error: --output-dir {args.output_dir}: cannot create it ({exc.strerror or exc})\n")
    narrowed = narrowing_flags((("datasets", args.datasets), ("methods", args.methods), ("bits", args.bits),
                                ("seeds", args.seeds)))
    tracker = Tracker(args.tracking_uri, args.experiment)
    references = load_references(REFERENCES)
    for path in args.suites:
        try:
            suite = load_suite(path)
            absent = [n for n in args.datasets or () if n not in {d.name for d in suite.datasets}]
            if absent:  # a table is named after its suite: it never adds a data set with default options
                raise SuiteError(f"{path}: --datasets {' '.join(absent)}: not in the suite; its data sets: "
                                 f"{', '.join(d.name for d in suite.datasets)}")
            suite = select(suite, datasets_=args.datasets, methods_=args.methods, bits=args.bits, seeds=args.seeds)
            if args.tuned:
                tuned = RESULTS / f"tuned-{suite.name}.toml"  # named from the repository root in the table
                suite = load_tuned(tuned, suite, str(tuned.relative_to(HERE.parent)))
            labels = [m.label for m in suite.methods]
            if args.ablation_of and args.ablation_of not in labels:  # before anything trains
                raise SuiteError(f"{path}: --ablation-of {args.ablation_of!r} is not a method label of the suite; "
                                 f"labels: {', '.join(labels)}")
        except SuiteError as exc:
            parser.exit(2, f"error: {exc}\n")
        text = suite_tables(suite, tracker, args.proposed, references, narrowed, args.workers, args.ablation_of,
                            run=not args.no_run)
        partial = "-partial" if narrowed or args.no_run else ""
        if args.datasets:  # one file per narrowing to data sets, so the halves of a suite run apart both stay
            partial += "-" + "-".join(entry.name for entry in suite.datasets)
        target = Path(args.output_dir) / f"tables-{suite.name}{'-tuned' if args.tuned else ''}{partial}.md"
        target.write_text(text + "\n")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
