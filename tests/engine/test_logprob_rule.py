"""One log-prob rule for generator and learner: log_softmax(logits / T) at the sampling temperature T.

The local backend reports it, the run config hands the learner the sampler's T (a different explicit value is a
config error), and the learner's recomputed old log-probs then agree with the generator's.
Run: .venv/bin/pytest tests/engine/test_logprob_rule.py
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from engine.config import ConfigError, load_config, write_config
from engine.generation import SamplingParams
from engine.generation.local import LocalBackend
from engine.train import learner_config
from learner.config import AlgorithmConfig, LearnerConfig, RolloutBatch
from learner.trainer import Learner

PROMPTS = [[5, 17, 33, 9], [1, 40, 41], [7, 8, 9, 10, 11, 12]]


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=2,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).float().eval()


async def _generated_batch(model: LlamaForCausalLM, temperature: float) -> RolloutBatch:
    params = SamplingParams(max_new_tokens=16, temperature=temperature, top_p=0.95, seed=1)
    async with LocalBackend(copy.deepcopy(model)) as backend:
        completions = [c async for c in backend.generate(PROMPTS, params, n=4)]
    return RolloutBatch(
        prompts=[PROMPTS[c.prompt_index] for c in completions],
        responses=[list(c.token_ids) for c in completions],
        advantages=[(-1.0) ** i for i in range(len(completions))],
        old_logprobs=[list(c.logprobs) for c in completions],
    )


def _recompute_gap(model: LlamaForCausalLM, batch: RolloutBatch, temperature: float) -> float:
    """Mean |learner's old log-prob - generator's| over the batch's tokens, as the learner's step reports it."""
    algo = AlgorithmConfig(temperature=temperature, rollout_correction="tis")
    metrics = Learner(copy.deepcopy(model), LearnerConfig(lr=1e-6, dtype="float32", algorithm=algo)).step(batch)
    return metrics["mismatch_log_ratio_abs"]


async def test_learner_recomputes_the_local_generators_logprobs_at_t_0_7():
    model = tiny_model()
    batch = await _generated_batch(model, 0.7)
    assert sum(len(r) for r in batch.responses) > 100
    assert _recompute_gap(model, batch, 0.7) < 1e-3  # fp32 on both sides: measured ~1e-7
    assert _recompute_gap(model, batch, 1.0) > 1e-2  # scoring at T = 1 (the learner's old default) is far off


def test_the_learner_scores_at_the_sampling_temperature(tmp_path):
    cfg = load_config(None, ["generation.sampling.temperature=0.7"])
    assert cfg.algorithm.temperature == 0.7
    assert learner_config(cfg).algorithm.temperature == 0.7
    # greedy sampling reports the temperature-1 distribution (SGLang treats temperature 0 as top-k 1 at T = 1)
    assert load_config(None, ["generation.sampling.temperature=0"]).algorithm.temperature == 1.0
    same = load_config(None, ["generation.sampling.temperature=0.7", "algorithm.temperature=0.7"])
    assert same.algorithm.temperature == 0.7
    write_config(cfg, tmp_path / "config.yaml")  # the resolved file reads back the same
    assert load_config(tmp_path / "config.yaml").algorithm == cfg.algorithm
    default = load_config("configs/default.yaml")
    assert default.algorithm.temperature == default.generation.sampling.temperature == 0.8


def test_a_learner_temperature_other_than_the_samplers_is_refused():
    with pytest.raises(ConfigError, match=r"algorithm\.temperature=1\.0 but generation\.sampling\.temperature=0\.7"):
        load_config(None, ["generation.sampling.temperature=0.7", "algorithm.temperature=1.0"])
    with pytest.raises(ConfigError, match=r"drop algorithm\.temperature"):
        load_config(None, ["generation.sampling.temperature=0", "algorithm.temperature=0.5"])


def test_a_run_logs_the_mismatch_between_generator_and_learner(tiny_model, tmp_path):
    """engine.run with the local generator at T = 0.7 and TIS: the learner's mismatch metrics reach metrics.jsonl,
    and the two sides' log-probs agree (same weights, both fp32 on CPU)."""
    import asyncio

    from engine.records import read_jsonl
    from engine.train import train

    overrides = [
        f"model.path={tiny_model}",
        f"run.output_dir={tmp_path}",
        "run.name=t",
        "run.steps=1",
        "run.save_every=1",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "generation.sampling.max_new_tokens=12",
        "generation.sampling.temperature=0.7",
        "sandbox.workers=1",
        "data.num_problems=4",
        "algorithm.use_generator_logprobs=false",
        "algorithm.rollout_correction=tis",
    ]
    cfg = load_config("configs/default.yaml", overrides)
    run_dir = asyncio.run(train(cfg, progress=False))
    (row,) = read_jsonl(run_dir / "metrics.jsonl")
    assert row["train/mismatch_log_ratio_abs"] < 1e-3
    assert row["train/mismatch_masked_frac"] == 0.0
    assert row["train/mismatch_ratio_p05"] <= row["train/mismatch_ratio_p50"] <= row["train/mismatch_ratio_p95"]
    assert abs(row["train/mismatch_kl"]) < 1e-5
