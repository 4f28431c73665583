"""Process-group setup, FSDP2 sharding and the split of a global batch across ranks.

Launched with ``torchrun --nproc-per-node N ...`` the learner runs FSDP2 (``fully_shard``: one unit per
decoder layer, then the root) over gloo on CPU or NCCL on GPU. A plain ``python ...`` (world size 1) runs
without a process group and without FSDP.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard


@dataclass(frozen=True, kw_only=True)
class DistContext:
    """Where this process sits: its rank among ``world_size`` and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistContext:
    """Join the torchrun process group if there is one (creating it on first call); pick this rank's device.

    device: "auto" (this rank's GPU when CUDA is available, else CPU), "cpu", or "cuda".
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r}; valid: auto, cpu, cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=torch_device if use_cuda else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return DistContext(rank=rank, world_size=world, device=torch_device)


def shutdown_distributed() -> bool:
    """Leave the process group together: wait for every rank, then destroy the group. Returns whether there was
    one to leave (a torchrun rank then ends with `exit_rank`).

    Call it once every rank has finished its work. A rank that exits with its gloo group alive tears the
    group's threads down at interpreter exit while a peer may still be talking to it; that aborted rank 1 of
    a 2-rank CPU run with "terminate called without an active exception" (SIGABRT) after a successful run.
    """
    if not dist.is_initialized():
        return False
    dist.barrier()
    dist.destroy_process_group()
    return True


def exit_rank(code: int = 0) -> NoReturn:
    """End a torchrun rank whose work is finished and written, skipping interpreter finalization.

    `fully_shard` keeps its process group referenced past `destroy_process_group` (torch 2.13: with the model
    deleted and `gc.collect()` run, gloo's worker threads were still running; without `fully_shard` they stop at
    destroy), so the group is torn down during interpreter finalization. There rank 1 of a 2-rank CPU run still
    aborted now and then with "terminate called without an active exception" (once in ~30 test runs, after
    the barrier above), turning a finished run into a failed one. Flushing and leaving with `os._exit` avoids
    that teardown; every file the rank wrote is closed by then.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a HF causal LM, found by the class names it declares unsplittable."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__} (no modules named in _no_split_modules); "
            "FSDP2 sharding needs a Hugging Face causal LM"
        )
    return layers


def shard_model(model: nn.Module, *, param_dtype: torch.dtype) -> None:
    """Apply FSDP2 in place: one unit per decoder layer, then the root (embeddings, final norm, lm head).

    Parameters stay fp32 (the optimizer's master copy); compute runs in ``param_dtype``; gradients are
    reduced in fp32 as a SUM (divide factor 1): the loss is already normalised by global counts.
    """
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    units: list[nn.Module] = [*decoder_layers(model), model]
    for unit in units:
        fully_shard(unit, mp_policy=policy)
    for unit in units:
        assert isinstance(unit, FSDPModule)
        unit.set_gradient_divide_factor(1.0)
        # plain SUM collectives: gloo has no PREMUL_SUM, and with a divide factor of 1 there is nothing to scale
        unit.set_force_sum_reduction_for_comms(True)


def broadcast_from_rank0(model: nn.Module, full_state: dict[str, torch.Tensor], ctx: DistContext) -> None:
    """Fill a sharded model whose ranks other than 0 were built on the meta device with rank 0's weights.

    full_state: rank 0's unsharded state dict (``{}`` on the other ranks). Non-persistent buffers (rotary
    frequencies) are not in any state dict, so they are broadcast as tensors.
    """
    if any(p.is_meta for p in model.parameters()) or any(b.is_meta for b in model.buffers()):
        model.to_empty(device=ctx.device)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full_state, options=options)
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def split_across_ranks(lengths: dict[int, int], world_size: int) -> list[list[int]]:
    """Deal sequences (index -> token count) to ranks, longest first to the least-loaded rank.

    Deterministic, so every rank computes every rank's share without communicating. Each share is sorted.
    """
    shares: list[list[int]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for i in sorted(lengths, key=lambda j: (-lengths[j], j)):
        r = min(range(world_size), key=lambda k: (load[k], k))
        shares[r].append(i)
        load[r] += lengths[i]
    return [sorted(s) for s in shares]


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over ranks (identity without a process group)."""
    if ctx.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values
