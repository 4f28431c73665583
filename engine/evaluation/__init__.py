"""The parts of `python -m engine.eval`: metrics (pass@k, the table), models (what --model names), runner
(generate and verify). See `engine/eval.py` for the command line."""

from __future__ import annotations

from engine.evaluation.metrics import EXECUTED, Cell, Item, format_markdown, format_table, pass_at_k, summarize
from engine.evaluation.models import ModelError, ModelSpec, open_model, parse_model
from engine.evaluation.runner import Entry, EvalSettings, generate_and_score, score_completions

__all__ = [
    "EXECUTED",
    "Cell",
    "Entry",
    "EvalSettings",
    "Item",
    "ModelError",
    "ModelSpec",
    "format_markdown",
    "format_table",
    "generate_and_score",
    "open_model",
    "parse_model",
    "pass_at_k",
    "score_completions",
    "summarize",
]
