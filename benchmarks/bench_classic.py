"""Classic (shallow) baselines on real Wikipedia and synthetic MIRFlickr: mAP@all and fit seconds.

    python -m benchmarks.bench_classic                  # wiki raw + z-scored, 16/32/64 bits, seeds 0-2
    python -m benchmarks.bench_classic --flickr         # + synthetic-mirflickr (6,000 items, 2,700 train)
    python -m benchmarks.bench_classic --full           # + one 32-bit fit each on the full 9,000-train set
    python -m benchmarks.bench_classic --seeds 0 --output /tmp/classic

Wikipedia: official split, 217 training items held out for validation (the methods never look at
them: all are closed form or run a fixed iteration count), test split as query and database.
"zscore" standardises every split with the training mean and std (computed here, not in the
methods). CCA and CCA-ITQ exist linearly only up to the CCA rank (9 on Wikipedia: 10-d LDA text),
so they run with 9 bits linearly and with the RBF anchor map (kernel="rbf") at 16/32/64 bits;
a cell whose fit refuses the bit length records the error. Rows go to <output>.jsonl as they
finish (a rerun skips those present); <output>.md holds mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

import datasets
import methods
from methods import FitContext
from runners.evaluation import evaluate_encoder

RESULTS = Path(__file__).resolve().parent / "results"
# (label, registered name, overrides, bit lengths)
RUNS = (
    ("CCA", "cca", {}, (9,)),
    ("CCA (rbf)", "cca", {"kernel": "rbf"}, (16, 32, 64)),
    ("CCA-ITQ", "cca-itq", {}, (9,)),
    ("CCA-ITQ (rbf)", "cca-itq", {"kernel": "rbf"}, (16, 32, 64)),
    ("CMFH", "cmfh", {}, (16, 32, 64)),
    ("SCM-seq", "scm-seq", {}, (16, 32, 64)),
    ("SCM-orth", "scm-orth", {}, (9, 16)),
    ("SePH_km", "seph", {}, (16, 32, 64)),
    ("SePH_rnd", "seph", {"anchors": "random"}, (16, 32, 64)),
)
FLICKR = {"n_items": 6000, "n_query": 600, "n_train": 3000, "n_validation": 300}
# --full: the full-size synthetic MIRFlickr (9,000 training items x 4,096-d images), one seed, 32 bits:
# the fit-time check, plus CCA with a large ridge to show what its search space can recover
FULL_RUNS = (
    ("CCA", "cca", {}, (32,)),
    ("CCA reg=1", "cca", {"reg": 1.0}, (32,)),
    ("CCA-ITQ", "cca-itq", {}, (32,)),
    ("CMFH", "cmfh", {}, (32,)),
    ("CMFH (rbf)", "cmfh", {"kernel": "rbf"}, (32,)),
    ("SCM-seq", "scm-seq", {}, (32,)),
    ("SCM-orth", "scm-orth", {}, (16,)),
    ("SePH_km", "seph", {}, (32,)),
)


def zscored(data: datasets.CrossModalData) -> datasets.CrossModalData:
    """Return data with each modality standardised by the training mean and std (std 0 -> 1)."""
    stats = {}
    for m in ("image", "text"):
        x = getattr(data.train, m).astype(np.float64)
        std = x.std(0)
        stats[m] = (x.mean(0), np.where(std > 0, std, 1.0))
    splits = {}
    for name, split in data.splits().items():
        splits[name] = replace(split, **{m: ((getattr(split, m) - mu) / sd).astype(np.float32) for m, (mu, sd) in stats.items()})
    return replace(data, **splits)


CHANCE = "random ranking"


def chance_row(data, dataset: str, prep: str) -> dict[str, Any]:
    """Return the exact expected mAP@all of a random ranking (tie-aware mAP of all-equal codes)."""
    class Constant(methods.Encoder):
        bits = 8

        def encode(self, modality, features):
            return torch.ones((len(features), 8), dtype=torch.int8)

    values = evaluate_encoder(Constant(), data, curves=False).values
    return {"dataset": dataset, "prep": prep, "label": CHANCE, "method": "-", "overrides": {}, "bits": 0, "seed": 0,
            "fit_seconds": 0.0, "map_i2t": values["map_tie_aware_i2t"], "map_t2i": values["map_tie_aware_t2i"]}


def run_cell(data, dataset: str, prep: str, label: str, name: str, overrides: dict, bits: int, seed: int) -> dict[str, Any]:
    """Fit one configuration and return its row (mAP both ways, cosine mAP for CCA, fit seconds)."""
    row: dict[str, Any] = {"dataset": dataset, "prep": prep, "label": label, "method": name, "overrides": overrides,
                           "bits": bits, "seed": seed}
    started = time.perf_counter()
    try:
        encoder = methods.create(name, overrides).fit(data.train, bits, FitContext(seed=seed))
    except ValueError as exc:
        row["error"] = str(exc)
        return row
    row["fit_seconds"] = time.perf_counter() - started
    values = evaluate_encoder(encoder, data, curves=False).values
    row.update({k: v for k, v in values.items() if k in ("map_i2t", "map_t2i", "map_cosine_i2t", "map_cosine_t2i")})
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Return markdown tables (one per dataset and preprocessing): mean ± std over seeds."""
    order: dict[str, int] = {}
    for label in [CHANCE] + [r[0] for r in RUNS + FULL_RUNS]:
        order.setdefault(label, len(order))
    df = pd.DataFrame(rows)
    df = df.assign(_order=df["label"].map(order)).sort_values(["_order", "bits"], kind="stable")
    out = []
    for (dataset, prep), part in df.groupby(["dataset", "prep"], sort=False):
        out.append(f"\n### {dataset}, inputs {prep}\n")
        out.append("| method | bits | I→T | T→I | cosine I→T | cosine T→I | fit s | seeds |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for (label, bits), cell in part.groupby(["label", "bits"], sort=False):
            if "error" in cell and cell["error"].notna().all():
                out.append(f"| {label} | {bits} | refused: {cell['error'].iloc[0].split(': ', 1)[1][:90]}… | | | | | |")
                continue
            cell = cell[cell.get("error", pd.Series(index=cell.index, dtype=object)).isna()]

            def fmt(key: str) -> str:
                if key not in cell or cell[key].isna().all():
                    return ""
                v = cell[key].astype(float)
                return f"{v.mean():.3f} ± {v.std(ddof=0):.3f}" if len(v) > 1 else f"{v.mean():.3f}"

            if label == CHANCE:
                out.append(f"| {label} | | {fmt('map_i2t')} | {fmt('map_t2i')} | | | | |")
                continue
            out.append(f"| {label} | {bits} | {fmt('map_i2t')} | {fmt('map_t2i')} | {fmt('map_cosine_i2t')} | "
                       f"{fmt('map_cosine_t2i')} | {cell['fit_seconds'].mean():.2f} | {len(cell)} |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--flickr", action="store_true", help="also run synthetic-mirflickr (6,000 items)")
    parser.add_argument("--full", action="store_true", help="also one 32-bit fit per method on the full synthetic-mirflickr")
    parser.add_argument("--output", type=Path, default=RESULTS / "classic_cpu")
    args = parser.parse_args(argv)
    jsonl = args.output.with_suffix(".jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    done = {(r["dataset"], r["prep"], r["label"], r["bits"], r["seed"]) for r in rows}
    sets = [("wiki", prep, lambda: datasets.load("wiki", n_validation=217), RUNS, args.seeds) for prep in ("raw", "zscore")]
    if args.flickr:
        sets.append(("synthetic-mirflickr-6k", "raw", lambda: datasets.load("synthetic-mirflickr", **FLICKR), RUNS, args.seeds))
    if args.full:
        sets.append(("synthetic-mirflickr-full", "raw", lambda: datasets.load("synthetic-mirflickr"), FULL_RUNS, args.seeds[:1]))
    for dataset, prep, load, runs, seeds in sets:
        if (dataset, prep, CHANCE, 0, 0) in done and all(
                (dataset, prep, label, bits, seed) in done for label, _, _, bit_lengths in runs
                for bits in bit_lengths for seed in seeds):
            continue
        data = load()
        data = zscored(data) if prep == "zscore" else data
        if (dataset, prep, CHANCE, 0, 0) not in done:
            rows.append(chance_row(data, dataset, prep))
            with jsonl.open("a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
        for label, name, overrides, bit_lengths in runs:
            for bits in bit_lengths:
                for seed in seeds:
                    if (dataset, prep, label, bits, seed) in done:
                        continue
                    row = run_cell(data, dataset, prep, label, name, overrides, bits, seed)
                    row["blas_threads_env"] = os.environ.get("OPENBLAS_NUM_THREADS", "")
                    rows.append(row)
                    jsonl.parent.mkdir(parents=True, exist_ok=True)
                    with jsonl.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    args.output.with_suffix(".md").write_text(
        "# Classic baselines (CPU)\n\nmAP@all, ties broken by database index; mean ± std over seeds. "
        "Reproduce: `OPENBLAS_NUM_THREADS=1 python -m benchmarks.bench_classic --flickr --full`. Fit seconds are "
        "from 2 CPU cores shared with other jobs (load average 5-11 during these runs), one BLAS thread.\n" + table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
