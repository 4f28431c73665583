"""Code extraction: fenced blocks (first/last/concatenate), untagged fences, unterminated fences, <python> tags."""

from __future__ import annotations

import pytest

from solvers import ExtractConfig
from solvers.extract import extract_code

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
