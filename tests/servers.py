"""Helpers for the tests that start real servers on 127.0.0.1 (an `mlflow server`)."""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

import pytest


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(proc: subprocess.Popen, url: str, timeout: float) -> None:
    """Return once GET `url` answers 200; fail the test if `proc` exits or `timeout` seconds pass
    first (with the end of its stderr when it was captured)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            err = proc.stderr.read()[-2000:] if proc.stderr is not None else ""
            pytest.fail(f"server for {url} exited with status {proc.returncode} before answering {err}")
        if time.monotonic() > deadline:
            pytest.fail(f"server for {url} did not answer 200 within {timeout:g} s")
        time.sleep(0.3)
