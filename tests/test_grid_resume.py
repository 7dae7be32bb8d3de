"""A grid killed half-way and restarted ends with exactly one finished run per cell; worker
processes share a grid without duplicates. Real processes, a real sqlite MLflow store."""
from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners.cells import cell_key
from runners.suite import load_suite
from runners.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent
SUITE = """
name = "resume"
bits = [8, 16, 24]
seeds = [0, 1]
[[datasets]]
name = "synthetic-wiki"
options = { n_items = 600, n_train = 400, n_query = 150, n_validation = 50 }
[[methods]]
name = "dcmh"
overrides = { max_epochs = 4, text_hidden = [64] }
"""


def _finished_per_key(tracker: Tracker) -> collections.Counter:
    return collections.Counter(r.run_key for r in tracker.runs("FINISHED"))


@pytest.mark.slow
def test_killed_grid_resumes_without_duplicates(tmp_path):
    suite_file = tmp_path / "resume.toml"
    suite_file.write_text(SUITE)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = Tracker(uri, "xmodal-hash-bench")  # the parent creates the store first
    keys = {cell_key(c) for c in load_suite(suite_file).cells()}
    cmd = [sys.executable, "-m", "runners.run", "--suite", str(suite_file), "--tracking-uri", uri]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if 2 <= sum(_finished_per_key(tracker).values()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the grid finished before it could be killed; make the cells slower"
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: its current run stays RUNNING
    proc.wait(timeout=30)
    done_before = _finished_per_key(tracker)
    assert 2 <= sum(done_before.values()) < len(keys)

    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(keys) - sum(done_before.values())} run, {sum(done_before.values())} reused, 0 failed" in rerun.stdout
    done = _finished_per_key(tracker)
    assert set(done) == keys and all(count == 1 for count in done.values())


@pytest.mark.slow
def test_worker_processes_share_a_grid(tmp_path):
    suite_file = tmp_path / "resume.toml"
    suite_file.write_text(SUITE)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    keys = {cell_key(c) for c in load_suite(suite_file).cells()}
    run = subprocess.run([sys.executable, "-m", "runners.run", "--suite", str(suite_file), "--tracking-uri", uri,
                          "--workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "on 2 workers" in run.stderr and f"{len(keys)} run, 0 reused, 0 failed" in run.stdout
    done = _finished_per_key(Tracker(uri, "xmodal-hash-bench"))
    assert set(done) == keys and all(count == 1 for count in done.values())
