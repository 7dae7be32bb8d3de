"""How the stopping rule's defaults were chosen: full validation curves, then the rule replayed.

    python -m benchmarks.bench_stopping curve dscmr-hash --seed 0 --max-epochs 300   # one long run
    python -m benchmarks.bench_stopping replay                                        # the table

`curve` trains one method on real Wikipedia as benchmarks/fair/wiki.toml prepares it under a rule that
never stops (patience 10^6; cap = its paper schedule, or --max-epochs) and records, at every
evaluation (one epoch), the validation mAP (and, for reading only, the query-vs-retrieval mAP) to
benchmarks/results/curves/<method>-<seed>.json. `replay` runs methods.training.Patience over each
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
import methods.training as training
from methods import FitContext, StoppingRule
from methods.training import Patience
from runners.run import load_dataset
from runners.suite import DatasetEntry
from metrics import mean_average_precision

CURVES = Path(__file__).resolve().parent / "results" / "curves"
RULES = [(p, d) for p in (3, 5, 10, 20) for d in (1e-3, 5e-3)]


def curve(method: str, seed: int, max_epochs: int | None, bits: int = 32) -> None:
    data = load_dataset(DatasetEntry("wiki", {"n_validation": 217}, "auto"))
    score = training.selection.validation_scores
    rows = []

    def scored(encoder, split, use_embedding=False):
        values = score(encoder, split, use_embedding)
        q, r = data.query, data.retrieval
        get = encoder.embed if use_embedding else encoder.encode
        metric = "cosine" if use_embedding else "hamming"
        rel = {m: (torch.from_numpy(q.relevance_targets(m)), torch.from_numpy(r.relevance_targets(m))) for m in ("image", "text")}
        test = {}
        for direction, (a, b) in {"i2t": ("image", "text"), "t2i": ("text", "image")}.items():
            test[direction] = float(mean_average_precision(get(a, getattr(q, a)), get(b, getattr(r, b)), rel[a][0], rel[b][1],
                                                           metric=metric))
        rows.append({"val": values["val_map"], "test_i2t": test["i2t"], "test_t2i": test["t2i"]})
        return values

    training.selection.validation_scores = scored
    overrides = {"max_epochs": max_epochs} if max_epochs else {}
    encoder = methods.create(method, overrides).fit(
        data.train.training_pairs(), bits, FitContext(seed=seed, validation=data.validation, stopping=StoppingRule(patience=10**6)))
    CURVES.mkdir(parents=True, exist_ok=True)
    out = CURVES / f"{method}-{seed}.json"
    out.write_text(json.dumps({"method": method, "seed": seed, "overrides": overrides, "rows": rows,
                               "record": encoder.fit_record.__dict__}))
    print(out, encoder.fit_record)


def replay() -> str:
    """Return the markdown table of each rule replayed over each stored validation curve.

    Judged on validation only (the query numbers in the curves are never used to pick a rule):
    the gap between the curve's best validation mAP and the one the rule restores, and where
    it stops."""
    lines = ["| curve | evaluations | best validation mAP (at) | "
             + " | ".join(f"patience {p}, min_delta {d:g}" for p, d in RULES) + " |",
             "|---|---:|---|" + "---|" * len(RULES)]
    for path in sorted(CURVES.glob("*.json")):
        vals = [r["val"] for r in json.loads(path.read_text())["rows"]]
        top = max(range(len(vals)), key=vals.__getitem__)
        cells = []
        for p, d in RULES:
            rule, best, stop = Patience(p, d), 0, len(vals) - 1
            for k, v in enumerate(vals):
                is_best, done = rule.update(v)
                best = k if is_best else best
                if done:
                    stop = k
                    break
            cells.append(f"stop {stop + 1}, restore {best + 1}: -{vals[top] - vals[best]:.4f}")
        lines.append(f"| {path.stem} | {len(vals)} | {vals[top]:.4f} ({top + 1}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("curve")
    c.add_argument("method")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--max-epochs", type=int, default=None)
    c.add_argument("--threads", type=int, default=1)
    sub.add_parser("replay")
    args = parser.parse_args(argv)
    if args.command == "curve":
        torch.set_num_threads(args.threads)
        curve(args.method, args.seed, args.max_epochs)
    else:
        print(replay())


if __name__ == "__main__":
    main()
