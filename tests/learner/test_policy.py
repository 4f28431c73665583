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


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_packed_equals_unpacked(model, make_sequences, temperature):
    prompts, responses = make_sequences(9, seed=1)
    micro = pack(prompts, responses, max_tokens=40)
    assert sorted(i for mb in micro for i in mb.indices) == list(range(9))
    assert len(micro) > 1 and all(mb.num_tokens <= 40 for mb in micro)
    with torch.no_grad():
        for mb in micro:
            out = response_logprobs(model, mb, temperature=temperature, with_entropy=True)
            padded, mask = mb.unpack(out.logprobs)
            for row, i in enumerate(mb.indices):
                expected = _plain_logprobs(model, prompts[i], responses[i], temperature)
                n = len(responses[i])
                torch.testing.assert_close(padded[row, :n], expected, rtol=0, atol=2e-6)
                assert mask[row].sum().item() == n


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
