"""The rollout's scheduling on a scripted backend and verifier (tests/engine/scripted.py): no model, no sandbox.

Each test scripts what every (problem, sample) generates, in which order completions and verifications finish
(asyncio events the test sets), and what the verifier says, then checks the batch, its metrics row and
samples.jsonl exactly: filling and dynamic-sampling refill, surplus, the staleness gate, infrastructure failures,
cancellation, group ids and data order, per-round sampling seeds. The same logic on a real model, nsjail and
Gurobi is in test_rollout.py and test_rollout_sigint.py (slow).
Run: .venv/bin/pytest tests/engine/test_rollout_schedule.py
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import scripted

from engine.data import Problem, epoch_order
from engine.generation import GenerationBackend, SamplingParams
from engine.records import RunRecorder, read_jsonl
from engine.rollout import Rollout, RolloutState, round_sampling
from engine.verifier import Verifier

Reply, Held, plan, held_judge, settle = (
    scripted.Reply,
    scripted.Held,
    scripted.plan,
    scripted.held_judge,
    scripted.settle,
)
PROMPTS = scripted.prompt_builder()
SAMPLING = SamplingParams(max_new_tokens=16, seed=7)


# ----- scripting helpers -----------------------------------------------------------------------------------


def order(n: int, *, seed: int = 0, epoch: int = 0) -> list[str]:
    """Problem ids in the rollout's data order."""
    return [f"p{i}" for i in epoch_order(n, seed=seed, epoch=epoch)]


def make_rollout(
    backend: GenerationBackend,
    verifier: Verifier,
    n_problems: int,
    *,
    recorder: RunRecorder | None = None,
    sampling: SamplingParams = SAMPLING,
    prompts=PROMPTS,
    start_step: int = 0,
    end_step: int | None = None,
    state: RolloutState | None = None,
    **overrides,
) -> Rollout:
    return Rollout(
        backend=backend,
        verifier=verifier,
        prompts=prompts,
        problems=scripted.problems(n_problems),
        settings=scripted.rollout_settings(**overrides),
        sampling=sampling,
        recorder=recorder,
        start_step=start_step,
        end_step=end_step,
        state=state,
    )


def backend_for(table: dict[str, Sequence[scripted.Item]]) -> scripted.ScriptedBackend:
    return scripted.ScriptedBackend(plan(table), tokenizer=PROMPTS.tokenizer)


def rows_by_sample(path: Path) -> dict[tuple[str, int], dict]:
    rows = read_jsonl(path / "samples.jsonl")
    keyed = {(r["problem_id"], r["sample_index"]): r for r in rows}
    assert len(keyed) == len(rows), "a sample was written twice"
    return keyed


def counts(metrics, prefix: str) -> dict[str, int]:
    return {k: v for k, v in metrics.items() if k.startswith(prefix)}


# ----- the fakes follow the real protocols ---------------------------------------------------------------


def test_the_fakes_implement_the_real_protocols():
    backend = scripted.ScriptedBackend(plan({}), tokenizer=PROMPTS.tokenizer)
    assert isinstance(backend, GenerationBackend)
    verifier: Verifier = scripted.ScriptedVerifier()  # the rollout's protocol, checked by the type checker
    assert callable(verifier.verify)
    text = "correct: x = 3\n"
    ids = PROMPTS.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert PROMPTS.decode(ids) == text and len(ids) == len(text)
    prompt = PROMPTS.build("Find the optimum of [p7].")
    assert prompt.status == "ok" and scripted.problem_id(PROMPTS.decode(prompt.ids)) == "p7"


async def test_backend_yields_in_release_order_and_records_what_a_closed_stream_left_unfinished():
    first, never = asyncio.Event(), asyncio.Event()
    backend = backend_for({"p0": [Held(first, "a"), "b", Held(never, "c")]})
    prompt = PROMPTS.build("Find the optimum of [p0].").ids
    async with backend:
        stream = backend.generate([prompt], SAMPLING, n=3)
        got = [await anext(stream)]
        first.set()
        got.append(await anext(stream))
        await stream.aclose()
    assert [(c.prompt_index, c.sample_index) for c in got] == [(0, 1), (0, 0)]
    assert got[0].text is None and PROMPTS.decode(got[0].token_ids) == "b (p0 #1)"
    call = backend.calls[0]
    assert call.yielded == [(0, 1), (0, 0)] and call.unfinished == [(0, 2)] and call.closed
    async with scripted.ScriptedBackend(plan({"p0": [Held(never, "a")]}), tokenizer=PROMPTS.tokenizer) as backend:
        stream = backend.generate([prompt], SAMPLING)
        waiting = asyncio.create_task(anext(stream))
        await backend.until(lambda: len(backend.calls) == 1)
        await backend.abort()  # the protocol: in-flight samples arrive with finish_reason "abort"
        aborted = await waiting
        await stream.aclose()
    assert (aborted.finish_reason, aborted.token_ids, aborted.failed) == ("abort", (), False)


# ----- filling a batch ---------------------------------------------------------------------------------------


async def test_a_batch_fills_with_prompts_per_step_groups_in_one_round(tmp_path):
    o = order(4)
    backend = backend_for({pid: ["correct", "wrong"] for pid in o})
    verifier = scripted.ScriptedVerifier()
    with RunRecorder(tmp_path) as recorder:
        async with backend, make_rollout(backend, verifier, 4, recorder=recorder) as rollout:
            result = await rollout.next_batch()
    assert [(g.group_id, g.problem_id) for g in result.groups] == [(0, o[0]), (1, o[1])]
    assert (
        result.step == 0
        and result.state == RolloutState(epoch=0, position=2, rounds=1, next_group_id=2)
        and len(result) == 4
    )
    assert result.rewards == [1.0, 0.0, 1.0, 0.0] and result.group_ids == [0, 0, 1, 1]
    assert [s.text for s in result.samples] == [
        f"{status} ({pid} #{j})" for pid in o[:2] for j, status in enumerate(["correct", "wrong"])
    ]
    assert result.response_lengths == [len(s.text) for s in result.samples]  # one token per character
    assert all(lp == (-0.5,) * len(ids) for lp, ids in zip(result.old_logprobs, result.response_ids, strict=True))
    call = backend.calls[0]
    assert len(backend.calls) == 1 and call.n == 2
    assert call.prompts == tuple(PROMPTS.build(f"Find the optimum of [{pid}].").ids for pid in o[:2])
    assert result.prompt_ids == [call.prompts[0]] * 2 + [call.prompts[1]] * 2
    m = result.metrics
    assert m["rounds"] == 1 and m["groups_kept"] == 2 and m["samples_trained"] == 4
    assert counts(m, "status/") == {"status/correct": 2, "status/wrong": 2}
    assert counts(m, "filtered/") == {"filtered/stale": 0} and counts(m, "prompts/") == {"prompts/ok": 2}
    assert m["accuracy"] == 0.5 and m["reward_mean"] == 0.5 and m["batch_reward_mean"] == 0.5
    assert m["gen_tokens"] == sum(result.response_lengths) and m["weight_version"] == 0
    batch = result.learner_batch()
    assert batch.rewards == [1.0, 0.0, 1.0, 0.0] and batch.group_ids == [0, 0, 1, 1]
    rows = read_jsonl(tmp_path / "samples.jsonl")
    assert [(r["group_id"], r["sample_index"], r["verdict"], r["round"]) for r in rows] == [
        (0, 0, "kept", 0),
        (0, 1, "kept", 0),
        (1, 0, "kept", 0),
        (1, 1, "kept", 0),
    ]


async def test_verification_starts_while_the_round_is_still_decoding():
    o = order(2)
    late = asyncio.Event()
    backend = backend_for({o[0]: ["correct", Held(late, "wrong")], o[1]: ["wrong", "correct"]})
    verifier = scripted.ScriptedVerifier()
    async with backend, make_rollout(backend, verifier, 2) as rollout:
        pending = asyncio.create_task(rollout.next_batch())
        await verifier.until(lambda: len(verifier.finished) == 3)
        assert not backend.calls[0].closed and rollout.batches_ready == 0  # sample (0, 1) is still decoding
        late.set()
        result = await pending
    assert len(result) == 4 and verifier.finished[-1] == (o[0], f"wrong ({o[0]} #1)")


async def test_dynamic_sampling_drops_zero_variance_groups_and_refills_the_batch(tmp_path):
    o = order(8)
    never = asyncio.Event()
    backend = backend_for(
        {
            o[0]: ["wrong", "wrong"],  # round 0: dropped
            o[1]: ["correct", "wrong"],  # round 0: kept
            o[2]: ["correct", "correct"],  # round 1: dropped
            o[3]: ["wrong", "wrong"],  # round 1: dropped
            o[4]: ["wrong", "correct"],  # round 2: kept, fills the batch
            o[5]: [Held(never, "correct"), Held(never, "wrong")],  # round 2: still decoding at hand-over
        }
    )
    with RunRecorder(tmp_path) as recorder:
        async with (
            backend,
            make_rollout(
                backend, scripted.ScriptedVerifier(), 8, recorder=recorder, dynamic_sampling=True, max_gen_batches=4
            ) as rollout,
        ):
            result = await rollout.next_batch()
    assert [(g.group_id, g.problem_id) for g in result.groups] == [(1, o[1]), (4, o[4])]
    assert result.state == RolloutState(epoch=0, position=6, rounds=3, next_group_id=6)
    m = result.metrics
    assert m["rounds"] == 3 and len(backend.calls) == 3
    assert counts(m, "filtered/") == {"filtered/zero_variance": 3, "filtered/stale": 0}
    assert counts(m, "status/") == {"status/correct": 4, "status/wrong": 6}
    assert m["groups_kept"] == 2 and m["samples_trained"] == 4 and m["prompts/ok"] == 6
    assert m["groups_solve_all"] == 1 and m["groups_solve_none"] == 2 and m["samples_correct"] == 4
    assert m["accuracy"] == 0.4 and m["reward_mean"] == 0.4 and m["batch_reward_mean"] == 0.5
    # The third round was cut short: the batch was full while o[5] was still decoding.
    assert [c.unfinished for c in backend.calls] == [[], [], [(1, 0), (1, 1)]]
    rows = read_jsonl(tmp_path / "samples.jsonl")
    verdicts = {(r["problem_id"], r["round"]): r["verdict"] for r in rows}
    assert verdicts == {
        (o[0], 0): "zero_variance",
        (o[1], 0): "kept",
        (o[2], 1): "zero_variance",
        (o[3], 1): "zero_variance",
        (o[4], 2): "kept",
    }
    assert len(rows) == 10


async def test_a_new_round_starts_only_once_the_undecided_groups_cannot_fill_the_batch():
    o = order(8)
    first, second = asyncio.Event(), asyncio.Event()
    hold = {(o[0], 0): first, (o[0], 1): first, (o[1], 0): second, (o[1], 1): second}
    backend = backend_for(
        {o[0]: ["wrong", "wrong"], o[1]: ["correct", "wrong"], o[2]: ["correct", "wrong"], o[3]: ["correct", "wrong"]}
    )
    verifier = scripted.ScriptedVerifier(held_judge(hold))
    async with (
        backend,
        make_rollout(backend, verifier, 8, dynamic_sampling=True, max_gen_batches=3, verify_concurrency=4) as rollout,
    ):
        pending = asyncio.create_task(rollout.next_batch())
        await verifier.until(lambda: len(verifier.started) == 4)
        await backend.until(lambda: backend.calls[0].closed)
        await settle()
        assert len(backend.calls) == 1  # round 0 has finished decoding, but its two open groups may still fill it
        first.set()  # o[0] is dropped: kept + undecided = 1 < 2
        await backend.until(lambda: len(backend.calls) == 2)
        assert verifier.finished == [(o[0], f"wrong ({o[0]} #0)"), (o[0], f"wrong ({o[0]} #1)")]
        second.set()
        result = await pending
    assert [g.problem_id for g in result.groups] == [o[1], o[2]] and result.metrics["rounds"] == 2


async def test_max_gen_batches_bounds_the_refill_and_hands_over_a_short_batch():
    o = order(8)
    table = {pid: ["wrong", "wrong"] for pid in o}
    table[o[5]] = ["correct", "wrong"]  # the last round's second group is the only useful one
    backend = backend_for(table)
    async with (
        backend,
        make_rollout(backend, scripted.ScriptedVerifier(), 8, dynamic_sampling=True, max_gen_batches=3) as rollout,
    ):
        short = await rollout.next_batch()
    assert [g.problem_id for g in short.groups] == [o[5]] and len(short) == 2
    m = short.metrics
    assert m["rounds"] == 3 and m["filtered/zero_variance"] == 5 and m["groups_kept"] == 1
    assert len(backend.calls) == 3 and short.state == RolloutState(epoch=0, position=6, rounds=3, next_group_id=6)

    table = {pid: ["wrong", "wrong"] for pid in o}
    backend = backend_for(table)
    async with (
        backend,
        make_rollout(backend, scripted.ScriptedVerifier(), 8, dynamic_sampling=True, max_gen_batches=3) as rollout,
    ):
        empty = await rollout.next_batch()
    m = empty.metrics
    assert m["rounds"] == 3 and m["filtered/zero_variance"] == 6 and m["groups_kept"] == 0 and len(empty) == 0
    assert m["reward_mean"] == 0.0 and m["samples_trained"] == 0 and m["batch_reward_mean"] is None
    with pytest.raises(ValueError, match="kept no group"):
        empty.learner_batch()

    # Without dynamic sampling the same groups go to the learner after one round.
    backend = backend_for(table)
    async with backend, make_rollout(backend, scripted.ScriptedVerifier(), 8, max_gen_batches=3) as rollout:
        plain = await rollout.next_batch()
    assert plain.metrics["rounds"] == 1 and len(plain.groups) == 2 and "filtered/zero_variance" not in plain.metrics


# ----- surplus ----------------------------------------------------------------------------------------------


async def test_a_group_judged_after_the_batch_is_full_is_surplus(tmp_path):
    """Two groups complete in one step (the stream fails, filling both): the first fills the batch, the second
    is judged after it and closed "surplus" with its real verdicts recorded."""
    o = order(8)
    fail = asyncio.Event()
    table = {
        o[0]: ["correct", "wrong", "wrong"],
        o[1]: ["wrong", "wrong", "wrong"],  # dropped: a second round is needed
        o[2]: ["correct", "wrong", Held(fail, Reply(raise_error="server went away"))],
        o[3]: ["wrong", "correct", Held(fail, None)],
    }
    backend = backend_for(table)
    verifier = scripted.ScriptedVerifier()
    with RunRecorder(tmp_path) as recorder:
        async with (
            backend,
            make_rollout(
                backend, verifier, 8, recorder=recorder, group_size=3, dynamic_sampling=True, max_gen_batches=2
            ) as rollout,
        ):
            pending = asyncio.create_task(rollout.next_batch())
            await verifier.until(lambda: len(verifier.finished) == 10)
            fail.set()
            result = await pending
    assert [(g.group_id, g.problem_id, len(g.samples)) for g in result.groups] == [(0, o[0], 3), (2, o[2], 2)]
    m = result.metrics
    assert m["groups_surplus"] == 1 and m["rounds"] == 2 and m["filtered/zero_variance"] == 1
    assert m["status/backend_error"] == 2 and m["excluded/infrastructure"] == 2
    assert m["groups_kept"] == 2 and m["samples_trained"] == 5
    rows = rows_by_sample(tmp_path)
    assert {j: (rows[(o[3], j)]["verdict"], rows[(o[3], j)]["status"]) for j in range(3)} == {
        0: ("surplus", "wrong"),
        1: ("surplus", "correct"),
        2: ("surplus", "backend_error"),
    }
    assert rows[(o[3], 1)]["reward"] == 1.0 and rows[(o[3], 2)]["reward"] is None
    assert rows[(o[3], 2)]["detail"] == "generation failed: server went away"
    assert rows[(o[2], 2)]["verdict"] == "kept" and rows[(o[2], 2)]["infra_failure"] is True


async def test_groups_open_when_the_batch_fills_are_surplus_and_their_decoding_is_aborted(tmp_path):
    """Round 1 fills the batch while group o[3] has one sample in verification, one queued behind the batch's
    last sample, and one still decoding: the decoding is aborted, the others are recorded as surplus."""
    o = order(8)
    last, never = asyncio.Event(), asyncio.Event()
    hold_verify = {(o[3], 0): asyncio.Event()}
    table = {
        o[0]: ["correct", "wrong", "wrong"],
        o[1]: ["wrong", "wrong", "wrong"],
        o[2]: ["correct", "wrong", Held(last, Reply(error="HTTP 500 after 3 retries"))],
        o[3]: ["correct", "wrong", Held(never, "correct")],
    }
    backend = backend_for(table)
    verifier = scripted.ScriptedVerifier(held_judge(hold_verify))
    with RunRecorder(tmp_path) as recorder:
        async with (
            backend,
            make_rollout(
                backend,
                verifier,
                8,
                recorder=recorder,
                group_size=3,
                dynamic_sampling=True,
                max_gen_batches=2,
                verify_concurrency=1,
            ) as rollout,
        ):
            pending = asyncio.create_task(rollout.next_batch())
            # One verifier: o[2]'s first two samples are verified, then it holds o[3] #0 with o[3] #1 queued.
            await verifier.until(lambda: (o[3], f"correct ({o[3]} #0)") in verifier.started)
            assert verifier.finished[-2:] == [(o[2], f"correct ({o[2]} #0)"), (o[2], f"wrong ({o[2]} #1)")]
            last.set()  # o[2]'s failed sample completes its group (kept: two scored samples): the batch is full
            result = await pending
            assert [g.problem_id for g in result.groups] == [o[0], o[2]]
            assert backend.calls[1].unfinished == [(1, 2)]  # o[3] #2 was still decoding: aborted
            assert result.metrics["groups_surplus"] == 1, "a group still open at hand-over counts as surplus"
            hold_verify[(o[3], 0)].set()
            await verifier.until(lambda: len(verifier.finished) == 9)
            await settle()
    rows = rows_by_sample(tmp_path)
    assert (o[3], 2) not in rows  # never generated
    verified, queued = rows[(o[3], 0)], rows[(o[3], 1)]
    assert (verified["verdict"], verified["status"], verified["reward"]) == ("surplus", "correct", 1.0)
    assert (queued["verdict"], queued["status"], queued["reward"]) == ("surplus", "not_verified", None)
    assert queued["detail"] == "group closed first" and (o[3], f"wrong ({o[3]} #1)") not in verifier.started
    assert rows[(o[2], 2)]["status"] == "backend_error" and rows[(o[2], 2)]["detail"] == "HTTP 500 after 3 retries"
    m = result.metrics
    assert m["rounds"] == 2 and m["groups_kept"] == 2 and m["samples_trained"] == 5
    assert m["excluded/infrastructure"] == 1 and m["filtered/zero_variance"] == 1


# ----- staleness ----------------------------------------------------------------------------------------------


async def test_strictly_on_policy_the_next_batch_waits_for_the_weight_update():
    backend = backend_for({pid: ["correct", "wrong"] for pid in order(8)})
    state = {"w": 1.0}
    async with backend, make_rollout(backend, scripted.ScriptedVerifier(), 8, max_staleness=0) as rollout:
        first = await rollout.next_batch()
        with pytest.raises(RuntimeError, match=r"needs 1 weight update\(s\) but got 0 \(max_staleness=0\)"):
            await rollout.next_batch()
        await settle()
        assert len(backend.calls) == 1  # batch 1 has not started generating
        assert await rollout.update_weights(state) == 1
        second = await rollout.next_batch()
        rollout.mark_policy_updated()  # an update the backend shares in-process: no weights are sent
        third = await rollout.next_batch()
    assert backend.updates == [state]
    assert [c.weight_version for c in backend.calls] == [0, 1, 1]
    assert set(first.weight_versions) == {0} and set(second.weight_versions) == {1}
    assert second.metrics["staleness_max"] == 0 and second.metrics["weight_version"] == 1
    assert third.step == 2 and set(third.weight_versions) == {1}


async def test_with_staleness_one_the_next_batch_generates_while_the_learner_trains():
    backend = backend_for({pid: ["correct", "wrong"] for pid in order(8)})
    async with backend, make_rollout(backend, scripted.ScriptedVerifier(), 8, max_staleness=1) as rollout:
        first = await rollout.next_batch()
        await backend.until(lambda: len(backend.calls) == 2)  # batch 1 starts before any update
        assert backend.calls[1].weight_version == 0
        await rollout.update_weights({"w": 1})
        second = await rollout.next_batch()
        await backend.until(lambda: len(backend.calls) == 3)  # batch 2 needed one update: it is generating
        third = await rollout.next_batch()
        with pytest.raises(RuntimeError, match=r"needs 2 weight update\(s\) but got 1 \(max_staleness=1\)"):
            await rollout.next_batch()  # batch 3 may not start before the learner's second update
    assert set(first.weight_versions) == {0} and first.metrics["staleness_max"] == 0
    # Generated by version 0, handed over at version 1: one version old, within the bound.
    assert set(second.weight_versions) == {0} and len(second.groups) == 2
    assert second.metrics["staleness_max"] == 1 and second.metrics["staleness_mean"] == 1.0
    assert second.metrics["filtered/stale"] == 0 and second.metrics["weight_version"] == 1
    assert backend.calls[2].weight_version == 1 and set(third.weight_versions) == {1}
    assert len(backend.calls) == 3


async def _stale_batch() -> tuple[scripted.ScriptedBackend, object]:
    """Batch 1 generated by version 0 (max_staleness 1) and handed over at version 2: two versions old."""
    backend = backend_for({pid: ["correct", "wrong"] for pid in order(8)})
    async with backend, make_rollout(backend, scripted.ScriptedVerifier(), 8, max_staleness=1) as rollout:
        await rollout.next_batch()
        await backend.until(lambda: len(backend.calls) == 2)
        await rollout.update_weights({"w": 1})
        await rollout.update_weights({"w": 2})
        stale = await rollout.next_batch()
    return backend, stale


async def test_groups_over_the_staleness_bound_at_hand_over_are_dropped_as_stale():
    backend, stale = await _stale_batch()
    assert backend.calls[1].weight_version == 0 and backend.weight_version == 2
    m = stale.metrics
    assert stale.groups == () and len(stale) == 0
    assert m["filtered/stale"] == 2 and m["groups_kept"] == 0 and m["samples_trained"] == 0
    assert m["weight_version"] == 2 and m["staleness_max"] == 0 and m["staleness_mean"] == 0.0


async def test_a_batch_dropped_as_stale_reports_no_trained_reward_or_length():
    _, stale = await _stale_batch()
    assert stale.metrics["samples_trained"] == 0
    assert stale.metrics["batch_reward_mean"] is None and stale.metrics["response_length_mean"] is None


# ----- infrastructure failures ------------------------------------------------------------------------------


async def test_infrastructure_failures_are_excluded_counted_and_never_scored(tmp_path):
    o = order(2)
    never = asyncio.Event()
    hold_verify = {(o[1], 2): never}  # the verifier never answers: a verify timeout

    async def judge(problem, text):
        if text.startswith("raise"):
            raise RuntimeError("the verifier has a bug")
        if text.startswith("sandbox"):
            return scripted.Outcome(status="sandbox_error", reward=0.0, reason="nsjail failed to start")
        return await held_judge(hold_verify)(problem, text)

    table = {
        o[0]: [Reply(error="HTTP 500 after 3 retries"), Reply(finish_reason="abort"), "correct", "wrong"],
        o[1]: ["raise", "sandbox", "correct", "correct"],
    }
    backend = backend_for(table)
    verifier = scripted.ScriptedVerifier(judge)
    with RunRecorder(tmp_path) as recorder:
        async with (
            backend,
            make_rollout(backend, verifier, 2, recorder=recorder, group_size=4, verify_timeout_s=0.05) as rollout,
        ):
            result = await rollout.next_batch()
    m = result.metrics
    assert counts(m, "status/") == {
        "status/aborted": 1,
        "status/backend_error": 1,
        "status/correct": 2,
        "status/sandbox_error": 1,
        "status/verify_error": 1,
        "status/verify_timeout": 1,
        "status/wrong": 1,
    }
    assert m["excluded/infrastructure"] == 5 and m["samples_trained"] == 3 and m["groups_kept"] == 2
    assert m["accuracy"] == 2 / 3 and m["reward_mean"] == 2 / 3  # over scored samples only, not 2 / 8
    assert [(s.problem_id, s.sample_index) for s in result.samples] == [(o[0], 2), (o[0], 3), (o[1], 3)]
    assert verifier.cancelled == [(o[1], f"correct ({o[1]} #2)")]  # the timed-out verification was cancelled
    rows = rows_by_sample(tmp_path)
    details = {
        (o[0], 0): ("backend_error", "HTTP 500 after 3 retries"),
        (o[0], 1): ("aborted", "aborted by the backend"),
        (o[1], 0): ("verify_error", "RuntimeError: the verifier has a bug"),
        (o[1], 1): ("sandbox_error", "nsjail failed to start"),
        (o[1], 2): ("verify_timeout", "verification took over 0.05 s"),
    }
    for key, (status, detail) in details.items():
        row = rows[key]
        assert (row["status"], row["detail"], row["verdict"]) == (status, detail, "kept"), key
        assert row["infra_failure"] is True and row["score"] is None and row["reward"] is None, key
    assert rows[(o[0], 3)]["reward"] == 0.0 and rows[(o[0], 3)]["infra_failure"] is False


async def test_a_group_with_nothing_scored_is_dropped_and_no_reward_is_reported():
    o = order(4)
    table = {
        o[0]: [Reply(text="x"), None],  # the stream ends without sample 1
        o[1]: [Reply(raise_error="connection reset"), "correct"],  # the stream fails before either sample
    }
    backend = backend_for(table)
    verifier = scripted.ScriptedVerifier(lambda problem, text: scripted.Outcome(status="sandbox_error", reward=0.0))
    async with backend, make_rollout(backend, verifier, 4) as rollout:
        result = await rollout.next_batch()
    m = result.metrics
    assert len(result) == 0 and m["filtered/no_trainable_samples"] == 2 and m["rounds"] == 1
    assert counts(m, "status/") == {"status/backend_error": 3, "status/sandbox_error": 1}
    assert m["reward_mean"] is None and m["accuracy"] is None and m["excluded/infrastructure"] == 4

    closed = backend_for({})
    await closed.close()  # every generate call fails at once: every sample of both rounds is a backend error
    async with make_rollout(closed, verifier, 4, group_size=4, max_gen_batches=2, dynamic_sampling=True) as rollout:
        empty = await rollout.next_batch()
    m = empty.metrics
    assert m["status/backend_error"] == 16 and m["filtered/no_trainable_samples"] == 4 and m["rounds"] == 2
    assert m["reward_mean"] is None and len(empty) == 0 and verifier.started == [(o[0], "x")]


async def test_a_backend_bug_fails_next_batch_instead_of_hanging():
    async def script(req):
        raise KeyError("the backend lost its request table")

    backend = scripted.ScriptedBackend(script, tokenizer=PROMPTS.tokenizer)
    async with backend, make_rollout(backend, scripted.ScriptedVerifier(), 2) as rollout:
        with pytest.raises(KeyError, match="request table"):
            await rollout.next_batch()


# ----- back-pressure, cancellation ----------------------------------------------------------------------------


async def test_a_busy_verifier_holds_generation_back_at_the_queue_bound():
    o = order(1)
    hold = {(o[0], 0): asyncio.Event()}
    backend = backend_for({o[0]: ["correct", "wrong", "wrong", "wrong"]})
    verifier = scripted.ScriptedVerifier(held_judge(hold))
    async with (
        backend,
        make_rollout(
            backend, verifier, 1, group_size=4, prompts_per_step=1, queue_size=1, verify_concurrency=1
        ) as rollout,
    ):
        pending = asyncio.create_task(rollout.next_batch())
        await verifier.until(lambda: len(verifier.started) == 1)
        await settle()
        # One completion in verification, one queued, one in the rollout's hand waiting for room: no more read.
        assert backend.yielded == 3 and len(verifier.started) == 1
        hold[(o[0], 0)].set()
        result = await pending
    assert len(result) == 4 and result.metrics["verify_queue_depth_max"] == 1


async def _interrupt(rollout: Rollout, until) -> None:
    """A training loop cancelled (as by Ctrl-C) once `until` has happened; leaving `async with` closes the rollout."""

    async def loop():
        async with rollout:
            while True:
                await rollout.next_batch()
                rollout.mark_policy_updated()

    task = asyncio.create_task(loop())
    await until()
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_cancelling_mid_batch_writes_an_interrupted_row_and_every_unverified_completion(tmp_path):
    o = order(4)
    never = asyncio.Event()
    hold = {(o[0], 0): asyncio.Event()}
    backend = backend_for({o[0]: ["correct", "wrong"], o[1]: ["correct", Held(never, "wrong")]})
    verifier = scripted.ScriptedVerifier(held_judge(hold))
    with RunRecorder(tmp_path) as recorder:
        async with backend:
            rollout = make_rollout(backend, verifier, 4, recorder=recorder, verify_concurrency=1)
            await _interrupt(rollout, lambda: verifier.until(lambda: len(verifier.started) == 1))
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            assert others == []  # the producer, the verify workers and the round's decoding are all gone
    metrics = read_jsonl(tmp_path / "metrics.jsonl")
    assert len(metrics) == 1
    row = metrics[0]
    assert row["interrupted"] is True and row["step"] == 0 and row["rounds"] == 1 and row["groups_kept"] == 0
    assert row["status/not_verified"] == 3
    rows = rows_by_sample(tmp_path)
    assert set(rows) == {(o[0], 0), (o[0], 1), (o[1], 0)}  # (o[1], 1) was never generated
    for key, r in rows.items():
        assert (r["verdict"], r["status"], r["detail"], r["reward"]) == (
            "interrupted",
            "not_verified",
            "interrupted",
            None,
        ), key
    assert verifier.cancelled == [(o[0], f"correct ({o[0]} #0)")] and backend.calls[0].unfinished == [(1, 1)]


async def test_end_step_stops_the_producer_and_closing_writes_no_row_for_a_handed_over_batch(tmp_path):
    backend = backend_for({pid: ["correct", "wrong"] for pid in order(4)})
    with RunRecorder(tmp_path) as recorder:
        async with backend:
            rollout = make_rollout(backend, scripted.ScriptedVerifier(), 4, recorder=recorder, end_step=1)
            async with rollout:
                await rollout.next_batch()
                rollout.mark_policy_updated()
                with pytest.raises(RuntimeError, match="end_step reached"):
                    await rollout.next_batch()
    assert read_jsonl(tmp_path / "metrics.jsonl") == []  # the learner writes the step's row, not the rollout
    assert len(read_jsonl(tmp_path / "samples.jsonl")) == 4


async def test_cancelling_while_generation_waits_for_the_verify_queue_records_every_completion(tmp_path):
    o = order(1)
    hold = {(o[0], 0): asyncio.Event()}
    backend = backend_for({o[0]: ["correct", "wrong", "wrong", "wrong"]})
    verifier = scripted.ScriptedVerifier(held_judge(hold))
    with RunRecorder(tmp_path) as recorder:
        async with backend:
            rollout = make_rollout(
                backend,
                verifier,
                1,
                recorder=recorder,
                group_size=4,
                prompts_per_step=1,
                queue_size=1,
                verify_concurrency=1,
            )
            await _interrupt(rollout, lambda: backend.until(lambda: backend.yielded == 3))
    assert backend.yielded == 3
    interrupted = read_jsonl(tmp_path / "metrics.jsonl")[0]
    # the third completion's tokens are counted (one token per character)
    assert interrupted["gen_tokens"] == len("correct (p0 #0)") + len("wrong (p0 #1)") + len("wrong (p0 #2)")
    rows = rows_by_sample(tmp_path)
    assert set(rows) == {(o[0], 0), (o[0], 1), (o[0], 2)}  # every completion the rollout read is recorded
    assert interrupted["status/not_verified"] == 3


# ----- data order, group ids, sampling seeds -------------------------------------------------------------------


async def test_group_ids_and_the_problem_order_run_on_across_steps_and_epochs(tmp_path):
    n, seed = 5, 3
    stream = order(n, seed=seed, epoch=0) + order(n, seed=seed, epoch=1)
    backend = backend_for({pid: ["correct", "wrong"] for pid in stream})
    results = []
    with RunRecorder(tmp_path) as recorder:
        async with backend, make_rollout(backend, scripted.ScriptedVerifier(), n, recorder=recorder, seed=seed) as r:
            for _ in range(4):
                results.append(await r.next_batch())
                r.mark_policy_updated()
    assert [r.step for r in results] == [0, 1, 2, 3]
    assert [[g.group_id for g in r.groups] for r in results] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [[g.problem_id for g in r.groups] for r in results] == [stream[i : i + 2] for i in (0, 2, 4, 6)]
    assert [r.state for r in results] == [
        RolloutState(epoch=0, position=2, rounds=1, next_group_id=2),
        RolloutState(epoch=0, position=4, rounds=2, next_group_id=4),
        RolloutState(epoch=1, position=1, rounds=3, next_group_id=6),
        RolloutState(epoch=1, position=3, rounds=4, next_group_id=8),
    ]
    assert [r.metrics["data_epoch"] for r in results] == [0, 0, 1, 1]
    epochs = {(row["step"], row["group_id"]): row["epoch"] for row in read_jsonl(tmp_path / "samples.jsonl")}
    assert epochs[(2, 4)] == 0 and epochs[(2, 5)] == 1  # step 2 crosses into the next epoch

    # Started from step 2's state at step 3, a rollout makes step 3's batch again: problems, group ids, sampling
    # seeds, texts and rewards; it stops at end_step.
    again = backend_for({pid: ["correct", "wrong"] for pid in stream})
    async with (
        again,
        make_rollout(
            again, scripted.ScriptedVerifier(), n, seed=seed, start_step=3, end_step=4, state=results[2].state
        ) as r,
    ):
        resumed = await r.next_batch()
        r.mark_policy_updated()
        with pytest.raises(RuntimeError, match="no batches after step 4"):
            await r.next_batch()

    def made(result):
        return [(s.group_id, s.problem_id, s.sample_index, s.text, s.reward) for s in result.samples]

    assert resumed.step == 3 and made(resumed) == made(results[3]) and resumed.state == results[3].state
    assert again.calls[0].params == backend.calls[3].params and again.calls[0].prompts == backend.calls[3].prompts


async def test_prompts_over_the_limit_are_skipped_and_counted():
    short = len(PROMPTS.render("Find the optimum of [p0]."))
    prompts = scripted.prompt_builder(max_prompt_tokens=short + 5)
    items = scripted.problems(4)
    o = order(4)
    long_id = o[0]
    items[int(long_id[1:])] = Problem(id=long_id, question=f"Find the optimum of [{long_id}]. " + "x" * 50, answer=3.0)
    backend = backend_for({pid: ["correct", "wrong"] for pid in o})
    rollout = Rollout(
        backend=backend,
        verifier=scripted.ScriptedVerifier(),
        prompts=prompts,
        problems=items,
        settings=scripted.rollout_settings(),
        sampling=SAMPLING,
    )
    async with backend, rollout:
        result = await rollout.next_batch()
    assert [g.problem_id for g in result.groups] == o[1:3] and (result.state.epoch, result.state.position) == (0, 3)
    assert result.metrics["prompts/too_long"] == 1 and result.metrics["prompts/ok"] == 2

    backend = backend_for({})
    rollout = Rollout(
        backend=backend,
        verifier=scripted.ScriptedVerifier(),
        prompts=prompts,
        problems=[items[int(long_id[1:])]],
        settings=scripted.rollout_settings(),
        sampling=SAMPLING,
    )
    async with backend, rollout:
        with pytest.raises(RuntimeError, match="every problem's prompt is over max_prompt_tokens"):
            await rollout.next_batch()
    assert backend.calls == []


async def test_each_round_samples_with_its_own_seed_and_the_count_runs_on_across_steps():
    o = order(8)
    table = {pid: ["wrong", "wrong"] for pid in o}
    for pid in (o[3], o[4], o[6], o[7]):
        table[pid] = ["correct", "wrong"]
    for sampling in (SAMPLING, replace(SAMPLING, seed=None)):
        backend = backend_for(table)
        async with (
            backend,
            make_rollout(
                backend, scripted.ScriptedVerifier(), 8, sampling=sampling, dynamic_sampling=True, max_gen_batches=3
            ) as rollout,
        ):
            first = await rollout.next_batch()
            rollout.mark_policy_updated()
            second = await rollout.next_batch()
        assert first.metrics["rounds"] == 3 and second.metrics["rounds"] == 1
        params = [c.params for c in backend.calls]
        assert params == [round_sampling(sampling, k) for k in range(4)]
        if sampling.seed is None:
            assert params == [sampling] * 4
        else:
            assert len({p.seed for p in params}) == 4 and all(replace(p, seed=7) == sampling for p in params)


async def test_overlong_samples_are_shaped_or_excluded():
    """DAPO: the soft punishment over the last 3 of 6 tokens, and the overlong filter."""
    o = order(2)
    lengths = {o[0]: [2, 4], o[1]: [5, 6]}
    table = {
        pid: [
            Reply(
                text=f"{'correct' if j == 0 else 'wrong'} ({pid} #{j})",
                token_ids=(7,) * n,
                finish_reason="length" if n == 6 else "stop",
            )
            for j, n in enumerate(ns)
        ]
        for pid, ns in lengths.items()
    }
    sampling = replace(SAMPLING, max_new_tokens=6)
    backend = backend_for(table)
    async with (
        backend,
        make_rollout(backend, scripted.ScriptedVerifier(), 2, sampling=sampling, overlong_buffer=3) as rollout,
    ):
        shaped = await rollout.next_batch()
    assert [s.score for s in shaped.samples] == [1.0, 0.0, 1.0, 0.0]
    assert shaped.rewards == pytest.approx([1.0, -1 / 3, 1.0 - 2 / 3, -1.0], abs=1e-6)
    assert shaped.samples[0].text == f"correct ({o[0]} #0)"  # the backend's text, not a decode of its ids

    backend = backend_for(table)
    async with backend, make_rollout(backend, scripted.ScriptedVerifier(), 2, filters=("overlong",)) as rollout:
        filtered = await rollout.next_batch()
    assert [(s.problem_id, s.sample_index) for s in filtered.samples] == [(o[0], 0), (o[0], 1), (o[1], 0)]
    assert filtered.metrics["excluded/overlong"] == 1


async def test_the_rollout_lifecycle_refuses_misuse():
    backend = backend_for({pid: ["correct", "wrong"] for pid in order(2)})
    rollout = make_rollout(backend, scripted.ScriptedVerifier(), 2)
    with pytest.raises(RuntimeError, match="use `async with rollout:`"):
        await rollout.next_batch()
    async with rollout:
        pass
    with pytest.raises(RuntimeError, match="make a new Rollout"):
        async with rollout:
            pass
    with pytest.raises(RuntimeError, match="the rollout is closed"):
        await rollout.next_batch()
