"""The verifier's execution cache on a real run: replay its samples.jsonl step by step, with and without the cache.

Each step's completions (samples.jsonl `text`, what the rollout scored) are verified again in the run's own
setting (solver, reward and extraction rules, sandbox workers and limits from its config.yaml; its training data
for the answers, and for each problem's solver when the data names one), in the order the run verified them,
`sandbox.workers` at a time (the rollout's verify concurrency). Two arms in the same process, alternating step by
step: `SolverVerifier(cache=False)` and the cached one (engine.verifier.ExecutionCache). The report gives per step
and in total: completions, distinct texts, distinct programs after normalisation (engine.verifier.program_key),
cache hits and hit rate, the cache's own estimate of the sandbox seconds saved (verify/cache_saved_s), both arms'
wall times, and whether every outcome matched between the arms (it must: the cache only shares runs of equal
programs). Exit 0 when every outcome matched, 1 when one did not, 2 for bad input (no run, no verified sample).

Input: a run directory with config.yaml and samples.jsonl. `make learn` writes runs/learn-cpu (20 steps of PuLP
on the generator's intro problems; `make learn ARGS="run.seed=2 run.name=learn-cpu-s2"` a second seed); any
`python -m engine.run` directory works. bench/run_all.py replays every step of $EVOM_EXEC_CACHE_RUN, else of
runs/learn-cpu:

    .venv/bin/python bench/exec_cache_bench.py runs/learn-cpu
    .venv/bin/python bench/exec_cache_bench.py runs/learn-cpu --steps 3 --json /tmp/first-steps.json

The JSON (`--json PATH`; schema "exec_cache_bench/1"), for bench/run_all.py's RESULTS.md row:

    schema           "exec_cache_bench/1"
    run_dir          the replayed run directory, as given
    solver           the run's solver.name; solvers: every solver the replayed problems were verified with
    workers, isolation   the run's sandbox.workers and sandbox.isolation (the replay's too)
    load_avg_before, load_avg_after   1-minute load average around the replay (the machine is shared)
    steps            one object per replayed step: step, completions, distinct_texts, distinct_programs,
                     cache_hits, cache_runs, cache_hit_rate, cache_saved_s, wall_no_cache_s, wall_cache_s,
                     outcomes_match, status_as_recorded (as in total, for that step)
    total            over the replayed steps:
      steps              number of steps replayed
      completions        verified completions replayed (samples.jsonl rows with a verification start)
      with_program       completions with an extractable program (= cache_hits + cache_runs; the others run nothing)
      distinct_texts     distinct (problem, completion text) pairs among those, summed over steps
      distinct_programs  distinct (problem, normalised program) pairs, summed over steps
      cache_hits         verifications answered by another one's execution (no sandbox run)
      cache_runs         executions the cached arm started
      cache_hit_rate     cache_hits / (cache_hits + cache_runs); null when nothing ran
      cache_saved_s      sandbox seconds saved: for each hit, the wall time of the execution it shared
      wall_no_cache_s    wall seconds of the uncached arm's verifications, summed over steps
      wall_cache_s       the same for the cached arm
      wall_ratio_no_cache_over_cache   wall_no_cache_s / wall_cache_s (> 1: the cache made the step faster);
                         null when the cached arm took no measurable time
      outcomes_match     every outcome (status, objective, reward) equal between the arms
      status_as_recorded completions whose replayed status equals the one samples.jsonl recorded (a program with
                         a time-dependent result, or a run under other limits, can differ; informative only)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from engine.config import DataConfig, SandboxConfig, SolverConfig, build  # noqa: E402
from engine.data import assign_solvers, load_train  # noqa: E402
from engine.verifier import SolverVerifier, problem_solvers, program_key, solver_pools  # noqa: E402
from sandbox import SandboxPool  # noqa: E402
from solvers import get_solver  # noqa: E402
from solvers.extract import extract_code  # noqa: E402

SCHEMA = "exec_cache_bench/1"


class BenchInputError(ValueError):
    """The run cannot be replayed (exit 2)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="a run directory with config.yaml and samples.jsonl")
    p.add_argument("--steps", type=int, default=None, help="replay only the first N steps")
    p.add_argument("--json", default=None, help="also write the report here")
    return p.parse_args(argv)


def read_steps(run_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """samples.jsonl rows by step, each step in the order its verifications started (unverified rows left out)."""
    steps: dict[int, list[dict[str, Any]]] = defaultdict(list)
    with open(run_dir / "samples.jsonl") as f:
        for line in f:
            row = json.loads(line)
            if row.get("t_verify_start_s") is not None and row.get("text") is not None:
                steps[row["step"]].append(row)
    return {s: sorted(rows, key=lambda r: r["t_verify_start_s"]) for s, rows in sorted(steps.items())}


@dataclass(frozen=True)
class Sections:
    data: DataConfig
    solver: SolverConfig
    sandbox: SandboxConfig


def run_sections(path: Path) -> Sections:
    """The data, solver and sandbox sections of a run's config.yaml (the replay needs no other, and an older run's
    other sections may no longer pass today's cross-section checks)."""
    raw = yaml.safe_load(path.read_text()) or {}
    kinds = {"data": DataConfig, "solver": SolverConfig, "sandbox": SandboxConfig}
    return Sections(**{name: build(cls, raw.get(name, {}), where=name) for name, cls in kinds.items()})


async def replay(verifier: SolverVerifier, problems: dict[str, Any], rows: list[dict[str, Any]], width: int) -> Any:
    """Verify the rows, `width` at a time; (outcomes, wall seconds)."""
    gate = asyncio.Semaphore(width)

    async def one(row: dict[str, Any]) -> Any:
        async with gate:
            return await verifier.verify(problems[row["problem_id"]], row["text"])

    started = time.perf_counter()
    outcomes = await asyncio.gather(*(one(r) for r in rows))
    return outcomes, time.perf_counter() - started


def program_counts(rows: list[dict[str, Any]], extract: Any) -> tuple[int, int]:
    """(distinct texts, distinct (problem, program) keys) among the rows that hold a program."""
    texts, programs = set(), set()
    for row in rows:
        code = extract_code(row["text"], config=extract)
        if code is not None:
            texts.add((row["problem_id"], row["text"]))
            programs.add((row["problem_id"], program_key(code)))
    return len(texts), len(programs)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = run_sections(args.run_dir / "config.yaml")
    steps = read_steps(args.run_dir)
    if args.steps is not None:
        steps = dict(list(steps.items())[: args.steps])
    if not steps:
        raise BenchInputError(f"{args.run_dir / 'samples.jsonl'} holds no verified sample to replay")
    # The run's problems as engine.train verified them: each with its own solver when the data names one.
    problems = {p.id: p for p in assign_solvers(load_train(cfg.data).problems, cfg.solver.name)}
    replayed = {r["problem_id"] for rows in steps.values() for r in rows}
    missing = replayed - set(problems)
    if missing:
        raise BenchInputError(
            f"{len(missing)} problem ids of samples.jsonl are not in the run's data, e.g. {min(missing)}"
        )
    solver = get_solver(cfg.solver.name)
    solvers = problem_solvers([problems[i] for i in sorted(replayed)], solver)
    main = solver if solver in solvers else solvers[0]
    s = cfg.sandbox

    def make_pool(preload: tuple[str, ...]) -> SandboxPool:
        return SandboxPool(
            workers=s.workers, limits=s.limits, preload=preload, isolation=s.isolation, recycle_after=s.recycle_after
        )

    options = {"reward": cfg.solver.reward, "extract": cfg.solver.extract}
    report_steps = []
    load_before = os.getloadavg()[0]
    async with solver_pools(solvers, make_pool) as pools:
        plain = SolverVerifier(pools[main.name], main, pools=pools, cache=False, **options)
        cached = SolverVerifier(pools[main.name], main, pools=pools, cache=True, **options)
        await replay(plain, problems, next(iter(steps.values()))[:1], 1)  # warm-up: first run of each worker
        for step, rows in steps.items():
            plain_outcomes, plain_s = await replay(plain, problems, rows, s.workers)
            cached_outcomes, cached_s = await replay(cached, problems, rows, s.workers)
            metrics = cached.take_step_metrics()
            texts, programs = program_counts(rows, cfg.solver.extract)
            same = all(
                (a.status, a.objective, a.reward) == (b.status, b.objective, b.reward)
                for a, b in zip(plain_outcomes, cached_outcomes, strict=True)
            )
            recorded = sum(o.status == r.get("status") for o, r in zip(cached_outcomes, rows, strict=True))
            report_steps.append(
                {
                    "step": step,
                    "completions": len(rows),
                    "distinct_texts": texts,
                    "distinct_programs": programs,
                    **{k.removeprefix("verify/"): v for k, v in metrics.items()},
                    "wall_no_cache_s": plain_s,
                    "wall_cache_s": cached_s,
                    "outcomes_match": same,
                    "status_as_recorded": recorded,
                }
            )
    report = summarise(args, cfg, report_steps, solvers=[x.name for x in solvers])
    return {**report, "load_avg_before": load_before, "load_avg_after": os.getloadavg()[0]}


def summarise(
    args: argparse.Namespace, cfg: Any, steps: list[dict[str, Any]], *, solvers: list[str] | None = None
) -> dict[str, Any]:
    """The report (see the module docstring for every field) of the replayed steps' rows."""

    def total(key: str) -> float:
        return sum(s[key] for s in steps)

    hits, runs = total("cache_hits"), total("cache_runs")
    wall_cache = total("wall_cache_s")
    return {
        "schema": SCHEMA,
        "run_dir": str(args.run_dir),
        "solver": cfg.solver.name,
        "solvers": solvers or [cfg.solver.name],
        "workers": cfg.sandbox.workers,
        "isolation": cfg.sandbox.isolation,
        "steps": steps,
        "total": {
            "steps": len(steps),
            "completions": total("completions"),
            "with_program": hits + runs,
            "distinct_texts": total("distinct_texts"),
            "distinct_programs": total("distinct_programs"),
            "cache_hits": hits,
            "cache_runs": runs,
            "cache_hit_rate": hits / (hits + runs) if hits + runs else None,
            "cache_saved_s": total("cache_saved_s"),
            "wall_no_cache_s": total("wall_no_cache_s"),
            "wall_cache_s": total("wall_cache_s"),
            "wall_ratio_no_cache_over_cache": total("wall_no_cache_s") / wall_cache if wall_cache > 0 else None,
            "outcomes_match": all(s["outcomes_match"] for s in steps),
            "status_as_recorded": total("status_as_recorded"),
        },
    }


def table(report: dict[str, Any]) -> str:
    head = "step  n  texts  programs  hits  rate   saved_s  wall_plain_s  wall_cache_s  match"
    lines = [head]
    for s in [*report["steps"], {"step": "all", **report["total"]}]:
        n = s["completions"]
        rate = s["cache_hit_rate"]
        lines.append(
            f"{s['step']!s:>4} {n:>3} {s['distinct_texts']:>5} {s['distinct_programs']:>9} {s['cache_hits']:>5} "
            f"{'-' if rate is None else f'{rate:.2f}':>5} {s['cache_saved_s']:>8.2f} {s['wall_no_cache_s']:>13.2f} "
            f"{s['wall_cache_s']:>13.2f}  {s['outcomes_match']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (args.run_dir / "samples.jsonl").is_file() or not (args.run_dir / "config.yaml").is_file():
        print(f"exec_cache_bench: {args.run_dir} has no samples.jsonl and config.yaml", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(run(args))
    except BenchInputError as exc:
        print(f"exec_cache_bench: {exc}", file=sys.stderr)
        return 2
    print(table(report))
    print(json.dumps(report["total"], indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["total"]["outcomes_match"] else 1


if __name__ == "__main__":
    sys.exit(main())
