"""bench/sandbox_peers.py's own logic: the answers it computes without a solver (against hand-derived values and
the real solvers), the judging rule, the unisolated exec pool (objectives from real solvers, a timeout that
kills and replaces the worker, a failing program), the recorder SandboxFusion's side prepends, and bad input.
No timing is asserted."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peers = load("sandbox_peers")

GUROBI_PROGRAM = """import gurobipy as gp
from gurobipy import GRB
m = gp.Model()
x = m.addVar(ub=4)
y = m.addVar(ub=3)
m.addConstr(x + y <= 5)
m.setObjective(3 * x + 2 * y, GRB.MAXIMIZE)
m.optimize()
"""  # optimum: x = 4, y = 1 -> 14

INFEASIBLE_PROGRAM = """import gurobipy as gp
m = gp.Model()
x = m.addVar(ub=1)
m.addConstr(x >= 2)
m.optimize()
"""


def test_literal_data_reads_module_level_literals_only() -> None:
    code = "a, b = [1, 2], 3\nc = {'k': 1.5}\nd = len(a)\nfor i in range(2):\n    e = i\n"
    assert peers.literal_data(code) == {"a": [1, 2], "b": 3, "c": {"k": 1.5}}


def test_knapsack_and_assignment_against_hand_derived_values() -> None:
    # capacity 5: items (w2, v3) + (w3, v4) = 7 beats (w4, v5) + nothing, and (w5, v6) alone
    assert peers.knapsack_best([2, 3, 4, 5], [3, 4, 5, 6], 5) == 7
    assert peers.knapsack_best([6], [10], 5) == 0
    # rows pick columns (1, 0, 2): 1 + 2 + 3 = 6; the diagonal costs 4 + 5 + 3 = 12
    assert peers.assignment_min([[4, 1, 9], [2, 5, 7], [8, 6, 3]]) == 6


def test_facility_answer_by_hand() -> None:
    # open facility 0 only: 100 + (1*10 + 1*20) / 10 = 103; facility 1 only: 100 + (9*10 + 9*20) / 10 = 127;
    # both: 200 + 3 = 203
    code = "supply, demand, cost = [50, 50], [10, 20], [[1, 1], [9, 9]]\n"
    assert peers.facility_answer(code) == pytest.approx(103.0)


def test_computed_answers_match_the_real_solvers(tmp_path: Path) -> None:
    """The CP-SAT and pywraplp programs the bench generates reach the computed answers when solved, as read by
    the recorder. In a fresh interpreter: OR-Tools' bundled HiGHS clashes with a highspy already loaded here."""
    for suite in peers.ortools_suites(1, seed=5):
        for program in suite.programs:
            path = tmp_path / f"{program.id}.py"
            path.write_text(peers.recorded_program(program.code, "ortools"))
            out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, check=True)
            marker = [line for line in out.stdout.splitlines() if line.startswith(peers.MARKER)][-1]
            last = peers.json.loads(marker[len(peers.MARKER) :])
            assert peers.judge_last(last, program.answer) == (True, pytest.approx(program.answer, rel=1e-6))


def test_judge_last_rules() -> None:
    assert peers.judge_last({"state": "optimal", "objective": 14.0}, 14.0) == (True, 14.0)
    assert peers.judge_last({"state": "optimal", "objective": 14.01}, 14.0) == (False, 14.01)
    assert peers.judge_last({"state": "optimal", "objective": 14.0 + 1e-4}, 14.0) == (True, 14.0 + 1e-4)
    assert peers.judge_last({"state": "infeasible", "objective": None}, None) == (True, None)
    assert peers.judge_last({"state": "infeasible", "objective": None}, 14.0) == (False, None)
    assert peers.judge_last({"state": "optimal", "objective": 3.0}, None) == (False, None)
    assert peers.judge_last({}, 14.0) == (False, None)
    assert peers.judge_last(None, 14.0) == (False, None)


def test_recorded_program_prints_the_last_solve_on_exit(tmp_path: Path) -> None:
    """What the SandboxFusion side reads: the marker line, written by the prelude after the program ends."""
    path = tmp_path / "main.py"
    path.write_text(peers.recorded_program(GUROBI_PROGRAM + "print('objective is', 99)\n", "gurobipy"))
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, check=True)
    lines = [line for line in out.stdout.splitlines() if line.startswith(peers.MARKER)]
    assert len(lines) == 1
    assert peers.judge_last(peers.json.loads(lines[0][len(peers.MARKER) :]), 14.0) == (True, 14.0)


@pytest.mark.slow
def test_exec_pool_objectives_timeout_and_errors() -> None:
    async def scenario() -> None:
        side = await peers.ExecSide("gurobipy").start()
        try:
            good = await side.check(peers.Program(id="g", code=GUROBI_PROGRAM, answer=14.0))
            wrong = await side.check(peers.Program(id="w", code=GUROBI_PROGRAM, answer=15.0))
            none = await side.check(peers.Program(id="i", code=INFEASIBLE_PROGRAM, answer=None))
            broken = await side.raw("raise ValueError('boom')", 10)
            first = side.pool._all[0].proc.pid
            loop = await side.raw(peers.LOOP_PROBE, 1.0)
            after = await side.check(peers.Program(id="g2", code=GUROBI_PROGRAM, answer=14.0))
        finally:
            await side.close()
        assert (good.correct, good.objective, good.status) == (True, 14.0, "ok")
        assert (wrong.correct, wrong.objective) == (False, 14.0)
        assert none.correct
        assert (broken.status, broken.detail) == ("error", "ValueError: boom")
        assert loop.status == "timeout"
        assert side.pool.replaced == 1
        assert after.correct, "the pool keeps working after a worker was replaced"
        assert first not in [w.proc.pid for w in side.pool._all]

    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.parametrize(("fork_per_program", "seen"), [(False, "yes\n"), (True, "no\n")])
def test_exec_pool_state_leaks_between_programs_unless_each_gets_a_fork(fork_per_program: bool, seen: str) -> None:
    """The baseline shares one interpreter per worker: what a program leaves in a module is seen by the next. The
    control side forks a child per program: nothing carries over, and a program ending its own process with
    os._exit is an error for that program, not a lost worker."""

    async def scenario() -> tuple[str, peers.Raw, int]:
        pool = peers.ExecPool(workers=1, modules=(), fork_per_program=fork_per_program)
        await pool.start()
        try:
            await pool.run("import json\njson.evom_left_behind = 'yes'", 10)
            seen = (await pool.run("import json\nprint(getattr(json, 'evom_left_behind', 'no'))", 10)).stdout
            return seen, await pool.run("import os\nos._exit(3)", 10), pool.replaced
        finally:
            await pool.close()

    got, ended, replaced = asyncio.run(scenario())
    assert got == seen
    assert ended.status == "error"
    if fork_per_program:
        assert "ended without a reply (wait status 768)" in ended.detail and replaced == 0
    else:
        assert ended.detail == "worker killed and replaced" and replaced == 1


@pytest.mark.parametrize(
    "argv",
    [["--gurobi", "0"], ["--rounds", "0"], ["--sandboxfusion-url", "127.0.0.1:8089"], ["--exec-pids-max", "2"]],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        peers.main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_probes_tell_the_isolated_side_from_the_unisolated_one() -> None:
    """The probes on the warm pool and the exec pool (no SandboxFusion): each cell is what happened there."""
    if not Path("/sys/fs/cgroup/pids").is_dir():
        pytest.skip("no cgroup v1 pids hierarchy: the exec pool's fork probe would be skipped")
    cells = asyncio.run(peers.probe_all(None, 24))
    listener = cells.pop("_listener")
    assert set(cells) == {"warm pool", "exec pool"}
    ours, bare = cells["warm pool"], cells["exec pool"]
    assert ours["network"].startswith("blocked") and "127.0.0.1" in bare["network"]
    assert bare["network"].startswith("**CONNECTED**")
    assert int(listener["accepted"]) == len(listener["hosts"].split(", "))
    assert ours["write"].startswith("refused") and bare["write"] == "**WROTE THE HOST FILE**"
    forks = {side: int(cell["fork"].split()[0]) for side, cell in cells.items()}
    assert forks["warm pool"] < peers.LIMITS.max_procs and "BlockingIOError" in ours["fork"]
    assert forks["exec pool"] < 24 and "pids.max 24" in bare["fork"]
    assert ours["loop"].startswith("timeout") and bare["loop"].startswith("timeout")


def test_run_all_reads_the_headline_from_the_report() -> None:
    """bench/run_all.py's row: the ratio comes from the first results table this bench writes."""
    run_all = load("run_all")
    programs = [peers.Program(id="a", code="", answer=1.0), peers.Program(id="b", code="", answer=2.0)]
    suite = peers.Suite(title="gurobipy reference programs", solver="gurobipy", programs=programs)
    side = {"correct": ["a", "b"], "flaky": [], "p50_ms": 10.0, "p95_ms": 20.0, "not_correct_last_round": {}}
    summary = {
        "warm pool": {**side, "programs_per_s": 30.0, "programs_per_s_per_core": 15.0},
        "exec pool": {**side, "programs_per_s": 40.0, "programs_per_s_per_core": 20.0},
        peers.FORKING: {**side, "programs_per_s": 24.0, "programs_per_s_per_core": 12.0},
    }
    report = "\n".join([*peers.headline_lines([(suite, summary)]), *peers.suite_lines(suite, summary, 3)])
    assert "| gurobipy reference programs | 0.75x | not run | 1.25x | yes |" in report
    assert "| exec pool, fork per program | 2/2 | 24.00 | 12.000 | 10 | 20 | 0.60x |" in report
    headline = run_all.peers_headline(report)
    assert (headline.ratio, headline.met) == (pytest.approx(0.75), None)  # issue 18 ended without a target
    assert headline.evom == "30.00 programs/s"
    assert headline.alternative == "40.00 programs/s (forking per program: 24.00, warm pool 1.25x)"
    with pytest.raises(ValueError, match="no gurobipy results table"):
        run_all.peers_headline("no tables here")


def test_report_says_where_the_warm_pools_time_went_and_which_side_reuses_a_process() -> None:
    runs = [{"refill": 0.004, "program": 0.010, "worker": 0.020}, {"refill": 0.006, "worker": 0.030}]
    assert peers.median_phases(runs) == pytest.approx({"refill": 5.0, "program": 10.0, "worker": 25.0})
    programs = [peers.Program(id="a", code="", answer=1.0)]
    suite = peers.Suite(title="OR-Tools CP-SAT programs", solver="ortools", programs=programs)
    side = {"correct": ["a"], "flaky": [], "p50_ms": 10.0, "p95_ms": 20.0, "not_correct_last_round": {}}
    summary = {
        "warm pool": {**side, "programs_per_s": 3.0, "programs_per_s_per_core": 1.5, "phases_ms": {"refill": 5.0}},
        "exec pool": {**side, "programs_per_s": 4.0, "programs_per_s_per_core": 2.0},
    }
    assert "- warm pool, median ms per run by step (`Result.phases`): refill 5.0" in peers.suite_lines(
        suite, summary, 1
    )
    cell = {"network": "n", "write": "w", "fork": "f", "loop": "l"}
    table = "\n".join(
        peers.isolation_lines(
            {"warm pool": cell, "exec pool": cell, "_listener": {"accepted": "0", "port": "1", "hosts": "h"}}
        )
    )
    assert "| process per program (by construction) | a fresh process per program" in table
    assert "**one process runs program after program**" in table


@pytest.mark.slow
@pytest.mark.skipif(not peers.os.environ.get("SANDBOXFUSION_URL"), reason="no SandboxFusion server (SANDBOXFUSION_URL)")
def test_sandboxfusion_side_reads_objectives_and_times_out() -> None:
    """Against a running SandboxFusion (see bench/RESULTS.md for how one was started): the marker is read
    back from its stdout, and its own run timeout stops a looping program."""

    async def scenario() -> tuple[peers.Check, peers.Check, peers.Raw]:
        side = await peers.FusionSide(peers.os.environ["SANDBOXFUSION_URL"], "gurobipy").start()
        good = await side.check(peers.Program(id="g", code=GUROBI_PROGRAM, answer=14.0))
        none = await side.check(peers.Program(id="i", code=INFEASIBLE_PROGRAM, answer=None))
        return good, none, await side.raw(peers.LOOP_PROBE, 2.0)

    good, none, loop = asyncio.run(scenario())
    assert (good.correct, good.objective, good.status) == (True, 14.0, "ok")
    assert none.correct
    assert loop.status == "timeout"
