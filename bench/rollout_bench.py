"""One rollout step done by the pipeline (engine.rollout) vs the same step done synchronously.

Synchronous means what a simple trainer does: generate every sample of the step, then verify them all (with
the same sandbox concurrency). The pipelined step verifies each completion the moment it is generated. Both
use the same policy, prompts, seeded sampling, sandbox pool and verifier, and the script checks that they
produced the same outcome for every (problem, sample), so the work is identical; only the overlap differs.

The policy is the toy of tests/engine/test_rollout_toy.py (a random Llama whose tokens decode to whole Gurobi
programs), so every sample is a real program verified in the real nsjail sandbox. Runs alternate sync and
pipelined to spread machine noise; medians are reported, and ratio = pipelined / synchronous (target <= 0.8).
The gain depends on the balance of the two phases: overlap can at best hide the shorter one, so the output
also gives that bound, max(gen, verify) / (gen + verify), from the synchronous run. The defaults (a 2-layer,
64-wide model, 8 rows per decode batch) make the phases comparable on a 2-core box, and give each phase one
core (decoding on one thread, one sandbox worker), as production gives generation GPUs and the sandbox CPUs;
overlap cannot create cores, so with `--workers 2` on 2 cores the phases slow each other down. With
`--program-sleep-s` each program first sleeps in the sandbox: verification time that uses no core here.

    .venv/bin/python bench/rollout_bench.py                       # defaults below, prints one JSON object
    .venv/bin/python bench/rollout_bench.py --prompts 16 --max-batch-size 64 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from engine.data import Problem
from engine.generation import SamplingParams
from engine.generation.local import LocalBackend, LocalConfig
from engine.prompts import PromptBuilder, PromptSettings
from engine.rollout import ProblemStream, Rollout, RolloutSettings, SolverVerifier, round_sampling
from sandbox import Limits, SandboxPool
from solvers import get_solver

TOY_FILE = Path(__file__).resolve().parents[1] / "tests" / "engine" / "test_rollout_toy.py"


def load_toy() -> Any:
    spec = importlib.util.spec_from_file_location("rollout_toy", TOY_FILE)
    module = sys.modules["rollout_toy"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=8, help="problems per step")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--max-batch-size", type=int, default=8, help="rows the local backend decodes together")
    p.add_argument("--hidden", type=int, default=64, help="toy model width (sets the generation cost)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--workers", type=int, default=1, help="sandbox workers = verification concurrency")
    p.add_argument("--torch-threads", type=int, default=1, help="decode threads (leaves cores to the sandbox)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--program-sleep-s", type=float, default=0.0,
                   help="each program sleeps this long in the sandbox first: solver time spent off this box's "
                   "cores, as when the sandbox has its own CPUs and the generator a GPU")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="event loop implementation")
    return p.parse_args(argv)


class Bench:
    def __init__(self, args: argparse.Namespace, pool: SandboxPool, backend: LocalBackend, policy: Any) -> None:
        self.args, self.pool, self.backend = args, pool, backend
        solver = get_solver("gurobipy")
        self.verifier = SolverVerifier(pool, solver)
        self.prompts = PromptBuilder(policy.tokenizer, instructions=solver.instructions,
                                     settings=PromptSettings(max_prompt_tokens=1024))  # fmt: skip
        self.problems = [Problem(id=f"p{i}", question=f"plant {i} makes {i + 2} products", answer=3.0)
                         for i in range(args.prompts)]  # fmt: skip
        self.sampling = SamplingParams(max_new_tokens=args.max_new_tokens, seed=args.seed)

    async def pipelined(self) -> tuple[float, dict[tuple[str, int], str], dict[str, Any]]:
        a = self.args
        settings = RolloutSettings(
            group_size=a.group_size, prompts_per_step=a.prompts, dynamic_sampling=False, max_gen_batches=1,
            max_staleness=0, queue_size=a.prompts * a.group_size, verify_concurrency=a.workers, seed=a.seed,
        )  # fmt: skip
        rollout = Rollout(backend=self.backend, verifier=self.verifier, prompts=self.prompts, problems=self.problems,
                          settings=settings, sampling=self.sampling)  # fmt: skip
        start = time.monotonic()
        async with rollout:
            result = await rollout.next_batch()
        elapsed = time.monotonic() - start
        outcomes = {(s.problem_id, s.sample_index): s.status for s in result.samples}
        keys = ("time_generating_s", "time_verifying_s", "time_waiting_verify_s", "gen_tokens")
        return elapsed, outcomes, {k: result.metrics[k] for k in keys}

    async def synchronous(self) -> tuple[float, dict[tuple[str, int], str], dict[str, Any]]:
        stream = ProblemStream(self.problems, seed=self.args.seed)  # the pipeline's data order
        problems = [stream.next()[1] for _ in range(self.args.prompts)]
        start = time.monotonic()
        ids = [self.prompts.build(p.question).ids for p in problems]
        params = round_sampling(self.sampling, 0)  # the pipeline's first round
        completions = [c async for c in self.backend.generate(ids, params, n=self.args.group_size)]
        generated = time.monotonic()
        gate = asyncio.Semaphore(self.args.workers)

        async def verify(c: Any) -> Any:
            async with gate:
                return await self.verifier.verify(problems[c.prompt_index], self.prompts.decode(c.token_ids))

        results = await asyncio.gather(*(verify(c) for c in completions))
        end = time.monotonic()
        outcomes = {(problems[c.prompt_index].id, c.sample_index): o.status
                    for c, o in zip(completions, results, strict=True)}  # fmt: skip
        tokens = sum(len(c.token_ids) for c in completions)
        return end - start, outcomes, {"time_generating_s": generated - start, "time_verifying_s": end - generated,
                                       "gen_tokens": tokens}  # fmt: skip


async def run(args: argparse.Namespace) -> dict[str, Any]:
    toy = load_toy()
    policy = toy.toy_policy(seed=args.seed, hidden=args.hidden, layers=args.layers, slow_s=args.program_sleep_s)
    local = LocalConfig(max_batch_size=args.max_batch_size, torch_threads=args.torch_threads)
    solver = get_solver("gurobipy")
    async with (
        SandboxPool(workers=args.workers, limits=Limits(wall_s=30), preload=solver.preload) as pool,
        LocalBackend(policy.model, local) as backend,
    ):
        bench = Bench(args, pool, backend, policy)
        await bench.synchronous()  # warm-up: first decode, first runs in each worker
        runs: dict[str, list[float]] = {"synchronous": [], "pipelined": []}
        details: dict[str, Any] = {}
        for _ in range(args.repeats):
            for name in ("synchronous", "pipelined"):
                seconds, outcomes, detail = await getattr(bench, name)()
                runs[name].append(seconds)
                details[name] = detail
                details.setdefault("outcomes", outcomes)
                if outcomes != details["outcomes"]:
                    raise SystemExit(f"{name} produced different outcomes: the two steps did not do the same work")
    sync_s, pipe_s = statistics.median(runs["synchronous"]), statistics.median(runs["pipelined"])
    gen_s, verify_s = details["synchronous"]["time_generating_s"], details["synchronous"]["time_verifying_s"]
    statuses: dict[str, int] = {}
    for status in details.pop("outcomes").values():
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "config": vars(args),
        "samples": args.prompts * args.group_size,
        "statuses": statuses,
        "synchronous_s": runs["synchronous"],
        "pipelined_s": runs["pipelined"],
        "median_synchronous_s": round(sync_s, 3),
        "median_pipelined_s": round(pipe_s, 3),
        "ratio_pipelined_over_synchronous": round(pipe_s / sync_s, 3),
        # Perfect overlap could at best hide the shorter phase: max(gen, verify) / (gen + verify).
        "overlap_bound": round(max(gen_s, verify_s) / (gen_s + verify_s), 3),
        "last_run_breakdown": details,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        print(json.dumps(runner.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
