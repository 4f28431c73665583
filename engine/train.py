"""The training loop behind `python -m engine.run`: rollout -> verify -> GRPO/DAPO step -> weight sync, per step.

    asyncio.run(train(load_config("configs/default.yaml"), resume=False))

Phases of one step: `next_batch` (generation with verification on arrival and group filtering, in
`engine.rollout`), `learner.step` (the update, in `learner`), weight sync to the generator, one metrics row and
one readable line, and every `run.save_every` steps a checkpoint. The run directory is
`run.output_dir/run.name`: config.yaml, metrics.jsonl, samples.jsonl, checkpoints/step_NNNNNN/.

`--resume` restores the newest complete checkpoint (model, optimizer, scheduler, RNG, data position) and
drops the rows that steps after it had written, so the files read as if the run had never stopped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import Config, read_yaml, to_dict, write_config
from engine.records import METRICS_FILE, SAMPLES_FILE, RunRecorder, dumps, read_jsonl

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
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, run_dir / "config.yaml")
    return run_dir


def truncate_records(run_dir: Path, *, keep_before_step: int) -> None:
    """Drop rows of steps >= keep_before_step (written after the checkpoint we resume from), atomically."""
    for name in (METRICS_FILE, SAMPLES_FILE):
        path = run_dir / name
        if not path.exists():
            continue
        rows = read_jsonl(path)
        kept = [row for row in rows if row.get("step", 0) < keep_before_step]
        if len(kept) == len(rows):
            continue
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_bytes(b"".join(dumps(row) for row in kept))
        tmp.replace(path)


def prune_checkpoints(root: Path, *, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints (an incomplete one is never the newest kept)."""
    from learner.checkpoint import COMPLETE

    if keep <= 0:
        return
    complete = sorted(p for p in root.iterdir() if (p / COMPLETE).is_file())
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def learner_config(cfg: Config) -> Any:
    """The learner's config; the generator's sampling temperature is the one log-probs must use."""
    algorithm = dataclasses.replace(cfg.algorithm, temperature=max(cfg.generation.sampling.temperature, 1e-6))
    return dataclasses.replace(cfg.learner, algorithm=algorithm)


def rollout_settings(cfg: Config) -> Any:
    from engine.rollout import RolloutSettings

    r = cfg.rollout
    return RolloutSettings(
        group_size=r.group_size, prompts_per_step=r.prompts_per_step, dynamic_sampling=r.dynamic_sampling,
        max_gen_batches=r.max_gen_batches, max_staleness=r.max_staleness, queue_size=r.queue_size,
        verify_concurrency=cfg.sandbox.workers, filters=tuple(r.filters), overlong_buffer=r.overlong_buffer,
        overlong_factor=r.overlong_factor, seed=cfg.run.seed, verify_timeout_s=r.verify_timeout_s,
    )  # fmt: skip


def sampling_params(cfg: Config, tokenizer: Any) -> Any:
    """The config's sampling, stopping at the tokenizer's end-of-turn token as well as the model's EOS."""
    params = cfg.generation.sampling
    stops = set(params.stop_token_ids)
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    seed = params.seed if params.seed is not None else cfg.run.seed
    return dataclasses.replace(params, stop_token_ids=tuple(sorted(stops)), seed=seed)


def make_backend(cfg: Config) -> Any:
    """The generation backend; the local one decodes with its own copy of the policy, synced after each step."""
    from engine.generation import create_backend

    gen = cfg.generation
    if gen.backend == "local":
        from learner.models import load_model

        return create_backend("local", to_dict(gen.local), model=load_model(cfg.model.path))
    return create_backend(gen.backend, getattr(gen, gen.backend))


async def sync_weights(cfg: Config, rollout: Any, learner: Any, run_dir: Path, step: int) -> None:
    """Hand the updated policy to the generator: in memory for the local backend, as a HF directory otherwise."""
    from learner.checkpoint import export_hf, full_state_dict

    if cfg.generation.backend == "local":
        await rollout.update_weights(full_state_dict(learner), version=step + 1)
    else:
        directory = export_hf(learner, run_dir / "weights" / "latest")
        await rollout.update_weights(str(directory.resolve()), version=step + 1)


async def train(cfg: Config, *, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) training as configured; returns the run directory."""
    from engine.data import load_train
    from engine.prompts import PromptBuilder, PromptSettings
    from engine.rollout import Rollout, SolverVerifier
    from learner.checkpoint import latest_checkpoint, load_checkpoint
    from learner.models import load_tokenizer
    from learner.trainer import Learner
    from sandbox import SandboxPool
    from solvers import get_solver

    solver = get_solver(cfg.solver.name)
    problems = load_train(cfg.data).problems
    run_dir = prepare_run_dir(cfg, resume=resume)
    tokenizer = load_tokenizer(cfg.model.path)
    learner = Learner.from_pretrained(cfg.model.path, learner_config(cfg))
    start_step, data_state = 0, (0, 0)
    checkpoint = latest_checkpoint(run_dir / CHECKPOINTS) if resume else None
    if checkpoint is not None:
        saved = load_checkpoint(learner, checkpoint)
        start_step, data_state = int(saved["step"]), (int(saved["epoch"]), int(saved["position"]))
        log.info("resumed from %s at step %d", checkpoint, start_step)
    truncate_records(run_dir, keep_before_step=start_step)
    if start_step >= cfg.run.steps:
        log.info("run %s already has %d steps (run.steps=%d): nothing to do", run_dir, start_step, cfg.run.steps)
        return run_dir

    prompts = PromptBuilder(
        tokenizer, instructions=solver.instructions,
        settings=PromptSettings(
            max_prompt_tokens=cfg.data.max_prompt_tokens, overlong=cfg.data.prompt_overlong,
            system=cfg.data.system_prompt,
        ),
    )  # fmt: skip
    async with AsyncExitStack() as stack:
        recorder = stack.enter_context(RunRecorder(run_dir))
        pool = SandboxPool(
            workers=cfg.sandbox.workers, limits=cfg.sandbox.limits, preload=solver.preload,
            isolation=cfg.sandbox.isolation, recycle_after=cfg.sandbox.recycle_after,
        )  # fmt: skip
        await stack.enter_async_context(pool)
        backend = await stack.enter_async_context(make_backend(cfg))
        if start_step:
            await backend.update_weights(_full_state(learner, cfg), version=start_step)
        verifier = SolverVerifier(pool, solver, reward=cfg.solver.reward, extract=cfg.solver.extract)
        rollout = Rollout(
            backend=backend, verifier=verifier, prompts=prompts, problems=problems,
            settings=rollout_settings(cfg), sampling=sampling_params(cfg, tokenizer), recorder=recorder,
            start_step=start_step, end_step=cfg.run.steps, data_state=data_state,
        )  # fmt: skip
        await stack.enter_async_context(rollout)
        await _loop(cfg, run_dir, rollout, learner, recorder, start_step=start_step, progress=progress)
    return run_dir


def _full_state(learner: Any, cfg: Config) -> Any:
    from learner.checkpoint import export_hf, full_state_dict

    if cfg.generation.backend == "local":
        return full_state_dict(learner)
    return str(export_hf(learner, Path(cfg.run.output_dir) / cfg.run.name / "weights" / "latest").resolve())


async def _loop(
    cfg: Config, run_dir: Path, rollout: Any, learner: Any, recorder: Any, *, start_step: int, progress: bool
) -> None:
    from learner.checkpoint import save_checkpoint

    bar = _progress(cfg.run.steps, start_step, enabled=progress)
    try:
        for step in range(start_step, cfg.run.steps):
            result = await rollout.next_batch()
            started = time.monotonic()
            train_metrics: dict[str, Any] = {}
            if len(result):
                # The update is CPU/GPU-bound: run it off the event loop so verifications of a batch that is
                # already generating (max_staleness > 0) keep flowing.
                train_metrics = await asyncio.to_thread(learner.step, result.learner_batch())
            train_s = time.monotonic() - started
            await sync_weights(cfg, rollout, learner, run_dir, step)
            row = {**result.metrics, **{f"train/{k}": v for k, v in train_metrics.items()}, "time_train_s": train_s}
            row["step"] = step
            recorder.metrics(row)
            report = StepReport(step=step, row=row)
            bar.write(report.line(cfg.run.steps))
            bar.update(1)
            if (step + 1) % cfg.run.save_every == 0 or step + 1 == cfg.run.steps:
                epoch, position = result.data_state
                data = {"step": step + 1, "epoch": epoch, "position": position}
                directory = run_dir / CHECKPOINTS / f"step_{step + 1:06d}"
                await asyncio.to_thread(save_checkpoint, learner, directory, data_state=data)
                prune_checkpoints(run_dir / CHECKPOINTS, keep=cfg.run.keep_checkpoints)
    finally:
        bar.close()


def _progress(total: int, initial: int, *, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)
