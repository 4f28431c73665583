"""The verifier the rollout scores completions with: a completion's text in, an outcome with a reward out.

    verifier = SolverVerifier(pool, "gurobipy", reward=RewardConfig(), extract=ExtractConfig())
    outcome = await verifier.verify(problem, completion_text)     # solvers.Outcome
    outcome.status, outcome.reward, outcome.correct, outcome.reason
    verifier.take_step_metrics()    # {"verify/cache_hits": ..., "verify/cache_hit_rate": ..., ...}

Anything with an async `verify(problem, text)` returning an `OutcomeLike` fits the rollout (a scripted one in
tests, a reward model, a mix of solvers). An outcome whose status is in `INFRA_STATUSES` says the
infrastructure failed, not the program: the rollout excludes it from training and never scores it. A verifier
that also has `take_step_metrics()` (`StepMetricsSource`) adds its counters to each step's metrics row.

Problems of several solvers in one run: a problem's `solver` attribute (engine.data.Problem.solver; None or
absent: the verifier's own solver) picks the solver it is verified with, and `pools` gives the sandbox (any
`Runner`) of each further solver. `solver_pools` opens those pools: one per distinct preload set, since a warm
worker has imported its solver's modules and not every solver's modules load side by side in one process.

Execution cache: within a step, programs that are the same after `program_key`'s normalisation, for the same
problem (id and answer), solver and limits, run once; the others get the first run's outcome. Two identical
programs in flight at once await the same execution. The rollout takes the step's counters when it hands a batch
over (`take_step_metrics`), and that also empties the cache, so no outcome outlives its step.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import tokenize
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sandbox import Limits, SandboxPool
from solvers import ExtractConfig, Outcome, RewardConfig, Solver, get_solver, verify, verify_code
from solvers.extract import extract_code, well_formed
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


def problem_solver(problem: object) -> str | None:
    """The solver a problem names (`Problem.solver`), or None: it takes the run's. A problem type without the
    attribute (a test's) names none."""
    solver = getattr(problem, "solver", None)
    return solver if isinstance(solver, str) and solver else None


class OutcomeLike(Protocol):
    """What the rollout reads of a verification (`solvers.Outcome` fits). `reason` says why, for the records;
    `error_kind` the kind of failure (`solvers.failures`; None when correct), counted per step as errors/<kind>."""

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
    @property
    def error_kind(self) -> str | None: ...


class Verifier(Protocol):
    async def verify(self, problem: ProblemLike, text: str) -> OutcomeLike: ...


@runtime_checkable
class StepMetricsSource(Protocol):
    """A verifier (or a generation backend) that counts something per step: the counters since the last call."""

    def take_step_metrics(self) -> dict[str, float | int | None]: ...


def step_metrics(verifier: object) -> dict[str, float | int | None]:
    """The per-step counters of a verifier or a generation backend for the metrics row; {} for one that keeps
    none."""
    return verifier.take_step_metrics() if isinstance(verifier, StepMetricsSource) else {}


class SolverVerifier:
    """The execution verifier: `solvers.verify` of the completion text in a sandbox pool (or any `Runner`),
    through an `ExecutionCache` unless `cache=False`. The steps are `solvers.verify`'s: extract the program
    (no program: the "no_code" outcome, nothing runs), then `solvers.verify_code` on it.

    `solver` and `pool` verify the problems that name no solver (and those that name this one); `pools` maps each
    further solver's name to its sandbox. A problem naming a solver without a sandbox is a ValueError."""

    def __init__(
        self,
        pool: Runner,
        solver: Solver | str,
        *,
        pools: Mapping[str, Runner] | None = None,
        reward: RewardConfig | None = None,
        limits: Limits | None = None,
        extract: ExtractConfig | None = None,
        cache: bool = True,
    ) -> None:
        self.solver = get_solver(solver) if isinstance(solver, str) else solver
        self.pool = pool
        self.reward, self.limits, self.extract = reward, limits, extract
        self.cache = ExecutionCache() if cache else None
        self._routes: dict[str, tuple[Solver, Runner]] = {
            name: (get_solver(name), runner) for name, runner in (pools or {}).items()
        }
        self._routes[self.solver.name] = (self.solver, pool)

    @property
    def solver_names(self) -> list[str]:
        """The solvers this verifier has a sandbox for, its own first."""
        return [self.solver.name, *(name for name in self._routes if name != self.solver.name)]

    def route(self, problem: object) -> tuple[Solver, Runner]:
        """The solver and sandbox that verify `problem`."""
        name = problem_solver(problem) or self.solver.name
        try:
            return self._routes[name]
        except KeyError:
            raise ValueError(
                f"problem {getattr(problem, 'id', '?')!r} names solver {name!r}, which this verifier has no sandbox "
                f"for (it has: {', '.join(self.solver_names)})"
            ) from None

    async def verify(self, problem: ProblemLike, text: str) -> Outcome:
        solver, pool = self.route(problem)
        code = extract_code(text, config=self.extract) if self.cache is not None else None
        if code is None:
            return await verify(
                pool, text, solver, problem.answer, reward=self.reward, limits=self.limits, extract=self.extract
            )
        formed = well_formed(text, self.extract)  # the format reward is the completion's, not the program's
        key = (problem.id, problem.answer, solver.name, self.limits, program_key(code), formed)
        return await self.cache.run(
            key,
            lambda: verify_code(
                pool, code, solver, problem.answer, reward=self.reward, limits=self.limits, well_formed=formed
            ),
        )

    def take_step_metrics(self) -> dict[str, float | int | None]:
        return self.cache.take_metrics() if self.cache is not None else {}


def problem_solvers(problems: Iterable[object], default: Solver) -> list[Solver]:
    """The solvers `problems` are verified with, in order of first appearance (`default` for those naming none);
    UnknownSolverError, or SolverUnavailableError when a solver's package is not installed here."""
    names = dict.fromkeys(problem_solver(p) or default.name for p in problems)
    return [default if name == default.name else get_solver(name) for name in names] or [default]


@asynccontextmanager
async def solver_pools(
    solvers: Iterable[Solver], make_pool: Callable[[tuple[str, ...]], SandboxPool]
) -> AsyncIterator[dict[str, SandboxPool]]:
    """Started sandbox pools for `solvers`, by solver name: `make_pool(preload)` builds one pool per distinct
    preload set (solvers with the same modules share it), all closed on exit.

        async with solver_pools(solvers, lambda preload: SandboxPool(workers=4, preload=preload)) as pools:
            verifier = SolverVerifier(pools[main.name], main, pools=pools)
    """
    by_preload: dict[tuple[str, ...], SandboxPool] = {}
    pools: dict[str, SandboxPool] = {}
    try:
        for solver in solvers:
            if solver.preload not in by_preload:
                by_preload[solver.preload] = pool = make_pool(solver.preload)
                await pool.start()
            pools[solver.name] = by_preload[solver.preload]
        yield pools
    finally:
        for pool in reversed(by_preload.values()):
            await pool.close()


def program_key(code: str) -> str:
    """A digest of `code` that is equal for programs differing only in comments and layout.

    Normalised away: comments, blank and comment-only lines, the spacing between tokens, line continuations
    (backslash or open brackets), the width of indentation (an indented block counts as one level, however
    many spaces or tabs) and the end-of-line characters. Kept exactly: every other token, string literals
    (prefix, quotes, content; f-strings whole, as written), and where logical lines and blocks begin and end.
    Equal keys mean equal token streams, so the same program to Python's parser; only a program that reads its
    own source text (or the line numbers of a traceback) can tell two programs with one key apart. Code that
    does not tokenize (an unterminated string, inconsistent dedent) keys on its exact text.
    """
    try:
        parts = _normalised_tokens(code)
    except (tokenize.TokenError, SyntaxError):  # IndentationError is a SyntaxError
        return "text:" + hashlib.sha256(code.encode()).hexdigest()
    digest = hashlib.sha256()
    for part in parts:
        digest.update(repr(part).encode())
    return "tokens:" + digest.hexdigest()


_DROPPED = frozenset({tokenize.COMMENT, tokenize.NL, tokenize.ENDMARKER})
_LAYOUT = frozenset({tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE})
# Python 3.12+ splits f-strings (3.14: t-strings) into start/middle/end tokens; they are kept as written.
_FSTRING_OPEN = frozenset(getattr(tokenize, n) for n in ("FSTRING_START", "TSTRING_START") if hasattr(tokenize, n))
_FSTRING_CLOSE = frozenset(getattr(tokenize, n) for n in ("FSTRING_END", "TSTRING_END") if hasattr(tokenize, n))


def _normalised_tokens(code: str) -> list[tuple[int, str]]:
    lines = code.splitlines(keepends=True)
    parts: list[tuple[int, str]] = []
    depth, opened_at = 0, (0, 0)
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type in _FSTRING_OPEN:
            depth, opened_at = depth + 1, opened_at if depth else tok.start
            continue
        if depth:
            if tok.type in _FSTRING_CLOSE:
                depth -= 1
                if depth == 0:
                    parts.append((tokenize.STRING, _source(lines, opened_at, tok.end)))
            continue
        if tok.type in _DROPPED:
            continue
        parts.append((tok.type, "") if tok.type in _LAYOUT else (tok.type, tok.string))
    return parts


def _source(lines: list[str], start: tuple[int, int], end: tuple[int, int]) -> str:
    """The text between two tokenize positions (1-based rows, 0-based columns)."""
    (r0, c0), (r1, c1) = start, end
    if r0 == r1:
        return lines[r0 - 1][c0:c1]
    return lines[r0 - 1][c0:] + "".join(lines[r0 : r1 - 1]) + lines[r1 - 1][:c1]


@dataclass
class _Entry:
    task: asyncio.Task[tuple[Outcome, float]]
    waiters: int = 0


class ExecutionCache:
    """One execution per key: the first caller starts it, later callers with the same key (while it runs, or
    after, until `take_metrics`) get its outcome.

    The execution runs as its own task, so a caller cancelled (a verify timeout) does not cancel it for the
    others; it is cancelled when every caller waiting on it is. An execution that raised, or whose outcome is
    an infrastructure failure (`INFRA_STATUSES`), is shared with the callers already waiting but not kept: the
    next caller runs the program again.

    Metrics per step: `verify/cache_hits` (calls answered by another call's execution), `verify/cache_runs`
    (executions started), `verify/cache_hit_rate` = hits / (hits + runs) (None when nothing ran), and
    `verify/cache_saved_s`: for each hit, the wall time of the execution it shared (seconds of sandbox work
    the hit did not spend).
    """

    def __init__(self) -> None:
        self._entries: dict[Hashable, _Entry] = {}
        self._hits, self._runs, self._saved_s = 0, 0, 0.0

    async def run(self, key: Hashable, execute: Callable[[], Awaitable[Outcome]]) -> Outcome:
        entry = self._entries.get(key)
        hit = entry is not None
        if entry is None:
            entry = self._entries[key] = _Entry(asyncio.ensure_future(_timed(execute)))
            self._runs += 1
        else:
            self._hits += 1
        entry.waiters += 1
        try:
            outcome, elapsed_s = await asyncio.shield(entry.task)
        except asyncio.CancelledError:
            entry.waiters -= 1
            if entry.waiters == 0 and not entry.task.done():
                entry.task.cancel()
                self._forget(key, entry)
            raise
        except Exception:
            self._forget(key, entry)
            raise
        if outcome.status in INFRA_STATUSES:
            self._forget(key, entry)
        if hit:
            self._saved_s += elapsed_s
        return outcome

    def take_metrics(self) -> dict[str, float | int | None]:
        """The counters since the last call; resets them and forgets every finished execution."""
        total = self._hits + self._runs
        metrics = {
            "verify/cache_hits": self._hits,
            "verify/cache_runs": self._runs,
            "verify/cache_hit_rate": self._hits / total if total else None,
            "verify/cache_saved_s": self._saved_s,
        }
        self._hits, self._runs, self._saved_s = 0, 0, 0.0
        self._entries = {k: e for k, e in self._entries.items() if not e.task.done()}
        return metrics

    def _forget(self, key: Hashable, entry: _Entry) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]


async def _timed(execute: Callable[[], Awaitable[Outcome]]) -> tuple[Outcome, float]:
    started = time.monotonic()
    outcome = await execute()
    return outcome, time.monotonic() - started
