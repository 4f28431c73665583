"""Code extraction from a model's completion: fenced Python blocks, unterminated fences, `<python>` tags.

    extract_code(completion)                        # the last complete ```python block
    extract_code(completion, which="concatenate")   # every block, in order, joined
    extract_code("no code here")                    # None -> Outcome status "no_code"

Order of preference: complete fenced blocks tagged python/py/python3; if none, complete untagged fences;
if none, `<python>...</python>` blocks; if none, an unterminated python fence or `<python>` tag (output
cut at the token limit), taken to the end of the text. A `<think>...</think>` section is dropped first, so
a reasoning model's drafts never count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Which = Literal["first", "last", "concatenate"]

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE_OPEN = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+.-]*)[^\n]*$")
_PYTHON_TAGS = {"python", "py", "python3"}
_TAG_BLOCK = re.compile(r"<python>(?P<code>.*?)</python>", re.DOTALL | re.IGNORECASE)
_TAG_OPEN = re.compile(r"<python>(?P<code>(?:(?!</?python>).)*)\Z", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class ExtractConfig:
    """which: the block to use when there are several ("first", "last" or "concatenate" them all)."""

    which: Which = "last"
    drop_think: bool = True


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


def extract_code(text: str, *, config: ExtractConfig | None = None) -> str | None:
    """The program in `text` per `config` (see the module docstring), or None when there is none."""
    config = config or ExtractConfig()
    if config.which not in ("first", "last", "concatenate"):
        raise ValueError(f"ExtractConfig.which must be 'first', 'last' or 'concatenate', got {config.which!r}")
    if config.drop_think:
        text = _THINK.sub("", text)
    fences = _fences(text)
    tagged = [f.code for f in fences if f.closed and f.lang in _PYTHON_TAGS]
    untagged = [f.code for f in fences if f.closed and f.lang == ""]
    tags = [m["code"] for m in _TAG_BLOCK.finditer(text)]
    for blocks in (tagged, untagged, tags):
        code = _pick(blocks, config.which)
        if code is not None:
            return code
    open_fence = [f.code for f in fences if not f.closed and f.lang in _PYTHON_TAGS | {""}]
    open_tag = _TAG_OPEN.search(text)
    return _pick(open_fence + ([open_tag["code"]] if open_tag else []), "last")
