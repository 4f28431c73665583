"""Faults at a high rate against a steady verification load, and the same load without faults, in one run.

    .venv/bin/python bench/chaos.py [--fault sandbox|generation|all] [--duration-s 30] [--interval-s LOW,HIGH]
                                    [--workers 2] [--concurrency 8] [--solver gurobipy] [--servers 2] [--seed 0]
                                    [--out chaos.json] [--json headline.json]

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

Fault classes (FAULTS: each a function that runs the same phases with its own load and injector and returns the
same report fields):
- `sandbox` (sandbox.faults: SIGKILL of random sandbox workers and run children from a separate process;
  `--roles worker,child,jail` adds the nsjail supervisors);
- `generation` (`generation_faults`): SGLang protocol peers in their own processes behind the rollout's
  `SGLangBackend`, under a steady load of generate calls and periodic weight updates; SIGKILL of a random peer,
  restarted on its port with its base weights. Wrongly scored: a sample without an error whose tokens are not
  those of its weight version (a restarted server's base weights passed off as the client's); duplicated: a
  sample delivered twice. Recovery is also reported as the time until the client routes to the restarted
  server again (`server_back_*`: its process start, health, and the reload of the current weights).
`--fault all` runs each class in turn. `--json PATH` writes each class's headline (faults, samples, excluded,
lost, duplicated, wrongly scored, recovery median/max and the bound, throughput ratio, passed) for
bench/run_all.py, keeping classes already in the file that this run did not run.
Exit status 1 when a sample was lost, duplicated or wrongly scored, a fault was not recovered from within the
bound, or the samples after the faults were not all as without faults; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
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


# ----- generation servers killed and restarted ---------------------------------------------------------------


@dataclass
class Generated:
    key: tuple[int, int]  # (generate call, sample index): each must come back exactly once
    began: float
    ended: float
    status: str  # "ok", "excluded" (a backend failure), "wrong" (tokens not of its weight version), "lost"
    version: int = 0


def _peer_module() -> Any:
    """tests/engine/sglang_server.py, for the tokens the peer decodes (`expected_tokens`)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sglang_server", REPO / "tests" / "engine" / "sglang_server.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["sglang_server"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class PeerProcess:
    """An SGLang protocol peer (tests/engine/peer_process.py) in its own process on a fixed port."""

    def __init__(self, port: int, token_delay_s: float) -> None:
        self.port, self.token_delay_s = port, token_delay_s
        self.url = f"http://127.0.0.1:{port}"
        self.proc: Any = None

    def start(self) -> None:
        import subprocess

        cmd = [sys.executable, str(REPO / "tests" / "engine" / "peer_process.py"), "sglang", "--port", str(self.port)]
        cmd += ["--token-delay-s", str(self.token_delay_s)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


async def generation_faults(args: argparse.Namespace) -> dict[str, Any]:
    """`--servers` SGLang protocol peers in their own processes behind one `SGLangBackend` (non-streamed requests,
    the client's default, or `--stream`); `--concurrency` generate calls (one prompt, 2 samples) kept in flight,
    a weight update (the same directory, the next version) every `--update-every-s`. Faults: SIGKILL of a random
    running peer, restarted on its port `--restart-after-s` later (with its base weights, as a restarted server
    has). A sample is wrongly scored when it came back without an
    error but with tokens other than those its reported weight version decodes, or a version older than the
    client's when it was sent; lost when its call raised or never delivered it; duplicated when delivered twice."""
    import socket
    import tempfile

    from engine.generation import SamplingParams
    from engine.generation.base import row_seed
    from engine.generation.sglang_client import SGLangBackend, SGLangConfig

    peer_module = _peer_module()
    ports = []
    for _ in range(args.servers):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    peers = [PeerProcess(port, args.token_delay_s) for port in ports]
    for peer in peers:
        peer.start()
    params = SamplingParams(max_new_tokens=args.max_new_tokens, seed=args.seed)
    config = SGLangConfig(
        urls=tuple(p.url for p in peers),
        wait_healthy_s=60,
        server_down_timeout_s=args.server_down_timeout_s,
        stream=args.stream,
        backoff_base_s=0.05,
        backoff_max_s=0.5,
    )
    calls = itertools.count()
    stats = {"updates": 0, "update_failures": 0}
    try:
        with tempfile.TemporaryDirectory() as weights:
            async with SGLangBackend(config) as backend:
                await backend.update_weights(weights, version=1)

                async def one(phase_samples: list[Generated]) -> None:
                    k = next(calls)
                    prompt = [3 + k % 997, 5 + k % 13, 7]
                    sent_version, began = backend.weight_version, time.monotonic()
                    seen: list[Any] = []
                    try:
                        async with asyncio.timeout(CALL_TIMEOUT_S):
                            seen = [c async for c in backend.generate([prompt], params, n=2)]
                    except Exception as exc:  # a call that raised loses what it did not deliver
                        print(f"chaos: a generate call raised {type(exc).__name__}: {exc}", file=sys.stderr)
                    ended = time.monotonic()
                    for c in seen:
                        status = "excluded" if c.failed or c.finish_reason == "abort" else "ok"
                        if status == "ok":
                            seed = row_seed(args.seed, 0, c.sample_index)
                            want, _, _ = peer_module.expected_tokens(
                                prompt, max_new_tokens=args.max_new_tokens, seed=seed, version=str(c.weight_version)
                            )
                            if list(c.token_ids) != want or c.weight_version < sent_version:
                                status = "wrong"
                        phase_samples.append(Generated((k, c.sample_index), began, ended, status, c.weight_version))
                    delivered = {c.sample_index for c in seen}
                    phase_samples += [Generated((k, j), began, ended, "lost") for j in range(2) if j not in delivered]

                async def run_load(seconds: float) -> list[Generated]:
                    out: list[Generated] = []
                    end = time.monotonic() + seconds

                    async def lane() -> None:
                        while time.monotonic() < end:
                            await one(out)

                    async def updates() -> None:
                        while time.monotonic() + args.update_every_s < end:
                            await asyncio.sleep(args.update_every_s)
                            try:
                                await backend.update_weights(weights)
                                stats["updates"] += 1
                            except Exception as exc:  # reported; the load goes on at the old version
                                stats["update_failures"] += 1
                                print(f"chaos: a weight update failed: {exc}", file=sys.stderr)

                    await asyncio.gather(updates(), *(lane() for _ in range(args.concurrency)))
                    return sorted(out, key=lambda s: s.began)

                rng = random.Random(args.seed)
                kills: list[tuple[float, int]] = []  # (time, peer index)
                back: list[float] = []  # per fault: seconds until the client routed to the restarted server again

                async def killer(stop: asyncio.Event) -> None:
                    while not stop.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), rng.uniform(*args.interval_s))
                        if stop.is_set():
                            return
                        running = [k for k, p in enumerate(peers) if p.proc.poll() is None]
                        if not running:
                            continue
                        k = rng.choice(running)
                        peers[k].kill()
                        t = time.monotonic()
                        kills.append((t, k))
                        await asyncio.sleep(args.restart_after_s)
                        peers[k].start()
                        endpoint = backend.endpoints[k]
                        # Back when the client routes to it again (health, then its weights reloaded).
                        deadline = time.monotonic() + args.server_down_timeout_s
                        while (endpoint.down is not None or endpoint.downs == 0) and time.monotonic() < deadline:
                            await asyncio.sleep(0.01)
                        back.append(round(time.monotonic() - t, 4) if endpoint.down is None else float("inf"))

                await run_load(min(3.0, args.duration_s))  # warm-up: each peer's first requests load its parsers
                baseline = await run_load(args.duration_s)
                stop = asyncio.Event()
                injector = asyncio.create_task(killer(stop))
                faulty = await run_load(args.duration_s)
                stop.set()
                await injector
                stopped = time.monotonic()
                deadline = stopped + args.server_down_timeout_s
                while any(e.down is not None for e in backend.endpoints) and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                after = await run_load(args.after_s)
                downs = {e.url: e.downs for e in backend.endpoints}
    finally:
        for peer in peers:
            peer.kill()

    def good_after(t: float, samples: list[Generated]) -> list[float]:
        ends = [s.ended for s in samples if s.began >= t and s.status == "ok"]
        return [min(ends) - t] if ends else []

    waits = [w for t, _ in kills for w in good_after(t, faulty + after)]
    first_after = good_after(stopped, after)
    finite_back = [b for b in back if b != float("inf")]

    def phase(samples: list[Generated]) -> dict[str, Any]:
        keys = Counter(s.key for s in samples)
        return {
            "returned": sum(s.status != "lost" for s in samples),
            "excluded": sum(s.status == "excluded" for s in samples),
            "lost": sum(s.status == "lost" for s in samples),
            "duplicated": sum(n - 1 for n in keys.values() if n > 1),
            "wrongly_scored": sum(s.status == "wrong" for s in samples),
            "statuses": dict(Counter(s.status for s in samples)),
        }

    return {
        "fault": "generation",
        "faults_injected": {"total": len(kills), **Counter(peers[k].url for _, k in kills)},
        "servers_marked_down": downs,
        "weight_updates": stats,
        "samples": {p: phase(s) for p, s in (("fault_free", baseline), ("faults", faulty), ("after", after))},
        "after_all_as_without_faults": all(s.status == "ok" for s in after),
        "recovery_s": {
            "bound": args.recovery_bound_s,
            "within_bound": len(waits) == len(kills) and all(w <= args.recovery_bound_s for w in waits),
            "faults_measured": len(waits),
            "median": round(statistics.median(waits), 4) if waits else None,
            "max": round(max(waits), 4) if waits else None,
            "after_faults_stop": round(first_after[0], 4) if first_after else None,
            "server_back_median": round(statistics.median(finite_back), 4) if finite_back else None,
            "server_back_max": max(back) if back else None,
        },
        "throughput": {
            "fault_free": rates_of(baseline, args.duration_s),
            "faults": rates_of(faulty, args.duration_s),
            "ratio": round(len(faulty) / len(baseline), 3) if baseline else None,
            "ok_ratio": round(_ok(faulty) / _ok(baseline), 3) if _ok(baseline) else None,
        },
    }


def rates_of(samples: list[Generated], seconds: float) -> dict[str, float]:
    return {"samples_per_s": round(len(samples) / seconds, 2), "ok_per_s": round(_ok(samples) / seconds, 2)}


def _ok(samples: list[Generated]) -> int:
    return sum(s.status == "ok" for s in samples)


FAULTS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "sandbox": sandbox_faults,
    "generation": generation_faults,
}
# Seconds between faults when --interval-s is not given: a sandbox worker restarts in well under a second, a
# generation server process in about one (more under load).
DEFAULT_INTERVALS = {"sandbox": (0.05, 0.3), "generation": (1.0, 3.0)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--fault", choices=[*sorted(FAULTS), "all"], default="sandbox", help="the class of faults to inject (all: each)"
    )
    p.add_argument("--duration-s", type=float, default=30.0, help="length of the fault-free and the faulty phase")
    p.add_argument("--after-s", type=float, default=5.0, help="length of the fault-free phase after the faults")
    p.add_argument(
        "--interval-s",
        default=None,
        help="LOW,HIGH: seconds between faults, drawn uniformly (default: sandbox 0.05,0.3; generation 1,3)",
    )
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
    g = p.add_argument_group("generation faults")
    g.add_argument("--servers", type=int, default=2, help="SGLang protocol peers, each in its own process")
    g.add_argument("--token-delay-s", type=float, default=0.01, help="the peers' time per token")
    g.add_argument("--max-new-tokens", type=int, default=16)
    g.add_argument(
        "--stream", action="store_true", help="stream samples (a sample cut mid-stream is a backend failure)"
    )
    g.add_argument("--restart-after-s", type=float, default=0.5, help="a killed peer starts again this much later")
    g.add_argument("--update-every-s", type=float, default=2.0, help="seconds between weight updates")
    g.add_argument(
        "--server-down-timeout-s", type=float, default=60.0, help="the client's bound on waiting for a server"
    )
    p.add_argument("--out", type=Path, help="also write the report here (JSON)")
    p.add_argument(
        "--json",
        type=Path,
        help="write each class's headline numbers here ({class: {faults, lost, ...}}; classes already in the file "
        "and not run now are kept)",
    )
    args = p.parse_args(argv)
    args.intervals = {}
    for fault, default in DEFAULT_INTERVALS.items():
        if args.interval_s is None:
            args.intervals[fault] = default
            continue
        try:
            low, high = (float(x) for x in args.interval_s.split(","))
        except ValueError:
            p.error(f"--interval-s must be LOW,HIGH seconds, got {args.interval_s!r}")
        if not 0 < low <= high:
            p.error(f"--interval-s needs 0 < LOW <= HIGH, got {args.interval_s!r}")
        args.intervals[fault] = (low, high)
    if args.servers < 1 or args.max_new_tokens < 1 or min(args.update_every_s, args.server_down_timeout_s) <= 0:
        p.error("--servers and --max-new-tokens must be >= 1, --update-every-s and --server-down-timeout-s > 0")
    if args.token_delay_s < 0 or args.restart_after_s < 0:
        p.error("--token-delay-s and --restart-after-s must be >= 0")
    args.roles = tuple(args.roles.split(","))
    if not set(args.roles) <= set(ROLES):
        p.error(f"--roles must be a subset of {','.join(ROLES)}, got {','.join(args.roles)!r}")
    if min(args.duration_s, args.after_s, args.recovery_bound_s) <= 0 or args.workers < 1 or args.concurrency < 1:
        p.error("--duration-s, --after-s and --recovery-bound-s must be > 0, --workers and --concurrency >= 1")
    if not (PROGRAMS / f"{args.solver}_lp.py").exists():
        p.error(f"no LP program for --solver {args.solver} in {PROGRAMS}")
    return args


def failures(report: dict[str, Any]) -> list[str]:
    """Why a class's run failed (empty: it passed)."""
    faulty, why = report["samples"]["faults"], []
    if faulty["lost"] or faulty["wrongly_scored"] or faulty.get("duplicated"):
        why.append(f"samples lost, wrongly scored or duplicated: {faulty}")
    if not report["after_all_as_without_faults"]:
        why.append("after the faults, not every sample came out as without faults")
    if not report["recovery_s"]["within_bound"]:
        why.append(f"recovery beyond {report['recovery_s']['bound']} s: {report['recovery_s']}")
    return why


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers a results table shows for one class."""
    faulty, recovery = report["samples"]["faults"], report["recovery_s"]
    return {
        "faults": report["faults_injected"]["total"],
        "samples": faulty["returned"] + faulty["lost"],
        "excluded": faulty["excluded"],
        "lost": faulty["lost"],
        "duplicated": faulty.get("duplicated", 0),
        "wrongly_scored": faulty["wrongly_scored"],
        "recovery_median_s": recovery["median"],
        "recovery_max_s": recovery["max"],
        "recovery_bound_s": recovery["bound"],
        "throughput_ratio": report["throughput"]["ratio"],
        "passed": not failures(report),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    reports = {}
    for fault in sorted(FAULTS) if args.fault == "all" else [args.fault]:
        args.interval_s = args.intervals[fault]
        report = asyncio.run(FAULTS[fault](args))
        settings = {k: v for k, v in vars(args).items() if k not in ("intervals", "fault")}
        report["settings"] = {k: v if not isinstance(v, Path) else str(v) for k, v in settings.items()}
        reports[fault] = report
    text = json.dumps(reports[args.fault] if args.fault != "all" else reports, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        table = json.loads(args.json.read_text()) if args.json.exists() else {}
        table |= {fault: headline(report) for fault, report in reports.items()}
        args.json.write_text(json.dumps(table, indent=2) + "\n")
    failed = {fault: failures(report) for fault, report in reports.items() if failures(report)}
    for fault, why in failed.items():
        print(f"chaos: FAILED ({fault}): {'; '.join(why)}", file=sys.stderr)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
