"""Optuna tuning through real storages: sqlite, the journal file, and a real PostgreSQL server
on 127.0.0.1 shared by two worker processes. Trials are logged to a real MLflow store."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

import datasets
import methods
from methods import FitContext
from runners.scoring import validation_map
from runners.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent
DATA = ["--dataset", "synthetic-wiki", "--dataset-option", "n_items=700", "--dataset-option", "n_train=450",
        "--dataset-option", "n_query=150", "--dataset-option", "n_validation=80"]
FAST = ["--override", "max_epochs=3", "--override", "text_hidden=[64]"]


def _tune(tmp_path, storage, *extra, study="s", timeout=600):
    cmd = [sys.executable, "-m", "runners.tune", "--method", "dcmh", *DATA, *FAST, "--bits", "16",
           "--storage", storage, "--study-name", study, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_sqlite_study_starts_from_the_defaults_and_logs_each_trial(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = _tune(tmp_path, storage, "--trials", "3")
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="s", storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 3 and trials[0].user_attrs.get("is_default") and trials[0].params == {}
    assert {"gamma", "eta", "lr_start"} <= set(trials[1].params)  # DCMH's declared search space
    assert "gain over default" in proc.stdout and "default (#0)" in proc.stdout
    runs = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "xmodal-hash-bench-tuning").client.search_runs(
        [Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "xmodal-hash-bench-tuning").experiment_id])
    assert sorted(int(r.data.tags["trial"]) for r in runs) == [0, 1, 2]
    for run in runs:  # each finished trial's MLflow value is the study's value
        trial = trials[int(run.data.tags["trial"])]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert run.data.metrics["val_map"] == pytest.approx(trial.value)
    # --params-from feeds the best config into the runners
    suite = tmp_path / "suite.toml"
    suite.write_text('bits = [16]\nseeds = [0]\n[[datasets]]\nname = "synthetic-wiki"\n'
                     'options = { n_items = 700, n_train = 450, n_query = 150, n_validation = 80 }\n'
                     '[[methods]]\nname = "dcmh"\nlabel = "DCMH"\noverrides = { max_epochs = 3, text_hidden = [64] }\n')
    compare = subprocess.run([sys.executable, "-m", "runners.compare", "--suite", str(suite), "--params-from", "s",
                              "--optuna-storage", storage, "--tracking-uri", f"sqlite:///{tmp_path / 'runs.db'}",
                              "--format", "markdown"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert compare.returncode == 0, compare.stderr
    assert "| DCMH (tuned) |" in compare.stdout
    runs = Tracker(f"sqlite:///{tmp_path / 'runs.db'}").finished().values()
    best = json.loads(study.best_trial.user_attrs["overrides"])
    config = next(iter(runs)).config()
    assert all(config[k] == v for k, v in best.items())


def test_journal_file_storage_resumes_the_same_study(tmp_path):
    journal = str(tmp_path / "study.log")
    assert _tune(tmp_path, journal, "--trials", "1", "--no-mlflow").returncode == 0
    again = _tune(tmp_path, journal, "--trials", "1", "--no-mlflow")
    assert again.returncode == 0, again.stderr
    from runners.tune import open_storage

    study = optuna.load_study(study_name="s", storage=open_storage(journal))
    assert len(study.trials) == 2 and study.trials[0].user_attrs.get("is_default")


def test_bad_tune_input_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runners.tune", "--method", "nope", "--dataset", "synthetic-wiki"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown method 'nope'" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "runners.tune", "--method", "dcmh", "--dataset", "synthetic-wiki", "--bits", "-1"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "bits must be a positive integer" in proc.stderr


def test_objective_never_looks_at_the_query_set():
    data = datasets.load("synthetic-wiki", n_items=600, n_train=400, n_query=150, n_validation=60)
    encoder = methods.create("dcmh", {"max_epochs": 2, "text_hidden": [32]}).fit(data.train, 16, FitContext(seed=0))
    scrambled = dataclasses.replace(data, query=data.query.subset(np.arange(10)), retrieval=data.query.subset(np.arange(5)))
    assert validation_map(encoder, data) == validation_map(encoder, scrambled)


# --- a real PostgreSQL server on 127.0.0.1 (the postgres_url fixture is in conftest.py) --------------

@pytest.mark.slow
def test_two_workers_share_a_study_on_postgresql(tmp_path, postgres_url):
    from runners.tune import create_study

    # The parent creates the study once; then two worker processes run trials into it at once.
    create_study(postgres_url, "shared", 0, {"method": "dcmh", "dataset": "synthetic-wiki", "bits": 16,
                                              "dataset_options": json.dumps({"n_items": 700, "n_query": 150, "n_train": 450, "n_validation": 80}, sort_keys=True),
                                              "overrides": json.dumps({"max_epochs": 3, "text_hidden": [64]}, sort_keys=True)})
    cmd = [sys.executable, "-m", "runners.tune", "--method", "dcmh", *DATA, *FAST, "--bits", "16", "--storage", postgres_url,
           "--study-name", "shared", "--trials", "2", "--no-mlflow"]
    workers = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outs]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    numbers = sorted(t.number for t in study.trials)
    assert numbers == [0, 1, 2, 3]  # 2 workers x 2 trials, no trial lost or run twice
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)


def test_suite_tuning_gives_every_method_the_same_budget_and_feeds_compare(tmp_path):
    suite = tmp_path / "two.toml"
    suite.write_text('name = "two"\nbits = [16]\nseeds = [0]\n[[datasets]]\nname = "synthetic-wiki"\n'
                     'options = { n_items = 700, n_train = 450, n_query = 150, n_validation = 80 }\n'
                     '[[methods]]\nname = "dcmh"\nlabel = "DCMH"\noverrides = { max_epochs = 2, text_hidden = [64] }\n'
                     '[[methods]]\nname = "dscmr"\nlabel = "DSCMR"\noverrides = { max_epochs = 2, hidden = 64, common = 32 }\n')
    storage, out = f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path / "tuned.toml"
    proc = subprocess.run([sys.executable, "-m", "runners.tune", "--suite", str(suite), "--trials", "3", "--storage", storage,
                           "--no-mlflow", "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    for label in ("DCMH", "DSCMR"):  # one study per method, the same number of trials each
        study = optuna.load_study(study_name=f"two-synthetic-wiki-{label}-16b", storage=storage)
        assert len(study.trials) == 3 and study.trials[0].user_attrs.get("is_default")
    import tomllib

    tuned = tomllib.loads(out.read_text())
    assert tuned["trials"] == 3 and tuned["bits"] == 16 and {t["label"] for t in tuned["tuned"]} == {"DCMH", "DSCMR"}
    dscmr = next(t for t in tuned["tuned"] if t["label"] == "DSCMR")
    best = optuna.load_study(study_name="two-synthetic-wiki-DSCMR-16b", storage=storage).best_trial
    assert dscmr["overrides"] == json.loads(best.user_attrs["overrides"]) and dscmr["best_value"] == pytest.approx(best.value)
    compare = subprocess.run([sys.executable, "-m", "runners.compare", "--suite", str(suite), "--tuned", str(out),
                              "--tracking-uri", f"sqlite:///{tmp_path / 'runs.db'}", "--format", "markdown"],
                             cwd=REPO, capture_output=True, text=True, timeout=900)
    assert compare.returncode == 0, compare.stderr
    assert "configs tuned by runners.tune (3 Optuna trials per method at 16 bits" in compare.stdout
    record = next(r for r in Tracker(f"sqlite:///{tmp_path / 'runs.db'}").finished().values() if r.label == "DSCMR")
    assert all(record.config()[k] == v for k, v in dscmr["overrides"].items())


def test_tuned_file_names_the_command_with_its_narrowing(tmp_path):
    from runners.tune import write_tuned

    row = {"dataset": "wiki", "label": "SAM", "method": "sam", "study": "s", "default_value": 0.2, "best_value": 0.3,
           "overrides": {"m0": 0.4}}
    out = tmp_path / "tuned.toml"
    write_tuned(out, "suite.toml", 20, 32, [row], 3, {"datasets_": None, "methods_": ["SAM", "DSCMR"]}, 2)
    assert out.read_text().splitlines()[0] == (
        "# Written by: python -m runners.tune --suite suite.toml --trials 20 --bits 32 --seed 3 --methods SAM DSCMR --workers 2")
    write_tuned(out, "suite.toml", 20, 32, [row])
    assert out.read_text().splitlines()[0].endswith("--bits 32 --seed 0")


def _classic_suite(tmp_path):
    """Return a suite file of two closed-form methods (seconds a trial) on a small synthetic set."""
    suite = tmp_path / "classic.toml"
    suite.write_text('name = "classic"\nbits = [8]\nseeds = [0]\n[[datasets]]\nname = "synthetic-wiki"\n'
                     'options = { n_items = 700, n_train = 450, n_query = 150, n_validation = 80 }\n'
                     '[[methods]]\nname = "cca"\nlabel = "CCA"\n[[methods]]\nname = "cca-itq"\nlabel = "CCA-ITQ"\n')
    return suite


def test_a_suite_rerun_tops_each_study_up_to_its_budget(tmp_path):
    suite = _classic_suite(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"

    def tune(budget):
        proc = subprocess.run([sys.executable, "-m", "runners.tune", "--suite", str(suite), "--trials", str(budget),
                               "--storage", storage, "--no-mlflow", "--output", str(tmp_path / "tuned.toml")],
                              cwd=REPO, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout, {label: len(optuna.load_study(study_name=f"classic-synthetic-wiki-{label}-8b", storage=storage).trials)
                             for label in ("CCA", "CCA-ITQ")}

    assert tune(2)[1] == {"CCA": 2, "CCA-ITQ": 2}
    out, counts = tune(2)  # the same budget again: nothing to run, not 2 more each
    assert counts == {"CCA": 2, "CCA-ITQ": 2} and "classic-synthetic-wiki-CCA-8b: 2 of its 2 trials already run; 0 to run" in out
    assert tune(3)[1] == {"CCA": 3, "CCA-ITQ": 3}


def test_a_trial_whose_process_died_does_not_count_against_the_budget(tmp_path):
    import time
    import warnings

    from runners.tune import create_study, trials_owed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}", heartbeat_interval=1, grace_period=1)
    study = create_study(storage, "s", 0, {})
    with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for Study.optimize
        warnings.simplefilter("ignore", UserWarning)
        study.tell(study.ask(), 0.5)  # the default trial, finished
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)  # a trial that raised: it was run
        alive, dead = study.ask(), study.ask()
    storage.record_heartbeat(dead._trial_id)  # its process beat once, then died
    time.sleep(2.5)
    storage.record_heartbeat(alive._trial_id)  # still running elsewhere
    assert trials_owed(study, 6) == 3  # 6 - (complete, fail, alive): the dead one is owed again
    assert study.trials[dead.number].state == optuna.trial.TrialState.FAIL
    assert study.user_attrs["interrupted_trials"] == [dead.number]
    assert trials_owed(study, 6) == 3  # and stays owed when counted again


def test_a_drawn_config_the_data_rejects_is_a_failed_trial_and_the_study_goes_on(tmp_path):
    # 300 training items: SePH's default 500 anchors and its larger draws (up to 1,000) are rejected
    suite = tmp_path / "seph.toml"
    suite.write_text('name = "seph"\nbits = [8]\nseeds = [0]\n[[datasets]]\nname = "synthetic-wiki"\n'
                     'options = { n_items = 500, n_train = 300, n_query = 100, n_validation = 60 }\n'
                     '[[methods]]\nname = "seph"\nlabel = "SePH"\n')
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = subprocess.run([sys.executable, "-m", "runners.tune", "--suite", str(suite), "--trials", "6", "--storage", storage,
                           "--no-mlflow", "--output", str(tmp_path / "tuned.toml")], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="seph-synthetic-wiki-SePH-8b", storage=storage).trials
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(trials) == 6 and trials[0] in failed  # the default's 500 anchors, then the study went on
    assert all(json.loads(t.user_attrs["overrides"]).get("n_anchors", 500) > 240 for t in failed)
    assert "exceeds the 240 training items" in proc.stderr


def test_a_study_whose_every_trial_failed_exits_2_naming_it(tmp_path):
    suite = tmp_path / "seph.toml"  # 80 training items: no draw of n_anchors (100 to 1,000) fits
    suite.write_text('name = "seph"\nbits = [8]\nseeds = [0]\n[[datasets]]\nname = "synthetic-wiki"\n'
                     'options = { n_items = 300, n_train = 100, n_query = 100, n_validation = 20 }\n'
                     '[[methods]]\nname = "seph"\nlabel = "SePH"\n')
    proc = subprocess.run([sys.executable, "-m", "runners.tune", "--suite", str(suite), "--trials", "2", "--storage",
                           f"sqlite:///{tmp_path / 'optuna.db'}", "--no-mlflow", "--output", str(tmp_path / "tuned.toml")],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: study 'seph-synthetic-wiki-SePH-8b': no trial completed (2 trials" in proc.stderr
    assert not (tmp_path / "tuned.toml").exists()


def test_tuning_one_more_method_keeps_the_others_rows_of_an_equal_budget(tmp_path):
    suite = _classic_suite(tmp_path)
    storage, out = f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path / "tuned.toml"

    def tune(method, budget):  # method None: every method of the suite
        return subprocess.run([sys.executable, "-m", "runners.tune", "--suite", str(suite), "--trials", str(budget),
                               *(["--methods", method] if method else []), "--storage", storage, "--no-mlflow",
                               "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)

    assert tune("cca", 2).returncode == 0
    cca_only = out.read_text()
    proc = tune("cca-itq", 3)  # another budget: CCA's row would sit beside a row tuned with more trials
    assert proc.returncode == 2 and "CCA tuned for suite" in proc.stderr and "with 2 trials at 8 bits" in proc.stderr
    assert out.read_text() == cca_only  # nothing lost ...
    with pytest.raises(KeyError):  # ... and nothing run
        optuna.load_study(study_name="classic-synthetic-wiki-CCA-ITQ-8b", storage=storage)
    proc = tune("cca-itq", 2)
    assert proc.returncode == 0, proc.stderr
    import tomllib

    text = out.read_text()
    tuned = tomllib.loads(text)
    assert [t["label"] for t in tuned["tuned"]] == ["CCA", "CCA-ITQ"] and tuned["trials"] == 2
    assert tuned["tuned"][0] == tomllib.loads(cca_only)["tuned"][0]  # CCA's row as its own run wrote it
    assert [line for line in text.splitlines() if line.startswith("# Written by")] == [
        f"# Written by: python -m runners.tune --suite {suite} --trials 2 --bits 8 --seed 0 --methods {m}" for m in ("cca", "cca-itq")]
    assert tune("cca", 3).returncode == 2  # a bigger budget for one method only: refused
    # every row retuned with a bigger budget: the file is written anew
    proc = tune(None, 3)
    assert proc.returncode == 0, proc.stderr
    assert tomllib.loads(out.read_text())["trials"] == 3 and out.read_text().count("# Written by") == 1


def test_a_kept_row_without_its_study_is_refused_before_tuning(tmp_path):
    from runners.suite import SuiteError
    from runners.tune import kept_tuned

    out = tmp_path / "tuned.toml"
    out.write_text('suite = "s.toml"\ntrials = 20\nbits = 32\n[[tuned]]\ndataset = "wiki"\nlabel = "SAM"\nmethod = "sam"\n'
                   'default_value = 0.2\nbest_value = 0.3\noverrides = { m0 = 0.4 }\n')
    with pytest.raises(SuiteError, match=r"tuned row 'SAM' lacks study; expected the rows runners.tune --suite writes"):
        kept_tuned(out, "s.toml", 20, 32, {("wiki", "SSAH")})
    assert kept_tuned(out, "s.toml", 20, 32, {("wiki", "SAM")}) == ([], [])  # retuned: nothing kept, nothing checked
