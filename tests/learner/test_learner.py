"""Learner.step on tiny random Llamas: the gradient is the hand-written objective's, independent of the split."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from learner.config import AlgorithmConfig, LearnerConfig, RolloutBatch
from learner.trainer import PHASES, Learner, make_optimizer


def _capture_grads(learner: Learner) -> list[list[torch.Tensor]]:
    """Record the gradients the optimizer sees at each of its steps."""
    seen: list[list[torch.Tensor]] = []
    learner.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append([p.grad.detach().clone() for p in learner.model.parameters()])
    )
    return seen


def _seq_logprobs(model, prompt, response):
    ids = torch.tensor([[*prompt, *response]])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits, -1).gather(-1, ids[0, len(prompt) :, None]).squeeze(-1)


def _batch(make_sequences, n=6, seed=0, group=1, **kw):
    """n sequences; with ``group`` > 1, consecutive runs of ``group`` share a prompt (as GRPO samples do)."""
    prompts, responses = make_sequences(n, seed=seed)
    prompts = [prompts[i - i % group] for i in range(n)]
    advantages = [(-1.0) ** i * (1 + i / 4) for i in range(n)]
    return RolloutBatch(prompts=prompts, responses=responses, advantages=advantages, **kw)


# On-policy with one update the ratio is 1 and d(-A * ratio) = -A * d(logp): the gradient is that of
# -sum_i A_i * w_i(sum_t logp_it) for each aggregation's weights.
OBJECTIVES = {
    "token-mean": lambda lps, adv, n_tok: -sum(a * lp.sum() for a, lp in zip(adv, lps, strict=True)) / n_tok,
    "seq-mean-token-mean": lambda lps, adv, _: -sum(a * lp.mean() for a, lp in zip(adv, lps, strict=True)) / len(adv),
    "seq-mean-token-sum": lambda lps, adv, _: -sum(a * lp.sum() for a, lp in zip(adv, lps, strict=True)) / len(adv),
    "seq-mean-token-sum-norm": lambda lps, adv, _: -sum(a * lp.sum() for a, lp in zip(adv, lps, strict=True)) / 16,
}


@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("agg", list(OBJECTIVES))
def test_gradient_is_the_objective_gradient(make_model, make_sequences, agg, group):
    model = make_model()
    reference = copy.deepcopy(model)
    batch = _batch(make_sequences, group=group)
    algo = AlgorithmConfig(loss_agg=agg, norm_length=16)
    learner = Learner(model, LearnerConfig(lr=1e-3, grad_clip=0.0, micro_batch_tokens=24, algorithm=algo))
    grads = _capture_grads(learner)
    metrics = learner.step(batch)
    lps = [_seq_logprobs(reference, p, r) for p, r in zip(batch.prompts, batch.responses, strict=True)]
    n_tok = sum(len(r) for r in batch.responses)
    objective = OBJECTIVES[agg](lps, batch.advantages, n_tok)
    objective.backward()
    for got, p in zip(grads[0], reference.parameters(), strict=True):
        torch.testing.assert_close(got, p.grad, rtol=1e-5, atol=1e-6)
    assert metrics["loss"] == pytest.approx(
        OBJECTIVES[agg]([torch.ones_like(lp) for lp in lps], batch.advantages, n_tok).item()
    )
    expected_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in reference.parameters()]))
    assert metrics["grad_norm"] == pytest.approx(expected_norm.item(), rel=1e-5)


def test_micro_batch_split_does_not_change_the_gradient(make_model, make_sequences):
    """Micro-batch sizes, and sharing each group's prompt or not, change the packing but not the gradient."""
    batch = _batch(make_sequences, n=8, seed=4, group=4)
    runs = []
    for tokens, share in ((12, True), (40, True), (10_000, True), (10_000, False)):
        learner = Learner(make_model(), LearnerConfig(lr=1e-3, micro_batch_tokens=tokens, share_prompts=share))
        grads = _capture_grads(learner)
        learner.step(batch)
        runs.append(grads[0])
    for other in runs[1:]:
        for a, b in zip(runs[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_generator_logprobs_drive_the_ratio(make_model, make_sequences):
    model = make_model()
    batch = _batch(make_sequences, n=5, seed=2)
    with torch.no_grad():
        current = [_seq_logprobs(model, p, r) for p, r in zip(batch.prompts, batch.responses, strict=True)]
    # old = current - 0.5: every ratio is e^0.5 ~ 1.65 > 1.2, so exactly the tokens with A > 0 are clipped high
    shifted = RolloutBatch(
        prompts=batch.prompts,
        responses=batch.responses,
        advantages=batch.advantages,
        old_logprobs=[(lp - 0.5).tolist() for lp in current],
    )
    config = LearnerConfig(lr=1e-3, algorithm=AlgorithmConfig(use_generator_logprobs=True))
    metrics = Learner(model, config).step(shifted)
    n_tok = sum(len(r) for r in batch.responses)
    positive = sum(len(r) for r, a in zip(batch.responses, batch.advantages, strict=True) if a > 0)
    assert metrics["clip_frac_high"] == pytest.approx(positive / n_tok, abs=1e-7)  # fp32 sums
    assert metrics["clip_frac_low"] == 0.0
    assert metrics["approx_kl"] == pytest.approx(-0.5, abs=1e-5)
    expected_loss = sum(
        -a * len(r) * (1.2 if a > 0 else math.exp(0.5)) for r, a in zip(batch.responses, batch.advantages, strict=True)
    )
    assert metrics["loss"] == pytest.approx(expected_loss / n_tok, rel=1e-5)
    with pytest.raises(ValueError, match="carries no old_logprobs"):
        Learner(make_model(), config).step(batch)


# Behaviour log-probs = the learner's own minus log(4) on sequence 0 (rho = 4 on each of its tokens) and equal on
# the others (rho = 1). On-policy with one update the per-token loss is -A * w, so with token-mean the loss is
# -sum_i A_i * w_i * n_i / N for each mode's weight w_0 of sequence 0 (w = 1 elsewhere).
CORRECTIONS = {
    "tis": ({"tis_cap": 2.0}, lambda n0: 2.0),
    "mis": ({"mis_bounds": (0.5, 2.0)}, lambda n0: 0.0),  # product 4 ** n0 > 2: dropped
    "geo_mask": ({"geo_mask_bounds": (0.5, 5.0)}, lambda n0: 1.0),  # geometric mean 4 is inside: kept, weight 1
    "decoupled": ({"decoupled_cap": 5.0}, lambda n0: 4.0),
}


@pytest.mark.parametrize("mode", list(CORRECTIONS))
def test_rollout_correction_weights_the_step(make_model, make_sequences, mode):
    model = make_model()
    batch = _batch(make_sequences, n=5, seed=3, group=1)
    with torch.no_grad():
        own = [_seq_logprobs(model, p, r) for p, r in zip(batch.prompts, batch.responses, strict=True)]
    behaviour = [(lp - math.log(4.0) if i == 0 else lp).tolist() for i, lp in enumerate(own)]
    shifted = RolloutBatch(
        prompts=batch.prompts, responses=batch.responses, advantages=batch.advantages, old_logprobs=behaviour
    )
    kw, weight = CORRECTIONS[mode]
    algo = AlgorithmConfig(rollout_correction=mode, **kw)
    metrics = Learner(model, LearnerConfig(lr=1e-3, micro_batch_tokens=24, algorithm=algo)).step(shifted)
    lengths = [len(r) for r in batch.responses]
    n_tok, n0 = sum(lengths), lengths[0]
    w = [weight(n0)] + [1.0] * (len(lengths) - 1)
    expected = -sum(a * wi * n for a, wi, n in zip(batch.advantages, w, lengths, strict=True)) / n_tok
    assert metrics["loss"] == pytest.approx(expected, abs=1e-6)  # fp32 log-probs: the others' rho is 1 +- 1e-6
    # the metrics see every token: n0 of them at rho = 4, the rest at 1
    assert metrics["mismatch_ratio_max"] == pytest.approx(4.0, rel=1e-5)
    assert metrics["mismatch_ratio_p50"] == pytest.approx(1.0, rel=1e-5)
    assert metrics["mismatch_kl_k1"] == pytest.approx(-math.log(4.0) * n0 / n_tok, rel=1e-5)
    assert metrics["mismatch_kl"] == pytest.approx((3.0 - math.log(4.0)) * n0 / n_tok, rel=1e-5)
    assert metrics["mismatch_masked_frac"] == pytest.approx(n0 / n_tok if weight(n0) == 0 else 0.0, abs=1e-7)
    assert metrics["mismatch_weight_mean"] == pytest.approx(
        sum(wi * n for wi, n in zip(w, lengths, strict=True)) / n_tok, rel=1e-5
    )


def test_rollout_correction_without_mismatch_changes_nothing(make_model, make_sequences):
    """Generator log-probs equal to the learner's: weights 1, and the gradient of the uncorrected step."""
    batch = _batch(make_sequences, n=6, seed=8, group=3)
    model = make_model()
    with torch.no_grad():
        own = [_seq_logprobs(model, p, r).tolist() for p, r in zip(batch.prompts, batch.responses, strict=True)]
    same = RolloutBatch(prompts=batch.prompts, responses=batch.responses, advantages=batch.advantages, old_logprobs=own)
    runs = []
    for mode in ("none", "tis"):
        learner = Learner(
            copy.deepcopy(model), LearnerConfig(lr=1e-3, algorithm=AlgorithmConfig(rollout_correction=mode))
        )
        grads = _capture_grads(learner)
        runs.append((learner.step(same), grads[0]))
    (plain, plain_grads), (tis, tis_grads) = runs
    assert "mismatch_kl" not in plain
    assert tis["mismatch_log_ratio_abs"] < 1e-6 and tis["mismatch_masked_frac"] == 0.0
    assert tis["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    for a, b in zip(plain_grads, tis_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="needs the generator's log-probs"):
        Learner(make_model(), LearnerConfig(algorithm=AlgorithmConfig(rollout_correction="tis"))).step(batch)


def test_kl_against_identical_reference_starts_at_zero(make_model, make_sequences):
    model = make_model()
    config = LearnerConfig(lr=1e-2, algorithm=AlgorithmConfig(kl_coef=0.5, kl_kind="k3"))
    learner = Learner(model, config, ref_model=copy.deepcopy(model))
    batch = _batch(make_sequences)
    first = learner.step(batch)
    assert first["kl"] == pytest.approx(0.0, abs=1e-9)
    assert first["loss"] == pytest.approx(first["pg_loss"], abs=1e-9)
    second = learner.step(batch)
    assert second["kl"] > 1e-4
    assert second["loss"] == pytest.approx(second["pg_loss"] + 0.5 * second["kl"], rel=1e-6)
    with pytest.raises(ValueError, match="needs a reference model"):
        Learner(make_model(), config)


def test_epochs_mini_batches_and_warmup(make_model, make_sequences):
    config = LearnerConfig(lr=1e-3, warmup_steps=3, ppo_epochs=2, mini_batches=2)
    learner = Learner(make_model(), config)
    grads = _capture_grads(learner)
    batch = _batch(make_sequences)
    lrs = [learner.step(batch)["lr"] for _ in range(2)]
    assert len(grads) == 8  # 2 steps x 2 epochs x 2 mini-batches
    assert lrs == pytest.approx([1e-3 / 4, 1e-3])  # lr at the start of each step; 4 updates per step
    assert learner.scheduler.get_last_lr()[0] == pytest.approx(1e-3)


def test_advantages_from_rewards_and_groups(make_model, make_sequences):
    prompts, responses = make_sequences(4, seed=5)
    batch = RolloutBatch(prompts=prompts, responses=responses, rewards=[1.0, 0.0, 2.0, 2.0], group_ids=[0, 0, 1, 1])
    config = LearnerConfig(lr=1e-3, algorithm=AlgorithmConfig(advantage_estimator="dr_grpo"))
    metrics = Learner(make_model(), config).step(batch)
    # Dr. GRPO advantages: [0.5, -0.5, 0, 0]; token-mean on-policy loss is -sum(A * len) / N
    n_tok = sum(len(r) for r in responses)
    assert metrics["loss"] == pytest.approx(-(0.5 * len(responses[0]) - 0.5 * len(responses[1])) / n_tok, abs=1e-6)


def test_config_and_batch_validation():
    with pytest.raises(KeyError, match="gspo, ppo_clip"):
        AlgorithmConfig(policy_loss="ppo")
    with pytest.raises(ValueError, match="loss_agg"):
        AlgorithmConfig(loss_agg="sum")
    with pytest.raises(ValueError, match="valid: none, tis, mis, geo_mask, decoupled"):
        AlgorithmConfig(rollout_correction="is")
    with pytest.raises(ValueError, match=r"set algorithm\.use_generator_logprobs=false"):
        AlgorithmConfig(rollout_correction="tis", use_generator_logprobs=True)
    for bad in ({"tis_cap": 0.5}, {"tis_cap": float("nan")}, {"decoupled_cap": 1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            AlgorithmConfig(rollout_correction="tis", **bad)
    for bounds in ((1.5, 2.0), (0.5, 0.9), (0.0, 2.0), (0.5, float("inf"))):
        with pytest.raises(ValueError, match=r"mis_bounds must be \[lo, hi\] with 0 < lo <= 1 <= hi"):
            AlgorithmConfig(mis_bounds=bounds)
    with pytest.raises(ValueError, match="geo_mask_bounds"):
        AlgorithmConfig(geo_mask_bounds=(1.01, 0.99))
    for bad_t in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match=r"algorithm\.temperature must be a finite number > 0"):
            AlgorithmConfig(temperature=bad_t)
    with pytest.raises(ValueError, match="rewards together with group_ids"):
        RolloutBatch(prompts=[[1]], responses=[[2]], rewards=[1.0])
    with pytest.raises(ValueError, match=r"old_logprobs\[0\] has 2 values for 1"):
        RolloutBatch(prompts=[[1]], responses=[[2]], advantages=[1.0], old_logprobs=[[0.1, 0.2]])


def test_gradient_checkpointing_keeps_the_gradient(make_model, make_sequences):
    batch = _batch(make_sequences, n=4, seed=6)
    runs = []
    for checkpointing in (False, True):
        learner = Learner(make_model(), LearnerConfig(lr=1e-3, gradient_checkpointing=checkpointing))
        grads = _capture_grads(learner)
        learner.step(batch)
        runs.append(grads[0])
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_bf16_compute_keeps_fp32_master_weights(make_model, make_sequences):
    batch = _batch(make_sequences, n=4, seed=7)
    fp32 = Learner(make_model(), LearnerConfig(lr=1e-3)).step(batch)
    learner = Learner(make_model(), LearnerConfig(lr=1e-3, dtype="bfloat16"))
    bf16 = learner.step(batch)
    assert all(p.dtype == torch.float32 for p in learner.model.parameters())
    # bf16 matmuls (~3 significant digits) move these by ~1e-4 relative here; fp32 would agree to ~1e-7
    assert bf16["entropy"] == pytest.approx(fp32["entropy"], rel=1e-3)
    assert bf16["grad_norm"] == pytest.approx(fp32["grad_norm"], rel=5e-3)
    assert bf16["grad_norm"] != fp32["grad_norm"]  # the bf16 path really ran


def test_the_package_exports_what_it_lists():
    import learner

    assert all(getattr(learner, name) is not None for name in learner.__all__)


def test_fused_adamw_updates_the_weights_as_the_per_tensor_loop(make_model, make_sequences):
    """One process: the learner steps with torch's fused AdamW; the weights after two steps (warmup schedule,
    clipping, weight decay) equal those of the same Learner stepping with the per-tensor loop."""
    model = make_model()
    loop_model, start_model = copy.deepcopy(model), copy.deepcopy(model)
    config = LearnerConfig(lr=1e-2, weight_decay=0.1, warmup_steps=1, grad_clip=0.5, micro_batch_tokens=24)
    fused = Learner(model, config)
    loop = Learner(loop_model, config)
    assert fused.optimizer.defaults["fused"] is True
    loop.optimizer = torch.optim.AdamW(
        list(loop_model.parameters()), lr=config.lr, weight_decay=config.weight_decay, foreach=False
    )
    loop.scheduler = torch.optim.lr_scheduler.LambdaLR(loop.optimizer, lambda s: min(1.0, (s + 1) / 2))
    assert make_optimizer(list(start_model.parameters()), config, fused=False).defaults["fused"] is None
    for seed in (0, 1):
        batch = _batch(make_sequences, seed=seed)
        metrics = fused.step(batch)
        loop.step(batch)
        assert metrics["time_forward_backward_s"] > 0 and metrics["time_optimizer_s"] > 0
        assert metrics["time_prepare_s"] >= 0 and sum(metrics[f"time_{p}_s"] for p in PHASES) <= metrics["step_s"]
    pairs = zip(model.named_parameters(), loop_model.parameters(), start_model.parameters(), strict=True)
    for (name, a), b, s in pairs:
        assert not torch.equal(a, s), f"{name} did not move"
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name} differs between fused and loop AdamW")
