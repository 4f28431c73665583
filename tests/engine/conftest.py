"""Shared fixtures of the engine tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helper modules beside these tests (scripted.py, sglang_server.py, sglang_source.py) are imported by name:
# tests/ is no package and pytest imports test files with --import-mode=importlib, so this folder goes on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random Llama (hidden 32) saved with the embedded model's tokenizer, so prompts use a real chat
    template while generation and training stay fast."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from learner.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
