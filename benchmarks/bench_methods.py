"""Method benchmark: mAP (I→T, T→I) and training time per method, bits and seed, SAM vs the best baseline.

    python -m benchmarks.bench_methods                        # wiki + synthetic-mirflickr, 16/32/64 bits, seeds 0-2
    python -m benchmarks.bench_methods --device cuda          # to benchmarks/results/methods_cuda.*
    python -m benchmarks.bench_methods --timing               # one 32-bit fit per method on synthetic-mirflickr

Rows are appended to <output>.jsonl as they finish and skipped when present, so a killed run
resumes (rerun with --fresh to start over). Model selection uses each data set's validation split
(carved from training); the query set is only used for the final numbers. <output>.md holds the
tables: mean ± std over seeds, the best per column marked, and SAM's margin over the best baseline.
Runs without MLflow, so it also works on machines that only have torch, numpy and pandas.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

import datasets
import methods
from methods import FitContext
from runners.evaluation import evaluate_encoder

DATASETS = {
    # Real Wikipedia features (../shared/data/wiki), official split; validation carved from train.
    "wiki": {"n_validation": 217},
    # The embedded default at full MIRFlickr size: 2,000 queries, 18,015 retrieval, 9,000 + 1,000 train.
    "synthetic-mirflickr": {},
}
BASELINES = ("dcmh", "ssah", "dscmr-hash", "dscmr")
PROPOSED = "sam"
RESULTS = Path(__file__).resolve().parent / "results"


def run_one(data, dataset: str, method: str, bits: int, seed: int, device: str) -> dict[str, Any]:
    """Fit one method and return its row: mAP both ways (stable and tie-aware), fit seconds."""
    model = methods.create(method)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    encoder = model.fit(data.train, bits, FitContext(seed=seed, device=device, validation=data.validation))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    fit_seconds = time.perf_counter() - started
    values = evaluate_encoder(encoder, data, curves=False).values
    row = {"dataset": dataset, "method": method, "version": model.version, "bits": bits, "seed": seed, "device": device,
           "fit_seconds": fit_seconds}
    row.update({k: values[k] for k in ("map_i2t", "map_t2i", "map_tie_aware_i2t", "map_tie_aware_t2i") if k in values})
    row.update({k: v for k, v in values.items() if k.startswith("map_cosine")})
    return row


def summarize(rows: pd.DataFrame) -> str:
    """Return the markdown report: per dataset a table (mean ± std over seeds, best marked),
    the mean fit time per method and bit length and the slowest fit, and SAM's margin over the best baseline per column and overall."""
    out = []
    for dataset, part in rows.groupby("dataset", sort=False):
        out.append(f"## {dataset}\n")
        cols = [(d, b) for d in ("i2t", "t2i") for b in sorted(part.bits.unique())]
        names = [m for m in (PROPOSED, *BASELINES) if m in set(part.method)] + sorted(set(part.method) - {PROPOSED, *BASELINES})
        stats = {}
        for m in names:
            for d, b in cols:
                vals = part[(part.method == m) & (part.bits == b)][f"map_{d}"].to_numpy()
                stats[m, d, b] = (vals.mean(), vals.std(ddof=1) if len(vals) > 1 else 0.0, len(vals)) if len(vals) else None
        best = {(d, b): max((m for m in names if stats[m, d, b]), key=lambda m: stats[m, d, b][0]) for d, b in cols}
        header = (["method"] + [f"{'I→T' if d == 'i2t' else 'T→I'} {b}" for d, b in cols] + ["mean"]
                  + [f"fit s {b}" for b in sorted(part.bits.unique())] + ["fit s max"])
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for m in names:
            cells = []
            for d, b in cols:
                st = stats[m, d, b]
                text = "—" if st is None else f"{st[0]:.4f} ± {st[1]:.4f}"
                cells.append(f"**{text}** *" if best[d, b] == m else text)
            means = [stats[m, d, b][0] for d, b in cols if stats[m, d, b]]
            fits = part[part.method == m]
            fit_cells = [f"{fits[fits.bits == b].fit_seconds.mean():.1f}" for b in sorted(part.bits.unique())]
            out.append(f"| {m} | " + " | ".join(cells + [f"{np.mean(means):.4f}"] + fit_cells)
                       + f" | {fits.fit_seconds.max():.1f} |")
        if PROPOSED in names and any(m in names for m in BASELINES):
            margins = []
            for d, b in cols:
                base = [m for m in names if m in BASELINES and stats[m, d, b]]
                if stats[PROPOSED, d, b] and base:
                    top = max(base, key=lambda m: stats[m, d, b][0])
                    margins.append((f"{d} {b}", stats[PROPOSED, d, b][0] - stats[top, d, b][0], top))
            avg = np.mean([m[1] for m in margins])
            out.append("")
            out.append(f"SAM minus the best baseline per column: " + ", ".join(f"{c}: {v:+.4f} (vs {t})" for c, v, t in margins))
            out.append(f"\n**Average margin of SAM over the best baseline: {avg:+.4f}** "
                       f"({'SAM ahead' if avg > 0 else 'SAM behind'} on average; ahead in {sum(v > 0 for _, v, _ in margins)} of {len(margins)} columns)\n")
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_methods", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="default: %(default)s")
    parser.add_argument("--methods", nargs="+", default=[PROPOSED, *BASELINES], help="default: %(default)s")
    parser.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", help="path stem for .jsonl and .md (default: benchmarks/results/methods_<device type>)")
    parser.add_argument("--timing", action="store_true", help="only one 32-bit seed-0 fit per method on synthetic-mirflickr")
    parser.add_argument("--fresh", action="store_true", help="ignore rows already in the .jsonl")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.timing:
        args.datasets, args.bits, args.seeds = ["synthetic-mirflickr"], [32], [0]
    if args.output is None:
        device_type = args.device.split(":")[0]
        args.output = str(RESULTS / (f"methods_{device_type}" + ("_timing" if args.timing else "")))
    for m in args.methods:
        methods.get(m)
    jsonl, md = Path(args.output + ".jsonl"), Path(args.output + ".md")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    rows = [] if args.fresh or not jsonl.exists() else [json.loads(line) for line in jsonl.read_text().splitlines() if line]
    # A row counts as done only for the method's current version (rows of an older one are dropped).
    current = {m: methods.get(m).version for m in args.methods}
    rows = [r for r in rows if r.get("version") == current.get(r["method"], r.get("version"))]
    done = {(r["dataset"], r["method"], r["bits"], r["seed"]) for r in rows}
    if args.fresh:
        jsonl.write_text("")
    for dataset in args.datasets:
        todo = [(m, b, s) for m in args.methods for b in args.bits for s in args.seeds if (dataset, m, b, s) not in done]
        if not todo:
            continue
        try:
            data = datasets.load(dataset, **DATASETS.get(dataset, {}))
        except datasets.DataError as exc:
            print(f"skipping {dataset}: {exc}", flush=True)
            continue
        print(data.summary(), flush=True)
        for m, b, s in todo:
            row = run_one(data, dataset, m, b, s, args.device)
            rows.append(row)
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{dataset} {m} {b} bits seed {s}: I->T {row['map_i2t']:.4f} T->I {row['map_t2i']:.4f} ({row['fit_seconds']:.1f}s)", flush=True)
    frame = pd.DataFrame(rows)
    frame = frame[frame.dataset.isin(args.datasets) & frame.method.isin(args.methods)]
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") and torch.cuda.is_available() else platform.processor() or platform.machine()
    text = (f"# Method benchmark (written by `python -m benchmarks.bench_methods {' '.join(argv)}`)\n\n"
            f"Device: {args.device} ({device_name}, torch {torch.__version__}, {torch.get_num_threads()} threads). "
            "mAP@all, Hamming ranking, ties by database index; mean ± std over seeds "
            f"{sorted(frame.seed.unique().tolist())}; best per column bold and marked *.\n\n" + summarize(frame))
    md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
