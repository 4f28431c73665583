"""The family protocol: a family turns a random stream and a difficulty level into one `Instance`.

An instance is the question text, the linear model that states it (solved by the generator to get the
ground truth), and the raw data (stored in the problem's meta so a reader can re-model it independently).

Levels are indices, 0 easy, 1 medium, 2 hard, plus `INTRO` (-1) below easy. A family lists the
difficulties it has in `difficulties`; the generator asks a family only for those. `FunctionFamily` hands
intro to a separate builder, so a level-indexed tuple such as `(2, 3, 4)[level]` never sees -1.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.data.lp import LinearModel, Var, solve

INTRO = -1
LEVELS = {"intro": INTRO, "easy": 0, "medium": 1, "hard": 2}
LEVELED = ("easy", "medium", "hard")  # the difficulties every family has
INTRO_ATTEMPTS = 200


@dataclass(frozen=True, kw_only=True)
class Instance:
    question: str
    model: LinearModel = field(hash=False)
    data: dict[str, Any] = field(hash=False)
    template: str


class Family(Protocol):
    name: str
    summary: str

    @property
    def difficulties(self) -> tuple[str, ...]:
        """The difficulties this family can build, from easiest to hardest."""
        ...

    def build(self, rng: random.Random, level: int, *, infeasible: bool) -> Instance:
        """One instance; with `infeasible` the stated constraints must admit no solution."""
        ...


@dataclass(frozen=True, kw_only=True)
class FunctionFamily:
    """A family given by one build function (every built-in family is one)."""

    name: str
    summary: str
    builder: Callable[[random.Random, int, bool], Instance]  # levels 0-2
    intro: Callable[[random.Random, bool], Instance] | None = None  # the intro level, if the family has it

    @property
    def difficulties(self) -> tuple[str, ...]:
        return LEVELED if self.intro is None else ("intro", *LEVELED)

    def build(self, rng: random.Random, level: int, *, infeasible: bool) -> Instance:
        if level != INTRO:
            return self.builder(rng, level, infeasible)
        if self.intro is None:
            raise ValueError(f"family {self.name!r} has no intro level; it has {list(self.difficulties)}")
        return self.intro(rng, infeasible)


def integer_share(level: int) -> float:
    """Probability that a family with a free choice uses whole-number decisions: grows with difficulty."""
    return (0.3, 0.6, 1.0)[level]


def whole_at_intro(rng: random.Random, draw: Callable[[random.Random], Instance]) -> Instance:
    """The first drawn instance whose answer does not hinge on whole-number decisions.

    At intro, a family that calls this keeps a whole-unit problem only when its LP relaxation has a
    whole-number optimal vertex (or no optimum at all), so a program that states the data right but
    leaves out the integrality declaration still gets the answer: such a family's intro teaches stating
    the model, and integrality matters from `easy` on. Redraws continue the same stream, so the result
    stays a pure function of the seed.
    """
    for _ in range(INTRO_ATTEMPTS):
        instance = draw(rng)
        if not instance.model.is_integer:
            return instance
        relaxed = solve(_relaxed(instance.model))
        # No LP optimum: no whole one either. A whole LP optimum is the whole-number optimum.
        if relaxed.status != "optimal" or all(v == round(v) for v in relaxed.values.values()):
            return instance
    raise RuntimeError(f"no intro instance with a whole-number LP optimum in {INTRO_ATTEMPTS} draws (a family bug)")


def _relaxed(model: LinearModel) -> LinearModel:
    variables = {n: Var(name=n, lb=v.lb, ub=v.ub, integer=False) for n, v in model.variables.items()}
    return LinearModel(sense=model.sense, variables=variables, rows=list(model.rows), cost=dict(model.cost))
