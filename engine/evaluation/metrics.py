"""Scores of an evaluation: per-sample items, the pass@k estimator, and the benchmark x solver summary table.

    pass_at_k(n=10, c=3, k=1)                      # 0.3 (unbiased estimator of Chen et al. 2021)
    cells = summarize(items, k=4)                  # one Cell per (benchmark, solver)
    print(format_table(cells))                     # rows benchmark, columns solver: pass@1 / pass@k / exec
                                                   # (pass@1 / exec when k = 1: each score once)
    print(format_rules(cells))                     # pass@1 under each answer rule, side by side
    print(format_errors(cells))                    # samples per failure kind (solvers.failures)

Execution rate is the share of samples whose program ran to a clean exit and got a verdict from the solver
(statuses in `EXECUTED`): a wrong objective still counts as executed, a crash, a timeout or missing code does not.
Every item is also judged under several answer rules at once (`Item.correct_by_rule`, keys from
`solvers.reward.rule_key`, e.g. "evom:0.05"); a cell's `pass@1` is under the primary rule, `pass@1_by_rule` under each.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from solvers.failures import ERROR_KINDS

# Outcome statuses reached only when the program exited cleanly and the harness read its last solve.
EXECUTED = frozenset({"correct", "wrong", "infeasible", "unbounded", "no_solve"})
# Statuses of samples that never reached the verifier (added to the solvers' Outcome statuses).
PROMPT_TOO_LONG = "prompt_too_long"
GENERATION_ERROR = "generation_error"
# Columns of the failure table and the report's plot: the verifier's kinds, then a sample that got no prompt.
ERROR_KIND_ORDER = (*ERROR_KINDS, PROMPT_TOO_LONG)


def pass_at_k(*, n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c of them correct: 1 - C(n-c, k) / C(n, k).

    Chen et al. 2021, "Evaluating Large Language Models Trained on Code" (arXiv 2107.03374), eq. 1, in the
    product form 1 - prod_{i=n-c+1..n} (1 - k/i), which stays exact where the binomials overflow.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


@dataclass(frozen=True, kw_only=True)
class Item:
    """One scored sample: a row of items.jsonl."""

    benchmark: str
    id: str
    solver: str
    sample: int
    status: str
    objective: float | None
    answer: float | None
    correct: bool
    reward: float
    reason: str
    completion: str
    finish_reason: str | None = None
    error_kind: str | None = None  # solvers.failures' kind; "infrastructure" / "prompt_too_long" for unscored samples
    correct_by_rule: dict[str, bool] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "id": self.id,
            "solver": self.solver,
            "sample": self.sample,
            "status": self.status,
            "error_kind": self.error_kind,
            "objective": self.objective,
            "answer": self.answer,
            "correct": self.correct,
            "correct_by_rule": self.correct_by_rule,
            "reward": self.reward,
            "reason": self.reason,
            "finish_reason": self.finish_reason,
            "completion": self.completion,
        }


@dataclass(frozen=True, kw_only=True)
class Cell:
    """The scores of one (benchmark, solver) pair."""

    benchmark: str
    solver: str
    problems: int
    samples: int
    k: int
    pass_at_1: float
    pass_at_k: float
    exec_rate: float
    reward_mean: float
    statuses: dict[str, int] = field(default_factory=dict)
    pass_at_1_by_rule: dict[str, float] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)  # samples per failure kind, most frequent first

    def row(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "solver": self.solver,
            "problems": self.problems,
            "samples": self.samples,
            "k": self.k,
            "pass@1": self.pass_at_1,
            f"pass@{self.k}": self.pass_at_k,
            "exec_rate": self.exec_rate,
            "reward_mean": self.reward_mean,
            "statuses": self.statuses,
            "pass@1_by_rule": self.pass_at_1_by_rule,
            "error_kinds": self.error_kinds,
        }


def summarize(items: Iterable[Item], *, k: int) -> list[Cell]:
    """One Cell per (benchmark, solver), in first-seen order. pass@k uses min(k, samples of the problem with
    the fewest), so a completions file with uneven sample counts still gets one estimator per cell."""
    groups: dict[tuple[str, str], dict[str, list[Item]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        groups[(item.benchmark, item.solver)][item.id].append(item)
    return [_cell(benchmark, solver, by_problem, k=k) for (benchmark, solver), by_problem in groups.items()]


def _cell(benchmark: str, solver: str, by_problem: dict[str, list[Item]], *, k: int) -> Cell:
    samples = [item for group in by_problem.values() for item in group]
    cell_k = min(k, min(len(group) for group in by_problem.values()))
    counts = [(len(group), sum(item.correct for item in group)) for group in by_problem.values()]
    problems = len(by_problem)
    rules = list(dict.fromkeys(rule for item in samples for rule in item.correct_by_rule))
    by_rule = {
        rule: sum(
            sum(item.correct_by_rule.get(rule, False) for item in group) / len(group) for group in by_problem.values()
        )
        / problems
        for rule in rules
    }
    return Cell(
        benchmark=benchmark,
        solver=solver,
        problems=problems,
        samples=len(samples),
        k=cell_k,
        pass_at_1=sum(c / n for n, c in counts) / problems,
        pass_at_k=sum(pass_at_k(n=n, c=c, k=cell_k) for n, c in counts) / problems,
        exec_rate=sum(item.status in EXECUTED for item in samples) / len(samples),
        reward_mean=sum(item.reward for item in samples) / len(samples),
        statuses=dict(Counter(item.status for item in samples).most_common()),
        pass_at_1_by_rule=by_rule,
        error_kinds=dict(Counter(item.error_kind for item in samples if item.error_kind is not None).most_common()),
    )


def _cell_text(cell: Cell | None, *, with_k: bool) -> str:
    if cell is None:
        return "-"
    scores = (cell.pass_at_1, cell.pass_at_k, cell.exec_rate) if with_k else (cell.pass_at_1, cell.exec_rate)
    return " / ".join(f"{100 * score:.1f}" for score in scores)


def _grid(cells: Sequence[Cell]) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    benchmarks = list(dict.fromkeys(c.benchmark for c in cells))
    solvers = list(dict.fromkeys(c.solver for c in cells))
    return benchmarks, solvers, {(c.benchmark, c.solver): c for c in cells}


def _columns(cells: Sequence[Cell]) -> tuple[str, bool]:
    """The legend of a cell and whether it holds a pass@k column: with k = 1 everywhere pass@k is pass@1,
    so each score is printed once."""
    ks = {c.k for c in cells}
    if ks <= {1}:
        return "pass@1 / execution rate", False
    label = f"pass@{ks.pop()}" if len(ks) == 1 else "pass@k"
    return f"pass@1 / {label} / execution rate", True


def format_table(cells: Sequence[Cell]) -> str:
    """The paper-style table in plain text: rows benchmark, columns solver, cells pass@1 / pass@k / exec (%)
    (pass@1 / exec when k = 1)."""
    benchmarks, solvers, by_key = _grid(cells)
    legend, with_k = _columns(cells)
    header = ["benchmark", *solvers]
    rows = [[b, *(_cell_text(by_key.get((b, s)), with_k=with_k) for s in solvers)] for b in benchmarks]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"cells: {legend}, in %")
    for c in cells:
        mix = ", ".join(f"{status} {count}" for status, count in c.statuses.items())
        lines.append(f"{c.benchmark} x {c.solver}: {c.problems} problems, {c.samples} samples; {mix}")
    return "\n".join(lines)


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _by_cell(cells: Sequence[Cell], columns: Sequence[str], value: Callable[[Cell, str], str]) -> list[list[str]]:
    return [["benchmark", "solver", *columns]] + [
        [c.benchmark, c.solver, *(value(c, k) for k in columns)] for c in cells
    ]


def _rule_rows(cells: Sequence[Cell]) -> list[list[str]]:
    rules = list(dict.fromkeys(rule for c in cells for rule in c.pass_at_1_by_rule))
    return _by_cell(
        cells, rules, lambda c, r: f"{100 * c.pass_at_1_by_rule[r]:.1f}" if r in c.pass_at_1_by_rule else "-"
    )


def _error_rows(cells: Sequence[Cell]) -> list[list[str]]:
    kinds = [k for k in ERROR_KIND_ORDER if any(k in c.error_kinds for c in cells)]
    kinds += sorted({k for c in cells for k in c.error_kinds} - set(kinds))
    return _by_cell(cells, kinds, lambda c, k: str(c.error_kinds.get(k, 0)))


def format_rules(cells: Sequence[Cell]) -> str:
    """pass@1 (%) of every cell under each answer rule, side by side (rows benchmark x solver, columns rules)."""
    rows = _rule_rows(cells)
    if len(rows[0]) == 2:
        return "pass@1 by answer rule: no rules scored"
    return "\n".join(["pass@1 by answer rule, in %", *_aligned(rows)])


def format_errors(cells: Sequence[Cell]) -> str:
    """Samples of every cell per failure kind (rows benchmark x solver, columns kinds; correct samples have none)."""
    rows = _error_rows(cells)
    if len(rows[0]) == 2:
        return "failures by kind: none"
    return "\n".join(["failures by kind, in samples", *_aligned(rows)])


def _markdown_table(rows: Sequence[Sequence[str]]) -> list[str]:
    head, *body = rows
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in body)]


def format_markdown(cells: Sequence[Cell], *, title: str, notes: Sequence[str] = ()) -> str:
    """The same table as markdown, with the status mix per cell below it."""
    benchmarks, solvers, by_key = _grid(cells)
    legend, with_k = _columns(cells)
    lines = [f"# {title}", "", *notes, ""]
    lines += [f"{legend} (%)", ""]
    lines.append("| benchmark | " + " | ".join(solvers) + " |")
    lines.append("|---|" + "---|" * len(solvers))
    lines += [
        f"| {b} | " + " | ".join(_cell_text(by_key.get((b, s)), with_k=with_k) for s in solvers) + " |"
        for b in benchmarks
    ]
    lines += ["", "| benchmark | solver | problems | samples | status mix |", "|---|---|---|---|---|"]
    for c in cells:
        mix = ", ".join(f"{status} {count}" for status, count in c.statuses.items())
        lines.append(f"| {c.benchmark} | {c.solver} | {c.problems} | {c.samples} | {mix} |")
    rules, errors = _rule_rows(cells), _error_rows(cells)
    if len(rules[0]) > 2:
        lines += ["", "pass@1 by answer rule (%)", "", *_markdown_table(rules)]
    if len(errors[0]) > 2:
        lines += ["", "failures by kind (samples)", "", *_markdown_table(errors)]
    return "\n".join(lines) + "\n"
