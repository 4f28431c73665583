"""The verifier's execution cache (engine.verifier): program normalisation, one execution per identical program
(concurrent ones too), cancellation, what is not kept, per-step metrics, and the real verifier in a real rollout
step (scripted completions, real nsjail sandbox and gurobipy)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import scripted

from engine.data import Problem
from engine.generation import SamplingParams
from engine.rollout import Rollout
from engine.verifier import ExecutionCache, SolverVerifier, StepMetricsSource, program_key, step_metrics
from sandbox import Limits, SandboxPool, SandboxUnavailable
from solvers import Outcome, get_solver, verify

# ----- program_key ---------------------------------------------------------------------------------------------

BASE = 'import math\n\ndef f(x):\n    if x > 1:\n        return math.sqrt(x)  # root\n    return "a  b"\nprint(f(4))\n'
SAME_PROGRAM = {
    "comments and blank lines": (
        "# header\nimport math\n\n\n# helper\ndef f(x):\n    if x > 1:\n"
        '        return math.sqrt(x)\n    return "a  b"  # keep\n\nprint(f(4))  # done'
    ),
    "spacing between tokens": (
        'import math\ndef f( x ):\n    if x>1:\n        return math.sqrt( x )\n    return "a  b"\nprint( f(4) )\n'
    ),
    "indent width and tabs": (
        'import math\ndef f(x):\n\tif x > 1:\n\t\treturn math.sqrt(x)\n\treturn "a  b"\nprint(f(4))\n'
    ),
    "continuations": (
        "import math\ndef f(\n    x\n):\n    if x > \\\n            1:\n        return math.sqrt(x)\n"
        '    return "a  b"\nprint(f(4))\n'
    ),
    "CRLF line ends": BASE.replace("\n", "\r\n"),
}
OTHER_PROGRAM = {
    "whitespace inside a string": BASE.replace('"a  b"', '"a b"'),
    "comment-like text inside a string": BASE.replace('"a  b"', '"a  b # c"'),
    "quote style": BASE.replace('"a  b"', "'a  b'"),
    "a token": BASE.replace("x > 1", "x >= 1"),
    "block structure": BASE.replace('    return "a  b"', '        return "a  b"'),
    "two statements on one line": BASE.replace("import math\n\n", "import math; "),
}


@pytest.mark.parametrize("variant", SAME_PROGRAM, ids=list(SAME_PROGRAM))
def test_programs_differing_in_comments_and_layout_share_a_key(variant):
    assert program_key(SAME_PROGRAM[variant]) == program_key(BASE)


@pytest.mark.parametrize("variant", OTHER_PROGRAM, ids=list(OTHER_PROGRAM))
def test_programs_differing_in_strings_tokens_or_structure_do_not(variant):
    assert program_key(OTHER_PROGRAM[variant]) != program_key(BASE)


def test_f_strings_are_kept_as_written():
    # f"{x = }" prints "x = 1", f"{x=}" prints "x=1": the spacing inside an f-string is not layout
    assert program_key('x = 1\nprint(f"{x = }")\n') != program_key('x = 1\nprint(f"{x=}")\n')
    assert program_key('x = 1\nprint(f"{x}")  # c\n') == program_key('x  =  1\n\nprint(f"{x}")\n')


def test_code_that_does_not_tokenize_keys_on_its_exact_text():
    broken = 's = """never closed\nprint(s)\n'
    assert program_key(broken).startswith("text:") and program_key(BASE).startswith("tokens:")
    assert program_key(broken) == program_key(broken) != program_key(broken + "# c")


# ----- ExecutionCache with a scripted execution ------------------------------------------------------------------


class Execution:
    """Counts executions; each waits on `gate` (set by default) and then returns `outcome` or raises `error`."""

    def __init__(self, status: str = "correct", *, error: Exception | None = None, open_gate: bool = True) -> None:
        self.calls, self.cancelled = 0, 0
        self.gate = asyncio.Event()
        if open_gate:
            self.gate.set()
        self.status, self.error = status, error

    async def __call__(self) -> Outcome:
        self.calls += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        return Outcome(status=self.status, reward=float(self.status == "correct"), wall_s=0.01)


async def test_identical_programs_in_flight_share_one_execution():
    cache, execution = ExecutionCache(), Execution(open_gate=False)
    first = asyncio.create_task(cache.run("k", execution))
    second = asyncio.create_task(cache.run("k", execution))
    await asyncio.sleep(0.01)
    assert execution.calls == 1 and not first.done() and not second.done()
    execution.gate.set()
    a, b = await asyncio.gather(first, second)
    assert a is b and execution.calls == 1
    assert await cache.run("k", execution) is a and execution.calls == 1  # later in the step: still shared
    assert await cache.run("other", execution) is not a and execution.calls == 2
    m = cache.take_metrics()
    assert (m["verify/cache_hits"], m["verify/cache_runs"], m["verify/cache_hit_rate"]) == (2, 2, 0.5)
    assert 0.02 <= m["verify/cache_saved_s"] < 1.0  # two hits, each saved one execution of >= 0.01 s


async def test_take_metrics_resets_the_counters_and_forgets_finished_executions():
    cache, execution = ExecutionCache(), Execution()
    await cache.run("k", execution)
    cache.take_metrics()
    assert cache.take_metrics() == {
        "verify/cache_hits": 0,
        "verify/cache_runs": 0,
        "verify/cache_hit_rate": None,
        "verify/cache_saved_s": 0.0,
    }
    await cache.run("k", execution)  # the next step runs the program again
    assert execution.calls == 2 and cache.take_metrics()["verify/cache_runs"] == 1


async def test_a_cancelled_caller_leaves_the_execution_to_the_others():
    cache, execution = ExecutionCache(), Execution(open_gate=False)
    first = asyncio.create_task(cache.run("k", execution))
    second = asyncio.create_task(cache.run("k", execution))
    await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0.01)
    execution.gate.set()
    assert (await second).status == "correct" and first.cancelled()
    assert execution.calls == 1 and execution.cancelled == 0


async def test_the_execution_is_cancelled_when_every_caller_is_and_then_runs_afresh():
    cache, execution = ExecutionCache(), Execution(open_gate=False)
    callers = [asyncio.create_task(cache.run("k", execution)) for _ in range(2)]
    await asyncio.sleep(0.01)
    for c in callers:
        c.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert execution.cancelled == 1
    execution.gate.set()
    assert (await cache.run("k", execution)).status == "correct" and execution.calls == 2


async def test_a_raising_execution_reaches_its_waiters_and_is_not_kept():
    cache, execution = ExecutionCache(), Execution(error=RuntimeError("pool closed"), open_gate=False)
    callers = [asyncio.create_task(cache.run("k", execution)) for _ in range(2)]
    await asyncio.sleep(0.01)
    execution.gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and execution.calls == 1
    execution.error = None
    assert (await cache.run("k", execution)).status == "correct" and execution.calls == 2


async def test_an_infrastructure_failure_is_shared_but_not_kept():
    cache, execution = ExecutionCache(), Execution("sandbox_error")
    assert (await cache.run("k", execution)).status == "sandbox_error"
    await cache.run("k", execution)
    assert execution.calls == 2


def test_only_verifiers_with_counters_add_metrics():
    class Plain:
        async def verify(self, problem, text): ...

    assert step_metrics(Plain()) == {} and not isinstance(Plain(), StepMetricsSource)
    uncached = SolverVerifier(None, "gurobipy", cache=False)
    assert isinstance(uncached, StepMetricsSource) and step_metrics(uncached) == {}


# ----- the real verifier ---------------------------------------------------------------------------------------

MODEL = "import gurobipy as gp\nm = gp.Model()\nm.Params.OutputFlag = 0\nx = m.addVar(ub={ub})\n"
SOLVE = "m.setObjective(x, gp.GRB.MAXIMIZE)\nm.optimize()\n"


def completion(ub: float = 3, *, comment: str = "") -> str:
    return f"Here it is.\n```python\n{comment}{MODEL.format(ub=ub)}\n\n{SOLVE}```"


@pytest.fixture
async def pool():
    p = SandboxPool(workers=2, limits=Limits(wall_s=30), preload=get_solver("gurobipy").preload)
    try:
        await p.start()
    except SandboxUnavailable as exc:
        pytest.skip(f"nsjail sandbox unavailable on this machine: {exc}")
    try:
        yield p
    finally:
        await p.close()


async def test_the_cached_verifier_gives_solvers_verify_outcomes_and_runs_each_program_once(pool):
    verifier = SolverVerifier(pool, "gurobipy")
    p0, p1 = Problem(id="p0", question="q", answer=3.0), Problem(id="p1", question="q", answer=3.0)
    texts = [completion(), completion(comment="# the model\n"), completion(ub=2), completion(), "no code at all"]
    outcomes = await asyncio.gather(*(verifier.verify(p0, t) for t in texts), verifier.verify(p1, texts[0]))
    assert pool.stats["runs"] == 3  # ub=3 once for p0, ub=2, ub=3 for p1; no_code runs nothing
    expected = [await verify(pool, t, "gurobipy", 3.0) for t in texts]
    for got, want in zip(outcomes, [*expected, expected[0]], strict=True):
        assert dataclasses.replace(got, wall_s=0.0) == dataclasses.replace(want, wall_s=0.0)
    assert [o.status for o in outcomes] == ["correct", "correct", "wrong", "correct", "no_code", "correct"]
    m = verifier.take_step_metrics()
    assert (m["verify/cache_hits"], m["verify/cache_runs"], m["verify/cache_hit_rate"]) == (2, 3, 0.4)
    assert m["verify/cache_saved_s"] > 0
    runs = pool.stats["runs"]
    await verifier.verify(p0, texts[0])  # a new step: runs again
    assert pool.stats["runs"] == runs + 1


async def test_the_cache_counters_reach_each_steps_metrics_row(pool):
    prompts = scripted.prompt_builder()
    # every sample of every problem writes the same program, with a different comment: one run per problem
    table = {f"p{i}": [scripted.Reply(text=completion(comment=f"# v{j}\n")) for j in range(4)] for i in range(4)}
    backend = scripted.ScriptedBackend(scripted.plan(table), tokenizer=prompts.tokenizer)
    rollout = Rollout(
        backend=backend,
        verifier=SolverVerifier(pool, "gurobipy"),
        prompts=prompts,
        problems=scripted.problems(4),
        settings=scripted.rollout_settings(group_size=4),
        sampling=SamplingParams(max_new_tokens=512, seed=7),
        start_step=0,
    )
    async with backend, rollout:
        first = await rollout.next_batch()
        rollout.mark_policy_updated()
        second = await rollout.next_batch()
    for batch in (first, second):
        m = batch.metrics
        assert m["status/correct"] == 8 and m["verify/cache_runs"] == 2 and m["verify/cache_hits"] == 6
        assert m["verify/cache_hit_rate"] == 0.75 and m["verify/cache_saved_s"] > 0
    assert pool.stats["runs"] == 4
