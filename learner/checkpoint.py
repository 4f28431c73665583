"""Checkpoints (torch.distributed.checkpoint) and weight export (Hugging Face safetensors, in-process dict).

A checkpoint directory holds the sharded model and optimizer state written by every rank (``dcp/``), one
small file per rank with the scheduler, step counter, RNG states and the caller's data position
(``extra_rank{r}.pt``), and a ``COMPLETE`` marker written last, so a run killed mid-save never resumes from a
half-written checkpoint. Resuming restores all of it; the next step then matches an uninterrupted run.

    save_checkpoint(learner, "runs/x/checkpoints/step_00000010", data_state={"epoch": 0, "index": 40})
    data_state = load_checkpoint(learner, latest_checkpoint("runs/x/checkpoints"))
    export_hf(learner, "runs/x/weights", tokenizer=tok)      # a directory the generation backend loads
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

if TYPE_CHECKING:
    from learner.trainer import Learner

COMPLETE = "COMPLETE"


def _barrier(learner: Learner) -> None:
    if learner.ctx.distributed:
        dist.barrier()


@contextlib.contextmanager
def _quiet_single_process(learner: Learner) -> Iterator[None]:
    """DCP warns that it 'assumes' a single process even when told so (no_dist=True); that is our intent."""
    with warnings.catch_warnings():
        if not learner.ctx.distributed:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(learner: Learner, directory: str | Path, *, data_state: dict[str, Any] | None = None) -> Path:
    """Save everything needed to resume; every rank must call this. Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model_state, optim_state = get_state_dict(learner.model, learner.optimizer)
    with _quiet_single_process(learner):
        dcp.save(
            {"model": model_state, "optimizer": optim_state},
            checkpoint_id=str(directory / "dcp"),
            no_dist=not learner.ctx.distributed,
        )
    extra = {
        "scheduler": learner.scheduler.state_dict(),
        "global_step": learner.global_step,
        "rng": _rng_state(),
        "data_state": data_state or {},
        "world_size": learner.ctx.world_size,
    }
    torch.save(extra, directory / f"extra_rank{learner.ctx.rank}.pt")
    _barrier(learner)
    if learner.ctx.rank == 0:
        (directory / COMPLETE).write_text(f"step {learner.global_step}\n")
    _barrier(learner)
    return directory


def load_checkpoint(learner: Learner, directory: str | Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler, step and RNG from ``directory``; returns the saved data position."""
    directory = Path(directory)
    if not (directory / COMPLETE).is_file():
        raise FileNotFoundError(f"{directory} is not a complete checkpoint (no {COMPLETE} marker); pick an earlier one")
    extra_path = directory / f"extra_rank{learner.ctx.rank}.pt"
    extra = torch.load(extra_path, weights_only=False)
    if extra["world_size"] != learner.ctx.world_size:
        raise ValueError(
            f"{directory} was saved by {extra['world_size']} ranks, this run has {learner.ctx.world_size}; "
            "resume with the same --nproc-per-node (RNG and data position are per rank)"
        )
    model_state, optim_state = get_state_dict(learner.model, learner.optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    with _quiet_single_process(learner):
        dcp.load(state, checkpoint_id=str(directory / "dcp"), no_dist=not learner.ctx.distributed)
    set_state_dict(
        learner.model, learner.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )
    learner.scheduler.load_state_dict(extra["scheduler"])
    learner.global_step = extra["global_step"]
    _set_rng_state(extra["rng"])
    return extra["data_state"]


def load_weights(learner: Learner, directory: str | Path) -> None:
    """Only the model weights of a checkpoint; optimizer, schedule, step and data position start fresh.

    This is EVOM's low-cost solver adaptation: continue from a policy trained with one solver's verifier
    and train on another's. Every rank must call this; any world size may load any checkpoint.
    """
    directory = Path(directory)
    if not (directory / COMPLETE).is_file():
        raise FileNotFoundError(f"{directory} is not a complete checkpoint (no {COMPLETE} marker)")
    state = {"model": get_model_state_dict(learner.model)}
    with _quiet_single_process(learner):
        dcp.load(state, checkpoint_id=str(directory / "dcp"), no_dist=not learner.ctx.distributed)
    set_model_state_dict(learner.model, state["model"])


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (directories sorted by name), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    complete = sorted(p for p in root.iterdir() if (p / COMPLETE).is_file())
    return complete[-1] if complete else None


def full_state_dict(learner: Learner) -> dict[str, torch.Tensor]:
    """Unsharded HF-named weights on CPU, on rank 0 (other ranks get ``{}``); every rank must call this.

    For the in-process generator: ``generator_model.load_state_dict(full_state_dict(learner))``.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(learner.model, options=options)
    return state if learner.ctx.rank == 0 else {}


def export_hf(learner: Learner, directory: str | Path, *, tokenizer: Any | None = None) -> Path:
    """Write the current weights as a Hugging Face safetensors directory (config + weights [+ tokenizer]).

    Every rank must call this (the shards are gathered); rank 0 writes. Returns the directory.
    """
    directory = Path(directory)
    state = full_state_dict(learner)
    if learner.ctx.rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
        learner.model.save_pretrained(directory, state_dict=state)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)
    _barrier(learner)
    return directory
