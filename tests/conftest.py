"""Shared fixtures: real MLflow stores in temporary folders, the shared real-data folder, a real
PostgreSQL server on 127.0.0.1."""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Return ../shared/data beside the checkout (or $XMH_SHARED_DATA)."""
    return Path(os.environ.get("XMH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The shared real-data folder; skips the test cleanly where it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} not present (set XMH_SHARED_DATA to point at it)")
    return path


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh sqlite MLflow store for one test."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


@pytest.fixture
def postgres_url(tmp_path):
    """Start a throwaway PostgreSQL server on 127.0.0.1 (Debian's postgresql package); skip if absent."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries not found (install Debian's 'postgresql' package)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 not installed (pip install psycopg2-binary)")
    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root without a 'postgres' user to start the server as")
        run_as = ["runuser", "-u", "postgres", "--"]
    # pytest's tmp folders are private to root; the server user needs a folder it can reach.
    base = Path(tempfile.mkdtemp(prefix="xmh-pg-"))
    os.chmod(base, 0o755)
    data_dir = base / "pgdata"
    data_dir.mkdir()
    if run_as:
        shutil.chown(data_dir, "postgres", "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(run_as + [initdb, "-D", str(data_dir), "-U", "bench", "--auth=trust"], check=True, capture_output=True, timeout=120)
    log = data_dir / "server.log"
    subprocess.run(run_as + [pg_ctl, "-D", str(data_dir), "-l", str(log), "-w", "-t", "60", "start",
                             "-o", f"-h 127.0.0.1 -p {port} -k {data_dir}"], check=True, capture_output=True, timeout=120)
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="bench", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE optuna")
        conn.close()
        yield f"postgresql+psycopg2://bench@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(run_as + [pg_ctl, "-D", str(data_dir), "-m", "fast", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
