"""Group filters of the rollout: small verdicts with reasons, in a registry; the reasons become metrics.

A filter looks at one finished group (the G verified samples of one prompt) and returns a `Verdict`: keep or
drop the group, and which samples to exclude from training. The rollout applies them in order, always
starting with `InfrastructureFilter` (a failed sandbox or backend is not the policy's fault, so its samples
are excluded, never scored 0):

    filters = build_filters(["overlong", "zero_variance"], group_size=8)
    judgement = judge(group, filters)
    judgement.group            # the group to train on, or None when dropped
    judgement.reason           # "kept" or the dropping filter's reason, e.g. "zero_variance"
    judgement.excluded         # Counter of excluded samples by reason

Built-in filters (`available_filters()`):
- "zero_variance": DAPO dynamic sampling (arXiv 2503.14476, section 3.2): a group whose rewards are all equal
  has zero advantage everywhere, so it carries no gradient; drop it and let the rollout generate a replacement.
- "overlong": DAPO overlong filtering (section 3.4): exclude truncated samples (finish reason "length") from
  training, since their reward judges an unfinished answer.
- "min_samples": drop a group left with fewer than `minimum` (default 2) trainable samples, which has no
  group baseline to speak of.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from engine.rollout.batch import Group


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """A filter's decision on one group. `reason` names why the group is dropped or samples excluded."""

    keep: bool
    reason: str = ""
    exclude: tuple[int, ...] = ()  # Sample.sample_index values to leave out of training


KEEP = Verdict(keep=True)


class GroupFilter(Protocol):
    """Judges one finished group. Must be pure: the same group always gets the same verdict."""

    name: str

    def __call__(self, group: Group) -> Verdict: ...


@dataclass(frozen=True, kw_only=True)
class InfrastructureFilter:
    """Excludes samples whose generation or verification failed for reasons outside the policy."""

    name: str = "infrastructure"

    def __call__(self, group: Group) -> Verdict:
        failed = tuple(s.sample_index for s in group.samples if s.infra_failure)
        return Verdict(keep=True, reason="infrastructure", exclude=failed) if failed else KEEP


@dataclass(frozen=True, kw_only=True)
class ZeroVarianceFilter:
    """DAPO dynamic sampling: drop groups whose rewards are all equal (zero advantage for every sample)."""

    name: str = "zero_variance"
    tolerance: float = 1e-9

    def __call__(self, group: Group) -> Verdict:
        rewards = group.rewards
        if len(rewards) >= 1 and max(rewards) - min(rewards) <= self.tolerance:
            return Verdict(keep=False, reason="zero_variance")
        return KEEP


@dataclass(frozen=True, kw_only=True)
class OverlongFilter:
    """DAPO overlong filtering: exclude samples cut off at max_new_tokens from training."""

    name: str = "overlong"

    def __call__(self, group: Group) -> Verdict:
        cut = tuple(s.sample_index for s in group.samples if s.finish_reason == "length")
        return Verdict(keep=True, reason="overlong", exclude=cut) if cut else KEEP


@dataclass(frozen=True, kw_only=True)
class MinSamplesFilter:
    """Drop groups left with fewer than `minimum` trainable samples."""

    name: str = "min_samples"
    minimum: int = 2

    def __post_init__(self) -> None:
        if self.minimum < 1:
            raise ValueError(f"min_samples filter: minimum must be >= 1, got {self.minimum}")

    def __call__(self, group: Group) -> Verdict:
        if len(group.samples) < self.minimum:
            return Verdict(keep=False, reason="min_samples")
        return KEEP


# Factories share one signature: the group size G (some filters need it), nothing else.
FILTERS: dict[str, Callable[[int], GroupFilter]] = {
    "min_samples": lambda group_size: MinSamplesFilter(minimum=min(2, group_size)),
    "overlong": lambda group_size: OverlongFilter(),
    "zero_variance": lambda group_size: ZeroVarianceFilter(),
}


def available_filters() -> list[str]:
    return sorted(FILTERS)


def build_filters(names: Sequence[str], *, group_size: int) -> tuple[GroupFilter, ...]:
    """The infrastructure filter followed by the named filters, in order. Unknown names list the valid ones."""
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise ValueError(f"unknown rollout filter(s) {unknown}; valid: {available_filters()}")
    return (InfrastructureFilter(), *(FILTERS[n](group_size) for n in dict.fromkeys(names)))


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """The outcome of all filters on one group."""

    group: Group | None  # None: dropped
    reason: str  # "kept", or the reason of the filter that dropped it
    excluded: Counter[str]  # samples excluded from training, by reason


def judge(group: Group, filters: Sequence[GroupFilter]) -> Judgement:
    """Apply `filters` in order; each sees the group without the samples earlier filters excluded."""
    excluded: Counter[str] = Counter()
    for f in filters:
        verdict = f(group)
        if verdict.exclude:
            excluded[verdict.reason or f.name] += len(verdict.exclude)
            group = group.without(verdict.exclude)
        if not verdict.keep:
            return Judgement(group=None, reason=verdict.reason or f.name, excluded=excluded)
        if not group.samples:
            return Judgement(group=None, reason="no_trainable_samples", excluded=excluded)
    return Judgement(group=group, reason="kept", excluded=excluded)
