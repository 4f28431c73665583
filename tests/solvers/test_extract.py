"""Code extraction: fenced blocks (first/last/concatenate), untagged fences, unterminated fences, <python> tags."""

from __future__ import annotations

import pytest

from solvers import ExtractConfig
from solvers.extract import extract_code, well_formed

TWO_BLOCKS = "Model:\n```python\nx = 1\n```\nthen the fix:\n```python\nx = 2\n```\nDone."


def test_last_complete_block_by_default() -> None:
    assert extract_code(TWO_BLOCKS) == "x = 2"


@pytest.mark.parametrize(
    ("which", "expected"), [("first", "x = 1"), ("last", "x = 2"), ("concatenate", "x = 1\n\nx = 2")]
)
def test_which_block(which: str, expected: str) -> None:
    assert extract_code(TWO_BLOCKS, config=ExtractConfig(which=which)) == expected


def test_unknown_which_is_rejected() -> None:
    with pytest.raises(ValueError, match="first"):
        extract_code(TWO_BLOCKS, config=ExtractConfig(which="middle"))  # type: ignore[arg-type]


def test_python_tagged_blocks_beat_other_languages_and_untagged_fences() -> None:
    text = "```bash\npip install gurobipy\n```\n```\nprint('plain')\n```\n```py\nimport gurobipy\n```\n"
    text += "```text\nout\n```"
    assert extract_code(text) == "import gurobipy"


def test_untagged_fence_when_no_python_fence() -> None:
    assert extract_code("Here:\n```\nimport pulp\n```\n") == "import pulp"


def test_unterminated_fence_taken_to_the_end() -> None:
    text = "Answer:\n```python\nimport gurobipy as gp\nm = gp.Model()\n"
    assert extract_code(text) == "import gurobipy as gp\nm = gp.Model()\n"


def test_complete_block_preferred_over_a_trailing_unterminated_one() -> None:
    text = "```python\nok = 1\n```\nretry:\n```python\ncut = 1\n"
    assert extract_code(text) == "ok = 1"


def test_python_tags_and_an_unclosed_tag() -> None:
    assert extract_code("<python>\na = 1\n</python> and <python>b = 2</python>") == "b = 2"
    assert extract_code("text <python>\nc = 3\n") == "\nc = 3\n"


def test_think_section_is_dropped() -> None:
    text = "<think>\n```python\ndraft = 1\n```\n</think>\nFinal:\n```python\nfinal = 1\n```"
    assert extract_code(text, config=ExtractConfig(which="first")) == "final = 1"
    assert extract_code(text, config=ExtractConfig(which="first", drop_think=False)) == "draft = 1"


def test_fence_with_more_backticks_and_indentation() -> None:
    assert extract_code("  ````python\nx = '```'\n  ````\n") == "x = '```'"


@pytest.mark.parametrize(
    "text", ["", "The optimum is 21.", "```python\n\n```", "<python>   </python>", "```json\n{}\n```"]
)
def test_no_code(text: str) -> None:
    assert extract_code(text) is None


# ----- EVOM's think-code format: reasoning in <think>...</think>, then one program -----------------------------

THINK_CODE = ExtractConfig(format="think-code")
PROGRAM = "import gurobipy as gp\nm = gp.Model()\nm.optimize()\n"
WELL_FORMED = (
    f"<think>\nTwo variables, one constraint.\n```python\ndraft = 1\n```\n</think>\n<code>\n{PROGRAM}</code>\n"
)


def test_think_code_reads_the_code_block_after_the_reasoning() -> None:
    assert extract_code(WELL_FORMED, config=THINK_CODE) == f"\n{PROGRAM}"
    assert well_formed(WELL_FORMED, THINK_CODE)


def test_think_code_takes_a_fenced_block_after_the_reasoning_and_unwraps_one_inside_code() -> None:
    fenced = f"<think>plan</think>\nHere:\n```python\n{PROGRAM}```\n"
    assert extract_code(fenced, config=THINK_CODE) == PROGRAM.rstrip("\n")  # a fence's body, as in markdown
    assert well_formed(fenced, THINK_CODE)
    wrapped = f"<think>plan</think>\n<code>\n```python\n{PROGRAM}```\n</code>"
    assert extract_code(wrapped, config=THINK_CODE) == PROGRAM.rstrip("\n")
    assert well_formed(wrapped, THINK_CODE), "a fence inside <code> is one block, not two"


@pytest.mark.parametrize(
    ("text", "code", "why"),
    [
        (f"Let me think.\n<code>\n{PROGRAM}</code>", f"\n{PROGRAM}", "no think block: the code is read, no format"),
        (f"<think>\nplanning...\n<code>\n{PROGRAM}</code>", None, "the reasoning never closed: no program"),
        (f"<think>a</think>\n<code>x = 1</code>\n<code>{PROGRAM}</code>", PROGRAM, "two code blocks"),
        (f"<think>a</think>\n<code>x = 1</code>\n```python\n{PROGRAM}```\n", "x = 1", "a tag and a fence"),
        (f"<think>a</think>\n<code>\n{PROGRAM}", f"\n{PROGRAM}", "an unterminated code block (cut off)"),
        (f"Intro <think>a</think>\n<code>{PROGRAM}</code>", PROGRAM, "text before <think>"),
        (f"<think>a</think><think>b</think>\n<code>{PROGRAM}</code>", PROGRAM, "two think blocks"),
        ("<think>a</think>\n<code>  </code>", None, "an empty code block"),
        ("<think>a</think>\nThe answer is 42.", None, "no code after the reasoning"),
    ],
)
def test_think_code_malformed_answers(text: str, code: str | None, why: str) -> None:
    assert extract_code(text, config=THINK_CODE) == code, why
    assert not well_formed(text, THINK_CODE), why


def test_think_code_ignores_programs_inside_the_reasoning() -> None:
    text = f"<think>\n```python\n{PROGRAM}```\n</think>\nI could not finish."
    assert extract_code(text, config=THINK_CODE) is None
    assert extract_code(text) is None  # markdown drops the think section too
    assert extract_code(text, config=ExtractConfig(drop_think=False)) == PROGRAM.rstrip("\n")


def test_markdown_is_well_formed_when_a_program_is_found() -> None:
    assert well_formed("```python\nx = 1\n```")
    assert not well_formed("no code")


def test_an_unknown_format_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"format must be one of \('markdown', 'think-code'\), got 'xml'"):
        ExtractConfig(format="xml")  # type: ignore[arg-type]
