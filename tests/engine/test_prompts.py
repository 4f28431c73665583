"""Prompt building: chat template, solver instructions, skip and truncation of over-long prompts.

The tokenizer is a real byte-level BPE trained in the test on the solver instructions and a few questions,
with a ChatML template, so decoded prompts can be read back. Run: .venv/bin/pytest tests/engine/test_prompts.py
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from engine.prompts import PromptBuilder, PromptSettings
from solvers import get_solver

INSTRUCTIONS = get_solver("gurobipy").instructions
QUESTION = "A bakery makes bread and cake. Bread earns 3 dollars, cake earns 5. Ovens allow 40 hours. Maximise profit."
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([INSTRUCTIONS, QUESTION, "Problem: minimise the cost of shipping"] * 4, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=CHATML,
    )


def builder(tokenizer, **settings) -> PromptBuilder:
    return PromptBuilder(tokenizer, instructions=INSTRUCTIONS, settings=PromptSettings(**settings))


def test_prompt_is_the_chat_template_around_instructions_and_question(tokenizer):
    prompt = builder(tokenizer, max_prompt_tokens=4096).build(QUESTION)
    assert prompt.status == "ok" and prompt.usable
    text = tokenizer.decode(prompt.ids)
    assert text == f"<|im_start|>user\n{INSTRUCTIONS}\n\nProblem:\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert prompt.ids[0] == start and prompt.ids.count(start) == 2  # special tokens are single ids, no BOS added


def test_system_message_and_custom_template(tokenizer):
    prompts = builder(
        tokenizer, max_prompt_tokens=4096, system="You are an OR expert.", template="{question}\n--\n{instructions}"
    )
    text = tokenizer.decode(prompts.build("Q?").ids)
    assert text.startswith("<|im_start|>system\nYou are an OR expert.<|im_end|>\n<|im_start|>user\nQ?\n--\n")
    with pytest.raises(ValueError, match="question"):
        PromptSettings(max_prompt_tokens=10, template="{instructions}")


def test_over_long_prompts_are_skipped_with_a_reason(tokenizer):
    full = len(builder(tokenizer, max_prompt_tokens=4096).build(QUESTION).ids)
    assert builder(tokenizer, max_prompt_tokens=full).build(QUESTION).status == "ok"
    skipped = builder(tokenizer, max_prompt_tokens=full - 1).build(QUESTION)
    assert skipped.status == "too_long" and skipped.ids is None and not skipped.usable


def test_truncation_cuts_the_question_tail_and_keeps_the_instructions(tokenizer):
    full = len(builder(tokenizer, max_prompt_tokens=4096).build(QUESTION).ids)
    limit = full - 10
    prompt = builder(tokenizer, max_prompt_tokens=limit, overlong="truncate").build(QUESTION)
    assert prompt.status == "truncated" and len(prompt.ids) <= limit
    text = tokenizer.decode(prompt.ids)
    assert INSTRUCTIONS in text and QUESTION[:40] in text and QUESTION[-20:] not in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    # The template and instructions alone do not fit: nothing to truncate to.
    assert builder(tokenizer, max_prompt_tokens=20, overlong="truncate").build(QUESTION).status == "too_long"


def test_decode_drops_special_tokens_and_a_tokenizer_needs_a_chat_template(tokenizer):
    prompts = builder(tokenizer, max_prompt_tokens=100)
    ids = tokenizer("x = 3", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert prompts.decode(ids) == "x = 3"
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match="no chat template"):
        PromptBuilder(bare, instructions=INSTRUCTIONS, settings=PromptSettings(max_prompt_tokens=10))
