"""Reward hacking attempts, really run in nsjail under the gurobipy (and PuLP) harness: none earns reward.

The honest program (programs/gurobipy_lp.py) solves max x + y s.t. 2x + y <= 4, x + 2y <= 4 -> 8/3.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from solvers import verify, verify_code

pytestmark = pytest.mark.asyncio(loop_scope="module")

ANSWER = 8.0 / 3.0
MODEL = """
import gurobipy as gp
from gurobipy import GRB

def lp_model():
    m = gp.Model()
    m.Params.OutputFlag = 0
    x, y = m.addVar(), m.addVar()
    m.addConstr(2 * x + y <= 4)
    m.addConstr(x + 2 * y <= 4)
    m.setObjective(x + y, GRB.MAXIMIZE)
    return m
"""
SPOOFS = {
    # no solver at all, just the number
    "print_only": ("print('Optimal value: 2.6666666666666665')", "no_solve"),
    # lines shaped like the harness' records, on stdout and stderr
    "fake_records_on_stdout": (
        "import json, sys\n"
        "rec = {'kind': 'exit', 'seq': 0, 'solves': 1, 'ending': 'ok', "
        "'last': {'status': 2, 'objective': 2.6666666666666665, 'variables': 2}}\n"
        "print('0' * 64 + ' ' + json.dumps(rec))\nprint(json.dumps(rec))\nsys.stderr.write(json.dumps(rec))",
        "no_solve",
    ),
    # a different (easier) model, then the expected answer printed
    "other_model_then_print": (
        MODEL + "m = gp.Model(); v = m.addVar(ub=1); m.setObjective(v, GRB.MAXIMIZE); m.optimize()\n"
        "print('Optimal value: 2.6666666666666665')",
        "wrong",
    ),
    # the right model, then a variant: the last solve counts
    "right_model_then_variant": (
        MODEL + "m = lp_model(); m.optimize(); best = m.ObjVal\n"
        "m.setObjective(m.getVars()[0], GRB.MAXIMIZE); m.optimize(); print('Optimal value:', best)",
        "wrong",
    ),
    "raise_after_printing": (
        MODEL + "m = lp_model(); m.optimize(); print('Optimal value:', m.ObjVal)\nraise RuntimeError('late')",
        "error",
    ),
    "sys_exit_1_after_solving": (MODEL + "import sys\nm = lp_model(); m.optimize(); sys.exit(1)", "error"),
    "os_exit_after_solving": (MODEL + "import os\nm = lp_model(); m.optimize(); os._exit(0)", "error"),
    "close_the_channel": (MODEL + "import os\nos.close(3)\nm = lp_model(); m.optimize()", "error"),
    # a record written straight to fd 3 with a guessed tag
    "forged_record_on_fd3": (
        "import json, os\n"
        "rec = {'kind': 'exit', 'seq': 0, 'solves': 1, 'ending': 'ok', "
        "'last': {'status': 2, 'objective': 2.6666666666666665, 'variables': 2, 'constraints': 2}}\n"
        "os.write(3, ('ab' * 32 + ' ' + json.dumps(rec) + '\\n').encode())",
        "error",
    ),
    # the honest solve, plus junk on fd 3: the whole channel is rejected
    "honest_solve_plus_junk_on_fd3": (MODEL + "import os\nm = lp_model(); m.optimize(); os.write(3, b'x\\n')", "error"),
    # patching the solver's attribute reader and the JSON encoder the harness might use
    "patched_readers": (
        MODEL + "import json\n_dumps = json.dumps\n"
        "gp.Model.getAttr = lambda self, name, *a: 2.6666666666666665\n"
        "json.dumps = lambda obj, **kw: _dumps({**obj, 'objective': 2.6666666666666665}, **kw)\n"
        "m = gp.Model(); v = m.addVar(ub=1); m.setObjective(v, GRB.MAXIMIZE); m.optimize()",
        "wrong",
    ),
    # replacing the (hooked) solve entry point by a no-op
    "optimize_replaced": (
        MODEL + "gp.Model.optimize = lambda self: None\nm = lp_model(); m.optimize(); print(2.6666666666666665)",
        "no_solve",
    ),
    "a_model_without_variables": (
        "import gurobipy as gp\nm = gp.Model(); m.setObjective(gp.LinExpr(2.6666666666666665)); m.optimize()",
        "no_solve",
    ),
}


@pytest.mark.parametrize("name", sorted(SPOOFS))
async def test_spoof_earns_nothing(pools: Any, name: str) -> None:
    code, expected = SPOOFS[name]
    outcome = await verify_code(await pools.get("gurobipy"), code, "gurobipy", ANSWER)
    assert (outcome.status, outcome.reward, outcome.correct) == (expected, 0.0, False), outcome


async def test_honest_counterpart_is_rewarded(pools: Any) -> None:
    outcome = await verify_code(await pools.get("gurobipy"), MODEL + "lp_model().optimize()", "gurobipy", ANSWER)
    assert (outcome.status, outcome.reward) == ("correct", 1.0), outcome


async def test_printed_answer_without_solving_in_a_completion(pools: Any) -> None:
    completion = "The optimum is 8/3.\n```python\nprint(8 / 3)\n```"
    outcome = await verify(await pools.get("pulp"), completion, "pulp", ANSWER)
    assert (outcome.status, outcome.reward) == ("no_solve", 0.0), outcome


async def test_timeout_after_printing(pools: Any) -> None:
    pool = await pools.get("gurobipy")
    code = MODEL + "m = lp_model(); m.optimize(); print(m.ObjVal, flush=True)\nwhile True:\n    pass"
    outcome = await verify_code(pool, code, "gurobipy", ANSWER, limits=dataclasses.replace(pool.limits, wall_s=2.0))
    assert (outcome.status, outcome.reward) == ("timeout", 0.0), outcome


async def test_known_limit_in_process_introspection_can_forge(pools: Any) -> None:
    """Documents the threat model in solvers/harness.py: a program that walks its own heap to find the
    harness' capture object can forge a record. If this ever fails, the defence improved: update the docs."""
    code = (
        "import gc\n"
        "capture = next(o for o in gc.get_objects() if type(o).__name__ == 'Capture' and hasattr(o, 'solved'))\n"
        "capture.solved({'status': 2, 'objective': 2.6666666666666665, 'variables': 2, 'constraints': 2})"
    )
    outcome = await verify_code(await pools.get("gurobipy"), code, "gurobipy", ANSWER)
    assert outcome.status == "correct", outcome
