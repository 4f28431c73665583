"""Ctrl-C in the middle of a rollout: no sandbox process survives, no task hangs, metrics and samples are flushed.

The test starts this file as a script (a training-like loop over the real pipeline: local backend, nsjail pool,
Gurobi verifier, every program sleeping in the sandbox so verifications are in flight), waits until programs
are running in jails, sends SIGINT to the script's pid, and then checks by pid every process the script's tree
ever held. Run: .venv/bin/pytest tests/engine/test_rollout_sigint.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

toy = sys.modules.get("rollout_toy")
if toy is None:  # shared with the other rollout tests and the bench; loaded by path (tests/ is no package)
    _spec = importlib.util.spec_from_file_location("rollout_toy", Path(__file__).with_name("test_rollout_toy.py"))
    toy = sys.modules["rollout_toy"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(toy)


def _marking_verifier(pool, solver, marker: Path):
    """The real verifier, leaving a file behind when the first verification starts (the test's cue)."""
    from engine.verifier import SolverVerifier

    class MarkingVerifier(SolverVerifier):
        async def verify(self, problem, text):
            marker.touch()
            return await super().verify(problem, text)

    return MarkingVerifier(pool, solver)


async def _child(run_dir: Path) -> None:
    from engine.data.problem import Problem
    from engine.generation import SamplingParams
    from engine.generation.local import LocalBackend
    from engine.prompts import PromptBuilder, PromptSettings
    from engine.records import RunRecorder
    from engine.rollout import Rollout, RolloutSettings
    from sandbox import Limits, SandboxPool
    from solvers import get_solver

    solver = get_solver("gurobipy")
    policy = toy.toy_policy(seed=6, slow_s=5.0)
    problems = [Problem(id=f"p{i}", question=f"plant {i}", answer=toy.ANSWER) for i in range(8)]
    settings = RolloutSettings(
        group_size=4,
        prompts_per_step=2,
        dynamic_sampling=True,
        max_gen_batches=2,
        max_staleness=0,
        queue_size=4,
        verify_concurrency=2,
    )
    prompts = PromptBuilder(
        policy.tokenizer, instructions=solver.instructions, settings=PromptSettings(max_prompt_tokens=512)
    )
    try:
        async with (
            SandboxPool(workers=2, limits=Limits(wall_s=30), preload=solver.preload) as pool,
            LocalBackend(policy.model) as backend,
        ):
            with RunRecorder(run_dir) as recorder:
                async with Rollout(
                    backend=backend,
                    verifier=_marking_verifier(pool, solver, run_dir / "verifying"),
                    prompts=prompts,
                    problems=problems,
                    settings=settings,
                    sampling=SamplingParams(max_new_tokens=6, seed=1),
                    recorder=recorder,
                ) as rollout:
                    for _ in range(100):
                        batch = await rollout.next_batch()
                        recorder.metrics(batch.metrics)
                        rollout.mark_policy_updated()
    finally:
        # Everything the pipeline started must be finished by now, while the loop still runs.
        others = [repr(t) for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        # The CPU backend decodes on the process's compute thread, which outlives it: its calls must be done.
        decoding = len(backend._jobs) if "backend" in locals() else 0
        (run_dir / "exit.json").write_text(json.dumps({"pending_tasks": others, "decode_calls": decoding}))


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a live process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited; it only waits to be reaped
        return None
    return int(fields[1]), int(fields[19])


def _descendants(root: int) -> dict[int, tuple[int, int]]:
    """pid -> (depth below root, start time) for every live descendant of `root`."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := _stat(int(entry))) is not None:
            parents[int(entry)] = st
    found: dict[int, tuple[int, int]] = {}
    frontier, depth = [root], 0
    while frontier:
        depth += 1
        frontier = [pid for pid, (ppid, _) in parents.items() if ppid in frontier]
        found.update({pid: (depth, parents[pid][1]) for pid in frontier})
    return found


@pytest.mark.slow
def test_sigint_mid_rollout_leaves_no_processes_and_flushes_metrics(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, __file__, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen: dict[int, tuple[int, int]] = {}
    try:
        deadline = time.monotonic() + 240  # the child imports torch, transformers and Gurobi: slow on a busy box
        while not (tmp_path / "verifying").exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no verification started within 240 s"
            seen.update(_descendants(proc.pid))
            time.sleep(0.05)
        time.sleep(0.5)  # let both sandbox workers pick up programs (each sleeps 5 s before solving)
        seen.update(_descendants(proc.pid))
        # Programs run three levels down (script -> nsjail -> jailed worker -> run); workers also keep one forked
        # child ready for the next run, so both jails show a process at that depth.
        assert sum(depth >= 3 for depth, _ in seen.values()) >= 2
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, output
    alive = [pid for pid, (_, start) in seen.items() if (st := _stat(pid)) is not None and st[1] == start]
    assert alive == [], f"processes of the interrupted run still alive: {alive}"
    exit_report = json.loads((tmp_path / "exit.json").read_text())
    assert exit_report == {"pending_tasks": [], "decode_calls": 0}
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["interrupted"] is True and metrics[-1]["step"] == 0
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples and {s["verdict"] for s in samples} <= {"interrupted", "zero_variance", "kept", "min_samples"}
    interrupted = [s for s in samples if s["verdict"] == "interrupted"]
    assert any(s["status"] == "not_verified" and s["reward"] is None for s in interrupted)  # cut off mid-verify


if __name__ == "__main__":
    try:
        asyncio.run(_child(Path(sys.argv[1])))
    except KeyboardInterrupt:
        sys.exit(130)
