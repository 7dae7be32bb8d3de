"""Run identity: a run is keyed by a hash of (dataset, options, method, config, bits, seed, code version).

The code version of a cell is a hash of the source files that decide its numbers: the method's
module and the shared method code, the dataset loader's module and the container, and the
metrics package. Editing any of them makes the affected cells new runs; editing anything else
(runners, README, other methods) reuses what MLflow already holds.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import datasets
import methods

REPO_ROOT = Path(__file__).resolve().parent.parent


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(set(paths)):
        h.update(str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path.name).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def method_source_files(method_name: str) -> list[Path]:
    """Return the method-side source files that decide a method's numbers: its module, the shared
    base / layers / selection modules, and every other module of the `methods` package whose
    objects the method's module imports (e.g. methods/shallow.py for the classic baselines, or
    methods/cca.py for cca-itq), so editing shared code makes the affected cells new runs."""
    method_cls = methods.get(method_name)
    method_dir = Path(inspect.getfile(methods.base.HashingMethod)).parent
    module = inspect.getmodule(method_cls)
    paths = [Path(inspect.getfile(method_cls)), method_dir / "base.py", method_dir / "layers.py"]
    paths += [p for p in [method_dir / "selection.py"] if p.exists()]
    for value in vars(module).values():
        owner = value if inspect.ismodule(value) else inspect.getmodule(value)
        name = getattr(owner, "__name__", "")
        # the package __init__ (register, get) holds no numerics; sibling modules do
        if name.startswith("methods.") and getattr(owner, "__file__", None):
            paths.append(Path(owner.__file__))
    return sorted(set(paths))


@lru_cache(maxsize=None)
def code_version(method_name: str, dataset_name: str) -> str:
    """Return '<method version>-<12 hex>' for the code that decides a cell's results."""
    method_cls = methods.get(method_name)
    metrics_dir = REPO_ROOT / "metrics"
    loader = datasets.get_loader(dataset_name)
    paths = [
        *method_source_files(method_name),
        Path(inspect.getfile(loader)),
        Path(inspect.getfile(datasets.container)),
        *sorted(metrics_dir.glob("*.py")),
    ]
    return f"{method_cls.version}-{_digest(paths)}"


def run_key(dataset: str, dataset_options: Mapping[str, Any], method: str, params: Mapping[str, Any],
            bits: int, seed: int, version: str) -> str:
    """Return the 16-hex identity of one run; equal inputs give equal keys across processes."""
    payload = json.dumps(
        {"dataset": dataset, "dataset_options": dict(dataset_options), "method": method,
         "params": dict(params), "bits": bits, "seed": seed, "code_version": version},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def git_commit() -> str:
    """Return the checkout's commit (with '+dirty' when files differ), or 'unknown'."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
