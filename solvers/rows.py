"""JSONL rows that carry an `answer`: the reading that `python -m solvers verify` and `engine.data` share.

    def parse(obj: dict, line: int) -> MyRow: ...          # raises RowError("what is wrong") for a bad row
    with path.open(encoding="utf-8") as f:
        rows, bad = read_rows(enumerate(f, 1), parse)
    for b in bad:
        print(f"{path}:{b.line}: {b.reason}")
    answer = check_answer(obj["answer"])                   # float | None (None: the problem has no optimum)

Blank lines are skipped. Every other line that is not a JSON object, or that `parse` rejects, becomes a
`BadRow` with its line number and the reason, and reading goes on: one bad row never hides the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class RowError(ValueError):
    """Why one row cannot be used. Row parsers raise it; `read_rows` records it as a `BadRow`."""


@dataclass(frozen=True, kw_only=True)
class BadRow:
    """A skipped row: its 1-based line number and what is wrong with it."""

    line: int
    reason: str


def read_rows(
    lines: Iterable[tuple[int, str]], parse: Callable[[dict[str, Any], int], T]
) -> tuple[list[T], list[BadRow]]:
    """(parsed rows, bad rows) of numbered JSONL lines; `parse(obj, line)` turns one JSON object into a row."""
    rows: list[T] = []
    bad: list[BadRow] = []
    for number, line in lines:
        if not line.strip():
            continue
        try:
            rows.append(parse(parse_object(line), number))
        except RowError as exc:
            bad.append(BadRow(line=number, reason=str(exc)))
    return rows, bad


def parse_object(line: str) -> dict[str, Any]:
    """One JSONL line as a JSON object; RowError when it is not valid JSON or not an object."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RowError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise RowError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def check_answer(value: object) -> float | None:
    """A ground truth as the verifier takes it: a finite number, or None (JSON null) for "no optimum"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RowError(
            f"'answer' must be a finite number, or null (None) for a problem without an optimum; got {value!r}"
        )
    return float(value)
