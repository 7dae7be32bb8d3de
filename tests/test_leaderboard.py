"""Leaderboard pieces with hand-checked values: the paired test, marks, reference files."""
import math

import numpy as np
import pandas as pd
import pytest

from runners import leaderboard
from runners.suite import SuiteError


def test_wilcoxon_p_value_matches_the_exact_hand_count():
    # Six paired differences, all positive, distinct magnitudes: the signed-rank statistic is at its
    # extreme; of the 2^6 = 64 equally likely sign patterns exactly 2 are as extreme (all + or all -),
    # so the exact two-sided p-value is 2/64.
    a = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    b = a - np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    assert leaderboard.paired_p_value(a, b) == pytest.approx(2 / 64)


def test_identical_aps_are_never_significant():
    a = np.linspace(0, 1, 50)
    assert leaderboard.paired_p_value(a, a.copy()) == 1.0


def _results():
    rows = []
    for method, base in (("A", 0.70), ("B", 0.60), ("C", 0.699)):
        for seed in (0, 1):
            rows.append({"dataset": "d", "method": method, "bits": 16, "seed": seed, "run_id": f"{method}{seed}",
                         "map_i2t": base + 0.01 * seed, "map_t2i": base})
    return pd.DataFrame(rows)


def test_board_marks_best_and_ties_from_per_query_aps():
    rng = np.random.default_rng(0)
    noise = {f"{m}{s}": rng.normal(0, 0.001, 200) for m in "ABC" for s in (0, 1)}
    shared = rng.random(200)

    def per_query(run_id):
        offset = {"A": 0.10, "B": 0.0, "C": 0.10}[run_id[0]]  # C is A up to tiny noise; B is far below
        return {"map_i2t": shared + offset + noise[run_id], "map_t2i": shared + offset + noise[run_id]}

    results = _results()
    board = leaderboard.build_board(leaderboard.aggregate(results), "d", ["A", "B", "C"], [16], results, per_query)
    a, b, c = (board.rows[m][0] for m in "ABC")  # column I→T 16
    assert a.best and not b.best and not c.best
    assert a.mean == pytest.approx(0.705) and a.std == pytest.approx(np.std([0.70, 0.71], ddof=1))
    assert b.p_value < 1e-6 and not b.tie_with_best
    assert c.p_value > 0.05 and c.tie_with_best and c.text().endswith("≈")


def test_ablation_deltas_read_each_variant_against_the_reference():
    # Variant B is A shifted down by 0.1 on every query of both seeds, so the signed-rank test sees
    # 2 x 6 identical-sign differences; scipy's exact two-sided p for n = 12 all one sign is
    # 2 / 2^12. C equals A exactly: delta 0, p 1.0. Means come from _results (hand: 0.60 - 0.705).
    base = np.linspace(0.2, 0.8, 6)

    def per_query(run_id):
        seed = int(run_id[1])  # B's 12 differences have distinct sizes (no ties: the exact test applies)
        shift = {"A": 0.0, "B": -0.1 - 0.001 * np.arange(6) - 0.0005 * seed, "C": 0.0}[run_id[0]]
        return {"map_i2t": base + shift, "map_t2i": base + shift}

    results = _results()
    board = leaderboard.build_board(leaderboard.aggregate(results), "d", ["A", "B", "C"], [16], results, per_query)
    deltas = leaderboard.deltas_against(board, "A", results, per_query)
    assert list(deltas) == ["B", "C"]
    (b_i2t, b_t2i), (c_i2t, c_t2i) = deltas["B"], deltas["C"]
    assert b_i2t[0] == pytest.approx(0.605 - 0.705) and b_t2i[0] == pytest.approx(0.60 - 0.70)
    assert b_i2t[1] == pytest.approx(2 / 2 ** 12, rel=1e-6)
    # seed noise: the larger seed std of the two (I->T: both 0.70/0.71-like pairs, std of [x, x + 0.01])
    assert b_i2t[2] == pytest.approx(np.std([0.60, 0.61], ddof=1)) and b_t2i[2] == pytest.approx(0.0)
    assert c_i2t == (pytest.approx(0.699 + 0.005 - 0.705), 1.0, pytest.approx(np.std([0.70, 0.71], ddof=1)))
    with pytest.raises(SuiteError, match="no method labelled 'Z' on the d board; rows: A, B, C"):
        leaderboard.deltas_against(board, "Z", results, per_query)


def test_missing_cells_show_a_dash():
    results = _results()
    results = results[results.method != "B"]
    board = leaderboard.build_board(leaderboard.aggregate(results), "d", ["A", "B"], [16])
    assert math.isnan(board.rows["B"][0].mean) and board.rows["B"][0].text() == "—"
    assert not board.rows["A"][0].best  # nothing to be better than
    # B finished at 16 bits only (CCA-ITQ past its rank at 64): its 64-bit cells are dashes
    wide = pd.concat([_results(), _results().assign(bits=64).query("method != 'B'")])
    board = leaderboard.build_board(leaderboard.aggregate(wide), "d", ["A", "B", "C"], [16, 64])
    assert [e.text() for e in board.rows["B"]][1::2] == ["—", "—"] and not math.isnan(board.rows["B"][0].mean)


def test_reference_file_errors(tmp_path):
    bad = tmp_path / "r.toml"
    bad.write_text('[[reference]]\ndataset = "x"\nmethod = "M"\nsource = "s"\nvalues = { i2t16 = 0.5 }\n')
    with pytest.raises(SuiteError, match=r"value key 'i2t16'; expected i2t_<bits> or t2i_<bits>"):
        leaderboard.load_references(bad)
    bad.write_text('[[reference]]\ndataset = "x"\nmethod = "M"\n')
    with pytest.raises(SuiteError, match=r"lacks \['source', 'values'\]"):
        leaderboard.load_references(bad)


def test_shipped_references_load():
    from runners.compare import DEFAULT_REFERENCES

    refs = leaderboard.load_references(DEFAULT_REFERENCES)
    dcmh = next(r for r in refs if r["method"] == "DCMH" and r["dataset"] == "mirflickr25k")
    assert dcmh["values"]["i2t_16"] == 0.7410 and dcmh["values"]["t2i_64"] == 0.7932  # METHODS.md / paper


def test_markdown_renders_bold_and_a_plain_legend_in_a_commonmark_parser():
    from markdown_it import MarkdownIt

    results = _results()
    board = leaderboard.build_board(leaderboard.aggregate(results), "d", ["A", "B", "C"], [16],
                                    references=[{"dataset": "d", "method": "Paper_X", "source": "s", "values": {"i2t_16": 0.8}}])
    html = MarkdownIt("commonmark").enable("table").render(leaderboard.markdown_table(board, [0, 1]))
    best = board.rows["A"][0]
    assert f'<td style="text-align:right"><strong>{best.body()}</strong> *</td>' in html  # bold renders, mark outside it
    assert "<li>" not in html and "<p>Marks: * best in column (also bold)" in html  # the legend is a paragraph
    assert "<em>Paper_X (published)</em>" in html  # the underscore in the label does not end the italics
    assert "**" not in html  # no bold left unrendered


def test_the_proposed_method_against_the_runner_up_on_average_over_the_columns():
    # Two bit lengths x two directions = 4 columns, 2 seeds. Column means (hand): I→T base + 0.005,
    # T→I 16 base - 0.005, T→I 32 base + 0.015, so each method averages base + 0.005 and A leads B
    # (the runner-up on average; C is lower) by exactly 0.05. Per query, B is A minus twice a shift in
    # I→T only (even queries) or T→I only (odd ones): averaged over the columns the 2 x 6 paired
    # differences are the shifts, distinct and all positive, so the exact two-sided signed-rank p is
    # 2 / 2^12 (one direction alone would leave 6 zero differences out: 2 / 2^6).
    rows = []
    for method, base in (("A", 0.70), ("B", 0.65), ("C", 0.60), ("D", 0.99)):
        for bits in (16, 32):
            for seed in (0, 1):
                if method == "D" and bits == 32:
                    continue  # D lacks a column: never the runner-up, however high
                rows.append({"dataset": "d", "method": method, "bits": bits, "seed": seed, "run_id": f"{method}{seed}-{bits}",
                             "map_i2t": base + 0.01 * seed, "map_t2i": base - 0.01 * seed + (0.02 if bits == 32 else 0)})
    results = pd.DataFrame(rows)
    base_q = np.linspace(0.3, 0.9, 6)

    def per_query(run_id):
        seed = int(run_id[1])
        shift = {"A": 0.0, "B": 0.1 + 0.001 * np.arange(6) + 0.0005 * seed, "C": 0.2, "D": 0.0}[run_id[0]]
        even = np.arange(6) % 2 == 0
        if run_id[0] == "B":
            return {"map_i2t": base_q - 2 * shift * even, "map_t2i": base_q - 2 * shift * ~even}
        return {"map_i2t": base_q - shift, "map_t2i": base_q - shift}

    board = leaderboard.build_board(leaderboard.aggregate(results), "d", ["A", "B", "C", "D"], [16, 32], results, per_query)
    average = leaderboard.average_against_runner_up(board, "A", results, per_query)
    assert (average.runner_up, average.units) == ("B", 12)
    assert average.margin == pytest.approx(0.05) and average.p_value == pytest.approx(2 / 2 ** 12, rel=1e-6)
    from benchmarks.tables import proposed_statement

    statement = proposed_statement(board, "A", average)
    assert "On average over the columns: +0.0500 against the runner-up on average, B, p = 0.000488" in statement
    assert statement.endswith("A is best on average, significantly.")
    behind = leaderboard.average_against_runner_up(board, "C", results, per_query)
    assert (behind.runner_up, behind.margin) == ("A", pytest.approx(-0.10))
    assert proposed_statement(board, "C", behind).endswith("C is not best on average.")
    assert leaderboard.average_against_runner_up(board, "D", results, per_query) is None  # D lacks a column
