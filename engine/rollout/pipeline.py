"""The rollout's scheduler: generation rounds, verification on arrival, group judgement, batches handed to the
learner within the staleness bound. The package docstring (`engine.rollout`) describes how it works."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from engine.data.stream import ProblemStream
from engine.filters import build_filters, judge
from engine.generation import Completion, GenerationBackend, GenerationError, SamplingParams, WeightSource
from engine.generation.base import BackendUnavailable
from engine.prompts import PromptBuilder
from engine.records import RunRecorder, StepStats, kept_metrics, sample_row
from engine.rollout.batch import Group, RolloutResult, RolloutSettings, RolloutState, Sample
from engine.rollout.partial import Resumer
from engine.verifier import INFRA_STATUSES, ProblemLike, Verifier, problem_solver, step_metrics
from learner.losses import overlong_penalty
from solvers.failures import INFRASTRUCTURE

log = logging.getLogger("engine.rollout")


@dataclass(eq=False, kw_only=True)
class _OpenGroup:
    """Working state of a group being generated and verified."""

    group_id: int
    problem: ProblemLike
    epoch: int
    round: int
    prompt_ids: tuple[int, ...]
    batch: _BatchState
    samples: dict[int, Sample] = field(default_factory=dict)
    arrived: set[int] = field(default_factory=set)
    verdict: str = ""  # set when the group is closed: "kept", a filter reason, "surplus", "interrupted"


@dataclass(eq=False, kw_only=True)
class _BatchState:
    """Working state of the batch being collected; its counters and timings are in `stats`."""

    step: int
    stats: StepStats
    busy_at_start: float
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    kept: list[Group] = field(default_factory=list)
    open: set[_OpenGroup] = field(default_factory=set)
    rounds: int = 0


@dataclass(frozen=True, kw_only=True, eq=False)
class _Job:
    group: _OpenGroup
    completion: Completion
    arrived_s: float


class Rollout:
    """Makes training batches from problems; see the module docstring. Use as `async with rollout:`.

    `solver`: the name of the solver that verifies the problems naming none (the run's `solver.name`), recorded
    with their samples; a problem's own `solver` is recorded with its samples. None: such samples record none."""

    def __init__(
        self,
        *,
        backend: GenerationBackend,
        verifier: Verifier,
        prompts: PromptBuilder,
        problems: Sequence[ProblemLike],
        settings: RolloutSettings,
        sampling: SamplingParams,
        recorder: RunRecorder | None = None,
        start_step: int = 0,
        end_step: int | None = None,
        state: RolloutState | None = None,
        solver: str | None = None,
    ) -> None:
        self.backend, self.verifier, self.prompts, self.solver = backend, verifier, prompts, solver
        self.settings, self.sampling, self.recorder = settings, sampling, recorder
        state = state or RolloutState()
        self.stream = ProblemStream(problems, seed=settings.seed, epoch=state.epoch, position=state.position)
        self._filters = build_filters(settings.filter_names, group_size=settings.group_size)
        self._start_step, self._end_step = start_step, end_step  # no batch is made for end_step and later
        self._verify_q: asyncio.Queue[_Job] = asyncio.Queue(settings.queue_size)
        self._ready: asyncio.Queue[RolloutResult] = asyncio.Queue(1)
        self._updates, self._gate = 0, -settings.max_staleness
        self._updated = asyncio.Event()
        self._next_group_id, self._rounds_total = state.next_group_id, state.rounds
        self._too_long: set[str] = set()  # ids of problems whose prompt does not fit (at most the data set)
        self._inflight, self._busy_since, self._busy_total = 0, 0.0, 0.0
        self._current: _BatchState | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._verifying: set[_Job] = set()
        self._producer: asyncio.Task[None] | None = None
        self._resumer = Resumer(backend) if settings.partial_rollouts else None
        self._t0 = time.monotonic()
        self._state = "new"

    # ----- lifecycle -------------------------------------------------------------------------------------

    async def __aenter__(self) -> Rollout:
        if self._state != "new":
            raise RuntimeError(f"Rollout is {self._state}; make a new Rollout")
        self._state = "open"
        self._t0 = time.monotonic()
        self._tasks = [asyncio.create_task(self._verify_worker()) for _ in range(self.settings.verify_concurrency)]
        self._producer = asyncio.create_task(self._produce())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Cancel everything this rollout started; flush an unfinished batch's metrics (marked interrupted)."""
        if self._state == "closed":
            return
        self._state = "closed"
        tasks = [t for t in (self._producer, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._record_unverified()
        if self._current is not None and self.recorder is not None and not self.recorder.closed:
            self.recorder.metrics({**self._metrics(self._current), "interrupted": True})
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.flush()

    # ----- the learner's side ----------------------------------------------------------------------------

    async def next_batch(self) -> RolloutResult:
        """The next training batch (waiting for it if needed); raises what made the producer fail."""
        if self._state != "open" or self._producer is None:
            raise RuntimeError(f"Rollout.next_batch(): the rollout is {self._state}; use `async with rollout:`")
        if self._ready.empty() and self._updates < self._gate:
            raise RuntimeError(
                f"Rollout.next_batch(): the next batch needs {self._gate} weight update(s) but got {self._updates} "
                f"(max_staleness={self.settings.max_staleness}); call update_weights() or mark_policy_updated() "
                "after each training step"
            )
        waited = time.monotonic()
        get = asyncio.ensure_future(self._ready.get())
        # The producer and the verify workers only end by failing (a bug, a filter raising): surface that here
        # rather than wait forever for a batch that cannot come.
        try:
            done, _ = await asyncio.wait({get, self._producer, *self._tasks}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not get.done():
                get.cancel()
        if get not in done:
            failed = done.pop()
            failed.result()  # raises the task's error
            if failed is not self._producer:
                raise RuntimeError(f"rollout task {failed.get_name()} stopped without an error")
            # The producer ends cleanly at end_step, possibly in the same loop turn as it queued the last batch.
            if self._ready.empty():
                raise RuntimeError(f"Rollout.next_batch(): no batches after step {self._end_step}; end_step reached")
            return self._hand_over(self._ready.get_nowait(), waited_s=time.monotonic() - waited)
        return self._hand_over(get.result(), waited_s=time.monotonic() - waited)

    async def update_weights(self, source: WeightSource, *, version: int | None = None) -> int:
        """Send new policy weights to the backend and let the producer go on; returns the new version. With
        partial rollouts the samples still decoding are cut short first and resume on the new weights."""
        if self._resumer is not None:
            new_version = await self._resumer.update_weights(source, version=version)
        else:
            new_version = await self.backend.update_weights(source, version=version)
        self.mark_policy_updated()
        return new_version

    def mark_policy_updated(self) -> None:
        """Count a weight update made without `update_weights` (e.g. a backend sharing the learner's model)."""
        self._updates += 1
        self._updated.set()

    @property
    def state(self) -> RolloutState:
        """Where the producer is now; a finished batch carries the state as of its end (`RolloutResult.state`)."""
        epoch, position = self.stream.state
        return RolloutState(
            epoch=epoch, position=position, rounds=self._rounds_total, next_group_id=self._next_group_id
        )

    @property
    def batches_ready(self) -> int:
        """Finished batches waiting for the learner (at most one)."""
        return self._ready.qsize()

    def _hand_over(self, batch: RolloutResult, *, waited_s: float) -> RolloutResult:
        """Measure staleness against the backend's version now; drop groups over the bound."""
        now_version = self.backend.weight_version
        bound = self.settings.max_staleness
        fresh = tuple(g for g in batch.groups if all(now_version - s.weight_version <= bound for s in g.samples))
        staleness = [now_version - s.weight_version for g in fresh for s in g.samples]
        metrics = {
            **batch.metrics,
            "filtered/stale": len(batch.groups) - len(fresh),
            **kept_metrics([s for g in fresh for s in g.samples]),
            "weight_version": now_version,
            "staleness_max": max(staleness, default=0),
            "staleness_mean": sum(staleness) / len(staleness) if staleness else 0.0,
            "time_waiting_for_batch_s": waited_s,
            "ready_queue_depth": self._ready.qsize(),
        }
        return replace(batch, groups=fresh, metrics=metrics)

    # ----- producing batches -----------------------------------------------------------------------------

    async def _produce(self) -> None:
        step = self._start_step
        while self._end_step is None or step < self._end_step:
            self._gate = step - self._start_step - self.settings.max_staleness
            while self._updates < self._gate:
                self._updated.clear()
                await self._updated.wait()
            batch = await self._collect(step)
            await self._ready.put(batch)
            step += 1

    async def _collect(self, step: int) -> RolloutResult:
        """Run generation rounds until the batch has prompts_per_step kept groups or the rounds run out."""
        now = time.monotonic()
        batch = _BatchState(step=step, stats=StepStats(started_s=now), busy_at_start=self._busy_time(now))
        self._current = batch
        need, max_rounds = self.settings.prompts_per_step, self.settings.max_gen_batches
        round_task: asyncio.Task[None] | None = None
        try:
            while len(batch.kept) < need:
                if round_task is not None and round_task.done():
                    round_task.result()  # backend errors are handled inside; anything else is a bug to surface
                    round_task = None
                if round_task is None and batch.rounds < max_rounds and len(batch.kept) + len(batch.open) < need:
                    round_task = asyncio.create_task(self._generate(batch, self._open_groups(batch)))
                    batch.rounds += 1
                    continue
                if round_task is None and not batch.open:
                    break  # out of rounds: hand over a short batch
                batch.changed.clear()
                await batch.changed.wait()
        finally:
            if round_task is not None and not round_task.done():
                round_task.cancel()  # the batch is full (or we are cancelled): abort what is still decoding
                with contextlib.suppress(asyncio.CancelledError, GenerationError):
                    await round_task
            full = len(batch.kept) >= need
            for group in list(batch.open):
                if full:
                    batch.stats.counts["groups_surplus"] += 1
                self._close(group, "surplus" if full else "interrupted")
        self._current = None
        return RolloutResult(step=step, groups=tuple(batch.kept), metrics=self._metrics(batch), state=self.state)

    def _open_groups(self, batch: _BatchState) -> list[_OpenGroup]:
        """The next prompts_per_step problems whose prompts fit, as new open groups."""
        groups: list[_OpenGroup] = []
        while len(groups) < self.settings.prompts_per_step:
            epoch, problem = self.stream.next()
            # not cached: ids of a large data set would fill memory
            prompt = self.prompts.build(problem.question, solver=problem_solver(problem))
            batch.stats.counts[f"prompts/{prompt.status}"] += 1
            if prompt.ids is None:
                self._too_long.add(problem.id)
                if len(self._too_long) >= len(self.stream):
                    raise RuntimeError(
                        "every problem's prompt is over max_prompt_tokens; raise data.max_prompt_tokens or "
                        "use truncation (PromptSettings.overlong='truncate')"
                    )
                continue
            group = _OpenGroup(
                group_id=self._next_group_id,
                problem=problem,
                epoch=epoch,
                round=batch.rounds,
                prompt_ids=prompt.ids,
                batch=batch,
            )
            self._next_group_id += 1
            batch.open.add(group)
            groups.append(group)
        return groups

    async def _generate(self, batch: _BatchState, groups: list[_OpenGroup]) -> None:
        """One generation round: hand every completion on as it arrives; backend failures fill the gaps."""
        params = round_sampling(self.sampling, self._rounds_total)
        self._rounds_total += 1
        sent = await self._resumer.ready() if self._resumer is not None else 0
        started = time.monotonic()
        failure = "the backend ended the stream without this sample"
        stream = self.backend.generate([g.prompt_ids for g in groups], params, n=self.settings.group_size)
        resuming: set[asyncio.Task[None]] = set()
        try:
            # aclosing: a round cancelled while it waits on the verify queue must still abort its decoding now,
            # not whenever the generator is garbage-collected.
            async with contextlib.aclosing(stream):
                async for c in stream:
                    group = groups[c.prompt_index]
                    group.arrived.add(c.sample_index)
                    batch.stats.tokens += len(c.token_ids)
                    if self._resumer is not None and self._resumer.cut_by_update(c, sent):
                        resuming.add(asyncio.create_task(self._resume(group, c, params)))
                        continue
                    await self._hand_on(group, c)
            if resuming:
                await asyncio.gather(*resuming)
        except BackendUnavailable:
            raise  # every server stayed down past the backend's bound: the run stops (next_batch raises it)
        except GenerationError as exc:
            log.warning("generation round failed; its missing samples count as backend errors: %s", exc)
            failure = f"generation failed: {exc}"
        finally:
            for task in resuming:
                task.cancel()  # the round is cancelled (the batch is full): the resumed samples are not needed
            await asyncio.gather(*resuming, return_exceptions=True)
            batch.stats.generating_s += time.monotonic() - started
            batch.changed.set()
        for group in groups:
            for j in sorted(set(range(self.settings.group_size)) - group.arrived):
                self._deliver(group, self._missing(group, j, failure))

    async def _hand_on(self, group: _OpenGroup, c: Completion) -> None:
        """A finished completion: to the verify queue, or recorded unscored when the backend failed or aborted it."""
        if c.failed or c.finish_reason == "abort":
            status = "backend_error" if c.failed else "aborted"
            self._deliver(group, self._unscored(group, c, status, c.error or "aborted by the backend"))
            return
        if len(set(c.token_versions)) > 1:
            group.batch.stats.counts["partial/mixed_versions"] += 1
        arrived = time.monotonic()
        job = _Job(group=group, completion=c, arrived_s=arrived)
        try:
            await self._verify_q.put(job)
        except asyncio.CancelledError:  # held here, in neither the queue nor a worker: record it now
            self._deliver(group, self._unscored(group, c, "not_verified", "interrupted"))
            raise
        group.batch.stats.blocked_s += time.monotonic() - arrived  # the sandbox holding generation back
        group.batch.stats.queue_depths.append(self._verify_q.qsize())

    async def _resume(self, group: _OpenGroup, cut: Completion, params: SamplingParams) -> None:
        """A sample a weight update cut short: continue it on the new weights, then hand the whole of it on."""
        assert self._resumer is not None
        whole = await self._resumer.finish(group.prompt_ids, cut, params)
        group.batch.stats.tokens += len(whole.token_ids) - len(cut.token_ids)
        group.batch.stats.counts["partial/cuts"] += int(whole.meta["cuts"])
        group.batch.stats.counts["partial/resumed"] += 1
        await self._hand_on(group, whole)

    # ----- verification ----------------------------------------------------------------------------------

    async def _verify_worker(self) -> None:
        while True:
            job = await self._verify_q.get()
            group = job.group
            if group.verdict:  # the group was closed while this waited: do not spend the sandbox on it
                self._deliver(group, self._unscored(group, job.completion, "not_verified", "group closed first"))
                continue
            self._verifying.add(job)
            sample = await self._verify(job)
            self._verifying.discard(job)
            self._deliver(group, sample)

    def _record_unverified(self) -> None:
        """After cancellation: write the completions still queued or being verified, so none goes unrecorded."""
        jobs = list(self._verifying)
        while not self._verify_q.empty():
            jobs.append(self._verify_q.get_nowait())
        self._verifying.clear()
        for job in jobs:
            self._deliver(job.group, self._unscored(job.group, job.completion, "not_verified", "interrupted"))

    async def _verify(self, job: _Job) -> Sample:
        c, group = job.completion, job.group
        text = self.prompts.response_text(c.token_ids, text=c.text)
        start = self._busy_enter()
        group.batch.stats.queue_wait_s.append(start - job.arrived_s)
        status, detail, outcome = "", "", None
        try:
            async with asyncio.timeout(self.settings.verify_timeout_s):
                outcome = await self.verifier.verify(group.problem, text)
        except TimeoutError:
            status, detail = "verify_timeout", f"verification took over {self.settings.verify_timeout_s} s"
        except Exception as exc:  # a verifier bug must not kill the rollout; it is counted and logged
            log.exception("verifier raised on problem %s", group.problem.id)
            status, detail = "verify_error", f"{type(exc).__name__}: {exc}"
        finally:
            end = self._busy_exit()
        base = self._sample_fields(group, c, text)
        times = {"verify_start_s": start - self._t0, "verify_end_s": end - self._t0}
        infra = {"infra_failure": True, "error_kind": INFRASTRUCTURE}
        if outcome is None:
            return Sample(**base, **times, status=status, detail=detail, **infra)
        if outcome.status in INFRA_STATUSES:
            return Sample(**base, **times, status=outcome.status, detail=outcome.reason, **infra)
        score = float(outcome.reward)
        return Sample(
            **base,
            **times,
            status=outcome.status,
            infra_failure=False,
            score=score,
            reward=score + self._shaping(len(c.token_ids)),
            correct=bool(outcome.correct),
            objective=outcome.objective,
            detail=outcome.reason,
            error_kind=outcome.error_kind,
        )

    def _shaping(self, length: int) -> float:
        if not self.settings.overlong_buffer:
            return 0.0
        lengths = torch.tensor([length])
        return float(
            overlong_penalty(
                lengths,
                max_len=self.sampling.max_new_tokens,
                buffer=self.settings.overlong_buffer,
                factor=self.settings.overlong_factor,
            )[0]
        )

    def _sample_fields(self, group: _OpenGroup, c: Completion, text: str) -> dict[str, Any]:
        return {
            "problem_id": group.problem.id,
            "solver": self._solver_of(group),
            "group_id": group.group_id,
            "sample_index": c.sample_index,
            "prompt_ids": group.prompt_ids,
            "response_ids": tuple(c.token_ids),
            "logprobs": tuple(c.logprobs),
            "finish_reason": c.finish_reason,
            "weight_version": c.weight_version,
            "token_versions": c.token_versions,
            "text": text,
            "generated_s": c.timings.finished_s - self._t0,
        }

    def _solver_of(self, group: _OpenGroup) -> str | None:
        return problem_solver(group.problem) or self.solver

    def _unscored(self, group: _OpenGroup, c: Completion, status: str, detail: str) -> Sample:
        text = self.prompts.response_text(c.token_ids, text=c.text)
        fields = self._sample_fields(group, c, text)
        return Sample(**fields, status=status, infra_failure=True, detail=detail, error_kind=INFRASTRUCTURE)

    def _missing(self, group: _OpenGroup, sample_index: int, detail: str) -> Sample:
        return Sample(
            problem_id=group.problem.id,
            solver=self._solver_of(group),
            group_id=group.group_id,
            sample_index=sample_index,
            prompt_ids=group.prompt_ids,
            response_ids=(),
            logprobs=(),
            finish_reason="abort",
            weight_version=self.backend.weight_version,
            text="",
            status="backend_error",
            infra_failure=True,
            detail=detail,
            error_kind=INFRASTRUCTURE,
            generated_s=time.monotonic() - self._t0,
        )

    def _busy_enter(self) -> float:
        now = time.monotonic()
        if self._inflight == 0:
            self._busy_since = now
        self._inflight += 1
        return now

    def _busy_exit(self) -> float:
        now = time.monotonic()
        self._inflight -= 1
        if self._inflight == 0:
            self._busy_total += now - self._busy_since
        return now

    def _busy_time(self, now: float) -> float:
        """Seconds so far during which at least one verification was running."""
        return self._busy_total + (now - self._busy_since if self._inflight else 0.0)

    # ----- groups ----------------------------------------------------------------------------------------

    def _deliver(self, group: _OpenGroup, sample: Sample) -> None:
        group.batch.stats.counts[f"status/{sample.status}"] += 1
        if sample.error_kind is not None:
            group.batch.stats.counts[f"errors/{sample.error_kind}"] += 1
        if group.verdict:
            self._write(group, sample)
            return
        group.samples[sample.sample_index] = sample
        if len(group.samples) == self.settings.group_size:
            self._judge(group)

    def _judge(self, group: _OpenGroup) -> None:
        batch = group.batch
        complete = Group(
            group_id=group.group_id,
            problem_id=group.problem.id,
            size=self.settings.group_size,
            samples=tuple(group.samples[j] for j in sorted(group.samples)),
        )
        scored = [s for s in complete.samples if not s.infra_failure]
        batch.stats.scores += [s.score for s in scored]  # type: ignore[misc]
        batch.stats.rewards += [s.reward for s in scored]  # type: ignore[misc]
        batch.stats.counts["samples_correct"] += sum(s.correct for s in scored)
        batch.stats.count_solver(problem_solver(group.problem), scored)
        if scored and all(s.correct for s in scored):
            batch.stats.counts["groups_solve_all"] += 1
        elif scored and not any(s.correct for s in scored):
            batch.stats.counts["groups_solve_none"] += 1
        judgement = judge(complete, self._filters)
        for reason, n in judgement.excluded.items():
            batch.stats.counts[f"excluded/{reason}"] += n
        if judgement.group is None:
            batch.stats.counts[f"filtered/{judgement.reason}"] += 1
            self._close(group, judgement.reason)
        elif len(batch.kept) >= self.settings.prompts_per_step:
            batch.stats.counts["groups_surplus"] += 1
            self._close(group, "surplus")
        else:
            batch.kept.append(judgement.group)
            self._close(group, "kept")

    def _close(self, group: _OpenGroup, verdict: str) -> None:
        group.verdict = verdict
        group.batch.open.discard(group)
        group.batch.changed.set()
        for j in sorted(group.samples):
            self._write(group, group.samples[j])

    def _write(self, group: _OpenGroup, s: Sample) -> None:
        if self.recorder is not None and not self.recorder.closed:
            self.recorder.sample(
                sample_row(s, step=group.batch.step, round=group.round, epoch=group.epoch, verdict=group.verdict)
            )

    # ----- metrics ---------------------------------------------------------------------------------------

    def _metrics(self, batch: _BatchState) -> dict[str, Any]:
        now = time.monotonic()
        row = batch.stats.row(
            now,
            step=batch.step,
            rounds=batch.rounds,
            kept=[s for g in batch.kept for s in g.samples],
            verifying_s=self._busy_time(now) - batch.busy_at_start,
            data_epoch=self.stream.epoch,
        )
        return {**row, **step_metrics(self.verifier), **step_metrics(self.backend)}


def round_sampling(params: SamplingParams, round_index: int) -> SamplingParams:
    """The sampling parameters of the rollout's `round_index`-th generation round: a seeded run draws fresh
    samples each round (the local backend seeds each sample from (seed, prompt position, sample index))."""
    if params.seed is None:
        return params
    return replace(params, seed=(params.seed * 1_000_003 + round_index) % (1 << 62))
