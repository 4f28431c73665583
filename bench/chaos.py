"""Faults at a high rate against a steady verification load, and the same load without faults, in one run.

    .venv/bin/python bench/chaos.py [--fault sandbox] [--duration-s 30] [--interval-s 0.05,0.3] [--workers 2]
                                    [--concurrency 8] [--solver gurobipy] [--seed 0] [--out chaos.json]

The load: `engine.verifier.SolverVerifier` (the rollout's verifier, execution cache off, so every sample runs)
on a real solver program, for two problems that differ only in their answer: one the program solves (it must
score "correct", reward 1) and one it does not (it must score what it scores without faults). `--concurrency`
verifications are kept in flight. Phases, each `--duration-s` long: fault-free, then under faults, then
`--after-s` without faults again to see that the pool serves fully.

Reported (JSON on stdout, and in --out):
- faults injected (by kind) and what the pool did about them (its stats);
- samples: returned, excluded (sandbox_error: lost to a fault, excluded from training, counted), lost (a call
  that raised or never returned: must be 0), wrongly scored (an outcome other than the fault-free one, or
  excluded: must be 0);
- recovery: for each fault, the time from the fault to the first correct outcome of a verification that began
  after it (median, max; must stay within --recovery-bound-s), and after the faults stop, the time to the
  first such outcome. A fault with no such outcome before the run ends counts as unrecovered;
- throughput: samples per second with and without faults, and their ratio (scored samples only, too).

Fault classes: `sandbox` (sandbox.faults: SIGKILL of random sandbox workers and run children from a separate
process; `--roles worker,child,jail` adds the nsjail supervisors). Another class (a generation server killed
mid-stream, say) is one more entry in FAULTS: a function that runs the same phases with its own load and
injector and returns the same report fields.
Exit status 1 when a sample was lost or wrongly scored, a fault was not recovered from within the bound, or the
pool did not serve as without faults afterwards; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.verifier import INFRA_STATUSES, SolverVerifier  # noqa: E402
from sandbox import Limits, SandboxPool  # noqa: E402
from sandbox.faults import DEFAULT_ROLES, ROLES, Killer  # noqa: E402
from solvers import get_solver  # noqa: E402
from solvers.registry import solver_names  # noqa: E402

PROGRAMS = REPO / "tests" / "solvers" / "programs"
LP_OPTIMUM = 8 / 3  # tests/solvers/programs/<solver>_lp.py: max x + y s.t. 2x + y <= 4, x + 2y <= 4
LIMITS = Limits(wall_s=30, cpu_s=30, memory_mb=2048)
CALL_TIMEOUT_S = 120.0  # a verification that has not returned by then counts as lost


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: float | None


@dataclass
class Sample:
    problem: str
    began: float
    ended: float
    status: str  # the outcome's status, or "lost" when the call raised or timed out
    reward: float


async def load(verify: Callable[[Problem], Awaitable[Any]], problems: list[Problem], seconds: float, width: int):
    """Keep `width` verifications in flight for `seconds`; every sample, in the order they began."""
    samples: list[Sample] = []
    end = time.monotonic() + seconds

    async def one(problem: Problem) -> None:
        began = time.monotonic()
        try:
            outcome = await asyncio.wait_for(verify(problem), CALL_TIMEOUT_S)
            status, reward = outcome.status, outcome.reward
        except Exception as exc:  # a call that raised is a lost sample, reported as such
            print(f"chaos: a verification raised {type(exc).__name__}: {exc}", file=sys.stderr)
            status, reward = "lost", 0.0
        samples.append(Sample(problem.id, began, time.monotonic(), status, reward))

    async def lane(k: int) -> None:
        i = k
        while time.monotonic() < end:
            await one(problems[i % len(problems)])
            i += width

    await asyncio.gather(*(lane(k) for k in range(width)))
    return sorted(samples, key=lambda s: s.began)


def rates(samples: list[Sample], seconds: float) -> dict[str, float]:
    return {"samples_per_s": round(len(samples) / seconds, 2), "scored_per_s": round(_scored(samples) / seconds, 2)}


def _scored(samples: list[Sample]) -> int:
    return sum(s.status not in INFRA_STATUSES and s.status != "lost" for s in samples)


def recovery(events: list[float], samples: list[Sample], good: str) -> list[float]:
    """Per fault: seconds from the fault to the first correct outcome of a verification that began after it."""
    waits = []
    for t in events:
        ends = [s.ended for s in samples if s.began >= t and s.problem == good and s.status == "correct"]
        if ends:
            waits.append(round(min(ends) - t, 4))
    return waits


async def sandbox_faults(args: argparse.Namespace) -> dict[str, Any]:
    solver = get_solver(args.solver)
    completion = f"```python\n{(PROGRAMS / f'{args.solver}_lp.py').read_text()}```"
    good = Problem("solved", "max x + y s.t. 2x + y <= 4, x + 2y <= 4", LP_OPTIMUM)
    other = Problem("not-solved", "the same program judged against another answer", LP_OPTIMUM + 1)
    problems = [good, other]
    async with SandboxPool(workers=args.workers, limits=LIMITS, preload=solver.preload) as pool:
        verifier = SolverVerifier(pool, solver, cache=False)

        async def verify(problem: Problem) -> Any:
            return await verifier.verify(problem, completion)

        baseline = await load(verify, problems, args.duration_s, args.concurrency)
        expected = {p.id: Counter(s.status for s in baseline if s.problem == p.id) for p in problems}
        reference = {pid: counts.most_common(1)[0][0] for pid, counts in expected.items() if counts}
        if reference.get(good.id) != "correct":
            raise SystemExit(f"chaos: without faults the solved problem scored {dict(expected[good.id])}; no baseline")
        stats_before = dict(pool.stats)
        with Killer(interval=args.interval_s, seed=args.seed, roles=args.roles) as killer:
            faulty = await load(verify, problems, args.duration_s, args.concurrency)
            stopped = time.monotonic()
        after = await load(verify, problems, args.after_s, args.concurrency)
        pool_stats = {k: v - stats_before.get(k, 0) for k, v in pool.stats.items()}

    def wrong(samples: list[Sample]) -> list[Sample]:
        return [s for s in samples if s.status not in ("lost", *INFRA_STATUSES) and s.status != reference[s.problem]]

    kill_times = [t for t, _role, _pid in killer.events]
    waits = recovery(kill_times, faulty + after, good.id)
    first_after = recovery([stopped], after, good.id)
    return {
        "fault": "sandbox",
        "faults_injected": {"total": sum(killer.kills.values()), **killer.kills},
        "pool": pool_stats,
        "reference_status": reference,
        "samples": {
            phase: {
                "returned": sum(s.status != "lost" for s in samples),
                "excluded": sum(s.status in INFRA_STATUSES for s in samples),
                "lost": sum(s.status == "lost" for s in samples),
                "wrongly_scored": len(wrong(samples)),
                "statuses": dict(Counter(s.status for s in samples)),
            }
            for phase, samples in (("fault_free", baseline), ("faults", faulty), ("after", after))
        },
        "after_all_as_without_faults": not wrong(after) and all(s.status == reference[s.problem] for s in after),
        "recovery_s": {
            "bound": args.recovery_bound_s,
            "within_bound": len(waits) == len(kill_times) and all(w <= args.recovery_bound_s for w in waits),
            "faults_measured": len(waits),
            "median": round(statistics.median(waits), 4) if waits else None,
            "max": max(waits) if waits else None,
            "after_faults_stop": first_after[0] if first_after else None,
        },
        "throughput": {
            "fault_free": rates(baseline, args.duration_s),
            "faults": rates(faulty, args.duration_s),
            "ratio": round(len(faulty) / len(baseline), 3) if baseline else None,
            "scored_ratio": round(_scored(faulty) / _scored(baseline), 3) if _scored(baseline) else None,
        },
    }


FAULTS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {"sandbox": sandbox_faults}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fault", choices=sorted(FAULTS), default="sandbox", help="the class of faults to inject")
    p.add_argument("--duration-s", type=float, default=30.0, help="length of the fault-free and the faulty phase")
    p.add_argument("--after-s", type=float, default=5.0, help="length of the fault-free phase after the faults")
    p.add_argument("--interval-s", default="0.05,0.3", help="LOW,HIGH: seconds between faults, drawn uniformly")
    p.add_argument("--roles", default=",".join(DEFAULT_ROLES), help=f"what to kill, a subset of {','.join(ROLES)}")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8, help="verifications kept in flight")
    p.add_argument("--solver", choices=solver_names(), default="gurobipy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--recovery-bound-s",
        type=float,
        default=5.0,
        help="most seconds from a fault to the next correct outcome (a new worker starts in well under 1 s; a "
        "slot whose new workers are killed as they start backs off up to 1 s between tries; faults much faster "
        "than worker starts can keep a slot empty for longer)",
    )
    p.add_argument("--out", type=Path, help="also write the report here (JSON)")
    args = p.parse_args(argv)
    try:
        low, high = (float(x) for x in args.interval_s.split(","))
    except ValueError:
        p.error(f"--interval-s must be LOW,HIGH seconds, got {args.interval_s!r}")
    if not 0 < low <= high:
        p.error(f"--interval-s needs 0 < LOW <= HIGH, got {args.interval_s!r}")
    args.interval_s = (low, high)
    args.roles = tuple(args.roles.split(","))
    if not set(args.roles) <= set(ROLES):
        p.error(f"--roles must be a subset of {','.join(ROLES)}, got {','.join(args.roles)!r}")
    if min(args.duration_s, args.after_s, args.recovery_bound_s) <= 0 or args.workers < 1 or args.concurrency < 1:
        p.error("--duration-s, --after-s and --recovery-bound-s must be > 0, --workers and --concurrency >= 1")
    if not (PROGRAMS / f"{args.solver}_lp.py").exists():
        p.error(f"no LP program for --solver {args.solver} in {PROGRAMS}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = asyncio.run(FAULTS[args.fault](args))
    report["settings"] = {k: v if not isinstance(v, Path) else str(v) for k, v in vars(args).items()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    faulty = report["samples"]["faults"]
    if faulty["lost"] or faulty["wrongly_scored"] or not report["after_all_as_without_faults"]:
        print("chaos: FAILED: samples lost or wrongly scored, or the pool did not recover", file=sys.stderr)
        sys.exit(1)
    if not report["recovery_s"]["within_bound"]:
        print(f"chaos: FAILED: recovery beyond {args.recovery_bound_s} s: {report['recovery_s']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
