"""The run directory's JSONL records: `samples.jsonl` (every completion) and `metrics.jsonl` (one row per step).

    with RunRecorder(run_dir) as recorder:
        recorder.sample(sample_row(sample, step=0, round=0, epoch=0, verdict="kept"))
        recorder.metrics({**step_stats.row(time.monotonic(), ...), **learner_metrics})   # flushes both files

`sample_row` and `StepStats.row` define the two row schemas (the rollout fills them; see engine.rollout).

Rows are appended (a resumed run continues its files). Samples are buffered and reach the disk with the
step's metrics row, or on `flush()` / `close()`, so a killed step loses at most its own samples. orjson
serialises when it is installed (several times faster on large rows), the standard json module otherwise;
either way non-finite floats are written as null, so every line is strict JSON.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.rollout.batch import Sample

try:
    import orjson
except ImportError:  # optional speed-up
    orjson = None

SAMPLES_FILE = "samples.jsonl"
METRICS_FILE = "metrics.jsonl"


def dumps(row: Mapping[str, Any]) -> bytes:
    """One JSON line (with its newline). Non-finite floats become null; unknown objects their str()."""
    if orjson is not None:
        return orjson.dumps(row, default=str, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS)
    return (json.dumps(_finite(row), default=str, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every row of a JSONL file (for reports and tests)."""
    with open(path, "rb") as f:
        return [json.loads(line) for line in f if line.strip()]


class RunRecorder:
    """Appends sample and metrics rows under `run_dir`. Close it (or use `with`) to flush what is buffered."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.run_dir / SAMPLES_FILE
        self.metrics_path = self.run_dir / METRICS_FILE
        self._samples: IO[bytes] | None = open(self.samples_path, "ab")  # noqa: SIM115 (closed in close())
        self._metrics: IO[bytes] | None = open(self.metrics_path, "ab")  # noqa: SIM115

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._samples is None

    def sample(self, row: Mapping[str, Any]) -> None:
        self._file(self._samples).write(dumps(row))

    def metrics(self, row: Mapping[str, Any]) -> None:
        """Append a step's row, then flush both files so the step is on disk as a whole."""
        self._file(self._metrics).write(dumps(row))
        self.flush()

    def flush(self) -> None:
        for f in (self._samples, self._metrics):
            if f is not None:
                f.flush()

    def close(self) -> None:
        files, (self._samples, self._metrics) = (self._samples, self._metrics), (None, None)
        for f in files:
            if f is not None:
                f.close()

    def _file(self, f: IO[bytes] | None) -> IO[bytes]:
        if f is None:
            raise RuntimeError(f"RunRecorder for {self.run_dir} is closed; open a new one to write more rows")
        return f


def sample_row(s: Sample, *, step: int, round: int, epoch: int, verdict: str) -> dict[str, Any]:
    """The samples.jsonl row of one completion. Times are seconds since the rollout started."""
    return {
        "step": step,
        "round": round,
        "epoch": epoch,
        "problem_id": s.problem_id,
        "group_id": s.group_id,
        "sample_index": s.sample_index,
        "verdict": verdict,
        "status": s.status,
        "error_kind": s.error_kind,
        "infra_failure": s.infra_failure,
        "score": s.score,
        "reward": s.reward,
        "correct": s.correct,
        "objective": s.objective,
        "detail": s.detail,
        "weight_version": s.weight_version,
        "prompt_tokens": len(s.prompt_ids),
        "response_tokens": len(s.response_ids),
        "finish_reason": s.finish_reason,
        "t_generated_s": s.generated_s,
        "t_verify_start_s": s.verify_start_s,
        "t_verify_end_s": s.verify_end_s,
        "text": s.text,
    }


def kept_metrics(kept: Sequence[Sample]) -> dict[str, Any]:
    """The metrics of the samples a step trains on; recomputed whenever groups are dropped after the step."""
    return {
        "groups_kept": len({s.group_id for s in kept}),
        "samples_trained": len(kept),
        "batch_reward_mean": _mean([s.reward for s in kept if s.reward is not None]),
        "response_length_mean": _mean([len(s.response_ids) for s in kept]),
    }


@dataclass(eq=False, kw_only=True)
class StepStats:
    """Counters and timings of one rollout step, accumulated while it runs; `row()` makes its metrics row.

    counts keys: "status/<outcome status>" and "errors/<failure kind>" (solvers.failures; none for a correct one)
    per completion, "filtered/<reason>" per dropped group,
    "excluded/<reason>" per sample left out of a kept group, "prompts/<ok|truncated|too_long>",
    "groups_solve_all" / "groups_solve_none", "groups_surplus", "samples_correct".
    """

    started_s: float  # time.monotonic() at the start of the step
    counts: Counter[str] = field(default_factory=Counter)
    tokens: int = 0
    generating_s: float = 0.0
    blocked_s: float = 0.0  # part of generating_s spent waiting for room in the full verify queue
    scores: list[float] = field(default_factory=list)  # verifier rewards of scored samples of judged groups
    rewards: list[float] = field(default_factory=list)  # the same after reward shaping
    queue_wait_s: list[float] = field(default_factory=list)  # completion arrived -> its verification started
    queue_depths: list[int] = field(default_factory=list)  # verify queue length after each completion arrived

    def row(
        self, now: float, *, step: int, rounds: int, kept: Sequence[Sample], verifying_s: float, data_epoch: int
    ) -> dict[str, Any]:
        elapsed = now - self.started_s
        return {
            "step": step,
            "rounds": rounds,
            **kept_metrics(kept),
            "reward_mean": _mean(self.rewards),
            "score_mean": _mean(self.scores),
            "accuracy": self.counts["samples_correct"] / len(self.scores) if self.scores else None,
            "gen_tokens": self.tokens,
            "gen_tokens_per_s": self.tokens / self.generating_s if self.generating_s else None,
            "time_rollout_s": elapsed,
            "time_generating_s": self.generating_s,
            "time_generation_blocked_s": self.blocked_s,  # backpressure: the verify queue was full
            "time_verifying_s": verifying_s,  # wall time with at least one verification running
            "time_waiting_verify_s": max(0.0, elapsed - self.generating_s),  # generator idle, sandbox still busy
            "verify_queue_wait_mean_s": _mean(self.queue_wait_s),
            "verify_queue_depth_max": max(self.queue_depths, default=0),
            "verify_queue_depth_mean": _mean(self.queue_depths),
            "data_epoch": data_epoch,
            **dict(sorted(self.counts.items())),
        }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
