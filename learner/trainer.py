"""``Learner``: one GRPO/DAPO training step over a global batch of (prompt, response, advantage) sequences.

A step: advantages (from rewards and groups, unless given) -> old and reference log-probs -> rollout-correction
weights (``algorithm.rollout_correction``: the old log-probs against the generator's) -> for each PPO
epoch and each mini-batch: packed forward/backward over this rank's micro-batches, loss normalised by the
GLOBAL counts of the mini-batch (tokens or sequences over all ranks and micro-batches, so the gradient does
not depend on the split) -> gradient clipping -> AdamW -> warmup schedule. Runs as one process, or under
``torchrun`` with FSDP2 (see ``learner.distributed``).

    learner = Learner(model, LearnerConfig(lr=1e-5))
    metrics = learner.step(RolloutBatch(prompts=..., responses=..., rewards=..., group_ids=...))
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
from torch import nn

from learner import losses
from learner.checkpoint import full_state_dict
from learner.config import LearnerConfig, RolloutBatch
from learner.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_from_rank0,
    init_distributed,
    shard_model,
    split_across_ranks,
)
from learner.policy import (
    PackedMicroBatch,
    pack,
    prompt_units,
    response_logprobs,
    supports_shared_prompts,
    unit_tokens,
)

# The phases of a step timed in its metrics (`time_<phase>_s`, host wall-clock seconds; on an accelerator the
# kernels a phase queues are counted where a later phase waits for them): advantages, packing and the frozen
# log-probs; forward + backward of every micro-batch; gradient clipping + optimizer and schedule steps.
PHASES = ("prepare", "forward_backward", "optimizer")
METRIC_KEYS = ("loss", "pg_loss", "kl", "entropy", "clip_frac_high", "clip_frac_low", "dual_clip_frac", "approx_kl")


@dataclass(frozen=True, kw_only=True)
class _Denominators:
    """Global counts of one mini-batch, shared by every rank and micro-batch."""

    tokens: float
    seqs: float
    norm_length: float


@dataclass(frozen=True, kw_only=True)
class _MiniBatch:
    """This rank's micro-batches of one mini-batch (``None`` = a no-op pass that keeps FSDP ranks in step)."""

    micro: list[PackedMicroBatch | None]
    denominators: _Denominators


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def fused_adamw_applies(params: list[nn.Parameter], *, distributed: bool) -> bool:
    """Whether Learner steps `params` with torch's fused AdamW: in one process, every parameter fp32/bf16 on CPU
    or CUDA. Under FSDP (DTensor parameters) the choice stays torch's."""
    return (
        not distributed
        and bool(params)
        and all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16) for p in params)
    )


def make_optimizer(params: list[nn.Parameter], config: LearnerConfig, *, fused: bool) -> torch.optim.AdamW:
    """AdamW over `params`; `fused`: torch's fused kernel (one pass over each tensor's weights, moments and
    gradient), else torch's default (on CPU the per-tensor loop, several passes per tensor). The same update up
    to float rounding."""
    return torch.optim.AdamW(
        params,
        lr=config.lr,
        betas=config.betas,
        eps=config.eps,
        weight_decay=config.weight_decay,
        fused=True if fused else None,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, config: LearnerConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over `config.warmup_steps`, then constant."""
    warmup = config.warmup_steps
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / (warmup + 1)))


def _load_on_rank0(name_or_path: str, ctx: DistContext) -> nn.Module:
    """The real weights on rank 0 (or in a single process); an empty meta-device model on the other ranks."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from learner.models import load_model, resolve_model_path

    if ctx.rank == 0:
        return load_model(name_or_path, dtype="float32")
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model_path(name_or_path)))


class Learner:
    """Owns the policy (and the frozen reference policy when KL is on), its optimizer and schedule."""

    def __init__(
        self,
        model: nn.Module,
        config: LearnerConfig,
        *,
        ref_model: nn.Module | None = None,
        ctx: DistContext | None = None,
    ) -> None:
        algo = config.algorithm
        if algo.kl_coef > 0 and ref_model is None:
            raise ValueError("algorithm.kl_coef > 0 needs a reference model: pass ref_model= (a frozen copy)")
        self.config = config
        self.ctx = ctx or init_distributed(config.device)
        self.compute_dtype = _resolve_dtype(config.dtype, self.ctx.device)
        self.model = self._prepare(model, trainable=True)
        self.ref_model = None if ref_model is None else self._prepare(ref_model, trainable=False)
        self.temperature = 1.0 if algo.temperature is None else algo.temperature
        self.loss_fn = losses.get_policy_loss(algo.policy_loss)
        self.advantage_fn = losses.get_advantage_estimator(algo.advantage_estimator)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(
            params, config, fused=fused_adamw_applies(params, distributed=self.ctx.distributed)
        )
        self.scheduler = make_scheduler(self.optimizer, config)
        self.global_step = 0
        self._phase_s = dict.fromkeys(PHASES, 0.0)

    @classmethod
    def from_pretrained(cls, name_or_path: str, config: LearnerConfig, *, ctx: DistContext | None = None) -> Learner:
        """Load the policy (and, when KL is on, a second copy as the reference) through ``learner.models``.

        Under torchrun only rank 0 reads the weights (fp32, on CPU); the other ranks build the model on the meta
        device and receive their shards from rank 0, so host memory holds one full copy, not one per rank.
        """
        ctx = ctx or init_distributed(config.device)
        ref = _load_on_rank0(name_or_path, ctx) if config.algorithm.kl_coef > 0 else None
        return cls(_load_on_rank0(name_or_path, ctx), config, ref_model=ref, ctx=ctx)

    def _prepare(self, model: nn.Module, *, trainable: bool) -> nn.Module:
        on_meta = any(p.is_meta for p in model.parameters())
        if on_meta and not self.ctx.distributed:
            raise ValueError("a model on the meta device needs torchrun (rank 0 supplies the weights)")
        model.to(dtype=torch.float32)  # master weights; compute dtype comes from autocast / FSDP mixed precision
        model.config.use_cache = False
        model.train(trainable)
        model.requires_grad_(trainable)
        if trainable and self.config.gradient_checkpointing:
            model.activation_checkpointing_enable({"use_reentrant": False})
        if not self.ctx.distributed:
            return model.to(self.ctx.device)
        # rank 0 holds the weights when from_pretrained left the other ranks on meta: every rank must then join
        weights_on_rank0 = torch.tensor([float(on_meta)], device=self.ctx.device)
        all_reduce_sum(weights_on_rank0, self.ctx)
        full_state = model.state_dict() if weights_on_rank0.item() > 0 and self.ctx.rank == 0 else None
        shard_model(model, param_dtype=self.compute_dtype)  # moves each unit to the device as it shards it
        if weights_on_rank0.item() > 0:
            broadcast_from_rank0(model, full_state or {}, self.ctx)
        return model

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        # FSDP2 casts parameters itself; a single process needs autocast for bf16 compute on fp32 weights
        if self.ctx.distributed or self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.compute_dtype)

    # ----------------------------------------------------------------- planning
    def _advantages(self, batch: RolloutBatch) -> torch.Tensor:
        if batch.advantages is not None:
            adv = torch.tensor(batch.advantages, dtype=torch.float32)
        else:
            rewards = torch.tensor(batch.rewards, dtype=torch.float32)
            adv = self.advantage_fn(rewards, torch.tensor(batch.group_ids, dtype=torch.long))
        return adv.to(self.ctx.device)

    def _plan(self, batch: RolloutBatch) -> list[_MiniBatch]:
        """Cut the batch into mini-batches, deal each to the ranks, pack each rank's share into micro-batches."""
        n, algo = len(batch), self.config.algorithm
        chunks = [c.tolist() for c in torch.arange(n).tensor_split(min(self.config.mini_batches, n))]
        plans = []
        share = self.config.share_prompts and supports_shared_prompts(self.model)
        for chunk in chunks:
            # ranks get whole prompt units, so a group's samples share their prompt in one micro-batch
            units = prompt_units(
                batch.prompts, batch.responses, chunk, max_tokens=self.config.micro_batch_tokens, share_prompts=share
            )
            while len(units) < self.ctx.world_size and any(len(unit) > 1 for unit in units):
                big = max(units, key=len)  # fewer units than ranks: halve the largest so every rank has work
                units.remove(big)
                units += [big[: len(big) // 2], big[len(big) // 2 :]]
            lengths = {u: unit_tokens(batch.prompts, batch.responses, unit) for u, unit in enumerate(units)}
            shares = [[i for u in s for i in units[u]] for s in split_across_ranks(lengths, self.ctx.world_size)]
            per_rank = [
                pack(
                    batch.prompts,
                    batch.responses,
                    max_tokens=self.config.micro_batch_tokens,
                    indices=s,
                    share_prompts=share,
                )
                if s
                else []
                for s in shares
            ]
            micro: list[PackedMicroBatch | None] = list(per_rank[self.ctx.rank])
            micro += [None] * (max(len(p) for p in per_rank) - len(micro))
            longest = max(len(batch.responses[i]) for i in chunk)
            denominators = _Denominators(
                tokens=float(sum(len(batch.responses[i]) for i in chunk)),
                seqs=float(len(chunk)),
                norm_length=float(algo.norm_length or longest),
            )
            plans.append(_MiniBatch(micro=micro, denominators=denominators))
        return plans

    def _noop_batch(self) -> PackedMicroBatch:
        return pack([[0]], [[0]], max_tokens=2)[0].to(self.ctx.device)

    # ----------------------------------------------------------------- log-probs
    @torch.no_grad()
    def _frozen_logprobs(self, model: nn.Module, plans: list[_MiniBatch]) -> list[list[torch.Tensor | None]]:
        """Per micro-batch (R,) log-probs under ``model`` without gradient (old policy or reference)."""
        out: list[list[torch.Tensor | None]] = []
        for plan in plans:
            row: list[torch.Tensor | None] = []
            for mb in plan.micro:
                with self._autocast():
                    lp = response_logprobs(
                        model,
                        (mb or self._noop_batch()).to(self.ctx.device),
                        temperature=self.temperature,
                    ).logprobs
                row.append(None if mb is None else lp)
            out.append(row)
        return out

    def _generator_logprobs(self, batch: RolloutBatch, plans: list[_MiniBatch]) -> list[list[torch.Tensor | None]]:
        assert batch.old_logprobs is not None
        return [
            [
                None
                if mb is None
                else torch.tensor([v for i in mb.indices for v in batch.old_logprobs[i]], device=self.ctx.device)
                for mb in plan.micro
            ]
            for plan in plans
        ]

    def _old_logprobs(self, batch: RolloutBatch, plans: list[_MiniBatch]) -> list[list[torch.Tensor | None]] | None:
        """None means on-policy with a single update and no rollout correction: the current log-probs (detached)
        are the old ones."""
        algo, cfg = self.config.algorithm, self.config
        if algo.use_generator_logprobs:
            if batch.old_logprobs is None:
                raise ValueError("algorithm.use_generator_logprobs is set but the batch carries no old_logprobs")
            return self._generator_logprobs(batch, plans)
        if cfg.ppo_epochs == 1 and len(plans) == 1 and algo.rollout_correction == "none":
            return None
        self.model.eval()
        try:
            return self._frozen_logprobs(self.model, plans)
        finally:
            self.model.train()

    def _rollout_weights(
        self, batch: RolloutBatch, plans: list[_MiniBatch], old: list[list[torch.Tensor | None]] | None
    ) -> tuple[list[list[torch.Tensor | None]] | None, dict[str, float]]:
        """Per micro-batch (R,) behaviour-correction weights (None when off) and the step's mismatch metrics,
        over every rank's tokens: ``old`` is the proximal policy, the batch's generator log-probs the behaviour."""
        algo = self.config.algorithm
        if algo.rollout_correction == "none":
            return None, {}
        if batch.old_logprobs is None:
            raise ValueError(
                f"algorithm.rollout_correction={algo.rollout_correction} needs the generator's log-probs: the batch "
                "carries no old_logprobs"
            )
        assert old is not None
        behaviour = self._generator_logprobs(batch, plans)
        weights: list[list[torch.Tensor | None]] = []
        log_ratios, flat_weights = [], []
        for plan, proximal_row, behaviour_row in zip(plans, old, behaviour, strict=True):
            row: list[torch.Tensor | None] = []
            for mb, proximal, behav in zip(plan.micro, proximal_row, behaviour_row, strict=True):
                if mb is None or proximal is None or behav is None:
                    row.append(None)
                    continue
                mb = mb.to(proximal.device)
                (prox_st, mask), (behav_st, _) = mb.unpack(proximal), mb.unpack(behav.to(proximal))
                w = losses.rollout_weights(
                    prox_st,
                    behav_st,
                    mask,
                    mode=algo.rollout_correction,
                    tis_cap=algo.tis_cap,
                    mis_bounds=algo.mis_bounds,
                    geo_mask_bounds=algo.geo_mask_bounds,
                    decoupled_cap=algo.decoupled_cap,
                )[mb.seq_index, mb.token_index]
                row.append(w)
                log_ratios.append(proximal.float() - behav.float())
                flat_weights.append(w)
            weights.append(row)
        metrics = losses.mismatch_metrics(self._gather_tokens(log_ratios), self._gather_tokens(flat_weights))
        return weights, metrics

    def _gather_tokens(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """This rank's per-token values, concatenated, then those of every rank (in rank order) under torchrun."""
        local = torch.cat(parts) if parts else torch.zeros(0, device=self.ctx.device)
        local = local.to(self.ctx.device, torch.float32)
        if not self.ctx.distributed:
            return local
        counts = torch.zeros(self.ctx.world_size, device=self.ctx.device, dtype=torch.float64)
        counts[self.ctx.rank] = local.numel()
        all_reduce_sum(counts, self.ctx)
        start = int(counts[: self.ctx.rank].sum().item())
        full = torch.zeros(int(counts.sum().item()), device=self.ctx.device, dtype=torch.float32)
        full[start : start + local.numel()] = local  # every other rank adds zeros here: the sum is exact
        return all_reduce_sum(full, self.ctx)

    # ----------------------------------------------------------------- update
    def _micro_loss(
        self,
        mb: PackedMicroBatch,
        old: torch.Tensor | None,
        ref: torch.Tensor | None,
        weights: torch.Tensor | None,
        advantages: torch.Tensor,
        den: _Denominators,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        algo = self.config.algorithm
        with self._autocast():
            out = response_logprobs(self.model, mb, temperature=self.temperature, with_entropy=True)
        logprobs, mask = mb.unpack(out.logprobs)
        old_lp, _ = mb.unpack(out.logprobs.detach() if old is None else old)
        counts = {"global_tokens": den.tokens, "global_seqs": den.seqs, "norm_length": den.norm_length}
        pg_loss, metrics = self.loss_fn(
            logprobs,
            old_lp,
            mb.gather(advantages),
            mask,
            clip_low=algo.clip_low,
            clip_high=algo.clip_high,
            dual_clip=algo.dual_clip,
            agg=algo.loss_agg,
            rollout_weights=None if weights is None else mb.unpack(weights)[0],
            **counts,
        )
        loss = pg_loss
        if ref is not None:
            ref_lp, _ = mb.unpack(ref)
            kl = losses.aggregate(losses.kl_penalty(logprobs, ref_lp, algo.kl_kind), mask, algo.loss_agg, **counts)
            loss = loss + algo.kl_coef * kl
            metrics["kl"] = kl.detach()
        assert out.entropy is not None
        entropy, _ = mb.unpack(out.entropy)
        metrics["entropy"] = losses.aggregate(entropy, mask, "token-mean", global_tokens=den.tokens)
        metrics["pg_loss"] = pg_loss.detach()
        metrics["loss"] = loss.detach()
        return loss, metrics

    def _update(
        self,
        plan: _MiniBatch,
        old: list[torch.Tensor | None] | None,
        ref: list[torch.Tensor | None] | None,
        weights: list[torch.Tensor | None] | None,
        advantages: torch.Tensor,
    ) -> torch.Tensor:
        """One optimizer step over one mini-batch; returns the summed metrics (METRIC_KEYS order + grad norm)."""
        totals = torch.zeros(len(METRIC_KEYS), device=self.ctx.device, dtype=torch.float64)
        started = time.perf_counter()
        for k, mb in enumerate(plan.micro):
            if mb is None:
                # this rank has fewer micro-batches than another: a zero-weight pass keeps FSDP collectives paired
                noop = self._noop_batch()
                with self._autocast():
                    (response_logprobs(self.model, noop).logprobs.sum() * 0.0).backward()
                continue
            loss, metrics = self._micro_loss(
                mb.to(self.ctx.device),
                None if old is None else old[k],
                None if ref is None else ref[k],
                None if weights is None else weights[k],
                advantages,
                plan.denominators,
            )
            loss.backward()
            totals += torch.stack([metrics.get(key, torch.zeros(())).to(totals) for key in METRIC_KEYS])
        backward_done = time.perf_counter()
        grad_norm = self._clip_gradients()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self._phase_s["forward_backward"] += backward_done - started
        self._phase_s["optimizer"] += time.perf_counter() - backward_done
        return torch.cat([all_reduce_sum(totals, self.ctx), grad_norm.reshape(1).to(totals)])

    def _clip_gradients(self) -> torch.Tensor:
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        full = getattr(norm, "full_tensor", None)
        return full() if full is not None else norm

    # ----------------------------------------------------------------- public
    def step(self, batch: RolloutBatch) -> dict[str, float]:
        """Train on one global batch (the same on every rank); returns metrics averaged over the updates."""
        start = time.perf_counter()
        self._phase_s = dict.fromkeys(PHASES, 0.0)
        advantages = self._advantages(batch)
        plans = self._plan(batch)
        old = self._old_logprobs(batch, plans)
        weights, correction_metrics = self._rollout_weights(batch, plans, old)
        ref = None if self.ref_model is None else self._frozen_logprobs(self.ref_model, plans)
        self._phase_s["prepare"] = time.perf_counter() - start
        lr = self.scheduler.get_last_lr()[0]
        updates = [
            self._update(
                plan,
                None if old is None else old[m],
                None if ref is None else ref[m],
                None if weights is None else weights[m],
                advantages,
            )
            for _ in range(self.config.ppo_epochs)
            for m, plan in enumerate(plans)
        ]
        mean = torch.stack(updates).mean(0).tolist()
        self.global_step += 1
        elapsed = time.perf_counter() - start
        tokens = sum(len(p) + len(r) for p, r in zip(batch.prompts, batch.responses, strict=True))
        metrics = dict(zip((*METRIC_KEYS, "grad_norm"), mean, strict=True))
        metrics.update(
            lr=lr,
            response_tokens=float(sum(len(r) for r in batch.responses)),
            tokens_per_s=tokens * self.config.ppo_epochs / elapsed,
            step_s=elapsed,
            advantage_mean=float(advantages.mean()),
        )
        metrics.update({f"time_{phase}_s": seconds for phase, seconds in self._phase_s.items()})
        metrics.update(correction_metrics)
        if self.ref_model is None:
            metrics.pop("kl")
        return metrics

    def full_weights(self, *, all_ranks: bool = False) -> dict[str, torch.Tensor]:
        """The policy's unsharded HF-named weights on CPU, for a generator (not a checkpoint: see
        `learner.checkpoint`). Rank 0 only (``{}`` elsewhere) unless ``all_ranks``; under FSDP every rank
        must call it (the shards are gathered)."""
        return full_state_dict(self, all_ranks=all_ranks)
