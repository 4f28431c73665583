"""The run directory's JSONL records: `samples.jsonl` (every completion) and `metrics.jsonl` (one row per step).

    with RunRecorder(run_dir) as recorder:
        recorder.sample(sample_row(sample, step=0, round=0, epoch=0, verdict="kept"))
        recorder.metrics({**step_stats.row(time.monotonic(), ...), **learner_metrics})   # flushes both files

`sample_row` and `StepStats.row` define the two row schemas (the rollout fills them; see engine.rollout).

Rows are appended (a resumed run continues its files). Samples are buffered and reach the disk with the
step's metrics row, or on `flush()` / `close()`, so a killed step loses at most its own samples. A file holds
whole lines only: rows reach it in one write at a flush, a write that fails part-way (a full disk) is cut back
to the file's previous end before `StorageError` is raised, and a line left unfinished by a killed process is
cut off when the file is opened again. orjson serialises when it is installed (several times faster on large
rows), the standard json module otherwise; either way non-finite floats are written as null, so every line is
strict JSON.

Under torchrun each rank's rollout writes its own rows; `reduce_rollout_metrics` merges the ranks' metrics
rows of one step into the run's global row (see `REDUCTION` for the rule of each key).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.rollout.batch import Sample

try:
    import orjson
except ImportError:  # optional speed-up
    orjson = None

SAMPLES_FILE = "samples.jsonl"
METRICS_FILE = "metrics.jsonl"

log = logging.getLogger("evom.records")


class StorageError(RuntimeError):
    """The run directory cannot take a write (disk full, quota, read-only); what was written before stays whole."""


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


def cut_partial_line(path: str | Path) -> int:
    """Truncate `path` after its last newline (a line a killed writer left unfinished); returns the bytes cut."""
    path = Path(path)
    if not path.is_file():
        return 0
    with open(path, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        end, chunk = size, 1 << 16
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        if end < size:
            f.truncate(end)
    if end < size:
        log.warning("%s ended in an unfinished line (%d bytes); cut back to its last whole row", path, size - end)
    return size - end


class JsonlAppender:
    """Appends whole JSON lines to one file. Rows wait in memory until `flush()`, which writes them in one go; a
    write that fails part-way is cut back to the file's previous end and raises StorageError."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        cut_partial_line(self.path)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._pending: list[bytes] = []

    @property
    def closed(self) -> bool:
        return self._fd is None

    def append(self, row: Mapping[str, Any]) -> None:
        if self._fd is None:
            raise RuntimeError(f"{self.path} is closed; open a new writer to append more rows")
        self._pending.append(dumps(row))

    def flush(self) -> None:
        """Write the pending rows; StorageError when the file system refuses them (the file unchanged, the rows
        dropped)."""
        if self._fd is None or not self._pending:
            return
        data, self._pending = b"".join(self._pending), []
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            os.ftruncate(self._fd, start)
            raise StorageError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def close(self, *, flush: bool = True) -> None:
        """Write what is pending (unless `flush` is false: it is dropped) and close the file."""
        if self._fd is None:
            return
        try:
            if flush:
                self.flush()
        finally:
            fd, self._fd, self._pending = self._fd, None, []
            os.close(fd)


class RunRecorder:
    """Appends sample and metrics rows under `run_dir` (metrics under `metrics_dir` when given). Close it (or use
    `with`) to flush what is buffered.

    After a write failed (StorageError) the recorder takes no more rows: both files stay at their last whole row
    and the run stops with that error."""

    def __init__(self, run_dir: str | Path, *, metrics_dir: str | Path | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.run_dir / SAMPLES_FILE
        self.metrics_path = Path(metrics_dir or run_dir) / METRICS_FILE
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        self._samples = JsonlAppender(self.samples_path)
        self._metrics = JsonlAppender(self.metrics_path)
        self._failed = False

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._samples.closed

    def sample(self, row: Mapping[str, Any]) -> None:
        self._check_open()
        if not self._failed:
            self._samples.append(row)

    def metrics(self, row: Mapping[str, Any]) -> None:
        """Append a step's row, then flush both files (samples first) so the step is on disk as a whole."""
        self._check_open()
        if not self._failed:
            self._metrics.append(row)
            self.flush()

    def flush(self) -> None:
        if self._failed:
            return
        try:
            self._samples.flush()
            self._metrics.flush()
        except StorageError:
            self._failed = True
            raise

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._samples.close(flush=False)
            self._metrics.close(flush=False)

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"RunRecorder for {self.run_dir} is closed; open a new one to write more rows")


def sample_row(s: Sample, *, step: int, round: int, epoch: int, verdict: str) -> dict[str, Any]:
    """The samples.jsonl row of one completion. Times are seconds since the rollout started."""
    return {
        "step": step,
        "round": round,
        "epoch": epoch,
        "problem_id": s.problem_id,
        "solver": s.solver,
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
        "version_spans": [list(span) for span in s.version_spans] if s.token_versions else None,
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

    Per solver (problems that name theirs, `count_solver`): the row adds `by_solver/<name>/groups`,
    `.../samples_scored`, `.../samples_correct`, `.../accuracy`, `.../reward_mean` and `.../errors/<kind>`, over
    the same samples as the step's `accuracy` and `reward_mean` (the scored samples of the groups judged this
    step; infrastructure failures are never scored).
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
    solver_samples: dict[str, list[Sample]] = field(default_factory=dict)  # scored samples of judged groups
    solver_groups: Counter[str] = field(default_factory=Counter)

    def count_solver(self, solver: str | None, scored: Sequence[Sample]) -> None:
        """Count one judged group's scored samples under its problem's solver (None: the problem names none, and
        the step reports no per-solver metrics for it)."""
        if solver is None:
            return
        self.solver_groups[solver] += 1
        self.solver_samples.setdefault(solver, []).extend(scored)

    def solver_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for name in sorted(self.solver_groups):
            samples = self.solver_samples.get(name, [])
            correct = sum(s.correct for s in samples)
            prefix = f"{SOLVER_PREFIX}{name}/"
            row[prefix + "groups"] = self.solver_groups[name]
            row[prefix + "samples_scored"] = len(samples)
            row[prefix + "samples_correct"] = correct
            row[prefix + "accuracy"] = correct / len(samples) if samples else None
            row[prefix + "reward_mean"] = _mean([s.reward for s in samples if s.reward is not None])
            kinds = Counter(s.error_kind for s in samples if s.error_kind is not None)
            row.update({f"{prefix}errors/{kind}": n for kind, n in sorted(kinds.items())})
        return row

    def row(
        self, now: float, *, step: int, rounds: int, kept: Sequence[Sample], verifying_s: float, data_epoch: int
    ) -> dict[str, Any]:
        elapsed = now - self.started_s
        return {
            "step": step,
            "rounds": rounds,
            **kept_metrics(kept),
            "samples_scored": len(self.scores),
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
            "verify_started": len(self.queue_wait_s),
            "verify_queue_wait_mean_s": _mean(self.queue_wait_s),
            "verify_queued": len(self.queue_depths),
            "verify_queue_depth_max": max(self.queue_depths, default=0),
            "verify_queue_depth_mean": _mean(self.queue_depths),
            "data_epoch": data_epoch,
            **dict(sorted(self.counts.items())),
            **self.solver_row(),
        }


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# How the ranks' values of one rollout metric become the global one (`reduce_rollout_metrics`):
#   "sum"    counts (samples, groups, tokens, statuses, filter verdicts) and rates of generators running side by
#            side (gen_tokens_per_s: the ranks' generators decode at the same time, so their rates add up);
#   "max"    wall times and peaks: the ranks run a step at the same time and the step waits for the slowest
#            (times, queue depth peaks, staleness_max, rounds, data_epoch, weight_version);
#   (keys)   a mean over items, weighted by the number of items each rank averaged (the sum of those count keys);
#   "same"   the step index, equal on every rank;
#   "any"    flags.
# Keys under a prefix in COUNT_PREFIXES are summed. A rank that lacks a key (a Counter key it never hit, a mean
# over nothing) contributes nothing to it.
REDUCTION: dict[str, str | tuple[str, ...]] = {
    "step": "same",
    "rounds": "max",
    "groups_kept": "sum",
    "samples_trained": "sum",
    "samples_scored": "sum",
    "samples_correct": "sum",
    "groups_solve_all": "sum",
    "groups_solve_none": "sum",
    "groups_surplus": "sum",
    "batch_reward_mean": ("samples_trained",),
    "response_length_mean": ("samples_trained",),
    "reward_mean": ("samples_scored",),
    "score_mean": ("samples_scored",),
    "accuracy": ("samples_scored",),  # samples_correct / samples_scored on each rank
    "gen_tokens": "sum",
    "gen_tokens_per_s": "sum",
    "time_rollout_s": "max",
    "time_generating_s": "max",
    "time_generation_blocked_s": "max",
    "time_verifying_s": "max",
    "time_waiting_verify_s": "max",
    "time_waiting_for_batch_s": "max",
    "verify_started": "sum",
    "verify_queue_wait_mean_s": ("verify_started",),
    "verify_queued": "sum",
    "verify_queue_depth_max": "max",
    "verify_queue_depth_mean": ("verify_queued",),
    "data_epoch": "max",
    "weight_version": "max",
    "staleness_max": "max",
    "staleness_mean": ("samples_trained",),
    "ready_queue_depth": "max",
    "verify/cache_hits": "sum",
    "verify/cache_runs": "sum",
    "verify/cache_hit_rate": ("verify/cache_hits", "verify/cache_runs"),
    "verify/cache_saved_s": "sum",  # sandbox seconds saved: each rank's pool saved its own
    # Every rank's client watches the same servers: a server going down is one event however many ranks saw it.
    "generation/server_downs": "max",
    "generation/servers_down": "max",
    "generation/failed_attempts": "sum",
    "interrupted": "any",
}
COUNT_PREFIXES = ("status/", "errors/", "filtered/", "excluded/", "prompts/", "partial/")
# Per-solver metrics, `by_solver/<name>/<metric>`: the rule of each metric (`errors/<kind>` counts are summed), a
# weighted mean's count keys being the same solver's. Solver names hold no "/".
SOLVER_PREFIX = "by_solver/"
SOLVER_REDUCTION: dict[str, str | tuple[str, ...]] = {
    "groups": "sum",
    "samples_scored": "sum",
    "samples_correct": "sum",
    "accuracy": ("samples_scored",),
    "reward_mean": ("samples_scored",),
}


def reduction_rule(key: str) -> str | tuple[str, ...] | None:
    """`key`'s rule in REDUCTION ("sum" for the count families, SOLVER_REDUCTION's for a per-solver metric), or
    None for a key without one."""
    if key.startswith(COUNT_PREFIXES):
        return "sum"
    if key.startswith(SOLVER_PREFIX):
        solver, _, metric = key.removeprefix(SOLVER_PREFIX).partition("/")
        rule = "sum" if metric.startswith("errors/") else SOLVER_REDUCTION.get(metric)
        if isinstance(rule, tuple):
            return tuple(f"{SOLVER_PREFIX}{solver}/{count}" for count in rule)
        return rule
    return REDUCTION.get(key)


def reduce_rollout_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One step's rollout metrics over all ranks, from each rank's row (rank order), by the rules of REDUCTION.

    Keys follow the first row's order, then keys only later rows have. A key without a rule is left out with a
    warning (give it one in REDUCTION); ValueError when the rows are of different steps.
    """
    if not rows:
        raise ValueError("reduce_rollout_metrics needs the row of at least one rank")
    keys = list(dict.fromkeys(key for row in rows for key in row))
    unknown = [key for key in keys if reduction_rule(key) is None]
    if unknown:
        log.warning("rollout metrics %s have no rule in engine.records.REDUCTION; left out of the global row", unknown)
    out: dict[str, Any] = {}
    for key in keys:
        rule = reduction_rule(key)
        if rule is not None:
            out[key] = _reduce(key, rule, rows)
    return out


def _reduce(key: str, rule: str | tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> Any:
    values = [row[key] for row in rows if row.get(key) is not None]
    if not values:
        return None
    if rule == "same":
        if len(set(values)) > 1:
            raise ValueError(f"ranks disagree on {key!r}: {values}; their rows are of different steps")
        return values[0]
    if rule == "sum":
        return sum(values)
    if rule == "max":
        return max(values)
    if rule == "any":
        return any(values)
    weights = [sum(row.get(count) or 0 for count in rule) for row in rows if row.get(key) is not None]
    total = sum(weights)
    # No rank counted an item: the ranks' means are placeholders (0.0 staleness of an empty batch).
    if not total:
        return sum(values) / len(values)
    return sum(v * w for v, w in zip(values, weights, strict=True)) / total
