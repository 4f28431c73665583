"""Sandbox throughput, side by side in one run: the warm SandboxPool against (a) one cold nsjail per program,
(b) a plain unsandboxed `python file.py` per program, and (c) a bare fork from a warm, unsandboxed parent
that already imported the solver (the physical limit of this work).

Suites: the gurobipy reference programs in ../shared/data/benchmarks/reference_programs.jsonl (those whose
exec check passed), and generated OR-Tools programs: CP-SAT (knapsack + assignment) and pywraplp
(a GLOP transportation LP + a SCIP facility-location MIP). Each suite gets a pool preloading its solver.
Programs run one at a time in every mode; the modes alternate per program and round (rotated order), so
machine noise spreads evenly. Reported: median and interquartile range of the per-program latency,
programs/second, ratios.

    .venv/bin/python bench/sandbox_bench.py [--gurobi 30] [--ortools 10] [--rounds 3] [--out bench/sandbox_results.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sandbox import Limits, SandboxPool  # noqa: E402
from sandbox.jail import JailSpec  # noqa: E402

BENCHMARKS = REPO / ".." / "shared" / "data" / "benchmarks"
LIMITS = Limits(wall_s=60, cpu_s=60, memory_mb=4096, max_procs=64, output_bytes=1 << 20, tmp_mb=64)
MODES = ("warm pool", "cold nsjail", "plain python", "bare warm fork")

FORKER = r"""
import importlib, io, os, struct, sys, traceback
for name in sys.argv[1:]:
    importlib.import_module(name)
inp, out = sys.stdin.buffer, sys.stdout.buffer
while head := inp.read(4):
    code = inp.read(struct.unpack(">I", head)[0])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 1)
        os.dup2(w, 2)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False))
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        status = 0
        try:
            exec(compile(code, "main.py", "exec"), {"__name__": "__main__"})
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        os._exit(status)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, wait_status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    out.write(struct.pack(">II", wait_status, len(data)) + data)
    out.flush()
"""


# ----- programs ------------------------------------------------------------------------------------------


def gurobi_programs(n: int, seed: int) -> list[str]:
    path = BENCHMARKS / "reference_programs.jsonl"
    if not path.exists():
        raise SystemExit(f"missing {path}: the shared benchmarks must sit beside the repository")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("meta", {}).get("exec_check", {}).get("result") == "ok"]
    random.Random(seed).shuffle(rows)
    return [r["code"] for r in rows[:n]]


CPSAT = """from ortools.sat.python import cp_model
weights, values, capacity = {w}, {v}, {cap}
m = cp_model.CpModel()
take = [m.NewBoolVar(f"x{{i}}") for i in range(len(weights))]
m.Add(sum(w * x for w, x in zip(weights, take)) <= capacity)
cost = {cost}
n = len(cost)
a = [[m.NewBoolVar(f"a{{i}}_{{j}}") for j in range(n)] for i in range(n)]
for i in range(n):
    m.AddExactlyOne(a[i])
    m.AddExactlyOne(a[j][i] for j in range(n))
gain = sum(v * x for v, x in zip(values, take)) * 100
m.Maximize(gain - sum(cost[i][j] * a[i][j] for i in range(n) for j in range(n)))
solver = cp_model.CpSolver()
solver.parameters.max_time_in_seconds = 20
status = solver.Solve(m)
print(solver.StatusName(status), solver.ObjectiveValue())
"""

LINEAR = """from ortools.linear_solver import pywraplp
supply, demand, cost = {supply}, {demand}, {cost}
lp = pywraplp.Solver.CreateSolver("GLOP")
x = [[lp.NumVar(0, lp.infinity(), f"x{{i}}_{{j}}") for j in range(len(demand))] for i in range(len(supply))]
for i, s in enumerate(supply):
    lp.Add(sum(x[i]) <= s)
for j, d in enumerate(demand):
    lp.Add(sum(x[i][j] for i in range(len(supply))) >= d)
lp.Minimize(sum(cost[i][j] * x[i][j] for i in range(len(supply)) for j in range(len(demand))))
print("transport", lp.Solve(), lp.Objective().Value())
mip = pywraplp.Solver.CreateSolver("SCIP")
opened = [mip.BoolVar(f"o{{i}}") for i in range(len(supply))]
y = [[mip.NumVar(0, 1, f"y{{i}}_{{j}}") for j in range(len(demand))] for i in range(len(supply))]
for j in range(len(demand)):
    mip.Add(sum(y[i][j] for i in range(len(supply))) == 1)
for i in range(len(supply)):
    for j in range(len(demand)):
        mip.Add(y[i][j] <= opened[i])
mip.Minimize(sum(100 * o for o in opened) + sum(cost[i][j] * demand[j] * y[i][j] / 10
             for i in range(len(supply)) for j in range(len(demand))))
print("facility", mip.Solve(), mip.Objective().Value())
"""


def cpsat_programs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    programs = []
    for _ in range(n):
        items, size = rng.randint(15, 30), rng.randint(5, 8)
        w = [rng.randint(1, 30) for _ in range(items)]
        programs.append(
            CPSAT.format(
                w=w,
                v=[rng.randint(1, 50) for _ in range(items)],
                cap=sum(w) // 3,
                cost=[[rng.randint(1, 99) for _ in range(size)] for _ in range(size)],
            )
        )
    return programs


def linear_programs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    programs = []
    for _ in range(n):
        s, d = rng.randint(4, 8), rng.randint(6, 12)
        demand = [rng.randint(10, 40) for _ in range(d)]
        supply = [sum(demand) // s + rng.randint(5, 30) for _ in range(s)]
        cost = [[rng.randint(1, 20) for _ in range(d)] for _ in range(s)]
        programs.append(LINEAR.format(supply=supply, demand=demand, cost=cost))
    return programs


# ----- the four ways to run a program --------------------------------------------------------------------


@dataclass
class Runner:
    """Runs one program and says whether it exited cleanly; `start`/`stop` hold any warm state."""

    name: str
    run: Callable[[str], Awaitable[bool]]
    stop: Callable[[], Awaitable[None]] = field(default=lambda: asyncio.sleep(0))


async def _subprocess_ok(*argv: str, cwd: str | None = None) -> bool:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd
    )
    await proc.communicate()
    return proc.returncode == 0


async def make_runners(preload: tuple[str, ...], workdir: Path) -> list[Runner]:
    pool = SandboxPool(workers=1, limits=LIMITS, preload=preload)
    await pool.start()

    async def warm(code: str) -> bool:
        return (await pool.run(code)).status == "ok"

    spec = JailSpec.for_interpreter(tmp_mb=LIMITS.tmp_mb, time_limit_s=int(LIMITS.wall_s))
    program = workdir / "main.py"

    async def cold(code: str) -> bool:
        program.write_text(code)
        argv = spec.argv([spec.python, "/opt/prog/main.py"], files={str(program): "/opt/prog/main.py"})
        return await _subprocess_ok(*argv)

    async def plain(code: str) -> bool:
        program.write_text(code)
        return await _subprocess_ok(sys.executable, str(program), cwd=str(workdir))

    forker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FORKER, *preload, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert forker.stdin is not None and forker.stdout is not None

    async def fork(code: str) -> bool:
        data = code.encode()
        forker.stdin.write(struct.pack(">I", len(data)) + data)
        wait_status, size = struct.unpack(">II", await forker.stdout.readexactly(8))
        await forker.stdout.readexactly(size)
        return wait_status == 0

    async def stop_fork() -> None:
        forker.stdin.close()
        await forker.wait()

    return [
        Runner("warm pool", warm, pool.close),
        Runner("cold nsjail", cold),
        Runner("plain python", plain),
        Runner("bare warm fork", fork, stop_fork),
    ]


async def measure(programs: list[str], preload: tuple[str, ...], rounds: int) -> dict[str, dict[str, list[float]]]:
    """latency[mode] = per-program medians over the rounds (seconds); ok[mode] = clean exits."""
    with tempfile.TemporaryDirectory(prefix="sandbox-bench-") as tmp:
        runners = await make_runners(preload, Path(tmp))
        try:
            for r in runners:  # warm-up: first-touch costs (page cache, license checks) out of the numbers
                await r.run(programs[0])
            samples = {r.name: [[] for _ in programs] for r in runners}
            ok = {r.name: 0 for r in runners}
            for rnd in range(rounds):
                for p, code in enumerate(programs):
                    shift = (p + rnd) % len(runners)
                    for r in runners[shift:] + runners[:shift]:
                        t0 = time.perf_counter()
                        ok[r.name] += await r.run(code)
                        samples[r.name][p].append(time.perf_counter() - t0)
        finally:
            for r in runners:
                await r.stop()
    return {
        name: {"latency": [statistics.median(s) for s in per_program], "ok": [ok[name] / rounds]}
        for name, per_program in samples.items()
    }


# ----- report --------------------------------------------------------------------------------------------


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def targets(title: str, data: dict[str, dict[str, list[float]]], cold_target: float) -> str:
    """The issue's targets: warm pool >= cold_target x one cold nsjail, and within 1.15x of a bare warm fork."""
    warm = statistics.median(data["warm pool"]["latency"])
    cold = statistics.median(data["cold nsjail"]["latency"]) / warm
    fork = warm / statistics.median(data["bare warm fork"]["latency"])
    limit = statistics.median(data["cold nsjail"]["latency"]) / statistics.median(data["bare warm fork"]["latency"])
    verdict = "met" if cold >= cold_target and fork <= 1.15 else "MISSED"
    return (
        f"| {title} | {cold:.1f}x (target >= {cold_target:g}x) | {fork:.2f}x (target <= 1.15x) | {limit:.1f}x "
        f"| {verdict} |"
    )


def table(title: str, n: int, data: dict[str, dict[str, list[float]]]) -> list[str]:
    warm_median = statistics.median(data["warm pool"]["latency"])
    lines = [
        f"### {title} ({n} programs)",
        "",
        "| mode | median ms/program | IQR ms | programs/s at the median | total s (all programs) | "
        "clean exits | median vs warm pool |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        lat = data[mode]["latency"]
        q1, med, q3 = _quartiles(lat)
        lines.append(
            f"| {mode} | {med * 1e3:.1f} | {q1 * 1e3:.1f}-{q3 * 1e3:.1f} | {1 / med:.1f} | {sum(lat):.2f} | "
            f"{data[mode]['ok'][0]:.0f}/{n} | {med / warm_median:.2f}x |"
        )
    cold = statistics.median(data["cold nsjail"]["latency"]) / warm_median
    fork = warm_median / statistics.median(data["bare warm fork"]["latency"])
    per_cold = [c / w for c, w in zip(data["cold nsjail"]["latency"], data["warm pool"]["latency"], strict=True)]
    per_fork = [w / f for w, f in zip(data["warm pool"]["latency"], data["bare warm fork"]["latency"], strict=True)]
    lines += [
        "",
        f"- cold nsjail / warm pool: **{cold:.1f}x** on the median latency; per program, median "
        f"{statistics.median(per_cold):.1f}x (IQR {_iqr(per_cold)}).",
        f"- warm pool / bare warm fork: **{fork:.2f}x** on the median latency; per program, median "
        f"{statistics.median(per_fork):.2f}x (IQR {_iqr(per_fork)}).",
        "",
    ]
    return lines


def _iqr(values: list[float]) -> str:
    q1, _, q3 = _quartiles(values)
    return f"{q1:.2f}-{q3:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gurobi", type=int, default=30, help="gurobipy reference programs to run")
    parser.add_argument("--ortools", type=int, default=10, help="generated programs each for CP-SAT and pywraplp")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "sandbox_results.md")
    args = parser.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    suites = [
        ("gurobipy reference programs", gurobi_programs(args.gurobi, args.seed), ("gurobipy",)),
        ("OR-Tools CP-SAT programs", cpsat_programs(args.ortools, args.seed), ("ortools.sat.python.cp_model",)),
        (
            "OR-Tools pywraplp programs (GLOP + SCIP)",
            linear_programs(args.ortools, args.seed),
            ("ortools.linear_solver.pywraplp",),
        ),
    ]
    lines = [
        "# Sandbox throughput",
        "",
        f"Run {started} on {platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'}), "
        f"Python {platform.python_version()}; `{' '.join(sys.argv)}`. One program at a time in every mode; modes "
        f"alternate per program (rotated order), {args.rounds} rounds, per-program median. The machine is shared "
        "with other jobs, so absolute numbers are noisy: read the ratios, which come from the same run.",
        "",
        "Modes: **warm pool** = `SandboxPool(workers=1, preload=...)`, nsjail + seccomp + cgroups, fork per run; "
        "**cold nsjail** = one nsjail process per program with the same jail; **plain python** = `python "
        "main.py`, no sandbox; **bare warm fork** = fork of an unsandboxed parent that imported the solver.",
        "",
    ]
    verdicts = [
        "### Targets (issue 3), from this run",
        "",
        "| suite | cold nsjail / warm pool | warm pool / bare warm fork | cold nsjail / bare warm fork "
        "(the most any warm design can gain) | |",
        "|---|---:|---:|---:|---|",
    ]
    for title, programs, preload in suites:
        print(f"measuring {title}: {len(programs)} programs x {len(MODES)} modes x {args.rounds} rounds", flush=True)
        data = asyncio.run(measure(programs, preload, args.rounds))
        lines += table(title, len(programs), data)
        verdicts.append(targets(title, data, 3 if preload == ("gurobipy",) else 10))
        print("\n".join(lines[-12:]), flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [*verdicts, "", f"Load average (1, 5, 15 min) at the end of the run: {load} on {os.cpu_count()} CPUs.", ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
