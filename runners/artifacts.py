"""Per-run artifacts: PR and precision@k curves (CSV + PNG), per-query APs, the config.

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


def write_curves(folder: Path, curves: Mapping[str, Mapping[str, Any]]) -> None:
    """Write curves.csv and pr_curve.png / precision_at_k.png from
    curves[direction] = {"pr": PRCurve, "p_at_k": (ks, precisions)}."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = []
    for direction, c in curves.items():
        pr = c["pr"]
        for r, p, rec in zip(pr.radius.tolist(), pr.precision.tolist(), pr.recall.tolist()):
            rows.append({"direction": direction, "curve": "pr_by_radius", "x": r, "precision": p, "recall": rec})
        for k, p in zip(*c["p_at_k"]):
            rows.append({"direction": direction, "curve": "precision_at_k", "x": k, "precision": p, "recall": np.nan})
    frame = pd.DataFrame(rows)
    frame.to_csv(folder / "curves.csv", index=False)

    fig, ax = plt.subplots(figsize=(5, 4))
    for direction in curves:
        part = frame[(frame.direction == direction) & (frame.curve == "pr_by_radius")]
        ax.plot(part.recall, part.precision, marker=".", label=DIRECTION_TITLES[direction])
    ax.set(xlabel="recall", ylabel="precision", title="PR by Hamming radius (micro-averaged)", xlim=(0, 1), ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "pr_curve.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 4))
    for direction in curves:
        part = frame[(frame.direction == direction) & (frame.curve == "precision_at_k")]
        ax.plot(part.x, part.precision, marker=".", label=DIRECTION_TITLES[direction])
    ax.set(xscale="log", xlabel="k (top-k retrieved)", ylabel="precision@k", title="precision@k (ties by index)", ylim=(0, 1))
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "precision_at_k.png", dpi=100)
    plt.close(fig)


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
