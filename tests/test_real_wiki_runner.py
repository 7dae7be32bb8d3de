"""Every method of the fair Wikipedia suite trains through the real runner on the real Wikipedia
features (../shared/data/wiki), logs to a real MLflow store, and beats random ranking. Skips
without the data. A short step cap for the deep methods (the full rule's numbers are in
benchmarks/results/tables-wiki.md); SSAH is left out: one epoch of its per-epoch passes is ~1,100
steps here (tests/test_methods.py trains it on a wiki-shaped set)."""
import dataclasses

import pytest
import torch

import datasets
from runners.cells import cell_key
from runners.run import run_grid
from runners.suite import DEFAULT_SUITE, load_suite, select
from runners.tracking import Tracker

pytestmark = pytest.mark.slow


def test_every_method_runs_on_real_wiki(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("XMH_DATA_ROOT", str(shared_data))
    suite = select(load_suite(DEFAULT_SUITE.parent / "fair" / "wiki.toml"), bits=[16], seeds=[0])
    suite = dataclasses.replace(suite, methods=tuple(m for m in suite.methods if m.name != "ssah"),
                                stopping={"eval_every": 50, "max_steps": 200})
    assert len(suite.methods) >= 9
    tracker = Tracker(f"sqlite:///{tmp_path / 'm.db'}", "wiki")
    report = run_grid(suite, tracker)
    assert not report.failed, report.failed
    data = datasets.load("wiki", n_validation=217)
    labels = torch.from_numpy(data.query.labels)
    random_map = float((labels @ labels.T > 0).float().mean())  # ~0.118: expected AP of a random ranking
    finished = tracker.finished()
    for cell in suite.cells():
        run = finished[cell_key(cell)]
        assert run.tags["split_hash"] == data.meta.split_hash
        for direction in ("i2t", "t2i"):
            assert run.metrics[f"map_{direction}"] > random_map + 0.005, (cell.method.label, direction, run.metrics)
