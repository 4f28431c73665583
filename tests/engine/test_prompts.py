"""Prompt building: chat template, solver instructions, a worked example turn and an answer prefix, skip and
truncation of over-long prompts, and the prompt options of a run's `data` section.

The tokenizer is a real byte-level BPE trained in the test on the solver instructions and a few questions,
with a ChatML template, so decoded prompts can be read back. Run: .venv/bin/pytest tests/engine/test_prompts.py
"""

from __future__ import annotations

import re

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from engine.config import ConfigError, load_config
from engine.prompts import (
    THINK_CODE_FORMAT,
    ExampleConfig,
    PromptBuilder,
    PromptSettings,
    chat_messages,
    prompt_settings,
)
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


EXAMPLE = ExampleConfig(
    question="Problem: minimise the cost of shipping two crates.",
    answer="```python\nprob = 1\n```",
)
PREFIX = "```python\nimport pulp\n"


def test_example_turn_and_answer_prefix_render_in_order_and_tokenize_as_one_string(tokenizer):
    prompts = builder(tokenizer, max_prompt_tokens=4096, system="Be exact.", example=EXAMPLE, answer_prefix=PREFIX)
    prompt = prompts.build(QUESTION)
    text = tokenizer.decode(prompt.ids)
    assert text == (
        "<|im_start|>system\nBe exact.<|im_end|>\n"
        f"<|im_start|>user\n{INSTRUCTIONS}\n\nProblem:\n{EXAMPLE.question}<|im_end|>\n"
        f"<|im_start|>assistant\n{EXAMPLE.answer}<|im_end|>\n"
        f"<|im_start|>user\n{INSTRUCTIONS}\n\nProblem:\n{QUESTION}<|im_end|>\n"
        f"<|im_start|>assistant\n{PREFIX}"
    )
    assert prompt.ids == tuple(tokenizer(prompts.text(QUESTION), add_special_tokens=False)["input_ids"])
    assert [m["role"] for m in prompts.messages(QUESTION)] == ["system", "user", "assistant", "user"]


def test_chat_messages_carry_the_example_but_not_the_prefix():
    settings = PromptSettings(max_prompt_tokens=10, template="{question}|{instructions}", example=EXAMPLE)
    assert chat_messages("Q?", instructions="I", settings=settings) == [
        {"role": "user", "content": f"{EXAMPLE.question}|I"},
        {"role": "assistant", "content": EXAMPLE.answer},
        {"role": "user", "content": "Q?|I"},
    ]


def test_response_text_puts_the_answer_prefix_before_the_generated_text(tokenizer):
    prompts = builder(tokenizer, max_prompt_tokens=100, answer_prefix=PREFIX)
    ids = tokenizer("x = 3\n```", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert prompts.response_text(ids) == PREFIX + "x = 3\n```"
    assert prompts.response_text((), text="y = 4") == PREFIX + "y = 4"  # a backend that returns text
    assert builder(tokenizer, max_prompt_tokens=100).response_text(ids) == "x = 3\n```"


def test_truncation_keeps_the_example_and_the_prefix_whole(tokenizer):
    settings = dict(example=EXAMPLE, answer_prefix=PREFIX)
    full = len(builder(tokenizer, max_prompt_tokens=4096, **settings).build(QUESTION).ids)
    limit = full - 10
    prompt = builder(tokenizer, max_prompt_tokens=limit, overlong="truncate", **settings).build(QUESTION)
    assert prompt.status == "truncated" and len(prompt.ids) <= limit
    text = tokenizer.decode(prompt.ids)
    assert f"{EXAMPLE.question}<|im_end|>\n<|im_start|>assistant\n{EXAMPLE.answer}<|im_end|>" in text
    assert QUESTION[:40] in text and QUESTION[-20:] not in text
    assert text.endswith(f"<|im_end|>\n<|im_start|>assistant\n{PREFIX}")
    # Without its question the prompt is still over the limit: nothing to truncate to.
    empty = len(builder(tokenizer, max_prompt_tokens=4096, **settings).build("").ids)
    assert builder(tokenizer, max_prompt_tokens=empty - 1, overlong="truncate", **settings).build(QUESTION).ids is None


def test_a_bad_example_or_template_is_refused():
    for bad in (dict(question="", answer="a"), dict(question="q", answer="  ")):
        with pytest.raises(ValueError, match=r"ExampleConfig\.(question|answer) must be non-empty"):
            ExampleConfig(**bad)
    with pytest.raises(ValueError, match=re.escape("only {instructions} and {question}")):
        PromptSettings(max_prompt_tokens=10, template="{question} {solver}")


def test_a_runs_data_section_gives_the_prompt_settings_and_bad_values_are_config_errors():
    cfg = load_config(
        None,
        [
            "data.max_prompt_tokens=300",
            "data.prompt_overlong=truncate",
            "data.prompt_template={instructions}/{question}",
            "data.system_prompt=S",
            f"data.example={{question: {EXAMPLE.question!r}, answer: a}}",
            "data.answer_prefix=PRE",
        ],
    )
    assert prompt_settings(cfg.data) == PromptSettings(
        max_prompt_tokens=300,
        overlong="truncate",
        template="{instructions}/{question}",
        system="S",
        example=ExampleConfig(question=EXAMPLE.question, answer="a"),
        answer_prefix="PRE",
    )
    assert prompt_settings(load_config().data) == PromptSettings(max_prompt_tokens=1024)  # the defaults agree
    bad = {
        "data.example={question: q}": "data.example: ExampleConfig.__init__() missing 1 required",
        "data.example={question: q, answer: ''}": "data.example: ExampleConfig.answer must be non-empty text",
        "data.example=text": "data.example: expected a mapping",
        "data.prompt_template=no question": "data: prompt_template must contain '{question}'",
        "data.answer_prefix=3": "data.answer_prefix: expected str",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError) as caught:
            load_config(None, [override])
        assert str(caught.value).startswith(message), (override, caught.value)


def test_the_think_code_format_asks_for_reasoning_then_code_in_every_turn():
    settings = PromptSettings(
        max_prompt_tokens=100, answer_format="think-code", example=ExampleConfig(question="E?", answer="A")
    )
    wanted = f"I\n\n{THINK_CODE_FORMAT}\n\nProblem:\nQ?"
    messages = chat_messages("Q?", instructions="I", settings=settings)
    assert [m["content"] for m in messages] == [wanted.replace("Q?", "E?"), "A", wanted]
    assert "<think>" in THINK_CODE_FORMAT and "<code>" in THINK_CODE_FORMAT
    assert chat_messages("Q?", instructions="I", settings=PromptSettings(max_prompt_tokens=100))[-1]["content"] == (
        "I\n\nProblem:\nQ?"
    ), "markdown, the default, adds nothing"
    cfg = load_config(None, ["solver.extract.format=think-code"])
    assert prompt_settings(cfg.data, answer_format=cfg.solver.extract.format).answer_format == "think-code"
    with pytest.raises(ValueError, match="answer_format must be 'markdown' or 'think-code', got 'xml'"):
        PromptSettings(max_prompt_tokens=10, answer_format="xml")  # type: ignore[arg-type]
