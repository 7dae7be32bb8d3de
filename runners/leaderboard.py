"""Leaderboards from MLflow runs: mean ± std over seeds per (dataset, method, bits, direction)."""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import pandas as pd
from rich.table import Table

from .suite import Suite

DIRECTION_NAMES = {"i2t": "I→T", "t2i": "T→I"}
BEST_MARK = "*"


def suite_results(suite: Suite, finished: dict[str, Any], keys: Iterable[tuple[Any, str]]) -> pd.DataFrame:
    """Return one row per finished cell of `suite`: dataset, method (label), bits, seed, run_id, metrics.

    `keys` pairs each cell with its run key; cells without a finished run are left out."""
    rows = []
    for cell, key in keys:
        run = finished.get(key)
        if run is None:
            continue
        rows.append({
            "dataset": cell.dataset.name, "method": cell.method.label, "bits": cell.bits, "seed": cell.seed,
            "run_id": run.info.run_id, **run.data.metrics,
        })
    return pd.DataFrame(rows)


def aggregate(results: pd.DataFrame, metric: str = "map") -> pd.DataFrame:
    """Return mean, std (ddof=1; 0 for one seed) and count over seeds, indexed by
    (dataset, method) with columns (statistic, direction, bits)."""
    cols = [f"{metric}_{d}" for d in DIRECTION_NAMES]
    long = results.melt(id_vars=["dataset", "method", "bits", "seed"], value_vars=cols, var_name="direction", value_name="value")
    long["direction"] = long["direction"].str.removeprefix(f"{metric}_")
    grouped = long.groupby(["dataset", "method", "direction", "bits"])["value"]
    stats = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1).fillna(0.0), "n": grouped.count()})
    return stats.unstack(["direction", "bits"])


def _best(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return max(finite) if finite else math.nan


def leaderboard_rows(stats: pd.DataFrame, dataset: str, methods: Sequence[str], bits: Sequence[int]) -> tuple[list[str], list[list[str]], list[list[bool]]]:
    """Return (headers, text rows, best flags) for one dataset: 'mean ± std' per (direction, bits)."""
    headers = ["method"] + [f"{DIRECTION_NAMES[d]} {b}" for d in DIRECTION_NAMES for b in bits]
    table = stats.loc[dataset] if dataset in stats.index.get_level_values(0) else None
    cells: list[list[str]] = []
    flags: list[list[bool]] = []
    means = {}
    for d in DIRECTION_NAMES:
        for b in bits:
            col = []
            for m in methods:
                try:
                    col.append(float(table.loc[m, ("mean", d, b)]))
                except (KeyError, AttributeError, TypeError):
                    col.append(math.nan)
            means[d, b] = col
    for i, m in enumerate(methods):
        row, flag = [m], [False]
        for d in DIRECTION_NAMES:
            for b in bits:
                mean = means[d, b][i]
                if math.isnan(mean):
                    row.append("—")
                    flag.append(False)
                    continue
                std = float(table.loc[m, ("std", d, b)])
                n = int(table.loc[m, ("n", d, b)])
                best = mean == _best(means[d, b]) and sum(not math.isnan(v) for v in means[d, b]) > 1
                text = f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"
                row.append(text + (f" {BEST_MARK}" if best else ""))
                flag.append(best)
        cells.append(row)
        flags.append(flag)
    return headers, cells, flags


def rich_table(stats: pd.DataFrame, dataset: str, methods: Sequence[str], bits: Sequence[int], seeds: Sequence[int]) -> Table:
    """Return a rich Table for one dataset; the best mean per column is bold and marked '*'."""
    headers, rows, flags = leaderboard_rows(stats, dataset, methods, bits)
    table = Table(
        title=f"{dataset} — mAP@all (Hamming ranking, ties by database index), mean ± std over seeds {list(seeds)}",
        caption=f"{BEST_MARK} best in column (also bold)", title_justify="left",
    )
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for row, flag in zip(rows, flags):
        table.add_row(*[f"[bold]{t}[/bold]" if f else t for t, f in zip(row, flag)])
    return table


def markdown_table(stats: pd.DataFrame, dataset: str, methods: Sequence[str], bits: Sequence[int]) -> str:
    """Return a GitHub markdown table for one dataset; the best per column is **bold** and marked."""
    headers, rows, flags = leaderboard_rows(stats, dataset, methods, bits)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for row, flag in zip(rows, flags):
        lines.append("| " + " | ".join(f"**{t}**" if f else t for t, f in zip(row, flag)) + " |")
    return "\n".join(lines)
