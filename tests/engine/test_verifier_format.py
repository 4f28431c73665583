"""The format reward of EVOM's think-code answers through the rollout's verifier (real nsjail and gurobipy): the
reward follows each completion's structure even when the execution cache shares one run between completions."""

from __future__ import annotations

import pytest

from engine.data import Problem
from engine.verifier import SolverVerifier
from sandbox import Limits, SandboxPool, SandboxUnavailable
from solvers import ExtractConfig, RewardConfig, get_solver, verify

PROGRAM = "import gurobipy as gp\nm = gp.Model()\nm.Params.OutputFlag = 0\nx = m.addVar(ub=3)\n"
PROGRAM += "m.setObjective(x, gp.GRB.MAXIMIZE)\nm.optimize()\n"
WELL_FORMED = f"<think>\nOne variable up to 3.\n</think>\n<code>\n{PROGRAM}</code>"
NO_THINK = f"<code>\n{PROGRAM}</code>"  # the same program, without the reasoning: no format reward
TWO_BLOCKS = f"<think>\nOne variable.\n</think>\n<code>\nx = 1\n</code>\n<code>\n{PROGRAM}</code>"
THINK_CODE = ExtractConfig(format="think-code")
REWARD = RewardConfig(format_reward=0.1)


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


async def test_the_format_reward_is_each_completions_own(pool):
    problem = Problem(id="p", question="Maximise x, x <= 3.", answer=3.0)
    for cache in (True, False):
        verifier = SolverVerifier(pool, "gurobipy", reward=REWARD, extract=THINK_CODE, cache=cache)
        outcomes = [await verifier.verify(problem, text) for text in (WELL_FORMED, NO_THINK, TWO_BLOCKS)]
        assert [(o.status, o.reward) for o in outcomes] == [
            ("correct", pytest.approx(1.1)),
            ("correct", pytest.approx(1.0)),  # the same program run by the cache, but no think block
            ("correct", pytest.approx(1.0)),  # the last code block runs; two blocks are not the format
        ], f"cache={cache}"
    direct = await verify(pool, NO_THINK, "gurobipy", 3.0, reward=REWARD, extract=THINK_CODE)
    assert (direct.status, direct.reward) == ("correct", pytest.approx(1.0))
