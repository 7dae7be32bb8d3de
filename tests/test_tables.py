"""benchmarks.tables end to end on a tiny suite of two closed-form methods: --no-run trains nothing
and says so, a run fills the cells, the ablation section reads one method against the other with
the numbers of the leaderboard, and a second --no-run renders the same numbers from the store."""
from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch

from benchmarks import tables

SUITE = """name = "tiny"
description = "two classic methods"
bits = [16]
seeds = [0, 1]
[[datasets]]
name = "synthetic-wiki"
options = { n_items = 400, n_query = 60, n_train = 250, n_validation = 40 }
[[methods]]
name = "cca"
label = "CCA"
[[methods]]
name = "scm-seq"
label = "SCM"
"""


def _cells(text: str, label: str) -> list[str]:
    rows = [line for line in text.splitlines() if line.startswith(f"| {label} |")]
    return [c.strip() for c in rows[0].strip("|").split("|")[1:]]


def test_tables_no_run_then_run_then_ablation(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    out = tmp_path / "tables" / "new"  # not there yet: made before anything trains
    args = ["--suites", str(suite), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--output-dir", str(out),
            "--proposed", "CCA"]
    assert tables.main([*args, "--no-run"]) == 0
    empty = (out / "tables-tiny-partial.md").read_text()
    assert "0 of 4 cells finished (built with --no-run" in empty and "--no-run" in empty.splitlines()[2]
    assert ", no fits yet." in empty
    assert tables.main([*args, "--ablation-of", "CCA"]) == 0
    full = (out / "tables-tiny.md").read_text()
    assert "4 of 4 cells finished." in full
    threads = torch.get_num_threads()  # the fits ran in this process, and each run says so
    assert f", fits on {threads} torch thread{'s' * (threads != 1)} each." in full
    mean = lambda cell: float(cell.split()[0].strip("*"))  # noqa: E731  (the best is bold)
    cca = [mean(c) for c in _cells(full, "CCA")[:2]]
    scm = [mean(c) for c in _cells(full, "SCM")[:2]]
    section = full[full.index("ablation against CCA (map)"):]
    deltas = [float(re.match(r"([+-]\d\.\d{4})", c).group(1)) for c in _cells(section, "SCM")]
    assert all(abs(d - (i - c)) <= 1.5e-4 for d, i, c in zip(deltas, scm, cca)), (deltas, scm, cca)
    assert "Beyond seed noise: SCM: below CCA in" in section
    assert tables.main([*args, "--no-run"]) == 0  # from the store: same numbers, nothing trained
    again = (out / "tables-tiny-partial.md").read_text()
    assert "4 of 4 cells finished (built with --no-run" in again
    assert _cells(again, "SCM")[:2] == _cells(full, "SCM")[:2]


def test_tables_bad_input_is_one_line_before_anything_runs(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    store = tmp_path / "m.db"
    base = ["--tracking-uri", f"sqlite:///{store}", "--output-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        tables.main(["--suites", str(suite), *base, "--ablation-of", "SAMM"])
    assert exit_.value.code == 2
    assert f"error: {suite}: --ablation-of 'SAMM' is not a method label of the suite; labels: CCA, SCM" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        tables.main(["--suites", str(tmp_path / "missing.toml"), *base])
    assert exit_.value.code == 2
    assert f"error: suite file '{tmp_path / 'missing.toml'}' not found" in capsys.readouterr().err
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(SystemExit) as exit_:
        tables.main(["--suites", str(suite), "--tracking-uri", f"sqlite:///{store}", "--output-dir", str(blocked / "out")])
    assert exit_.value.code == 2
    assert f"error: --output-dir {blocked / 'out'}: cannot create it (" in capsys.readouterr().err
    assert not list(tmp_path.glob("tables-*.md"))  # nothing written, nothing trained


def test_tables_datasets_narrows_to_the_suites_own_entries(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE + '[[datasets]]\nname = "synthetic-mirflickr"\n'
                     'options = { n_items = 300, n_query = 50, n_train = 200, n_validation = 30 }\n')
    base = ["--suites", str(suite), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--output-dir", str(tmp_path), "--no-run"]
    assert tables.main([*base, "--datasets", "synthetic-mirflickr"]) == 0
    assert tables.main([*base, "--datasets", "synthetic-wiki"]) == 0  # the other half: a file of its own
    text = (tmp_path / "tables-tiny-partial-synthetic-mirflickr.md").read_text()
    sections = [line for line in text.splitlines() if line.startswith("## ")]
    assert sections == ["## synthetic-mirflickr"], sections
    assert "--datasets synthetic-mirflickr" in text.splitlines()[2]
    assert "0 of 4 cells finished" in text  # 2 methods x 2 seeds of the one data set kept
    other = (tmp_path / "tables-tiny-partial-synthetic-wiki.md").read_text()
    assert [line for line in other.splitlines() if line.startswith("## ")] == ["## synthetic-wiki"]
    with pytest.raises(SystemExit) as exit_:  # a registered set the suite lacks is refused, not added with defaults
        tables.main([*base, "--datasets", "uci-mfeat"])
    assert exit_.value.code == 2
    assert (f"error: {suite}: --datasets uci-mfeat: not in the suite; its data sets: synthetic-wiki, synthetic-mirflickr"
            in capsys.readouterr().err)


def test_fit_threads_counts_the_runs_tags():
    run = lambda threads: SimpleNamespace(tags={} if threads is None else {"torch_threads": threads})  # noqa: E731
    assert tables.fit_threads([]) == "no fits yet"
    assert tables.fit_threads([run("1"), run("1")]) == "fits on 1 torch thread each"
    assert tables.fit_threads([run(None)]) == "torch threads of the fits not recorded"
    mixed = [run("2"), run("1"), run(None), run("1"), run("12")]
    assert tables.fit_threads(mixed) == "fits on 1 torch thread (2), 2 torch threads (1), 12 torch threads (1), not recorded (1)"
