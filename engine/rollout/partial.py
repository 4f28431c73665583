"""Partial rollouts: a weight update cuts the samples still decoding short, and each resumes on the new weights.

Without them a weight update waits for every request in flight (SGLang's writer lock), so one long generation
of the batch being made ahead (`max_staleness >= 1`) holds the learner's next step back. With them
(`rollout.partial_rollouts: true`, as slime and AReaL do):

1. `Resumer.update_weights` holds back new generation requests, aborts what the backend has in flight and
   loads the new weights. A sample cut short arrives with finish_reason "abort", no error, and the tokens and
   log-probs decoded so far (the backend's `resumable` capability, `engine.generation.base.can_resume`).
2. Once the weights are in, `Resumer.finish` sends prompt + those tokens as a new prompt with the remaining
   `max_new_tokens`, and joins the pieces: the completion's token ids and log-probs are the concatenation,
   `token_versions` records the weight version of every token, `weight_version` is the oldest one (the
   rollout's staleness bound applies to it), and `text` is left to the rollout to decode from the ids. A piece
   cut short again by a later update resumes again.

The log-probs stay those of the weights that generated each token, so the learner's rollout correction
(`algorithm.rollout_correction`: decoupled PPO or TIS, `learner.losses.rollout_weights`) weights every token by
its own behaviour probability. A resumed piece is drawn with its own sampling seed (derived from the round's
seed, the sample and the tokens it already has), so a seeded run with partial rollouts is reproducible only
when its updates cut the same samples at the same tokens, which depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace

from engine.generation.base import (
    BackendUnavailable,
    Completion,
    GenerationBackend,
    GenerationError,
    SamplingParams,
    Timings,
    WeightSource,
    can_resume,
    row_seed,
)


class Resumer:
    """Pauses generation around weight updates and finishes the samples an update cut short (module docstring)."""

    def __init__(self, backend: GenerationBackend) -> None:
        if not can_resume(backend):
            raise ValueError(
                f"rollout.partial_rollouts: the {backend.name} backend cannot resume an aborted sample (it does not "
                "return the partial tokens, or cannot continue from prompt + tokens); use generation.backend=sglang "
                "or set rollout.partial_rollouts: false"
            )
        self.backend = backend
        self.pauses = 0  # weight updates that cut generation short so far
        self._open = asyncio.Event()
        self._open.set()

    async def ready(self) -> int:
        """Wait until no weight update is under way; the pause count to pass to `cut_by_update` later."""
        await self._open.wait()
        return self.pauses

    def cut_by_update(self, c: Completion, sent: int) -> bool:
        """Whether `c`, from a request sent when the pause count was `sent`, was cut short by a weight update."""
        return c.finish_reason == "abort" and c.error is None and self.pauses > sent

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        """Abort what is decoding, load the new weights, then let generation (and the resumptions) go on."""
        self.pauses += 1
        self._open.clear()
        try:
            await self.backend.abort()
            return await self.backend.update_weights(source, version=version)
        finally:
            self._open.set()

    async def finish(self, prompt_ids: Sequence[int], cut: Completion, params: SamplingParams) -> Completion:
        """Continue `cut` (generated with `params`) until it ends on its own; the whole sample, as one completion.
        A backend failure ends it as the backend reported it (finish_reason "abort" with `error`), with the
        tokens gathered so far."""
        pieces, cuts = [cut], 1
        while True:
            done = sum(len(p.token_ids) for p in pieces)
            remaining = params.max_new_tokens - done
            if remaining <= 0:  # cut right at the budget: the sample is as long as it may be
                return joined(pieces, finish_reason="length", cuts=cuts)
            seed = None if params.seed is None else row_seed(params.seed, cut.prompt_index, cut.sample_index + done)
            sent = await self.ready()
            prompt = [*prompt_ids, *(t for p in pieces for t in p.token_ids)]
            stream = self.backend.generate([prompt], replace(params, max_new_tokens=remaining, seed=seed), n=1)
            last: Completion | None = None
            try:
                async with contextlib.aclosing(stream):
                    async for c in stream:
                        last = c
            except BackendUnavailable:
                raise  # every server stays down: the run stops, as for a round's stream
            except GenerationError as exc:
                return joined(pieces, finish_reason="abort", error=f"resuming the sample failed: {exc}", cuts=cuts)
            if last is None:
                error = "the backend ended the resumed sample's stream"
                return joined(pieces, finish_reason="abort", error=error, cuts=cuts)
            pieces.append(last)
            if not self.cut_by_update(last, sent):
                return joined(pieces, cuts=cuts)
            cuts += 1


def joined(
    pieces: Sequence[Completion], *, finish_reason: str | None = None, error: str | None = None, cuts: int = 0
) -> Completion:
    """One completion from a sample's consecutive pieces (the first was cut short, each next continues it);
    `meta` is the last piece's with "pieces" and "cuts" (how many times a weight update cut it short)."""
    first, last = pieces[0], pieces[-1]
    versions = tuple(v for p in pieces for v in p.versions)
    tokens = tuple(t for p in pieces for t in p.token_ids)
    first_token = next((p.timings.first_token_s for p in pieces if p.timings.first_token_s is not None), None)
    return Completion(
        prompt_index=first.prompt_index,
        sample_index=first.sample_index,
        token_ids=tokens,
        logprobs=tuple(x for p in pieces for x in p.logprobs),
        finish_reason=finish_reason or last.finish_reason,  # type: ignore[arg-type]
        weight_version=min(versions, default=last.weight_version),
        token_versions=versions if len(set(versions)) > 1 else (),
        timings=Timings(
            submitted_s=first.timings.submitted_s, first_token_s=first_token, finished_s=last.timings.finished_s
        ),
        text=None if len(pieces) > 1 else first.text,  # pieces' texts need not join at a character boundary
        error=error if error is not None else last.error,
        meta={**last.meta, "pieces": len(pieces), "cuts": cuts},
    )
