"""Scores of an evaluation: per-sample items, the pass@k estimator, and the benchmark x solver summary table.

    pass_at_k(n=10, c=3, k=1)                      # 0.3 (unbiased estimator of Chen et al. 2021)
    cells = summarize(items, k=4)                  # one Cell per (benchmark, solver)
    print(format_table(cells))                     # rows benchmark, columns solver: pass@1 / pass@k / exec
                                                   # (pass@1 / exec when k = 1: each score once)

Execution rate is the share of samples whose program ran to a clean exit and got a verdict from the solver
(statuses in `EXECUTED`): a wrong objective still counts as executed, a crash, a timeout or missing code does not.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Outcome statuses reached only when the program exited cleanly and the harness read its last solve.
EXECUTED = frozenset({"correct", "wrong", "infeasible", "unbounded", "no_solve"})
# Statuses of samples that never reached the verifier (added to the solvers' Outcome statuses).
PROMPT_TOO_LONG = "prompt_too_long"
GENERATION_ERROR = "generation_error"


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

    def row(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "id": self.id,
            "solver": self.solver,
            "sample": self.sample,
            "status": self.status,
            "objective": self.objective,
            "answer": self.answer,
            "correct": self.correct,
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
    return "\n".join(lines) + "\n"
