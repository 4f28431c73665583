"""The warm sandbox pool against what RL users run today, side by side in one run, at concurrency 2.

Sides:
- **warm pool**: `SandboxPool(workers=2, preload=solver.preload)` and the solver harness, exactly as
  verification runs a program (`solvers.verify.verify_code`): objective from the harness channel.
- **exec pool**: the unisolated baseline of SIRL-style pipelines (bench/exec_pool.py): two forked workers
  with the solver imported `exec` each program in-process; a timeout kills and replaces the worker; the
  objective comes from the solver objects (a wrapper on the solve calls keeps the last one).
- **SandboxFusion** (`--sandboxfusion-url`, default $SANDBOXFUSION_URL): its `POST /run_code` API, one
  fresh `python` per program; the same solve recorder is prepended to the program and prints the last
  solve as a marker line on stdout when the program exits.
- **exec pool, fork per program** (a control, not a peer): the exec pool whose workers fork a child per
  program, nothing isolated; the warm pool against it is what the jail adds to a fresh process per program.
  It is timed with the others but not probed (it isolates what the exec pool does, programs from each other
  aside).

Programs: the gurobipy reference programs of ../shared/data/benchmarks/reference_programs.jsonl (those whose
exec check passed, read from that path) with their answers, and the CP-SAT and pywraplp programs of
bench/sandbox_bench.py, whose answers are computed here without a solver (knapsack DP plus an assignment
DP; the facility model by enumerating the open sets). A program is correct when its last solve is optimal
and matches the answer (relative tolerance 1e-4, the reference file's exec check). Each round runs every
suite through every side (rotated order), two programs in flight per side; programs/s is the median round's
programs / wall time, per core divides it by the cores this process may use.

Isolation: three abuse programs on every side (a TCP connect to a listener of this process, a write
outside /tmp checked on the host afterwards, a bounded fork loop) plus a looping program under a 5 s
limit. The exec pool's fork loop runs in a pids cgroup of `--exec-pids-max` made by this script (the
baseline has no cap of its own); without cgroup v1 pids that probe is skipped. Run the bench under caps:

    /work/shared/tools/with-limits --pids 512 --mem-gb 8 --cpus 2 -- .venv/bin/python bench/sandbox_peers.py \\
        [--gurobi 30] [--ortools 10] [--rounds 3] [--sandboxfusion-url http://127.0.0.1:8089] \\
        [--out bench/out/sandbox-peers.md] [--json FILE]

SandboxFusion in lite isolation on one machine (root, cgroup v1, no docker; not on PyPI), as done here:
its source (github:bytedance/SandboxFusion) under /work/sbf/SandboxFusion; a Python 3.11 venv at
/work/sbf/conda/envs/sandbox with its pyproject dependencies from PyPI; `apt-get install sudo cgroup-tools
iptables`; `mkdir docs/build` (the server mounts the built docs); a copy of sandbox/configs/local.yaml as
evom_lite.yaml with `isolation: lite`; and, for its conda lookup of the "sandbox-runtime" env, a directory
/work/sbf/conda/condabin plus /work/sbf/conda/bin/activate putting this repository's .venv first on PATH
(so programs run with the same Python and solvers as the other sides). Then, from /work/sbf/SandboxFusion:
`SANDBOX_CONFIG=evom_lite with-limits --pids 512 --mem-gb 8 --cpus 2 -- /work/sbf/conda/envs/sandbox/bin/uvicorn
sandbox.server.server:app --host 127.0.0.1 --port 8089`. Lite mode leaves its network namespaces, NAT rules
and cgroups behind at shutdown; remove them (ip netns del, iptables -t nat -D, cgdelete) after stopping it.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import socket
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import sandbox_bench  # noqa: E402
from exec_pool import MARKER, RECORDER, SOLVER_MODULES, ExecPool, Raw, pids_cgroup  # noqa: E402

from sandbox import Limits, Result, SandboxPool  # noqa: E402
from solvers import get_solver  # noqa: E402
from solvers.reward import RewardConfig, matches  # noqa: E402
from solvers.verify import verify_code  # noqa: E402

CONCURRENCY = 2
LIMITS = sandbox_bench.LIMITS
REWARD = RewardConfig(tolerance=1e-4)
FORK_BOUND = 300  # the fork probe stops by itself here, below the 512-pid cap the bench runs under
PROBE_WALL_S = 5.0
FORKING = "exec pool, fork per program"  # the control side: see bench/exec_pool.py

# ----- programs and their answers --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Program:
    id: str
    code: str
    answer: float | None


@dataclass(frozen=True, kw_only=True)
class Suite:
    title: str
    solver: str
    programs: list[Program]


def gurobi_suite(n: int, seed: int) -> Suite:
    """sandbox_bench's selection of reference programs, each with its row's answer."""
    path = sandbox_bench.BENCHMARKS / "reference_programs.jsonl"
    codes = sandbox_bench.gurobi_programs(n, seed)  # exits with a message when the file is missing
    rows = {r["code"]: r for r in map(json.loads, path.read_text().splitlines()) if "code" in r}
    programs = [Program(id=rows[c]["id"], code=c, answer=rows[c]["answer"]) for c in codes]
    return Suite(title="gurobipy reference programs", solver="gurobipy", programs=programs)


def literal_data(code: str) -> dict[str, Any]:
    """The module-level names a program binds to literals (`a, b = [1], 2` included)."""
    data: dict[str, Any] = {}
    for node in ast.parse(code).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        with contextlib.suppress(ValueError, TypeError, SyntaxError):
            if isinstance(target, ast.Name):
                data[target.id] = ast.literal_eval(node.value)
            elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                for name, value in zip(target.elts, node.value.elts, strict=True):
                    if isinstance(name, ast.Name):
                        data[name.id] = ast.literal_eval(value)
    return data


def knapsack_best(weights: list[int], values: list[int], capacity: int) -> int:
    best = [0] * (capacity + 1)
    for w, v in zip(weights, values, strict=True):
        for c in range(capacity, w - 1, -1):
            best[c] = max(best[c], best[c - w] + v)
    return best[capacity]


def assignment_min(cost: list[list[int]]) -> int:
    """Minimum-cost perfect assignment, by a DP over the set of columns used by the first rows."""
    n = len(cost)
    best = {0: 0}
    for row in range(n):
        step: dict[int, int] = {}
        for used, total in best.items():
            for col in range(n):
                if not used >> col & 1:
                    key = used | 1 << col
                    step[key] = min(step.get(key, 1 << 62), total + cost[row][col])
        best = step
    return best[(1 << n) - 1]


def cpsat_answer(code: str) -> float:
    d = literal_data(code)
    return float(100 * knapsack_best(d["weights"], d["values"], d["capacity"]) - assignment_min(d["cost"]))


def facility_answer(code: str) -> float:
    """The last model the pywraplp program solves: open a set of facilities, each customer to its cheapest."""
    d = literal_data(code)
    supply, demand, cost = d["supply"], d["demand"], d["cost"]
    best = float("inf")
    for k in range(1, len(supply) + 1):
        for opened in combinations(range(len(supply)), k):
            total = 100 * k + sum(min(cost[i][j] * demand[j] / 10 for i in opened) for j in range(len(demand)))
            best = min(best, total)
    return best


def ortools_suites(n: int, seed: int) -> list[Suite]:
    cpsat = [
        Program(id=f"cpsat-{i}", code=c, answer=cpsat_answer(c))
        for i, c in enumerate(sandbox_bench.cpsat_programs(n, seed))
    ]
    linear = [
        Program(id=f"linear-{i}", code=c, answer=facility_answer(c))
        for i, c in enumerate(sandbox_bench.linear_programs(n, seed))
    ]
    return [
        Suite(title="OR-Tools CP-SAT programs", solver="ortools", programs=cpsat),
        Suite(title="OR-Tools pywraplp programs (GLOP + SCIP)", solver="ortools", programs=linear),
    ]


# ----- judging without the harness (exec pool and SandboxFusion) ---------------------------------------------


def recorded_program(code: str, solver: str) -> str:
    """The program as SandboxFusion runs it: the recorder, then the program unchanged (still __main__)."""
    modules = tuple(m for m in get_solver(solver).preload if m in SOLVER_MODULES)
    return f"{RECORDER}\n_evom_peer_record({modules!r}, at_exit=True)\n{code}"


def judge_last(last: dict[str, Any] | None, answer: float | None) -> tuple[bool, float | None]:
    """(correct, objective) of a last-solve record, by the rule every side shares."""
    if not last:
        return False, None
    state, objective = last.get("state"), last.get("objective")
    if answer is None:
        return state in ("infeasible", "unbounded", "inf_or_unbd"), None
    if state != "optimal" or not isinstance(objective, int | float):
        return False, None
    return matches(float(objective), answer, REWARD), float(objective)


# ----- the sides -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Check:
    correct: bool
    objective: float | None
    status: str
    latency_s: float


class Side(Protocol):
    name: str

    async def check(self, program: Program) -> Check: ...

    async def raw(self, code: str, wall_s: float) -> Raw: ...

    async def close(self) -> None: ...


class PoolSide:
    """The warm pool; `phases` collects each run's `Result.phases` (where its time went) for the report."""

    name = "warm pool"

    def __init__(self, solver: str | None) -> None:
        self.solver = solver
        preload = get_solver(solver).preload if solver else ()
        self.pool = SandboxPool(workers=CONCURRENCY, limits=LIMITS, preload=preload)
        self.phases: list[dict[str, float]] = []

    async def start(self) -> PoolSide:
        await self.pool.start()
        return self

    async def run(self, code: str, stdin: str = "", limits: Limits | None = None) -> Result:
        """`SandboxPool.run`, keeping the run's phases (verify_code runs programs through this)."""
        result = await self.pool.run(code, stdin=stdin, limits=limits)
        self.phases.append(result.phases)
        return result

    async def check(self, program: Program) -> Check:
        assert self.solver is not None
        t0 = time.perf_counter()
        outcome = await verify_code(self, program.code, self.solver, program.answer, reward=REWARD)
        return Check(
            correct=outcome.correct,
            objective=outcome.objective,
            status=outcome.status,
            latency_s=time.perf_counter() - t0,
        )

    async def raw(self, code: str, wall_s: float) -> Raw:
        r = await self.pool.run(code, limits=dataclasses.replace(LIMITS, wall_s=wall_s, cpu_s=wall_s))
        status = r.status if r.status in ("ok", "timeout", "sandbox_error") else "error"
        return Raw(status=status, stdout=r.stdout, detail=f"{r.status}, exit {r.exit_code}")

    async def close(self) -> None:
        await self.pool.close()


class ExecSide:
    def __init__(self, solver: str | None, pids_group: Path | None = None, fork_per_program: bool = False) -> None:
        modules = tuple(m for m in get_solver(solver).preload if m in SOLVER_MODULES) if solver else ()
        self.name = FORKING if fork_per_program else "exec pool"
        self.pool = ExecPool(
            workers=CONCURRENCY, modules=modules, pids_group=pids_group, fork_per_program=fork_per_program
        )

    async def start(self) -> ExecSide:
        await self.pool.start()
        return self

    async def check(self, program: Program) -> Check:
        t0 = time.perf_counter()
        raw = await self.pool.run(program.code, LIMITS.wall_s)
        correct, objective = judge_last(raw.last, program.answer) if raw.status == "ok" else (False, None)
        return Check(correct=correct, objective=objective, status=raw.status, latency_s=time.perf_counter() - t0)

    async def raw(self, code: str, wall_s: float) -> Raw:
        return await self.pool.run(code, wall_s)

    async def close(self) -> None:
        await self.pool.close()


class FusionSide:
    """SandboxFusion's `POST /run_code`, language python, one request per program."""

    name = "SandboxFusion"

    def __init__(self, url: str, solver: str | None) -> None:
        self.url, self.solver = url.rstrip("/") + "/run_code", solver

    async def start(self) -> FusionSide:
        reply = await self.raw("print('ready')", 30)
        if reply.status != "ok" or "ready" not in reply.stdout:
            raise SystemExit(f"SandboxFusion at {self.url} does not run Python: {reply.status} {reply.detail}")
        return self

    def _post(self, code: str, wall_s: float) -> dict[str, Any]:
        body = json.dumps({"code": code, "language": "python", "run_timeout": wall_s}).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=wall_s + 60) as response:
            return json.loads(response.read())

    async def raw(self, code: str, wall_s: float) -> Raw:
        try:
            reply = await asyncio.to_thread(self._post, code, wall_s)
        except OSError as exc:
            return Raw(status="sandbox_error", detail=f"request failed: {exc}")
        run = reply.get("run_result") or {}
        stdout = run.get("stdout") or ""
        if reply.get("status") == "SandboxError":
            return Raw(status="sandbox_error", stdout=stdout, detail=reply.get("message", "")[:300])
        if run.get("status") == "TimeLimitExceeded":
            return Raw(status="timeout", stdout=stdout, detail="TimeLimitExceeded")
        lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
        last = json.loads(lines[-1][len(MARKER) :]) if lines else None
        status = "ok" if reply.get("status") == "Success" else "error"
        return Raw(status=status, stdout=stdout, last=last, detail=f"exit {run.get('return_code')}")

    async def check(self, program: Program) -> Check:
        assert self.solver is not None
        t0 = time.perf_counter()
        raw = await self.raw(recorded_program(program.code, self.solver), LIMITS.wall_s)
        correct, objective = judge_last(raw.last, program.answer) if raw.status == "ok" else (False, None)
        return Check(correct=correct, objective=objective, status=raw.status, latency_s=time.perf_counter() - t0)

    async def close(self) -> None:
        return None


# ----- isolation probes --------------------------------------------------------------------------------------

FORK_PROBE = f"""import json, os, time
kids, stopped = [], None
for _ in range({FORK_BOUND}):
    try:
        pid = os.fork()
    except OSError as exc:
        stopped = type(exc).__name__ + ": " + str(exc.strerror)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
print(json.dumps({{"forks": len(kids), "stopped": stopped}}))
"""
LOOP_PROBE = "while True:\n    pass\n"


def network_probe(hosts: list[str], port: int) -> str:
    return f"""import json, socket
result = {{}}
for host in {hosts!r}:
    try:
        socket.create_connection((host, {port}), timeout=3).close()
        result[host] = "connected"
    except OSError as exc:
        result[host] = type(exc).__name__ + ": " + str(exc.strerror or exc)
print(json.dumps(result))
"""


def write_probe(path: Path) -> str:
    return f"""import json
try:
    with open({str(path)!r}, "w") as f:
        f.write("written from inside")
    result = "wrote"
except OSError as exc:
    result = type(exc).__name__ + ": " + str(exc.strerror or exc)
print(json.dumps(result))
"""


def host_address() -> str | None:
    """This machine's address on its default route (what a program would dial to reach the host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))  # UDP: picks the route, sends nothing
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def last_json(stdout: str) -> Any:
    for line in reversed(stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    return None


async def probe(side: Side, *, port: int, hosts: list[str], scratch: Path, fork_capped: bool) -> dict[str, str]:
    """One cell per probe: what the program managed, and what stopped it."""
    cells = {}
    raw = await side.raw(network_probe(hosts, port), 30)
    reached = last_json(raw.stdout)
    if not isinstance(reached, dict):
        cells["network"] = f"no report ({raw.status}: {raw.detail})"
    else:
        connected = [h for h, r in reached.items() if r == "connected"]
        refusals = sorted({r for r in reached.values() if r != "connected"})
        cells["network"] = (
            f"**CONNECTED** to {', '.join(connected)}" if connected else f"blocked ({'; '.join(refusals)})"
        )
    target = scratch / f"{side.name.replace(' ', '-').lower()}.txt"
    raw = await side.raw(write_probe(target), 30)
    wrote = last_json(raw.stdout)
    if target.exists():
        cells["write"] = "**WROTE THE HOST FILE**"
    elif wrote == "wrote":
        cells["write"] = "written inside its own view only; the host file is untouched"
    else:
        cells["write"] = f"refused ({wrote or raw.status + ': ' + raw.detail})"
    if not fork_capped:
        cells["fork"] = "skipped: no pids cgroup could be made to cap this side"
    else:
        raw = await side.raw(FORK_PROBE, 60)
        forks = last_json(raw.stdout)
        if not isinstance(forks, dict):
            cells["fork"] = f"no report ({raw.status}: {raw.detail})"
        elif forks["stopped"]:
            cells["fork"] = f"{forks['forks']} forks, then {forks['stopped']}"
        else:
            cells["fork"] = f"**all {forks['forks']} forks** (the probe's own bound)"
    t0 = time.perf_counter()
    raw = await side.raw(LOOP_PROBE, PROBE_WALL_S)
    cells["loop"] = f"{raw.status} after {time.perf_counter() - t0:.1f} s"
    return cells


async def probe_all(url: str | None, exec_pids_max: int) -> dict[str, dict[str, str]]:
    accepted = 0

    async def on_connect(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(on_connect, "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    hosts = ["127.0.0.1", *filter(None, [host_address()])]
    scratch = Path("/var/tmp") / f"evom-peers-{os.getpid()}"  # outside /tmp, writable by anyone who can see it
    scratch.mkdir(parents=True)
    scratch.chmod(0o777)
    cells: dict[str, dict[str, str]] = {}
    try:
        with pids_cgroup(exec_pids_max) as group:
            sides: list[Any] = [PoolSide(None), ExecSide(None, pids_group=group)]
            if url:
                sides.append(FusionSide(url, None))
            for side in sides:
                await side.start()
                try:
                    capped = group is not None or not isinstance(side, ExecSide)
                    cells[side.name] = await probe(side, port=port, hosts=hosts, scratch=scratch, fork_capped=capped)
                finally:
                    await side.close()
            if group is not None:
                cells["exec pool"]["fork"] += f" (the bench's cap: pids.max {exec_pids_max}; the baseline has none)"
    finally:
        server.close()
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()
    cells["_listener"] = {"accepted": str(accepted), "port": str(port), "hosts": ", ".join(hosts)}
    return cells


# ----- measurement -------------------------------------------------------------------------------------------


async def run_batch(side: Side, programs: list[Program]) -> tuple[float, list[Check]]:
    """Every program through `side`, CONCURRENCY in flight; (wall seconds, checks in program order)."""
    results: list[Check | None] = [None] * len(programs)
    indices = iter(range(len(programs)))

    async def lane() -> None:
        for i in indices:
            results[i] = await side.check(programs[i])

    t0 = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
    return time.perf_counter() - t0, [r for r in results if r is not None]


async def measure(suite: Suite, url: str | None, rounds: int) -> dict[str, dict[str, Any]]:
    """Per side: the wall time and checks of each round; sides rotate their order every round."""
    sides: list[Any] = [
        await PoolSide(suite.solver).start(),
        await ExecSide(suite.solver).start(),
        await ExecSide(suite.solver, fork_per_program=True).start(),
    ]
    try:
        if url:
            sides.append(await FusionSide(url, suite.solver).start())
        for side in sides:  # first-touch costs (page cache, license checks) of every worker out of the numbers
            await run_batch(side, suite.programs[:CONCURRENCY])
        sides[0].phases.clear()
        data: dict[str, dict[str, Any]] = {s.name: {"walls": [], "checks": []} for s in sides}
        for rnd in range(rounds):
            shift = rnd % len(sides)
            for side in sides[shift:] + sides[:shift]:
                wall, checks = await run_batch(side, suite.programs)
                data[side.name]["walls"].append(wall)
                data[side.name]["checks"].append(checks)
        data["exec pool"]["replaced_workers"] = sides[1].pool.replaced
        data["warm pool"]["phases"] = sides[0].phases
    finally:
        for side in sides:
            await side.close()
    return data


def summarize(suite: Suite, data: dict[str, dict[str, Any]], cores: int) -> dict[str, dict[str, Any]]:
    ids = [p.id for p in suite.programs]
    out = {}
    for name, d in data.items():
        rounds = d["checks"]
        always = [i for n, i in enumerate(ids) if all(r[n].correct for r in rounds)]
        sometimes = [i for n, i in enumerate(ids) if any(r[n].correct for r in rounds) and i not in always]
        latencies = sorted(c.latency_s for r in rounds for c in r)
        rate = statistics.median(len(ids) / w for w in d["walls"])
        statuses: dict[str, int] = {}
        for c in rounds[-1]:
            if not c.correct:
                statuses[c.status] = statuses.get(c.status, 0) + 1
        out[name] = {
            "correct": always,
            "flaky": sometimes,
            "programs_per_s": rate,
            "programs_per_s_per_core": rate / cores,
            "p50_ms": 1e3 * statistics.median(latencies),
            "p95_ms": 1e3 * (statistics.quantiles(latencies, n=20)[18] if len(latencies) > 1 else latencies[0]),
            "walls_s": d["walls"],
            "not_correct_last_round": statuses,
        }
        if d.get("phases"):
            out[name]["phases_ms"] = median_phases(d["phases"])
    return out


PHASES = ("refill", "to_program", "program", "exit", "reap", "cleanup", "worker", "host")


def median_phases(phases: list[dict[str, float]]) -> dict[str, float]:
    """Median milliseconds per step over the runs that report it (`program` and `exit` need the program to return)."""
    out = {}
    for key in PHASES:
        values = [p[key] for p in phases if key in p]
        if values:
            out[key] = 1e3 * statistics.median(values)
    return out


# ----- report --------------------------------------------------------------------------------------------------


def suite_lines(suite: Suite, summary: dict[str, dict[str, Any]], rounds: int) -> list[str]:
    n = len(suite.programs)
    base = summary["exec pool"]["programs_per_s"]
    lines = [
        f"### {suite.title} ({n} programs, {rounds} rounds, {CONCURRENCY} in flight per side)",
        "",
        "| side | correct (every round) | programs/s (median round) | per core | p50 ms | p95 ms | vs exec pool |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {len(s['correct'])}/{n} | {s['programs_per_s']:.2f} | {s['programs_per_s_per_core']:.3f} "
            f"| {s['p50_ms']:.0f} | {s['p95_ms']:.0f} | {s['programs_per_s'] / base:.2f}x |"
        )
    sets = {name: set(s["correct"]) for name, s in summary.items()}
    reference = sets["warm pool"]
    differ = [
        f"{name}: missing {sorted(reference - got)}, extra {sorted(got - reference)}"
        for name, got in sets.items()
        if got != reference
    ]
    lines += ["", f"- correct sets equal on every side: {'yes' if not differ else 'NO; ' + '; '.join(differ)}"]
    if "phases_ms" in summary["warm pool"]:
        steps = ", ".join(f"{k} {v:.1f}" for k, v in summary["warm pool"]["phases_ms"].items())
        lines.append(f"- warm pool, median ms per run by step (`Result.phases`): {steps}")
    for name, s in summary.items():
        if s["flaky"] or s["not_correct_last_round"]:
            lines.append(f"- {name}: not correct in the last round {s['not_correct_last_round']}, flaky {s['flaky']}")
    return [*lines, ""]


def headline_lines(results: list[tuple[Suite, dict[str, dict[str, Any]]]]) -> list[str]:
    fusion = any("SandboxFusion" in s for _, s in results)
    lines = [
        "### Headline",
        "",
        "| suite | warm pool / exec pool programs/s (target >= 1) | warm pool / SandboxFusion programs/s "
        f"(target >= 3) | warm pool / {FORKING} programs/s (no target) | correct sets equal |",
        "|---|---:|---:|---:|---|",
    ]
    for suite, s in results:
        ours = s["warm pool"]["programs_per_s"]
        vs_fusion = f"{ours / s['SandboxFusion']['programs_per_s']:.2f}x" if fusion else "not run"
        vs_forking = f"{ours / s[FORKING]['programs_per_s']:.2f}x" if FORKING in s else "not run"
        equal = "yes" if len({frozenset(v["correct"]) for v in s.values()}) == 1 else "NO"
        lines.append(
            f"| {suite.title} | {ours / s['exec pool']['programs_per_s']:.2f}x | {vs_fusion} | {vs_forking} | {equal} |"
        )
    lines += [
        "",
        "The exec pool runs every program of a worker in one reused process (no fork, and no isolation between "
        "programs); the warm pool forks a fresh process in the jail for each program, so its ratio to the exec "
        f"pool is the price of that fork, of a fresh process's first touches and of its exit. The {FORKING} "
        "(a control, not a peer) is the exec pool with one change: each program runs in a child its worker "
        "forks for it, with nothing isolated; the warm pool's ratio to it is what the jail costs on top of the "
        "fresh process.",
    ]
    return [*lines, ""]


PROBES = (
    ("network", "TCP connect to a listener of the bench ({hosts}, port {port})"),
    ("write", "write a file outside /tmp (a 0777 directory under /var/tmp), then look for it on the host"),
    ("fork", f"fork loop (stops by itself at {FORK_BOUND}), children sleep"),
    ("loop", f"`while True: pass` under a {PROBE_WALL_S:g} s limit"),
)
MEMORY = {
    "warm pool": f"cgroup v1 memory per worker + RLIMIT_AS ({LIMITS.memory_mb} MiB per run)",
    "exec pool": "none",
    "SandboxFusion": "lite: a cgroup with memory.limit_in_bytes 4G (fixed in the lite runner)",
}
PROCESS = {
    "warm pool": "a fresh process per program (forked from the warm worker when the previous run's are all dead)",
    "exec pool": "**one process runs program after program**: what a program leaves in a module the next one sees",
    "SandboxFusion": "a fresh `python` per program",
}


def isolation_lines(cells: dict[str, dict[str, str]]) -> list[str]:
    listener = cells.pop("_listener")
    names = list(cells)
    lines = [
        "### What each side isolates (the same probes on every side)",
        "",
        f"| probe | {' | '.join(names)} |",
        f"|---|{'---|' * len(names)}",
    ]
    for key, what in PROBES:
        lines.append(f"| {what.format(**listener)} | {' | '.join(cells[n][key] for n in names)} |")
    lines.append(f"| memory (by configuration, not probed) | {' | '.join(MEMORY[n] for n in names)} |")
    lines.append(f"| process per program (by construction) | {' | '.join(PROCESS[n] for n in names)} |")
    lines += ["", f"The listener accepted {listener['accepted']} connection(s) in all.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gurobi", type=int, default=30, help="gurobipy reference programs")
    parser.add_argument("--ortools", type=int, default=10, help="generated programs each for CP-SAT and pywraplp")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sandboxfusion-url", default=os.environ.get("SANDBOXFUSION_URL") or None)
    parser.add_argument("--exec-pids-max", type=int, default=128, help="the bench's pids cap on the exec pool")
    parser.add_argument("--no-probes", action="store_true", help="skip the isolation probes")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "sandbox-peers.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    if args.gurobi < 1 or args.ortools < 0 or args.rounds < 1 or args.exec_pids_max < 8:
        parser.error("--gurobi and --rounds must be >= 1, --ortools >= 0, --exec-pids-max >= 8")
    url = args.sandboxfusion_url
    if url and not url.startswith(("http://", "https://")):
        parser.error(f"--sandboxfusion-url must be an http(s) URL, got {url!r}")
    cores = len(os.sched_getaffinity(0))
    suites = [gurobi_suite(args.gurobi, args.seed)]
    if args.ortools:
        suites += ortools_suites(args.ortools, args.seed)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = []
    for suite in suites:
        print(f"measuring {suite.title}: {len(suite.programs)} programs x {args.rounds} rounds", flush=True)
        results.append((suite, summarize(suite, asyncio.run(measure(suite, url, args.rounds)), cores)))
        print("\n".join(suite_lines(suite, results[-1][1], args.rounds)), flush=True)
    cells = None if args.no_probes else asyncio.run(probe_all(url, args.exec_pids_max))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# The warm pool against an unisolated exec pool and SandboxFusion",
        "",
        f"Run {started} on {platform.node()} ({cores} usable cores), Python {platform.python_version()}; "
        f"`{' '.join(sys.argv)}`. Sides alternate per suite and round; load average at the end: {load}.",
        "",
        *headline_lines(results),
    ]
    for suite, summary in results:
        lines += suite_lines(suite, summary, args.rounds)
    if cells is not None:
        lines += isolation_lines(dict(cells))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    if args.json:
        payload = {"suites": {s.title: summary for s, summary in results}, "probes": cells, "argv": sys.argv}
        args.json.write_text(json.dumps(payload, indent=1))
    print("\n".join(lines[-12:]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
