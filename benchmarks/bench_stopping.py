"""How the stopping rule's defaults were chosen: full validation curves, then the rule replayed.

    python -m benchmarks.bench_stopping curve dscmr-hash --seed 0 --max-epochs 300   # one long run
    python -m benchmarks.bench_stopping replay                                        # the table
    python -m benchmarks.bench_stopping replay --every 3                              # validating every 3 epochs

`curve` trains one method on real Wikipedia as benchmarks/fair/wiki.toml prepares it under a rule that
never stops (patience 10^6; cap = its paper schedule, or --max-epochs) and records the validation mAP
the training loop reports at every evaluation (one epoch), and, for reading only, the restored
state's query-vs-retrieval mAP, to benchmarks/results/curves/<method>-<seed>.json (curves written
before this version also hold the query mAP at every evaluation, under test_i2t / test_t2i). `replay` runs methods.training.Patience over each
stored validation curve for several (patience, min_delta) and prints where it would stop, which
evaluation it would restore and how far below the curve's best validation mAP that is. Rules
are judged on validation alone. Results: benchmarks/results/stopping.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import methods
from methods import FitContext, StoppingRule
from methods.training import Patience
from runners.cells import load_dataset
from runners.suite import DatasetEntry
from metrics import mean_average_precision

CURVES = Path(__file__).resolve().parent / "results" / "curves"
RULES = [(p, d) for p in (3, 5, 10, 20) for d in (1e-3, 5e-3)]


def curve(method: str, seed: int, max_epochs: int | None, bits: int = 32) -> None:
    """Train `method` under a rule that never stops and write its validation curve (the val_map
    the training loop reports at each evaluation, through FitContext.on_report) with the
    restored state's query mAP (for reading only) to CURVES/<method>-<seed>.json."""
    data = load_dataset(DatasetEntry("wiki", {"n_validation": 217}, "auto"))
    rows = []

    def on_report(step, values):
        if "val_map" in values:  # an evaluation (the other reports carry training values only)
            rows.append({"step": step, "val": values["val_map"]})

    overrides = {"max_epochs": max_epochs} if max_epochs else {}
    ctx = FitContext(seed=seed, validation=data.validation, stopping=StoppingRule(patience=10**6), on_report=on_report)
    encoder = methods.create(method, overrides).fit(data.train.training_pairs(), bits, ctx)
    CURVES.mkdir(parents=True, exist_ok=True)
    out = CURVES / f"{method}-{seed}.json"
    out.write_text(json.dumps({"method": method, "seed": seed, "overrides": overrides, "rows": rows,
                               "restored_query_map": query_map(encoder, data), "record": encoder.fit_record.__dict__}))
    print(out, encoder.fit_record)


def query_map(encoder, data) -> dict[str, float]:
    """Return the mAP of I->T and T->I, queries against the retrieval set: Hamming on the codes
    ('hamming_i2t', ...) and, where the method has embeddings, cosine on them ('cosine_i2t', ...).
    Reported, never used to pick a rule."""
    q, r = data.query, data.retrieval
    scores = {}
    for metric, get in (("hamming", encoder.encode), ("cosine", encoder.embed)):
        for direction, (a, b) in {"i2t": ("image", "text"), "t2i": ("text", "image")}.items():
            queries, items = get(a, getattr(q, a)), get(b, getattr(r, b))
            if queries is None:
                continue
            scores[f"{metric}_{direction}"] = float(mean_average_precision(
                queries, items, torch.from_numpy(q.relevance_targets(a)), torch.from_numpy(r.relevance_targets(b)),
                metric=metric))
    return scores


def replay(every: int = 1) -> str:
    """Return the markdown table of each rule replayed over each stored validation curve, read at
    every `every`-th evaluation (a rule that validates every `every` epochs; epochs numbered as
    in the curve).

    Judged on validation only (the query numbers in the curves are never used to pick a rule):
    the gap between the curve's best validation mAP and the one the rule restores, and where
    it stops."""
    lines = ["| curve | evaluations | best validation mAP (at) | "
             + " | ".join(f"patience {p}, min_delta {d:g}" for p, d in RULES) + " |",
             "|---|---:|---|" + "---|" * len(RULES)]
    for path in sorted(CURVES.glob("*.json")):
        vals = [r["val"] for r in json.loads(path.read_text())["rows"]]
        top = max(range(len(vals)), key=vals.__getitem__)
        read = range(every - 1, len(vals), every)  # the epochs this rule validates at (0-based)
        cells = []
        for p, d in RULES:
            rule, best, stop = Patience(p, d), read[0], read[-1]
            for k in read:
                is_best, done = rule.update(vals[k])
                best = k if is_best else best
                if done:
                    stop = k
                    break
            cells.append(f"stop {stop + 1}, restore {best + 1}: -{vals[top] - vals[best]:.4f}")
        lines.append(f"| {path.stem} | {len(read)} | {vals[top]:.4f} ({top + 1}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curve")
    c.add_argument("method")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-epochs", type=int, default=None)
    c.add_argument("--threads", type=int, default=1)
    r = sub.add_parser("replay")
    r.add_argument("--every", type=int, default=1, help="validate every this many epochs of the curve (default: 1)")
    args = parser.parse_args(argv)
    if args.command == "curve":
        torch.set_num_threads(args.threads)
        curve(args.method, args.seed, args.max_epochs)
    else:
        if args.every < 1:
            parser.error(f"--every must be at least 1, got {args.every}")
        print(replay(args.every))


if __name__ == "__main__":
    main()
