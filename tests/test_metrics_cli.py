"""The evaluation CLI on saved files: formats, key selection, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import metrics
from runners import evaluate as cli

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "query_codes": np.where(rng.random((15, 16)) < 0.5, 1, -1).astype(np.int8),
        "retrieval_codes": np.where(rng.random((120, 16)) < 0.5, 1, -1).astype(np.int8),
        "query_labels": (rng.random((15, 4)) < 0.4).astype(np.uint8),
        "retrieval_labels": (rng.random((120, 4)) < 0.4).astype(np.uint8),
    }
    np.savez(tmp_path / "codes.npz", **arrays)
    scipy.io.savemat(tmp_path / "codes.mat", {"qB": arrays["query_codes"].astype(float), "rB": arrays["retrieval_codes"].astype(float),
                                              "qL": arrays["query_labels"], "rL": arrays["retrieval_labels"]})
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    return tmp_path, arrays


def run_cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_npz_mat_and_separate_npy_give_the_library_numbers(saved, capsys):
    folder, arrays = saved
    expected = metrics.evaluate_hashing(*arrays.values(), map_ks=(10,), precision_ks=(5,))
    for argv in ([folder / "codes.npz"], [folder / "codes.mat"],
                 [f"--{role.replace('_', '-')}={folder / (role + '.npy')}" for role in cli.ROLES]):
        code, out, err = run_cli(capsys, *argv, "--json", "--map-k", 10, "--precision-k", 5)
        assert code == 0, err
        assert json.loads(out) == pytest.approx(expected, nan_ok=True)


def test_file_key_syntax_and_table_output(saved, capsys):
    folder, _ = saved
    code, out, _ = run_cli(capsys, "--query-codes", f"{folder / 'codes.mat'}:qB", folder / "codes.npz", "--map-k", 10)
    assert code == 0 and out.splitlines()[0].split()[0] == "map" and "map_tie_aware" in out


@pytest.mark.parametrize("argv, message", [
    (["{f}/missing.npz"], "error: no such file: "),
    (["{f}/codes.npz", "--query-codes", "{f}/codes.npz:nope"], "error: {f}/codes.npz: no key 'nope' for query_codes"),
    (["{f}/codes.npz", "--query-labels", "{f}/retrieval_labels.npy"], "error: query_labels has 120 rows but query_codes has 15"),
    (["{f}/codes.npz", "--query-codes", "{f}/query_labels.npy"], "error: query_codes have 4 bits but retrieval_codes have 16"),
    ([], "error: no source for query_codes"),
])
def test_bad_input_is_one_line_on_stderr(saved, capsys, argv, message):
    folder, _ = saved
    code, out, err = run_cli(capsys, *[a.format(f=folder) for a in argv])
    assert code == 2 and out == ""
    assert err.startswith(message.format(f=folder)) and err.count("\n") == 1


def test_real_valued_codes_hint_at_binarize(saved, capsys):
    folder, arrays = saved
    np.savez(folder / "real.npz", **{**arrays, "query_codes": np.random.default_rng(1).normal(size=(15, 16))})
    code, _, err = run_cli(capsys, folder / "real.npz")
    assert code == 2 and "--binarize" in err
    assert run_cli(capsys, folder / "real.npz", "--binarize")[0] == 0
    code, out, _ = run_cli(capsys, folder / "real.npz", "--cosine", "--map-k", 10, "--json")
    assert code == 0 and "map_tie_aware" not in json.loads(out)


def test_module_help_runs():
    done = subprocess.run([sys.executable, "-m", "runners.evaluate", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage: python -m runners.evaluate" in done.stdout
