"""A suite on a caption-paired set (SCAN layout, instance-level relevance) through runners.compare:
every supervised method trains on the (caption, image) pairs with instance targets, selects on
validation mAP under the caption relevance (not the trivial 1.0 of a pairing read as rows), and
the leaderboard's Recall@K is the caption numbers (percent), far above chance for the methods that
learn from instance targets at these budgets."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from caption_fixtures import write_scan_learnable
from runners import compare, leaderboard
from runners.cells import cell_key
from runners.suite import load_suite
from runners.tracking import Tracker

N_TEST = 80
SMALL = "hidden = 256, common = 128, lr = 1e-3, max_epochs = 10"
METHODS = {  # method -> overrides (small widths and budgets: a test, not the papers' settings)
    "dcmh": "",  # its paper's settings: a small text net or a short schedule stays at chance (below)
    "dscmr": SMALL,
    "dscmr-hash": SMALL,
    "sam": SMALL.replace("max_epochs = 10", "max_epochs = 8"),
}
# SSAH is not in this suite: on instance targets (one class per image, 200 here) its label network
# gives fewer distinct codes than classes and its fit stops with GuideCollapseError instead of
# training its image and text nets to chance. Cause, measured on these targets (1,000 caption rows,
# 200 classes, lr_label 1e-4): its 512 semantic features are ReLU outputs, so theta = F_L F^T / 2 >= 0
# and the likelihood cannot express "dissimilar"; with 99.5 % of pairs dissimilar the optimum is
# F = 0. After 120 steps every feature is 0 (the feature term equals batch x n x log 2 exactly) and
# every class has one code; a linear semantic layer instead gave 24-139 codes, unstable. Without
# the feature term (alpha = 0, codes alone guide) 21 codes; alpha = 0 and lr_label 1e-3, 11; lr_label
# 1e-3 alone, 1: a label network needs classes, and instance targets give it none to share.
# DCMH learns here under its paper's settings (8192-unit text layer, DCMH_demo.m's rates over the
# 500-epoch cap, the shared stopping rule: ~2,700 steps, ~40 s): R@10 49 / 39 % against chance 12 /
# 12.5 % (32 bits, seed 0); with the 4-epoch, 128-unit budget this test used before it stayed at
# chance (6 / 11 %): its pairwise likelihood leaves the initial plateau slowly.
LEARN = ("dcmh", "dscmr", "dscmr-hash", "sam")


@pytest.mark.slow
def test_caption_suite_through_compare(tmp_path, capsys):
    write_scan_learnable(tmp_path / "scan", sizes=(("train", 200), ("dev", 40), ("test", N_TEST)))
    body = "\n".join(f'[[methods]]\nname = "{m}"\noverrides = {{ {o} }}\n' for m, o in METHODS.items())
    suite_file = tmp_path / "captions.toml"
    suite_file.write_text(f'name = "captions"\nbits = [32]\nseeds = [0]\ndevice = "cpu"\n\n[[datasets]]\nname = "scan"\n'
                          f'options = {{ root = "{tmp_path / "scan"}", min_count = 1 }}\n\n{body}')
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = compare.main(["--suite", str(suite_file), "--tracking-uri", uri, "--format", "csv", "--references", "none",
                         "--output", str(tmp_path / "runs.csv")])
    assert code == 0, capsys.readouterr().err
    runs = pd.read_csv(tmp_path / "runs.csv").set_index("method")
    assert sorted(runs.index) == sorted(METHODS)
    tracker = Tracker(uri, "xmodal-hash-bench")
    finished = tracker.finished()
    suite = load_suite(suite_file)
    chance = {"t2i": 100.0 * 10 / N_TEST, "i2t": 100.0 * (1 - math.comb(5 * N_TEST - 5, 10) / math.comb(5 * N_TEST, 10))}
    for cell in suite.cells():
        run = finished[cell_key(cell)]
        history = [m.value for m in tracker.client.get_metric_history(run.run_id, "epoch/val_map")]
        assert history and all(0.0 < v < 1.0 for v in history), (cell.method.name, history)  # caption relevance, not 1.0
        metrics = run.metrics
        for direction in ("i2t", "t2i"):
            r = [metrics[f"recall_at_{k}_{direction}"] for k in (1, 5, 10)]
            assert 0 <= r[0] <= r[1] <= r[2] <= 100 and 1 <= metrics[f"medr_{direction}"] <= metrics.get(f"meanr_{direction}", 1e9) * 10
        assert metrics["rsum"] == pytest.approx(sum(metrics[f"recall_at_{k}_{d}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))
        if cell.method.name in LEARN:
            for direction in ("i2t", "t2i"):
                assert metrics[f"recall_at_10_{direction}"] > 1.8 * chance[direction], (cell.method.name, direction, metrics)
    # the leaderboard on Recall@10 (percent), from what MLflow holds
    results = leaderboard.suite_results(suite, finished, [(c, cell_key(c)) for c in suite.cells()])
    board = leaderboard.build_board(leaderboard.aggregate(results, "recall_at_10"), "scan", [m.label for m in suite.methods], [32])
    best = {d: max(board.rows[m][j].mean for m in board.rows) for j, (d, _) in enumerate(board.columns)}
    assert best["t2i"] > 2.5 * chance["t2i"] and best["i2t"] > 2.5 * chance["i2t"]
    assert runs.loc["sam", "recall_at_10_t2i"] == board.rows["sam"][board.columns.index(("t2i", 32))].mean
