"""End to end through real MLflow stores: the grid runs once, reuses finished runs, records failures;
the leaderboard shows exactly what MLflow holds; a real `mlflow server` on 127.0.0.1 serves the runs."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from runners import leaderboard
from runners.run import cell_identity, run_grid
from runners.suite import parse_suite
from runners.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent
TINY = {"n_items": 700, "n_train": 450, "n_query": 150, "n_validation": 50}
RAW = {
    "name": "tiny", "bits": [8, 16], "seeds": [0, 1],
    "datasets": [{"name": "synthetic-wiki", "options": TINY}],
    "methods": [
        {"name": "dcmh", "label": "DCMH", "overrides": {"epochs": 3, "text_hidden": [64]}},
        {"name": "dcmh", "label": "DCMH-1ep", "overrides": {"epochs": 1, "text_hidden": [64]}},
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


def test_first_run_trains_every_cell_once(store):
    _, suite, tracker, first = store
    assert len(first.ran) == 8 and not first.reused and not first.failed
    finished = tracker.finished()
    assert {cell_identity(c)[0] for c in suite.cells()} <= set(finished)
    run = finished[cell_identity(suite.cells()[0])[0]]
    tags = run.data.tags
    for tag in ("run_key", "code_version", "git_commit", "dataset_fingerprint", "device", "torch_version"):
        assert tags[tag]
    assert run.data.params["cfg.epochs"] == "3" and run.data.params["data.n_items"] == "700"
    assert 0.0 < run.data.metrics["map_i2t"] <= 1.0 and 0.0 < run.data.metrics["map_t2i"] <= 1.0
    history = tracker.client.get_metric_history(run.info.run_id, "train/loss_image")
    assert [m.step for m in history] == [0, 1, 2]  # one point per epoch


def test_second_run_reuses_everything(store):
    _, suite, tracker, _ = store
    before = len(tracker.runs(status=None))
    again = run_grid(suite, tracker)
    assert not again.ran and len(again.reused) == 8
    assert len(tracker.runs(status=None)) == before


def test_run_key_changes_with_config_bits_seed():
    suite = parse_suite(RAW, "tiny.toml")
    keys = {cell_identity(c)[0] for c in suite.cells()}
    assert len(keys) == 8


def test_leaderboard_matches_mlflow_contents(store):
    _, suite, tracker, _ = store
    finished = tracker.finished()
    keyed = [(c, cell_identity(c)[0]) for c in suite.cells()]
    stats = leaderboard.aggregate(leaderboard.suite_results(suite, finished, keyed))
    headers, rows, flags = leaderboard.leaderboard_rows(stats, "synthetic-wiki", ["DCMH", "DCMH-1ep"], [8, 16])
    assert headers == ["method", "I→T 8", "I→T 16", "T→I 8", "T→I 16"]
    # Independent recomputation straight from the MLflow runs.
    for r, label in enumerate(["DCMH", "DCMH-1ep"]):
        for col, (direction, bits) in enumerate([("i2t", 8), ("i2t", 16), ("t2i", 8), ("t2i", 16)], start=1):
            values = [finished[k].data.metrics[f"map_{direction}"] for c, k in keyed if c.method.label == label and c.bits == bits]
            assert len(values) == 2
            assert rows[r][col].startswith(f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}")
    for col in range(1, 5):  # exactly one best per column, marked with the symbol
        assert sum(flags[r][col] for r in range(2)) == 1
        best = max(range(2), key=lambda r: float(rows[r][col].split()[0]))
        assert flags[best][col] and rows[best][col].endswith(" *")


def test_failed_cell_is_recorded_and_rerun(tmp_path):
    # An impossible device makes the fit raise: the run must be FAILED, not finished, and tried again.
    raw = {**RAW, "bits": [8], "seeds": [0], "device": "nonexistent-device"}
    suite = parse_suite(raw, "fail.toml")
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "fail")
    report = run_grid(suite, tracker)
    assert len(report.failed) == 2 and not report.ran
    failed = tracker.runs(status="FAILED")
    assert len(failed) == 2 and all("error" in r.data.tags for r in failed)
    assert not tracker.finished()
    report = run_grid(suite, tracker)
    assert len(report.failed) == 2 and len(tracker.runs(status="FAILED")) == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_server_serves_the_runs_over_rest(store, tmp_path):
    uri, suite, tracker, _ = store
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"mlflow server did not start: {server.stderr.read()[-2000:] if server.poll() is not None else 'timeout'}")
                time.sleep(0.5)
        body = json.dumps({"experiment_ids": [tracker.experiment_id], "filter": "attributes.status = 'FINISHED'",
                           "max_results": 100}).encode()
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as resp:
            runs = json.load(resp)["runs"]
        served = {t["value"] for r in runs for t in r["data"]["tags"] if t["key"] == "run_key"}
        assert served == {cell_identity(c)[0] for c in suite.cells()}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_compare_cli_prints_table_then_reruns_nothing(tmp_path):
    suite_file = tmp_path / "cli.toml"
    suite_file.write_text(
        'bits = [8]\nseeds = [0, 1]\n[[datasets]]\nname = "synthetic-wiki"\n'
        'options = { n_items = 600, n_train = 400, n_query = 150, n_validation = 50 }\n'
        '[[methods]]\nname = "dcmh"\nlabel = "DCMH"\noverrides = { epochs = 1, text_hidden = [32] }\n'
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
