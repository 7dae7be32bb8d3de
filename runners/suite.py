"""Benchmark suites: a TOML file of datasets x methods x bits x seeds, expanded into cells.

Example (benchmarks/default.toml):

    bits = [16, 32, 64]
    seeds = [0, 1, 2]
    [[datasets]]
    name = "synthetic-mirflickr"
    options = { n_items = 6000 }
    [[methods]]
    name = "dcmh"
    label = "DCMH"                # optional: leaderboard row name (defaults to name)
    overrides = { epochs = 30 }   # config fields, checked against the method's Config

Everything is checked before anything runs: an unknown key, method, dataset or config field,
or a non-positive bit length is a one-line SuiteError naming the file, the key and what is accepted.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import datasets
import methods
from methods.base import ConfigError, StoppingRule, check_bits
from methods.training import stopping_rule

DEFAULT_SUITE = Path(__file__).resolve().parent.parent / "benchmarks" / "default.toml"

SUITE_KEYS = {"name", "description", "bits", "seeds", "device", "datasets", "methods", "stopping", "imports", "max_bits",
              "cluster"}
# Codes longer than this are refused unless a suite raises its max_bits: 100,000 bits trained for
# minutes and peaked at 11.5 GB, and such a length is nearly always a typo.
MAX_BITS = 4096
DATASET_KEYS = {"name", "options", "preprocess"}
METHOD_KEYS = {"name", "label", "overrides"}


class SuiteError(ValueError):
    """A suite file or command-line selection that cannot run; the message says what is accepted."""


@dataclass(frozen=True)
class DatasetEntry:
    """A data set of a suite: loader options and the preprocessing step for every method."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    preprocess: str | Mapping[str, str] = "auto"  # datasets.preprocessing: auto | none | l2 | zscore


@dataclass(frozen=True)
class MethodEntry:
    name: str
    label: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a dataset, a configured method, a bit length and a seed."""

    dataset: DatasetEntry
    method: MethodEntry
    bits: int
    seed: int
    stopping: StoppingRule = StoppingRule()  # the suite's shared rule; part of the run key


def cell_title(cell: Cell) -> str:
    """Return a run's name, leading with what differs between the cells of a grid."""
    return f"{cell.method.label} {cell.bits}b seed {cell.seed} · {cell.dataset.name}"


@dataclass(frozen=True)
class TunedConfigs:
    """Tuned config overrides per (data set, method label), as runners.tune --suite writes them."""

    source: str
    trials: int
    bits: int
    overrides: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)

    def note(self) -> str:
        return (f"configs tuned by runners.tune ({self.trials} Optuna trials per method at {self.bits} bits on the "
                f"validation split; {self.source})")


@dataclass(frozen=True)
class Suite:
    name: str
    source: str
    datasets: tuple[DatasetEntry, ...]
    methods: tuple[MethodEntry, ...]
    bits: tuple[int, ...]
    seeds: tuple[int, ...]
    device: str = "cpu"
    description: str = ""
    stopping: Mapping[str, Any] = field(default_factory=dict)  # the shared stopping rule (methods.training)
    tuned: TunedConfigs | None = None
    imports: tuple[str, ...] = ()  # modules or .py files that register methods / data sets of one's own
    cluster: Mapping[str, Any] = field(default_factory=dict)  # where the grid runs (runners.cluster); no part of any run key

    def method_for(self, dataset: DatasetEntry, method: MethodEntry) -> MethodEntry:
        """Return `method` as it runs on `dataset`: with the tuned overrides when the suite has them."""
        if self.tuned is None or (dataset.name, method.label) not in self.tuned.overrides:
            return method
        return replace(method, overrides={**method.overrides, **self.tuned.overrides[dataset.name, method.label]})

    def cells(self) -> list[Cell]:
        """Return the grid in a stable order: dataset, method, bits, seed."""
        rule = stopping_rule(self.stopping)
        return [
            Cell(d, self.method_for(d, m), b, s, rule)
            for d in self.datasets for m in self.methods for b in self.bits for s in self.seeds
        ]

    def config_note(self) -> str:
        """Return what the table's configs are: the methods' defaults (with the suite's overrides) or tuned."""
        return self.tuned.note() if self.tuned else "configs: each method's defaults (and the suite's overrides)"


def _unknown_keys(found: Mapping[str, Any], accepted: set[str], where: str) -> None:
    unknown = sorted(set(found) - accepted)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SuiteError(f"{where}: unknown key {key!r}{hint}; accepted: {', '.join(sorted(accepted))}")


def _int_list(value: Any, where: str, positive: bool, max_bits: int = MAX_BITS) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise SuiteError(f"{where}: must list at least one value")
    out = []
    for v in values:
        if positive:
            try:
                out.append(check_bits(v))
            except ValueError as exc:
                raise SuiteError(f"{where}: {exc}") from None
            if out[-1] > max_bits:
                raise SuiteError(f"{where}: {out[-1]} bits is over the bound of {max_bits}; "
                                 "set max_bits in the suite to allow longer codes")
        else:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise SuiteError(f"{where}: seeds must be non-negative integers, got {v!r}")
            out.append(int(v))
    return tuple(dict.fromkeys(out))  # de-duplicated, order kept


def _max_bits(raw: Mapping[str, Any], source: str) -> int:
    value = raw.get("max_bits", MAX_BITS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SuiteError(f"{source}: max_bits must be a positive integer, got {value!r}")
    return value


def check_device(device: str, where: str) -> str:
    """Return `device` if torch can use it here; SuiteError naming what is available otherwise."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise SuiteError(f"{where}: unknown device {device!r}; expected cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SuiteError(f"{where}: device {device!r} but CUDA is not available here; use cpu")
        if parsed.index is not None and parsed.index >= count:
            raise SuiteError(f"{where}: device {device!r} but this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    elif parsed.type not in ("cpu", "mps"):
        raise SuiteError(f"{where}: device {device!r} is not supported; expected cpu or cuda[:N]")
    return device


def _entries(items: Any, accepted: set[str], where: str) -> list[Mapping[str, Any]]:
    """Return the checked tables of a datasets/methods list (a bare string means {name = ...})."""
    out = []
    for i, item in enumerate(items):
        item = {"name": item} if isinstance(item, str) else item
        _unknown_keys(item, accepted, f"{where}[{i}]")
        if "name" not in item:
            raise SuiteError(f"{where}[{i}]: missing key 'name'")
        out.append(item)
    return out


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """Return the parsed TOML file `path`; SuiteError naming `what` it is if missing or malformed."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SuiteError(f"{what} file {str(path)!r} not found") from None
    except IsADirectoryError:
        raise SuiteError(f"{what} file {str(path)!r} is a directory; expected a TOML file") from None
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}); "
                         f"expected a TOML {what} file") from None
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML ({exc})") from None



# --- a suite's [cluster] table (runners.cluster opens what it names) -----------------------------

CLUSTER_KEYS = {"workers", "scheduler", "jobqueue", "jobs", "options", "retries"}
JOBQUEUES = {"slurm": "SLURMCluster", "pbs": "PBSCluster"}  # --jobqueue -> dask_jobqueue class


class ClusterError(SuiteError):
    """A cluster that cannot be used: bad options, an unreachable scheduler, a missing package."""


def _cluster_field(where: str, key: str) -> str:
    return f"--{key}" if where == "--" else f"{where}.{key}"


def _cluster_int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ClusterError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_cluster_table(table: Any, where: str = "cluster") -> dict[str, Any]:
    """Return a suite's [cluster] table checked (keys, types); ClusterError naming what is accepted."""
    if not isinstance(table, Mapping):
        raise ClusterError(f"{where}: expected a table ([cluster]), got {type(table).__name__}")
    unknown = sorted(set(table) - CLUSTER_KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], CLUSTER_KEYS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ClusterError(f"{where}: unknown key {unknown[0]!r}{hint}; accepted: {', '.join(sorted(CLUSTER_KEYS))}")
    for key in ("workers", "jobs"):
        if key in table:
            _cluster_int(table[key], _cluster_field(where, key))
    if "retries" in table:
        _cluster_int(table["retries"], _cluster_field(where, "retries"), minimum=0)
    if "scheduler" in table and not isinstance(table["scheduler"], str):
        raise ClusterError(f"{_cluster_field(where, 'scheduler')}: expected an address such as \"tcp://10.0.0.5:8786\"")
    if "jobqueue" in table and table["jobqueue"] not in JOBQUEUES:
        raise ClusterError(f"{_cluster_field(where, 'jobqueue')}: expected one of {', '.join(JOBQUEUES)}, got {table['jobqueue']!r}")
    if not isinstance(table.get("options", {}), Mapping):
        raise ClusterError(f"{_cluster_field(where, 'options')}: expected a table of dask-jobqueue options (queue, cores, memory, ...)")
    return {k: (dict(v) if k == "options" else v) for k, v in table.items()}


def import_plugins(entries: Sequence[str], where: str = "imports") -> None:
    """Import each entry (a module name, or a .py file path) so the methods and data sets it
    registers exist; a file is imported once per process under a name derived from its path."""
    for entry in entries:
        try:
            if entry.endswith(".py"):
                path = Path(entry).resolve()
                name = "xmh_plugin_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
                if name in sys.modules:
                    continue
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or not path.is_file():
                    raise SuiteError(f"{where}: {entry!r} is not a Python file")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                importlib.import_module(entry)
        except SuiteError:
            raise
        except Exception as exc:  # the plug-in's own error, in one line
            raise SuiteError(f"{where}: importing {entry!r} failed: {type(exc).__name__}: {exc}") from None


def parse_suite(raw: Mapping[str, Any], source: str) -> Suite:
    """Return a checked Suite from the parsed TOML mapping `raw` read from `source`."""
    _unknown_keys(raw, SUITE_KEYS, source)
    base = Path(source).resolve().parent
    imports = tuple(str(base / i) if i.endswith(".py") and not Path(i).is_absolute() else i
                    for i in raw.get("imports", []))
    import_plugins(imports, f"{source}: imports")
    for required in ("datasets", "methods", "bits", "seeds"):
        if required not in raw:
            raise SuiteError(f"{source}: missing key {required!r}; a suite needs datasets, methods, bits and seeds")
    ds_entries = [DatasetEntry(str(d["name"]), dict(d.get("options", {})), d.get("preprocess", "auto"))
                  for d in _entries(raw["datasets"], DATASET_KEYS, f"{source}: datasets")]
    m_entries = [MethodEntry(str(m["name"]), str(m.get("label", m["name"])), dict(m.get("overrides", {})))
                 for m in _entries(raw["methods"], METHOD_KEYS, f"{source}: methods")]
    suite = Suite(
        name=str(raw.get("name", Path(source).stem)),
        source=source,
        datasets=tuple(ds_entries),
        methods=tuple(m_entries),
        bits=_int_list(raw["bits"], f"{source}: bits", positive=True, max_bits=_max_bits(raw, source)),
        seeds=_int_list(raw["seeds"], f"{source}: seeds", positive=False),
        device=str(raw.get("device", "cpu")),
        description=str(raw.get("description", "")),
        stopping=dict(raw.get("stopping", {})),
        imports=imports,
        cluster=check_cluster_table(raw.get("cluster", {}), f"{source}: cluster"),
    )
    check_suite(suite)
    return suite


def check_suite(suite: Suite) -> None:
    """Raise SuiteError unless the device is usable here, every dataset and method exists and
    every override is accepted."""
    check_device(suite.device, f"{suite.source}: device")
    try:
        stopping_rule(suite.stopping)
    except ConfigError as exc:
        raise SuiteError(f"{suite.source}: {exc}") from None
    for d in suite.datasets:
        try:
            datasets.check_options(d.name, dict(d.options))
        except (datasets.UnknownNameError, datasets.DataError) as exc:
            raise SuiteError(f"{suite.source}: {exc}") from None
    labels = [m.label for m in suite.methods]
    if len(set(labels)) != len(labels):
        raise SuiteError(f"{suite.source}: method labels must be unique, got {labels}; set 'label' to tell them apart")
    for m in [suite.method_for(d, m) for d in suite.datasets for m in suite.methods]:
        try:
            methods.create(m.name, m.overrides)  # types, training lengths and the method's own checks
        except (methods.UnknownNameError, ConfigError) as exc:
            raise SuiteError(f"{suite.source}: {exc}") from None


def load_suite(path: str | Path) -> Suite:
    """Return the checked Suite in TOML file `path` (SuiteError if missing or malformed)."""
    return parse_suite(read_toml(path, "suite"), str(path))


def select(
    suite: Suite,
    *,
    datasets_: Sequence[str] | None = None,
    methods_: Sequence[str] | None = None,
    bits: Sequence[int] | None = None,
    seeds: Sequence[int] | None = None,
    device: str | None = None,
) -> Suite:
    """Return `suite` narrowed or changed by command-line choices (checked like the file).

    Methods/datasets named on the command line but absent from the suite are added with
    default options; bits and seeds replace the suite's lists."""
    def pick(entries, names, make):
        if names is None:
            return entries
        by_key = {e.name: e for e in entries} | {getattr(e, "label", e.name): e for e in entries}
        return tuple(by_key.get(n) or make(n) for n in names)

    raw_bits = suite.bits if bits is None else _int_list(list(bits), "--bits", positive=True)
    raw_seeds = suite.seeds if seeds is None else _int_list(list(seeds), "--seeds", positive=False)
    narrowed = replace(
        suite,
        datasets=pick(suite.datasets, datasets_, lambda n: DatasetEntry(n)),
        methods=pick(suite.methods, methods_, lambda n: MethodEntry(n, n)),
        bits=raw_bits,
        seeds=raw_seeds,
        device=device or suite.device,
    )
    check_suite(narrowed)
    return narrowed


def narrowing_flags(pairs: Sequence[tuple[str, Sequence[Any] | None]]) -> str:
    """Return the command-line text of the narrowing choices that were given: ' --NAME V1 V2' for
    each (NAME, values) pair whose values are not empty, in order (for the commands files record)."""
    return "".join(f" --{name} " + " ".join(map(str, values)) for name, values in pairs if values)


def load_tuned(path: str | Path, suite: Suite, name: str | None = None) -> Suite:
    """Return `suite` running the tuned configs of file `path` (written by runners.tune --suite),
    called `name` in tables and errors (default: the path); SuiteError if the file is malformed or
    names a method or data set the suite lacks."""
    raw = read_toml(path, "tuned-configs")
    where = name or str(path)
    for key in ("trials", "bits", "tuned"):
        if key not in raw:
            raise SuiteError(f"{where}: missing key {key!r}; expected the file runners.tune --suite writes")
    overrides = {}
    labels = {m.label for m in suite.methods}
    names = {d.name for d in suite.datasets}
    for i, entry in enumerate(raw["tuned"]):
        missing = {"dataset", "label", "overrides"} - set(entry)
        if missing:
            raise SuiteError(f"{where}: tuned[{i}] lacks {sorted(missing)}")
        if entry["label"] not in labels or entry["dataset"] not in names:
            continue  # tuned for another selection of the suite
        overrides[entry["dataset"], entry["label"]] = dict(entry["overrides"])
    tuned = replace(suite, tuned=TunedConfigs(where, int(raw["trials"]), int(raw["bits"]), overrides))
    check_suite(tuned)
    return tuned
