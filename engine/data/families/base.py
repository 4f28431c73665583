"""The family protocol: a family turns a random stream and a difficulty level into one `Instance`.

An instance is the question text, the linear model that states it (solved by the generator to get the
ground truth), and the raw data (stored in the problem's meta so a reader can re-model it independently).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.data.lp import LinearModel

# Difficulty levels as indices: 0 easy, 1 medium, 2 hard.
LEVELS = {"easy": 0, "medium": 1, "hard": 2}


@dataclass(frozen=True, kw_only=True)
class Instance:
    question: str
    model: LinearModel = field(hash=False)
    data: dict[str, Any] = field(hash=False)
    template: str


class Family(Protocol):
    name: str
    summary: str

    def build(self, rng: random.Random, level: int, *, infeasible: bool) -> Instance:
        """One instance; with `infeasible` the stated constraints must admit no solution."""
        ...


@dataclass(frozen=True, kw_only=True)
class FunctionFamily:
    """A family given by one build function (every built-in family is one)."""

    name: str
    summary: str
    builder: Callable[[random.Random, int, bool], Instance]

    def build(self, rng: random.Random, level: int, *, infeasible: bool) -> Instance:
        return self.builder(rng, level, infeasible)


def integer_share(level: int) -> float:
    """Probability that a family with a free choice uses whole-number decisions: grows with difficulty."""
    return (0.3, 0.6, 1.0)[level]
