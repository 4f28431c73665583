"""Checkpoints (torch.distributed.checkpoint) and weight export (Hugging Face safetensors, in-process dict).

A checkpoint directory holds the sharded model and optimizer state written by every rank (``dcp/``), one
small file per rank with the scheduler, step counter, RNG states and the caller's loop state (its data
position, counters: whatever its next step depends on) in ``extra_rank{r}.pt``, and a ``COMPLETE`` marker
written last, so a run killed mid-save never resumes from a half-written checkpoint. A save writes into
``<directory>.partial`` and renames it when every rank is done; a save that fails (a full disk) removes it, so
a failed save leaves no half checkpoint and frees the space it took. Resuming restores all
of it; the next step then matches an uninterrupted run. This module is the only reader of that format:
``load_model_weights`` takes just the model weights, into a Learner's (possibly sharded) policy
(``--init-from``) or into a plain model of the same architecture (evaluation).

It works on anything shaped like a `Trainable` (``learner.trainer.Learner`` is one), not on the Learner itself.

    save_checkpoint(learner, "runs/x/checkpoints/step_000010", loop_state={"step": 10, "position": 40})
    loop_state = load_checkpoint(learner, latest_checkpoint("runs/x/checkpoints"))
    load_model_weights(load_model(run_model_path), "runs/x/checkpoints/step_000010")   # weights only
    export_hf(learner, "runs/x/weights", tokenizer=tok)      # a directory the generation backend loads
"""

from __future__ import annotations

import contextlib
import errno
import random
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from learner.distributed import DistContext

COMPLETE = "COMPLETE"
DCP_DIR = "dcp"  # the torch.distributed.checkpoint state {"model": ..., "optimizer": ...} of all ranks
PARTIAL = ".partial"  # suffix of the directory a save writes into before it is renamed into place
_FULL_BYTES = 1 << 20  # a file system with less free space than this after a failed write was full


class CheckpointWriteError(OSError):
    """A checkpoint (nothing of it left behind) or a weight export could not be written: its file system is full
    (or over quota)."""


class IncompatibleCheckpointError(ValueError):
    """A checkpoint whose model weights do not fit the model they are loaded into (another architecture or size)."""


class Trainable(Protocol):
    """What a checkpoint saves and restores: the (possibly sharded) model, its optimizer and schedule, the
    optimizer step count, and where this process sits among the ranks."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    global_step: int
    ctx: DistContext


def _barrier(learner: Trainable) -> None:
    if learner.ctx.distributed:
        dist.barrier()


@contextlib.contextmanager
def _quiet_single_process(distributed: bool) -> Iterator[None]:
    """DCP warns that it 'assumes' a single process even when told so (no_dist=True); that is our intent."""
    with warnings.catch_warnings():
        if not distributed:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def require_complete(directory: str | Path) -> Path:
    """``directory`` as a Path; FileNotFoundError unless it exists and its save finished (``COMPLETE`` marker)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if not (directory / COMPLETE).is_file():
        raise FileNotFoundError(f"{directory} is not a complete checkpoint (no {COMPLETE} marker); pick an earlier one")
    return directory


def _check_model_fits(directory: Path, model_state: dict[str, Any]) -> None:
    """Compare the checkpoint's metadata (names and global shapes; no tensor is read) with ``model_state``.

    DCP's own error for a checkpoint of another model is a per-rank exception dump; this one names the
    checkpoint and the first parameters that differ. Parameters the checkpoint holds beyond the model's are
    ignored (they are not read).
    """
    saved = dcp.FileSystemReader(str(directory / DCP_DIR)).read_metadata().state_dict_metadata
    sizes = {
        key.removeprefix("model."): tuple(meta.size) if hasattr(meta, "size") else None  # None: not a tensor
        for key, meta in saved.items()
        if key.startswith("model.")
    }
    missing = [name for name in model_state if name not in sizes]
    if len(missing) == len(model_state):
        raise IncompatibleCheckpointError(
            f"checkpoint {directory} holds none of the model's {len(model_state)} parameters; "
            "is it a checkpoint of another model?"
        )
    if missing:
        raise IncompatibleCheckpointError(
            f"checkpoint {directory} lacks {len(missing)} of the model's parameters, e.g. {missing[:5]}"
        )
    resized = [
        f"{name}: saved {sizes[name]}, model {tuple(value.shape)}"
        for name, value in model_state.items()
        if sizes[name] != tuple(value.shape)
    ]
    if resized:
        raise IncompatibleCheckpointError(
            f"checkpoint {directory} holds other shapes for {len(resized)} of the model's parameters "
            f"(a checkpoint of another model size?), e.g. {resized[:3]}"
        )


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


def save_checkpoint(learner: Trainable, directory: str | Path, *, loop_state: dict[str, Any] | None = None) -> Path:
    """Save everything needed to resume; every rank must call this (each saves its own `loop_state`).

    CheckpointWriteError when the file system is full; any other failure propagates as raised. Either way the
    partial directory is removed and ``directory`` is left as it was."""
    directory = Path(directory)
    partial = directory.with_name(directory.name + PARTIAL)
    if learner.ctx.rank == 0:
        shutil.rmtree(partial, ignore_errors=True)  # left by a save that was killed
    _barrier(learner)
    try:
        partial.mkdir(parents=True, exist_ok=True)
        model_state, optim_state = get_state_dict(learner.model, learner.optimizer)
        with _quiet_single_process(learner.ctx.distributed):
            dcp.save(
                {"model": model_state, "optimizer": optim_state},
                checkpoint_id=str(partial / DCP_DIR),
                no_dist=not learner.ctx.distributed,
            )
        extra = {
            "scheduler": learner.scheduler.state_dict(),
            "global_step": learner.global_step,
            "rng": _rng_state(),
            "loop_state": loop_state or {},
            "world_size": learner.ctx.world_size,
        }
        torch.save(extra, partial / f"extra_rank{learner.ctx.rank}.pt")
        _barrier(learner)
        if learner.ctx.rank == 0:
            if directory.exists():  # the same step saved before (or half-saved before saves were renamed)
                shutil.rmtree(directory)
            partial.rename(directory)
            (directory / COMPLETE).write_text(f"step {learner.global_step}\n")
    except BaseException as exc:  # dcp's CheckpointException is a BaseException
        full = _file_system_full(exc, directory.parent)
        shutil.rmtree(partial, ignore_errors=True)
        if learner.ctx.rank == 0 and directory.is_dir() and not (directory / COMPLETE).is_file():
            shutil.rmtree(directory, ignore_errors=True)
        if full:
            raise CheckpointWriteError(
                f"cannot write checkpoint {directory}: no space left on its file system"
            ) from exc
        raise
    _barrier(learner)
    return directory


def _file_system_full(exc: BaseException, where: Path) -> bool:
    """Whether a failed save ran out of space: an OSError saying so in the chain (torch's writers often say only
    "file write failed"), or, measured before the partial directory is removed, a file system with no room."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        cause = cause.__cause__ or cause.__context__
    try:
        return shutil.disk_usage(where).free < _FULL_BYTES
    except OSError:
        return False


def load_checkpoint(learner: Trainable, directory: str | Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler, step and RNG from ``directory``; returns this rank's loop state."""
    directory = require_complete(directory)
    extra_path = directory / f"extra_rank{learner.ctx.rank}.pt"
    extra = torch.load(extra_path, weights_only=False)
    if extra["world_size"] != learner.ctx.world_size:
        raise ValueError(
            f"{directory} was saved by {extra['world_size']} ranks, this run has {learner.ctx.world_size}; "
            "resume with the same --nproc-per-node (RNG and data position are per rank)"
        )
    model_state, optim_state = get_state_dict(learner.model, learner.optimizer)
    _check_model_fits(directory, model_state)
    state = {"model": model_state, "optimizer": optim_state}
    with _quiet_single_process(learner.ctx.distributed):
        dcp.load(state, checkpoint_id=str(directory / DCP_DIR), no_dist=not learner.ctx.distributed)
    set_state_dict(
        learner.model, learner.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"]
    )
    learner.scheduler.load_state_dict(extra["scheduler"])
    learner.global_step = extra["global_step"]
    _set_rng_state(extra["rng"])
    return extra.get("loop_state", extra.get("data_state", {}))  # "data_state": the key's name before 2026-12


def load_model_weights(model: nn.Module, directory: str | Path, *, distributed: bool = False) -> None:
    """Fill ``model`` in place with the model weights of the checkpoint in ``directory``; nothing else is read.

    ``model`` is a plain module of the checkpoint's architecture (an evaluation process: ``load_model`` of the
    run's ``model.path``), or a Learner's policy (``--init-from``: EVOM's low-cost solver adaptation starts
    from a policy trained with another solver's verifier; optimizer, schedule and step start fresh),
    FSDP2-sharded under torchrun: then ``distributed=True`` and every rank must call this. A checkpoint saved
    by any world size loads into any other. Fails before any tensor is read: FileNotFoundError for a missing
    or incomplete checkpoint, IncompatibleCheckpointError (naming the parameters) for a checkpoint of another
    model.
    """
    directory = require_complete(directory)
    state = get_model_state_dict(model)
    _check_model_fits(directory, state)
    with _quiet_single_process(distributed):
        dcp.load({"model": state}, checkpoint_id=str(directory / DCP_DIR), no_dist=not distributed)
    set_model_state_dict(model, state)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (directories sorted by name), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    complete = sorted(p for p in root.iterdir() if (p / COMPLETE).is_file())
    return complete[-1] if complete else None


def full_state_dict(learner: Trainable, *, all_ranks: bool = False) -> dict[str, torch.Tensor]:
    """Unsharded HF-named weights on CPU; every rank must call this (the shards are gathered).

    Only rank 0 gets them (``{}`` elsewhere) unless ``all_ranks``: then every rank gets a full copy, e.g. for
    an in-process generator on each rank: ``generator_model.load_state_dict(full_state_dict(learner))``.
    """
    if all_ranks and learner.ctx.distributed:
        state = get_model_state_dict(learner.model, options=StateDictOptions(full_state_dict=True))
        return {name: tensor.detach().cpu() for name, tensor in state.items()}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(learner.model, options=options)
    return state if learner.ctx.rank == 0 else {}


def export_hf(learner: Trainable, directory: str | Path, *, tokenizer: Any | None = None) -> Path:
    """Write the current weights as a Hugging Face safetensors directory (config + weights [+ tokenizer]).

    Every rank must call this (the shards are gathered); rank 0 writes. Returns the directory. CheckpointWriteError
    when its file system is full (safetensors reports it as its own SafetensorError).
    """
    directory = Path(directory)
    state = full_state_dict(learner)
    if learner.ctx.rank == 0:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            learner.model.save_pretrained(directory, state_dict=state)
            if tokenizer is not None:
                tokenizer.save_pretrained(directory)
        except Exception as exc:
            if _file_system_full(exc, directory.parent):
                raise CheckpointWriteError(
                    f"cannot write weights {directory}: no space left on its file system"
                ) from exc
            raise
    _barrier(learner)
    return directory
