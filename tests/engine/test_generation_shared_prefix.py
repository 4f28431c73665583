"""The shared-prefix decode attention: equal to plain attention over each row's own copy of its prompt, through
row drops and prompt drops, and the fallback for models it does not cover. Run:
.venv/bin/pytest tests/engine/test_generation_shared_prefix.py"""

from __future__ import annotations

import types

import pytest
import torch
from decoded import TINY_SHAPE, decode_samples
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from engine.generation import SamplingParams
from engine.generation.shared_prefix import (
    ATTENTION,
    SharedPrefix,
    decoding_attention,
    shared_prefix_attention,
    supports_shared_prefix,
)


def reference_attention(q, row_keys, row_values, row_valid, scaling):
    """Plain softmax attention per row over its own (prompt + response) keys. q (B, H, 1, D); keys (B, K, L, D)."""
    rep = q.shape[1] // row_keys.shape[1]
    k = row_keys.repeat_interleave(rep, dim=1)
    v = row_values.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scaling  # (B, H, 1, L)
    scores = scores.masked_fill(~row_valid[:, None, None, :], float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)  # (B, 1, H, D)


def random_case(prompt_lens, owner, kv_heads=2, heads=6, dim=8, response=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prompts, width = len(prompt_lens), max(prompt_lens)
    keys = torch.randn(prompts, kv_heads, width, dim, generator=gen)
    values = torch.randn(prompts, kv_heads, width, dim, generator=gen)
    mask = torch.zeros(prompts, width, dtype=torch.long)
    for p, n in enumerate(prompt_lens):
        mask[p, width - n :] = 1  # left padding, as the prefill lays prompts out
    rows = len(owner)
    q = torch.randn(rows, heads, 1, dim, generator=gen)
    rk = torch.randn(rows, kv_heads, response, dim, generator=gen)
    rv = torch.randn(rows, kv_heads, response, dim, generator=gen)
    return keys, values, mask, q, rk, rv


def expected(keys, values, mask, owner, q, rk, rv, scaling):
    index = torch.tensor(owner)
    row_keys = torch.cat([keys[index], rk], dim=2)
    row_values = torch.cat([values[index], rv], dim=2)
    valid = torch.cat([mask[index].bool(), torch.ones(len(owner), rk.shape[2], dtype=torch.bool)], dim=1)
    return reference_attention(q, row_keys, row_values, valid, scaling)


@pytest.mark.parametrize(
    ("prompt_lens", "owner", "dense"),
    [
        ([7], [0, 0, 0, 0], True),  # one prompt, four samples
        ([3, 9, 5], [0, 0, 0, 1, 1, 1, 2, 2, 2], True),  # left padding, every prompt with all its rows
        ([3, 9, 5], [0, 0, 1, 1, 1, 2], False),  # uneven groups: the scatter/gather path
        ([4, 4], [0, 1], True),  # one row per prompt: nothing shared
    ],
)
def test_attention_equals_plain_attention_over_repeated_prompts(prompt_lens, owner, dense):
    keys, values, mask, q, rk, rv = random_case(prompt_lens, owner)
    layer = types.SimpleNamespace(layer_idx=1)
    shared = SharedPrefix.build([keys * 0, keys], [values * 0, values], mask, owner)  # layer 1 is the real one
    assert shared.dense is dense
    got, weights = shared_prefix_attention(layer, q, rk, rv, None, scaling=0.35, shared_prefix=shared)
    assert weights is None and got.shape == (len(owner), 1, q.shape[1], q.shape[3])
    torch.testing.assert_close(got, expected(keys, values, mask, owner, q, rk, rv, 0.35), rtol=1e-5, atol=1e-6)


def test_dropping_rows_and_whole_prompts_keeps_the_attention_of_the_rest():
    prompt_lens, owner = [3, 9, 5], [0, 0, 1, 1, 1, 2]
    keys, values, mask, q, rk, rv = random_case(prompt_lens, owner, seed=1)
    shared = SharedPrefix.build([keys], [values], mask, owner)
    keep = [1, 4, 5]  # prompt 0 keeps one row, prompt 1 one, prompt 2 one
    smaller = shared.select(keep)
    assert smaller.keys[0].data_ptr() == keys.data_ptr()  # every prompt still has a row: no copy
    assert smaller.dense  # one row each, in prompt order
    got, _ = shared_prefix_attention(
        types.SimpleNamespace(layer_idx=0), q[keep], rk[keep], rv[keep], None, scaling=0.5, shared_prefix=smaller
    )
    want = expected(keys, values, mask, [owner[b] for b in keep], q[keep], rk[keep], rv[keep], 0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)

    keep = [2, 3]  # only prompt 1 is left: prompts 0 and 2 leave the cache
    smaller = shared.select(keep)
    assert smaller.keys[0].shape[0] == 1 and smaller.prompt.tolist() == [0, 0] and smaller.slot.tolist() == [0, 1]
    got, _ = shared_prefix_attention(
        types.SimpleNamespace(layer_idx=0), q[keep], rk[keep], rv[keep], None, scaling=0.5, shared_prefix=smaller
    )
    want = expected(keys, values, mask, [owner[b] for b in keep], q[keep], rk[keep], rv[keep], 0.5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_attention_refuses_calls_outside_decoding():
    keys, values, mask, q, rk, rv = random_case([4], [0, 0])
    layer = types.SimpleNamespace(layer_idx=0)
    with pytest.raises(RuntimeError, match="shared_prefix"):
        shared_prefix_attention(layer, q, rk, rv, None, scaling=1.0)
    shared = SharedPrefix.build([keys], [values], mask, [0, 0])
    with pytest.raises(RuntimeError, match="one token per row"):
        shared_prefix_attention(layer, q.expand(2, 6, 3, 8), rk, rv, None, scaling=1.0, shared_prefix=shared)


def tiny_llama(**overrides) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(**TINY_SHAPE, eos_token_id=None, **overrides)
    return LlamaForCausalLM(config).eval()


def decode(model, prompts, params, cache, n=3, fast_step=True):
    return decode_samples(model, prompts, params, cache=cache, n=n, fast_step=fast_step)


PROMPTS = [[5, 17, 33, 9, 4, 4, 8], [1, 40], [7, 8, 9, 10, 11]]


@pytest.mark.parametrize("fast_step", [False, True], ids=["model-forward", "decode-step"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_sampled_rows_equal_the_repeated_cache_through_row_and_prompt_drops(attn, fast_step):
    """Stop ids end rows at different steps (whole prompts finish early), so the shared cache drops rows and
    prompts several times; every row's tokens and log-probs must equal decoding with a per-row prompt copy.
    Both through the model's forward (the attention interface) and through the flat decode step."""
    model = tiny_llama(attn_implementation=attn)
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=7, stop_token_ids=tuple(range(3, 96, 9)))
    shared = decode(model, PROMPTS, params, "shared", fast_step=fast_step)
    dynamic = decode(model, PROMPTS, params, "dynamic", fast_step=False)
    assert len({len(v[0]) for v in shared.values()}) > 2  # rows really stopped at different steps
    assert shared.keys() == dynamic.keys()
    for key, (tokens, logprobs, reason) in shared.items():
        assert (tokens, reason) == (dynamic[key][0], dynamic[key][2])
        torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(dynamic[key][1]), rtol=0, atol=1e-5)
    assert model.config._attn_implementation == attn  # restored after decoding


def test_models_it_does_not_reproduce_decode_with_the_repeated_cache():
    assert supports_shared_prefix(tiny_llama())
    assert not supports_shared_prefix(tiny_llama(attn_implementation="flex_attention"))
    torch.manual_seed(0)
    config = Qwen2Config(**TINY_SHAPE, use_sliding_window=True, sliding_window=4, max_window_layers=0)
    windowed = Qwen2ForCausalLM(config).eval()
    assert not supports_shared_prefix(windowed)
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    assert decode(windowed, PROMPTS, params, "shared", n=2) == decode(windowed, PROMPTS, params, "dynamic", n=2)


def test_attention_is_restored_when_decoding_fails():
    model = tiny_llama()
    with pytest.raises(ZeroDivisionError), decoding_attention(model):
        assert model.config._attn_implementation == ATTENTION
        _ = 1 / 0
    assert model.config._attn_implementation == "sdpa"
