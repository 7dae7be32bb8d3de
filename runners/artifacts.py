"""Per-run artifacts: the codes, PR and precision@k curves (CSV, PDF and 300-dpi PNG), per-query
values, the config; and the suite figures that overlay every method's curves.

Written to a folder, then logged to the run by runners.tracking. Plots use matplotlib's Agg
backend (no display needed).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

DIRECTION_TITLES = {"i2t": "image → text", "t2i": "text → image"}
# A run's artifacts: codes.npz (the fit's outputs) and config.json at the top; what scoring
# derives from the codes (per-query APs, curves) under eval/, rewritten when a run is rescored.
CODES_FILE = "codes.npz"
EVAL_DIR = "eval"
PER_QUERY_FILE = "per_query.npz"


def precision_ks(n_retrieval: int) -> list[int]:
    """Return the P@k cutoffs used for curves: 1, 5, 10, 20, 50, ... up to the database size."""
    ks, base = [], 1
    while base <= n_retrieval:
        ks += [k for k in (base, 2 * base, 5 * base) if k <= n_retrieval]
        base *= 10
    return sorted(set(ks + [n_retrieval]))


def curves_frame(curves: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Return the long table of curves.csv from curves[direction] = {"pr": PRCurve, "p_at_k": (ks, precisions)}."""
    rows = []
    for direction, c in curves.items():
        pr = c["pr"]
        for r, p, rec in zip(pr.radius.tolist(), pr.precision.tolist(), pr.recall.tolist()):
            rows.append({"direction": direction, "curve": "pr_by_radius", "x": r, "precision": p, "recall": rec})
        for k, p in zip(*c["p_at_k"]):
            rows.append({"direction": direction, "curve": "precision_at_k", "x": k, "precision": p, "recall": np.nan})
    return pd.DataFrame(rows)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _fit_range(values: np.ndarray) -> tuple[float, float]:
    """Return a y range that shows the curve: its span with 5 % padding, inside [0, 1]."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = max(0.05 * (hi - lo), 0.01)
    return max(0.0, lo - pad), min(1.0, hi + pad)


def run_title(label: str, bits: int, dataset: str, seed: int) -> str:
    """Return the title of one run's figures: method, bits, data set and seed."""
    return f"{label} · {bits} bits · {dataset} · seed {seed}"


def plot_curves(frame: pd.DataFrame, series: str, title: str, folder: Path, prefix: str = "") -> list[Path]:
    """Draw the PR-by-radius and precision@k curves of `frame` (columns direction, curve, x,
    precision, recall, and `series` naming each line), one panel per direction, and save each
    figure as vector PDF and 300-dpi PNG as folder/<prefix>pr_curve.* and
    folder/<prefix>precision_at_k.*; return the files written."""
    plt = _pyplot()
    written = []
    for curve, xlabel, fname in (("pr_by_radius", "recall", "pr_curve"), ("precision_at_k", "k (top-k retrieved)", "precision_at_k")):
        part = frame[frame.curve == curve]
        directions = [d for d in DIRECTION_TITLES if (part.direction == d).any()]
        if not directions:
            continue
        fig, axes = plt.subplots(1, len(directions), figsize=(4.6 * len(directions), 3.8), squeeze=False)
        for ax, direction in zip(axes[0], directions):
            rows = part[part.direction == direction]
            for name, line in rows.groupby(series, sort=False):
                x = line.recall if curve == "pr_by_radius" else line.x
                ax.plot(x, line.precision, marker=".", markersize=3, linewidth=1.2, label=str(name))
            ax.set_ylim(*_fit_range(rows.precision.to_numpy(dtype=float)))
            if curve == "precision_at_k":
                ax.set_xscale("log")
            ax.set(xlabel=xlabel, ylabel="precision", title=DIRECTION_TITLES[direction])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        what = "PR by Hamming radius (micro-averaged)" if curve == "pr_by_radius" else "precision@k (ties by index)"
        fig.suptitle(f"{what} — {title}", fontsize=9)
        fig.tight_layout()
        for suffix, options in ((".pdf", {}), (".png", {"dpi": 300})):
            path = folder / f"{prefix}{fname}{suffix}"
            fig.savefig(path, **options)
            written.append(path)
        plt.close(fig)
    return written


def write_curves(folder: Path, curves: Mapping[str, Mapping[str, Any]], title: str) -> None:
    """Write curves.csv and the run's figures (pr_curve / precision_at_k, PDF and 300-dpi PNG)
    titled `title` (method, bits, data set, seed)."""
    frame = curves_frame(curves)
    frame.to_csv(folder / "curves.csv", index=False)
    plot_curves(frame.assign(series=frame.direction.map(DIRECTION_TITLES)), "series", title, folder)


def write_per_query(folder: Path, per_query: Mapping[str, np.ndarray]) -> None:
    """Write per_query.npz: one float64 array per '<metric>_<direction>', in query order (the
    paired samples behind the leaderboard's significance tests)."""
    np.savez_compressed(folder / PER_QUERY_FILE, **{k: np.asarray(v, dtype=np.float64) for k, v in per_query.items()})


def write_config(folder: Path, config: Mapping[str, Any]) -> None:
    """Write config.json: what a rerun needs (dataset, options, method, full config, bits, seed)."""
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str) + "\n")


def read_per_query(path: str | Path) -> dict[str, np.ndarray]:
    """Return the per-query arrays of a per_query.npz by '<metric>_<direction>'."""
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
