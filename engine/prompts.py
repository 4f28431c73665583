"""Prompts for the policy: the solver's instructions and the problem, in the model's chat template, as token ids.

    prompts = PromptBuilder(tokenizer, instructions=get_solver("gurobipy").instructions,
                            settings=PromptSettings(max_prompt_tokens=1024))
    prompt = prompts.build(problem.question)
    prompt.ids          # token ids for the generation backend, or None when the prompt was skipped
    prompt.status       # "ok" | "truncated" | "too_long" (counted in the rollout's metrics)
    prompts.decode(completion.token_ids)      # response text for the verifier

The template is rendered to text and then tokenized without adding special tokens, because chat templates
write their own BOS / role markers. A prompt over `max_prompt_tokens` is skipped by default; with
`overlong="truncate"` the question is cut from its end until the rendered prompt fits (the instructions are
kept whole, since without them no answer can be verified).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

PromptStatus = Literal["ok", "truncated", "too_long"]


@dataclass(frozen=True, kw_only=True)
class PromptSettings:
    """How prompts are built. `template` joins the solver's instructions and the question."""

    max_prompt_tokens: int
    overlong: Literal["skip", "truncate"] = "skip"
    template: str = "{instructions}\n\nProblem:\n{question}"
    system: str | None = None  # a system message, for templates that take one

    def __post_init__(self) -> None:
        if self.max_prompt_tokens < 1:
            raise ValueError(f"PromptSettings.max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")
        if self.overlong not in ("skip", "truncate"):
            raise ValueError(f"PromptSettings.overlong must be 'skip' or 'truncate', got {self.overlong!r}")
        if "{question}" not in self.template:
            raise ValueError("PromptSettings.template must contain '{question}' (and usually '{instructions}')")


@dataclass(frozen=True, kw_only=True)
class Prompt:
    ids: tuple[int, ...] | None
    status: PromptStatus

    @property
    def usable(self) -> bool:
        return self.ids is not None


class PromptBuilder:
    """Renders problems with a Hugging Face tokenizer's chat template. See the module docstring."""

    def __init__(self, tokenizer: Any, *, instructions: str, settings: PromptSettings) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no chat template; use an instruct model's tokenizer "
                "or set tokenizer.chat_template to a Jinja template before building prompts"
            )
        self.tokenizer = tokenizer
        self.instructions = instructions
        self.settings = settings

    def messages(self, question: str) -> list[dict[str, str]]:
        user = self.settings.template.format(instructions=self.instructions, question=question)
        system = [{"role": "system", "content": self.settings.system}] if self.settings.system else []
        return [*system, {"role": "user", "content": user}]

    def render(self, question: str) -> list[int]:
        """Token ids of the full prompt, ending with the assistant turn's opening."""
        text = self.tokenizer.apply_chat_template(self.messages(question), add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def build(self, question: str) -> Prompt:
        ids = self.render(question)
        limit = self.settings.max_prompt_tokens
        if len(ids) <= limit:
            return Prompt(ids=tuple(ids), status="ok")
        if self.settings.overlong == "skip":
            return Prompt(ids=None, status="too_long")
        return self._truncate(question, over=len(ids) - limit)

    def _truncate(self, question: str, *, over: int) -> Prompt:
        """Cut question tokens from the end until the rendered prompt fits (token merges can shift by a few)."""
        tokens = list(self.tokenizer(question, add_special_tokens=False)["input_ids"])
        keep = len(tokens) - over
        while keep > 0:
            ids = self.render(self.tokenizer.decode(tokens[:keep]))
            if len(ids) <= self.settings.max_prompt_tokens:
                return Prompt(ids=tuple(ids), status="truncated")
            keep -= max(1, len(ids) - self.settings.max_prompt_tokens)
        return Prompt(ids=None, status="too_long")  # the instructions and template alone exceed the limit

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)
