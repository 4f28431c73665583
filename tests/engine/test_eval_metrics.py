"""pass@k and the summary cells of engine.eval against hand-computed values."""

from __future__ import annotations

import dataclasses
import math

import pytest

from engine.evaluation.metrics import (
    Item,
    format_errors,
    format_markdown,
    format_rules,
    format_table,
    pass_at_k,
    summarize,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 2 / 5),  # pass@1 is the share of correct samples
        (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (4, 0, 2, 0.0),
        (3, 2, 2, 1.0),  # fewer wrong samples than k: every k-subset holds a correct one
        (1, 1, 1, 1.0),
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 1 - 100/200
    ],
)
def test_pass_at_k_matches_the_binomial_formula(n, c, k, expected):
    assert pass_at_k(n=n, c=c, k=k) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    if n - c >= k:
        assert pass_at_k(n=n, c=c, k=k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 4), (3, 1, 0), (0, 0, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n=n, c=c, k=k)


def item(problem: str, sample: int, status: str, *, solver: str = "gurobipy", benchmark: str = "b") -> Item:
    return Item(
        benchmark=benchmark,
        id=problem,
        solver=solver,
        sample=sample,
        status=status,
        objective=None,
        answer=1.0,
        correct=status == "correct",
        reward=1.0 if status == "correct" else 0.0,
        reason="",
        completion="",
    )


def test_summary_cells_hold_pass_at_1_pass_at_k_exec_rate_and_the_status_mix():
    items = [
        item("a", 0, "correct"), item("a", 1, "correct"), item("a", 2, "wrong"),
        item("b", 0, "error"), item("b", 1, "no_code"), item("b", 2, "wrong"),
        item("a", 0, "timeout", solver="ortools"), item("a", 1, "correct", solver="ortools"),
    ]  # fmt: skip
    gurobi, ortools = summarize(items, k=2)
    assert (gurobi.problems, gurobi.samples, gurobi.k) == (2, 6, 2)
    assert gurobi.pass_at_1 == pytest.approx((2 / 3 + 0) / 2)
    assert gurobi.pass_at_k == pytest.approx((1.0 + 0.0) / 2)  # a: 1 wrong < k=2 -> 1; b: none correct -> 0
    assert gurobi.exec_rate == pytest.approx(4 / 6)  # correct, correct, wrong, wrong ran cleanly
    assert gurobi.statuses == {"correct": 2, "wrong": 2, "error": 1, "no_code": 1}
    assert (ortools.pass_at_1, ortools.pass_at_k, ortools.exec_rate) == (0.5, 1.0, 0.5)


def test_uneven_sample_counts_lower_k_to_the_smallest():
    (cell,) = summarize([item("a", 0, "correct"), item("a", 1, "wrong"), item("b", 0, "wrong")], k=4)
    assert cell.k == 1 and cell.pass_at_k == cell.pass_at_1 == pytest.approx(0.25)


def test_tables_put_benchmarks_in_rows_and_solvers_in_columns():
    items = [
        item("a", 0, "correct", benchmark="nl4opt"),
        item("a", 0, "wrong", benchmark="mamo"),
        item("a", 0, "correct", benchmark="mamo", solver="ortools"),
    ]
    cells = summarize(items, k=1)
    lines = format_table(cells).splitlines()
    assert lines[0].split() == ["benchmark", "gurobipy", "ortools"]
    assert lines[2].split() == ["nl4opt", "100.0", "/", "100.0", "-"]
    assert lines[3].split() == ["mamo", "0.0", "/", "100.0", "100.0", "/", "100.0"]
    markdown = format_markdown(cells, title="t")
    assert "| benchmark | gurobipy | ortools |" in markdown and "| nl4opt | 100.0 / 100.0 | - |" in markdown


def test_with_k_1_each_score_is_printed_once():
    """One sample per problem: pass@k is pass@1, so cells and legends hold pass@1 / exec, not pass@1 twice."""
    items = [item("a", 0, "correct"), item("b", 0, "wrong"), item("c", 0, "error")]
    cells = summarize(items, k=1)
    table = format_table(cells)
    assert table.splitlines()[2].split() == ["b", "33.3", "/", "66.7"]
    assert "cells: pass@1 / execution rate, in %" in table and "pass@1 / pass@1" not in table
    markdown = format_markdown(cells, title="t")
    assert "pass@1 / execution rate (%)" in markdown and "| b | 33.3 / 66.7 |" in markdown
    assert "pass@1 / pass@1" not in markdown


def test_with_k_above_1_cells_hold_pass_at_1_pass_at_k_and_exec():
    items = [item("a", 0, "correct"), item("a", 1, "wrong"), item("b", 0, "wrong"), item("b", 1, "error")]
    table = format_table(summarize(items, k=2))
    assert table.splitlines()[2].split() == ["b", "25.0", "/", "50.0", "/", "75.0"]
    assert "cells: pass@1 / pass@2 / execution rate, in %" in table


def judged(problem: str, sample: int, kind: str | None, by_rule: dict[str, bool], *, benchmark: str = "b") -> Item:
    correct = next(iter(by_rule.values()))  # the first rule is the primary one
    return dataclasses.replace(
        item(problem, sample, "correct" if correct else "wrong", benchmark=benchmark),
        error_kind=kind,
        correct_by_rule=by_rule,
    )


def test_pass_at_1_under_each_rule_and_the_failure_kinds():
    def rules(relative: bool, evom: bool) -> dict[str, bool]:
        return {"relative:1e-06": relative, "evom:0.05": evom}

    items = [
        judged("a", 0, None, rules(True, True)),
        judged("a", 1, "wrong_objective", rules(False, True)),
        judged("b", 0, "syntax", rules(False, False)),
        judged("b", 1, "wrong_objective", rules(False, True)),
        judged("c", 0, "infrastructure", rules(False, False), benchmark="other"),
    ]
    cell, other = summarize(items, k=1)
    assert cell.pass_at_1 == pytest.approx((1 / 2 + 0) / 2)
    assert cell.pass_at_1_by_rule == {"relative:1e-06": pytest.approx(0.25), "evom:0.05": pytest.approx(0.75)}
    assert cell.error_kinds == {"wrong_objective": 2, "syntax": 1}, "correct samples have no kind"
    assert cell.row()["pass@1_by_rule"] == cell.pass_at_1_by_rule and cell.row()["pass@1"] == cell.pass_at_1
    assert format_rules([cell, other]).splitlines() == [
        "pass@1 by answer rule, in %",
        "benchmark  solver    relative:1e-06  evom:0.05",
        "---------  --------  --------------  ---------",
        "b          gurobipy  25.0            75.0",
        "other      gurobipy  0.0             0.0",
    ]
    assert format_errors([cell, other]).splitlines() == [
        "failures by kind, in samples",
        "benchmark  solver    syntax  wrong_objective  infrastructure",  # in the order a program meets them
        "---------  --------  ------  ---------------  --------------",
        "b          gurobipy  1       2                0",
        "other      gurobipy  0       0                1",
    ]
    markdown = format_markdown([cell, other], title="t")
    assert "| b | gurobipy | 25.0 | 75.0 |" in markdown and "| other | gurobipy | 0 | 0 | 1 |" in markdown


def test_items_without_rules_or_failures_print_one_line_each():
    cells = summarize([item("a", 0, "correct")], k=1)
    assert format_rules(cells) == "pass@1 by answer rule: no rules scored"
    assert format_errors(cells) == "failures by kind: none"
