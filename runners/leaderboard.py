"""Leaderboards from MLflow runs: mean ± std over seeds per (dataset, method, bits, direction).

One structured table (Board) feeds every format (rich, markdown, LaTeX). The best mean per column
is marked; methods whose per-query APs are not significantly different from the best one's
(paired Wilcoxon signed-rank over (seed, query) pairs) are marked too, so a "best" that is
noise shows as such. Published numbers can be added as reference rows, never ranked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from rich.table import Table

from .records import RunRecord
from .suite import Suite, SuiteError, read_toml

DIRECTION_NAMES = {"i2t": "I→T", "t2i": "T→I"}
# What a leaderboard's numbers are, by metric family (others are named as they are).
METRIC_TITLES = {
    "map": "mAP@all (Hamming ranking, ties by database index)",
    "map_tie_aware": "tie-aware mAP@all (expected over random order within Hamming ties)",
    "map_cosine": "mAP@all (cosine ranking of real-valued features)",
}
BEST_MARK = "*"
TIE_MARK = "≈"
ALPHA = 0.05


def suite_results(suite: Suite, finished: Mapping[str, RunRecord], keys: Iterable[tuple[Any, str]]) -> pd.DataFrame:
    """Return one row per finished cell of `suite`: dataset, method (label), bits, seed, run_id,
    how the fit ended (steps, best step, stop reason, seconds) and every metric.

    `keys` pairs each cell with its run key; cells without a finished run are left out."""
    rows = []
    for cell, key in keys:
        record = finished.get(key)
        if record is None:
            continue
        rows.append({
            "dataset": cell.dataset.name, "method": cell.method.label, "bits": cell.bits, "seed": cell.seed,
            "run_id": record.run_id, "stop_reason": record.fit.stop_reason, **record.metrics,
        })
    return pd.DataFrame(rows)


def aggregate(results: pd.DataFrame, metric: str = "map") -> pd.DataFrame:
    """Return mean, std (ddof=1; 0 for one seed) and count over seeds, indexed by
    (dataset, method) with columns (statistic, direction, bits)."""
    cols = [f"{metric}_{d}" for d in DIRECTION_NAMES if f"{metric}_{d}" in results]
    long = results.melt(id_vars=["dataset", "method", "bits", "seed"], value_vars=cols, var_name="direction", value_name="value")
    long["direction"] = long["direction"].str.removeprefix(f"{metric}_")
    grouped = long.groupby(["dataset", "method", "direction", "bits"])["value"]
    stats = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1).fillna(0.0), "n": grouped.count()})
    return stats.unstack(["direction", "bits"])


def paired_p_value(a: np.ndarray, b: np.ndarray) -> float:
    """Return the two-sided p-value of a Wilcoxon signed-rank test on paired samples a, b
    (1.0 when every difference is zero)."""
    from scipy.stats import wilcoxon

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if not np.any(diff != 0):
        return 1.0
    return float(wilcoxon(a, b, zero_method="wilcox").pvalue)


@dataclass
class Entry:
    """One leaderboard cell."""

    mean: float = math.nan
    std: float = 0.0
    n: int = 0
    best: bool = False
    tie_with_best: bool = False  # not significantly different from the best (p >= ALPHA)
    p_value: float | None = None
    published: bool = False

    def body(self) -> str:
        """Return the number alone: 'mean ± std' (mean only for one seed), '—' when missing."""
        if math.isnan(self.mean):
            return "—"
        return f"{self.mean:.4f} ± {self.std:.4f}" if self.n > 1 else f"{self.mean:.4f}"

    def marks(self) -> str:
        """Return ' *' for the best, ' ≈' for a tie with it, '' otherwise."""
        return (f" {BEST_MARK}" if self.best else "") + (f" {TIE_MARK}" if self.tie_with_best else "")

    def text(self) -> str:
        return self.body() + self.marks()


@dataclass
class Board:
    """A dataset's leaderboard: rows of Entries under (direction, bits) columns."""

    dataset: str
    columns: list[tuple[str, int]]
    rows: dict[str, list[Entry]]
    references: dict[str, tuple[str, list[Entry]]] = field(default_factory=dict)  # label -> (source, entries)
    tested: bool = False
    metric: str = "map"
    note: str = ""  # what the configs are (defaults or tuned), shown under the table

    @property
    def metric_title(self) -> str:
        return METRIC_TITLES.get(self.metric, self.metric)

    def headers(self) -> list[str]:
        return ["method"] + [f"{DIRECTION_NAMES[d]} {b}" for d, b in self.columns]


def build_board(stats: pd.DataFrame, dataset: str, methods: Sequence[str], bits: Sequence[int],
                results: pd.DataFrame | None = None,
                per_query: Callable[[str], Mapping[str, np.ndarray]] | None = None,
                references: Sequence[Mapping[str, Any]] = (), metric: str = "map", note: str = "") -> Board:
    """Return the Board of one dataset for `metric` (stats from aggregate(results, metric)). With
    `results` and `per_query` (run_id -> {'<metric>_<direction>': per-query values}), each method
    is tested against the column's best on per-query values paired over (seed, query)."""
    columns = [(d, b) for d in DIRECTION_NAMES for b in bits]
    table = stats.loc[dataset] if dataset in stats.index.get_level_values(0) else None
    board = Board(dataset, columns, {m: [] for m in methods}, tested=per_query is not None, metric=metric, note=note)
    for m in methods:
        for d, b in columns:
            try:
                board.rows[m].append(Entry(float(table.loc[m, ("mean", d, b)]), float(table.loc[m, ("std", d, b)]),
                                           int(table.loc[m, ("n", d, b)])))
            except (KeyError, AttributeError, TypeError, ValueError):  # no finished run in this column (NaN count)
                board.rows[m].append(Entry())
    for j, (d, b) in enumerate(columns):
        present = [m for m in methods if not math.isnan(board.rows[m][j].mean)]
        if len(present) < 2:
            continue
        best = max(present, key=lambda m: board.rows[m][j].mean)
        board.rows[best][j].best = True
        if per_query is None or results is None:
            continue
        best_aps = _paired_aps(results, per_query, dataset, best, b, f"{metric}_{d}")
        for m in present:
            if m == best:
                continue
            other = _paired_aps(results, per_query, dataset, m, b, f"{metric}_{d}")
            common = sorted(set(best_aps) & set(other))
            if not common:
                continue
            p = paired_p_value(np.concatenate([best_aps[s] for s in common]), np.concatenate([other[s] for s in common]))
            board.rows[m][j].p_value = p
            board.rows[m][j].tie_with_best = p >= ALPHA
    for ref in references:
        if ref["dataset"] != dataset or ref.get("metric", "map") != metric:
            continue
        label = f"{ref['method']} (published)"
        entries = [Entry(float(ref["values"].get(f"{d}_{b}", math.nan)), published=True) for d, b in columns]
        if any(not math.isnan(e.mean) for e in entries):
            board.references[label] = (ref.get("source", ""), entries)
    return board


def _paired_aps(results: pd.DataFrame, per_query, dataset: str, method: str, bits: int, key: str) -> dict[int, np.ndarray]:
    """Return {seed: per-query values under `key`} of one method and column (only seeds whose
    arrays agree in length; none when a run lacks them)."""
    rows = results[(results.dataset == dataset) & (results.method == method) & (results.bits == bits)]
    out = {}
    for r in rows.itertuples():
        values = per_query(r.run_id)
        if key not in values:
            return {}
        out[int(r.seed)] = np.asarray(values[key])
    lengths = {len(v) for v in out.values()}
    return out if len(lengths) <= 1 else {}


def deltas_against(board: Board, reference: str, results: pd.DataFrame, per_query: Callable[[str], Mapping[str, np.ndarray]]
                   ) -> dict[str, list[tuple[float, float | None, float]]]:
    """Return {method: [(its mean minus `reference`'s mean, two-sided paired Wilcoxon p-value on
    per-query values over the seeds both ran (None without them), seed noise: the larger of the
    two seed standard deviations)] per board column} for every other row of `board` (an ablation
    read against the full model). With hundreds of queries a shift of 0.0004 can have p < 1e-20;
    the seed noise says whether it is larger than what another seed would change."""
    if reference not in board.rows:
        raise SuiteError(f"no method labelled {reference!r} on the {board.dataset} board; rows: {', '.join(board.rows)}")
    ref_aps = [_paired_aps(results, per_query, board.dataset, reference, b, f"{board.metric}_{d}") for d, b in board.columns]
    out: dict[str, list[tuple[float, float | None, float]]] = {}
    for m in board.rows:
        if m == reference:
            continue
        cells = []
        for j, (d, b) in enumerate(board.columns):
            ref, mine, r = board.rows[reference][j], board.rows[m][j], ref_aps[j]
            a = _paired_aps(results, per_query, board.dataset, m, b, f"{board.metric}_{d}")
            common = sorted(set(a) & set(r))
            p = paired_p_value(np.concatenate([a[s] for s in common]), np.concatenate([r[s] for s in common])) if common else None
            cells.append((mine.mean - ref.mean, p, max(mine.std, ref.std)))
        out[m] = cells
    return out


@dataclass(frozen=True)
class AverageComparison:
    """`method` against the best other method on average over a board's columns."""

    method: str
    runner_up: str          # the other method with the highest mean over the columns
    margin: float           # method's mean over the columns minus the runner-up's
    p_value: float | None   # paired Wilcoxon on each (seed, query)'s value averaged over the columns
    units: int              # (seed, query) pairs tested


def average_against_runner_up(board: Board, method: str, results: pd.DataFrame,
                              per_query: Callable[[str], Mapping[str, np.ndarray]]) -> AverageComparison | None:
    """Return `method` against the runner-up on average over every column of `board`, among the
    methods with every column filled (None when `method` lacks one or has no rival). The test
    pairs each (seed, query item): its value averaged over the columns (I->T and T->I at each bit
    length), over the seeds both methods ran in every column; p is None without per-query values."""
    full = [m for m, entries in board.rows.items() if not any(math.isnan(e.mean) for e in entries)]
    if method not in full or len(full) < 2:
        return None
    mean = {m: float(np.mean([e.mean for e in board.rows[m]])) for m in full}
    runner_up = max((m for m in full if m != method), key=mean.__getitem__)

    def averaged(m: str) -> dict[int, np.ndarray]:
        columns = [_paired_aps(results, per_query, board.dataset, m, b, f"{board.metric}_{d}") for d, b in board.columns]
        seeds = set.intersection(*(set(c) for c in columns))
        if len({len(c[s]) for c in columns for s in seeds}) > 1:  # a column with other queries: no pairing
            return {}
        return {s: np.mean([c[s] for c in columns], axis=0) for s in seeds}

    mine, theirs = averaged(method), averaged(runner_up)
    common = sorted(set(mine) & set(theirs))
    p = None
    if common:
        p = paired_p_value(np.concatenate([mine[s] for s in common]), np.concatenate([theirs[s] for s in common]))
    return AverageComparison(method, runner_up, mean[method] - mean[runner_up], p,
                             sum(len(mine[s]) for s in common))


def caption(board: Board, seeds: Sequence[int]) -> str:
    """Return the legend under a table: what the marks mean."""
    text = f"{BEST_MARK} best in column (also bold)"
    if board.tested:
        text += f"; {TIE_MARK} not significantly different from the best (paired Wilcoxon signed-rank on per-query values over seeds × queries, p ≥ {ALPHA})"
    if board.references:
        text += "; (published) rows are numbers from the papers, on their own features, not rerun here"
    if board.note:
        text += f"; {board.note}"
    return text


def title(board: Board, seeds: Sequence[int]) -> str:
    return f"{board.dataset} — {board.metric_title}, mean ± std over seeds {list(seeds)}"


def rich_table(board: Board, seeds: Sequence[int]) -> Table:
    """Return a rich Table: best per column bold and marked '*', ties with it marked '≈'."""
    table = Table(title=title(board, seeds), caption=caption(board, seeds), title_justify="left")
    for i, h in enumerate(board.headers()):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for m, entries in board.rows.items():
        table.add_row(m, *[f"[bold]{e.text()}[/bold]" if e.best else e.text() for e in entries])
    for label, (_, entries) in board.references.items():
        table.add_row(f"[italic]{label}[/italic]", *[f"[italic]{e.text()}[/italic]" for e in entries])
    return table


def _md_escape(text: str) -> str:
    """Escape what CommonMark would read as markup in a table cell or paragraph."""
    for ch in ("\\", "*", "_", "|", "`", "[", "]", "<", ">"):
        text = text.replace(ch, "\\" + ch)
    return text


def markdown_table(board: Board, seeds: Sequence[int]) -> str:
    """Return a CommonMark/GFM table: the best per column in bold with its mark outside the bold,
    published rows in italics, and the legend as a plain paragraph under it."""
    headers = board.headers()
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]

    def cell(e: Entry) -> str:
        body = f"**{e.body()}**" if e.best else e.body()
        return body + _md_escape(e.marks())

    for m, entries in board.rows.items():
        lines.append("| " + " | ".join([_md_escape(m)] + [cell(e) for e in entries]) + " |")
    for label, (_, entries) in board.references.items():
        lines.append("| " + " | ".join([f"_{_md_escape(label)}_"] + [f"_{e.body()}_" for e in entries]) + " |")
    return "\n".join(lines + ["", "Marks: " + _md_escape(caption(board, seeds))])


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$")):
        text = text.replace(a, b)
    return text


def latex_table(board: Board, seeds: Sequence[int]) -> str:
    """Return a booktabs LaTeX table: mean ± std, best bold, ties with the best marked $^\\approx$."""
    bits = sorted({b for _, b in board.columns})
    dirs = list(dict.fromkeys(d for d, _ in board.columns))
    latex_dirs = {d: name.replace("→", "$\\rightarrow$") for d, name in DIRECTION_NAMES.items()}

    def cell(e: Entry) -> str:
        if math.isnan(e.mean):
            return "--"
        body = f"{e.mean:.4f}" + (f" $\\pm$ {e.std:.4f}" if e.n > 1 else "")
        body = f"\\textbf{{{body}}}" if e.best else body
        return body + ("$^{\\approx}$" if e.tie_with_best else "")

    lines = [
        "\\begin{table}[t]", "\\centering",
        f"\\caption{{{_latex_escape(board.dataset)}: {_latex_escape(board.metric_title)}, mean $\\pm$ std over {len(seeds)} seeds. "
        "Bold: best per column" + ("; $^{\\approx}$: not significantly different from the best (paired Wilcoxon, $p \\ge 0.05$)" if board.tested else "") + ".}",
        "\\begin{tabular}{l" + "r" * len(board.columns) + "}", "\\toprule",
        " & " + " & ".join(f"\\multicolumn{{{len(bits)}}}{{c}}{{{latex_dirs[d]}}}" for d in dirs) + " \\\\",
        "Method & " + " & ".join(f"{b} bits" for _, b in board.columns) + " \\\\", "\\midrule",
    ]
    for m, entries in board.rows.items():
        lines.append(_latex_escape(m) + " & " + " & ".join(cell(e) for e in entries) + " \\\\")
    if board.references:
        lines.append("\\midrule")
        for label, (_, entries) in board.references.items():
            lines.append(f"\\textit{{{_latex_escape(label)}}} & " + " & ".join(cell(e) for e in entries) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines)


def load_references(path: str | Path) -> list[dict[str, Any]]:
    """Return published reference rows from a TOML file of [[reference]] tables with keys
    dataset, method, source, values {"i2t_16" = 0.741, ...} and optionally metric (default
    'map'; e.g. 'map_cosine' for real-valued methods' published protocol)."""
    refs = read_toml(path, "reference").get("reference", [])
    for i, ref in enumerate(refs):
        missing = {"dataset", "method", "source", "values"} - set(ref)
        if missing:
            raise SuiteError(f"{path}: reference[{i}] lacks {sorted(missing)}; each needs dataset, method, source, values")
        for key in ref["values"]:
            direction, _, bits = key.partition("_")
            if direction not in DIRECTION_NAMES or not bits.isdigit():
                raise SuiteError(f"{path}: reference[{i}] value key {key!r}; expected i2t_<bits> or t2i_<bits>")
    return refs
