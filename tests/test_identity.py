"""Run identity follows what decides the numbers: editing a module a method or loader imports
changes exactly the affected cells' keys; a method or data set of one's own is one file."""
from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import datasets
import methods
from runners import identity
from runners.records import RunRecord  # noqa: F401  (the tracker returns these)
from runners.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent
PROJECT = ("benchmarks", "datasets", "methods", "metrics", "runners", "registry.py")


def _scratch_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name in PROJECT:
        src = REPO / name
        (shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
         if src.is_dir() else shutil.copy(src, root / name))
    return root


def _versions(root: Path) -> dict[tuple[str, str], str]:
    fit = identity.fit_code_version.__wrapped__  # no cache: the files change between calls
    # the repository's own methods and loaders (plug-ins other tests registered in this process are
    # files outside the scratch copy)
    own_methods = [m for m in methods.available() if methods.get(m).__module__.startswith("methods.")]
    own_data = [d for d in datasets.available() if datasets.get_loader(d).__module__.startswith("datasets.")]
    return {(m, d): fit(m, d, root) for m, d in itertools.product(own_methods, own_data)}


def _touch(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit that changes the bytes\n")


@pytest.mark.parametrize("edited, affected", [
    ("datasets/wiki.py", lambda m, d: d == "wiki"),
    ("datasets/multiview.py", lambda m, d: d == "uci-mfeat"),
    ("methods/dcmh.py", lambda m, d: m == "dcmh"),
    # the split logic every labelled loader (and the synthetic presets) goes through
    ("datasets/protocols.py", lambda m, d: True),
    # how model selection scores: every method trained under the stopping rule may pick another
    # step; the closed-form classic baselines never import it
    ("methods/selection.py", lambda m, d: methods.get(m).trained_by_steps),
])
def test_editing_a_module_changes_exactly_the_cells_that_import_it(tmp_path, edited, affected):
    root = _scratch_copy(tmp_path)
    before = _versions(root)
    _touch(root / edited)
    after = _versions(root)
    changed = {cell for cell in before if before[cell] != after[cell]}
    assert changed == {cell for cell in before if affected(*cell)}


def test_metrics_only_code_rescores_without_changing_any_fit(tmp_path):
    root = _scratch_copy(tmp_path)
    before, metrics_before = _versions(root), identity.metrics_version.__wrapped__(root)
    _touch(root / "metrics" / "evaluate.py")  # evaluate_hashing: scoring only, not model selection
    assert _versions(root) == before
    assert identity.metrics_version.__wrapped__(root) != metrics_before


def test_reference_loops_decide_no_number(tmp_path):
    root = _scratch_copy(tmp_path)
    metrics_before = identity.metrics_version.__wrapped__(root)
    _touch(root / "metrics" / "reference.py")
    assert identity.metrics_version.__wrapped__(root) == metrics_before


GRID = """
name = "edit"
bits = [8]
seeds = [0]
[[datasets]]
name = "generic"
options = {{ path = "{npz}", n_query = 60, n_train = 200, n_validation = 40 }}
[[datasets]]
name = "synthetic-wiki"
options = {{ n_items = 500, n_train = 300, n_query = 120, n_validation = 40 }}
[[methods]]
name = "dcmh"
overrides = {{ max_epochs = 1, text_hidden = [32] }}
"""


@pytest.mark.slow
def test_a_split_module_edit_reruns_its_cells_and_reuses_the_others(tmp_path):
    root = _scratch_copy(tmp_path)
    rng = np.random.default_rng(0)
    labels = np.eye(4)[rng.integers(0, 4, 400)]
    np.savez(tmp_path / "g.npz", image=rng.standard_normal((400, 16)) + labels @ rng.standard_normal((4, 16)),
             text=rng.standard_normal((400, 8)) + labels @ rng.standard_normal((4, 8)), labels=labels)
    suite = tmp_path / "edit.toml"
    suite.write_text(GRID.format(npz=tmp_path / "g.npz"))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cmd = [sys.executable, "-m", "runners.run", "--suite", str(suite), "--tracking-uri", uri]
    first = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and "2 run, 0 reused" in first.stdout, first.stderr
    _touch(root / "datasets" / "generic.py")  # the generic loader: decides its cells' data and split
    second = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "1 run, 1 reused" in second.stdout, second.stderr
    finished = Tracker(uri).runs("FINISHED")
    assert sorted(r.dataset for r in finished) == ["generic", "generic", "synthetic-wiki"]


# A method and a data set of one's own, in one file outside the repository: the shared plug-in
# parts (a ridge regression to the labels, blobs), then the registrations.
PLUGIN = (Path(__file__).resolve().parent / "plugin_parts.py").read_text() + '''
from dataclasses import dataclass

from datasets.registry import register as register_dataset
from methods.base import HashingMethod
from methods.registry import register


@dataclass(frozen=True)
class ProjectionConfig:
    ridge: float = 1.0  # ours: a plain ridge regression to the labels


@register("toy-projection")
class ToyProjection(HashingMethod):
    Config = ProjectionConfig

    def fit(self, train, bits, ctx):
        return ridge_projection(train, bits, self.config.ridge, ctx.seed)


@register_dataset("toy-blobs")
def load_blobs(seed: int = 0) -> CrossModalData:
    return blobs("toy-blobs", seed)
'''


def test_a_method_and_a_data_set_of_ones_own_are_one_file(tmp_path):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN)
    suite = tmp_path / "mine.toml"
    suite.write_text('imports = ["my_plugin.py"]\nbits = [8]\nseeds = [0]\n'
                     '[[datasets]]\nname = "toy-blobs"\n[[methods]]\nname = "toy-projection"\nlabel = "Mine"\n')
    cmd = [sys.executable, "-m", "runners.compare", "--suite", str(suite), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
           "--format", "markdown"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| Mine |"))
    assert float(row.split("|")[2].strip(" *")) > 0.6  # learned: 3 balanced classes give ~0.33 at random
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "running" not in again.stderr  # reused
    plugin.write_text(PLUGIN.replace("train.labels - 0.5", "train.labels - 0.4"))  # the plug-in's own code decides
    third = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and "running 1" in third.stderr
