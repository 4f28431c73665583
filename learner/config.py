"""The learner's own typed configuration and its input batch.

Defaults live on these fields and nowhere else; the engine maps its run config onto them. Validation happens
at construction, so a bad value fails before a model is loaded.

    LearnerConfig(lr=1e-6, algorithm=AlgorithmConfig(clip_high=0.28, loss_agg="token-mean"))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class AlgorithmConfig:
    """The RL objective. GRPO: the defaults. DAPO: ``clip_high=0.28``, ``loss_agg="token-mean"``, ``kl_coef=0``."""

    policy_loss: str = "ppo_clip"  # name in learner.losses.POLICY_LOSSES
    advantage_estimator: str = "grpo"  # name in learner.losses.ADVANTAGE_ESTIMATORS (batches without advantages)
    loss_agg: str = "token-mean"  # one of learner.losses.AGG_MODES
    norm_length: int | None = None  # seq-mean-token-sum-norm constant; None: longest response of the mini-batch
    clip_low: float = 0.2  # ratio floor 1 - clip_low
    clip_high: float = 0.2  # ratio ceiling 1 + clip_high (DAPO clip-higher: 0.28)
    dual_clip: float | None = None  # dual-clip bound c > 1 for negative advantages (typically 3.0); None: off
    kl_coef: float = 0.0  # weight of the KL(pi || pi_ref) penalty in the loss; > 0 needs a reference model
    kl_kind: str = "k3"  # one of learner.losses.KL_KINDS
    # The generator's sampling temperature T: logits are divided by it, as the generator's log-probs are
    # log_softmax(logits / T). None: 1.0 for a Learner alone; engine.run sets it from generation.sampling.
    temperature: float | None = None
    use_generator_logprobs: bool = False  # take old log-probs from the batch instead of recomputing them
    # Rollout-training mismatch correction (learner.losses.rollout_weights): one of ROLLOUT_CORRECTIONS. Anything
    # but "none" recomputes the old log-probs (the proximal policy) and weights each token's policy-gradient term
    # by how the generator's (behaviour) log-probs differ from them.
    rollout_correction: str = "none"
    tis_cap: float = 2.0  # tis: weight min(ratio, tis_cap) (SkyRL's cap)
    mis_bounds: tuple[float, float] = (0.5, 2.0)  # mis: a sequence whose product of ratios leaves [lo, hi] drops
    geo_mask_bounds: tuple[float, float] = (0.99, 1.01)  # geo_mask: geometric-mean token ratio bounds (SkyRL's)
    decoupled_cap: float | None = 5.0  # decoupled: tokens with a larger ratio drop (AReaL's recipes); None: none

    def __post_init__(self) -> None:
        from learner import losses  # here, not at the top: reading a config must not import torch

        losses.get_policy_loss(self.policy_loss)
        losses.get_advantage_estimator(self.advantage_estimator)
        if self.loss_agg not in losses.AGG_MODES:
            raise ValueError(f"algorithm.loss_agg={self.loss_agg!r}; valid: {', '.join(losses.AGG_MODES)}")
        if self.kl_kind not in losses.KL_KINDS:
            raise ValueError(f"algorithm.kl_kind={self.kl_kind!r}; valid: {', '.join(losses.KL_KINDS)}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {self.clip_low}, {self.clip_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"algorithm.dual_clip must be > 1 (or None), got {self.dual_clip}")
        if self.kl_coef < 0:
            raise ValueError(f"need algorithm.kl_coef >= 0, got {self.kl_coef}")
        if self.temperature is not None and not (0 < self.temperature < float("inf")):
            raise ValueError(f"algorithm.temperature must be a finite number > 0 (or None), got {self.temperature}")
        self._check_rollout_correction(losses.ROLLOUT_CORRECTIONS)

    def _check_rollout_correction(self, modes: tuple[str, ...]) -> None:
        if self.rollout_correction not in modes:
            raise ValueError(f"algorithm.rollout_correction={self.rollout_correction!r}; valid: {', '.join(modes)}")
        if self.rollout_correction != "none" and self.use_generator_logprobs:
            raise ValueError(
                f"algorithm.rollout_correction={self.rollout_correction} compares the generator's log-probs with "
                "the learner's own old log-probs: set algorithm.use_generator_logprobs=false"
            )
        if not self.tis_cap >= 1.0:
            raise ValueError(
                f"algorithm.tis_cap must be >= 1 (a weight cap below 1 scales down even ratio 1), got {self.tis_cap}"
            )
        for name in ("mis_bounds", "geo_mask_bounds"):
            low, high = getattr(self, name)
            if not 0 < low <= 1 <= high < float("inf"):
                raise ValueError(f"algorithm.{name} must be [lo, hi] with 0 < lo <= 1 <= hi, got [{low}, {high}]")
        if self.decoupled_cap is not None and not self.decoupled_cap > 1.0:
            raise ValueError(f"algorithm.decoupled_cap must be > 1 (or None), got {self.decoupled_cap}")


@dataclass(frozen=True, kw_only=True)
class LearnerConfig:
    """Optimisation and execution settings of ``learner.Learner``."""

    lr: float = 1e-6  # AdamW peak learning rate
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warmup from lr / (warmup_steps + 1) to lr over this many optimizer steps
    grad_clip: float = 1.0  # max global L2 norm of the gradient; <= 0 disables clipping (the norm is still logged)
    ppo_epochs: int = 1  # passes over each batch
    mini_batches: int = 1  # optimizer steps per pass (the batch is split into this many mini-batches)
    micro_batch_tokens: int = 4096  # packed input tokens per forward/backward, per rank
    share_prompts: bool = True  # pack a group's samples on one copy of their prompt (sdpa/eager attention only)
    gradient_checkpointing: bool = False  # recompute decoder-layer activations in backward to save memory
    device: str = "auto"  # "auto": this rank's cuda device when available, else cpu
    dtype: str = "auto"  # compute dtype: "auto" = bfloat16 on cuda, float32 on cpu; master weights stay fp32
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"need lr > 0 and warmup_steps >= 0, got {self.lr}, {self.warmup_steps}")
        if self.ppo_epochs < 1 or self.mini_batches < 1 or self.micro_batch_tokens < 1:
            raise ValueError("ppo_epochs, mini_batches and micro_batch_tokens must all be >= 1")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"learner.dtype={self.dtype!r}; valid: auto, float32, bfloat16")


@dataclass(frozen=True, kw_only=True)
class RolloutBatch:
    """One training batch: the GLOBAL batch, identical on every rank (each rank trains on its share).

    prompts, responses: token ids per sequence. Either ``advantages`` (one per sequence) or ``rewards`` with
    ``group_ids`` (samples of one prompt share an id; the configured estimator turns them into advantages).
    old_logprobs: per-response-token log-probs from the generator, used when
    ``AlgorithmConfig.use_generator_logprobs`` is set.
    """

    prompts: Sequence[Sequence[int]]
    responses: Sequence[Sequence[int]]
    rewards: Sequence[float] | None = None
    group_ids: Sequence[int] | None = None
    advantages: Sequence[float] | None = None
    old_logprobs: Sequence[Sequence[float]] | None = None

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if len(self.responses) != n or n == 0:
            raise ValueError(f"batch needs as many responses as prompts (>0), got {n} and {len(self.responses)}")
        if self.advantages is None and (self.rewards is None or self.group_ids is None):
            raise ValueError("batch needs advantages, or rewards together with group_ids")
        for name in ("rewards", "group_ids", "advantages", "old_logprobs"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"batch.{name} has {len(value)} entries for {n} sequences")
        if self.old_logprobs is not None:
            for i, (lp, r) in enumerate(zip(self.old_logprobs, self.responses, strict=True)):
                if len(lp) != len(r):
                    raise ValueError(f"batch.old_logprobs[{i}] has {len(lp)} values for {len(r)} response tokens")

    def __len__(self) -> int:
        return len(self.prompts)
