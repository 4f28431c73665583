"""Execution-verified reward: extract the program, run it under the harness in the sandbox, judge the result.

    from sandbox import SandboxPool
    from solvers import get_solver, verify
    solver = get_solver("gurobipy")
    async with SandboxPool(workers=2, preload=solver.preload) as pool:
        outcome = await verify(pool, completion, solver, answer=21.0)
    outcome.status, outcome.objective, outcome.reward, outcome.correct, outcome.reason

Judging uses only the harness report (the solver's own status and objective of the last solve call) and the
sandbox's status; see `judge` for the order of the rules and `solvers.harness` for what counts and why.
`answer=None` means the problem has no optimum: a program is correct when its last solve proves the model
infeasible or unbounded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from solvers.base import Solver, SolveState
from solvers.extract import ExtractConfig, extract_code, well_formed
from solvers.failures import error_kind
from solvers.harness import NO_KEY_EXIT, Report, build_program, new_key, parse_channel
from solvers.registry import get_solver
from solvers.reward import Outcome, OutcomeStatus, RewardConfig, matches, reward_of
from solvers.rows import check_answer

if TYPE_CHECKING:
    from sandbox import Limits


class RunResult(Protocol):
    """The fields of `sandbox.Result` the verifier reads."""

    status: str
    exit_code: int | None
    channel: bytes
    channel_truncated: bool
    wall_s: float


class Runner(Protocol):
    """Anything with `sandbox.SandboxPool.run`'s signature."""

    async def run(self, code: str, stdin: str = "", limits: Limits | None = None) -> RunResult: ...


async def verify(
    pool: Runner,
    completion: str,
    solver: Solver | str,
    answer: float | None,
    *,
    reward: RewardConfig | None = None,
    limits: Limits | None = None,
    extract: ExtractConfig | None = None,
    flip_sense: bool = False,
    sandbox_retries: int = 1,
) -> Outcome:
    """Extract the program from `completion`, run it, and judge it against `answer` (None: no optimum)."""
    config = reward or RewardConfig()
    code = extract_code(completion, config=extract)
    formed = well_formed(completion, extract)
    if code is None:
        return Outcome(
            status="no_code",
            reason="no python code block in the completion",
            error_kind="no_code",
            reward=reward_of("no_code", False, well_formed=formed, executed=False, config=config),
        )
    return await verify_code(
        pool,
        code,
        solver,
        answer,
        reward=config,
        limits=limits,
        flip_sense=flip_sense,
        sandbox_retries=sandbox_retries,
        well_formed=formed,
    )


async def verify_code(
    pool: Runner,
    code: str,
    solver: Solver | str,
    answer: float | None,
    *,
    reward: RewardConfig | None = None,
    limits: Limits | None = None,
    flip_sense: bool = False,
    sandbox_retries: int = 1,
    well_formed: bool = True,
) -> Outcome:
    """Run an already extracted program under the harness and judge it against `answer`.

    A run the sandbox itself failed (`sandbox_error`: not the program's doing) is retried up to
    `sandbox_retries` times, each with a fresh key. `well_formed`: whether the completion the program came from
    had its format's structure (`format_reward`); a bare program counts as well-formed.
    """
    config = reward or RewardConfig()
    adapter = get_solver(solver) if isinstance(solver, str) else solver
    answer = check_answer(answer)  # a ValueError for anything but a finite number or None
    script = build_program(code, adapter, flip_sense=flip_sense)
    for _ in range(sandbox_retries + 1):
        key = new_key()
        result = await pool.run(script, stdin=key + "\n", limits=limits)
        if result.status != "sandbox_error":
            break
    report = parse_channel(result.channel, key)
    if result.channel_truncated:
        report = Report(solves=report.solves, problem="the channel was truncated (Limits.channel_bytes)")
    status, state, reason, executed = judge(adapter, result, report, answer, config)
    correct = status == "correct"
    exception = (report.exit or {}).get("exception") if report.problem is None else None
    kind = error_kind(
        status, answer=answer, sandbox_status=result.status, exception=exception, solver=adapter, ran_clean=executed
    )
    return Outcome(
        status=status,
        objective=state.objective if state else None,
        reward=reward_of(status, correct, well_formed=well_formed, executed=executed, config=config),
        correct=correct,
        reason=reason,
        error_kind=kind,
        solver_status=state.raw if state else "",
        solves=report.solve_count,
        wall_s=result.wall_s,
    )


def judge(
    solver: Solver, result: RunResult, report: Report, answer: float | None, config: RewardConfig
) -> tuple[OutcomeStatus, SolveState | None, str, bool]:
    """(status, last solve state, reason, executed cleanly) of one run. The rules, in order:

    1. the sandbox or the harness itself failed -> sandbox_error;
    2. wall/CPU limit -> timeout; memory, output limit or a signal -> error;
    3. a channel that fails verification or lacks its exit record, or a program that raised or exited
       non-zero -> error (license_limit when a solve was refused by the size-limited license);
    4. no solve call -> no_solve; otherwise the last solve call decides (`_judge_last`).
    """
    states = [solver.classify(record) for record in report.solves]
    last = solver.classify(report.last_solve) if report.last_solve is not None else None
    exception = (report.exit or {}).get("exception") or {}
    license_seen = any(s.state == "license_limit" for s in states) or solver.is_license_limit(exception)
    failed: OutcomeStatus = "license_limit" if license_seen else "error"
    ending = (report.exit or {}).get("ending")
    if result.status == "sandbox_error" or ending == "harness_error":
        return "sandbox_error", last, f"sandbox or harness failure: {exception.get('message') or result.status}", False
    if report.exit is None and result.exit_code == NO_KEY_EXIT:
        return "sandbox_error", last, "the harness did not receive its key on stdin", False
    if result.status == "timeout":
        return "timeout", last, "the program hit the time limit", False
    if result.status in ("memory", "output_limit", "killed"):
        return failed, last, f"the sandbox stopped the program: {result.status}", False
    if report.problem is not None:
        return failed, last, report.problem, False
    if ending != "ok" or result.status != "ok":
        detail = exception.get("type", "") + (": " + exception["message"] if exception.get("message") else "")
        detail = detail or str((report.exit or {}).get("code", result.status))
        return failed, last, f"the program did not exit cleanly ({detail})", False
    if last is None:
        return "no_solve", None, "the program never called the solver", True
    status, reason = _judge_last(last, answer, config)
    return status, last, reason, True


def _judge_last(last: SolveState, answer: float | None, config: RewardConfig) -> tuple[OutcomeStatus, str]:
    proved_no_optimum = last.state in ("infeasible", "unbounded", "inf_or_unbd")
    if last.state in ("license_limit", "error"):
        return last.state, f"the last solve call failed: {last.raw}"
    if proved_no_optimum:
        if answer is None:
            return "correct", f"the solver proved there is no optimum ({last.raw}), as expected"
        status: OutcomeStatus = "unbounded" if last.state == "unbounded" else "infeasible"
        return status, f"the solver reported {last.raw}, but the problem has an optimum"
    has_value = last.state == "optimal" or (last.state == "feasible" and config.accept_feasible)
    if not has_value or last.objective is None:
        return "no_solve", f"the last solve stopped with {last.raw} without a proven optimum"
    if last.variables is not None and last.variables < config.min_variables:
        return "no_solve", f"the last solved model has {last.variables} variables"
    if answer is None:
        return "wrong", f"found objective {last.objective!r}, but the problem has no optimum"
    if matches(last.objective, answer, config):
        return "correct", f"objective {last.objective!r} matches {answer!r}"
    return "wrong", f"objective {last.objective!r} does not match {answer!r}"
