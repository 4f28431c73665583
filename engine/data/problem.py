"""`Problem`: one optimization word problem with its ground-truth optimum, from a benchmark or the generator.

`answer` is the optimal objective value, or None when the problem has no optimum (infeasible or unbounded);
a correct program must then report that. `to_row()` writes the benchmark JSONL schema of
`shared/data/benchmarks/PROVENANCE.md`, so generated files load with the same reader as the public sets.

`solver` names the solver API the problem is to be modelled in (a row's `solver` column, a name of
`python -m solvers list`); None means the run's `solver.name`. A run verifies each problem with its own solver
and prompts with that solver's instructions, so one run may mix solvers (engine.train).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

# From easiest to hardest. `intro` (one or two variables, one or two constraints, small whole-number data) is
# the tier a very small model can solve some of the time; only some families have it (`Family.difficulties`).
Difficulty = Literal["intro", "easy", "medium", "hard"]
DIFFICULTIES: tuple[Difficulty, ...] = ("intro", "easy", "medium", "hard")


@dataclass(frozen=True, kw_only=True)
class Problem:
    id: str
    question: str
    answer: float | None  # None: no optimum (infeasible or unbounded)
    source: str = ""  # file path, "hf:<name>", or "generated"
    benchmark: str = ""  # NL4OPT, MAMO_EasyLP, ..., or "generated"
    family: str | None = None  # generated problems: production, diet, ...
    difficulty: str | None = None
    solver: str | None = None  # the solver this problem is modelled in; None: the run's solver.name
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def has_optimum(self) -> bool:
        return self.answer is not None

    def to_row(self) -> dict[str, Any]:
        """The JSONL row: the benchmark schema plus family and difficulty (and `solver` when the problem names one)."""
        row: dict[str, Any] = {
            "id": self.id,
            "benchmark": self.benchmark,
            "question": self.question,
            "answer": self.answer,
            "answer_raw": json.dumps(self.answer) if self.answer is not None else "no optimum",
            "family": self.family,
            "difficulty": self.difficulty,
            "meta": self.meta,
        }
        if self.solver is not None:
            row["solver"] = self.solver
        return row

    def to_json(self) -> str:
        return json.dumps(self.to_row(), ensure_ascii=False)
