"""engine.records.reduce_rollout_metrics: the ranks' rollout rows of one step become the run's global row."""

from __future__ import annotations

import logging

import pytest
import scripted

from engine.data import epoch_order
from engine.generation import SamplingParams
from engine.records import REDUCTION, reduce_rollout_metrics, reduction_rule
from engine.rollout import Rollout

# Two ranks of one step. Rank 0 scored 4 samples (1 correct, mean reward 0.05), rank 1 scored 12 (6 correct,
# mean reward 0.175); rank 1 never saw an error status and waited longer for its verifications.
RANK0 = {
    "step": 3,
    "rounds": 1,
    "groups_kept": 1,
    "samples_trained": 2,
    "batch_reward_mean": 0.1,
    "response_length_mean": 10.0,
    "samples_scored": 4,
    "reward_mean": 0.05,
    "score_mean": 0.25,
    "accuracy": 0.25,
    "gen_tokens": 40,
    "gen_tokens_per_s": 20.0,
    "time_rollout_s": 3.0,
    "time_generating_s": 2.0,
    "verify_started": 4,
    "verify_queue_wait_mean_s": 0.5,
    "verify_queued": 4,
    "verify_queue_depth_max": 2,
    "verify_queue_depth_mean": 1.0,
    "data_epoch": 0,
    "staleness_mean": 0.0,
    "filtered/zero_variance": 1,
    "status/correct": 1,
    "status/error": 3,
    "errors/syntax": 3,
    "verify/cache_hits": 1,
    "verify/cache_runs": 3,
    "verify/cache_hit_rate": 0.25,
    "verify/cache_saved_s": 0.5,
}
RANK1 = {
    "step": 3,
    "rounds": 3,
    "groups_kept": 1,
    "samples_trained": 6,
    "batch_reward_mean": 0.5,
    "response_length_mean": 30.0,
    "samples_scored": 12,
    "reward_mean": 0.175,
    "score_mean": 0.5,
    "accuracy": 0.5,
    "gen_tokens": 360,
    "gen_tokens_per_s": 60.0,
    "time_rollout_s": 7.5,
    "time_generating_s": 6.0,
    "verify_started": 12,
    "verify_queue_wait_mean_s": 1.5,
    "verify_queued": 12,
    "verify_queue_depth_max": 5,
    "verify_queue_depth_mean": 3.0,
    "data_epoch": 1,
    "staleness_mean": 0.0,
    "filtered/zero_variance": 2,
    "status/correct": 6,
    "status/wrong": 6,
    "verify/cache_hits": 6,
    "verify/cache_runs": 2,
    "verify/cache_hit_rate": 0.75,
    "verify/cache_saved_s": 2.0,
}


def test_two_ranks_reduce_by_hand():
    got = reduce_rollout_metrics([RANK0, RANK1])
    expected = {
        "step": 3,
        "rounds": 3,  # max
        "groups_kept": 2,
        "samples_trained": 8,
        "batch_reward_mean": (2 * 0.1 + 6 * 0.5) / 8,  # 0.4, by trained samples
        "response_length_mean": (2 * 10 + 6 * 30) / 8,  # 25.0
        "samples_scored": 16,
        "reward_mean": (4 * 0.05 + 12 * 0.175) / 16,  # 0.14375, by scored samples
        "score_mean": (4 * 0.25 + 12 * 0.5) / 16,  # 0.4375
        "accuracy": 7 / 16,  # correct over scored, all ranks
        "gen_tokens": 400,
        "gen_tokens_per_s": 80.0,  # generators running side by side
        "time_rollout_s": 7.5,  # the slowest rank
        "time_generating_s": 6.0,
        "verify_started": 16,
        "verify_queue_wait_mean_s": (4 * 0.5 + 12 * 1.5) / 16,  # 1.25
        "verify_queued": 16,
        "verify_queue_depth_max": 5,
        "verify_queue_depth_mean": (4 * 1.0 + 12 * 3.0) / 16,  # 2.5
        "data_epoch": 1,
        "staleness_mean": 0.0,
        "filtered/zero_variance": 3,
        "status/correct": 7,
        "status/error": 3,  # only rank 0 has the key
        "errors/syntax": 3,
        "verify/cache_hits": 7,
        "verify/cache_runs": 5,
        "verify/cache_hit_rate": 7 / 12,  # hits over executions asked for, all ranks
        "verify/cache_saved_s": 2.5,  # each rank's sandbox pool saved its own
        "status/wrong": 6,
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12, abs=0), key
    assert list(got)[-1] == "status/wrong", "keys only a later rank has come after the first rank's"
    unweighted = (RANK0["reward_mean"] + RANK1["reward_mean"]) / 2
    assert abs(got["reward_mean"] - unweighted) > 0.03, "the hand values tell a weighted mean from a plain one"


def test_a_rank_without_items_does_not_pull_a_mean():
    empty = {"step": 0, "samples_scored": 0, "reward_mean": None, "accuracy": None, "samples_trained": 0}
    full = {"step": 0, "samples_scored": 8, "reward_mean": 0.25, "accuracy": 0.5, "samples_trained": 4}
    got = reduce_rollout_metrics([empty, full])
    assert got == {"step": 0, "samples_scored": 8, "reward_mean": 0.25, "accuracy": 0.5, "samples_trained": 4}
    nothing = reduce_rollout_metrics([empty, empty])
    assert nothing["reward_mean"] is None and nothing["accuracy"] is None and nothing["samples_scored"] == 0
    # A mean over no items on every rank is a placeholder (an empty batch's staleness 0.0): it is kept.
    stale = reduce_rollout_metrics([{"step": 0, "staleness_mean": 0.0, "samples_trained": 0}] * 2)
    assert stale["staleness_mean"] == 0.0


def test_one_rank_is_its_own_reduction():
    assert reduce_rollout_metrics([RANK0]) == RANK0


def test_rows_of_different_steps_or_none_are_refused():
    with pytest.raises(ValueError, match="ranks disagree on 'step'"):
        reduce_rollout_metrics([RANK0, {**RANK1, "step": 4}])
    with pytest.raises(ValueError, match="at least one rank"):
        reduce_rollout_metrics([])


def test_a_key_without_a_rule_is_left_out_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="evom.records"):
        got = reduce_rollout_metrics([{"step": 0, "novel_metric": 1.0}, {"step": 0, "novel_metric": 2.0}])
    assert got == {"step": 0}
    assert "['novel_metric'] have no rule in engine.records.REDUCTION" in caplog.text


def test_every_weighted_mean_names_a_summed_count():
    for key, rule in REDUCTION.items():
        if isinstance(rule, tuple):
            for count in rule:
                assert reduction_rule(count) == "sum", f"{key} is weighted by {count}, which is not a summed count"
        else:
            assert rule in ("same", "sum", "max", "any"), key


async def _rollout_row(table: dict, n_problems: int, **settings) -> dict:
    backend = scripted.ScriptedBackend(scripted.plan(table), tokenizer=scripted.prompt_builder().tokenizer)
    async with (
        backend,
        Rollout(
            backend=backend,
            verifier=scripted.ScriptedVerifier(),
            prompts=scripted.prompt_builder(),
            problems=scripted.problems(n_problems),
            settings=scripted.rollout_settings(**settings),
            sampling=SamplingParams(max_new_tokens=16, seed=7),
        ) as rollout,
    ):
        return (await rollout.next_batch()).metrics


async def test_real_rollout_rows_have_a_rule_for_every_key_and_reduce_to_the_pooled_values(caplog):
    """Two scripted 'ranks' (dynamic sampling on one, an error status on the other): every key the rollout writes
    has a rule, and the reduced counts and means equal those of the pooled samples."""
    o = [f"p{i}" for i in epoch_order(4, seed=0, epoch=0)]  # the rollout's data order
    every = {p: ["correct", "wrong"] for p in o}
    rank0 = await _rollout_row({**every, o[0]: ["wrong", "wrong"]}, 4, dynamic_sampling=True, max_gen_batches=3)
    rank1 = await _rollout_row({**every, o[0]: ["error", "correct"]}, 4)
    with caplog.at_level(logging.WARNING, logger="evom.records"):
        got = reduce_rollout_metrics([rank0, rank1])
        assert reduce_rollout_metrics([rank0]) == rank0
    assert caplog.text == "", "a key the rollout writes has no reduction rule"
    # Rank 0 scored 8 samples over two rounds (3 correct), rank 1 one round of 4 (2 correct).
    assert (rank0["samples_scored"], rank0["samples_correct"], rank0["rounds"]) == (8, 3, 2)
    assert (rank1["samples_scored"], rank1["samples_correct"], rank1["rounds"]) == (4, 2, 1)
    assert got["samples_scored"] == 12 and got["samples_correct"] == 5 and got["rounds"] == 2
    assert got["accuracy"] == pytest.approx(5 / 12, abs=1e-12)
    assert got["reward_mean"] == pytest.approx(5 / 12, abs=1e-12), "reward 1 per correct sample"
    assert got["status/error"] == 1 and got["filtered/zero_variance"] == rank0["filtered/zero_variance"] == 1
    assert got["samples_trained"] == 8 and got["groups_kept"] == 4
    assert got["gen_tokens"] == rank0["gen_tokens"] + rank1["gen_tokens"]
    assert got["time_rollout_s"] == max(rank0["time_rollout_s"], rank1["time_rollout_s"])
