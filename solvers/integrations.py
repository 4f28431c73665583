"""EVOM's verifier as the reward of other trainers: TRL's `GRPOTrainer` and verl's custom reward function.

TRL (a dataset with a "prompt" column and an "answer" column: the optimum, or None when there is none):

    from solvers.integrations import trl_reward
    reward = trl_reward("gurobipy")                      # RewardConfig fields as keywords, e.g. comparison="orlm"
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], args=GRPOConfig(...), train_dataset=ds)

verl (`reward_model.ground_truth` of each row is the answer; `extra_info.solver` may name the row's solver):

    custom_reward_function.path=$(python -c "import solvers.integrations as m; print(m.__file__)")
    custom_reward_function.name=compute_score              # compute_score_batch with reward_manager=batch
    +custom_reward_function.reward_kwargs.solver=ortools   # optional: the default solver, and RewardConfig fields

Both run `solvers.verify` (extract the program, run it under the solver's harness, judge it) in a warm
`sandbox.SandboxPool` that lives once per process, on its own event loop in a daemon thread: the reward
functions are plain synchronous calls that work from any thread, also while an event loop runs in the calling
thread. A forked child starts its own. The pool's settings come from `configure(...)` (call it before the first
reward, or it restarts the pool); `close()` stops it, and runs at interpreter exit by itself. Solvers whose
modules cannot share a worker (ortools and highspy) get a pool each, on the same loop.

Answers: a finite number, or None / NaN / "null" / "none" / "" for a problem with no optimum (a correct
program proves it infeasible or unbounded). NaN counts as "no optimum" because that is how pandas and parquet
hand over a missing value in a float column.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sandbox import Limits, SandboxPool
from solvers.base import Solver
from solvers.extract import ExtractConfig
from solvers.registry import get_solver
from solvers.reward import OUTCOME_STATUSES, Outcome, RewardConfig
from solvers.verify import verify

log = logging.getLogger("solvers.integrations")

DEFAULT_SOLVER = "gurobipy"
# The sandbox failed, not the program: the sample is left out of training (TRL: a None reward).
INFRASTRUCTURE_STATUSES = frozenset({"sandbox_error"})
_REWARD_FIELDS = frozenset(f.name for f in dataclasses.fields(RewardConfig))


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    """The process-wide sandbox pool. timeout_s bounds the wait for one call's verifications (a batch)."""

    workers: int = 4
    limits: Limits = field(default_factory=Limits)
    isolation: str = "nsjail"
    recycle_after: int = 1000
    timeout_s: float = 900.0


class VerifierThread:
    """Sandbox pools on an event loop in a daemon thread, for synchronous callers in any thread."""

    def __init__(self, settings: PoolSettings) -> None:
        self.settings, self.pid = settings, os.getpid()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="evom-verifier", daemon=True)
        self._thread.start()
        self._pools: dict[tuple[str, ...], SandboxPool] = {}
        self._starting: asyncio.Lock | None = None
        self.closed = False

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def verify(
        self,
        items: Sequence[tuple[str, float | None]],
        solver: Solver,
        *,
        reward: RewardConfig,
        extract: ExtractConfig | None = None,
        limits: Limits | None = None,
    ) -> list[Outcome]:
        """Verify (completion, answer) pairs at once; blocks the calling thread until every one is judged."""
        if self.closed:
            raise RuntimeError("the verifier thread is closed; solvers.integrations starts a new one on the next call")
        if threading.current_thread() is self._thread:
            raise RuntimeError("a reward function was called from the verifier's own event loop; it would deadlock")
        job = self._verify_all(items, solver, reward=reward, extract=extract, limits=limits)
        future = asyncio.run_coroutine_threadsafe(job, self._loop)
        try:
            return future.result(timeout=self.settings.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"verifying {len(items)} completions took over {self.settings.timeout_s} s "
                "(PoolSettings.timeout_s; more workers via solvers.integrations.configure(workers=...))"
            ) from None

    async def _verify_all(
        self,
        items: Sequence[tuple[str, float | None]],
        solver: Solver,
        *,
        reward: RewardConfig,
        extract: ExtractConfig | None,
        limits: Limits | None,
    ) -> list[Outcome]:
        pool = await self._pool(solver)
        jobs = (
            verify(pool, text, solver, answer, reward=reward, extract=extract, limits=limits) for text, answer in items
        )
        return list(await asyncio.gather(*jobs))

    async def _pool(self, solver: Solver) -> SandboxPool:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:  # concurrent first calls start one pool, not several
            pool = self._pools.get(solver.preload)
            if pool is None:
                s = self.settings
                pool = SandboxPool(
                    workers=s.workers,
                    limits=s.limits,
                    preload=solver.preload,
                    isolation=s.isolation,  # type: ignore[arg-type]  # SandboxPool checks the name
                    recycle_after=s.recycle_after,
                )
                await pool.start()
                self._pools[solver.preload] = pool
        return pool

    def close(self, timeout_s: float = 60.0) -> None:
        """Close the pools and stop the thread; idempotent. In a forked child it only forgets the parent's."""
        if self.closed:
            return
        self.closed = True
        if self.pid != os.getpid() or not self._thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_pools(), self._loop).result(timeout=timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=timeout_s)
            if not self._thread.is_alive():
                self._loop.close()
        log.info("closed the verifier's sandbox pools (%d)", len(self._pools))

    async def _close_pools(self) -> None:
        await asyncio.gather(*(pool.close() for pool in self._pools.values()), return_exceptions=True)


_lock = threading.Lock()
_settings = PoolSettings()
_service: VerifierThread | None = None


def configure(**settings: Any) -> PoolSettings:
    """Set the process-wide pool's `PoolSettings` fields; a running pool is closed and restarts with them."""
    global _settings
    with _lock:
        _settings = dataclasses.replace(_settings, **settings)  # TypeError names an unknown field
        new = _settings
    close()
    return new


def shared_verifier() -> VerifierThread:
    """This process's verifier thread, started on first use (and again after `close` or in a forked child)."""
    global _service
    with _lock:
        if _service is None or _service.closed or _service.pid != os.getpid():
            _service = VerifierThread(_settings)
        return _service


def close() -> None:
    """Stop this process's pools and verifier thread (also registered to run at exit)."""
    global _service
    with _lock:
        service, _service = _service, None
    if service is not None:
        service.close()


atexit.register(close)


def parse_answer(value: Any) -> float | None:
    """A dataset's answer as `solvers.verify` takes it (see the module docstring for the "no optimum" forms)."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "null", "none", "nan"):
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"answer {value!r} is neither a number nor null (no optimum)") from None
    if isinstance(value, bool):
        raise ValueError(f"answer {value!r} is a bool, neither a number nor null")
    if not isinstance(value, int | float):
        try:
            value = float(value)  # numpy scalars
        except (TypeError, ValueError):
            raise ValueError(f"answer {value!r} ({type(value).__name__}) is neither a number nor null") from None
    if math.isnan(value):
        return None
    if math.isinf(value):
        raise ValueError(f"answer {value!r} is infinite; use null for a problem with no optimum")
    return float(value)


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """A completion as text: a string as it is; chat messages (TRL's conversational format): the content of the
    assistant messages, joined (content given as parts: their "text" parts)."""
    if isinstance(completion, str):
        return completion
    texts = []
    for message in completion:
        if message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
        texts.append(content)
    return "\n".join(texts)


def _reward_config(options: Mapping[str, Any]) -> RewardConfig:
    unknown = sorted(set(options) - _REWARD_FIELDS)
    if unknown:
        raise TypeError(f"unknown reward options {unknown}; RewardConfig fields: {sorted(_REWARD_FIELDS)}")
    return RewardConfig(**options)


class TrlReward:
    """A TRL `GRPOTrainer` reward function (see `trl_reward`). `last_outcomes` holds the last call's outcomes."""

    def __init__(
        self,
        solver: Solver | str,
        *,
        extract: ExtractConfig | None = None,
        limits: Limits | None = None,
        **reward_options: Any,
    ) -> None:
        self.solver = get_solver(solver) if isinstance(solver, str) else solver
        self.reward = _reward_config(reward_options)
        self.extract, self.limits = extract, limits
        self.__name__ = f"evom_{self.solver.name}"
        self.last_outcomes: list[Outcome] = []

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[str | Sequence[Mapping[str, Any]]] | None = None,
        answer: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if completions is None:
            raise TypeError(f"{self.__name__}: called without completions")
        if answer is None:
            raise ValueError(f"{self.__name__}: the dataset needs an 'answer' column (the optimum, or null)")
        if len(answer) != len(completions):
            raise ValueError(f"{self.__name__}: {len(completions)} completions but {len(answer)} answers")
        items = [(completion_text(c), parse_answer(a)) for c, a in zip(completions, answer, strict=True)]
        outcomes = shared_verifier().verify(
            items, self.solver, reward=self.reward, extract=self.extract, limits=self.limits
        )
        self.last_outcomes = outcomes
        self._log(outcomes, kwargs)
        return [None if o.status in INFRASTRUCTURE_STATUSES else float(o.reward) for o in outcomes]

    def _log(self, outcomes: Sequence[Outcome], trl_kwargs: Mapping[str, Any]) -> None:
        """Status fractions as TRL metrics and each sample's status in its completions table, when TRL offers."""
        log_metric, log_extra = trl_kwargs.get("log_metric"), trl_kwargs.get("log_extra")
        if callable(log_metric) and outcomes:
            counts = Counter(o.status for o in outcomes)
            for status in OUTCOME_STATUSES:
                log_metric(f"{self.__name__}/{status}", counts[status] / len(outcomes))
        if callable(log_extra):
            log_extra(f"{self.__name__}_status", [o.status for o in outcomes])


def trl_reward(
    solver: Solver | str,
    *,
    extract: ExtractConfig | None = None,
    limits: Limits | None = None,
    **reward_options: Any,
) -> TrlReward:
    """A TRL `GRPOTrainer` reward function verifying each completion with `solver`.

    A plain synchronous callable named `evom_<solver>` (TRL's metric names), taking `prompts` and
    `completions` (strings, or chat message lists for conversational datasets) and the dataset's `answer`
    column as keywords, ignoring the others TRL passes (`completion_ids`, `trainer_state`, ...). It returns the
    outcome's reward per completion, or None where the sandbox failed (TRL then leaves the sample out of the
    group's baseline and gives it no advantage). `reward_options` are `solvers.RewardConfig` fields;
    `limits` overrides the pool's per run. With TRL's `log_metric`, the status fractions become metrics.
    """
    return TrlReward(solver, extract=extract, limits=limits, **reward_options)


def compute_score(
    data_source: str | None,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl's custom reward function: the verification of one response.

    The solver is `extra_info["solver"]`, else the `solver` keyword (verl's `custom_reward_function.reward_kwargs`),
    else `DEFAULT_SOLVER`. Keywords that are `RewardConfig` fields set the reward; verl's other keywords are
    ignored. Returns the same keys for every response, as verl's reward managers collect each key into a
    per-sample list: `score` (the reward), `acc` (1.0 if correct: verl's DAPO group filter reads it), `status`,
    `objective` (NaN when the program reached none: verl averages numeric keys) and `reason`. A sandbox failure
    scores 0 with status "sandbox_error" (verl has no way to leave a sample out).
    """
    (score,) = compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)
    return score


def compute_score_batch(
    data_sources: Sequence[str | None],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """`compute_score` for a whole batch at once, for verl's batch reward manager
    (`reward_model.reward_manager=batch`): the responses are verified concurrently in the pool, not one by one."""
    infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    if not len(data_sources) == len(solution_strs) == len(ground_truths) == len(infos):
        raise ValueError(
            f"compute_score_batch: {len(data_sources)} data sources, {len(solution_strs)} responses, "
            f"{len(ground_truths)} ground truths and {len(infos)} extra infos; one of each per response"
        )
    reward = _reward_config({k: v for k, v in kwargs.items() if k in _REWARD_FIELDS})
    default = kwargs.get("solver") or DEFAULT_SOLVER
    by_solver: dict[str, list[int]] = {}
    for i, info in enumerate(infos):
        by_solver.setdefault((info or {}).get("solver") or default, []).append(i)
    answers = [parse_answer(g) for g in ground_truths]
    scores: list[dict[str, Any]] = [{} for _ in solution_strs]
    for name, indices in by_solver.items():
        items = [(solution_strs[i], answers[i]) for i in indices]
        for i, outcome in zip(indices, shared_verifier().verify(items, get_solver(name), reward=reward), strict=True):
            scores[i] = {
                "score": float(outcome.reward),
                "acc": float(outcome.correct),
                "status": outcome.status,
                "objective": math.nan if outcome.objective is None else float(outcome.objective),
                "reason": outcome.reason,
            }
    return scores
