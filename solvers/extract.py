"""Code extraction from a model's completion, and whether the completion has its format's structure.

    extract_code(completion)                                       # the last complete ```python block
    extract_code(completion, config=ExtractConfig(which="concatenate"))   # every block, in order, joined
    extract_code("no code here")                                   # None -> Outcome status "no_code"
    extract_code(completion, config=ExtractConfig(format="think-code"))   # EVOM's <think>...</think><code>...</code>
    well_formed(completion, config)                                # the format reward's condition

Two answer formats (`ExtractConfig.format`, config key `solver.extract.format`):

- "markdown" (default): order of preference: complete fenced blocks tagged python/py/python3; if none,
  complete untagged fences; if none, `<python>...</python>` blocks; if none, an unterminated python fence or
  `<python>` tag (output cut at the token limit), taken to the end of the text. A `<think>...</think>` section
  is dropped first, so a reasoning model's drafts never count. Well-formed: a program was found.
- "think-code" (EVOM's): reasoning in `<think>...</think>`, then the program in `<code>...</code>` (or in a
  fenced block after the reasoning). The program is read only after the last `</think>`: `<code>` blocks
  first (an unterminated one taken to the end; a fence inside one is unwrapped), then as in "markdown". A
  `<think>` that is never closed leaves no program (the reasoning did not end); a completion without any
  think block is read whole. Well-formed: the completion opens with `<think>`, has exactly one `<think>` and
  one `</think>` after it, and after it exactly one complete code block (`<code>` or fenced), nothing unclosed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Which = Literal["first", "last", "concatenate"]
Format = Literal["markdown", "think-code"]
FORMATS: tuple[str, ...] = ("markdown", "think-code")

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+.-]*)[^\n]*$")
_PYTHON_TAGS = {"python", "py", "python3"}
_TAG_BLOCK = re.compile(r"<python>(?P<code>.*?)</python>", re.DOTALL | re.IGNORECASE)
_TAG_OPEN = re.compile(r"<python>(?P<code>(?:(?!</?python>).)*)\Z", re.DOTALL | re.IGNORECASE)
_CODE_BLOCK = re.compile(r"<code>(?P<code>.*?)</code>", re.DOTALL | re.IGNORECASE)
_CODE_OPEN = re.compile(r"<code>(?P<code>(?:(?!</?code>).)*)\Z", re.DOTALL | re.IGNORECASE)
_THINK_OPEN, _THINK_CLOSE = re.compile(r"<think>", re.IGNORECASE), re.compile(r"</think>", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """which: the block to use when there are several ("first", "last" or "concatenate" them all);
    format: the answer format the prompt asks for and the format reward checks (module docstring);
    drop_think: ("markdown") ignore code inside `<think>...</think>`."""

    which: Which = "last"
    drop_think: bool = True
    format: Format = "markdown"

    def __post_init__(self) -> None:
        if self.which not in ("first", "last", "concatenate"):
            raise ValueError(f"ExtractConfig.which must be 'first', 'last' or 'concatenate', got {self.which!r}")
        if self.format not in FORMATS:
            raise ValueError(f"ExtractConfig.format must be one of {FORMATS}, got {self.format!r}")


@dataclass(frozen=True, kw_only=True)
class _Fence:
    lang: str
    code: str
    closed: bool


def _fences(text: str) -> list[_Fence]:
    fences: list[_Fence] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opened = _FENCE_OPEN.match(lines[i])
        if opened is None:
            i += 1
            continue
        marker = opened["fence"]
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(marker[0] * len(marker)) and lines[i].strip().strip(marker[0]) == ""
        ):
            body.append(lines[i])
            i += 1
        fences.append(_Fence(lang=opened["lang"].lower(), code="\n".join(body), closed=i < len(lines)))
        i += 1
    return fences


def _pick(blocks: list[str], which: Which) -> str | None:
    blocks = [block for block in blocks if block.strip()]
    if not blocks:
        return None
    if which == "first":
        return blocks[0]
    if which == "last":
        return blocks[-1]
    return "\n\n".join(blocks)


def _markdown(text: str, which: Which) -> str | None:
    fences = _fences(text)
    tagged = [f.code for f in fences if f.closed and f.lang in _PYTHON_TAGS]
    untagged = [f.code for f in fences if f.closed and f.lang == ""]
    tags = [m["code"] for m in _TAG_BLOCK.finditer(text)]
    for blocks in (tagged, untagged, tags):
        code = _pick(blocks, which)
        if code is not None:
            return code
    open_fence = [f.code for f in fences if not f.closed and f.lang in _PYTHON_TAGS | {""}]
    open_tag = _TAG_OPEN.search(text)
    return _pick(open_fence + ([open_tag["code"]] if open_tag else []), "last")


def _unwrap(code: str) -> str:
    """The body of a `<code>` block that holds one fenced block, else the block as it is."""
    fences = _fences(code.strip("\n"))
    if len(fences) == 1 and fences[0].closed and code.strip().startswith(("`", "~")):
        return fences[0].code
    return code


def _after_think(text: str) -> str | None:
    """The answer part of a think-code completion: after the last `</think>`; None when a `<think>` never closed."""
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        return text[closes[-1].end() :]
    return None if _THINK_OPEN.search(text) else text


def _think_code(text: str, which: Which) -> str | None:
    answer = _after_think(text)
    if answer is None:
        return None
    code = _pick([_unwrap(m["code"]) for m in _CODE_BLOCK.finditer(answer)], which)
    if code is not None:
        return code
    open_tag = _CODE_OPEN.search(answer)
    if open_tag is not None and open_tag["code"].strip():
        return _unwrap(open_tag["code"])
    return _markdown(answer, which)


def extract_code(text: str, *, config: ExtractConfig | None = None) -> str | None:
    """The program in `text` per `config` (see the module docstring), or None when there is none."""
    config = config or ExtractConfig()
    if config.format == "think-code":
        return _think_code(text, config.which)
    return _markdown(_THINK.sub("", text) if config.drop_think else text, config.which)


def well_formed(text: str, config: ExtractConfig | None = None) -> bool:
    """Whether `text` has the structure of `config.format` (module docstring): the format reward's condition."""
    config = config or ExtractConfig()
    if config.format == "markdown":
        return extract_code(text, config=config) is not None
    opens, closes = list(_THINK_OPEN.finditer(text)), list(_THINK_CLOSE.finditer(text))
    if not text.lstrip().lower().startswith("<think>") or len(opens) != 1 or len(closes) != 1:
        return False
    if closes[0].start() < opens[0].end():
        return False
    answer = text[closes[0].end() :]
    blocks = list(_CODE_BLOCK.finditer(answer))
    rest = _CODE_BLOCK.sub("", answer)
    if re.search(r"</?code>", rest, re.IGNORECASE):
        return False  # an unclosed or stray code tag
    fences = _fences(rest)
    if any(not f.closed for f in fences):
        return False
    return (
        len(blocks) + len(fences) == 1
        and all(m["code"].strip() for m in blocks)
        and all(f.code.strip() for f in fences)
    )
