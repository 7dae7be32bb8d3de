"""End to end through real MLflow stores: the grid runs once, reuses finished runs, records failures;
the leaderboard shows exactly what MLflow holds; a real `mlflow server` on 127.0.0.1 serves the runs."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from runners import leaderboard
from runners.cells import cell_key
from runners.run import run_grid
from runners.suite import parse_suite
from runners.tracking import Tracker
from servers import free_port, wait_for_health

REPO = Path(__file__).resolve().parent.parent
TINY = {"n_items": 700, "n_train": 450, "n_query": 150, "n_validation": 50}
RAW = {
    "name": "tiny", "bits": [8, 16], "seeds": [0, 1],
    "datasets": [{"name": "synthetic-wiki", "options": TINY}],
    "methods": [
        {"name": "dcmh", "label": "DCMH", "overrides": {"max_epochs": 3, "text_hidden": [64]}},
        {"name": "dcmh", "label": "DCMH-1ep", "overrides": {"max_epochs": 1, "text_hidden": [64]}},
    ],
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with the tiny grid already run once (module-scoped: it trains 8 small runs)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    suite = parse_suite(RAW, "tiny.toml")
    tracker = Tracker(uri, "e2e")
    first = run_grid(suite, tracker)
    return uri, suite, tracker, first


# The store fixture's grid as a suite file (the same cells: the CLI runs reuse the fixture's runs).
TINY_SUITE = (
    'name = "tiny"\nbits = [8, 16]\nseeds = [0, 1]\n[[datasets]]\nname = "synthetic-wiki"\n'
    'options = { n_items = 700, n_train = 450, n_query = 150, n_validation = 50 }\n'
    '[[methods]]\nname = "dcmh"\nlabel = "DCMH"\noverrides = { max_epochs = 3, text_hidden = [64] }\n'
    '[[methods]]\nname = "dcmh"\nlabel = "DCMH-1ep"\noverrides = { max_epochs = 1, text_hidden = [64] }\n'
)


def test_first_run_trains_every_cell_once(store):
    _, suite, tracker, first = store
    assert len(first.ran) == 8 and not first.reused and not first.failed
    finished = tracker.finished()
    assert {cell_key(c) for c in suite.cells()} <= set(finished)
    run = finished[cell_key(suite.cells()[0])]
    for tag in ("run_key", "code_version", "metrics_version", "git_commit", "dataset_fingerprint", "split_hash",
                "preprocessing", "device", "torch_version", "stop_reason"):
        assert run.tags[tag]
    assert run.config()["max_epochs"] == 3 and run.params["data.n_items"] == "700"
    assert 0.0 < run.metrics["map_i2t"] <= 1.0 and 0.0 < run.metrics["map_t2i"] <= 1.0
    history = tracker.client.get_metric_history(run.run_id, "epoch/loss_image")
    steps = [m.step for m in history]  # one point per epoch, at the optimizer step that ended it
    assert len(steps) == 3 and steps == [k * steps[0] for k in (1, 2, 3)] and steps[0] > 1


def test_second_run_reuses_everything(store):
    _, suite, tracker, _ = store
    before = len(tracker.runs(status=None))
    again = run_grid(suite, tracker)
    assert not again.ran and len(again.reused) == 8
    assert len(tracker.runs(status=None)) == before


def test_run_key_changes_with_config_bits_seed():
    suite = parse_suite(RAW, "tiny.toml")
    keys = {cell_key(c) for c in suite.cells()}
    assert len(keys) == 8


def test_leaderboard_matches_mlflow_contents(store):
    _, suite, tracker, _ = store
    finished = tracker.finished()
    keyed = [(c, cell_key(c)) for c in suite.cells()]
    results = leaderboard.suite_results(suite, finished, keyed)
    board = leaderboard.build_board(leaderboard.aggregate(results), "synthetic-wiki", ["DCMH", "DCMH-1ep"], [8, 16],
                                    results, tracker.per_query)
    assert board.headers() == ["method", "I→T 8", "I→T 16", "T→I 8", "T→I 16"]
    # Independent recomputation straight from the MLflow runs.
    for label in ("DCMH", "DCMH-1ep"):
        for col, (direction, bits) in enumerate([("i2t", 8), ("i2t", 16), ("t2i", 8), ("t2i", 16)]):
            values = [finished[k].metrics[f"map_{direction}"] for c, k in keyed if c.method.label == label and c.bits == bits]
            assert len(values) == 2
            assert board.rows[label][col].text().startswith(f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}")
    for col in range(4):  # exactly one best per column, marked; the other one tested against it
        entries = [board.rows[m][col] for m in ("DCMH", "DCMH-1ep")]
        assert sum(e.best for e in entries) == 1
        best, other = (entries[0], entries[1]) if entries[0].best else (entries[1], entries[0])
        assert best.mean >= other.mean and best.text().endswith(" *")
        assert other.p_value is not None and 0.0 <= other.p_value <= 1.0
        assert other.tie_with_best == (other.p_value >= 0.05)
        assert other.text().endswith(" ≈") == other.tie_with_best


def test_compare_formats_and_references(store, tmp_path):
    uri, _, _, _ = store
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(TINY_SUITE)
    refs = tmp_path / "refs.toml"
    refs.write_text('[[reference]]\ndataset = "synthetic-wiki"\nmethod = "Oracle"\nsource = "made up for the test"\n'
                    'values = { i2t_8 = 0.9999 }\n')
    base = [sys.executable, "-m", "runners.compare", "--suite", str(suite_file), "--tracking-uri", uri,
            "--experiment", "e2e", "--no-run", "--references", str(refs)]
    md = subprocess.run(base + ["--format", "markdown"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert md.returncode == 0, md.stderr
    ref_line = next(line for line in md.stdout.splitlines() if "Oracle" in line)
    assert ref_line.startswith("| _Oracle (published)_ | _0.9999_ |") and "*" not in ref_line  # shown, never ranked
    assert md.stdout.count("** \\*") >= 4  # a best in each of the four columns (mark outside the bold), not the reference
    tex = subprocess.run(base + ["--format", "latex"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert tex.returncode == 0 and "\\toprule" in tex.stdout and "\\textbf{" in tex.stdout and "\\textit{Oracle (published)}" in tex.stdout
    csv_out = tmp_path / "raw.csv"
    raw = subprocess.run(base + ["--format", "csv", "--output", str(csv_out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    import pandas as pd

    frame = pd.read_csv(csv_out)
    assert raw.returncode == 0 and len(frame) == 8 and {"map_i2t", "map_tie_aware_t2i", "run_id"} <= set(frame.columns)


FAILING = """
from dataclasses import dataclass
from methods.base import HashingMethod
from methods.registry import register

@dataclass(frozen=True)
class NoConfig:
    pass

@register("always-fails")
class AlwaysFails(HashingMethod):
    Config = NoConfig

    def fit(self, train, bits, ctx):
        raise FloatingPointError("the loss went to NaN at step 3")
"""


def test_failed_cell_is_recorded_and_rerun(tmp_path):
    # A fit that raises: the run must be FAILED with its error, not finished, and tried again.
    (tmp_path / "failing.py").write_text(FAILING)
    raw = {**RAW, "bits": [8], "seeds": [0], "imports": ["failing.py"],
           "methods": [{"name": "always-fails", "label": "A"}, {"name": "always-fails", "label": "B"}]}
    suite = parse_suite(raw, str(tmp_path / "fail.toml"))
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "fail")
    report = run_grid(suite, tracker)
    assert len(report.failed) == 2 and not report.ran
    assert all("FloatingPointError: the loss went to NaN at step 3" in message for _, message in report.failed)
    failed = tracker.runs(status="FAILED")
    assert len(failed) == 2 and all("NaN at step 3" in r.tags["error"] for r in failed)
    assert not tracker.finished()
    report = run_grid(suite, tracker)
    assert len(report.failed) == 2 and len(tracker.runs(status="FAILED")) == 4


@pytest.mark.parametrize("device, message", [
    ("nonexistent-device", "unknown device 'nonexistent-device'; expected cpu, cuda or cuda:N"),
    ("cuda:7", "device 'cuda:7' but"),
])
def test_an_unusable_device_is_refused_before_anything_runs(tmp_path, device, message):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    suite_file = tmp_path / "dev.toml"
    suite_file.write_text(f'device = "{device}"\nbits = [8]\nseeds = [0]\n[[datasets]]\nname = "synthetic-wiki"\n'
                          '[[methods]]\nname = "dcmh"\n')
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    out = subprocess.run([sys.executable, "-m", "runners.run", "--suite", str(suite_file), "--tracking-uri", uri],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.db").exists()  # nothing ran, no store was even created


@pytest.mark.slow
def test_mlflow_server_serves_the_runs_over_rest(store, tmp_path):
    uri, suite, tracker, _ = store
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_health(server, f"{base}/health", 90)
        body = json.dumps({"experiment_ids": [tracker.experiment_id], "filter": "attributes.status = 'FINISHED'",
                           "max_results": 100}).encode()
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as resp:
            runs = json.load(resp)["runs"]
        served = {t["value"] for r in runs for t in r["data"]["tags"] if t["key"] == "run_key"}
        assert served == {cell_key(c) for c in suite.cells()}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_compare_cli_prints_table_then_reruns_nothing(tmp_path):
    suite_file = tmp_path / "cli.toml"
    suite_file.write_text(
        'bits = [8]\nseeds = [0, 1]\n[[datasets]]\nname = "synthetic-wiki"\n'
        'options = { n_items = 600, n_train = 400, n_query = 150, n_validation = 50 }\n'
        '[[methods]]\nname = "dcmh"\nlabel = "DCMH"\noverrides = { max_epochs = 1, text_hidden = [32] }\n'
    )
    cmd = [sys.executable, "-m", "runners.compare", "--suite", str(suite_file), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "running 2" in first.stderr and "DCMH" in first.stdout and "I→T 8" in first.stdout
    started = time.perf_counter()
    second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "running" not in second.stderr
    assert second.stdout == first.stdout
    assert time.perf_counter() - started < 60  # answers from MLflow alone (generous for a loaded CI box)
    md = subprocess.run(cmd + ["--no-run", "--format", "markdown"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert md.returncode == 0 and md.stdout.startswith("### synthetic-wiki") and "| DCMH |" in md.stdout


def test_artifacts_agree_with_logged_metrics(store, tmp_path):
    _, suite, tracker, _ = store
    run = tracker.finished()[cell_key(suite.cells()[0])]
    root = Path(tracker.client.download_artifacts(run.run_id, "", str(tmp_path)))
    assert {"codes.npz", "config.json", "eval"} <= {p.name for p in root.iterdir()}
    folder = root / "eval"
    assert {"curves.csv", "pr_curve.png", "precision_at_k.png", "per_query.npz"} <= {p.name for p in folder.iterdir()}
    from matplotlib import image as mpimg
    import pandas as pd

    for png in ("pr_curve.png", "precision_at_k.png"):
        pixels = mpimg.imread(folder / png)  # decodes as a real image
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    metrics_ = run.metrics
    per_query = np.load(folder / "per_query.npz")
    assert per_query["map_i2t"].shape == (150,)
    for key in ("map_i2t", "map_t2i", "map_tie_aware_i2t", "p_at_10_t2i"):
        assert abs(per_query[key].mean() - metrics_[key]) < 1e-9
    curves = pd.read_csv(folder / "curves.csv")
    p10 = curves[(curves.direction == "t2i") & (curves.curve == "precision_at_k") & (curves.x == 10)].precision.item()
    assert abs(p10 - metrics_["p_at_10_t2i"]) < 1e-9
    pr = curves[(curves.direction == "i2t") & (curves.curve == "pr_by_radius")]
    assert list(pr.x) == list(range(9)) and abs(pr.recall.iloc[-1] - 1.0) < 1e-9  # radius K holds everything
    config = json.loads((root / "config.json").read_text())
    assert config["run_key"] == run.run_key and config["config"]["max_epochs"] == 3


def test_stored_codes_reproduce_every_logged_number(store, tmp_path):
    _, suite, tracker, _ = store
    from runners.scoring import evaluate_codes
    from runners.rescore import stored_codes
    from runners.cells import load_cell_data

    cell = suite.cells()[0]
    record = tracker.finished()[cell_key(cell)]
    codes = stored_codes(tracker, record)
    data = load_cell_data(cell)
    assert codes.codes["query.image"].shape == (150, 8) and codes.codes["query.image"].dtype == torch.int8
    values = evaluate_codes(codes, data, curves=False).values
    for key in ("map_i2t", "map_t2i", "map_tie_aware_i2t", "map_at_50_topk_t2i", "p_at_10_i2t"):
        assert values[key] == pytest.approx(record.metrics[key], abs=1e-12)


def test_new_metric_fills_from_stored_codes_without_training(store, tmp_path):
    uri, suite, tracker, _ = store
    before = {r.run_id for r in tracker.runs(status=None)}
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(TINY_SUITE)
    out = subprocess.run([sys.executable, "-m", "runners.compare", "--suite", str(suite_file), "--tracking-uri", uri,
                          "--experiment", "e2e", "--metric", "map_at_100_topk", "--format", "markdown"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "computed map_at_100_topk for 8 runs" in out.stderr and "running" not in out.stderr
    assert {r.run_id for r in tracker.runs(status=None)} == before  # nothing trained
    # Independent check of one filled cell: the truncated AP straight from the reference loop.
    from metrics.reference import reference_average_precisions_at_k
    from runners.rescore import stored_codes
    from runners.cells import load_cell_data

    cell = suite.cells()[0]
    record = tracker.finished()[cell_key(cell)]
    codes, data = stored_codes(tracker, record), load_cell_data(cell)
    ref = reference_average_precisions_at_k(codes.codes["query.image"].numpy(), codes.codes["query.text"].numpy(),
                                            data.query.labels, data.query.labels, 100, variant="topk")
    assert record.metrics["map_at_100_topk_i2t"] == pytest.approx(float(np.mean(ref)), abs=1e-12)
    assert "| DCMH |" in out.stdout and "map_at_100_topk" in out.stdout  # the table of the new metric


def test_stale_metrics_version_is_rescored_not_retrained(store):
    _, suite, tracker, _ = store
    record = tracker.finished()[cell_key(suite.cells()[1])]
    tracker.set_tags(record.run_id, {"metrics_version": "older-metrics-code"})
    report = run_grid(suite, tracker)
    assert not report.ran and report.rescored == [record.run_key] and len(report.reused) == 7
    assert tracker.finished()[record.run_key].metrics_version != "older-metrics-code"


def test_figures_name_their_run_and_the_suite_figure_overlays_every_method(store, tmp_path):
    uri, suite, tracker, _ = store
    run = tracker.finished()[cell_key(suite.cells()[0])]
    root = Path(tracker.client.download_artifacts(run.run_id, "eval", str(tmp_path / "run")))
    assert {"pr_curve.pdf", "pr_curve.png", "precision_at_k.pdf", "precision_at_k.png"} <= {p.name for p in root.iterdir()}
    assert (root / "pr_curve.pdf").read_bytes().startswith(b"%PDF")
    from PIL import Image

    with Image.open(root / "pr_curve.png") as png:  # 300 dpi: a 9.2 x 3.8 inch figure
        assert png.size[0] >= 2500 and round(png.info["dpi"][0]) == 300
    suite_file = tmp_path / "tiny.toml"
    suite_file.write_text(TINY_SUITE)
    out = subprocess.run([sys.executable, "-m", "runners.compare", "--suite", str(suite_file), "--tracking-uri", uri,
                          "--experiment", "e2e", "--no-run", "--figures", str(tmp_path / "fig")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    names = {p.name for p in (tmp_path / "fig").iterdir()}
    assert {f"synthetic-wiki-{b}b-{c}.{s}" for b in (8, 16) for c in ("pr_curve", "precision_at_k") for s in ("pdf", "png")} <= names
    import pandas as pd

    plotted = pd.read_csv(tmp_path / "fig" / "synthetic-wiki-8b-curves.csv")
    assert set(plotted.method) == {"DCMH", "DCMH-1ep"}  # every method overlaid
    runs = [r for r in tracker.finished().values() if r.label == "DCMH" and r.bits == 8]
    p10 = np.mean([tracker.curves(r.run_id).query("direction == 't2i' and curve == 'precision_at_k' and x == 10").precision.item()
                   for r in runs])
    mine = plotted.query("method == 'DCMH' and direction == 't2i' and curve == 'precision_at_k' and x == 10").precision.item()
    assert len(runs) == 2 and mine == pytest.approx(p10)  # the mean over the seeds


def test_sam_margins_per_class_are_metric_histories_and_a_plot(tmp_path):
    """SAM reports each (modality, class) margin; the runner logs each as an MLflow metric history
    and draws one figure per modality; the histories show the margins moving apart after warm-up."""
    from matplotlib import image as mpimg

    from runners.class_curves import class_histories

    raw = {"name": "margins", "bits": [16], "seeds": [0], "datasets": [{"name": "synthetic-wiki", "options": TINY}],
           "methods": [{"name": "sam", "label": "SAM", "overrides": {"hidden": 64, "common": 32, "max_epochs": 4, "lr": 1e-3}}]}
    suite = parse_suite(raw, "margins.toml")
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "e2e")
    assert not run_grid(suite, tracker).failed
    run = tracker.finished()[cell_key(suite.cells()[0])]
    for modality in ("image", "text"):
        histories = {c: tracker.client.get_metric_history(run.run_id, f"epoch/margin_{modality}/c{c}") for c in range(10)}
        assert all(len(h) == 4 for h in histories.values())  # one point per evaluation (an epoch), every class
        first = {round(h[0].value, 6) for h in histories.values()}
        last = [h[-1].value for h in histories.values()]
        assert first == {0.2}  # epoch 0 is the warm-up at m0
        assert max(last) - min(last) > 1e-3  # then they adapt per class
        mean = tracker.client.get_metric_history(run.run_id, f"epoch/margin_mean_{modality}")[-1].value
        assert abs(np.mean(last) - mean) < 1e-6
        png = Path(tracker.client.download_artifacts(run.run_id, f"training/margin_{modality}.png", str(tmp_path)))
        assert mpimg.imread(png).shape[0] > 100
    rows = [("epoch/margin_text/c1", 0.3, 20, 0), ("epoch/margin_text/c0", 0.2, 20, 0), ("epoch/margin_text/c0", 0.1, 10, 0),
            ("epoch/loss", 1.0, 10, 0), ("epoch/margin_mean_text", 0.2, 10, 0)]
    assert class_histories(rows) == {"margin_text": {0: [(10, 0.1), (20, 0.2)], 1: [(20, 0.3)]}}


def test_a_figure_that_fails_to_draw_costs_no_fit(tmp_path, monkeypatch, capsys):
    """Drawing the per-class figures is best effort: an error there is one line, the cell finishes."""
    import runners.run

    def broken(*args, **kwargs):
        raise RuntimeError("no display, no disk, no luck")

    monkeypatch.setattr(runners.run, "plot_class_histories", broken)
    raw = {"name": "figure", "bits": [8], "seeds": [0], "datasets": [{"name": "synthetic-wiki", "options": TINY}],
           "methods": [{"name": "cca", "label": "CCA"}]}
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "e2e")
    report = run_grid(parse_suite(raw, "figure.toml"), tracker)
    assert report.ran and not report.failed
    assert "per-class figures were not drawn (RuntimeError: no display" in capsys.readouterr().err
