"""The verifier the rollout scores completions with: a completion's text in, an outcome with a reward out.

    verifier = SolverVerifier(pool, "gurobipy", reward=RewardConfig(), extract=ExtractConfig())
    outcome = await verifier.verify(problem, completion_text)     # solvers.Outcome
    outcome.status, outcome.reward, outcome.correct, outcome.reason

Anything with an async `verify(problem, text)` returning an `OutcomeLike` fits the rollout (a scripted one in
tests, a reward model, a mix of solvers). An outcome whose status is in `INFRA_STATUSES` says the
infrastructure failed, not the program: the rollout excludes it from training and never scores it.
"""

from __future__ import annotations

from typing import Protocol

from sandbox import Limits
from solvers import ExtractConfig, Outcome, RewardConfig, Solver, verify
from solvers.verify import Runner

INFRA_STATUSES = frozenset({"sandbox_error"})


class ProblemLike(Protocol):
    """What the rollout and the verifier read of a problem (`engine.data.Problem` fits)."""

    @property
    def id(self) -> str: ...
    @property
    def question(self) -> str: ...
    @property
    def answer(self) -> float | None: ...


class OutcomeLike(Protocol):
    """What the rollout reads of a verification (`solvers.Outcome` fits). `reason` says why, for the records."""

    @property
    def status(self) -> str: ...
    @property
    def reward(self) -> float: ...
    @property
    def correct(self) -> bool: ...
    @property
    def objective(self) -> float | None: ...
    @property
    def reason(self) -> str: ...


class Verifier(Protocol):
    async def verify(self, problem: ProblemLike, text: str) -> OutcomeLike: ...


class SolverVerifier:
    """The execution verifier: `solvers.verify` of the completion text in a sandbox pool (or any `Runner`)."""

    def __init__(
        self,
        pool: Runner,
        solver: Solver | str,
        *,
        reward: RewardConfig | None = None,
        limits: Limits | None = None,
        extract: ExtractConfig | None = None,
    ) -> None:
        self.pool, self.solver = pool, solver
        self.reward, self.limits, self.extract = reward, limits, extract

    async def verify(self, problem: ProblemLike, text: str) -> Outcome:
        return await verify(
            self.pool, text, self.solver, problem.answer, reward=self.reward, limits=self.limits, extract=self.extract
        )
