"""Suite files and command-line selection: checked before anything runs, one-line errors."""
import subprocess
import sys
from pathlib import Path

import pytest

from runners.suite import DEFAULT_SUITE, SuiteError, load_suite, parse_suite, select

REPO = Path(__file__).resolve().parent.parent
GOOD = {"bits": [16, 32], "seeds": [0, 1], "datasets": [{"name": "synthetic-wiki"}],
        "methods": [{"name": "dcmh", "overrides": {"max_epochs": 2}}]}


def test_default_suite_parses_and_expands():
    suite = load_suite(DEFAULT_SUITE)
    assert len(suite.cells()) == len(suite.datasets) * len(suite.methods) * len(suite.bits) * len(suite.seeds)


SHIPPED = sorted(p for p in (REPO / "benchmarks").rglob("*.toml") if p.name != "references.toml" and "results" not in p.parts)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO / "benchmarks").as_posix())
def test_every_shipped_suite_loads(path):
    suite = load_suite(path)  # names, options, overrides and the [stopping] table all checked
    assert suite.cells() and suite.name


def test_grid_order_and_count():
    suite = parse_suite(GOOD, "s.toml")
    cells = suite.cells()
    assert [(c.bits, c.seed) for c in cells] == [(16, 0), (16, 1), (32, 0), (32, 1)]


@pytest.mark.parametrize("change,expected", [
    ({"bit": [16]}, r"s\.toml: unknown key 'bit' \(did you mean 'bits'\?\); accepted: bits, cluster, datasets"),
    ({"bits": [16, -4]}, r"s\.toml: bits: bits must be a positive integer .* got -4"),
    ({"bits": [0]}, r"bits must be a positive integer"),
    ({"seeds": [-1]}, r"seeds must be non-negative integers, got -1"),
    ({"methods": [{"name": "sammy"}]}, r"s\.toml: unknown method 'sammy'; known: .*dcmh"),
    ({"datasets": [{"name": "wikii"}]}, r"s\.toml: unknown dataset 'wikii'; known: "),
    ({"methods": [{"name": "dcmh", "overides": {}}]}, r"methods\[0\]: unknown key 'overides' \(did you mean 'overrides'\?\)"),
    ({"methods": [{"name": "dcmh", "overrides": {"epoch": 1}}]}, r"unknown config field\(s\) \['epoch'\]; accepted: "),
    ({"methods": [{"name": "dcmh"}, {"name": "dcmh"}]}, r"method labels must be unique"),
    ({"methods": [{"name": "dcmh", "overrides": {"max_epochs": 0}}]},
     r"s\.toml: method 'dcmh' field 'max_epochs' is 0; it counts how long the fit trains and must be an integer >= 1"),
    ({"datasets": [{"name": "wiki", "options": {"protocl": "official"}}]},
     r"s\.toml: wiki: unknown option\(s\) \['protocl'\]; accepted: .*protocol"),
])
def test_bad_suites_get_one_line_errors(change, expected):
    raw = {**GOOD, **change}
    with pytest.raises(SuiteError, match=expected) as err:
        parse_suite(raw, "s.toml")
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(SuiteError, match="not found"):
        load_suite(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("bits = [16,\n")
    with pytest.raises(SuiteError, match=r"bad\.toml: not valid TOML"):
        load_suite(bad)


def test_select_narrows_and_checks():
    suite = parse_suite(GOOD, "s.toml")
    narrowed = select(suite, bits=[64], seeds=[5])
    assert narrowed.bits == (64,) and narrowed.seeds == (5,)
    with pytest.raises(SuiteError, match="bits must be a positive integer"):
        select(suite, bits=[-32])
    with pytest.raises(SuiteError, match="unknown method 'nope'"):
        select(suite, methods_=["nope"])


@pytest.mark.parametrize("args,expected", [
    (["--bits", "-3"], "bits must be a positive integer"),
    (["--methods", "dcmx"], "unknown method 'dcmx'"),
    (["--datasets", "mirflickr-typo"], "unknown dataset 'mirflickr-typo'"),
])
def test_cli_bad_input_exits_2_with_one_line(args, expected, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "runners.compare", "--no-run", *args,
                           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1]
    assert not (tmp_path / "m.db").exists()  # nothing was created before the input was checked


@pytest.mark.parametrize("module", ["runners.compare", "runners.run"])
def test_help_works(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--suite" in proc.stdout and "--bits" in proc.stdout


def test_shards_partition_the_grid():
    from runners.cells import cell_key
    from runners.grid_arguments import in_shard, parse_shard

    suite = parse_suite({**GOOD, "bits": [8, 16, 24, 32], "seeds": [0, 1, 2]}, "s.toml")
    keys = [cell_key(c) for c in suite.cells()]
    parts = [{k for k in keys if in_shard(k, (i, 3))} for i in range(3)]
    assert set().union(*parts) == set(keys) and sum(map(len, parts)) == len(keys)  # disjoint, complete
    assert parse_shard("1/3") == (1, 3) and parse_shard(None) is None
    for bad in ("3/3", "x/2", "1"):
        with pytest.raises(SuiteError, match="--shard"):
            parse_shard(bad)


def test_a_suite_that_is_not_utf8_text_is_one_line(tmp_path):
    garbage = tmp_path / "garbage.toml"
    garbage.write_bytes(b"bits = [16]\n\xff\xfe\x00binary")
    with pytest.raises(SuiteError, match=r"garbage.toml: not UTF-8 text \(byte 12 is 0xff\); expected a TOML suite file"):
        load_suite(garbage)


def test_bits_beyond_the_bound_need_the_suite_to_raise_it(tmp_path):
    base = 'seeds = [0]\n[[datasets]]\nname = "synthetic-wiki"\n[[methods]]\nname = "dcmh"\n'
    long = tmp_path / "long.toml"
    long.write_text("bits = [100000]\n" + base)
    with pytest.raises(SuiteError, match=r"bits: 100000 bits is over the bound of 4096; set max_bits in the suite"):
        load_suite(long)
    long.write_text("max_bits = 200000\nbits = [100000]\n" + base)
    assert load_suite(long).bits == (100000,)
