"""The training loop behind `python -m engine.run`: rollout -> verify -> GRPO/DAPO step -> weight sync, per step.

    asyncio.run(train(load_config("configs/default.yaml"), resume=False))

Phases of one step: `next_batch` (generation with verification on arrival and group filtering, in
`engine.rollout`), `learner.step` (the update, in `learner`), weight sync to the generator, one metrics row and
one readable line, and every `run.save_every` steps a checkpoint. The run directory is
`run.output_dir/run.name`: config.yaml, metrics.jsonl, samples.jsonl, checkpoints/step_NNNNNN/, and under
torchrun rank<r>/ with each rank's own rows.

`--resume` restores the newest complete checkpoint (model, optimizer, scheduler, RNG, and the rollout's
`RolloutState`: problem position, round counter, next group id) and drops the rows that steps after it had
written. With `rollout.max_staleness: 0` the resumed run then writes exactly the samples and metrics of an
uninterrupted one; with staleness > 0, the batch that was being generated ahead when the run stopped is
generated again by the checkpoint's (newer) weights.

Problems may name their solver (a data row's `solver` column, `engine.data.Problem.solver`): once any does, every
problem is verified with its own solver (the others with `solver.name`), prompted with that solver's
instructions, and each step's metrics row adds `by_solver/<name>/...` (samples scored and correct, accuracy,
reward mean). Every samples.jsonl row names the solver its completion was verified with (`solver`), in any run.
Each distinct solver preload gets its own sandbox pool of `sandbox.workers` workers; the rollout still runs at
most `sandbox.workers` verifications at once over all of them.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from engine.cli import rank0_decides
from engine.compute import on_compute_thread
from engine.config import Config, read_yaml, to_dict, write_config
from engine.data import Problem, assign_solvers, load_train
from engine.generation import (
    GenerationBackend,
    GenerationError,
    SamplingParams,
    WeightSource,
    available_backends,
    backend_class,
    backend_options,
    create_backend,
)
from engine.generation.base import can_resume
from engine.prompts import PromptBuilder, prompt_settings
from engine.records import (
    METRICS_FILE,
    SAMPLES_FILE,
    JsonlAppender,
    RunRecorder,
    StorageError,
    cut_partial_line,
    dumps,
    read_jsonl,
    reduce_rollout_metrics,
)
from engine.rollout import Rollout, RolloutResult, RolloutSettings, RolloutState
from engine.verifier import SolverVerifier, problem_solvers, solver_pools
from learner.checkpoint import (
    COMPLETE,
    CheckpointWriteError,
    export_hf,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    require_complete,
    save_checkpoint,
)
from learner.config import LearnerConfig, RolloutBatch
from learner.distributed import DistContext, init_distributed
from learner.models import load_model, load_tokenizer
from learner.trainer import Learner
from sandbox import SandboxPool
from solvers import Solver, get_solver

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger("evom.train")

CHECKPOINTS = "checkpoints"


class RunError(RuntimeError):
    """A run cannot start or continue as asked (existing run without --resume, nothing to resume...)."""


@dataclass(frozen=True, kw_only=True)
class StepReport:
    step: int
    row: dict[str, Any]

    def line(self, steps: int) -> str:
        r = self.row

        def num(key: str, fmt: str = ".3f") -> str:
            value = r.get(key)
            return "-" if value is None else format(value, fmt)

        return (
            f"step {self.step + 1}/{steps} | reward {num('reward_mean')} acc {num('accuracy')} | "
            f"groups {r.get('groups_kept', 0)} samples {r.get('samples_trained', 0)} | "
            f"loss {num('train/loss', '.4f')} kl {num('train/approx_kl', '.4f')} | "
            f"gen {num('time_generating_s', '.1f')}s wait-verify {num('time_waiting_verify_s', '.1f')}s "
            f"train {num('time_train_s', '.1f')}s"
        )


def prepare_run_dir(cfg: Config, *, resume: bool) -> Path:
    """Create (or, with resume, check) the run directory; never overwrite a run's files silently."""
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    if resume:
        if not (run_dir / "config.yaml").is_file():
            raise RunError(f"--resume: {run_dir} holds no run (no config.yaml); drop --resume to start it")
        saved = read_yaml(run_dir / "config.yaml")
        if saved != to_dict(cfg):
            log.warning("resuming %s with a config that differs from its config.yaml; the new one is saved", run_dir)
    elif (run_dir / METRICS_FILE).exists() or (run_dir / CHECKPOINTS).exists():
        raise RunError(f"{run_dir} already holds a run; pass --resume to continue it, or set run.name=<new name>")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(cfg, run_dir / "config.yaml")
    except OSError as exc:
        raise StorageError(f"cannot write {run_dir / 'config.yaml'}: {exc.strerror or exc}") from exc
    return run_dir


def truncate_records(run_dir: Path, *, keep_before_step: int) -> None:
    """Drop rows of steps >= keep_before_step (written after the checkpoint we resume from), atomically: a file
    the disk cannot hold rewritten stays as it was (StorageError)."""
    for name in (METRICS_FILE, SAMPLES_FILE):
        path = run_dir / name
        if not path.exists():
            continue
        cut_partial_line(path)  # a line a killed run left unfinished
        rows = read_jsonl(path)
        kept = [row for row in rows if row.get("step", 0) < keep_before_step]
        if len(kept) == len(rows):
            continue
        tmp = path.with_suffix(".jsonl.tmp")
        try:
            tmp.write_bytes(b"".join(dumps(row) for row in kept))
            tmp.replace(path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot rewrite {path} without the rows after step {keep_before_step}: {exc}") from exc


def prune_checkpoints(root: Path, *, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints (an incomplete one is never the newest kept)."""
    if keep <= 0:
        return
    complete = sorted(p for p in root.iterdir() if (p / COMPLETE).is_file())
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def learner_config(cfg: Config) -> LearnerConfig:
    """The learner's config with the run's algorithm section.

    The generator reports log_softmax(logits / T) at the sampling temperature T, and the run config has set
    `algorithm.temperature` to that T, so the learner's old and new log-probs are of the same distribution.
    """
    return dataclasses.replace(cfg.learner, algorithm=cfg.algorithm)


def rollout_settings(cfg: Config) -> RolloutSettings:
    r = cfg.rollout
    return RolloutSettings(
        group_size=r.group_size,
        prompts_per_step=r.prompts_per_step,
        dynamic_sampling=r.dynamic_sampling,
        max_gen_batches=r.max_gen_batches,
        max_staleness=r.max_staleness,
        queue_size=r.queue_size,
        verify_concurrency=cfg.sandbox.workers,
        filters=tuple(r.filters),
        overlong_buffer=r.overlong_buffer,
        overlong_factor=r.overlong_factor,
        seed=cfg.run.seed,
        verify_timeout_s=r.verify_timeout_s,
        partial_rollouts=r.partial_rollouts,
    )


def sampling_params(cfg: Config, tokenizer: PreTrainedTokenizerBase) -> SamplingParams:
    """The config's sampling, stopping at the tokenizer's end-of-turn token as well as the model's EOS."""
    params = cfg.generation.sampling
    stops = set(params.stop_token_ids)
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    seed = params.seed if params.seed is not None else cfg.run.seed
    return dataclasses.replace(params, stop_token_ids=tuple(sorted(stops)), seed=seed)


def make_backend(cfg: Config, device: torch.device | str = "cpu") -> GenerationBackend:
    """The generation backend; one that `needs_model` decodes with its own copy of the policy on the learner's
    device (bf16 on CUDA), synced after each step."""
    gen = cfg.generation
    model = load_model(cfg.model.path, device=device) if backend_class(gen.backend).needs_model else None
    return create_backend(gen.backend, backend_options(gen), model=model)


async def check_generation(cfg: Config) -> None:
    """Fail in seconds, before any model is loaded, when generation cannot work: a backend that cannot take
    new weights, options the backend rejects, or running servers that fail the backend's health check."""
    gen = cfg.generation
    if backend_class(gen.backend).weight_format is None:
        trainable = [name for name in available_backends() if backend_class(name).weight_format is not None]
        raise RunError(
            f"generation.backend={gen.backend} serves a fixed model and cannot load new weights; train with one "
            f"of {', '.join(trainable)} ({gen.backend} is for engine.eval)"
        )
    if cfg.rollout.partial_rollouts:
        resumable = [name for name in available_backends() if can_resume(backend_class(name))]
        if not can_resume(backend_class(gen.backend)):
            raise RunError(
                f"rollout.partial_rollouts: generation.backend={gen.backend} cannot resume an aborted sample from its "
                f"partial tokens; use {', '.join(resumable)} or set rollout.partial_rollouts: false"
            )
        if cfg.rollout.max_staleness < 1:
            raise RunError(
                "rollout.partial_rollouts needs rollout.max_staleness >= 1 (with 0 no sample is decoding while the "
                "weights change)"
            )
    if backend_class(gen.backend).needs_model:
        return  # decodes in-process: no server to reach, and building it would load the model now
    try:
        backend = create_backend(gen.backend, backend_options(gen))
        try:
            status = await backend.health()  # not started: servers it would launch are waited for at start
        finally:
            await backend.close()
    except (ValueError, GenerationError) as exc:
        raise RunError(f"generation.{gen.backend}: {exc}") from None
    down = [server for server, ok in status.items() if not ok]
    if down:
        raise RunError(f"generation.{gen.backend}: {backend.explain_down(down)}")


def generator_weights(cfg: Config, learner: Learner, run_dir: Path) -> WeightSource:
    """The current policy in the generator's `weight_format`: full tensors in memory for "state_dict" (on every
    rank: each rank decodes with its own copy), a HF directory its servers load (`/update_weights_from_disk`)
    for "hf_dir". Every rank must call this."""
    if backend_class(cfg.generation.backend).weight_format == "hf_dir":
        try:
            return str(export_hf(learner, run_dir / "weights" / "latest").resolve())
        except CheckpointWriteError as exc:
            raise StorageError(str(exc)) from exc
    return learner.full_weights(all_ranks=True)


@dataclass(frozen=True, kw_only=True)
class _RankSamples:
    """One rank's kept samples, column by column: what the ranks exchange to form the global batch."""

    prompts: list[tuple[int, ...]]
    responses: list[tuple[int, ...]]
    rewards: list[float]
    group_ids: list[int]
    old_logprobs: list[tuple[float, ...]]


def gather_batch(result: RolloutResult, ctx: DistContext) -> RolloutBatch | None:
    """The GLOBAL training batch: every rank's kept samples, in rank order (identical on all ranks).

    Group ids are made unique across ranks (id * world_size + rank). Returns None when no rank kept a sample.
    """
    local = _RankSamples(
        prompts=result.prompt_ids,
        responses=result.response_ids,
        rewards=result.rewards,
        group_ids=[g * ctx.world_size + ctx.rank for g in result.group_ids],
        old_logprobs=result.old_logprobs,
    )
    parts = [local]
    if ctx.distributed:
        gathered: list[Any] = [None] * ctx.world_size  # filled in rank order
        dist.all_gather_object(gathered, local)
        parts = gathered
    if not any(part.prompts for part in parts):
        return None
    columns = {
        f.name: [row for part in parts for row in getattr(part, f.name)] for f in dataclasses.fields(_RankSamples)
    }
    return RolloutBatch(**columns)


def gather_rollout_metrics(metrics: dict[str, Any], ctx: DistContext) -> dict[str, Any]:
    """The step's rollout metrics over all ranks (`engine.records.reduce_rollout_metrics` of every rank's row);
    a collective: every rank calls it, every rank gets the global row."""
    if not ctx.distributed:
        return dict(metrics)
    rows: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(rows, metrics)
    return reduce_rollout_metrics(rows)


def start_run(cfg: Config, ctx: DistContext, *, resume: bool) -> None:
    """Rank 0 checks that the run fits the ranks and creates (or, resuming, checks) the run directory; under
    torchrun every rank learns its verdict before any waits on another, and on an error every rank ends with its
    exit code, rank 0 alone reporting it (`engine.cli.rank0_decides`). Every rank calls this."""

    def decide() -> None:
        check_split(cfg, ctx.world_size)
        if resume:
            check_resume_ranks(Path(cfg.run.output_dir) / cfg.run.name, ctx.world_size)
        prepare_run_dir(cfg, resume=resume)

    rank0_decides(ctx, decide, bad_input=(RunError,))


def check_split(cfg: Config, world_size: int) -> None:
    """RunError unless each rank gets an equal share of a step's prompts."""
    if cfg.rollout.prompts_per_step % world_size:
        raise RunError(
            f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} must be a multiple of the {world_size} "
            "ranks (each rank generates its share of the groups)"
        )


def check_resume_ranks(run_dir: Path, world_size: int) -> None:
    """RunError unless the newest complete checkpoint was saved by `world_size` ranks (one extra_rank<r>.pt each:
    the RNG and data position are per rank). No checkpoint, or one without them: nothing to check."""
    checkpoint = latest_checkpoint(run_dir / CHECKPOINTS)
    saved = 0 if checkpoint is None else len(list(checkpoint.glob("extra_rank*.pt")))
    if saved and saved != world_size:
        raise RunError(
            f"--resume: {checkpoint} was saved by {saved} rank(s), this run has {world_size}; resume with "
            f"torchrun --nproc-per-node {saved} (each rank restores its own RNG and data position)"
        )


def shard_problems(problems: Sequence[Problem], cfg: Config, ctx: DistContext) -> tuple[Sequence[Problem], Config]:
    """This rank's problems (every world_size-th) and a config whose per-step prompts are this rank's share."""
    if not ctx.distributed:
        return problems, cfg
    check_split(cfg, ctx.world_size)
    local = dataclasses.replace(cfg.rollout, prompts_per_step=cfg.rollout.prompts_per_step // ctx.world_size)
    return problems[ctx.rank :: ctx.world_size], dataclasses.replace(cfg, rollout=local)


async def train(cfg: Config, *, resume: bool = False, init_from: Path | None = None, progress: bool = True) -> Path:
    """Run (or resume) training as configured; returns the run directory.

    `init_from`: a checkpoint directory of another run whose weights (only) start this one, e.g. a policy
    trained with gurobipy's verifier adapted to `solver.name=ortools` (EVOM's low-cost solver adaptation).

    Under torchrun every rank drives rollouts for its shard of the problems (its own generator and sandbox
    pool), the kept samples of all ranks form one global batch, and the ranks train one FSDP2 model. Rank 0
    writes config.yaml and metrics.jsonl, whose rollout metrics are those of all ranks (`gather_rollout_metrics`);
    each rank writes its own shard's rollout metrics to rank<r>/metrics.jsonl, and rank r > 0 its samples to
    rank<r>/samples.jsonl (rank 0's are in samples.jsonl).

    A write the run directory refuses (a full disk) stops the run with StorageError; the records keep their
    whole rows and the checkpoints their complete ones, so `--resume` continues once there is room.
    """
    solver = get_solver(cfg.solver.name)
    await check_generation(cfg)
    all_problems = assign_solvers(load_train(cfg.data).problems, cfg.solver.name)
    problem_solvers(all_problems, solver)  # every solver the data names is installed, before a model loads
    if init_from is not None:
        if resume:
            raise RunError(f"cannot start from {init_from}: --init-from starts a new run; drop --resume")
        try:
            require_complete(init_from)
        except FileNotFoundError as exc:
            raise RunError(f"cannot start from {init_from}: {exc}") from None
    ctx = init_distributed(cfg.learner.device)
    start_run(cfg, ctx, resume=resume)
    problems, local_cfg = shard_problems(all_problems, cfg, ctx)
    run_dir = Path(cfg.run.output_dir) / cfg.run.name
    learner = Learner.from_pretrained(cfg.model.path, learner_config(cfg), ctx=ctx)
    start_step, state = 0, RolloutState()
    checkpoint = latest_checkpoint(run_dir / CHECKPOINTS) if resume else None
    if checkpoint is not None:
        saved = load_checkpoint(learner, checkpoint)
        # Checkpoints written before the rollout state was saved hold only the data position, at the top level.
        start_step, state = int(saved["step"]), RolloutState.from_dict(saved.get("rollout", saved))
        if ctx.rank == 0:
            log.info("resumed from %s at step %d", checkpoint, start_step)
    elif init_from is not None:
        load_model_weights(learner.model, init_from, distributed=ctx.distributed)
        if ctx.rank == 0:
            log.info("weights from %s", init_from)
    # Each rank records its own samples and rollout metrics (rank 0's samples in the run directory, the rest under
    # rank<r>/); under torchrun rank 0 also writes metrics.jsonl, the rollout metrics of all ranks.
    samples_dir = run_dir if ctx.rank == 0 else run_dir / f"rank{ctx.rank}"
    metrics_dir = run_dir / f"rank{ctx.rank}" if ctx.distributed else run_dir
    global_metrics = ctx.distributed and ctx.rank == 0
    for directory in {samples_dir, metrics_dir, *([run_dir] if global_metrics else [])}:
        directory.mkdir(parents=True, exist_ok=True)
        truncate_records(directory, keep_before_step=start_step)
    if start_step >= cfg.run.steps:
        if ctx.rank == 0:
            log.info("run %s already has %d steps (run.steps=%d): nothing to do", run_dir, start_step, cfg.run.steps)
        return run_dir
    try:
        async with AsyncExitStack() as stack:
            recorder = stack.enter_context(RunRecorder(samples_dir, metrics_dir=metrics_dir))
            run_metrics = JsonlAppender(run_dir / METRICS_FILE) if global_metrics else None
            if run_metrics is not None:
                stack.callback(run_metrics.close)
            rollout = await open_rollout(
                stack,
                local_cfg,
                solver=solver,
                problems=problems,
                recorder=recorder,
                start_step=start_step,
                state=state,
                device=ctx.device,
            )
            if start_step or init_from is not None:
                await rollout.backend.update_weights(generator_weights(cfg, learner, run_dir), version=start_step)
            await _loop(cfg, run_dir, rollout, learner, recorder, run_metrics, start_step=start_step, progress=progress)
    except StorageError as exc:
        newest = latest_checkpoint(run_dir / CHECKPOINTS)
        kept = f"its newest complete checkpoint is {newest.name}" if newest else "it has no complete checkpoint yet"
        raise StorageError(f"{exc}; the run stopped and {kept}: free space, then continue with --resume") from exc
    return run_dir


async def open_rollout(
    stack: AsyncExitStack,
    cfg: Config,
    *,
    solver: Solver,
    problems: Sequence[Problem],
    recorder: RunRecorder | None,
    start_step: int,
    state: RolloutState | None = None,
    device: torch.device | str = "cpu",
) -> Rollout:
    """Sandbox pools, generation backend and rollout of one rank, entered on `stack` (closed in reverse order).

    `solver` verifies the problems that name none; a problem's own `solver` (see `assign_solvers`) picks its
    instructions and its verifier, with a sandbox pool per distinct preload set (`engine.verifier.solver_pools`).
    The training loop's pipeline; benches build theirs with it too, so both measure the same thing."""
    tokenizer = load_tokenizer(cfg.model.path)
    solvers = problem_solvers(problems, solver)
    main = solver if solver in solvers else solvers[0]
    settings = prompt_settings(cfg.data, answer_format=cfg.solver.extract.format)
    prompts = PromptBuilder(
        tokenizer,
        instructions=main.instructions,
        settings=settings,
        solver_instructions={s.name: s.instructions for s in solvers},
    )

    def make_pool(preload: tuple[str, ...]) -> SandboxPool:
        s = cfg.sandbox
        return SandboxPool(
            workers=s.workers, limits=s.limits, preload=preload, isolation=s.isolation, recycle_after=s.recycle_after
        )

    pools = await stack.enter_async_context(solver_pools(solvers, make_pool))
    backend = await stack.enter_async_context(make_backend(cfg, device))
    verifier = SolverVerifier(pools[main.name], main, pools=pools, reward=cfg.solver.reward, extract=cfg.solver.extract)
    rollout = Rollout(
        backend=backend,
        verifier=verifier,
        prompts=prompts,
        problems=problems,
        settings=rollout_settings(cfg),
        sampling=sampling_params(cfg, tokenizer),
        recorder=recorder,
        start_step=start_step,
        end_step=cfg.run.steps,
        state=state,
        solver=main.name,
    )
    return await stack.enter_async_context(rollout)


async def _loop(
    cfg: Config,
    run_dir: Path,
    rollout: Rollout,
    learner: Learner,
    recorder: RunRecorder,
    run_metrics: JsonlAppender | None,
    *,
    start_step: int,
    progress: bool,
) -> None:
    """The steps. `recorder` takes this rank's own rows; `run_metrics`, on rank 0 under torchrun, the rows whose
    rollout metrics are those of all ranks (metrics.jsonl)."""
    lead = learner.ctx.rank == 0
    bar = _progress(cfg.run.steps, start_step, enabled=progress and lead)
    try:
        for step in range(start_step, cfg.run.steps):
            result = await rollout.next_batch()
            started = time.monotonic()
            batch = gather_batch(result, learner.ctx)
            rollout_metrics = gather_rollout_metrics(result.metrics, learner.ctx)
            # The update is CPU/GPU-bound: run it off the event loop so verifications of a batch that is
            # already generating (max_staleness > 0) keep flowing; on the CPU, on the thread that decodes.
            device = learner.ctx.device
            train_metrics = {} if batch is None else await on_compute_thread(learner.step, batch, device=device)
            train_s = time.monotonic() - started
            await rollout.update_weights(generator_weights(cfg, learner, run_dir), version=step + 1)
            sync_s = time.monotonic() - started - train_s
            # Measured after the rollout metrics were gathered, so not reduced over the ranks: the learner's figures
            # are global already, and the weight sync time (this rank's generator) is rank 0's in metrics.jsonl.
            learned = {
                **{f"train/{k}": v for k, v in train_metrics.items()},
                "time_train_s": train_s,
                "time_weight_sync_s": sync_s,
                "step": step,
            }
            recorder.metrics({**result.metrics, **learned})
            row = {**rollout_metrics, **learned}
            if run_metrics is not None:
                run_metrics.append(row)
                run_metrics.flush()
            if lead:
                bar.write(StepReport(step=step, row=row).line(cfg.run.steps))
                bar.update(1)
            if (step + 1) % cfg.run.save_every == 0 or step + 1 == cfg.run.steps:
                await _save(learner, run_dir, step=step + 1, rollout_state=result.state, keep=cfg.run.keep_checkpoints)
    finally:
        bar.close()


async def _save(learner: Learner, run_dir: Path, *, step: int, rollout_state: RolloutState, keep: int) -> None:
    """Checkpoint `step` (every rank); a checkpoint the file system cannot hold is a StorageError, and leaves
    nothing behind (`save_checkpoint` writes beside the final directory and renames)."""
    data = {"step": step, "rollout": dataclasses.asdict(rollout_state)}
    directory = run_dir / CHECKPOINTS / f"step_{step:06d}"
    try:
        await on_compute_thread(save_checkpoint, learner, directory, loop_state=data, device=learner.ctx.device)
    except CheckpointWriteError as exc:
        raise StorageError(str(exc)) from exc
    if learner.ctx.rank == 0:
        prune_checkpoints(run_dir / CHECKPOINTS, keep=keep)


def _progress(total: int, initial: int, *, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)
