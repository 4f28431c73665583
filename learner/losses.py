"""The RL maths of the learner: policy losses, loss aggregation, KL estimators, advantages, reward shaping.

Everything here is pure: tensors in, tensors out, no config objects, no I/O, no distributed calls. The
learner (``learner.trainer``) decides the denominators (``global_tokens``, ``global_seqs``) so that a step's
gradient does not depend on how the batch is cut into micro-batches and ranks; these functions only apply them.

Layout: per-token tensors are ``(B, T)`` with a ``mask`` of the same shape that is 1 on response tokens that
count in the loss and 0 elsewhere (padding, prompt). Per-sequence tensors are ``(B,)``.

Run the hand-derived tests with ``.venv/bin/pytest tests/learner/test_losses.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

import torch

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_KINDS = ("k1", "k2", "k3")
ADVANTAGE_SCALES = ("group", "none")
ROLLOUT_CORRECTIONS = ("none", "tis", "mis", "geo_mask", "decoupled")
MISMATCH_QUANTILES = (0.05, 0.5, 0.95)

# exp() of a log-ratio above 20 is ~5e8: such a token is an outlier whose gradient we refuse to let explode.
LOG_RATIO_CLAMP = 20.0
# k3 is bounded so one badly off-policy token cannot dominate the KL term.
K3_CLAMP = 10.0
GROUP_STD_EPS = 1e-6

Metrics = dict[str, torch.Tensor]
_T = TypeVar("_T")


def _check_agg(agg: str) -> None:
    if agg not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation {agg!r}; valid modes: {', '.join(AGG_MODES)}")


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    agg: str,
    *,
    global_tokens: float | torch.Tensor | None = None,
    global_seqs: float | torch.Tensor | None = None,
    norm_length: float | None = None,
) -> torch.Tensor:
    """Reduce per-token ``values`` to a scalar loss.

    values, mask: (B, T). Modes:

    - ``token-mean``: ``sum(values * mask) / N`` with ``N = global_tokens`` if given, else ``mask.sum()``.
      Every token weighs the same (DAPO, arXiv 2503.14476, section 3.3).
    - ``seq-mean-token-mean``: mean over tokens within each sequence, then mean over sequences that have at
      least one token (the original GRPO objective, arXiv 2402.03300, eq. 3). ``global_seqs`` replaces the
      local sequence count.
    - ``seq-mean-token-sum``: sum over tokens within a sequence, mean over sequences (divided by
      ``global_seqs`` if given).
    - ``seq-mean-token-sum-norm``: ``sum(values * mask) / L`` with the constant ``L = norm_length`` if given,
      else ``T`` (Dr. GRPO, arXiv 2503.20783, section 3.2: a length constant instead of ``|o_i|``).

    With the global denominators passed in, the losses of micro-batches add up to the loss of their union.
    """
    _check_agg(agg)
    mask = mask.to(values.dtype)
    masked = values * mask
    if agg == "token-mean":
        denom = mask.sum() if global_tokens is None else global_tokens
        return masked.sum() / denom
    if agg == "seq-mean-token-sum-norm":
        return masked.sum() / (values.shape[-1] if norm_length is None else norm_length)
    seq_tokens = mask.sum(dim=-1)
    has_tokens = (seq_tokens > 0).to(values.dtype)
    seq_values = masked.sum(dim=-1)
    if agg == "seq-mean-token-mean":
        seq_values = seq_values / seq_tokens.clamp(min=1.0)
    denom = has_tokens.sum() if global_seqs is None else global_seqs
    return (seq_values * has_tokens).sum() / denom


def _as_token_tensor(advantages: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast per-sequence advantages (B,) to per-token (B, T); (B, T) passes through."""
    if advantages.dim() == 1:
        return advantages.unsqueeze(-1).expand_as(like)
    if advantages.shape != like.shape:
        raise ValueError(f"advantages must be (B,) or (B, T) = {tuple(like.shape)}, got {tuple(advantages.shape)}")
    return advantages


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    global_tokens: float | torch.Tensor | None = None,
    global_seqs: float | torch.Tensor | None = None,
    norm_length: float | None = None,
    rollout_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Clipped surrogate policy loss of PPO/GRPO/DAPO.

    logprobs, old_logprobs, mask: (B, T); advantages: (B,) or (B, T). Returns ``(loss, metrics)``.

    ``ratio = exp(clamp(logprobs - old_logprobs, -20, 20))``; per token
    ``l = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))`` (PPO, arXiv 1707.06347; GRPO,
    arXiv 2402.03300). ``clip_high > clip_low`` is DAPO's clip-higher (arXiv 2503.14476, section 3.1). With
    ``dual_clip = c > 1``, tokens with ``A < 0`` are further bounded by ``min(l, -A * c)`` (dual-clip PPO,
    arXiv 1912.09729), so a huge ratio on a bad token cannot produce an unbounded loss.

    ``rollout_weights`` (B, T), detached, multiplies each token's clipped term before aggregation (the behaviour
    correction of ``rollout_weights()``: ``old_logprobs`` is then the proximal policy the clip is centred on).
    The denominators stay those of the unweighted loss, so a dropped token counts as a zero, not as absent.

    Metrics (detached scalars, over masked tokens, normalised like ``token-mean`` with ``global_tokens`` so
    they add up across micro-batches): ``clip_frac_high`` (A > 0 and ratio above ``1 + clip_high``),
    ``clip_frac_low`` (A < 0 and ratio below ``1 - clip_low``), ``dual_clip_frac`` (A < 0 and the dual-clip
    bound active), ``approx_kl`` (mean of ``old - new`` log-probs: the k1 estimate of KL(old || new)).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1.0 (it bounds -A * ratio for A < 0), got {dual_clip}")
    advantages = _as_token_tensor(advantages, logprobs)
    log_ratio = torch.clamp(logprobs - old_logprobs, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    losses = torch.maximum(unclipped, clipped)
    clip_active = clipped > unclipped
    dual_active = torch.zeros_like(clip_active)
    if dual_clip is not None:
        bound = -advantages * dual_clip
        negative = advantages < 0
        dual_active = negative & (losses > bound)
        losses = torch.where(negative, torch.minimum(losses, bound), losses)
    if rollout_weights is not None:
        losses = losses * rollout_weights.detach()
    loss = aggregate(losses, mask, agg, global_tokens=global_tokens, global_seqs=global_seqs, norm_length=norm_length)
    with torch.no_grad():
        metrics = {
            "clip_frac_high": aggregate(
                (clip_active & (ratio > 1.0)).to(ratio.dtype), mask, "token-mean", global_tokens=global_tokens
            ),
            "clip_frac_low": aggregate(
                (clip_active & (ratio < 1.0)).to(ratio.dtype), mask, "token-mean", global_tokens=global_tokens
            ),
            "dual_clip_frac": aggregate(dual_active.to(ratio.dtype), mask, "token-mean", global_tokens=global_tokens),
            "approx_kl": aggregate(-log_ratio.detach(), mask, "token-mean", global_tokens=global_tokens),
        }
    return loss, metrics


class PolicyLoss(Protocol):
    """A registered policy loss: per-token tensors (B, T) in, ``(scalar loss, detached metrics)`` out."""

    def __call__(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
        *,
        clip_low: float,
        clip_high: float,
        dual_clip: float | None,
        agg: str,
        global_tokens: float | torch.Tensor | None,
        global_seqs: float | torch.Tensor | None,
        norm_length: float | None,
        rollout_weights: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Metrics]: ...


def gspo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 3e-4,
    clip_high: float = 4e-4,
    dual_clip: float | None = None,
    agg: str = "seq-mean-token-mean",
    global_tokens: float | torch.Tensor | None = None,
    global_seqs: float | torch.Tensor | None = None,
    norm_length: float | None = None,
    rollout_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Sequence-level clipped loss of GSPO (arXiv 2507.18071, eq. 7 and its token form, eq. 13).

    logprobs, old_logprobs, mask: (B, T); advantages: (B,) or (B, T). The importance ratio of sequence i is
    the geometric mean ``s_i = exp(mean_t(logprobs - old_logprobs))``; each token uses
    ``s_i * exp(logprobs - sg(logprobs))`` (same value, per-token gradient) in the clipped surrogate. The
    paper's clip ranges are tiny (3e-4 / 4e-4) because ``s_i`` is a length-normalised ratio. ``rollout_weights``:
    as in ``policy_loss``.
    """
    maskf = mask.to(logprobs.dtype)
    seq_log_ratio = ((logprobs - old_logprobs) * maskf).sum(-1) / maskf.sum(-1).clamp(min=1.0)
    token_log_ratio = seq_log_ratio.detach().unsqueeze(-1) + logprobs - logprobs.detach()
    return policy_loss(
        token_log_ratio,
        torch.zeros_like(token_log_ratio),
        advantages,
        mask,
        clip_low=clip_low,
        clip_high=clip_high,
        dual_clip=dual_clip,
        agg=agg,
        global_tokens=global_tokens,
        global_seqs=global_seqs,
        norm_length=norm_length,
        rollout_weights=rollout_weights,
    )


POLICY_LOSSES: dict[str, PolicyLoss] = {"ppo_clip": policy_loss, "gspo": gspo_loss}


def get_policy_loss(name: str) -> PolicyLoss:
    """Look up a policy loss by name; an unknown name lists the registered ones."""
    return _lookup(POLICY_LOSSES, name, "policy loss")


def rollout_weights(
    proximal_logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    mask: torch.Tensor,
    *,
    mode: str,
    tis_cap: float = 2.0,
    mis_bounds: tuple[float, float] = (0.5, 2.0),
    geo_mask_bounds: tuple[float, float] = (0.99, 1.01),
    decoupled_cap: float | None = 5.0,
) -> torch.Tensor:
    """Per-token weights that correct for the generator sampling from another distribution than the learner's.

    proximal_logprobs: (B, T) the learner's own log-probs of the sampled tokens at the start of the step (the
    policy the PPO clip is centred on); behaviour_logprobs: (B, T) the generator's (inference kernels, another
    precision, or older weights under ``max_staleness > 0``); mask: (B, T). Returns detached weights (B, T), 0
    outside the mask and on dropped tokens, for ``policy_loss(..., rollout_weights=)``.

    With the token ratio ``rho_t = exp(proximal - behaviour)`` (log clamped to +-20):

    - ``none``: 1.
    - ``tis``: ``min(rho_t, tis_cap)``, truncated importance sampling (Yao et al., "Your efficient RL framework
      secretly brings you off-policy RL training", 2025; verl's token-level rollout IS).
    - ``mis``: masked sequence-level importance sampling: ``rho(y) = prod_t rho_t`` on every token of a sequence
      with ``lo <= rho(y) <= hi``, 0 on the tokens of the others (Liu, Li et al., "When speed kills stability",
      2025).
    - ``geo_mask``: 1 on the tokens of a sequence whose geometric-mean ratio ``exp(mean_t log rho_t)`` lies in
      ``[lo, hi]``, 0 on the others: a rejection mask that does not grow with the length (SkyRL; verl's
      geometric rejection sampling).
    - ``decoupled``: ``rho_t``, and 0 where ``rho_t > decoupled_cap`` (None: no cap): the behaviour weight of
      decoupled PPO (Hilton et al., arXiv 2110.00641; AReaL, arXiv 2505.24298, which drops tokens above
      the cap rather than truncating them).
    """
    if mode not in ROLLOUT_CORRECTIONS:
        raise ValueError(f"unknown rollout correction {mode!r}; valid: {', '.join(ROLLOUT_CORRECTIONS)}")
    dtype = torch.promote_types(proximal_logprobs.dtype, torch.float32)  # at least fp32, even on bf16 log-probs
    maskf = mask.to(dtype)
    log_ratio = proximal_logprobs.detach().to(dtype) - behaviour_logprobs.detach().to(dtype)
    log_ratio = torch.clamp(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP) * maskf
    if mode == "none":
        return maskf
    if mode == "tis":
        return torch.clamp(torch.exp(log_ratio), max=tis_cap) * maskf
    if mode == "decoupled":
        ratio = torch.exp(log_ratio)
        kept = ratio if decoupled_cap is None else torch.where(ratio <= decoupled_cap, ratio, 0.0)
        return kept * maskf
    seq_log = log_ratio.sum(-1)
    if mode == "geo_mask":
        low, high = geo_mask_bounds
        geo_log = seq_log / maskf.sum(-1).clamp(min=1.0)
        keep = (geo_log >= math.log(low)) & (geo_log <= math.log(high))
        return keep.to(maskf.dtype).unsqueeze(-1) * maskf
    low, high = mis_bounds
    keep = (seq_log >= math.log(low)) & (seq_log <= math.log(high))
    seq_weight = torch.where(keep, torch.exp(seq_log.clamp(math.log(low), math.log(high))), 0.0)
    return seq_weight.unsqueeze(-1) * maskf


def quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """Quantiles of a 1-D tensor with linear interpolation between order statistics (numpy's default), by
    sorting: ``torch.quantile`` refuses inputs over 2**24 elements, fewer than a large batch's tokens."""
    ordered = values.detach().double().flatten().sort().values
    n = ordered.numel()
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(float(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)))
    return out


def mismatch_metrics(log_ratio: torch.Tensor, weights: torch.Tensor) -> dict[str, float]:
    """How far the generator's distribution is from the learner's, over the response tokens of a step.

    log_ratio: (N,) ``proximal - behaviour`` log-probs per token (clamped to +-20 here); weights: (N,) the
    ``rollout_weights`` of those tokens. Returns floats: ``mismatch_kl`` (k3 estimate of KL(behaviour ||
    proximal) from the behaviour's samples: mean of ``rho - 1 - log rho``), ``mismatch_kl_k1`` (mean of
    ``-log rho``), ``mismatch_log_ratio_abs`` (mean ``|log rho|``: the mean absolute difference of the two
    log-probs), ``mismatch_ratio_p05/p50/p95``, ``mismatch_ratio_min/max`` (of ``rho``), ``mismatch_weight_mean``
    and ``mismatch_masked_frac`` (share of tokens whose weight is 0). All 0 when N is 0.
    """
    names = [f"mismatch_ratio_p{round(q * 100):02d}" for q in MISMATCH_QUANTILES]
    keys = (
        "mismatch_kl",
        "mismatch_kl_k1",
        "mismatch_log_ratio_abs",
        *names,
        "mismatch_ratio_min",
        "mismatch_ratio_max",
        "mismatch_weight_mean",
        "mismatch_masked_frac",
    )
    if log_ratio.numel() == 0:
        return dict.fromkeys(keys, 0.0)
    lr = torch.clamp(log_ratio.detach().double(), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(lr)
    w = weights.detach().double()
    values = [
        float((ratio - 1.0 - lr).mean()),
        float((-lr).mean()),
        float(lr.abs().mean()),
        *quantiles(ratio, MISMATCH_QUANTILES),
        float(ratio.min()),
        float(ratio.max()),
        float(w.mean()),
        float((w == 0).double().mean()),
    ]
    return dict(zip(keys, values, strict=True))


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL divergence", 2020,
    http://joschu.net/blog/kl-approx.html; k3 is the GRPO penalty, arXiv 2402.03300 eq. 4).

    logprobs, ref_logprobs: (B, T) -> (B, T). With ``d = ref_logprobs - logprobs``:
    ``k1 = -d`` (unbiased, high variance, can be negative), ``k2 = d**2 / 2`` (biased, low variance),
    ``k3 = exp(d) - 1 - d`` (unbiased, non-negative; ``d`` clamped to +-20 and the result to +-10).
    """
    if kind not in KL_KINDS:
        raise ValueError(f"unknown KL estimator {kind!r}; valid kinds: {', '.join(KL_KINDS)}")
    diff = ref_logprobs - logprobs
    if kind == "k1":
        return -diff
    if kind == "k2":
        return 0.5 * diff.square()
    diff = torch.clamp(diff, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(diff) - 1.0 - diff, -K3_CLAMP, K3_CLAMP)


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, *, scale: str = "group") -> torch.Tensor:
    """Group-relative outcome advantages.

    rewards: (N,) float; group_ids: (N,) int (samples of one prompt share an id) -> advantages (N,).
    ``scale="group"``: ``(r - mean_g) / (std_g + 1e-6)`` with the unbiased std of the group (GRPO,
    arXiv 2402.03300, section 4.1.2). ``scale="none"``: ``r - mean_g`` (Dr. GRPO, arXiv 2503.20783, which drops
    the std to remove the difficulty bias). A group of one sample has no baseline: as in verl, its mean is
    taken as 0 and its std as 1, so its advantage is its reward (divided by 1 + 1e-6 under "group").
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"unknown advantage scale {scale!r}; valid scales: {', '.join(ADVANTAGE_SCALES)}")
    if rewards.shape != group_ids.shape or rewards.dim() != 1:
        raise ValueError(
            f"rewards and group_ids must both be (N,), got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    rewards = rewards.to(torch.float64)
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    counts = counts.to(torch.float64)
    sums = torch.zeros_like(counts).index_add_(0, inverse, rewards)
    mean = torch.where(counts > 1, sums / counts, torch.zeros_like(counts))
    centered = rewards - mean[inverse]
    if scale == "none":
        return centered.float()
    sq = torch.zeros_like(counts).index_add_(0, inverse, centered.square())
    std = torch.where(counts > 1, (sq / (counts - 1).clamp(min=1.0)).sqrt(), torch.ones_like(counts))
    return (centered / (std[inverse] + GROUP_STD_EPS)).float()


def rloo_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Leave-one-out baseline (RLOO, Ahmadian et al., arXiv 2402.14740): ``r_i - mean_{j != i} r_j``.

    rewards, group_ids: (N,) -> (N,). Equals ``n / (n - 1) * (r_i - mean_g)``; a group of one gets ``r_i``.
    """
    centered = group_advantages(rewards, group_ids, scale="none").to(torch.float64)
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n = counts.to(torch.float64)[inverse]
    return torch.where(n > 1, centered * n / (n - 1).clamp(min=1.0), centered).float()


class AdvantageEstimator(Protocol):
    """A registered outcome-advantage estimator: rewards (N,), group ids (N,) -> advantages (N,)."""

    def __call__(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor: ...


def _grpo(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    return group_advantages(rewards, group_ids, scale="group")


def _dr_grpo(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    return group_advantages(rewards, group_ids, scale="none")


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {"grpo": _grpo, "dr_grpo": _dr_grpo, "rloo": rloo_advantages}


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """Look up an advantage estimator by name; an unknown name lists the registered ones."""
    return _lookup(ADVANTAGE_ESTIMATORS, name, "advantage estimator")


def overlong_penalty(lengths: torch.Tensor, *, max_len: int, buffer: int, factor: float = 1.0) -> torch.Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476, eq. 13), added to the outcome reward.

    lengths: (N,) response lengths in tokens -> (N,) penalties <= 0. Zero up to ``max_len - buffer``, then
    linear down to ``-factor`` at ``max_len``, and ``-factor`` beyond (a truncated response).
    """
    if not 0 < buffer <= max_len:
        raise ValueError(f"overlong buffer must satisfy 0 < buffer <= max_len, got buffer={buffer}, max_len={max_len}")
    exceed = lengths.to(torch.float32) - (max_len - buffer)
    return torch.clamp(-exceed / buffer * factor, min=-factor, max=0.0)


def _lookup(registry: Mapping[str, _T], name: str, what: str) -> _T:
    try:
        return registry[name]
    except KeyError:
        raise KeyError(f"unknown {what} {name!r}; registered: {', '.join(sorted(registry))}") from None


__all__: list[str] = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "KL_KINDS",
    "POLICY_LOSSES",
    "ROLLOUT_CORRECTIONS",
    "AdvantageEstimator",
    "PolicyLoss",
    "aggregate",
    "get_advantage_estimator",
    "get_policy_loss",
    "group_advantages",
    "gspo_loss",
    "kl_penalty",
    "mismatch_metrics",
    "overlong_penalty",
    "policy_loss",
    "quantiles",
    "rloo_advantages",
    "rollout_weights",
]


def sft_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.0,
    clip_high: float = 0.0,
    dual_clip: float | None = None,
    agg: str = "token-mean",
    global_tokens: float | torch.Tensor | None = None,
    global_seqs: float | torch.Tensor | None = None,
    norm_length: float | None = None,
    rollout_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Weighted negative log-likelihood of the response tokens: ``aggregate(-A * logprobs, mask, agg)``.

    logprobs, mask: (B, T); advantages: (B,) or (B, T), the per-sequence (or per-token) weights. With every
    weight 1 and ``agg="token-mean"`` it is the cross-entropy of supervised fine-tuning, averaged over the
    completion tokens only (the prompt is outside ``mask``); ``engine.sft`` trains with it. ``old_logprobs``, the
    clip ranges and ``rollout_weights`` do not enter (no importance ratio); they are accepted so that the loss
    fits the ``PolicyLoss`` signature. Metrics: ``approx_kl`` is 0 (no old policy), the clip fractions 0.
    """
    del old_logprobs, clip_low, clip_high, dual_clip, rollout_weights
    weights = _as_token_tensor(advantages, logprobs).to(logprobs.dtype)
    loss = aggregate(
        -weights * logprobs, mask, agg, global_tokens=global_tokens, global_seqs=global_seqs, norm_length=norm_length
    )
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    return loss, {"clip_frac_high": zero, "clip_frac_low": zero, "dual_clip_frac": zero, "approx_kl": zero}


POLICY_LOSSES["sft"] = sft_loss
__all__.append("sft_loss")
