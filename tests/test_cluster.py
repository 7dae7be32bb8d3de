"""Grids and tuning on a real Dask cluster: a `dask scheduler` and two `dask worker` processes on
127.0.0.1, started and stopped here. One worker is killed (SIGKILL) while it holds a cell and the
MLflow store still ends with exactly one FINISHED run per cell and nothing left RUNNING; tuning
trials run on such a cluster against the real PostgreSQL server of conftest.py. The cells are a
plug-in method of one file (a ridge projection that can sleep in fit, so a cell can be caught)."""
from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

import datasets.registry
import methods.registry
from runners import cluster as engine
from runners.cells import cell_key, forget_loaded
from runners.run import AttemptTracker, cell_task
from runners.suite import load_suite
from runners.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT = "xmodal-hash-bench"

# A fast method that can be made slow (it sleeps in fit) and a small data set, in one file: the
# shared plug-in parts, then the registrations.
PLUGIN = (Path(__file__).resolve().parent / "plugin_parts.py").read_text() + '''
import time
from dataclasses import dataclass

from datasets.registry import register as register_dataset
from methods.base import HashingMethod
from methods.registry import register


@dataclass(frozen=True)
class SleepyConfig:
    ridge: float = 1.0
    sleep: float = 0.0  # seconds fit waits before it trains


@register("sleepy-ridge")
class SleepyRidge(HashingMethod):
    Config = SleepyConfig

    @classmethod
    def search_space(cls, trial):
        return {"ridge": trial.suggest_float("ridge", 0.01, 100.0, log=True)}

    def fit(self, train, bits, ctx):
        time.sleep(self.config.sleep)
        return ridge_projection(train, bits, self.config.ridge, ctx.seed)


@register_dataset("sleepy-blobs")
def load_blobs(seed: int = 0) -> CrossModalData:
    return blobs("sleepy-blobs", seed)
'''

SUITE = """
name = "sleepy"
imports = ["{plugin}"]
bits = [8, 16]
seeds = [0]
[[datasets]]
name = "sleepy-blobs"
[[methods]]
name = "sleepy-ridge"
label = "Fast"
[[methods]]
name = "sleepy-ridge"
label = "Slow"
overrides = {{ sleep = {sleep} }}
"""


@pytest.fixture(scope="session")
def plugin_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("plugin") / "sleepy_plugin.py"
    path.write_text(PLUGIN)
    return path


@pytest.fixture
def plugin(plugin_file):
    """The plug-in's path; what importing it registers in this process is undone afterwards, so
    other tests see only the built-in methods and data sets."""
    before = (dict(methods.registry.METHODS._entries), dict(datasets.registry.DATASETS._entries), set(sys.modules))
    yield plugin_file
    methods.registry.METHODS._entries.clear()
    methods.registry.METHODS._entries.update(before[0])
    datasets.registry.DATASETS._entries.clear()
    datasets.registry.DATASETS._entries.update(before[1])
    for name in set(sys.modules) - before[2]:
        if name.startswith("xmh_plugin_"):
            del sys.modules[name]
    forget_loaded()


def _suite(folder: Path, plugin: Path, sleep: float) -> Path:
    path = folder / "sleepy.toml"
    path.write_text(SUITE.format(plugin=plugin, sleep=sleep))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real `dask scheduler` and two `dask worker` processes (w0, w1) on 127.0.0.1: one thread and
    the resource fit=1 each, no nanny (so SIGKILL of the process kills the worker). Their working
    folder is not the parent's: a relative sqlite URI must still reach the same store. Shared by
    this module's tests to save start-ups on two cores: the test that kills a worker comes last."""
    from distributed import Client

    dask = str(Path(sys.executable).with_name("dask"))
    folder = tmp_path_factory.mktemp("workers")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    procs: dict[str, subprocess.Popen] = {}
    logs: dict[str, Path] = {}

    def start(name: str, args: list[str]) -> None:
        logs[name] = folder / f"{name}.log"
        with open(logs[name], "w") as log:
            procs[name] = subprocess.Popen([dask, *args], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)

    try:
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", "127.0.0.1:0"])
        for name in ("w0", "w1"):
            start(name, ["worker", address, "--name", name, "--nthreads", "1", "--resources", "fit=1", "--no-nanny",
                         "--no-dashboard", "--host", "127.0.0.1", "--death-timeout", "60"])
        with Client(address, timeout=60) as client:  # bounded: the scheduler up, then both workers joined
            client.wait_for_workers(2, timeout=120)
        yield SimpleNamespace(address=address, procs=procs, logs=logs)
    finally:
        for proc in procs.values():
            _stop(proc)


def _logs(cluster) -> str:
    return "\n".join(f"--- {name}\n{path.read_text()[-3000:]}" for name, path in cluster.logs.items())


def test_a_cell_task_run_again_never_trains_a_finished_cell_twice(tmp_path, plugin):
    """What a retried task does, called here directly: reuse what an earlier attempt finished,
    mark what a dead attempt left RUNNING as KILLED, refuse a worker whose code disagrees."""
    suite = load_suite(_suite(tmp_path, plugin, sleep=0.0))
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = Tracker(uri, EXPERIMENT)
    fast8, fast16 = (c for c in suite.cells() if c.method.label == "Fast")
    k8, k16 = cell_key(fast8), cell_key(fast16)

    assert cell_task(suite, fast8, k8, uri, EXPERIMENT, "grid-a")[0] == "FINISHED"
    status, message = cell_task(suite, fast8, k8, uri, EXPERIMENT, "grid-a")  # its result was lost: retried
    assert status == "FINISHED" and "already finished by attempt 1 of this grid" in message and "not trained again" in message
    assert [r.status for r in tracker.runs_of(k8)] == ["FINISHED"]

    dead = tracker.start("a dead attempt", {"run_key": k16, "grid_id": "grid-a", "attempt": 1, "dask_worker": "w9"}, {})
    assert cell_task(suite, fast16, k16, uri, EXPERIMENT, "grid-a")[0] == "FINISHED"
    runs = {r.run_id: r for r in tracker.runs_of(k16)}
    assert runs[dead].status == "KILLED" and runs[dead].tags["superseded_by"].startswith("attempt 2 of grid grid-a")
    assert [(r.status, r.tags["attempt"]) for r in runs.values() if r.run_id != dead] == [("FINISHED", "2")]

    assert cell_task(suite, fast8, k8, uri, EXPERIMENT, "grid-b", force=True)[0] == "FINISHED"  # --force: once more
    assert "attempt 1 of this grid" in cell_task(suite, fast8, k8, uri, EXPERIMENT, "grid-b", force=True)[1]
    assert [r.status for r in tracker.runs_of(k8)] == ["FINISHED", "FINISHED"]

    # a worker given up for dead comes back: the attempt that superseded it marked its run KILLED
    zombie = AttemptTracker(tracker, {"grid_id": "grid-d", "attempt": 1})
    lost = zombie.start("a lost attempt", {"run_key": k16}, {})
    tracker.finish(lost, "KILLED")
    zombie.finish(lost)
    assert tracker.status(lost) == "KILLED"

    status, message = cell_task(suite, fast8, "0" * 16, uri, EXPERIMENT, "grid-c")
    assert status == "FAILED" and "same commit" in message and len(tracker.runs_of("0" * 16)) == 0


@pytest.mark.slow
def test_tuning_trials_run_on_real_dask_workers_against_postgresql(tmp_path, plugin, dask_cluster, postgres_url):
    parent = tmp_path / "parent"
    parent.mkdir()
    suite_file = _suite(parent, plugin, sleep=0.2)
    proc = subprocess.run([sys.executable, "-m", "runners.tune", "--suite", str(suite_file), "--scheduler", dask_cluster.address,
                           "--trials", "3", "--storage", postgres_url, "--tracking-uri", "sqlite:///t.db",
                           "--output", "tuned.toml"], cwd=parent, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:] + _logs(dask_cluster)
    workers = set()
    for label in ("Fast", "Slow"):  # both studies, created by the parent, ran their trials on the workers
        study = optuna.load_study(study_name=f"sleepy-sleepy-blobs-{label}-16b", storage=postgres_url)
        trials = study.get_trials(deepcopy=False)
        assert sorted(t.number for t in trials) == [0, 1, 2]
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert next(t for t in trials if t.number == 0).user_attrs.get("is_default")
        workers |= {t.user_attrs["dask_worker"].split()[0] for t in trials}
    assert workers <= {"w0", "w1"} and workers
    assert "[6/6 trials, all done in" in proc.stdout and "Dask dashboard: http://127.0.0.1:" in proc.stdout
    tracker = Tracker(f"sqlite:///{parent / 't.db'}", "xmodal-hash-bench-tuning")  # trials logged from the workers
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert sorted((r.data.tags["study"], r.info.status) for r in runs) == sorted(
        [(f"sleepy-sleepy-blobs-{label}-16b", "FINISHED") for label in ("Fast", "Slow") for _ in range(3)])
    assert "[[tuned]]" in (parent / "tuned.toml").read_text()


@pytest.mark.slow
def test_a_grid_on_real_dask_workers_survives_a_worker_killed_while_it_holds_a_cell(tmp_path, plugin, dask_cluster):
    parent = tmp_path / "parent"
    parent.mkdir()
    suite_file = _suite(parent, plugin, sleep=3.0)
    tracker = Tracker(f"sqlite:///{parent / 'm.db'}", EXPERIMENT)  # the store exists before anyone polls it
    cells = {cell_key(c): c for c in load_suite(suite_file).cells()}
    out, err = open(parent / "out.log", "w"), open(parent / "err.log", "w")
    grid = subprocess.Popen([sys.executable, "-m", "runners.run", "--suite", str(suite_file), "--scheduler",
                             dask_cluster.address, "--tracking-uri", "sqlite:///m.db"], cwd=parent, stdout=out, stderr=err)
    try:
        held = None
        deadline = time.monotonic() + 120
        while held is None and time.monotonic() < deadline and grid.poll() is None:
            held = next((r for r in tracker.runs("RUNNING") if r.label == "Slow" and "dask_worker" in r.tags), None)
            time.sleep(0.2)
        assert held is not None, "no slow cell was seen running\n" + (parent / "err.log").read_text() + _logs(dask_cluster)
        victim = held.tags["dask_worker"].split()[0]
        survivor = {"w0": "w1", "w1": "w0"}[victim]
        dask_cluster.procs[victim].send_signal(signal.SIGKILL)  # no clean-up: its run stays RUNNING
        dask_cluster.procs[victim].wait(timeout=30)
        grid.wait(timeout=240)
    finally:
        _stop(grid)
        out.close(), err.close()
    stdout, stderr = (parent / "out.log").read_text(), (parent / "err.log").read_text()
    assert grid.returncode == 0, stderr[-4000:] + _logs(dask_cluster)
    assert "4 run, 0 reused, 0 failed" in stdout, stdout + stderr
    runs = tracker.runs(status=None)
    assert collections.Counter(r.run_key for r in runs if r.status == "FINISHED") == {key: 1 for key in cells}
    assert [r for r in runs if r.status == "RUNNING"] == []
    assert dask_cluster.procs[survivor].poll() is None
    killed = [r for r in runs if r.status == "KILLED"]
    assert [r.run_id for r in killed] == [held.run_id]  # the dead worker's run, and only it
    assert killed[0].tags["superseded_by"].startswith(f"attempt 2 of grid {held.tags['grid_id']} on {survivor}")
    redo = next(r for r in runs if r.run_key == held.run_key and r.status == "FINISHED")
    assert redo.tags["attempt"] == "2" and redo.tags["dask_worker"].startswith(survivor)
    assert redo.tags["grid_id"] == held.tags["grid_id"] and redo.metrics["map_i2t"] > 0.5
    # progress: the dashboard link, a line per cell started and finished, the retry, the count
    assert "Dask dashboard: http://127.0.0.1:" in stderr
    assert stderr.count("started ") >= 5 and stderr.count("finished ") == 4
    assert f"started {held.label} {held.bits}b seed 0 · sleepy-blobs on {survivor}" in stderr
    assert "(attempt 2; 1 run(s) of it left RUNNING by a dead worker marked KILLED)" in stderr
    assert "[4/4 cells, all done in" in stderr


def test_an_unreachable_or_malformed_scheduler_is_one_line_in_bounded_time(tmp_path, plugin, capsys):
    from runners.run import main

    suite_file = _suite(tmp_path, plugin, sleep=0.0)
    base = ["--suite", str(suite_file), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--scheduler", f"tcp://127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and time.monotonic() - started < engine.CONNECT_TIMEOUT + 30
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the Dask scheduler tcp://127.0.0.1:") and "Traceback" not in err
    for bad, expected in [("--scheduler", "nonsense"), ("--scheduler", "tcp://host")]:
        with pytest.raises(SystemExit):
            main([*base, bad, expected])
        assert "--scheduler expects tcp://HOST:PORT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"])
    assert "leave out --workers" in capsys.readouterr().err


def test_cluster_choices_merge_the_suite_table_under_the_command_line():
    spec = engine.cluster_spec({}, {"jobqueue": "slurm", "jobs": 4, "options": {"queue": "gpu", "cores": 8}})
    assert (spec.jobqueue, spec.jobs, dict(spec.options)) == ("slurm", 4, {"queue": "gpu", "cores": 8})
    spec = engine.cluster_spec({"jobqueue": "slurm", "options": {"walltime": "01:00:00"}},
                               {"jobqueue": "slurm", "jobs": 4, "options": {"queue": "gpu"}})
    assert spec.jobs == 4 and dict(spec.options) == {"queue": "gpu", "walltime": "01:00:00"}
    spec = engine.cluster_spec({"scheduler": "10.0.0.5:8786"}, {"jobqueue": "slurm", "retries": 5})  # the CLI picks the engine
    assert (spec.scheduler, spec.jobqueue, spec.retries, spec.remote) == ("tcp://10.0.0.5:8786", None, 5, True)
    assert engine.cluster_spec({"workers": 1}, {"jobqueue": "slurm"}).in_process
    assert engine.cluster_spec({"workers": 3}).describe() == "on 3 workers (a local Dask cluster)"
    for cli, table, message in [
        ({"workers": 0}, {}, "--workers: expected an integer >= 1"),
        ({"jobs": 2}, {}, "need --jobqueue"),
        ({}, {"jobqueue": "sge"}, "expected one of slurm, pbs"),
        ({}, {"schedular": "tcp://a:1"}, "did you mean 'scheduler'"),
        ({}, {"scheduler": "tcp://a:1", "jobqueue": "slurm"}, "not both"),
    ]:
        with pytest.raises(engine.ClusterError, match=message):
            engine.cluster_spec(cli, table)


def test_a_suite_with_a_bad_cluster_table_is_refused_when_read(tmp_path, plugin):
    from runners.suite import SuiteError

    path = _suite(tmp_path, plugin, sleep=0.0)
    path.write_text(path.read_text() + '\n[cluster]\njobqueue = "slurm"\njobz = 3\n')
    with pytest.raises(SuiteError, match=r"sleepy\.toml: cluster: unknown key 'jobz' \(did you mean 'jobs'\?\)"):
        load_suite(path)


def test_slurm_jobs_get_the_users_options_and_one_fit_per_worker(tmp_path, monkeypatch):
    pytest.importorskip("dask_jobqueue", reason="dask-jobqueue not installed (pip install -e '.[slurm]')")
    fake = tmp_path / "bin"  # stand-ins for sbatch / scancel: the jobs are only submitted, never run
    fake.mkdir()
    for name, text in (("sbatch", "echo 'Submitted batch job 4242'"), ("scancel", "true")):
        (fake / name).write_text(f"#!/bin/sh\n{text}\n")
        (fake / name).chmod(0o755)
    spec = engine.ClusterSpec(jobqueue="slurm", jobs=2, options={
        "queue": "gpu", "account": "lab42", "cores": 8, "memory": "32GB", "walltime": "04:00:00",
        "job_extra_directives": ["--gres=gpu:1"], "scheduler_options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}})
    with pytest.raises(engine.ClusterError, match="'sbatch' is not on PATH"):
        with engine.open_cluster(spec, lambda line: None):
            pass
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    lines: list[str] = []
    with engine.open_cluster(spec, lines.append) as client:
        assert client.cluster.__class__.__name__ == "SLURMCluster"
    script = next(line for line in lines if line.startswith("each slurm job runs this script"))
    for directive in ("#SBATCH -p gpu", "#SBATCH -A lab42", "#SBATCH --cpus-per-task=8", "#SBATCH -t 04:00:00",
                      "#SBATCH --gres=gpu:1", "--nthreads 8", "--resources fit=1"):
        assert directive in script
    assert any(line.startswith("Dask dashboard: http://127.0.0.1:") for line in lines)
    with pytest.raises(engine.ClusterError, match="--jobqueue slurm: "):  # a misspelt option, in one line
        with engine.open_cluster(engine.ClusterSpec(jobqueue="slurm", options={"cores": 8, "memory": "1GB", "qeue": "x"}),
                                 lines.append):
            pass


def test_stores_are_named_the_same_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what the parent sends its workers, whose folder is another
    assert engine.portable_uri("sqlite:///m.db") == f"sqlite:///{tmp_path / 'm.db'}"
    assert engine.portable_uri("sqlite:////srv/m.db") == "sqlite:////srv/m.db"
    assert engine.portable_uri("http://10.0.0.5:5000") == "http://10.0.0.5:5000"
    assert engine.portable_storage("journal:study.log") == f"journal:{tmp_path / 'study.log'}"
    assert engine.portable_storage("study.log") == str(tmp_path / "study.log")
    assert engine.portable_storage("postgresql+psycopg2://bench@db/optuna") == "postgresql+psycopg2://bench@db/optuna"


def test_one_worker_methods_and_data_sets_never_import_dask():
    code = ("import sys, datasets, methods, runners.run, runners.compare, runners.tune\n"
            "from runners.suite import load_suite\n"
            "load_suite('benchmarks/default.toml')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'dask_jobqueue')))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def _worker_environment() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")}


def test_local_cluster_workers_keep_glibc_malloc_defaults(monkeypatch):
    # Dask's nannies export MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap threshold: every
    # large tensor of a training step would be mapped and page-faulted anew (runners.cluster).
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with engine.open_cluster(engine.ClusterSpec(workers=2), lambda line: None) as client:
        seen = client.run(_worker_environment)
    assert len(seen) == 2
    for env in seen.values():
        assert env == {"OMP_NUM_THREADS": str(max(1, engine._cores() // 2)), "MALLOC_TRIM_THRESHOLD_": None}
