"""The local backend on tiny random-initialised Llama models: parity with transformers, log-probs, emission order,
seeds, aborts and in-place weight updates. Run: .venv/bin/pytest tests/engine/test_generation_local.py"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from engine.generation import GenerationError, SamplingParams, available_backends, create_backend
from engine.generation.decoding import Row, candidates, sample_tokens
from engine.generation.local import LocalBackend, LocalConfig

EOS = 2
PROMPTS = [[5, 17, 33, 9], [1, 40, 41], [7, 8, 9, 10, 11, 12], [99]]
LAYOUTS = [
    ("shared", "compact"),
    ("shared", "mask"),
    ("dynamic", "compact"),
    ("dynamic", "mask"),
    ("static", "compact"),
    ("static", "mask"),
]


def tiny_model(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        eos_token_id=EOS,
        bos_token_id=1,
    )
    return LlamaForCausalLM(config).eval()


async def collect(backend, prompts, params, n=1):
    return [c async for c in backend.generate(prompts, params, n=n)]


def by_key(completions):
    return {(c.prompt_index, c.sample_index): c for c in completions}


@pytest.mark.parametrize(("cache", "finished"), LAYOUTS)
async def test_greedy_matches_transformers_generate(cache, finished):
    model = tiny_model()
    params = SamplingParams(max_new_tokens=12, temperature=0.0)
    async with LocalBackend(model, LocalConfig(cache=cache, finished_rows=finished)) as backend:
        # n=2: both samples of a prompt decode from one shared prefill and must match generate's row.
        got = by_key(await collect(backend, PROMPTS, params, n=2))
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in PROMPTS])[:, None]).long()
    ref = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False, eos_token_id=EOS, pad_token_id=0
    )
    for i in range(len(PROMPTS)):
        expected = ref[i, width:].tolist()
        if EOS in expected:
            expected = expected[: expected.index(EOS) + 1]
        for j in range(2):
            assert list(got[(i, j)].token_ids) == expected
            assert got[(i, j)].finish_reason == ("stop" if expected[-1] == EOS else "length")


@pytest.mark.parametrize(("cache", "finished"), LAYOUTS)
async def test_rows_stopping_at_different_steps_match_generate(cache, finished):
    """Many stop ids, so rows stop at different steps and compacting drops rows from the cache several times
    while others go on; every row must still equal generate's greedy row up to its first stop."""
    model = tiny_model()
    stops = tuple(range(3, 128, 4))
    params = SamplingParams(max_new_tokens=24, temperature=0.0, stop_token_ids=stops)
    async with LocalBackend(model, LocalConfig(cache=cache, finished_rows=finished, stop_at_eos=False)) as backend:
        got = by_key(await collect(backend, PROMPTS, params, n=2))
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in PROMPTS])[:, None]).long()
    ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False, pad_token_id=0)
    lengths = set()
    for i in range(len(PROMPTS)):
        row = ref[i, width:].tolist()
        cut = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
        lengths.add(cut)
        for j in range(2):
            assert list(got[(i, j)].token_ids) == row[:cut]
    assert len(lengths) > 1, "the rows should stop at different steps"


def test_full_vocabulary_race_is_the_exponential_race_over_softmax():
    """The no-top-k/top-p path skips normalising; it must pick what argmax(softmax(logits / T) / E) picks with
    E = -log(u) drawn from each row's own generator, as the candidates path does."""
    logits = torch.randn(6, 300, generator=torch.Generator().manual_seed(5)) * 4
    params = SamplingParams(temperature=0.7)

    def rows():
        return [
            Row(prompt_index=0, sample_index=b, prompt=[1], generator=torch.Generator().manual_seed(b))
            for b in range(6)
        ]

    got = sample_tokens(logits, rows(), params)
    probs = torch.softmax(logits / 0.7, dim=-1)
    race = torch.stack([-torch.log(torch.rand(300, generator=r.generator).clamp_min(1e-20)) for r in rows()])
    assert got.tolist() == (probs / race).argmax(dim=-1).tolist()
    # Masked (None) rows draw nothing: the live rows' picks are unchanged.
    some = rows()
    masked = sample_tokens(logits, [None if b % 2 else r for b, r in enumerate(some)], params)
    assert masked.tolist()[::2] == got.tolist()[::2]


async def test_logprobs_equal_teacher_forced_forward():
    model = tiny_model()
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=40, top_p=0.9, seed=3)
    async with LocalBackend(model) as backend:
        completions = await collect(backend, PROMPTS, params, n=2)
    assert len(completions) == 8
    for c in completions:
        full = torch.tensor([PROMPTS[c.prompt_index] + list(c.token_ids)])
        with torch.no_grad():
            logp = torch.log_softmax(model(full).logits[0].float(), dim=-1)
        start = len(PROMPTS[c.prompt_index])
        expected = [logp[start - 1 + t, tok].item() for t, tok in enumerate(c.token_ids)]
        assert c.logprobs == pytest.approx(expected, abs=1e-4)
        assert len(c.logprobs) == len(c.token_ids)


async def test_logprobs_are_those_of_the_sampling_temperature():
    """log_softmax(logits / T) at the sampling temperature, before top-k/top-p truncation (SGLang's default
    `output_token_logprobs`), so a learner dividing its logits by T recomputes them."""
    model = tiny_model()
    params = SamplingParams(max_new_tokens=10, temperature=0.7, top_k=40, top_p=0.9, seed=5)
    async with LocalBackend(model) as backend:
        completions = await collect(backend, PROMPTS, params, n=2)
    gaps = []
    for c in completions:
        full = torch.tensor([PROMPTS[c.prompt_index] + list(c.token_ids)])
        with torch.no_grad():
            logits = model(full).logits[0].float()
        start, picked = len(PROMPTS[c.prompt_index]) - 1, torch.tensor(c.token_ids)
        rows = torch.arange(start, start + len(c.token_ids))
        at_t = torch.log_softmax(logits / 0.7, dim=-1)[rows, picked]
        assert c.logprobs == pytest.approx(at_t.tolist(), abs=1e-4)
        gaps.append((torch.log_softmax(logits, dim=-1)[rows, picked] - at_t).abs().mean().item())
    assert sum(gaps) / len(gaps) > 1e-2  # the temperature-1 values are far off: the check can tell them apart


async def test_first_completion_arrives_while_others_still_decode():
    model = tiny_model()
    greedy = SamplingParams(max_new_tokens=1, temperature=0.0)
    async with LocalBackend(model, LocalConfig(stop_at_eos=False)) as backend:
        first_tokens = {c.prompt_index: c.token_ids[0] for c in await collect(backend, PROMPTS, greedy)}
        stop = first_tokens[0]
        assert any(t != stop for t in first_tokens.values()), "need a prompt that does not stop at step 1"
        params = SamplingParams(max_new_tokens=48, temperature=0.0, stop_token_ids=(stop,))
        arrivals = []
        async for c in backend.generate(PROMPTS, params):
            arrivals.append((time.monotonic(), c))
    first_seen, first = arrivals[0]
    assert first.finish_reason == "stop" and len(first.token_ids) == 1
    # The consumer held the first completion before the decode thread finished the last row.
    assert first_seen < max(c.timings.finished_s for _, c in arrivals)
    assert [len(c.token_ids) for _, c in arrivals] == sorted(len(c.token_ids) for _, c in arrivals)


async def test_ignore_eos_decodes_every_sample_to_max_new_tokens():
    model = tiny_model()
    greedy = SamplingParams(max_new_tokens=1, temperature=0.0)
    async with LocalBackend(model, LocalConfig()) as backend:
        stop = (await collect(backend, PROMPTS, greedy))[0].token_ids[0]
        params = SamplingParams(max_new_tokens=12, temperature=0.0, stop_token_ids=(stop,))
        stopped = await collect(backend, PROMPTS, params)
        fixed = await collect(backend, PROMPTS, dataclasses.replace(params, ignore_eos=True))
    assert any(c.finish_reason == "stop" and len(c.token_ids) < 12 for c in stopped)
    assert [(len(c.token_ids), c.finish_reason) for c in fixed] == [(12, "length")] * len(PROMPTS)


async def test_event_loop_runs_while_decoding():
    model = tiny_model()
    ticks: list[float] = []

    async def ticker():
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0)

    async with LocalBackend(model, LocalConfig(stop_at_eos=False)) as backend:
        task = asyncio.create_task(ticker())
        completions = await collect(backend, PROMPTS, SamplingParams(max_new_tokens=64, temperature=0.0))
        task.cancel()
    start = min(c.timings.submitted_s for c in completions)
    end = max(c.timings.finished_s for c in completions)
    assert sum(start < t < end for t in ticks) > 10


async def test_seeded_sampling_is_reproducible_and_batch_independent():
    model = tiny_model()
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=11)
    async with LocalBackend(model, LocalConfig(finished_rows="compact")) as compact:
        a = by_key(await collect(compact, PROMPTS, params, n=3))
        again = by_key(await collect(compact, PROMPTS, params, n=3))
        other_seed = by_key(await collect(compact, PROMPTS, SamplingParams(max_new_tokens=16, seed=12), n=3))
    async with LocalBackend(model, LocalConfig(finished_rows="mask", max_batch_size=5)) as masked:
        b = by_key(await collect(masked, PROMPTS, params, n=3))
    assert {k: c.token_ids for k, c in a.items()} == {k: c.token_ids for k, c in again.items()}
    assert {k: c.token_ids for k, c in a.items()} == {k: c.token_ids for k, c in b.items()}
    assert {k: c.token_ids for k, c in a.items()} != {k: c.token_ids for k, c in other_seed.items()}
    # Samples of one group differ from each other (different per-row generators).
    assert len({a[(0, j)].token_ids for j in range(3)}) > 1


async def test_weight_update_changes_outputs_and_version(tmp_path):
    model = tiny_model(0)
    params = SamplingParams(max_new_tokens=8, temperature=0.0)
    async with LocalBackend(model, LocalConfig(stop_at_eos=False)) as backend:
        before = await collect(backend, PROMPTS, params)
        assert backend.weight_version == 0 and {c.weight_version for c in before} == {0}
        new_state = tiny_model(1).state_dict()
        assert await backend.update_weights(new_state) == 1
        after = await collect(backend, PROMPTS, params)
        assert {c.weight_version for c in after} == {1}
        assert by_key(before).keys() == by_key(after).keys()
        assert [c.token_ids for c in sorted(before, key=lambda c: c.prompt_index)] != [
            c.token_ids for c in sorted(after, key=lambda c: c.prompt_index)
        ]
        assert torch.equal(model.model.embed_tokens.weight, new_state["model.embed_tokens.weight"])
        save_file({k: v.contiguous() for k, v in tiny_model(0).state_dict().items()}, tmp_path / "model.safetensors")
        assert await backend.update_weights(tmp_path, version=7) == 7
        restored = await collect(backend, PROMPTS, params)
        assert {c.weight_version for c in restored} == {7}
        assert sorted((c.prompt_index, c.token_ids) for c in restored) == sorted(
            (c.prompt_index, c.token_ids) for c in before
        )
        # An update queued ahead of a generate call lands first, and that call reports the new version.
        update = asyncio.create_task(backend.update_weights(new_state))
        await asyncio.sleep(0)
        queued = await collect(backend, PROMPTS, params)
        assert await update == 8 and {c.weight_version for c in queued} == {8}
        assert sorted((c.prompt_index, c.token_ids) for c in queued) == sorted(
            (c.prompt_index, c.token_ids) for c in after
        )
        with pytest.raises(GenerationError, match="not in the generation model"):
            await backend.update_weights({"no.such.weight": torch.zeros(1)})


async def test_abort_and_early_break():
    model = tiny_model()
    params = SamplingParams(max_new_tokens=200, temperature=1.0, seed=0)
    async with LocalBackend(model, LocalConfig(stop_at_eos=False, max_batch_size=2)) as backend:
        got = []
        async for c in backend.generate(PROMPTS, params, n=2):
            got.append(c)
            if len(got) == 1:
                await backend.abort()
        # The first batch of two rows ran to its length before the abort; every later row was cut short.
        assert [c.finish_reason for c in got] == ["length"] * 2 + ["abort"] * 6
        assert all(len(c.token_ids) < 200 for c in got[2:])
        async for _ in backend.generate(PROMPTS, params):
            break
        done = await collect(backend, PROMPTS, SamplingParams(max_new_tokens=3, temperature=0.0))
        assert [c.finish_reason for c in done] == ["length"] * 4
    with pytest.raises(GenerationError, match="closed"):
        await collect(backend, PROMPTS, params)


def test_candidates_top_k_top_p_temperature_by_hand():
    logits = torch.log(torch.tensor([[0.10, 0.5, 0.15, 0.25]]))
    probs, ids = candidates(logits, SamplingParams(top_k=2))
    assert ids.tolist() == [[1, 3]] and probs.tolist()[0] == pytest.approx([0.5 / 0.75, 0.25 / 0.75])
    # Sorted 0.5, 0.25, 0.15, 0.10: the mass before 0.15 is 0.75 >= 0.7, so 0.15 and 0.10 go.
    probs, ids = candidates(logits, SamplingParams(top_p=0.7))
    assert ids.tolist() == [[1, 3, 2, 0]] and probs.tolist()[0] == pytest.approx([0.5, 0.25, 0.0, 0.0])
    probs, ids = candidates(logits, SamplingParams(temperature=0.5))
    hot = torch.tensor([0.10, 0.5, 0.15, 0.25]) ** 2
    assert ids is None and probs[0].tolist() == pytest.approx((hot / hot.sum()).tolist())


async def test_top_k_top_p_sampling_stays_in_the_nucleus():
    model = tiny_model()
    params = SamplingParams(max_new_tokens=1, temperature=1.0, top_k=5, top_p=0.5, seed=0)
    async with LocalBackend(model, LocalConfig(stop_at_eos=False)) as backend:
        got = await collect(backend, [PROMPTS[0]], params, n=64)
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([PROMPTS[0]])).logits[0, -1], dim=-1)
    top = torch.argsort(probs, descending=True)[:5].tolist()
    mass = torch.cumsum(probs[top], 0) - probs[top]
    allowed = {t for t, m in zip(top, mass.tolist(), strict=True) if m < 0.5 * probs[top].sum().item()}
    assert {c.token_ids[0] for c in got} <= allowed


def test_registry_and_options_errors():
    assert available_backends() == ["local", "openai", "sglang"]
    with pytest.raises(ValueError, match=r"valid: \['local', 'openai', 'sglang'\]"):
        create_backend("vllm")
    with pytest.raises(ValueError, match="max_batch_size"):
        create_backend("local", {"batch": 4}, model=tiny_model())
    with pytest.raises(GenerationError, match="model="):
        create_backend("local", {})
    backend = create_backend("local", {"max_batch_size": 4}, model=tiny_model())
    assert isinstance(backend, LocalBackend) and backend.config.max_batch_size == 4
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match=r"\['shared', 'dynamic', 'static'\]"):
        LocalConfig(cache="paged")
    with pytest.raises(ValueError, match=r"\['compact', 'mask'\]"):
        LocalConfig(finished_rows="drop")


async def test_torch_threads_hold_for_the_call_and_are_put_back_after():
    """torch's thread count is process wide: a decode on 1 thread must not leave the learner on 1 thread."""
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model = tiny_model()
        seen = []
        model.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
        async with LocalBackend(model, LocalConfig(torch_threads=1)) as backend:
            await collect(backend, PROMPTS, SamplingParams(max_new_tokens=3, temperature=0.0))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        assert await asyncio.to_thread(torch.get_num_threads) == 2
    finally:
        torch.set_num_threads(original)
