"""What one rollout step hands over: samples and groups, the batch with its metrics, the state to resume from,
and the settings that shape it. Plain values: the learner, the filters and the records read them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from learner.config import RolloutBatch as LearnerBatch


@dataclass(frozen=True, kw_only=True)
class Sample:
    """One completion and its verification, as the learner and `samples.jsonl` see it.

    status: the verifier's outcome status ("correct", "wrong", ...), or an infrastructure failure:
    "sandbox_error", "backend_error", "aborted", "verify_error", "verify_timeout", "not_verified".
    score: the verifier's reward; reward: score plus reward shaping (DAPO's overlong penalty), the value
    advantages are computed from. Both are None for an infrastructure failure, which is never scored.
    error_kind: the kind of failure (`solvers.failures`: "syntax", "solver_api", "wrong_objective", ...), None
    when correct, "infrastructure" for an infrastructure failure.
    solver: the name of the solver the problem is verified with (its own, else the rollout's default), None when
    neither is known.
    Times are seconds since the rollout started: completion finished, verification started and ended.
    weight_version: the version of the weights that generated the oldest token (staleness is measured from it);
    token_versions: (T,) each token's version when they differ (a partial rollout resumed across a weight
    update; `logprobs[t]` is then of token t's version), empty when all are `weight_version`.
    """

    problem_id: str
    group_id: int
    sample_index: int
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str
    weight_version: int
    text: str
    status: str
    infra_failure: bool
    score: float | None = None
    reward: float | None = None
    correct: bool = False
    objective: float | None = None
    detail: str = ""
    error_kind: str | None = None
    generated_s: float = 0.0
    verify_start_s: float | None = None
    verify_end_s: float | None = None
    token_versions: tuple[int, ...] = ()
    solver: str | None = None

    @property
    def versions(self) -> tuple[int, ...]:
        """The weight version of every response token (T,)."""
        return self.token_versions or (self.weight_version,) * len(self.response_ids)

    @property
    def version_spans(self) -> list[tuple[int, int, int]]:
        """(version, start, end) runs of response tokens by the weights that generated them."""
        spans: list[tuple[int, int, int]] = []
        for t, v in enumerate(self.versions):
            if spans and spans[-1][0] == v:
                spans[-1] = (v, spans[-1][1], t + 1)
            else:
                spans.append((v, t, t + 1))
        return spans


@dataclass(frozen=True, kw_only=True)
class Group:
    """The samples of one prompt (at most `size`, fewer once samples are excluded)."""

    group_id: int
    problem_id: str
    size: int
    samples: tuple[Sample, ...]

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.samples if s.reward is not None]

    def without(self, sample_indices: Iterable[int]) -> Group:
        drop = set(sample_indices)
        return replace(self, samples=tuple(s for s in self.samples if s.sample_index not in drop))


@dataclass(frozen=True, kw_only=True)
class RolloutSettings:
    """The rollout's knobs (config sections `rollout` and `algorithm.overlong_*`); see the module docstring."""

    group_size: int
    prompts_per_step: int
    dynamic_sampling: bool
    max_gen_batches: int
    max_staleness: int
    queue_size: int
    verify_concurrency: int  # concurrent verifications; give it the sandbox pool's worker count
    filters: tuple[str, ...] = ()  # extra group filters (engine.filters); dynamic_sampling adds "zero_variance"
    overlong_buffer: int = 0  # DAPO soft overlong punishment over the last tokens of max_new_tokens; 0 = off
    overlong_factor: float = 1.0
    seed: int = 0  # data order (sampling seeds come from SamplingParams.seed, see round_sampling)
    verify_timeout_s: float = 600.0  # a verification taking longer counts as an infrastructure failure
    # Partial rollouts (engine.rollout.partial): a weight update aborts the samples still decoding and resumes each
    # from prompt + its tokens so far on the new weights, instead of waiting for them. Needs max_staleness >= 1
    # and a backend that can resume (`engine.generation.base.can_resume`).
    partial_rollouts: bool = False

    def __post_init__(self) -> None:
        for name in ("group_size", "prompts_per_step", "max_gen_batches", "queue_size", "verify_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"RolloutSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_staleness < 0 or self.overlong_buffer < 0:
            raise ValueError("RolloutSettings.max_staleness and overlong_buffer must be >= 0")
        if self.partial_rollouts and self.max_staleness < 1:
            raise ValueError(
                "rollout.partial_rollouts needs rollout.max_staleness >= 1: with 0 nothing is generating while the "
                "weights change, and a resumed sample is one version stale"
            )
        object.__setattr__(self, "filters", tuple(self.filters))

    @property
    def filter_names(self) -> tuple[str, ...]:
        return (*self.filters, "zero_variance") if self.dynamic_sampling else self.filters


@dataclass(frozen=True, kw_only=True)
class RolloutState:
    """Everything a later batch depends on besides the weights: where the problem stream is, how many
    generation rounds ran (each round's sampling seed derives from it) and the next group id. A checkpoint
    saves the state after its step's batch; a rollout started from it makes the same batches again."""

    epoch: int = 0
    position: int = 0
    rounds: int = 0
    next_group_id: int = 0

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> RolloutState:
        """The state a checkpoint saved (`dataclasses.asdict`); missing fields start at 0."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in saved.items() if k in names})


@dataclass(frozen=True, kw_only=True)
class RolloutResult:
    """One step's rollout: the kept groups (flattened into per-sample columns for the learner) and metrics."""

    step: int
    groups: tuple[Group, ...]
    metrics: Mapping[str, Any]
    state: RolloutState  # after this step's batch: checkpoint it to resume exactly

    @property
    def samples(self) -> list[Sample]:
        return [s for g in self.groups for s in g.samples]

    def __len__(self) -> int:
        return sum(len(g.samples) for g in self.groups)

    @property
    def prompt_ids(self) -> list[tuple[int, ...]]:
        return [s.prompt_ids for s in self.samples]

    @property
    def response_ids(self) -> list[tuple[int, ...]]:
        return [s.response_ids for s in self.samples]

    @property
    def old_logprobs(self) -> list[tuple[float, ...]]:
        return [s.logprobs for s in self.samples]

    @property
    def rewards(self) -> list[float]:
        return [s.reward for s in self.samples]  # type: ignore[misc]  (kept samples are always scored)

    @property
    def group_ids(self) -> list[int]:
        return [s.group_id for s in self.samples]

    @property
    def response_lengths(self) -> list[int]:
        return [len(s.response_ids) for s in self.samples]

    @property
    def weight_versions(self) -> list[int]:
        """Each sample's oldest token's weight version."""
        return [s.weight_version for s in self.samples]

    @property
    def token_versions(self) -> list[tuple[int, ...]]:
        """Each response token's weight version, aligned with `old_logprobs`."""
        return [s.versions for s in self.samples]

    def learner_batch(self) -> LearnerBatch:
        """The learner's input. Check `len(result)` first: a step whose groups were all dropped has nothing."""
        if not self.groups:
            raise ValueError(f"step {self.step} kept no group (see its filtered/* metrics); skip the update")
        return LearnerBatch(
            prompts=self.prompt_ids,
            responses=self.response_ids,
            rewards=self.rewards,
            group_ids=self.group_ids,
            old_logprobs=self.old_logprobs,
        )
