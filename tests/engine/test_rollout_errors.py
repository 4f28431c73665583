"""The failure kind of every sample in a rollout step: `error_kind` in samples.jsonl and `errors/<kind>` counts in
the step's metrics row, with infrastructure failures as their own kind. Scripted backend and verifier
(tests/engine/scripted.py); the kinds of real programs are tested in tests/solvers/test_failures.py.
Run: .venv/bin/pytest tests/engine/test_rollout_errors.py"""

from __future__ import annotations

import scripted

from engine.data import epoch_order
from engine.generation import SamplingParams
from engine.records import RunRecorder, read_jsonl
from engine.rollout import Rollout


async def test_each_sample_carries_its_failure_kind_and_the_step_counts_them(tmp_path):
    o = [f"p{i}" for i in epoch_order(2, seed=0, epoch=0)]

    async def judge(problem, text):
        kind = text.split()[1]
        return scripted.Outcome(status=text.split()[0], reward=0.0, reason="scripted", error_kind=kind)

    table = {
        o[0]: ["error syntax", "error solver_api", "wrong wrong_objective", "error solver_api"],
        o[1]: ["infeasible wrong_claim", "sandbox_error infrastructure", scripted.Reply(error="HTTP 500"), "correct"],
    }
    prompts = scripted.prompt_builder()
    backend = scripted.ScriptedBackend(scripted.plan(table), tokenizer=prompts.tokenizer)

    async def mixed(problem, text):
        return scripted.outcome_of(text) if text.startswith("correct") else await judge(problem, text)

    with RunRecorder(tmp_path) as recorder:
        rollout = Rollout(
            backend=backend,
            verifier=scripted.ScriptedVerifier(mixed),
            prompts=prompts,
            problems=scripted.problems(2),
            settings=scripted.rollout_settings(group_size=4),
            sampling=SamplingParams(max_new_tokens=16, seed=7),
            recorder=recorder,
            start_step=0,
        )
        async with backend, rollout:
            result = await rollout.next_batch()
    errors = {k: v for k, v in result.metrics.items() if k.startswith("errors/")}
    assert errors == {
        "errors/syntax": 1,
        "errors/solver_api": 2,
        "errors/wrong_objective": 1,
        "errors/wrong_claim": 1,
        "errors/infrastructure": 2,  # the sandbox failure and the backend's
    }, "a correct sample has no kind"
    rows = {(r["problem_id"], r["sample_index"]): r for r in read_jsonl(tmp_path / "samples.jsonl")}
    assert [rows[(o[1], j)]["error_kind"] for j in range(4)] == [
        "wrong_claim",
        "infrastructure",
        "infrastructure",
        None,
    ]
    assert [rows[(o[0], j)]["error_kind"] for j in range(4)] == [
        "syntax",
        "solver_api",
        "wrong_objective",
        "solver_api",
    ]
    assert rows[(o[1], 2)]["status"] == "backend_error" and rows[(o[1], 2)]["infra_failure"] is True
