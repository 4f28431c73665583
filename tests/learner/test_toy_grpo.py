"""GRPO end to end on a toy task: a tiny random Llama learns to emit a target token, and the reward rises."""

from __future__ import annotations

import torch

from learner.config import AlgorithmConfig, LearnerConfig, RolloutBatch
from learner.trainer import Learner

TARGET = 5
VOCAB = 16
PROMPTS = [[1, 2], [3, 4], [6, 7], [8, 9]]
GROUP = 8
RESPONSE_LEN = 4


@torch.no_grad()
def _sample(model, generator: torch.Generator) -> tuple[list[list[int]], list[list[float]]]:
    """Plain-torch ancestral sampling at temperature 1; returns responses and their per-token log-probs."""
    ids = torch.tensor([p for p in PROMPTS for _ in range(GROUP)])
    logprobs = []
    for _ in range(RESPONSE_LEN):
        logp = torch.log_softmax(model(input_ids=ids).logits[:, -1].float(), dim=-1)
        token = torch.multinomial(logp.exp(), 1, generator=generator)
        logprobs.append(logp.gather(-1, token))
        ids = torch.cat([ids, token], dim=1)
    return ids[:, 2:].tolist(), torch.cat(logprobs, dim=1).tolist()


def test_grpo_raises_the_reward_of_a_tiny_model(make_model):
    model = make_model(seed=3, layers=2, hidden=32, vocab=VOCAB)
    config = LearnerConfig(lr=3e-2, algorithm=AlgorithmConfig(clip_high=0.28, use_generator_logprobs=True))
    learner = Learner(model, config)
    generator = torch.Generator().manual_seed(0)
    mean_rewards = []
    for _ in range(8):
        model.eval()
        responses, logprobs = _sample(model, generator)
        rewards = [sum(t == TARGET for t in r) / RESPONSE_LEN for r in responses]
        mean_rewards.append(sum(rewards) / len(rewards))
        batch = RolloutBatch(
            prompts=[p for p in PROMPTS for _ in range(GROUP)],
            responses=responses,
            rewards=rewards,
            group_ids=[g for g in range(len(PROMPTS)) for _ in range(GROUP)],
            old_logprobs=logprobs,
        )
        metrics = learner.step(batch)
        assert abs(metrics["approx_kl"]) < 0.5
    start, end = sum(mean_rewards[:2]) / 2, sum(mean_rewards[-2:]) / 2
    assert start < 0.15, mean_rewards
    assert end > start + 0.4, mean_rewards
