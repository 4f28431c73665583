"""The rollout pipeline end to end: local backend on a tiny random Llama, real nsjail sandbox, real Gurobi verifier.

The policy is the toy of test_rollout_toy.py (tokens that decode to whole programs), so every sample is a real
program with a real outcome. Shown here: verification starts while the batch is still decoding (timeline),
DAPO dynamic sampling drops and replaces zero-variance groups within max_gen_batches with the counts in
metrics.jsonl, the staleness bound, and infrastructure failures excluded rather than scored 0.
Run: .venv/bin/pytest tests/engine/test_rollout.py
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import torch

from engine.data import Problem, epoch_order
from engine.data.stream import ProblemStream
from engine.generation import SamplingParams
from engine.generation.local import LocalBackend, LocalConfig
from engine.prompts import PromptBuilder, PromptSettings
from engine.records import RunRecorder, read_jsonl
from engine.rollout import Rollout, RolloutSettings
from engine.verifier import SolverVerifier
from learner.config import AlgorithmConfig, LearnerConfig
from learner.trainer import Learner
from sandbox import Limits, SandboxPool
from solvers import get_solver

toy = sys.modules.get("rollout_toy")
if toy is None:  # shared with the other rollout tests and the bench; loaded by path (tests/ is no package)
    _spec = importlib.util.spec_from_file_location("rollout_toy", Path(__file__).with_name("test_rollout_toy.py"))
    toy = sys.modules["rollout_toy"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(toy)

SOLVER = get_solver("gurobipy")
IMPOSSIBLE = 999.0  # no program of the toy vocabulary reaches it: every group on it scores all zeros
CORRECT = {"correct"}
TOY_STATUSES = {"correct", "wrong", "infeasible", "error", "no_code"}


def problems(answers: list[float | None]) -> list[Problem]:
    return [
        Problem(id=f"p{i}", question=f"maximise the profit of plant {i} with capacity {i + 3}", answer=a)
        for i, a in enumerate(answers)
    ]


def settings(**overrides) -> RolloutSettings:
    base = dict(
        group_size=4,
        prompts_per_step=2,
        dynamic_sampling=False,
        max_gen_batches=1,
        max_staleness=0,
        queue_size=8,
        verify_concurrency=2,
        seed=0,
    )
    return RolloutSettings(**{**base, **overrides})


@pytest.fixture
async def pool():
    async with SandboxPool(workers=2, limits=Limits(wall_s=20), preload=SOLVER.preload) as p:
        yield p


def make_rollout(pool, backend, policy, items, run_dir, *, max_new_tokens=6, max_prompt_tokens=512, **overrides):
    prompts = PromptBuilder(
        policy.tokenizer, instructions=SOLVER.instructions, settings=PromptSettings(max_prompt_tokens=max_prompt_tokens)
    )
    return Rollout(
        backend=backend,
        verifier=SolverVerifier(pool, SOLVER),
        prompts=prompts,
        problems=items,
        settings=settings(**overrides),
        sampling=SamplingParams(max_new_tokens=max_new_tokens, seed=7),
        recorder=RunRecorder(run_dir),
    )


def test_problem_stream_follows_the_data_order_across_epochs_and_resumes():
    items = problems([1.0] * 5)
    stream = ProblemStream(items, seed=3)
    first = [stream.next() for _ in range(12)]
    assert [e for e, _ in first] == [0] * 5 + [1] * 5 + [2] * 2
    for epoch in (0, 1):
        expected = [items[i].id for i in epoch_order(5, seed=3, epoch=epoch)]
        assert [p.id for _, p in first[5 * epoch : 5 * epoch + 5]] == expected
    assert stream.state == (2, 2)
    resumed = ProblemStream(items, seed=3, epoch=1, position=2)
    assert [p.id for _, p in (resumed.next() for _ in range(5))] == [p.id for _, p in first[7:12]]
    with pytest.raises(ValueError, match="at least one problem"):
        ProblemStream([], seed=0)


@pytest.mark.slow
async def test_first_verification_starts_before_the_last_completion_is_generated(pool, tmp_path):
    policy = toy.toy_policy(seed=1)
    # Four decode batches of four rows each: the last completion comes several batches after the first.
    async with LocalBackend(policy.model, LocalConfig(max_batch_size=4)) as backend:
        rollout = make_rollout(
            pool, backend, policy, problems([toy.ANSWER] * 4), tmp_path, prompts_per_step=4, max_new_tokens=24
        )
        async with rollout:
            batch = await rollout.next_batch()
        rollout.recorder.close()
    rows = read_jsonl(tmp_path / "samples.jsonl")
    assert len(rows) == 16 and {r["verdict"] for r in rows} == {"kept"} and len(batch) == 16
    assert {r["status"] for r in rows} <= TOY_STATUSES
    assert {"correct", "wrong"} <= {r["status"] for r in rows}, "expected real, mixed verifications"
    first_verify = min(r["t_verify_start_s"] for r in rows)
    last_generated = max(r["t_generated_s"] for r in rows)
    assert first_verify < last_generated
    for r in rows:  # each sample is verified only after it exists
        assert r["t_generated_s"] <= r["t_verify_start_s"] <= r["t_verify_end_s"]
    learner_batch = batch.learner_batch()  # the learner's own input type, validated by its constructor
    assert len(learner_batch) == 16 and learner_batch.rewards == [r["reward"] for r in rows]
    metrics = batch.metrics
    assert metrics["time_verifying_s"] > 0 and metrics["time_generating_s"] > 0
    assert metrics["gen_tokens"] == sum(r["response_tokens"] for r in rows)


@pytest.mark.slow
async def test_dynamic_sampling_drops_and_replaces_zero_variance_groups(pool, tmp_path):
    policy = toy.toy_policy(seed=2)
    answers: list[float | None] = [toy.ANSWER] * 8
    for i in epoch_order(8, seed=0, epoch=0)[:2]:  # the first round's two problems cannot be solved
        answers[i] = IMPOSSIBLE
    items = problems(answers)
    async with LocalBackend(policy.model) as backend:
        rollout = make_rollout(pool, backend, policy, items, tmp_path, dynamic_sampling=True, max_gen_batches=4)
        async with rollout:
            batch = await rollout.next_batch()
            rollout.recorder.metrics(batch.metrics)
        rollout.recorder.close()
    m = read_jsonl(tmp_path / "metrics.jsonl")[0]
    rows = read_jsonl(tmp_path / "samples.jsonl")
    impossible = {p.id for p in items if p.answer == IMPOSSIBLE}
    assert m["filtered/zero_variance"] >= 2 and 2 <= m["rounds"] <= 4
    assert m["groups_kept"] == 2 == len(batch.groups)
    assert not impossible & {g.problem_id for g in batch.groups}
    for group in batch.groups:
        assert len(set(group.rewards)) > 1  # every kept group carries an advantage signal
    verdicts = Counter(r["verdict"] for r in rows if r["sample_index"] == 0)
    assert verdicts["zero_variance"] == m["filtered/zero_variance"]
    assert verdicts["kept"] == 2
    assert m.get("status/correct", 0) >= 1
    counted = sum(v for k, v in m.items() if k.startswith("status/"))
    # Surplus groups (judged after the batch was full) may still land samples after the step's row was made.
    surplus = any(r["verdict"] == "surplus" for r in rows)
    assert counted == len(rows) or (surplus and counted < len(rows))


@pytest.mark.slow
async def test_max_gen_batches_bounds_the_refill(pool, tmp_path):
    policy = toy.toy_policy(seed=3)
    async with LocalBackend(policy.model) as backend:
        rollout = make_rollout(
            pool, backend, policy, problems([IMPOSSIBLE] * 6), tmp_path, dynamic_sampling=True, max_gen_batches=3
        )
        async with rollout:
            batch = await rollout.next_batch()
    m = batch.metrics
    assert m["rounds"] == 3 and m["filtered/zero_variance"] == 6 and m["groups_kept"] == 0 and len(batch) == 0
    assert m["reward_mean"] == 0.0 and m["samples_trained"] == 0
    with pytest.raises(ValueError, match="kept no group"):
        batch.learner_batch()
    # The same data without dynamic sampling: one round, and the useless groups go to the learner. With DAPO's
    # soft overlong punishment over the last 3 of 6 tokens, each reward is 0 minus (length - 3) / 3, capped at 1.
    async with LocalBackend(policy.model) as backend:
        rollout = make_rollout(
            pool, backend, policy, problems([IMPOSSIBLE] * 6), tmp_path / "plain", max_gen_batches=3, overlong_buffer=3
        )
        async with rollout:
            plain = await rollout.next_batch()
    assert plain.metrics["rounds"] == 1 and len(plain.groups) == 2 and "filtered/zero_variance" not in plain.metrics
    expected = {1: 0.0, 2: 0.0, 3: 0.0, 4: -1 / 3, 5: -2 / 3, 6: -1.0}
    assert {len(s.response_ids) for s in plain.samples} & {4, 5, 6}
    for s in plain.samples:
        assert s.score == 0.0 and s.reward == pytest.approx(expected[len(s.response_ids)], abs=1e-6)


@pytest.mark.slow
async def test_staleness_bound_gates_generation_and_drops_stale_groups(pool, tmp_path):
    policy = toy.toy_policy(seed=4)
    items = problems([toy.ANSWER] * 8)
    state = {k: v.clone() for k, v in policy.model.state_dict().items()}
    async with LocalBackend(policy.model) as backend:
        async with make_rollout(pool, backend, policy, items, tmp_path / "s0", max_staleness=0) as rollout:
            await rollout.next_batch()
            with pytest.raises(RuntimeError, match="weight update"):
                await rollout.next_batch()  # strictly on-policy: batch 1 waits for the learner's update
            assert await rollout.update_weights(state) == 1
            batch = await rollout.next_batch()
            assert set(batch.weight_versions) == {1} and batch.metrics["staleness_max"] == 0
        async with make_rollout(pool, backend, policy, items, tmp_path / "s1", max_staleness=1) as rollout:
            first = await rollout.next_batch()
            async with asyncio.timeout(60):
                while rollout.batches_ready < 1:  # batch 1 is generated ahead, without any update
                    await asyncio.sleep(0.01)
            await rollout.update_weights(state)
            await rollout.update_weights(state)
            stale = await rollout.next_batch()
    assert set(first.weight_versions) == {1} and (first.state.epoch, first.state.position) == (0, 2)
    # Batch 1 was made by version 1; the backend is at 3 now: two versions old, over the bound of one.
    assert stale.metrics["filtered/stale"] == 2 and stale.groups == () and stale.metrics["weight_version"] == 3


@pytest.mark.slow
async def test_infrastructure_failures_are_counted_and_never_scored(tmp_path):
    policy = toy.toy_policy(seed=5, slow_s=0.5)
    items = problems([toy.ANSWER] * 4)
    async with (
        SandboxPool(workers=2, limits=Limits(wall_s=20), preload=SOLVER.preload) as pool,
        LocalBackend(policy.model) as gen,
        make_rollout(pool, gen, policy, items, tmp_path) as rollout,
    ):
        next_batch = asyncio.create_task(rollout.next_batch())
        async with asyncio.timeout(60):
            while pool.stats["runs"] < 2:
                await asyncio.sleep(0.01)
        await pool.close()  # the sandbox goes away under running verifications
        batch = await next_batch
    m = batch.metrics
    infra = m.get("status/sandbox_error", 0) + m.get("status/verify_error", 0)
    scored = sum(v for k, v in m.items() if k.startswith("status/")) - infra
    assert infra >= 2 and m["excluded/infrastructure"] == infra
    for sample in batch.samples:
        assert sample.status not in ("sandbox_error", "verify_error") and sample.reward is not None
    if scored == 0:
        assert m["reward_mean"] is None and m["accuracy"] is None  # nothing scored: no reward, not reward 0
    # A closed backend: every sample is a backend error, every group is dropped, nothing is scored.
    backend = LocalBackend(policy.model)
    await backend.close()
    async with make_rollout(None, backend, policy, items, tmp_path / "b", max_gen_batches=2) as rollout:
        empty = await rollout.next_batch()
    assert empty.metrics["status/backend_error"] == 16 and empty.metrics["filtered/no_trainable_samples"] == 4
    assert empty.metrics["reward_mean"] is None and len(empty) == 0


@pytest.mark.slow
async def test_over_long_prompts_are_skipped_and_counted(pool, tmp_path):
    policy = toy.toy_policy(seed=6)
    items = problems([toy.ANSWER] * 4)
    first = epoch_order(4, seed=0, epoch=0)[0]
    items[first] = Problem(id="long", question="word " * 300, answer=toy.ANSWER)  # the first in the data order
    unbounded = PromptSettings(max_prompt_tokens=4096)
    short = len(PromptBuilder(policy.tokenizer, instructions=SOLVER.instructions, settings=unbounded).render("x"))
    async with LocalBackend(policy.model) as backend:
        rollout = make_rollout(pool, backend, policy, items, tmp_path, max_prompt_tokens=short + 40)
        async with rollout:
            result = await rollout.next_batch()
        rollout = make_rollout(pool, backend, policy, items[first : first + 1], tmp_path, max_prompt_tokens=short + 40)
        async with rollout:
            with pytest.raises(RuntimeError, match="over max_prompt_tokens"):
                await rollout.next_batch()
    assert result.metrics["prompts/too_long"] == 1 and result.metrics["prompts/ok"] == 2
    assert len(result.groups) == 2 and "long" not in {g.problem_id for g in result.groups}
    # One problem of four fits: the stream goes round the epochs to fill the step with it.
    fits = Problem(id="fits", question="maximise profit", answer=toy.ANSWER)
    only = [Problem(id=f"long{i}", question="word " * 300, answer=toy.ANSWER) for i in range(3)] + [fits]
    async with LocalBackend(policy.model) as backend:
        rollout = make_rollout(pool, backend, policy, only, tmp_path, max_prompt_tokens=short + 40, max_new_tokens=2)
        async with rollout:
            sparse = await rollout.next_batch()
    assert [g.problem_id for g in sparse.groups] == ["fits", "fits"] and sparse.metrics["prompts/too_long"] >= 3


@pytest.mark.slow
async def test_one_rl_step_closes_the_loop_with_the_learner(pool, tmp_path):
    policy = toy.toy_policy(seed=8)
    learner_model = copy.deepcopy(policy.model)  # the learner trains its own copy, as on separate devices
    algo = AlgorithmConfig(use_generator_logprobs=True)
    learner = Learner(learner_model, LearnerConfig(lr=1e-2, device="cpu", algorithm=algo))
    items = problems([toy.ANSWER] * 4)
    async with (
        LocalBackend(policy.model) as backend,
        make_rollout(pool, backend, policy, items, tmp_path, max_staleness=0) as rollout,
    ):
        result = await rollout.next_batch()
        assert len(result) == 8
        for prompt, response, old in zip(result.prompt_ids, result.response_ids, result.old_logprobs, strict=True):
            with torch.no_grad():
                logits = learner_model(torch.tensor([prompt + response])).logits[0, len(prompt) - 1 : -1]
            expected = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(response)[:, None])[:, 0]
            assert old == pytest.approx(expected.tolist(), abs=1e-4)
        train = learner.step(result.learner_batch())
        # Old log-probs come from the generator: at the first update the policy is the generating one, so
        # their KL is ~0 only if every log-prob lines up with its response token.
        assert abs(train["approx_kl"]) < 1e-6
        assert await rollout.update_weights(learner.model.state_dict()) == 1
        after = await rollout.next_batch()
    assert set(after.weight_versions) == {1}
    for name, tensor in learner.model.state_dict().items():
        assert torch.equal(policy.model.state_dict()[name], tensor), name


@pytest.mark.slow
async def test_a_slow_sandbox_holds_generation_back_instead_of_queueing_without_bound(tmp_path):
    policy = toy.toy_policy(seed=9, slow_s=0.3)
    narrow = {"queue_size": 1, "verify_concurrency": 1, "max_new_tokens": 3}
    async with (
        SandboxPool(workers=1, limits=Limits(wall_s=20), preload=SOLVER.preload) as pool,
        LocalBackend(policy.model) as backend,
        make_rollout(pool, backend, policy, problems([toy.ANSWER] * 2), tmp_path, **narrow) as rollout,
    ):
        result = await rollout.next_batch()
    m = result.metrics
    # Eight completions finish within one short decode; one verification at a time takes >= 0.3 s each.
    assert m["status/no_code"] < 7, "too few programs to exercise the sandbox"
    assert m["verify_queue_depth_max"] <= 1 and m["time_generation_blocked_s"] > 0
    assert len(result) + m.get("excluded/infrastructure", 0) == 8


class MalformedVerifier:
    """A verifier plug-in with a bug: its reward is not a number."""

    async def verify(self, problem, text):
        return types.SimpleNamespace(status="correct", reward="high", correct=True, objective=3.0, reason="")


async def test_a_broken_verifier_plugin_fails_next_batch_instead_of_hanging(tmp_path):
    policy = toy.toy_policy(seed=7)
    async with LocalBackend(policy.model) as backend:
        rollout = make_rollout(None, backend, policy, problems([toy.ANSWER] * 2), tmp_path)
        rollout.verifier = MalformedVerifier()
        async with rollout:
            with pytest.raises(ValueError, match="could not convert string to float"):
                await asyncio.wait_for(rollout.next_batch(), 60)


def test_settings_and_filter_names_are_validated():
    with pytest.raises(ValueError, match="group_size"):
        settings(group_size=0)
    assert settings(dynamic_sampling=True, filters=("overlong",)).filter_names == ("overlong", "zero_variance")
    with pytest.raises(ValueError, match=r"unknown rollout filter.*valid: \['min_samples'"):
        Rollout(
            backend=None,
            verifier=None,
            prompts=None,
            problems=problems([1.0]),
            settings=settings(filters=("nope",)),
            sampling=SamplingParams(),
        )
