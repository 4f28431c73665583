"""The flat decode step (engine/generation/decode_step.py): the same tokens and log-probs as the model's own forward
for every model family it takes, through row drops and both caches it serves, and the model's forward for every
model it does not reproduce. Run: .venv/bin/pytest tests/engine/test_generation_decode_step.py"""

from __future__ import annotations

import pytest
import torch
from decoded import TINY_SHAPE as SHAPE
from decoded import decode_samples
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from engine.generation import SamplingParams
from engine.generation.decode_step import DecodeStep
from engine.generation.local import LocalBackend, LocalConfig
from engine.generation.packed_linear import PackedLinears, available


def family(name: str) -> torch.nn.Module:
    """A tiny random model of each family the step takes, each with what sets it apart from plain Llama."""
    torch.manual_seed(0)
    if name == "llama":  # tied embeddings, grouped-query attention, biases on the projections
        return LlamaForCausalLM(LlamaConfig(**SHAPE, tie_word_embeddings=True, attention_bias=True)).eval()
    if name == "llama-rope-scaled":  # Llama 3's rope scaling, read from the model's own rotary module
        rope = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0)
        return LlamaForCausalLM(LlamaConfig(**SHAPE, rope_parameters=rope | {"original_max_position_embeddings": 32}))
    if name == "mistral":
        return MistralForCausalLM(MistralConfig(**SHAPE, sliding_window=None)).eval()
    if name == "qwen2":  # q/k/v biases
        return Qwen2ForCausalLM(Qwen2Config(**SHAPE)).eval()
    if name == "qwen3":  # RMSNorm per head on q and k, head size not hidden / heads
        return Qwen3ForCausalLM(Qwen3Config(**SHAPE, head_dim=16)).eval()
    raise ValueError(name)


FAMILIES = ["llama", "llama-rope-scaled", "mistral", "qwen2", "qwen3"]
PROMPTS = [[5, 17, 33, 9, 4, 4, 8], [1, 40], [7, 8, 9, 10, 11], [60, 61, 62]]
# Stop ids end rows at different steps (whole prompts finish early): the batch is compacted several times.
PARAMS = SamplingParams(max_new_tokens=24, temperature=1.0, seed=7, stop_token_ids=tuple(range(3, 96, 9)))


def decode(model, params=PARAMS, *, cache="shared", fast_step=True, finished="compact", n=3):
    return decode_samples(model, PROMPTS, params, cache=cache, n=n, fast_step=fast_step, finished=finished)


def assert_same_samples(got, want):
    assert got.keys() == want.keys()
    for key, (tokens, logprobs, reason) in got.items():
        assert (tokens, reason) == (want[key][0], want[key][2]), key
        torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(want[key][1]), rtol=0, atol=1e-5)


class ForwardCounter:
    """Counts the model's forward calls (an instance attribute, not a hook: a hook would turn the step off)."""

    def __init__(self, model):
        self.calls, self._forward = 0, model.forward
        model.forward = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._forward(*args, **kwargs)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize(("cache", "finished"), [("shared", "compact"), ("dynamic", "compact"), ("shared", "mask")])
def test_step_samples_what_the_model_forward_samples(name, cache, finished):
    model = family(name)
    assert DecodeStep.build(model) is not None
    want = decode(model, cache=cache, finished=finished, fast_step=False)
    counter = ForwardCounter(model)
    got = decode(model, cache=cache, finished=finished)
    assert counter.calls == 1  # the prefill; every decode step went through DecodeStep
    assert len({len(v[0]) for v in got.values()}) > 2  # rows really stopped at different steps
    assert_same_samples(got, want)


def test_greedy_long_decode_matches_across_many_positions():
    """Past the rope-scaled model's original context (32 positions) and over 100 cached positions."""
    model = family("llama-rope-scaled")
    params = SamplingParams(max_new_tokens=120, temperature=0.0)
    assert_same_samples(decode(model, params, n=1), decode(model, params, n=1, fast_step=False))


def test_bfloat16_model_matches_its_forward():
    model = family("qwen3").to(torch.bfloat16)
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    got, want = decode(model, params, n=2), decode(model, params, n=2, fast_step=False)
    assert got.keys() == want.keys()
    for key, (tokens, _, _) in got.items():
        assert tokens == want[key][0]


@pytest.mark.skipif(not available(), reason="this torch build has no oneDNN linear kernels")
def test_step_runs_the_linear_layers_on_prepacked_weights():
    model = family("llama")
    packed = PackedLinears()
    packed.refresh(model)
    with packed.active(model):
        got = decode(model)
    assert packed.hits > 0
    assert_same_samples(got, decode(model, fast_step=False))


def with_hook(model):
    model.model.layers[0].mlp.register_forward_hook(lambda module, args, out: out)
    return model


class ScaledLinear(torch.nn.Linear):
    """A Linear subclass with its own forward (as LoRA or quantized layers have): the step must not bypass it."""

    def forward(self, x):
        return super().forward(x) * 2


def with_subclassed_linear(model):
    old = model.model.layers[1].self_attn.o_proj
    new = ScaledLinear(old.in_features, old.out_features, bias=old.bias is not None)
    new.load_state_dict(old.state_dict())
    model.model.layers[1].self_attn.o_proj = new
    return model


def gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=48, n_layer=2, n_head=4, n_positions=256)).eval()


def windowed_qwen2():
    torch.manual_seed(0)
    config = Qwen2Config(**SHAPE, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    return Qwen2ForCausalLM(config).eval()


@pytest.mark.parametrize(
    "build",
    [
        gpt2,
        windowed_qwen2,
        lambda: with_hook(family("llama")),
        lambda: with_subclassed_linear(family("qwen2")),
    ],
    ids=["gpt2", "sliding-window", "forward-hook", "linear-subclass"],
)
def test_models_it_does_not_reproduce_decode_through_their_forward(build):
    model = build()
    assert DecodeStep.build(model) is None
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    want = decode(model, params, fast_step=False, n=2)
    counter = ForwardCounter(model)
    assert decode(model, params, n=2) == want
    assert counter.calls == 6  # prefill + 5 decode steps, all through the model


def test_static_cache_decodes_through_the_model():
    model = family("llama")
    counter = ForwardCounter(model)
    params = SamplingParams(max_new_tokens=6, temperature=0.0, ignore_eos=True)
    decode(model, params, cache="static", n=1)
    assert counter.calls == 6


async def test_backend_option_turns_the_step_off():
    model = family("qwen3")
    params = SamplingParams(max_new_tokens=10, temperature=0.9, seed=3)
    outputs = {}
    for fast in (True, False):
        async with LocalBackend(model, LocalConfig(fast_decode=fast, stop_at_eos=False)) as backend:
            counter = ForwardCounter(model)
            done = [c async for c in backend.generate(PROMPTS, params, n=2)]
            outputs[fast] = sorted((c.prompt_index, c.sample_index, c.token_ids) for c in done)
            calls = counter.calls
            del model.forward
        assert calls == (1 if fast else 10)
    assert outputs[True] == outputs[False]
