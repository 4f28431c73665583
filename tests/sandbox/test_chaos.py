"""Chaos: sandbox processes killed from outside (an operator, the host's OOM killer), one at a time and at random
during a batch of real solver programs. A run the pool's own machinery lost is `sandbox_error` (excluded from
training), a prepared child or worker that died before it got a program costs nothing, signals a program raises
itself stay its own, and nothing is left behind.

Run with `make test-chaos` (under the abuse tests' caps), or as part of `make test`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.verifier import INFRA_STATUSES, SolverVerifier
from sandbox import Limits, SandboxPool
from sandbox.faults import Killer, Proc, sandbox_processes
from solvers import get_solver, verify_code

pytestmark = pytest.mark.chaos

FAST = Limits(wall_s=10, cpu_s=10, memory_mb=512, max_procs=16, output_bytes=1 << 16, tmp_mb=16)
PROGRAMS = Path(__file__).resolve().parents[1] / "solvers" / "programs"
LP_OPTIMUM = 8 / 3  # max x + y s.t. 2x + y <= 4, x + 2y <= 4 (tests/solvers/programs/*_lp.py)
UP = "evom-up"  # a running program renames itself to this, so a test knows its program has started
MARK_UP = f"open('/proc/self/comm', 'w').write({UP!r})\n"


# ----- helpers ---------------------------------------------------------------------------------------


def wait_for(predicate, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


def running_program() -> Proc:
    def find() -> Proc | None:
        for proc in sandbox_processes():
            try:
                if Path(f"/proc/{proc.pid}/comm").read_text().strip() == UP:
                    return proc
            except OSError:
                continue
        return None

    return wait_for(find)


def kill(proc: Proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: not proc.alive())


# ----- one fault at a time ---------------------------------------------------------------------------


async def test_a_prepared_child_killed_while_it_waits_is_replaced_and_the_run_goes_to_a_fresh_one() -> None:
    # Failed before the fix: the run went to the dead child and came back "killed" with no output, a program
    # that never ran charged to the model.
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        assert (await pool.run("print(1)")).ok
        (waiting,) = wait_for(lambda: [p for p in sandbox_processes() if p.role == "child"])
        kill(waiting)
        r = await pool.run("print(6 * 7)")
        assert (r.status, r.stdout) == ("ok", "42\n"), r
        assert pool.stats["children_lost"] == 1
        assert (await pool.run("print(6 * 7)")).stdout == "42\n"


async def test_an_idle_worker_killed_unnoticed_does_not_lose_the_next_run() -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        assert (await pool.run("print(1)")).ok
        (worker,) = [p for p in sandbox_processes() if p.role == "worker"]
        os.kill(worker.pid, signal.SIGKILL)  # the run below is sent before the pool can notice the death
        r = await pool.run("print(6 * 7)")
        assert (r.status, r.stdout) == ("ok", "42\n"), r
        assert pool.stats["workers_replaced"] == 1


@pytest.mark.parametrize("victim", ["child", "worker", "jail"])
async def test_a_run_killed_from_outside_is_a_sandbox_error_never_the_programs(victim: str) -> None:
    # Failed before the fix for the child: the run came back "killed", which solvers.verify scores as an error.
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        task = asyncio.create_task(pool.run(MARK_UP + "import time\ntime.sleep(20)"))
        program = await asyncio.to_thread(running_program)
        target = program if victim == "child" else next(p for p in sandbox_processes() if p.role == victim)
        await asyncio.to_thread(kill, target)
        r = await asyncio.wait_for(task, 5)
        assert r.status == "sandbox_error", r
        assert (await pool.run("print(6 * 7)")).stdout == "42\n"


async def test_a_worker_that_stops_answering_loses_the_run_to_the_sandbox_not_to_the_program() -> None:
    # Failed before: the pool killed the jail and answered "timeout", which the verifier charges to the program.
    limits = dataclasses.replace(FAST, wall_s=1)
    async with SandboxPool(workers=1, limits=limits, preload=(), grace_s=0.5) as pool:
        task = asyncio.create_task(pool.run(MARK_UP + "import time\ntime.sleep(0.3)\nprint(6 * 7)"))
        await asyncio.to_thread(running_program)
        (worker,) = [p for p in sandbox_processes() if p.role == "worker"]
        os.kill(worker.pid, signal.SIGSTOP)  # an operator's ^Z, or a host too busy to schedule it
        r = await asyncio.wait_for(task, 10)
        assert r.status == "sandbox_error" and "did not answer" in r.reason, r
        assert (await pool.run("print(6 * 7)")).stdout == "42\n"
        assert pool.stats["workers_replaced"] == 1


@pytest.mark.slow
async def test_a_slot_whose_new_workers_keep_being_killed_is_refilled_once_the_kills_stop() -> None:
    # Failed before: a slot was given up after five failed starts, and the pool never served again.
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        (first,) = [p for p in sandbox_processes() if p.role == "worker"]
        with Killer(interval=(0.01, 0.02), roles=("worker",)) as killer:
            await asyncio.to_thread(wait_for, lambda: not first.alive())
            r = await asyncio.wait_for(pool.run("print(6 * 7)"), 30)  # every new worker dies as it starts
            assert r.status == "sandbox_error" and "no sandbox worker available" in r.reason, r
        assert killer.kills["worker"] >= 6, killer.kills
        r = await asyncio.wait_for(pool.run("print(6 * 7)"), 10)
        assert (r.status, r.stdout) == ("ok", "42\n"), r


@pytest.mark.parametrize(
    "code, sig",
    [
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", signal.SIGKILL),
        ("import os, signal\nos.killpg(0, signal.SIGTERM)", signal.SIGTERM),
        ("import signal\nsignal.raise_signal(signal.SIGTERM)", signal.SIGTERM),
        (
            "import os, signal, time\nif os.fork() == 0:\n    os.kill(os.getppid(), signal.SIGUSR1)\n    os._exit(0)\n"
            "time.sleep(5)",
            signal.SIGUSR1,
        ),
        ("import os\nos.abort()", signal.SIGABRT),
        ("import ctypes\nctypes.string_at(0)", signal.SIGSEGV),
        ("import signal, time\nsignal.setitimer(signal.ITIMER_REAL, 0.05)\ntime.sleep(5)", signal.SIGALRM),
    ],
)
async def test_signals_a_program_raises_itself_are_its_own(code: str, sig: int) -> None:
    async with SandboxPool(workers=1, limits=FAST, preload=()) as pool:
        r = await pool.run(code)
        assert (r.status, r.signal) == ("killed", sig), r


@pytest.mark.slow
async def test_the_sigkill_at_the_hard_cpu_limit_is_the_programs_timeout() -> None:
    # A program that ignores SIGXCPU dies of SIGKILL at the hard CPU limit: its limit, not a kill from outside.
    limits = Limits(wall_s=20, cpu_s=1, memory_mb=512, max_procs=16, output_bytes=1 << 16, tmp_mb=16)
    async with SandboxPool(workers=1, limits=limits, preload=()) as pool:
        r = await pool.run("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass")
        assert (r.status, r.signal) == ("timeout", signal.SIGKILL), r


async def test_a_kill_from_outside_is_excluded_from_training_or_retried_never_scored() -> None:
    solver = get_solver("gurobipy")
    code = MARK_UP + "import time\ntime.sleep(0.5)\n" + (PROGRAMS / "gurobipy_lp.py").read_text()
    async with SandboxPool(workers=1, limits=FAST, preload=solver.preload) as pool:
        for retries in (0, 1):
            task = asyncio.create_task(verify_code(pool, code, solver, LP_OPTIMUM, sandbox_retries=retries))
            await asyncio.to_thread(kill, await asyncio.to_thread(running_program))
            outcome = await asyncio.wait_for(task, 10)
            if retries == 0:
                assert outcome.status in INFRA_STATUSES, outcome
            else:  # verify retries a sandbox_error once; the second run is left alone
                assert (outcome.status, outcome.reward) == ("correct", 1.0), outcome


# ----- random kills during a batch -------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: float | None


async def verify_under_kills(verifier: SolverVerifier, problem: Problem, completion: str, killer: Killer) -> list:
    """Batches of 8 concurrent verifications until the killer has made its kills; every call must return."""
    outcomes = []
    end = time.monotonic() + 60
    while killer.running:
        assert time.monotonic() < end, "the killer did not make its kills in 60 s"
        batch = [verifier.verify(problem, completion) for _ in range(8)]
        outcomes += await asyncio.wait_for(asyncio.gather(*batch), 30)
    return outcomes


@pytest.mark.parametrize("solver_name", ["gurobipy", pytest.param("pulp", marks=pytest.mark.slow)])
async def test_random_kills_during_a_batch_cost_no_correct_program_its_score(solver_name: str) -> None:
    solver = get_solver(solver_name)
    completion = f"```python\n{(PROGRAMS / f'{solver_name}_lp.py').read_text()}```"
    problem = Problem("lp", "max x + y s.t. 2x + y <= 4, x + 2y <= 4", LP_OPTIMUM)
    limits = Limits(wall_s=20, cpu_s=20, memory_mb=1024)
    async with SandboxPool(workers=2, limits=limits, preload=solver.preload) as pool:
        verifier = SolverVerifier(pool, solver, cache=False)  # every verification runs its program
        seen = set(sandbox_processes())
        # runs' children only (prepared or running: cheap to replace, so a high rate), then workers too
        with Killer(interval=(0.04, 0.12), seed=19, roles=("child",), max_kills=6) as children:
            outcomes = await verify_under_kills(verifier, problem, completion, children)
        with Killer(interval=(0.1, 0.3), seed=19, max_kills=6) as anyone:
            outcomes += await verify_under_kills(verifier, problem, completion, anyone)
        seen |= children.seen | anyone.seen
        assert children.kills["child"] == 6 and sum(anyone.kills.values()) == 6, (children.kills, anyone.kills)
        statuses = [o.status for o in outcomes]
        # a program a kill reached is excluded (sandbox_error, after verify's one retry); every other is scored 1
        assert set(statuses) <= {"correct", *INFRA_STATUSES}, statuses
        assert all(o.reward == 1.0 for o in outcomes if o.status == "correct")
        assert statuses.count("correct") >= len(statuses) // 2, (statuses, children.kills, anyone.kills)
        after = await asyncio.gather(*(verifier.verify(problem, completion) for _ in range(20)))
        assert [(o.status, o.reward) for o in after] == [("correct", 1.0)] * 20, [o.reason for o in after]
        seen |= set(sandbox_processes())
    assert [p for p in seen if p.exists()] == [], "processes left after close()"


# ----- bench/chaos.py ----------------------------------------------------------------------------------

BENCH = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


@pytest.mark.parametrize(
    "argv",
    [
        ["--interval-s", "0.3"],
        ["--interval-s", "0.5,0.1"],
        ["--roles", "worker,nsjail"],
        ["--duration-s", "0"],
        ["--recovery-bound-s", "-1"],
    ],
)
def test_bench_chaos_refuses_bad_arguments(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, str(BENCH), *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "error:" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_bench_chaos_reports_no_lost_or_wrongly_scored_sample(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    argv = ["--duration-s", "1.5", "--after-s", "1", "--interval-s", "0.1,0.3", "--out", str(out)]
    proc = subprocess.run([sys.executable, str(BENCH), *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["faults_injected"]["total"] >= 3
    assert report["samples"]["faults"]["lost"] == report["samples"]["faults"]["wrongly_scored"] == 0
    assert report["after_all_as_without_faults"] and report["reference_status"]["solved"] == "correct"
    assert report["recovery_s"]["within_bound"] and report["recovery_s"]["faults_measured"] >= 3
    assert 0 < report["throughput"]["ratio"] <= 1.5
