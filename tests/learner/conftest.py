"""Tiny random-initialised Llama models and token batches shared by the learner tests."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB = 48


def tiny_llama(seed: int = 0, *, layers: int = 2, hidden: int = 64, vocab: int = VOCAB) -> LlamaForCausalLM:
    """A 2-layer, 64-wide Llama in fp32 with deterministic weights (seeded)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).float()


def random_sequences(n: int, seed: int = 0, *, vocab: int = VOCAB) -> tuple[list[list[int]], list[list[int]]]:
    """n (prompt, response) token lists of varied lengths (prompt 2-9 tokens, response 1-12)."""
    g = torch.Generator().manual_seed(seed)
    prompts, responses = [], []
    for _ in range(n):
        p = int(torch.randint(2, 10, (1,), generator=g))
        r = int(torch.randint(1, 13, (1,), generator=g))
        prompts.append(torch.randint(0, vocab, (p,), generator=g).tolist())
        responses.append(torch.randint(0, vocab, (r,), generator=g).tolist())
    return prompts, responses


@pytest.fixture
def model() -> LlamaForCausalLM:
    return tiny_llama()


@pytest.fixture
def make_model():
    return tiny_llama


@pytest.fixture
def make_sequences():
    return random_sequences
