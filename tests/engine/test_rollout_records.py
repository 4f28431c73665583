"""samples.jsonl / metrics.jsonl writing: appends, flush per step, strict JSON with or without orjson.
Run: .venv/bin/pytest tests/engine/test_rollout_records.py"""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

from engine import records
from engine.records import RunRecorder, StepStats, read_jsonl, sample_row
from engine.rollout import Sample


def make_sample(**overrides) -> Sample:
    base = dict(
        problem_id="p1",
        group_id=3,
        sample_index=1,
        prompt_ids=(1, 2, 3),
        response_ids=(4, 5),
        logprobs=(-0.1, -0.2),
        finish_reason="stop",
        weight_version=2,
        text="```python\nprint(1)\n```",
        status="correct",
        infra_failure=False,
        score=1.0,
        reward=0.5,
        correct=True,
        objective=3.0,
        generated_s=0.25,
        verify_start_s=0.5,
        verify_end_s=0.75,
    )
    return Sample(**{**base, **overrides})


def test_rows_are_appended_and_samples_reach_disk_with_the_step(tmp_path):
    with RunRecorder(tmp_path) as rec:
        rec.sample(sample_row(make_sample(), step=0, round=1, epoch=0, verdict="kept"))
        assert (tmp_path / "samples.jsonl").read_bytes() == b""  # buffered until the step's metrics row
        rec.metrics({"step": 0, "reward_mean": 0.5})
        row = read_jsonl(tmp_path / "samples.jsonl")[0]
        assert row["prompt_tokens"] == 3 and row["response_tokens"] == 2 and row["verdict"] == "kept"
        assert row["reward"] == 0.5 and row["score"] == 1.0 and row["weight_version"] == 2 and row["round"] == 1
    with RunRecorder(tmp_path) as rec:  # a resumed run continues the files
        rec.metrics({"step": 1})
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1]
    with pytest.raises(RuntimeError, match="closed"):
        rec.metrics({"step": 2})


@pytest.mark.parametrize("use_orjson", [True, False])
def test_non_finite_floats_are_written_as_null(monkeypatch, use_orjson):
    if not use_orjson:
        monkeypatch.setattr(records, "orjson", None)
    line = records.dumps({"a": math.nan, "b": [math.inf, 1.5], "c": {"d": -math.inf}, "e": "ü"})
    assert line.endswith(b"\n")
    assert json.loads(line) == {"a": None, "b": [None, 1.5], "c": {"d": None}, "e": "ü"}


def test_step_stats_row():
    stats = StepStats(
        started_s=10.0,
        tokens=40,
        generating_s=2.0,
        scores=[1.0, 0.0, 0.0, 1.0],
        rewards=[1.0, -0.5, 0.0, 1.0],
        queue_wait_s=[0.1, 0.3],
        queue_depths=[1, 3, 2],
    )
    stats.counts.update({"samples_correct": 2, "status/correct": 2, "filtered/zero_variance": 1})
    kept = [make_sample(sample_index=0, reward=1.0), make_sample(sample_index=1, reward=-0.5, response_ids=(1,))]
    row = stats.row(15.0, step=4, rounds=2, kept=kept, verifying_s=3.0, data_epoch=1)
    assert row["accuracy"] == 0.5 and row["reward_mean"] == 0.375 and row["score_mean"] == 0.5
    assert row["batch_reward_mean"] == 0.25 and row["response_length_mean"] == 1.5
    assert row["groups_kept"] == 1 and row["samples_trained"] == 2
    assert row["gen_tokens_per_s"] == 20.0 and row["time_rollout_s"] == 5.0 and row["time_waiting_verify_s"] == 3.0
    assert row["verify_queue_depth_max"] == 3 and row["verify_queue_depth_mean"] == 2.0
    assert row["verify_queue_wait_mean_s"] == pytest.approx(0.2)
    assert row["filtered/zero_variance"] == 1 and row["step"] == 4 and row["rounds"] == 2
    empty = StepStats(started_s=0.0, counts=Counter()).row(1.0, step=0, rounds=1, kept=[], verifying_s=0, data_epoch=0)
    assert empty["accuracy"] is None and empty["reward_mean"] is None and empty["gen_tokens_per_s"] is None
