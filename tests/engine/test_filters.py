"""Rollout group filters: verdicts, exclusion order, the registry. Run: .venv/bin/pytest tests/engine/test_filters.py"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.filters import (
    InfrastructureFilter,
    MinSamplesFilter,
    Verdict,
    ZeroVarianceFilter,
    available_filters,
    build_filters,
    judge,
)
from engine.rollout import Group, Sample


def sample(i: int, reward: float | None, *, finish: str = "stop") -> Sample:
    failed = reward is None
    return Sample(
        problem_id="p",
        group_id=7,
        sample_index=i,
        prompt_ids=(1, 2),
        response_ids=(3,) * (i + 1),
        logprobs=(-0.5,) * (i + 1),
        finish_reason=finish,
        weight_version=0,
        text="",
        status="sandbox_error" if failed else "wrong",
        infra_failure=failed,
        score=reward,
        reward=reward,
    )


def group(*rewards: float | None, finishes: tuple[str, ...] = ()) -> Group:
    finishes = finishes or ("stop",) * len(rewards)
    samples = tuple(sample(i, r, finish=f) for i, (r, f) in enumerate(zip(rewards, finishes, strict=True)))
    return Group(group_id=7, problem_id="p", size=len(rewards), samples=samples)


def test_zero_variance_drops_equal_rewards_and_keeps_mixed_ones():
    f = ZeroVarianceFilter()
    assert f(group(0.0, 0.0, 0.0, 0.0)) == Verdict(keep=False, reason="zero_variance")
    assert f(group(1.0, 1.0)) == Verdict(keep=False, reason="zero_variance")
    assert f(group(0.0, 1.0, 0.0)).keep


def test_infrastructure_failures_are_excluded_before_the_variance_is_judged():
    filters = build_filters(["zero_variance"], group_size=3)
    # Scoring the sandbox failure as 0 would make this group look informative; it is not.
    judgement = judge(group(1.0, None, 1.0), filters)
    assert judgement.group is None and judgement.reason == "zero_variance"
    assert judgement.excluded == {"infrastructure": 1}
    kept = judge(group(1.0, None, 0.0), filters)
    assert kept.reason == "kept" and [s.sample_index for s in kept.group.samples] == [0, 2]
    gone = judge(group(None, None), filters)
    assert gone.group is None and gone.reason == "no_trainable_samples" and gone.excluded == {"infrastructure": 2}


def test_overlong_excludes_truncated_samples_then_min_samples_judges_what_is_left():
    filters = build_filters(["overlong", "min_samples"], group_size=3)
    mixed = judge(group(1.0, 0.0, 0.0, finishes=("stop", "length", "stop")), filters)
    assert mixed.reason == "kept" and len(mixed.group.samples) == 2 and mixed.excluded == {"overlong": 1}
    short = judge(group(1.0, 0.0, 0.0, finishes=("length", "length", "stop")), filters)
    assert short.group is None and short.reason == "min_samples" and short.excluded == {"overlong": 2}


def test_registry_lists_valid_names_and_always_starts_with_infrastructure():
    assert available_filters() == ["min_samples", "overlong", "zero_variance"]
    filters = build_filters(["zero_variance", "zero_variance"], group_size=4)
    assert [f.name for f in filters] == ["infrastructure", "zero_variance"]
    assert isinstance(filters[0], InfrastructureFilter)
    with pytest.raises(ValueError, match=r"unknown rollout filter\(s\) \['dapo'\]; valid: \['min_samples'"):
        build_filters(["dapo"], group_size=4)
    with pytest.raises(ValueError, match="minimum"):
        MinSamplesFilter(minimum=0)
    assert build_filters(["min_samples"], group_size=1)[1](group(1.0)).keep  # G=1 cannot need two samples


@given(st.lists(st.one_of(st.none(), st.sampled_from([0.0, 0.5, 1.0])), min_size=1, max_size=8))
def test_dynamic_sampling_keeps_exactly_the_groups_with_a_reward_spread(rewards):
    judgement = judge(group(*rewards), build_filters(["zero_variance"], group_size=len(rewards)))
    scored = [r for r in rewards if r is not None]
    assert (judgement.group is not None) == (len(set(scored)) > 1)
    if judgement.group is not None:
        assert all(not s.infra_failure for s in judgement.group.samples)
