"""What the rollout consumes besides the policy: problems in training order, each round's sampling seeds, and
the verifier that scores a completion.

Split out of `engine.rollout`, which re-exports every public name here (import them from either).

    stream = ProblemStream(problems, seed=0)             # engine.data's order: a fresh permutation per epoch
    epoch, problem = stream.next()
    params = round_sampling(SamplingParams(seed=0), 3)   # the seeds of the rollout's 4th generation round
    outcome = await SolverVerifier(pool, "gurobipy").verify(problem, completion_text)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from engine.data import epoch_order
from engine.generation import SamplingParams
from solvers import ExtractConfig, RewardConfig, Solver, verify
from solvers.verify import Runner

# Verifier statuses that say the infrastructure failed, not the program: excluded, never scored.
INFRA_STATUSES = frozenset({"sandbox_error"})


class ProblemLike(Protocol):
    """What the rollout reads of a problem (`engine.data.problem.Problem` fits)."""

    @property
    def id(self) -> str: ...
    @property
    def question(self) -> str: ...
    @property
    def answer(self) -> float | None: ...


class OutcomeLike(Protocol):
    """What the rollout reads of a verification (`solvers.Outcome` fits)."""

    @property
    def status(self) -> str: ...
    @property
    def reward(self) -> float: ...
    @property
    def correct(self) -> bool: ...
    @property
    def objective(self) -> float | None: ...


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
        limits: Any = None,
        extract: ExtractConfig | None = None,
    ) -> None:
        self.pool, self.solver = pool, solver
        self.reward, self.limits, self.extract = reward, limits, extract

    async def verify(self, problem: ProblemLike, text: str) -> OutcomeLike:
        return await verify(
            self.pool, text, self.solver, problem.answer, reward=self.reward, limits=self.limits, extract=self.extract
        )


class ProblemStream:
    """Problems one at a time in `engine.data`'s training order: a fresh permutation per (seed, epoch).

    One at a time because dynamic sampling takes as many problems as it needs; `state` resumes a run.
    """

    def __init__(self, problems: Sequence[ProblemLike], *, seed: int, epoch: int = 0, position: int = 0) -> None:
        if not problems:
            raise ValueError("the rollout needs at least one problem; check data.train")
        self.problems, self.seed = problems, seed
        self.epoch, self.position = epoch, position
        self._order = epoch_order(len(problems), seed=seed, epoch=epoch)

    def __len__(self) -> int:
        return len(self.problems)

    @property
    def state(self) -> tuple[int, int]:
        return self.epoch, self.position

    def next(self) -> tuple[int, ProblemLike]:
        if self.position >= len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = epoch_order(len(self.problems), seed=self.seed, epoch=self.epoch)
        epoch, problem = self.epoch, self.problems[self._order[self.position]]
        self.position += 1
        return epoch, problem


def round_sampling(params: SamplingParams, round_index: int) -> SamplingParams:
    """The sampling parameters of the rollout's `round_index`-th generation round: a seeded run draws fresh
    samples each round (the local backend seeds each sample from (seed, prompt position, sample index))."""
    if params.seed is None:
        return params
    return replace(params, seed=(params.seed * 1_000_003 + round_index) % (1 << 62))
