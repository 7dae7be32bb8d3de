"""Run identity, from what decides the numbers.

A fit (a trained model's codes) is keyed by a hash of (dataset, loader options, preprocessing,
split hash, data fingerprint, method, full config, stopping rule, bits, seed, fit code version).
Its scores are keyed by (fit key, metrics version). Both code versions are hashes of source files
found by following imports, not a hand-written list:
- fit code version: the method class's `version` plus the import closure, inside this project, of
  the method's module, the loader's module and the preprocessing module;
- metrics version: the import closure of the scoring module (runners/scoring.py, which
  imports the metrics package).
Editing any module a method or loader imports changes exactly the affected fits; editing the
metrics rescoring every fit from its stored codes, without training; editing anything else
(README, other methods, runners' bookkeeping) reuses what MLflow holds.
"""
from __future__ import annotations

import ast
import hashlib
import inspect
import json
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import datasets
import methods

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_TOP = ("benchmarks", "datasets", "methods", "metrics", "registry", "runners")


def _module_file(name: str, root: Path) -> Path | None:
    """Return the source file of project module `name` under `root` (a package's __init__.py)."""
    parts = name.split(".")
    if parts[0] not in PROJECT_TOP:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, package: str) -> str:
    """Return the absolute module name an ImportFrom node imports from."""
    if not node.level:
        return node.module or ""
    base = package.split(".") if package else []
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _package_of(path: Path, root: Path) -> str:
    if not path.is_relative_to(root):
        return ""
    name = _module_name(path, root)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _reexport_source(package: str, name: str, root: Path) -> str | None:
    """Return the module that package `package`'s __init__ imports `name` from, if it does."""
    init = _module_file(package, root)
    for node in _tree(init).body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            return _resolve(node, package)
    return None


_TREES: dict[Path, tuple[tuple[int, int], ast.Module]] = {}


def _tree(path: Path) -> ast.Module:
    """Return the parsed source of `path` (cached until the file's size or mtime changes: a grid
    asks for the closure of every cell)."""
    stat = path.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    hit = _TREES.get(path)
    if hit is None or hit[0] != stamp:
        hit = _TREES[path] = (stamp, ast.parse(path.read_text(), str(path)))
    return hit[1]


def _imports(path: Path, root: Path) -> tuple[set[str], set[str]]:
    """Return (modules to follow, package __init__ files to hash without following) that the
    source file `path` imports. `from pkg import name` follows the module that pkg's __init__
    re-exports `name` from (or the submodule pkg.name), not every module the __init__ imports:
    registering modules in an __init__ does not make them decide another module's numbers."""
    package = _package_of(path, root)
    follow: set[str] = set()
    leaves: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            follow.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, package)
            target_file = _module_file(target, root)
            if target_file is None or target_file.name != "__init__.py":
                follow.add(target)
                continue
            for alias in node.names:
                if _module_file(f"{target}.{alias.name}", root) is not None:
                    follow.add(f"{target}.{alias.name}")
                elif (source := _reexport_source(target, alias.name, root)) is not None:
                    follow.add(source)
                else:
                    leaves.add(target)  # defined in the __init__ itself
    return {m for m in follow if _module_file(m, root) is not None}, leaves


def import_closure(modules: Iterable[str], root: Path = REPO_ROOT, files: Iterable[Path] = ()) -> list[Path]:
    """Return every project source file reached from `modules` (and from the source `files` of
    modules outside the project, e.g. a suite's plug-ins) by following imports, sorted."""
    todo = list(modules)
    seen: dict[str, Path] = {}
    files = set(files)
    for path in list(files):
        todo.extend(_imports(path, path.parent)[0])
    while todo:
        mod = todo.pop()
        if mod in seen or (path := _module_file(mod, root)) is None:
            continue
        seen[mod] = path
        follow, leaves = _imports(path, root)
        todo.extend(follow - set(seen))
        files.update(_module_file(m, root) for m in leaves)
    return sorted(files | set(seen.values()))


def digest(paths: Iterable[Path], root: Path = REPO_ROOT) -> str:
    """Return 12 hex of sha256 over the files' repository paths and bytes."""
    h = hashlib.sha256()
    for path in sorted(set(paths)):
        h.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _roots(objects: Iterable[Any], root: Path) -> tuple[list[str], list[Path]]:
    """Return (project module names, source files of outside modules) defining `objects`."""
    names, outside = [], []
    for obj in objects:
        name = obj.__module__
        if _module_file(name, root) is not None:
            names.append(name)
        else:
            outside.append(Path(inspect.getfile(obj)).resolve())
    return names, outside


@lru_cache(maxsize=None)
def fit_code_version(method_name: str, dataset_name: str, root: Path = REPO_ROOT) -> str:
    """Return '<method version>-<12 hex>' over the import closure of the method's and the
    loader's modules and the preprocessing module."""
    method_cls = methods.get(method_name)
    names, outside = _roots([method_cls, datasets.get_loader(dataset_name)], root)
    files = import_closure([*names, "datasets.preprocessing"], root, outside)
    return f"{method_cls.version}-{digest(files, root)}"


@lru_cache(maxsize=None)
def metrics_version(root: Path = REPO_ROOT) -> str:
    """Return 12 hex over the import closure of the scoring module (metrics included)."""
    return digest(import_closure(["runners.scoring"], root), root)


def run_key(fields: Mapping[str, Any]) -> str:
    """Return the 16-hex identity of a fit from its identifying fields; equal inputs give equal
    keys across processes (JSON with sorted keys)."""
    payload = json.dumps(dict(fields), sort_keys=True, default=str)
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

