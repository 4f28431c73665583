"""The generation protocol shared by every backend: sampling parameters in, finished completions out.

A backend takes prompts as token ids (no tokenizer on this path: the rollout owns chat templates) and
a group size `n`, and yields each `Completion` the moment its sample finishes, so the rollout can verify
it while the rest of the batch is still decoding:

    async with create_backend("local", model=policy) as backend:
        async for c in backend.generate([[1, 2, 3], [4, 5]], SamplingParams(max_new_tokens=64), n=8):
            print(c.prompt_index, c.sample_index, c.finish_reason, len(c.token_ids))

Breaking out of the `async for` aborts what that call still has in flight.

Log-probs are log_softmax(logits / T) at the sampling temperature T (1 when greedy), with no top-p/top-k
truncation: the quantity a teacher-forced forward pass of the learner recomputes when it divides its logits by
the same T (`algorithm.temperature`); see each backend for how it gets them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

FinishReason = Literal["stop", "length", "abort"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "abort")

# What a learner hands to `update_weights`: an in-memory state dict or an exported HF directory.
WeightSource = Mapping[str, Any] | str | PathLike
# The form a backend wants new weights in: "state_dict" (full tensors in memory, copied in place) or
# "hf_dir" (a directory in Hugging Face layout that its servers read).
WeightFormat = Literal["state_dict", "hf_dir"]
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


class GenerationError(RuntimeError):
    """A backend could not do what was asked (bad input, unreachable server, unsupported operation)."""


class BackendUnavailable(GenerationError):
    """Every server of a remote backend stayed down (unreachable, or not serving the current weights) for longer
    than its `server_down_timeout_s`: generation cannot go on, so the caller stops rather than count every
    further sample as a backend failure."""


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How to sample one completion. Identical for every prompt of one `generate` call.

    temperature 0 means greedy; top_k -1 and top_p 1.0 disable those filters (SGLang's conventions).
    `ignore_eos` decodes every sample to exactly max_new_tokens: neither EOS nor `stop_token_ids` end it (SGLang's
    `ignore_eos`, which skips its stop-token check whole). For benchmarks that need a fixed amount of work.
    `seed` makes sampling reproducible: sample (prompt i, sample j) of a call draws from a generator seeded
    by (seed, i, j), so its tokens do not depend on what else shares the batch (local backend) or on
    which server it lands (sglang sends `sampling_seed`).
    """

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0.0 and math.isfinite(self.temperature)):
            raise ValueError(f"SamplingParams.temperature must be a finite number >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k == 0 or self.top_k < -1:
            raise ValueError(f"SamplingParams.top_k must be -1 (off) or >= 1, got {self.top_k}")
        # Accept any iterable of ints (a YAML list) but store a hashable tuple.
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The stable 63-bit seed of sample (prompt_index, sample_index) of a call seeded with `seed`."""
    return (seed * _MIX[0] + (prompt_index + 1) * _MIX[1] + (sample_index + 1) * _MIX[2]) % (1 << 63)


@dataclass(frozen=True, kw_only=True)
class Timings:
    """`time.monotonic()` stamps of one sample: handed to the backend, first token seen, finished."""

    submitted_s: float
    first_token_s: float | None
    finished_s: float

    @property
    def latency_s(self) -> float:
        return self.finished_s - self.submitted_s


@dataclass(frozen=True, kw_only=True)
class Completion:
    """One finished sample.

    token_ids: (T,) generated ids, stop token included when finish_reason is "stop".
    logprobs: (T,) log p(token_t | prompt, tokens_<t) under the weights that generated token t.
    finish_reason: "stop" (a stop token / EOS), "length" (max_new_tokens), "abort" (aborted, or failed:
    then `error` says why, e.g. a server that kept answering HTTP 500 after the retries).
    weight_version: the version of the weights that generated the sample's oldest token (the last update
    before it started when it has none).
    token_versions: (T,) the weight version of each token when they differ (a sample generated across a weight
    update); empty when every token is of `weight_version`. `versions` gives the full list either way.
    """

    prompt_index: int
    sample_index: int
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason
    weight_version: int
    timings: Timings
    text: str | None = None
    error: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    token_versions: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {self.finish_reason!r}")
        if self.token_versions and len(self.token_versions) != len(self.token_ids):
            raise ValueError(
                f"token_versions has {len(self.token_versions)} entries for {len(self.token_ids)} token(s)"
            )

    @property
    def versions(self) -> tuple[int, ...]:
        """The weight version of every token (T,)."""
        return self.token_versions or (self.weight_version,) * len(self.token_ids)

    @property
    def failed(self) -> bool:
        """True for an infrastructure failure: exclude from training, never score as reward 0."""
        return self.error is not None


@runtime_checkable
class GenerationBackend(Protocol):
    """What the rollout needs from a generator. Implementations: local, sglang, openai.

    Callers never branch on `name`: they read the class-level capabilities below, which the registry
    (`engine.generation.backend_class`) exposes before a backend is built. A backend is built from its
    options dataclass, `cls(config)`, or `cls(model, config)` when it `needs_model`.
    """

    name: ClassVar[str]
    # The options dataclass: the backend's section of the run config (`generation.<name>`).
    config_class: ClassVar[type]
    # The form `update_weights` wants new policy weights in; None: it serves a fixed model and cannot train.
    weight_format: ClassVar[WeightFormat | None]
    # Decodes with the caller's policy module in-process: build it with `create_backend(..., model=...)`.
    needs_model: ClassVar[bool]
    # Optional (read it with `can_resume`): True when a sample cut short by `abort()` (finish_reason "abort",
    # no `error`) carries every token and log-prob decoded so far, and generating from prompt + those tokens
    # continues it exactly (token ids in, token ids out). The rollout's partial rollouts need it.

    @property
    def weight_version(self) -> int: ...

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, *, n: int = 1
    ) -> AsyncIterator[Completion]:
        """Yield the len(prompts) * n completions of this call in the order they finish."""
        ...

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        """Load new policy weights; returns the new weight version (default: current + 1)."""
        ...

    async def abort(self) -> None:
        """Abort every in-flight sample; their completions arrive with finish_reason "abort"."""
        ...

    async def health(self) -> dict[str, bool]:
        """{server: answers} for every server this backend talks to; works before `start` (no launching)."""
        ...

    def explain_down(self, down: Sequence[str]) -> str:
        """One line for a user: which of `health()`'s servers are down and how to bring them up."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> GenerationBackend: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


def can_resume(backend: object) -> bool:
    """Whether a backend (class or instance) can continue an aborted sample: its `resumable` capability."""
    return bool(getattr(backend, "resumable", False))


def check_prompts(prompts: Sequence[Sequence[int]], n: int) -> list[list[int]]:
    """Validate a generate call's inputs and return the prompts as plain int lists."""
    if n < 1:
        raise ValueError(f"group size n must be >= 1, got {n}")
    out = [[int(t) for t in p] for p in prompts]
    for i, p in enumerate(out):
        if not p:
            raise ValueError(f"prompt {i} is empty: every prompt needs at least one token id")
    return out


C = TypeVar("C")


def config_from_options(cls: type[C], options: Mapping[str, Any] | None, *, where: str) -> C:
    """Build a frozen config dataclass from a mapping (a YAML section), naming unknown keys and valid ones."""
    options = dict(options or {})
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {where}; valid options: {valid}")
    return cls(**options)
