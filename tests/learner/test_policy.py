"""Packed log-probs of response tokens equal the per-sequence log-probs of a plain forward."""

from __future__ import annotations

import pytest
import torch

from learner.policy import pack, response_logprobs


def _plain_logprobs(model, prompt, response, temperature=1.0):
    ids = torch.tensor([[*prompt, *response]])
    logits = model(input_ids=ids, use_cache=False).logits[0].float() / temperature
    pred = logits[len(prompt) - 1 : len(prompt) - 1 + len(response)]
    return torch.log_softmax(pred, dim=-1).gather(-1, ids[0, len(prompt) :, None]).squeeze(-1)


@torch.no_grad()
def _check_against_plain(model, mb, prompts, responses, temperature):
    """Every response's packed log-probs equal those of a plain forward over its sequence alone."""
    out = response_logprobs(model, mb, temperature=temperature, with_entropy=True)
    padded, mask = mb.unpack(out.logprobs)
    for row, i in enumerate(mb.indices):
        expected = _plain_logprobs(model, prompts[i], responses[i], temperature)
        n = len(responses[i])
        torch.testing.assert_close(padded[row, :n], expected, rtol=0, atol=2e-6)
        assert mask[row].sum().item() == n
    return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_packed_equals_unpacked(model, make_sequences, temperature):
    prompts, responses = make_sequences(9, seed=1)
    micro = pack(prompts, responses, max_tokens=40)
    assert sorted(i for mb in micro for i in mb.indices) == list(range(9))
    assert len(micro) > 1 and all(mb.num_tokens <= 40 for mb in micro)
    for mb in micro:
        _check_against_plain(model, mb, prompts, responses, temperature)


def test_entropy_matches_full_softmax(model, make_sequences):
    prompts, responses = make_sequences(3, seed=2)
    (mb,) = pack(prompts, responses, max_tokens=1000)
    with torch.no_grad():
        out = response_logprobs(model, mb, with_entropy=True)
        i = mb.indices[0]
        ids = torch.tensor([[*prompts[i], *responses[i]]])
        logits = model(input_ids=ids).logits[0, len(prompts[i]) - 1 : -1]
        p = torch.softmax(logits, -1)
        expected = -(p * torch.log_softmax(logits, -1)).sum(-1)
    n = len(responses[i])
    first = (mb.seq_index == 0).nonzero().squeeze(-1)
    torch.testing.assert_close(out.entropy[first], expected[:n], rtol=0, atol=2e-6)


def test_gradients_through_packing_match(model, make_sequences):
    prompts, responses = make_sequences(4, seed=3)
    (mb,) = pack(prompts, responses, max_tokens=1000)
    response_logprobs(model, mb).logprobs.sum().backward()
    packed_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    sum(_plain_logprobs(model, p, r).sum() for p, r in zip(prompts, responses, strict=True)).backward()
    for a, p in zip(packed_grad, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5)


def test_pack_rejects_empty_and_mismatched():
    with pytest.raises(ValueError, match="empty prompt or response"):
        pack([[1]], [[]], max_tokens=8)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        pack([[1], [2]], [[3]], max_tokens=8)


def test_oversized_sequence_gets_its_own_micro_batch():
    micro = pack([[1] * 10, [2]], [[3] * 5, [4]], max_tokens=6)
    assert sorted(mb.indices for mb in micro) == [(0,), (1,)]
    assert max(mb.num_tokens for mb in micro) == 14


def _grouped(seed: int, groups: int = 3, size: int = 4) -> tuple[list[list[int]], list[list[int]]]:
    """GRPO-shaped sequences: ``groups`` prompts, ``size`` responses each (one of length 1), groups interleaved."""
    g = torch.Generator().manual_seed(seed)
    heads = [
        torch.randint(0, 97, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()
        for _ in range(groups)
    ]
    prompts, responses = [], []
    for k in range(size):
        for head in heads:
            length = 1 if k == 0 else int(torch.randint(2, 10, (1,), generator=g))
            prompts.append(list(head))
            responses.append(torch.randint(0, 97, (length,), generator=g).tolist())
    return prompts, responses


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prompts_equal_unpacked(make_model, attention, temperature):
    model = make_model(vocab=97)
    model.config._attn_implementation = attention
    prompts, responses = _grouped(seed=4)
    micro = pack(prompts, responses, max_tokens=1000, share_prompts=True)
    (mb,) = micro
    assert mb.shares_prompts and sorted(mb.indices) == list(range(len(prompts)))
    # each prompt once: P + sum(len(response) - 1) per group
    heads = {tuple(p) for p in prompts}
    assert mb.num_tokens == sum(len(h) for h in heads) + sum(len(r) - 1 for r in responses)
    out = _check_against_plain(model, mb, prompts, responses, temperature)
    with torch.no_grad():
        unshared = {}
        for ub in pack(prompts, responses, max_tokens=1000):
            lp = response_logprobs(model, ub, temperature=temperature, with_entropy=True)
            for row, i in enumerate(ub.indices):
                unshared[i] = lp.entropy[ub.seq_index == row]
        for row, i in enumerate(mb.indices):
            torch.testing.assert_close(out.entropy[mb.seq_index == row], unshared[i], rtol=0, atol=2e-5)


def test_shared_prompts_gradients_match(make_model):
    model = make_model(vocab=97)
    prompts, responses = _grouped(seed=5, groups=2, size=3)
    (mb,) = pack(prompts, responses, max_tokens=1000, share_prompts=True)
    weights = torch.linspace(-1.0, 1.0, mb.num_response_tokens)  # a per-token weighting, as the loss applies
    (response_logprobs(model, mb).logprobs * weights).sum().backward()
    shared_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    total = 0.0
    for row, i in enumerate(mb.indices):
        total = total + (_plain_logprobs(model, prompts[i], responses[i]) * weights[mb.seq_index == row]).sum()
    total.backward()
    for a, p in zip(shared_grad, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-5)


def test_shared_prompt_unit_is_split_at_max_tokens():
    prompts, responses = [[1] * 6] * 4, [[2] * 5] * 4  # one unit would be 6 + 4 * 4 = 22 tokens
    micro = pack(prompts, responses, max_tokens=14, share_prompts=True)
    assert sorted(mb.indices for mb in micro) == [(0, 1), (2, 3)]
    assert all(mb.num_tokens == 14 and mb.shares_prompts for mb in micro)
    # a unit of one sequence is plain packing: no explicit mask, so any attention kernel can run it
    (single,) = pack([[1, 2], [3, 4]], [[5], [6]], max_tokens=100, share_prompts=True)
    assert not single.shares_prompts and single.attention_mask("flash_attention_2", torch.float32) is None


def test_shared_prompts_refuse_a_kernel_without_masks(model):
    prompts, responses = _grouped(seed=6, groups=1, size=2)
    (mb,) = pack(prompts, responses, max_tokens=1000, share_prompts=True)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="share_prompts=False"):
        response_logprobs(model, mb)
